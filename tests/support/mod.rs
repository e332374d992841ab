//! Builders of input records shared by the integration tests.
//!
//! The catalog facts (SKU ids, plan ids, which plan grants what) are copied from design section 2.1
//! on purpose, not read from `autoclaim::domain::catalog`, so the tests check the code against the
//! design rather than against itself.
#![allow(dead_code)]

use std::time::Duration;

use autoclaim::replay::Replayer;
use autoclaim::wire::pb;
use autoclaim::wire::pb::replay_record::Record;
use pbjson_types::Timestamp;

pub const PER_USER: &str = "power_automate_per_user";
pub const PREMIUM: &str = "power_automate_premium";
pub const PER_USER_SKU: &str = "4a51bf65-409c-4a91-b845-1121b571cc9d";
pub const PREMIUM_SKU: &str = "eda1941c-3c4f-4995-b5eb-e85a42175ab9";

// Service plans of per user: DYN365_CDS_P2, EXCHANGE_S_FOUNDATION, FLOW_PER_USER (grants flows).
pub const DYN365_CDS_P2: &str = "6ea4c1ef-c259-46df-bce2-943342cd3cb2";
pub const EXCHANGE_S_FOUNDATION: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";
pub const FLOW_PER_USER: &str = "c5002c70-f725-4367-b409-f0eff4fee6c0";
// Service plans of premium: CDS_ATTENDED_RPA, EXCHANGE_S_FOUNDATION, POWER_AUTOMATE_ATTENDED_RPA
// (grants flows and attended RPA).
pub const CDS_ATTENDED_RPA: &str = "3da2fd4c-1bee-4b61-a17f-94c31e5cab93";
pub const POWER_AUTOMATE_ATTENDED_RPA: &str = "375cd0ad-c407-49fd-866a-0bff4f8a9a4d";

/// Plans of a product that grant no capability (an admin may exclude them).
pub fn non_granting_plans(product: &str) -> &'static [&'static str] {
    match product {
        PER_USER => &[DYN365_CDS_P2, EXCHANGE_S_FOUNDATION],
        PREMIUM => &[CDS_ATTENDED_RPA, EXCHANGE_S_FOUNDATION],
        other => panic!("not a catalog product: {other}"),
    }
}

pub fn sku_of(product: &str) -> &'static str {
    match product {
        PER_USER => PER_USER_SKU,
        PREMIUM => PREMIUM_SKU,
        other => panic!("not a catalog product: {other}"),
    }
}

/// Capabilities as the design names them: (premium_cloud_flows, attended_rpa).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub flows: bool,
    pub rpa: bool,
}

impl Caps {
    pub const NONE: Caps = Caps {
        flows: false,
        rpa: false,
    };
    pub const FLOWS: Caps = Caps {
        flows: true,
        rpa: false,
    };
    pub const RPA_AND_FLOWS: Caps = Caps {
        flows: true,
        rpa: true,
    };

    pub fn union(self, o: Caps) -> Caps {
        Caps {
            flows: self.flows || o.flows,
            rpa: self.rpa || o.rpa,
        }
    }

    pub fn covers(self, need: Caps) -> bool {
        (self.flows || !need.flows) && (self.rpa || !need.rpa)
    }

    pub fn is_empty(self) -> bool {
        !self.flows && !self.rpa
    }
}

/// What a product grants (design 2.1: premium is a superset of per user).
pub fn product_caps(product: &str) -> Caps {
    match product {
        PER_USER => Caps::FLOWS,
        PREMIUM => Caps::RPA_AND_FLOWS,
        other => panic!("not a catalog product: {other}"),
    }
}

/// What a directory licence grants, taking disabled plans into account (design 2.1).
pub fn licence_caps(sku: &str, disabled: &[String]) -> Caps {
    let off = |plan: &str| disabled.iter().any(|d| d.eq_ignore_ascii_case(plan));
    if sku.eq_ignore_ascii_case(PER_USER_SKU) && !off(FLOW_PER_USER) {
        Caps::FLOWS
    } else if sku.eq_ignore_ascii_case(PREMIUM_SKU) && !off(POWER_AUTOMATE_ATTENDED_RPA) {
        Caps::RPA_AND_FLOWS
    } else {
        Caps::NONE
    }
}

