//! Pending claims and notices on the wire: the records of the claims and notices topics, and
//! reading them back on restore.
use uuid::Uuid;

use super::convert::{self, to_wire_timestamp, SCHEMA_VERSION};
use super::generated as pb;
use super::output::{activity_kind, assignment_id, outcome_and_reason};
use super::WireError;
use crate::domain::activity::{Activity, ActivitySource, TriggerType};
use crate::domain::catalog::{Capabilities, Catalog, ProductId};
use crate::domain::claims::{ClaimChange, ClaimStatus, Notice, NoticeKind, PendingClaim};
use crate::domain::time::Timestamp;

/// Namespace of notice ids (UUID v5 of tenant, kind, product and time).
const NOTICE_NAMESPACE: Uuid = Uuid::from_u128(0x2f0b_51c4_77a6_4c1e_b1d8_0e6a_93c4_5d17);

/// The claims topic's key: one claim per tenant, user and need.
pub fn claim_key(tenant: &str, user: &str, need: Capabilities) -> String {
    format!("{tenant}/{user}/{need}")
}

/// The record of a claim's change.
pub fn claim_record(change: &ClaimChange) -> pb::LicenseClaim {
    let claim = &change.claim;
    let (status, assignment_id, product, ended) = status_fields(change);
    let (ended_outcome, ended_reason) = ended.unwrap_or_default();
    pb::LicenseClaim {
        tenant_id: change.tenant_id.clone(),
        user_id: claim.user_id.clone(),
        needs: need_names(claim.need),
        status: status as i32,
        trigger: Some(activity_event(&claim.trigger)),
        first_seen: Some(to_wire_timestamp(claim.first_seen)),
        last_seen: Some(to_wire_timestamp(claim.last_seen)),
        events: claim.events,
        product: product
            .map(|p| Catalog::product(p).key.to_owned())
            .unwrap_or_default(),
        policy_id: claim.policy_id.clone().unwrap_or_default(),
        changed_at: Some(to_wire_timestamp(change.at)),
        assignment_id,
        ended_outcome: ended_outcome as i32,
        ended_reason: ended_reason as i32,
        expires_at: Some(to_wire_timestamp(change.expires_at)),
    }
}

type StatusFields = (
    pb::ClaimStatus,
    String,
    Option<ProductId>,
    Option<(pb::Outcome, pb::Reason)>,
);

fn status_fields(change: &ClaimChange) -> StatusFields {
    let claim = &change.claim;
    match &change.status {
        ClaimStatus::Pending => (pb::ClaimStatus::Pending, String::new(), claim.product, None),
        ClaimStatus::Fulfilled {
            product,
            again_from,
        } => (
            pb::ClaimStatus::Fulfilled,
            assignment_id(&change.tenant_id, &claim.user_id, *product, *again_from),
            Some(*product),
            None,
        ),
        ClaimStatus::Entitled => (
            pb::ClaimStatus::EndedEntitled,
            String::new(),
            claim.product,
            None,
        ),
        ClaimStatus::NotEligible(outcome) => (
            pb::ClaimStatus::EndedNotEligible,
            String::new(),
            claim.product,
            Some(outcome_and_reason(outcome)),
        ),
        ClaimStatus::Expired => (pb::ClaimStatus::Expired, String::new(), claim.product, None),
    }
}

