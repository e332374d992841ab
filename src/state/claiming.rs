//! Deciding and recording, with pending claims: a refusal for want of a seat leaves the claim
//! waiting; when seats may have become available, the tenant's waiting claims are decided again,
//! oldest first, at the time of the record that may have freed them, so the result is the same in
//! `run` and `replay`. The notices for administrators are decided here too, from the same changes.
use std::collections::BTreeMap;

use super::{PartitionState, Tables, TenantView};
use crate::domain::activity::Activity;
use crate::domain::catalog::ProductId;
use crate::domain::claims::{
    effect_of, ClaimChange, ClaimEffect, ClaimRules, ClaimStatus, Notice, NoticeKind, PendingClaim,
};
use crate::domain::decision::{decide, Decision, Outcome, StateView};
use crate::domain::time::Timestamp;

/// A decision and what it changed besides the partition's assignments, after what deciding the
/// tenant's waiting claims again gave first (when the event moved the tenant's time past something
/// that may have freed a seat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub redecided: Redecided,
    pub decision: Decision,
    pub claims: Vec<ClaimChange>,
    pub notices: Vec<Notice>,
}

/// What deciding waiting claims again gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redecided {
    /// The decisions that assigned (each fulfils a claim); refusals and ends publish no decision.
    pub assignments: Vec<Decision>,
    pub claims: Vec<ClaimChange>,
    pub notices: Vec<Notice>,
}

impl Redecided {
    pub fn is_empty(&self) -> bool {
        self.assignments.is_empty() && self.claims.is_empty() && self.notices.is_empty()
    }

    fn extend(&mut self, other: Redecided) {
        self.assignments.extend(other.assignments);
        self.claims.extend(other.claims);
        self.notices.extend(other.notices);
    }
}

/// Decides one event and records what it changed: an assignment in the partition's state (so that
/// the next event sees it), the user's pending claim, and the notices due. The only way the
/// pipeline and replay change state in response to activity.
pub fn decide_and_record(
    tables: &Tables,
    partition: &mut PartitionState,
    event: &Activity,
) -> Decided {
    let redecided = redecide_if_due(tables, partition, &event.tenant_id, event.occurred_at);
    let mut decision = decide(
        &TenantView::new(tables, &*partition, &event.tenant_id),
        event,
    );
    let mut changes = Changes::default();
    record(tables, partition, event, &mut decision, false, &mut changes);
    changes.announce_availability(tables, partition, &decision.tenant_id, event.occurred_at);
    Decided {
        redecided,
        decision,
        claims: changes.claims,
        notices: changes.notices,
    }
}

/// Decides again every waiting claim of the tenant, oldest first, as of `at` (or the claim's last
/// event, if later); claims whose time ran out by `at` expire first.
pub fn redecide_tenant(
    tables: &Tables,
    partition: &mut PartitionState,
    tenant: &str,
    at: Timestamp,
) -> Redecided {
    let rules = tables.claim_rules();
    let waiting: Vec<PendingClaim> = partition
        .claims(tenant)
        .map(|c| c.oldest_first().cloned().collect())
        .unwrap_or_default();
    let mut changes = Changes::default();
    let mut assignments = Vec::new();
    for claim in waiting {
        let expires_at = claim.expires_at(&rules);
        if expires_at <= at {
            partition
                .claims_mut(tenant)
                .take(&claim.user_id, claim.need);
            changes.push(tenant, claim, ClaimStatus::Expired, expires_at, expires_at);
            continue;
        }
        let mut event = claim.trigger.clone();
        event.occurred_at = at.max(claim.last_seen);
        let mut decision = decide(&TenantView::new(tables, &*partition, tenant), &event);
        record(tables, partition, &event, &mut decision, true, &mut changes);
        if matches!(decision.outcome, Outcome::Assigned(_)) {
            assignments.push(decision);
        }
    }
    changes.announce_availability(tables, partition, tenant, at);
    Redecided {
        assignments,
        claims: changes.claims,
        notices: changes.notices,
    }
}

