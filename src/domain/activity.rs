//! Activity events and what they require: which capabilities, and whose licence.
use super::catalog::{Capabilities, Catalog, ProductId};
use super::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivityKind {
    CloudFlowSaved,
    CloudFlowTriggered,
    CloudFlowTurnedOn,
    LicenseRequested,
    GoPremiumSelected,
    PremiumTrialRpaUsed,
}

impl ActivityKind {
    pub fn is_cloud_flow(self) -> bool {
        matches!(
            self,
            ActivityKind::CloudFlowSaved
                | ActivityKind::CloudFlowTriggered
                | ActivityKind::CloudFlowTurnedOn
        )
    }

    /// The source an event of this kind must come from.
    pub fn expected_source(self) -> ActivitySource {
        match self {
            ActivityKind::GoPremiumSelected | ActivityKind::PremiumTrialRpaUsed => {
                ActivitySource::Desktop
            }
            _ => ActivitySource::Portal,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivitySource {
    Portal,
    Desktop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TriggerType {
    Automated,
    Scheduled,
    Instant,
}

/// The cloud flow a portal event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    pub flow_id: String,
    pub owner_user_id: String,
    pub trigger_type: TriggerType,
    pub uses_premium_connectors: bool,
    pub uses_attended_rpa: bool,
    pub environment_id: String,
    pub managed_environment: bool,
}

/// A validated activity event. Construction from the wire guarantees the invariants that the engine
/// relies on: cloud-flow kinds carry a flow, licence requests name a catalog product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub event_id: String,
    pub tenant_id: String,
    pub occurred_at: Timestamp,
    pub actor_user_id: String,
    pub kind: ActivityKind,
    pub source: ActivitySource,
    pub flow: Option<FlowInfo>,
    pub requested_product: Option<ProductId>,
}

impl Activity {
    /// The capabilities the event needs; empty for a standard flow.
    pub fn required_capabilities(&self) -> Capabilities {
        let rpa_and_flows = Capabilities::ATTENDED_RPA.union(Capabilities::PREMIUM_CLOUD_FLOWS);
        match self.kind {
            ActivityKind::CloudFlowSaved
            | ActivityKind::CloudFlowTriggered
            | ActivityKind::CloudFlowTurnedOn => match &self.flow {
                Some(flow) if flow.uses_attended_rpa => rpa_and_flows,
                Some(flow) if flow.uses_premium_connectors || flow.managed_environment => {
                    Capabilities::PREMIUM_CLOUD_FLOWS
                }
                _ => Capabilities::NONE,
            },
            ActivityKind::LicenseRequested => self
                .requested_product
                .map(|p| Catalog::product(p).capabilities())
                .unwrap_or(Capabilities::NONE),
            ActivityKind::GoPremiumSelected | ActivityKind::PremiumTrialRpaUsed => rpa_and_flows,
        }
    }

    /// Whose licence the event needs: an automated or scheduled flow's trigger runs on the owner's
    /// licence; everything else (instant triggers, saves, turn-ons, requests, desktop) on the actor's.
    pub fn licence_subject(&self) -> &str {
        match (&self.kind, &self.flow) {
            (ActivityKind::CloudFlowTriggered, Some(flow))
                if matches!(
                    flow.trigger_type,
                    TriggerType::Automated | TriggerType::Scheduled
                ) =>
            {
                &flow.owner_user_id
            }
            _ => &self.actor_user_id,
        }
    }

    /// Whether the event comes from a managed environment (only cloud-flow events can).
    pub fn in_managed_environment(&self) -> bool {
        self.flow.as_ref().is_some_and(|f| f.managed_environment)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn flow_event(kind: ActivityKind, trigger: TriggerType) -> Activity {
        Activity {
            event_id: "e1".into(),
            tenant_id: "t1".into(),
            occurred_at: Timestamp::from_millis(1_000),
            actor_user_id: "actor".into(),
            kind,
            source: ActivitySource::Portal,
            flow: Some(FlowInfo {
                flow_id: "f1".into(),
                owner_user_id: "owner".into(),
                trigger_type: trigger,
                uses_premium_connectors: false,
                uses_attended_rpa: false,
                environment_id: "env".into(),
                managed_environment: false,
            }),
            requested_product: None,
        }
    }

    #[test]
    fn standard_flow_requires_nothing() {
        let e = flow_event(ActivityKind::CloudFlowSaved, TriggerType::Instant);
        assert!(e.required_capabilities().is_empty());
    }

    #[test]
    fn premium_connector_or_managed_environment_requires_premium_flows() {
        let mut e = flow_event(ActivityKind::CloudFlowTurnedOn, TriggerType::Automated);
        e.flow.as_mut().unwrap().uses_premium_connectors = true;
        assert_eq!(e.required_capabilities(), Capabilities::PREMIUM_CLOUD_FLOWS);
        let mut e = flow_event(ActivityKind::CloudFlowSaved, TriggerType::Automated);
        e.flow.as_mut().unwrap().managed_environment = true;
        assert_eq!(e.required_capabilities(), Capabilities::PREMIUM_CLOUD_FLOWS);
    }

    #[test]
    fn attended_rpa_requires_both() {
        let mut e = flow_event(ActivityKind::CloudFlowTriggered, TriggerType::Instant);
        e.flow.as_mut().unwrap().uses_attended_rpa = true;
        let caps = e.required_capabilities();
        assert!(caps.contains(Capabilities::ATTENDED_RPA));
        assert!(caps.contains(Capabilities::PREMIUM_CLOUD_FLOWS));
    }

    #[test]
    fn desktop_events_require_rpa() {
        let mut e = flow_event(ActivityKind::GoPremiumSelected, TriggerType::Instant);
        e.flow = None;
        e.source = ActivitySource::Desktop;
        assert_eq!(e.required_capabilities().count(), 2);
        e.kind = ActivityKind::PremiumTrialRpaUsed;
        assert_eq!(e.required_capabilities().count(), 2);
    }

    #[test]
    fn licence_request_requires_the_products_capabilities() {
        let mut e = flow_event(ActivityKind::LicenseRequested, TriggerType::Instant);
        e.flow = None;
        e.requested_product = Catalog::by_key("power_automate_per_user");
        assert_eq!(e.required_capabilities(), Capabilities::PREMIUM_CLOUD_FLOWS);
    }

    #[test]
    fn whose_licence() {
        for (trigger, subject) in [
            (TriggerType::Automated, "owner"),
            (TriggerType::Scheduled, "owner"),
            (TriggerType::Instant, "actor"),
        ] {
            let e = flow_event(ActivityKind::CloudFlowTriggered, trigger);
            assert_eq!(e.licence_subject(), subject, "{trigger:?}");
        }
        // Saves and turn-ons need the actor's licence whatever the trigger type.
        let e = flow_event(ActivityKind::CloudFlowSaved, TriggerType::Automated);
        assert_eq!(e.licence_subject(), "actor");
        let e = flow_event(ActivityKind::CloudFlowTurnedOn, TriggerType::Scheduled);
        assert_eq!(e.licence_subject(), "actor");
    }
}
