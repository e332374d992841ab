//! From decisions to the wire messages the processor publishes.
use uuid::Uuid;

use super::claims::{claim_record, notice_record};
use super::convert::to_wire_timestamp;
use super::generated as pb;
use crate::domain::activity::ActivityKind;
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::claims::{ClaimChange, ClaimStatus};
use crate::domain::decision::{Decision, FailureReason, Ineligibility, Outcome};
use crate::domain::time::Timestamp;
use crate::state::{Decided, Redecided};

/// Namespace of assignment ids (UUID v5 of tenant, user and product).
const ASSIGNMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_0f5e_8a8b_4f4e_9a53_3c2a_7b51_9e02);

/// The first assignment of a product to a user has the id of its tenant, user and product; one made
/// again after the directory showed the first removed also names its seats-counted-from time. Either
/// way the same assignment always gets the same id, so a consumer can deduplicate even without
/// read_committed.
pub fn assignment_id(
    tenant: &str,
    user: &str,
    product: ProductId,
    again_from: Option<Timestamp>,
) -> String {
    let mut name = format!("{tenant}\u{0}{user}\u{0}{}", Catalog::product(product).key);
    if let Some(at) = again_from {
        name.push_str(&format!("\u{0}{}", at.as_millis()));
    }
    Uuid::new_v5(&ASSIGNMENT_NAMESPACE, name.as_bytes()).to_string()
}

pub fn activity_kind(kind: ActivityKind) -> pb::ActivityKind {
    match kind {
        ActivityKind::CloudFlowSaved => pb::ActivityKind::CloudFlowSaved,
        ActivityKind::CloudFlowTriggered => pb::ActivityKind::CloudFlowTriggered,
        ActivityKind::CloudFlowTurnedOn => pb::ActivityKind::CloudFlowTurnedOn,
        ActivityKind::LicenseRequested => pb::ActivityKind::LicenseRequested,
        ActivityKind::GoPremiumSelected => pb::ActivityKind::GoPremiumSelected,
        ActivityKind::PremiumTrialRpaUsed => pb::ActivityKind::PremiumTrialRpaUsed,
    }
}

pub(super) fn outcome_and_reason(outcome: &Outcome) -> (pb::Outcome, pb::Reason) {
    match outcome {
        Outcome::Assigned(_) => (pb::Outcome::Assigned, pb::Reason::Unspecified),
        Outcome::AlreadyEntitled => (pb::Outcome::AlreadyEntitled, pb::Reason::Unspecified),
        Outcome::NotRequired => (pb::Outcome::NotRequired, pb::Reason::Unspecified),
        Outcome::OutOfScope => (pb::Outcome::OutOfScope, pb::Reason::Unspecified),
        Outcome::AutoclaimOff => (pb::Outcome::AutoclaimOff, pb::Reason::Unspecified),
        Outcome::NoPolicy => (pb::Outcome::NoPolicy, pb::Reason::Unspecified),
        Outcome::NotEligible(why) => (
            pb::Outcome::NotEligible,
            match why {
                Ineligibility::AccountDisabled => pb::Reason::AccountDisabled,
                Ineligibility::Guest => pb::Reason::Guest,
                Ineligibility::UnknownUser => pb::Reason::UnknownUser,
            },
        ),
        Outcome::Failed(f) => (
            pb::Outcome::Failed,
            match f.reason {
                FailureReason::NoLicensesAvailable => pb::Reason::NoLicensesAvailable,
                FailureReason::GrantingPlanDisabled => pb::Reason::GrantingPlanDisabled,
                FailureReason::UsageLocationMissing => pb::Reason::UsageLocationMissing,
            },
        ),
    }
}

/// Whether `assignment` or `failure` gives a record for this decision (so that callers read the
/// clock for `decidedAt` only when there is something to stamp).
pub fn has_output(decision: &Decision) -> bool {
    matches!(decision.outcome, Outcome::Assigned(_) | Outcome::Failed(_))
}

