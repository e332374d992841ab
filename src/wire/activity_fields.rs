//! An activity event's fields as read from either encoding, before validation: strings borrowed
//! from the record where the decoder allows (the JSON fast path) or owned (prost, serde). One
//! validation (`convert::activity`) serves both, so the two decoders cannot drift apart in what they
//! accept.
use std::borrow::Cow;

use pbjson_types::Timestamp as WireTimestamp;

use super::pb;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivityFields<'a> {
    pub schema_version: u32,
    pub event_id: Cow<'a, str>,
    pub tenant_id: Cow<'a, str>,
    pub occurred_at: Option<WireTimestamp>,
    pub actor_user_id: Cow<'a, str>,
    pub kind: i32,
    pub source: i32,
    pub flow: Option<FlowFields<'a>>,
    pub requested_product: Cow<'a, str>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFields<'a> {
    pub flow_id: Cow<'a, str>,
    pub owner_user_id: Cow<'a, str>,
    pub trigger_type: i32,
    pub uses_premium_connectors: bool,
    pub uses_attended_rpa: bool,
    pub environment_id: Cow<'a, str>,
    pub managed_environment: bool,
    pub covered_by_process_plan: bool,
    pub runs_in_licensed_app_context: bool,
}

impl From<pb::ActivityEvent> for ActivityFields<'static> {
    fn from(e: pb::ActivityEvent) -> Self {
        ActivityFields {
            schema_version: e.schema_version,
            event_id: Cow::Owned(e.event_id),
            tenant_id: Cow::Owned(e.tenant_id),
            occurred_at: e.occurred_at,
            actor_user_id: Cow::Owned(e.actor_user_id),
            kind: e.kind,
            source: e.source,
            flow: e.flow.map(FlowFields::from),
            requested_product: Cow::Owned(e.requested_product),
        }
    }
}

impl From<pb::Flow> for FlowFields<'static> {
    fn from(f: pb::Flow) -> Self {
        FlowFields {
            flow_id: Cow::Owned(f.flow_id),
            owner_user_id: Cow::Owned(f.owner_user_id),
            trigger_type: f.trigger_type,
            uses_premium_connectors: f.uses_premium_connectors,
            uses_attended_rpa: f.uses_attended_rpa,
            environment_id: Cow::Owned(f.environment_id),
            managed_environment: f.managed_environment,
            covered_by_process_plan: f.covered_by_process_plan,
            runs_in_licensed_app_context: f.runs_in_licensed_app_context,
        }
    }
}