/// Moves the tenant's time (the latest event time it has seen, as Kafka Streams' stream time) to
/// `now` and, if by then something may have freed a seat since its waiting claims were last decided
/// (a newer inventory snapshot, a settings or policy version come into force, a waiting user's
/// directory row), decides them again at that record's time; claims whose time ran out by `now`
/// expire. The same stream of records gives the same answers in `run`, `replay` and `verify`:
/// nothing here reads a clock. Deciding again when nothing changed changes nothing, so a restored
/// partition (which has decided nothing yet) may simply do it once more.
pub fn redecide_if_due(
    tables: &Tables,
    partition: &mut PartitionState,
    tenant: &str,
    now: Timestamp,
) -> Redecided {
    let Some(claims) = partition.claims_mut_if_any(tenant) else {
        return Redecided::default();
    };
    let now = claims.advance_time(now);
    if claims.is_empty() {
        return Redecided::default();
    }
    let rules = tables.claim_rules();
    let changed = tables.last_change_in_force(tenant, now);
    let records = tables.inventory_records_of(tenant);
    let due = claims.dirty_at.is_some()
        || changed > claims.swept_through
        || claims.swept_records != Some(records);
    let trigger = if due {
        changed.max(claims.dirty_at)
    } else {
        None
    };
    let expiring = claims
        .oldest_first()
        .next()
        .is_some_and(|c| c.first_seen.saturating_add(rules.ttl) <= now);
    let mut out = Redecided::default();
    if let Some(at) = trigger {
        out = redecide_tenant(tables, partition, tenant, at);
        let claims = partition.claims_mut(tenant);
        claims.dirty_at = None;
        claims.swept_through = claims.swept_through.max(Some(at));
        claims.swept_records = Some(records);
    }
    if expiring || trigger.is_some() {
        out.claims.extend(expire(rules, partition, tenant, now));
    }
    out
}

/// `redecide_if_due` for every tenant of the partition with waiting claims, at its own time: what
/// the loop does when a table changed.
pub fn redecide_waiting(tables: &Tables, partition: &mut PartitionState) -> Redecided {
    let waiting: Vec<(String, Timestamp)> = partition
        .tenants_waiting()
        .filter_map(|(tenant, claims)| Some((tenant.to_owned(), claims.time()?)))
        .collect();
    let mut out = Redecided::default();
    for (tenant, now) in waiting {
        out.extend(redecide_if_due(tables, partition, &tenant, now));
    }
    out
}

/// The tenant's claims whose time ran out by `now`, each ended at its own expiry time.
fn expire(
    rules: ClaimRules,
    partition: &mut PartitionState,
    tenant: &str,
    now: Timestamp,
) -> Vec<ClaimChange> {
    let expired: Vec<PendingClaim> = partition
        .claims(tenant)
        .into_iter()
        .flat_map(|claims| claims.oldest_first())
        .filter(|c| c.expires_at(&rules) <= now)
        .cloned()
        .collect();
    let mut changes = Changes::default();
    for claim in expired {
        partition
            .claims_mut(tenant)
            .take(&claim.user_id, claim.need);
        let at = claim.expires_at(&rules);
        changes.push(tenant, claim, ClaimStatus::Expired, at, at);
    }
    changes.claims
}

/// Claim changes and notices gathered while deciding, and the claims fulfilled per product (for
/// SEATS_AVAILABLE_AGAIN).
#[derive(Default)]
struct Changes {
    claims: Vec<ClaimChange>,
    notices: Vec<Notice>,
    fulfilled: BTreeMap<ProductId, u32>,
}

impl Changes {
    fn push(
        &mut self,
        tenant: &str,
        claim: PendingClaim,
        status: ClaimStatus,
        at: Timestamp,
        expires_at: Timestamp,
    ) {
        self.claims.push(ClaimChange {
            tenant_id: tenant.to_owned(),
            claim,
            status,
            at,
            expires_at,
        });
    }

    /// SEATS_AVAILABLE_AGAIN for each product short until now of which claims were fulfilled.
    fn announce_availability(
        &mut self,
        tables: &Tables,
        partition: &mut PartitionState,
        tenant: &str,
        at: Timestamp,
    ) {
        for (product, fulfilled) in std::mem::take(&mut self.fulfilled) {
            let seats = TenantView::new(tables, &*partition, tenant).seats_available(product);
            let claims = partition.claims_mut(tenant);
            let users_waiting = claims.waiting_for(product);
            let state = claims.notices(product);
            if state.exhausted_since.is_none() {
                continue;
            }
            let kind = NoticeKind::SeatsAvailableAgain { fulfilled };
            state.apply(kind, at);
            self.notices.push(Notice {
                tenant_id: tenant.to_owned(),
                kind,
                product,
                at,
                users_waiting,
                seats_available: seats,
            });
        }
    }
}

