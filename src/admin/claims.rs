//! The admin view's tables of claims and failures, per tenant and user: the latest state of each
//! pending claim (one per user and need, as the claims topic is keyed) and the failures aggregated
//! per user, product, policy and reason (first seen, last seen and count: one row however many
//! events). Filled by the admin feed from the claims and failures topics, and by `autoclaim report`
//! from the same topics.
use std::collections::HashMap;
use std::time::Duration;

use crate::domain::catalog::ProductId;
use crate::domain::ids;
use crate::domain::time::Timestamp;
use crate::pipeline::records::RawRecord;
use crate::wire::convert;
use crate::wire::{codec, pb, Format, WireError};

/// The longest window of the claims listing, in days.
pub const MAX_DAYS: u32 = 366;
/// How long a row is kept after its last change: the longest window and a day.
pub const RETENTION: Duration = Duration::from_secs((MAX_DAYS as u64 + 1) * 24 * 3600);

/// How a row of the claims listing stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowStatus {
    /// Waiting for a seat.
    Pending,
    /// A waiting claim that was assigned.
    Fulfilled,
    /// Refused for a reason that leaves no claim waiting (a usage location missing, a granting
    /// plan disabled).
    Failed,
    EndedEntitled,
    EndedNotEligible,
    Expired,
}

impl RowStatus {
    pub const ALL: [RowStatus; 6] = [
        RowStatus::Pending,
        RowStatus::Fulfilled,
        RowStatus::Failed,
        RowStatus::EndedEntitled,
        RowStatus::EndedNotEligible,
        RowStatus::Expired,
    ];

    /// The name the API and the report use.
    pub fn name(self) -> &'static str {
        match self {
            RowStatus::Pending => "pending",
            RowStatus::Fulfilled => "fulfilled",
            RowStatus::Failed => "failed",
            RowStatus::EndedEntitled => "ended_entitled",
            RowStatus::EndedNotEligible => "ended_not_eligible",
            RowStatus::Expired => "expired",
        }
    }

    pub fn parse(name: &str) -> Option<RowStatus> {
        RowStatus::ALL.into_iter().find(|s| s.name() == name)
    }

    fn of_claim(status: i32) -> Result<RowStatus, WireError> {
        match pb::ClaimStatus::try_from(status) {
            Ok(pb::ClaimStatus::Pending) => Ok(RowStatus::Pending),
            Ok(pb::ClaimStatus::Fulfilled) => Ok(RowStatus::Fulfilled),
            Ok(pb::ClaimStatus::EndedEntitled) => Ok(RowStatus::EndedEntitled),
            Ok(pb::ClaimStatus::EndedNotEligible) => Ok(RowStatus::EndedNotEligible),
            Ok(pb::ClaimStatus::Expired) => Ok(RowStatus::Expired),
            _ => Err(WireError::field(
                "status",
                format!("unknown claim status {status}"),
            )),
        }
    }
}

/// The latest state of one claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRow {
    pub user_id: String,
    /// The capabilities the claim needs, by name: with the user, what identifies the claim.
    pub needs: Vec<String>,
    /// Never `Failed`.
    pub status: RowStatus,
    /// The product last refused, or the one assigned.
    pub product: Option<ProductId>,
    pub policy_id: String,
    /// When the claim was first refused: since when it waited.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub events: u32,
    pub changed_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Set when fulfilled.
    pub assignment_id: String,
    pub ended_outcome: pb::Outcome,
    pub ended_reason: pb::Reason,
    pub trigger_event_id: String,
    pub trigger_kind: pb::ActivityKind,
}

impl ClaimRow {
    /// The latest time anything happened to the claim.
    pub fn last_activity(&self) -> Timestamp {
        self.last_seen.max(self.changed_at)
    }
}

/// The failures of one user, product, policy and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRow {
    pub user_id: String,
    /// None when no policy was consulted (a usage location missing).
    pub product: Option<ProductId>,
    pub policy_id: String,
    pub reason: pb::Reason,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub count: u64,
    /// The latest event refused.
    pub last_event_id: String,
}

impl FailureRow {
    /// A failure leaves a claim waiting only for want of a seat; the claim then stands for it.
    pub fn leaves_no_claim(&self) -> bool {
        self.reason != pb::Reason::NoLicensesAvailable
    }
}

/// A record of the claims or the failures topic, decoded.
#[derive(Clone, Debug)]
pub enum ClaimsUpdate {
    /// Boxed: a claim carries its trigger event, more than twice a failure's size.
    Claim(Box<pb::LicenseClaim>),
    Failure(pb::AutoclaimFailure),
}