// ------------------------------------------------------------------------------------------ time

pub const MS: i64 = 1;
pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
/// 2026-03-02T00:00:00Z in milliseconds since the epoch.
pub const T0: i64 = 1_772_409_600_000;

pub fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn delay_ms(ms: i64) -> Duration {
    Duration::from_millis(ms as u64)
}

// --------------------------------------------------------------------------------------- records

pub fn rec(record: Record) -> pb::ReplayRecord {
    pb::ReplayRecord {
        record: Some(record),
        written_at: None,
    }
}

pub fn settings(
    tenant: &str,
    enabled: bool,
    scope: pb::Scope,
    changed_at: i64,
) -> pb::ReplayRecord {
    rec(Record::Settings(pb::TenantSettings {
        tenant_id: tenant.into(),
        autoclaim_enabled: enabled,
        scope: scope as i32,
        changed_at: Some(ts(changed_at)),
        changed_by: "admin".into(),
        low_seats_threshold: 0,
    }))
}

pub fn autoclaim_on(tenant: &str, changed_at: i64) -> pb::ReplayRecord {
    settings(tenant, true, pb::Scope::AllEnvironments, changed_at)
}

pub fn inventory(
    tenant: &str,
    product: &str,
    purchased: u64,
    assigned: u64,
    as_of: i64,
) -> pb::ReplayRecord {
    rec(Record::Inventory(pb::LicenseInventory {
        tenant_id: tenant.into(),
        product: product.into(),
        purchased_units: purchased,
        assigned_units: assigned,
        as_of: Some(ts(as_of)),
    }))
}

/// A policy version.
#[derive(Clone, Debug)]
pub struct PolicySpec(pub pb::Policy);

impl PolicySpec {
    /// An enabled policy created (and last changed) at `at`.
    pub fn new(tenant: &str, id: &str, product: &str, at: i64) -> Self {
        PolicySpec(pb::Policy {
            tenant_id: tenant.into(),
            policy_id: id.into(),
            name: format!("policy {id}"),
            product: product.into(),
            backup_products: vec![],
            excluded_apps: vec![],
            enabled: true,
            deleted: false,
            created_at: Some(ts(at)),
            changed_at: Some(ts(at)),
            changed_by: "admin".into(),
        })
    }

    pub fn backup(mut self, product: &str) -> Self {
        self.0.backup_products.push(product.into());
        self
    }

    pub fn exclude(mut self, product: &str, plans: &[&str]) -> Self {
        self.0.excluded_apps.push(pb::ExcludedApps {
            product: product.into(),
            plan_ids: plans.iter().map(|p| p.to_string()).collect(),
        });
        self
    }

    pub fn enabled(mut self, enabled: bool) -> Self {
        self.0.enabled = enabled;
        self
    }

    pub fn deleted(mut self) -> Self {
        self.0.deleted = true;
        self
    }

    /// A new version of the same policy, changed at `at` (created_at stays).
    pub fn changed_at(mut self, at: i64) -> Self {
        self.0.changed_at = Some(ts(at));
        self
    }

    pub fn record(&self) -> pb::ReplayRecord {
        rec(Record::Policy(self.0.clone()))
    }
}

/// A directory user snapshot.
#[derive(Clone, Debug)]
pub struct UserSpec(pub pb::DirectoryUser);

impl UserSpec {
    /// An enabled member with a usage location and no licences.
    pub fn member(tenant: &str, id: &str) -> Self {
        UserSpec(pb::DirectoryUser {
            tenant_id: tenant.into(),
            user_id: id.into(),
            account_enabled: true,
            user_type: pb::directory_user::UserType::Member as i32,
            usage_location: "US".into(),
            licenses: vec![],
            as_of: Some(ts(T0)),
        })
    }

    pub fn disabled(mut self) -> Self {
        self.0.account_enabled = false;
        self
    }

    pub fn guest(mut self) -> Self {
        self.0.user_type = pb::directory_user::UserType::Guest as i32;
        self
    }

    pub fn no_usage_location(mut self) -> Self {
        self.0.usage_location = String::new();
        self
    }