/// The assignment message of an ASSIGNED decision.
pub fn assignment(decision: &Decision, decided_at: Timestamp) -> Option<pb::LicenseAssignment> {
    let Outcome::Assigned(a) = &decision.outcome else {
        return None;
    };
    let product = Catalog::product(a.product);
    Some(pb::LicenseAssignment {
        assignment_id: assignment_id(
            &decision.tenant_id,
            &decision.subject_user_id,
            a.product,
            a.reassigned.then_some(a.counts_from),
        ),
        tenant_id: decision.tenant_id.clone(),
        user_id: decision.subject_user_id.clone(),
        product: product.key.to_owned(),
        sku_id: product.sku_id.to_owned(),
        sku_part_number: product.sku_part_number.to_owned(),
        disabled_plan_ids: a
            .disabled_plans
            .iter()
            .map(|i| product.plan(*i).id.to_owned())
            .collect(),
        policy_id: a.policy_id.clone(),
        policy_name: a.policy_name.clone(),
        trigger_event_id: decision.event_id.clone(),
        trigger_kind: activity_kind(decision.trigger_kind) as i32,
        occurred_at: Some(to_wire_timestamp(decision.occurred_at)),
        decided_at: Some(to_wire_timestamp(decided_at)),
        seats_counted_from: Some(to_wire_timestamp(a.counts_from)),
        pending_since: decision.pending_since.map(to_wire_timestamp),
    })
}

/// The failure message of a FAILED decision.
pub fn failure(decision: &Decision, decided_at: Timestamp) -> Option<pb::AutoclaimFailure> {
    let Outcome::Failed(f) = &decision.outcome else {
        return None;
    };
    let (_, reason) = outcome_and_reason(&decision.outcome);
    Some(pb::AutoclaimFailure {
        tenant_id: decision.tenant_id.clone(),
        user_id: decision.subject_user_id.clone(),
        product: f
            .product
            .map(|p| Catalog::product(p).key.to_owned())
            .unwrap_or_default(),
        policy_id: f.policy_id.clone().unwrap_or_default(),
        trigger_event_id: decision.event_id.clone(),
        trigger_kind: activity_kind(decision.trigger_kind) as i32,
        reason: reason as i32,
        occurred_at: Some(to_wire_timestamp(decision.occurred_at)),
        decided_at: Some(to_wire_timestamp(decided_at)),
        pending_since: decision.pending_since.map(to_wire_timestamp),
    })
}

/// The full decision message.
pub fn decision(decision: &Decision, decided_at: Timestamp) -> pb::Decision {
    let (outcome, reason) = outcome_and_reason(&decision.outcome);
    let assignment = assignment(decision, decided_at);
    let failure = failure(decision, decided_at);
    let (product, policy_id) = match (&assignment, &failure) {
        (Some(a), _) => (a.product.clone(), a.policy_id.clone()),
        (_, Some(f)) => (f.product.clone(), f.policy_id.clone()),
        _ => Default::default(),
    };
    pb::Decision {
        event_id: decision.event_id.clone(),
        tenant_id: decision.tenant_id.clone(),
        subject_user_id: decision.subject_user_id.clone(),
        outcome: outcome as i32,
        reason: reason as i32,
        product,
        policy_id,
        assignment,
        failure,
        claims: Vec::new(),
        notices: Vec::new(),
    }
}

/// The full decision message with the claim changes and notices it gave.
pub fn decided(decided: &Decided, decided_at: Timestamp) -> pb::Decision {
    let mut message = decision(&decided.decision, decided_at);
    message.claims = decided.claims.iter().map(claim_record).collect();
    message.notices = decided.notices.iter().map(notice_record).collect();
    message
}

/// Decisions made again for waiting claims, as `replay` prints them: each assignment with the claim
/// it fulfilled, then a line for each claim that ended otherwise (with the outcome that ended it);
/// the notices go with the last line.
pub fn redecided(redecided: &Redecided) -> Vec<pb::Decision> {
    let mut lines: Vec<pb::Decision> = redecided
        .assignments
        .iter()
        .map(|d| {
            let mut line = decision(d, d.occurred_at);
            line.claims = redecided
                .claims
                .iter()
                .filter(|c| c.claim.user_id == d.subject_user_id && is_fulfilled(c))
                .map(claim_record)
                .collect();
            line
        })
        .collect();
    for change in redecided.claims.iter().filter(|c| !is_fulfilled(c)) {
        let outcome = match &change.status {
            ClaimStatus::Entitled => pb::Outcome::AlreadyEntitled,
            ClaimStatus::NotEligible(o) => outcome_and_reason(o).0,
            _ => pb::Outcome::Unspecified,
        };
        lines.push(pb::Decision {
            event_id: change.claim.trigger.event_id.clone(),
            tenant_id: change.tenant_id.clone(),
            subject_user_id: change.claim.user_id.clone(),
            outcome: outcome as i32,
            claims: vec![claim_record(change)],
            ..Default::default()
        });
    }
    if let Some(last) = lines.last_mut() {
        last.notices = redecided.notices.iter().map(notice_record).collect();
    }
    lines
}

fn is_fulfilled(change: &ClaimChange) -> bool {
    matches!(change.status, ClaimStatus::Fulfilled { .. })
}
