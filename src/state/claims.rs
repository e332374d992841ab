//! One tenant's pending claims, oldest first, and what its notices have said so far. Kept per
//! partition beside the tenant's users, and rebuilt from the claims and notices topics on restore.
use std::collections::{BTreeMap, HashMap};

use crate::domain::activity::Activity;
use crate::domain::catalog::{Capabilities, ProductId};
use crate::domain::claims::{NoticeKind, PendingClaim};
use crate::domain::time::Timestamp;

/// The order claims are decided again in: first refused first, then by user and need, so that the
/// order is total and the same in every run.
type ClaimOrder = (Timestamp, String, u8);

/// What the tenant's notices of one product have said, for the first-then-digest rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoticeState {
    /// Since when the product has been short (a SEATS_EXHAUSTED sent and no SEATS_AVAILABLE_AGAIN
    /// after it).
    pub exhausted_since: Option<Timestamp>,
    pub last_exhausted: Option<Timestamp>,
    pub last_low_seats: Option<Timestamp>,
}

impl NoticeState {
    /// Applies a notice published before (read back on restore) or just decided.
    pub fn apply(&mut self, kind: NoticeKind, at: Timestamp) {
        match kind {
            NoticeKind::SeatsExhausted { .. } => {
                self.exhausted_since.get_or_insert(at);
                self.last_exhausted = Some(at);
            }
            NoticeKind::SeatsAvailableAgain { .. } => self.exhausted_since = None,
            NoticeKind::LowSeats { .. } => self.last_low_seats = Some(at),
        }
    }
}

#[derive(Debug, Default)]
pub struct TenantClaims {
    /// Whose claims these are (the map they are in is keyed by a packed form of it).
    tenant: String,
    pending: BTreeMap<ClaimOrder, PendingClaim>,
    /// Each waiting user's claims by need (a user has at most a few), so that a directory row or an
    /// event finds them without a scan or an allocation.
    by_user: HashMap<String, Vec<(u8, ClaimOrder)>>,
    notices: HashMap<ProductId, NoticeState>,
    /// A directory row of a waiting user changed at this time: decide the claims again.
    pub(super) dirty_at: Option<Timestamp>,
    /// The latest trigger the claims have been decided again for, in this process, and how many
    /// inventory records the tenant's tables had taken then.
    pub(super) swept_through: Option<Timestamp>,
    pub(super) swept_records: Option<u64>,
    /// The latest event time seen for the tenant while it had claims: the time claims expire by
    /// and policies come into force by.
    time: Option<Timestamp>,
}

impl TenantClaims {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub(super) fn name_tenant(&mut self, tenant: &str) {
        if self.tenant.is_empty() {
            self.tenant = tenant.to_owned();
        }
    }

    /// Moves the tenant's time to `at`, never back; returns it.
    pub fn advance_time(&mut self, at: Timestamp) -> Timestamp {
        let time = self.time.map_or(at, |t| t.max(at));
        self.time = Some(time);
        time
    }

    pub fn time(&self) -> Option<Timestamp> {
        self.time
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn get(&self, user: &str, need: Capabilities) -> Option<&PendingClaim> {
        let order = self.order_of(user, need)?;
        self.pending.get(order)
    }

    pub fn has_user(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }

    fn order_of(&self, user: &str, need: Capabilities) -> Option<&ClaimOrder> {
        let needs = self.by_user.get(user)?;
        needs
            .iter()
            .find(|(bits, _)| *bits == need.bits())
            .map(|(_, order)| order)
    }

    fn index(&mut self, user: &str, need: Capabilities, order: ClaimOrder) {
        let needs = self.by_user.entry(user.to_owned()).or_default();
        needs.retain(|(bits, _)| *bits != need.bits());
        needs.push((need.bits(), order));
    }

    fn unindex(&mut self, user: &str, need: Capabilities) -> Option<ClaimOrder> {
        let needs = self.by_user.get_mut(user)?;
        let at = needs.iter().position(|(bits, _)| *bits == need.bits())?;
        let (_, order) = needs.swap_remove(at);
        if needs.is_empty() {
            self.by_user.remove(user);
        }
        Some(order)
    }

    /// Pending claims, oldest first.
    pub fn oldest_first(&self) -> impl Iterator<Item = &PendingClaim> {
        self.pending.values()
    }

    /// Users waiting for the product.
    pub fn waiting_for(&self, product: ProductId) -> u32 {
        let n = self
            .pending
            .values()
            .filter(|c| c.product == Some(product))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// A refusal for want of a seat: opens the claim, or counts another event for it.
    pub fn refused(
        &mut self,
        event: &Activity,
        user: &str,
        need: Capabilities,
        product: Option<ProductId>,
        policy_id: Option<&str>,
    ) -> &PendingClaim {
        self.advance_time(event.occurred_at);
        let order = match self.order_of(user, need) {
            Some(order) => order.clone(),
            None => {
                let order = (event.occurred_at, user.to_owned(), need.bits());
                self.index(user, need, order.clone());
                order
            }
        };
        let claim = self
            .pending
            .entry(order)
            .and_modify(|c| {
                c.events = c.events.saturating_add(1);
                c.last_seen = c.last_seen.max(event.occurred_at);
            })
            .or_insert_with(|| PendingClaim {
                user_id: user.to_owned(),
                need,
                trigger: event.clone(),
                first_seen: event.occurred_at,
                last_seen: event.occurred_at,
                events: 1,
                product: None,
                policy_id: None,
            });
        claim.product = product;
        claim.policy_id = policy_id.map(str::to_owned);
        claim
    }

    /// Ends the claim for the need, if there is one.
    pub fn take(&mut self, user: &str, need: Capabilities) -> Option<PendingClaim> {
        let order = self.unindex(user, need)?;
        self.pending.remove(&order)
    }

    /// A claim read back from the claims topic: a pending one is (again) waiting, any other status
    /// ends it. Records are applied in the order written, so the last one of a claim wins.
    pub fn restore(&mut self, claim: PendingClaim, pending: bool, changed_at: Timestamp) {
        self.advance_time(changed_at);
        self.take(&claim.user_id, claim.need);
        if pending {
            let order = (claim.first_seen, claim.user_id.clone(), claim.need.bits());
            self.index(&claim.user_id, claim.need, order.clone());
            self.pending.insert(order, claim);
        }
    }

    pub fn notices(&mut self, product: ProductId) -> &mut NoticeState {
        self.notices.entry(product).or_default()
    }

    pub fn has_notice_state(&self) -> bool {
        !self.notices.is_empty()
    }
}