    /// When the directory took the snapshot.
    pub fn taken_at(mut self, at: i64) -> Self {
        self.0.as_of = Some(ts(at));
        self
    }

    pub fn licence(mut self, sku: &str, disabled_plans: &[&str]) -> Self {
        self.0.licenses.push(pb::AssignedLicense {
            sku_id: sku.into(),
            disabled_plan_ids: disabled_plans.iter().map(|p| p.to_string()).collect(),
        });
        self
    }

    pub fn record(&self) -> pb::ReplayRecord {
        rec(Record::DirectoryUser(self.0.clone()))
    }
}

pub fn user_deleted(tenant: &str, user: &str) -> pb::ReplayRecord {
    rec(Record::DirectoryUserDeleted(pb::DirectoryUserDeleted {
        tenant_id: tenant.into(),
        user_id: user.into(),
    }))
}

/// An activity event.
#[derive(Clone, Debug)]
pub struct Ev(pub pb::ActivityEvent);

impl Ev {
    /// CLOUD_FLOW_SAVED from the portal of an instant flow with premium connectors in an unmanaged
    /// environment, owned by the actor.
    pub fn saved(tenant: &str, id: &str, actor: &str, at: i64) -> Self {
        Ev(pb::ActivityEvent {
            schema_version: 1,
            event_id: id.into(),
            tenant_id: tenant.into(),
            occurred_at: Some(ts(at)),
            actor_user_id: actor.into(),
            kind: pb::ActivityKind::CloudFlowSaved as i32,
            source: pb::ActivitySource::Portal as i32,
            flow: Some(pb::Flow {
                flow_id: format!("flow-{id}"),
                owner_user_id: actor.into(),
                trigger_type: pb::TriggerType::Instant as i32,
                uses_premium_connectors: true,
                uses_attended_rpa: false,
                environment_id: "env-default".into(),
                managed_environment: false,
                covered_by_process_plan: false,
                runs_in_licensed_app_context: false,
            }),
            requested_product: String::new(),
        })
    }

    /// A desktop event (GO_PREMIUM_SELECTED or PREMIUM_TRIAL_RPA_USED).
    pub fn desktop(tenant: &str, id: &str, actor: &str, at: i64, kind: pb::ActivityKind) -> Self {
        Ev(pb::ActivityEvent {
            schema_version: 1,
            event_id: id.into(),
            tenant_id: tenant.into(),
            occurred_at: Some(ts(at)),
            actor_user_id: actor.into(),
            kind: kind as i32,
            source: pb::ActivitySource::Desktop as i32,
            flow: None,
            requested_product: String::new(),
        })
    }

    /// LICENSE_REQUESTED from the portal, naming a product.
    pub fn request(tenant: &str, id: &str, actor: &str, at: i64, product: &str) -> Self {
        Ev(pb::ActivityEvent {
            schema_version: 1,
            event_id: id.into(),
            tenant_id: tenant.into(),
            occurred_at: Some(ts(at)),
            actor_user_id: actor.into(),
            kind: pb::ActivityKind::LicenseRequested as i32,
            source: pb::ActivitySource::Portal as i32,
            flow: None,
            requested_product: product.into(),
        })
    }

    fn flow(&mut self) -> &mut pb::Flow {
        self.0.flow.as_mut().expect("a cloud-flow event")
    }

    pub fn kind(mut self, kind: pb::ActivityKind) -> Self {
        self.0.kind = kind as i32;
        self
    }

    pub fn trigger(mut self, trigger: pb::TriggerType) -> Self {
        self.flow().trigger_type = trigger as i32;
        self
    }

    pub fn owner(mut self, owner: &str) -> Self {
        self.flow().owner_user_id = owner.into();
        self
    }

    /// A standard flow: no premium connectors, no RPA.
    pub fn standard(mut self) -> Self {
        self.flow().uses_premium_connectors = false;
        self.flow().uses_attended_rpa = false;
        self
    }

    /// A flow licensed by a Power Automate Process (per-flow) plan.
    pub fn process_plan(mut self) -> Self {
        self.flow().covered_by_process_plan = true;
        self
    }

    /// A flow that runs in the context of a Power Apps or Dynamics 365 app the user is licensed for.
    pub fn licensed_app_context(mut self) -> Self {
        self.flow().runs_in_licensed_app_context = true;
        self
    }