impl ClaimsUpdate {
    /// A record of the claims topic; None for a tombstone (which the processor never writes).
    pub fn claim(raw: &RawRecord<'_>) -> Result<Option<ClaimsUpdate>, WireError> {
        let Some(value) = raw.value else {
            return Ok(None);
        };
        let format = Format::from_content_type(raw.content_type)?;
        Ok(Some(ClaimsUpdate::Claim(Box::new(codec::decode(
            value, format,
        )?))))
    }

    /// A record of the failures topic.
    pub fn failure(raw: &RawRecord<'_>) -> Result<Option<ClaimsUpdate>, WireError> {
        let Some(value) = raw.value else {
            return Ok(None);
        };
        let format = Format::from_content_type(raw.content_type)?;
        Ok(Some(ClaimsUpdate::Failure(codec::decode(value, format)?)))
    }
}

#[derive(Debug, Default)]
struct UserRows {
    claims: Vec<ClaimRow>,
    failures: Vec<FailureRow>,
}

impl UserRows {
    fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.failures.is_empty()
    }
}

/// Claims and failures of every tenant, by tenant and user.
#[derive(Debug, Default)]
pub struct ClaimTables {
    tenants: HashMap<String, HashMap<String, UserRows>>,
}

impl ClaimTables {
    fn user_mut(&mut self, tenant: &str, user: &str) -> &mut UserRows {
        // Looked up before inserting, so that a known tenant or user costs no allocation.
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.to_owned(), HashMap::new());
        }
        let users = self.tenants.get_mut(tenant).expect("inserted above");
        if !users.contains_key(user) {
            users.insert(user.to_owned(), UserRows::default());
        }
        users.get_mut(user).expect("inserted above")
    }

    pub fn apply(&mut self, update: ClaimsUpdate) -> Result<(), WireError> {
        match update {
            ClaimsUpdate::Claim(c) => self.apply_claim(*c),
            ClaimsUpdate::Failure(f) => self.apply_failure(f),
        }
    }

    /// A record of the claims topic: it replaces the claim's earlier state (the topic's latest
    /// record of a key is the claim's state).
    pub fn apply_claim(&mut self, c: pb::LicenseClaim) -> Result<(), WireError> {
        let tenant = convert::entity_id("tenantId", c.tenant_id)?;
        let trigger = c.trigger.unwrap_or_default();
        let row = ClaimRow {
            user_id: convert::entity_id("userId", c.user_id)?,
            needs: c.needs,
            status: RowStatus::of_claim(c.status)?,
            product: optional_product(&c.product)?,
            policy_id: c.policy_id,
            first_seen: convert::timestamp("firstSeen", c.first_seen)?,
            last_seen: convert::timestamp("lastSeen", c.last_seen)?,
            events: c.events.max(1),
            changed_at: convert::timestamp("changedAt", c.changed_at)?,
            expires_at: c
                .expires_at
                .map(|t| convert::timestamp("expiresAt", Some(t)))
                .transpose()?,
            assignment_id: c.assignment_id,
            ended_outcome: pb::Outcome::try_from(c.ended_outcome).unwrap_or_default(),
            ended_reason: pb::Reason::try_from(c.ended_reason).unwrap_or_default(),
            trigger_event_id: trigger.event_id,
            trigger_kind: pb::ActivityKind::try_from(trigger.kind).unwrap_or_default(),
        };
        let user = row.user_id.clone();
        let claims = &mut self.user_mut(&tenant, &user).claims;
        match claims.iter_mut().find(|old| old.needs == row.needs) {
            Some(old) => *old = row,
            None => claims.push(row),
        }
        Ok(())
    }

    /// A record of the failures topic: counted in its user's, product's, policy's and reason's
    /// row.
    pub fn apply_failure(&mut self, f: pb::AutoclaimFailure) -> Result<(), WireError> {
        if f.tenant_id.is_empty() {
            return Err(WireError::field("tenantId", "is required"));
        }
        let tenant = ids::canonical_str(&f.tenant_id).into_owned();
        let user = convert::entity_id("userId", f.user_id)?;
        let product = optional_product(&f.product)?;
        let reason = pb::Reason::try_from(f.reason).unwrap_or_default();
        let at = convert::timestamp("occurredAt", f.occurred_at)?;
        let failures = &mut self.user_mut(&tenant, &user).failures;
        let same = |r: &&mut FailureRow| {
            r.product == product && r.policy_id == f.policy_id && r.reason == reason
        };
        match failures.iter_mut().find(same) {
            Some(row) => {
                row.count += 1;
                row.first_seen = row.first_seen.min(at);
                if at >= row.last_seen {
                    row.last_seen = at;
                    row.last_event_id = f.trigger_event_id;
                }
            }
            None => failures.push(FailureRow {
                user_id: user,
                product,
                policy_id: f.policy_id,
                reason,
                first_seen: at,
                last_seen: at,
                count: 1,
                last_event_id: f.trigger_event_id,
            }),
        }
        Ok(())
    }

    /// Forgets rows whose last change is older than [`RETENTION`] before `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let cutoff = now.saturating_sub(RETENTION);
        for users in self.tenants.values_mut() {
            for rows in users.values_mut() {
                rows.claims.retain(|c| c.last_activity() >= cutoff);
                rows.failures.retain(|f| f.last_seen >= cutoff);
            }
            users.retain(|_, rows| !rows.is_empty());
        }
        self.tenants.retain(|_, users| !users.is_empty());
    }

    /// The latest state of every claim of the tenant, in no particular order.
    pub fn claims<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a ClaimRow> + 'a {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|users| users.values())
            .flat_map(|rows| &rows.claims)
    }

    /// Every failure row of the tenant, in no particular order.
    pub fn failures<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a FailureRow> + 'a {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|users| users.values())
            .flat_map(|rows| &rows.failures)
    }

    /// The user's claims and failure rows, each oldest first (by first seen).
    pub fn of_user(&self, tenant: &str, user: &str) -> (Vec<&ClaimRow>, Vec<&FailureRow>) {
        let Some(rows) = self.tenants.get(tenant).and_then(|users| users.get(user)) else {
            return (Vec::new(), Vec::new());
        };
        let mut claims: Vec<&ClaimRow> = rows.claims.iter().collect();
        claims.sort_by(|a, b| (a.first_seen, &a.needs).cmp(&(b.first_seen, &b.needs)));
        let mut failures: Vec<&FailureRow> = rows.failures.iter().collect();
        failures.sort_by_key(|f| (f.first_seen, f.last_seen));
        (claims, failures)
    }

    /// Pending claims per product: how many, and since when the oldest waits; by product.
    pub fn pending_by_product(&self, tenant: &str) -> Vec<PendingProduct> {
        let mut by_product: HashMap<Option<ProductId>, PendingProduct> = HashMap::new();
        for claim in self
            .claims(tenant)
            .filter(|c| c.status == RowStatus::Pending)
        {
            let entry = by_product
                .entry(claim.product)
                .or_insert_with(|| PendingProduct {
                    product: claim.product,
                    pending: 0,
                    oldest: claim.first_seen,
                });
            entry.pending += 1;
            entry.oldest = entry.oldest.min(claim.first_seen);
        }
        let mut out: Vec<PendingProduct> = by_product.into_values().collect();
        out.sort_by_key(|p| p.product);
        out
    }
}