fn need_names(need: Capabilities) -> Vec<String> {
    Capabilities::NAMED
        .iter()
        .filter(|(_, caps)| need.contains(*caps))
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// The activity event a claim is decided again from, as the producer would have sent it.
pub fn activity_event(event: &Activity) -> pb::ActivityEvent {
    pb::ActivityEvent {
        schema_version: SCHEMA_VERSION,
        event_id: event.event_id.clone(),
        tenant_id: event.tenant_id.clone(),
        occurred_at: Some(to_wire_timestamp(event.occurred_at)),
        actor_user_id: event.actor_user_id.clone(),
        kind: activity_kind(event.kind) as i32,
        source: match event.source {
            ActivitySource::Portal => pb::ActivitySource::Portal,
            ActivitySource::Desktop => pb::ActivitySource::Desktop,
        } as i32,
        flow: event.flow.as_ref().map(|f| pb::Flow {
            flow_id: f.flow_id.clone(),
            owner_user_id: f.owner_user_id.clone(),
            trigger_type: match f.trigger_type {
                TriggerType::Automated => pb::TriggerType::Automated,
                TriggerType::Scheduled => pb::TriggerType::Scheduled,
                TriggerType::Instant => pb::TriggerType::Instant,
            } as i32,
            uses_premium_connectors: f.uses_premium_connectors,
            uses_attended_rpa: f.uses_attended_rpa,
            environment_id: f.environment_id.clone(),
            managed_environment: f.managed_environment,
            covered_by_process_plan: f.covered_by_process_plan,
            runs_in_licensed_app_context: f.runs_in_licensed_app_context,
        }),
        requested_product: event
            .requested_product
            .map(|p| Catalog::product(p).key.to_owned())
            .unwrap_or_default(),
    }
}

/// A claim read back from the claims topic: its tenant, the claim, and whether it is pending.
pub struct ClaimRecord {
    pub tenant_id: String,
    pub claim: PendingClaim,
    pub pending: bool,
    pub changed_at: Timestamp,
}

impl TryFrom<pb::LicenseClaim> for ClaimRecord {
    type Error = WireError;

    fn try_from(c: pb::LicenseClaim) -> Result<Self, WireError> {
        let trigger = c
            .trigger
            .ok_or_else(|| WireError::field("trigger", "is required"))?;
        let trigger = Activity::try_from(trigger)?;
        let need = trigger.required_capabilities();
        let product = match c.product.as_str() {
            "" => None,
            key => Some(convert::product("product", key)?),
        };
        let status = pb::ClaimStatus::try_from(c.status).unwrap_or(pb::ClaimStatus::Unspecified);
        Ok(ClaimRecord {
            tenant_id: convert::entity_id("tenantId", c.tenant_id)?,
            pending: status == pb::ClaimStatus::Pending,
            changed_at: convert::timestamp("changedAt", c.changed_at)?,
            claim: PendingClaim {
                user_id: convert::entity_id("userId", c.user_id)?,
                need,
                first_seen: convert::timestamp("firstSeen", c.first_seen)?,
                last_seen: convert::timestamp("lastSeen", c.last_seen)?,
                events: c.events.max(1),
                trigger,
                product,
                policy_id: (!c.policy_id.is_empty()).then_some(c.policy_id),
            },
        })
    }
}

/// The record of a notice.
pub fn notice_record(notice: &Notice) -> pb::AdminNotice {
    let product = Catalog::product(notice.product).key;
    let (kind, digest, fulfilled, threshold) = match notice.kind {
        NoticeKind::SeatsExhausted { digest } => (pb::NoticeKind::SeatsExhausted, digest, 0, 0),
        NoticeKind::LowSeats { threshold } => (pb::NoticeKind::LowSeats, false, 0, threshold),
        NoticeKind::SeatsAvailableAgain { fulfilled } => {
            (pb::NoticeKind::SeatsAvailableAgain, false, fulfilled, 0)
        }
    };
    let name = format!(
        "{}\u{0}{}\u{0}{product}\u{0}{}",
        notice.tenant_id,
        kind.as_str_name(),
        notice.at.as_millis()
    );
    pb::AdminNotice {
        notice_id: Uuid::new_v5(&NOTICE_NAMESPACE, name.as_bytes()).to_string(),
        tenant_id: notice.tenant_id.clone(),
        kind: kind as i32,
        product: product.to_owned(),
        at: Some(to_wire_timestamp(notice.at)),
        users_waiting: notice.users_waiting,
        seats_available: notice.seats_available,
        claims_fulfilled: fulfilled,
        digest,
        low_seats_threshold: threshold,
    }
}

/// A notice read back from the notices topic, for the first-then-digest rule.
pub struct NoticeRecord {
    pub tenant_id: String,
    pub product: ProductId,
    pub kind: NoticeKind,
    pub at: Timestamp,
}

impl TryFrom<pb::AdminNotice> for NoticeRecord {
    type Error = WireError;

    fn try_from(n: pb::AdminNotice) -> Result<Self, WireError> {
        let kind = match pb::NoticeKind::try_from(n.kind) {
            Ok(pb::NoticeKind::SeatsExhausted) => NoticeKind::SeatsExhausted { digest: n.digest },
            Ok(pb::NoticeKind::LowSeats) => NoticeKind::LowSeats {
                threshold: n.low_seats_threshold,
            },
            Ok(pb::NoticeKind::SeatsAvailableAgain) => NoticeKind::SeatsAvailableAgain {
                fulfilled: n.claims_fulfilled,
            },
            _ => {
                return Err(WireError::field(
                    "kind",
                    format!("unknown value {}", n.kind),
                ))
            }
        };
        Ok(NoticeRecord {
            tenant_id: convert::entity_id("tenantId", n.tenant_id)?,
            product: convert::product("product", &n.product)?,
            kind,
            at: convert::timestamp("at", n.at)?,
        })
    }
}
