//! Activity events and what they require: which capabilities, and whose licence; and how far
//! ahead of its record an event's time may be.
use std::time::Duration;

use thiserror::Error;

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
    /// Licensed by a Power Automate Process (per-flow) plan: its runs need no per-user licence.
    pub covered_by_process_plan: bool,
    /// Runs in the context of a Power Apps or Dynamics 365 app the user is licensed for, whose
    /// licence covers it.
    pub runs_in_licensed_app_context: bool,
}

impl FlowInfo {
    /// Whether Power Automate's licensing covers the flow without a per-user licence: a per-flow
    /// plan, or the licence of the app it runs in.
    pub fn needs_no_per_user_licence(&self) -> bool {
        self.covered_by_process_plan || self.runs_in_licensed_app_context
    }
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
                // Checked first: an exempt flow needs nothing whatever it uses.
                Some(flow) if flow.needs_no_per_user_licence() => Capabilities::NONE,
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

    /// Bounds the event's time by the time its record was written (`written_at`, None when the
    /// record has no timestamp: then there is no bound). The engine decides by event time, so an
    /// event stamped by a clock far ahead would be decided under policy versions not yet in force,
    /// and its assignment would count against every billing snapshot before that date. Producers'
    /// clocks may run a little ahead of the broker's: `max_skew` allows for that. Events in the
    /// past are not bounded (late events are normal).
    pub fn check_event_time(
        &self,
        written_at: Option<Timestamp>,
        max_skew: Duration,
    ) -> Result<(), EventTimeInFuture> {
        match written_at {
            Some(written_at) if self.occurred_at > written_at.saturating_add(max_skew) => {
                Err(EventTimeInFuture {
                    occurred_at: self.occurred_at,
                    written_at,
                    max_skew,
                })
            }
            _ => Ok(()),
        }
    }
}

/// How far the event time may be ahead of the record's write time unless configured otherwise:
/// more than clocks kept by NTP drift apart, far less than a propagation delay or a billing sync.
pub const DEFAULT_MAX_EVENT_TIME_SKEW: Duration = Duration::from_secs(5 * 60);

/// An event that says it occurred later than its record was written, beyond the allowed skew.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "occurredAt {occurred_at} is more than {} after the record was written to Kafka ({written_at}): \
     the producer's clock is ahead (allowed skew: --max-event-time-skew)",
    humantime::format_duration(*max_skew)
)]
pub struct EventTimeInFuture {
    pub occurred_at: Timestamp,
    pub written_at: Timestamp,
    pub max_skew: Duration,
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
                covered_by_process_plan: false,
                runs_in_licensed_app_context: false,
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
    fn a_flow_under_a_process_plan_or_in_a_licensed_app_requires_nothing() {
        for exempt in [
            |f: &mut FlowInfo| f.covered_by_process_plan = true,
            |f: &mut FlowInfo| f.runs_in_licensed_app_context = true,
        ] {
            for kind in [
                ActivityKind::CloudFlowSaved,
                ActivityKind::CloudFlowTriggered,
                ActivityKind::CloudFlowTurnedOn,
            ] {
                let mut e = flow_event(kind, TriggerType::Automated);
                let flow = e.flow.as_mut().unwrap();
                (flow.uses_attended_rpa, flow.uses_premium_connectors) = (true, true);
                flow.managed_environment = true;
                assert_eq!(
                    e.required_capabilities().count(),
                    2,
                    "needs both unless exempt"
                );
                exempt(e.flow.as_mut().unwrap());
                assert!(e.required_capabilities().is_empty(), "{kind:?}");
            }
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(millis: i64) -> Activity {
        let mut e = flow_event(ActivityKind::CloudFlowSaved, TriggerType::Instant);
        e.occurred_at = Timestamp::from_millis(millis);
        e
    }

    #[test]
    fn an_event_up_to_the_skew_after_its_write_time_passes() {
        let written = Timestamp::from_millis(1_000_000);
        let bound = 1_000_000 + 5 * 60_000;
        assert_eq!(
            at(bound).check_event_time(Some(written), 5 * MINUTE),
            Ok(())
        );
        assert_eq!(
            at(1_000_000).check_event_time(Some(written), Duration::ZERO),
            Ok(()),
            "no skew: the write time itself passes"
        );
    }

    #[test]
    fn an_event_one_millisecond_beyond_the_skew_is_refused_naming_both_times() {
        let written = Timestamp::from_millis(1_000_000);
        let e = at(1_000_000 + 5 * 60_000 + 1);
        let refused = e.check_event_time(Some(written), 5 * MINUTE).unwrap_err();
        assert_eq!(
            refused,
            EventTimeInFuture {
                occurred_at: e.occurred_at,
                written_at: written,
                max_skew: 5 * MINUTE
            }
        );
        let text = refused.to_string();
        for part in ["1970-01-01T00:21:40.001Z", "1970-01-01T00:16:40.000Z", "5m"] {
            assert!(text.contains(part), "{text}");
        }
    }

    #[test]
    fn an_event_without_a_write_time_or_in_the_past_is_not_bounded() {
        assert_eq!(at(i64::MAX).check_event_time(None, Duration::ZERO), Ok(()));
        let written = Timestamp::from_millis(1_000_000);
        for past in [0, 999_999, 1_000_000 - 365 * 24 * 3_600_000] {
            assert_eq!(
                at(past).check_event_time(Some(written), Duration::ZERO),
                Ok(())
            );
        }
        assert_eq!(
            at(i64::MAX).check_event_time(Some(Timestamp::MAX), Duration::MAX),
            Ok(()),
            "the bound saturates"
        );
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