    /// The record as written to Kafka at `written_at` (milliseconds): `replay` bounds its event
    /// time by that, as `run` does by the record's timestamp.
    pub fn written_at(&self, written_at: i64) -> pb::ReplayRecord {
        pb::ReplayRecord {
            written_at: Some(ts(written_at)),
            ..self.record()
        }
    }

    pub fn rpa(mut self) -> Self {
        self.flow().uses_attended_rpa = true;
        self
    }

    pub fn managed(mut self) -> Self {
        self.flow().managed_environment = true;
        self.flow().environment_id = "env-managed".into();
        self
    }

    pub fn record(&self) -> pb::ReplayRecord {
        rec(Record::Activity(self.0.clone()))
    }
}

// ----------------------------------------------------------------------------------- replaying

/// A replayer with helpers that insist on what each record must give.
pub struct Run(pub Replayer);

impl Run {
    pub fn new(delay: Duration) -> Self {
        Run(Replayer::new(delay))
    }

    /// Applies a table record, which must be accepted and decide no waiting claim again.
    pub fn feed(&mut self, record: pb::ReplayRecord) -> &mut Self {
        match self.0.apply(record.clone()) {
            Ok(lines) if lines.is_empty() => self,
            other => panic!("{record:?} gave {other:?}"),
        }
    }

    /// Applies a table record, which must be accepted; returns the lines of the waiting claims it
    /// decided again.
    pub fn feed_redeciding(&mut self, record: pb::ReplayRecord) -> Vec<pb::Decision> {
        self.0
            .apply(record.clone())
            .unwrap_or_else(|e| panic!("{record:?} refused: {e}"))
    }

    pub fn feed_all(&mut self, records: impl IntoIterator<Item = pb::ReplayRecord>) -> &mut Self {
        for r in records {
            self.feed(r);
        }
        self
    }

    /// Applies an activity, which must be accepted and give a decision (and decide no waiting
    /// claim again first).
    pub fn decide(&mut self, event: Ev) -> pb::Decision {
        match self.0.apply(event.record()).as_deref() {
            Ok([d]) => {
                assert_eq!(d.event_id, event.0.event_id, "decision for another event");
                d.clone()
            }
            other => panic!("{event:?} gave {other:?}"),
        }
    }
}

pub fn outcome(d: &pb::Decision) -> pb::Outcome {
    pb::Outcome::try_from(d.outcome).expect("a known outcome")
}

pub fn reason(d: &pb::Decision) -> pb::Reason {
    pb::Reason::try_from(d.reason).expect("a known reason")
}

/// Asserts the outcome (and reason), printing the whole decision when they differ.
#[track_caller]
pub fn assert_outcome(d: &pb::Decision, expected: pb::Outcome, expected_reason: pb::Reason) {
    assert_eq!(
        (outcome(d), reason(d)),
        (expected, expected_reason),
        "decision {d:?}"
    );
}

/// Asserts an ASSIGNED decision of `product` from `policy`; returns the assignment.
#[track_caller]
pub fn assert_assigned<'a>(
    d: &'a pb::Decision,
    product: &str,
    policy: &str,
) -> &'a pb::LicenseAssignment {
    assert_outcome(d, pb::Outcome::Assigned, pb::Reason::Unspecified);
    let a = d.assignment.as_ref().expect("an assignment");
    assert_eq!(
        (a.product.as_str(), a.policy_id.as_str()),
        (product, policy),
        "decision {d:?}"
    );
    assert_eq!(d.product, product, "decision {d:?}");
    assert_eq!(d.policy_id, policy, "decision {d:?}");
    assert_eq!(a.sku_id, sku_of(product), "decision {d:?}");
    assert_eq!(a.user_id, d.subject_user_id, "decision {d:?}");
    assert_eq!(a.tenant_id, d.tenant_id, "decision {d:?}");
    a
}

#[track_caller]
pub fn assert_no_licences(d: &pb::Decision) {
    assert_outcome(d, pb::Outcome::Failed, pb::Reason::NoLicensesAvailable);
    assert!(d.assignment.is_none(), "decision {d:?}");
    assert!(d.failure.is_some(), "decision {d:?}");
}