/// Records what `decision` changed. A decision made again for a waiting claim that is refused again
/// changes nothing (the claim was counted when its events came).
fn record(
    tables: &Tables,
    partition: &mut PartitionState,
    event: &Activity,
    decision: &mut Decision,
    again: bool,
    changes: &mut Changes,
) {
    let status = match effect_of(&decision.outcome) {
        ClaimEffect::None => return,
        ClaimEffect::Refused if again => return,
        ClaimEffect::Refused => return refused(tables, partition, event, decision, changes),
        ClaimEffect::Fulfilled => return assigned(tables, partition, event, decision, changes),
        ClaimEffect::Ends(status) => status,
    };
    // Most decisions are of tenants with no waiting claim: nothing to look at, nothing to allocate.
    let (tenant, user) = (&decision.tenant_id, &decision.subject_user_id);
    let Some(claims) = partition.claims_mut_if_any(tenant) else {
        return;
    };
    if let Some(claim) = claims.take(user, event.required_capabilities()) {
        let expires_at = claim.expires_at(&tables.claim_rules());
        changes.push(tenant, claim, status, event.occurred_at, expires_at);
    }
}

fn refused(
    tables: &Tables,
    partition: &mut PartitionState,
    event: &Activity,
    decision: &mut Decision,
    changes: &mut Changes,
) {
    let Outcome::Failed(failure) = &decision.outcome else {
        return;
    };
    let rules = tables.claim_rules();
    let (tenant, at) = (decision.tenant_id.as_str(), event.occurred_at);
    let claims = partition.claims_mut(tenant);
    let claim = claims
        .refused(
            event,
            &decision.subject_user_id,
            event.required_capabilities(),
            failure.product,
            failure.policy_id.as_deref(),
        )
        .clone();
    decision.pending_since = Some(claim.first_seen);
    let expires_at = claim.expires_at(&rules);
    changes.push(tenant, claim, ClaimStatus::Pending, at, expires_at);
    let Some(product) = failure.product else {
        return;
    };
    let users_waiting = claims.waiting_for(product);
    let state = claims.notices(product);
    let digest = match (state.exhausted_since, state.last_exhausted) {
        (None, _) => false,
        (Some(_), Some(last)) if at >= last.saturating_add(rules.digest_window) => true,
        _ => return,
    };
    let kind = NoticeKind::SeatsExhausted { digest };
    state.apply(kind, at);
    changes.notices.push(Notice {
        tenant_id: tenant.to_owned(),
        kind,
        product,
        at,
        users_waiting,
        seats_available: 0,
    });
}

fn assigned(
    tables: &Tables,
    partition: &mut PartitionState,
    event: &Activity,
    decision: &mut Decision,
    changes: &mut Changes,
) {
    let Outcome::Assigned(a) = &decision.outcome else {
        return;
    };
    let (product, counts_from) = (a.product, a.counts_from);
    let again_from = a.reassigned.then_some(counts_from);
    let (tenant, user, at) = (
        &decision.tenant_id,
        &decision.subject_user_id,
        event.occurred_at,
    );
    let seats_before = TenantView::new(tables, &*partition, tenant).seats_available(product);
    partition.record_assignment(tenant, user, product, counts_from);
    let rules = tables.claim_rules();
    let fulfilled = partition
        .claims_mut_if_any(tenant)
        .and_then(|claims| claims.take(user, event.required_capabilities()));
    let pending_since = fulfilled.as_ref().map(|claim| claim.first_seen);
    if let Some(claim) = fulfilled {
        *changes.fulfilled.entry(product).or_default() += 1;
        let expires_at = claim.expires_at(&rules);
        let status = ClaimStatus::Fulfilled {
            product,
            again_from,
        };
        changes.push(tenant, claim, status, at, expires_at);
    }
    low_seats(
        tables,
        partition,
        tenant,
        product,
        at,
        seats_before,
        changes,
    );
    decision.pending_since = pending_since;
}

/// LOW_SEATS, when an assignment of `product` (with `seats_before` free before it) left the
/// tenant's threshold or fewer, at most once per digest window.
fn low_seats(
    tables: &Tables,
    partition: &mut PartitionState,
    tenant: &str,
    product: ProductId,
    at: Timestamp,
    seats_before: u64,
    changes: &mut Changes,
) {
    let threshold = tables
        .settings_in_force(tenant, at)
        .map_or(0, |s| s.low_seats_threshold);
    let seats_after = seats_before.saturating_sub(1);
    let crossed =
        threshold > 0 && seats_before > u64::from(threshold) && seats_after <= u64::from(threshold);
    if !crossed {
        return;
    }
    let rules = tables.claim_rules();
    let claims = partition.claims_mut(tenant);
    let users_waiting = claims.waiting_for(product);
    let state = claims.notices(product);
    if state
        .last_low_seats
        .is_some_and(|last| at < last.saturating_add(rules.digest_window))
    {
        return;
    }
    let kind = NoticeKind::LowSeats { threshold };
    state.apply(kind, at);
    changes.notices.push(Notice {
        tenant_id: tenant.to_owned(),
        kind,
        product,
        at,
        users_waiting,
        seats_available: seats_after,
    });
}
