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
    /// How many pending claims wait for each product, kept as claims open, change and end: a
    /// refusal reports it in its notice, and counting by a scan would cost each refusal the
    /// length of the tenant's queue.
    waiting: HashMap<ProductId, u32>,
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
        find_need(&self.by_user, user, need)
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
        self.waiting.get(&product).copied().unwrap_or(0)
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
        let claim = match find_need(&self.by_user, user, need) {
            Some(order) => {
                let claim = self
                    .pending
                    .get_mut(order)
                    .expect("an indexed claim is pending");
                claim.events = claim.events.saturating_add(1);
                claim.last_seen = claim.last_seen.max(event.occurred_at);
                claim
            }
            None => {
                let order = (event.occurred_at, user.to_owned(), need.bits());
                self.index(user, need, order.clone());
                self.pending.entry(order).or_insert_with(|| PendingClaim {
                    user_id: user.to_owned(),
                    need,
                    trigger: event.clone(),
                    first_seen: event.occurred_at,
                    last_seen: event.occurred_at,
                    events: 1,
                    product: None,
                    policy_id: None,
                })
            }
        };
        let before = std::mem::replace(&mut claim.product, product);
        if claim.policy_id.as_deref() != policy_id {
            claim.policy_id = policy_id.map(str::to_owned);
        }
        if before != product {
            uncount_waiting(&mut self.waiting, before);
            count_waiting(&mut self.waiting, product);
        }
        claim
    }

    /// Ends the claim for the need, if there is one.
    pub fn take(&mut self, user: &str, need: Capabilities) -> Option<PendingClaim> {
        let order = self.unindex(user, need)?;
        let claim = self.pending.remove(&order)?;
        uncount_waiting(&mut self.waiting, claim.product);
        Some(claim)
    }

    /// A claim read back from the claims topic: a pending one is (again) waiting, any other status
    /// ends it. Records are applied in the order written, so the last one of a claim wins.
    pub fn restore(&mut self, claim: PendingClaim, pending: bool, changed_at: Timestamp) {
        self.advance_time(changed_at);
        self.take(&claim.user_id, claim.need);
        if pending {
            let order = (claim.first_seen, claim.user_id.clone(), claim.need.bits());
            self.index(&claim.user_id, claim.need, order.clone());
            count_waiting(&mut self.waiting, claim.product);
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

/// Where the user's claim for the need stands in the order, if it is waiting.
fn find_need<'a>(
    by_user: &'a HashMap<String, Vec<(u8, ClaimOrder)>>,
    user: &str,
    need: Capabilities,
) -> Option<&'a ClaimOrder> {
    let needs = by_user.get(user)?;
    needs
        .iter()
        .find(|(bits, _)| *bits == need.bits())
        .map(|(_, order)| order)
}

fn count_waiting(waiting: &mut HashMap<ProductId, u32>, product: Option<ProductId>) {
    if let Some(product) = product {
        *waiting.entry(product).or_default() += 1;
    }
}

fn uncount_waiting(waiting: &mut HashMap<ProductId, u32>, product: Option<ProductId>) {
    let Some(product) = product else {
        return;
    };
    if let Some(n) = waiting.get_mut(&product) {
        *n -= 1;
        if *n == 0 {
            waiting.remove(&product);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::activity::tests::flow_event;
    use crate::domain::activity::{ActivityKind, TriggerType};
    use crate::domain::catalog::Catalog;

    #[derive(Clone, Debug)]
    enum Op {
        Refused {
            user: u8,
            need: u8,
            product: Option<u8>,
            at: i64,
        },
        Take {
            user: u8,
            need: u8,
        },
        Restore {
            user: u8,
            need: u8,
            product: Option<u8>,
            pending: bool,
            at: i64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let user = 0u8..6;
        let need = 1u8..4;
        let product = proptest::option::of(0u8..3);
        prop_oneof![
            (user.clone(), need.clone(), product.clone(), 0i64..100).prop_map(
                |(user, need, product, at)| Op::Refused {
                    user,
                    need,
                    product,
                    at
                }
            ),
            (user.clone(), need.clone()).prop_map(|(user, need)| Op::Take { user, need }),
            (user, need, product, any::<bool>(), 0i64..100).prop_map(
                |(user, need, product, pending, at)| Op::Restore {
                    user,
                    need,
                    product,
                    pending,
                    at
                }
            ),
        ]
    }

    fn need_of(n: u8) -> Capabilities {
        let mut need = Capabilities::NONE;
        if n & 1 != 0 {
            need = need.union(Capabilities::PREMIUM_CLOUD_FLOWS);
        }
        if n & 2 != 0 {
            need = need.union(Capabilities::ATTENDED_RPA);
        }
        need
    }

    fn product(n: u8) -> ProductId {
        let products: Vec<ProductId> = Catalog::products().map(|(id, _)| id).collect();
        products[usize::from(n) % products.len()]
    }

    fn claim(user: u8, need: u8, product: Option<u8>, at: i64) -> PendingClaim {
        let at = Timestamp::from_millis(at);
        PendingClaim {
            user_id: format!("u{user}"),
            need: need_of(need),
            trigger: flow_event(ActivityKind::CloudFlowSaved, TriggerType::Instant),
            first_seen: at,
            last_seen: at,
            events: 1,
            product: product.map(self::product),
            policy_id: None,
        }
    }

    fn apply(claims: &mut TenantClaims, op: Op) {
        match op {
            Op::Refused {
                user,
                need,
                product,
                at,
            } => {
                let mut event = flow_event(ActivityKind::CloudFlowSaved, TriggerType::Instant);
                event.occurred_at = Timestamp::from_millis(at);
                let need = need_of(need);
                let product = product.map(self::product);
                claims.refused(&event, &format!("u{user}"), need, product, None);
            }
            Op::Take { user, need } => {
                claims.take(&format!("u{user}"), need_of(need));
            }
            Op::Restore {
                user,
                need,
                product,
                pending,
                at,
            } => {
                let changed_at = Timestamp::from_millis(at);
                claims.restore(claim(user, need, product, at), pending, changed_at);
            }
        }
    }

    proptest! {
        /// The per-product count a refusal's notice reports is the number of waiting claims for
        /// the product, whatever opened, changed and ended them.
        #[test]
        fn waiting_counts_match_the_claims(ops in proptest::collection::vec(op(), 0..60)) {
            let mut claims = TenantClaims::default();
            for op in ops {
                apply(&mut claims, op);
                for (id, _) in Catalog::products() {
                    let scanned = claims.oldest_first().filter(|c| c.product == Some(id)).count();
                    prop_assert_eq!(claims.waiting_for(id) as usize, scanned);
                }
            }
        }
    }
}