/// The pending claims of one product (None: a claim that named none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingProduct {
    pub product: Option<ProductId>,
    pub pending: u64,
    /// When the claim waiting longest was first refused.
    pub oldest: Timestamp,
}

fn optional_product(key: &str) -> Result<Option<ProductId>, WireError> {
    match key {
        "" => Ok(None),
        key => convert::product("product", key).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;
    use crate::wire::convert::to_wire_timestamp;

    const PREMIUM: &str = "power_automate_premium";
    const DAY: i64 = 24 * 3600 * 1000;

    fn ts(millis: i64) -> Option<pbjson_types::Timestamp> {
        Some(to_wire_timestamp(Timestamp::from_millis(millis)))
    }

    fn claim(user: &str, status: pb::ClaimStatus, first: i64, changed: i64) -> pb::LicenseClaim {
        pb::LicenseClaim {
            tenant_id: "t".into(),
            user_id: user.into(),
            needs: vec!["premium_cloud_flows".into()],
            status: status as i32,
            first_seen: ts(first),
            last_seen: ts(first),
            events: 1,
            product: PREMIUM.into(),
            policy_id: "pol".into(),
            changed_at: ts(changed),
            ..Default::default()
        }
    }

    fn failure(user: &str, reason: pb::Reason, at: i64) -> pb::AutoclaimFailure {
        pb::AutoclaimFailure {
            tenant_id: "t".into(),
            user_id: user.into(),
            product: PREMIUM.into(),
            policy_id: "pol".into(),
            trigger_event_id: format!("e-{at}"),
            reason: reason as i32,
            occurred_at: ts(at),
            ..Default::default()
        }
    }

    #[test]
    fn the_latest_record_of_a_claim_is_its_state() {
        let mut t = ClaimTables::default();
        t.apply_claim(claim("u1", pb::ClaimStatus::Pending, 10, 10))
            .unwrap();
        t.apply_claim(claim("u2", pb::ClaimStatus::Pending, 20, 20))
            .unwrap();
        let mut fulfilled = claim("u1", pb::ClaimStatus::Fulfilled, 10, 30);
        fulfilled.assignment_id = "a1".into();
        t.apply_claim(fulfilled).unwrap();
        // Another need of the same user is another claim.
        let mut rpa = claim("u1", pb::ClaimStatus::Pending, 40, 40);
        rpa.needs = vec!["attended_rpa".into()];
        t.apply_claim(rpa).unwrap();
        let (claims, _) = t.of_user("t", "u1");
        let states: Vec<_> = claims
            .iter()
            .map(|c| (c.needs[0].as_str(), c.status, c.assignment_id.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("premium_cloud_flows", RowStatus::Fulfilled, "a1"),
                ("attended_rpa", RowStatus::Pending, "")
            ]
        );
        assert_eq!(t.claims("t").count(), 3);
        let pending = t.pending_by_product("t");
        assert_eq!(
            pending,
            [PendingProduct {
                product: Catalog::by_key(PREMIUM),
                pending: 2,
                oldest: Timestamp::from_millis(20)
            }]
        );
    }

    #[test]
    fn failures_are_one_row_per_user_product_policy_and_reason() {
        let mut t = ClaimTables::default();
        for at in [50, 10, 30] {
            t.apply_failure(failure("u1", pb::Reason::NoLicensesAvailable, at))
                .unwrap();
        }
        t.apply_failure(failure("u1", pb::Reason::GrantingPlanDisabled, 5))
            .unwrap();
        let mut other_policy = failure("u1", pb::Reason::NoLicensesAvailable, 60);
        other_policy.policy_id = "pol-2".into();
        t.apply_failure(other_policy).unwrap();
        t.apply_failure(failure("u2", pb::Reason::NoLicensesAvailable, 70))
            .unwrap();
        let (_, rows) = t.of_user("t", "u1");
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.reason,
                    r.policy_id.as_str(),
                    r.first_seen.as_millis(),
                    r.last_seen.as_millis(),
                    r.count,
                    r.last_event_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (pb::Reason::GrantingPlanDisabled, "pol", 5, 5, 1, "e-5"),
                (pb::Reason::NoLicensesAvailable, "pol", 10, 50, 3, "e-50"),
                (pb::Reason::NoLicensesAvailable, "pol-2", 60, 60, 1, "e-60"),
            ]
        );
        assert_eq!(t.failures("t").count(), 4);
        assert_eq!(t.failures("other").count(), 0);
    }

    #[test]
    fn memory_is_bounded_by_rows_and_old_rows_are_forgotten() {
        let mut t = ClaimTables::default();
        for i in 0..10_000 {
            t.apply_failure(failure("u1", pb::Reason::UsageLocationMissing, i))
                .unwrap();
        }
        assert_eq!(t.failures("t").count(), 1, "one row, however many events");
        assert_eq!(t.failures("t").next().unwrap().count, 10_000);
        let now = 400 * DAY;
        t.apply_failure(failure("u2", pb::Reason::NoLicensesAvailable, now - DAY))
            .unwrap();
        // Claimed long ago, but changed recently: kept.
        t.apply_claim(claim("u3", pb::ClaimStatus::Expired, 0, now - 2 * DAY))
            .unwrap();
        t.apply_claim(claim("u4", pb::ClaimStatus::Fulfilled, 0, 0))
            .unwrap();
        t.prune(Timestamp::from_millis(now));
        let users: Vec<_> = t.failures("t").map(|f| f.user_id.as_str()).collect();
        assert_eq!(users, ["u2"]);
        let users: Vec<_> = t.claims("t").map(|c| c.user_id.as_str()).collect();
        assert_eq!(users, ["u3"]);
        t.prune(Timestamp::from_millis(now + 400 * DAY));
        assert!(t.tenants.is_empty(), "empty tenants are dropped too");
    }

    #[test]
    fn unreadable_records_are_refused_whole() {
        let mut t = ClaimTables::default();
        let mut bad = claim("u1", pb::ClaimStatus::Unspecified, 1, 1);
        assert!(t.apply_claim(bad.clone()).is_err());
        bad.status = pb::ClaimStatus::Pending as i32;
        bad.product = "no_such_product".into();
        assert!(t.apply_claim(bad).is_err());
        let mut bad = failure("u1", pb::Reason::NoLicensesAvailable, 1);
        bad.occurred_at = None;
        assert!(t.apply_failure(bad).is_err());
        assert!(t.tenants.is_empty());
    }

    #[test]
    fn statuses_have_one_name_each() {
        for s in RowStatus::ALL {
            assert_eq!(RowStatus::parse(s.name()), Some(s));
        }
        assert_eq!(RowStatus::parse("PENDING"), None);
    }
}
