//! The admin API's own view of the tables: settings and policy versions and inventory (read whole
//! from their topics), the assignments of the last 90 days (for the report and for the licences
//! still available), the newest audit entries of each tenant, and beside them the claims and
//! failures (`claims`). Filled by the admin feed, by the API's own writes (read-your-writes), or
//! directly by tests.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::audit::AuditLog;
use super::claims::ClaimTables;
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::ids;
use crate::domain::policy::Policy;
use crate::domain::propagation::Versioned;
use crate::domain::seats::{self, Inventory, SeatUsage};
use crate::domain::settings::{Scope, TenantSettings};
use crate::domain::time::Timestamp;
use crate::pipeline::records::TableUpdate;
use crate::wire::convert::{self, PolicyRecord, SettingsRecord};
use crate::wire::{pb, WireError};

/// How long assignments are kept for the report (the longest window).
pub const REPORT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// A settings version with who made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsVersion {
    pub settings: TenantSettings,
    pub changed_at: Timestamp,
    pub changed_by: String,
}

/// One assignment, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentRow {
    pub assignment_id: String,
    pub user_id: String,
    pub product: ProductId,
    pub policy_id: String,
    pub policy_name: String,
    pub trigger_kind: pb::ActivityKind,
    pub trigger_event_id: String,
    /// When the triggering event occurred (what seats are counted by).
    pub occurred_at: Timestamp,
    /// When the processor decided the assignment (`decidedAt`; `occurredAt` if absent).
    pub assigned_at: Timestamp,
    /// Set when it fulfilled a claim that waited for a seat: since when the claim waited.
    pub pending_since: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct TenantView {
    settings: Versioned<SettingsVersion>,
    policies: HashMap<String, Versioned<Policy>>,
    inventory: HashMap<ProductId, Inventory>,
    usage: HashMap<ProductId, SeatUsage>,
    assignments: Vec<AssignmentRow>,
    assignment_ids: HashSet<String>,
}

/// What an admin sees of a setting or policy: the newest version is in force, waiting for the
/// propagation delay, or (for policies) deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The newest version takes effect at `until`; the one before stays in force until then.
    Propagating { until: Timestamp },
    /// In force and on.
    Active,
    /// In force and off.
    Off,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Propagating { .. } => "PROPAGATING",
            Status::Active => "ACTIVE",
            Status::Off => "OFF",
        }
    }

    pub fn until(self) -> Option<Timestamp> {
        match self {
            Status::Propagating { until } => Some(until),
            _ => None,
        }
    }
}

/// A policy as listed: its newest version and its status.
#[derive(Clone, Debug)]
pub struct PolicyState<'a> {
    pub latest: &'a Policy,
    pub status: Status,
    /// When the newest version takes (or took) effect.
    pub effective_at: Timestamp,
}

#[derive(Debug)]
pub struct AdminView {
    propagation_delay: Duration,
    tenants: HashMap<String, TenantView>,
    audit: AuditLog,
    loaded: bool,
    /// Claims and failures, from their topics (kept apart: they are not policy tables).
    claims: ClaimTables,
}

/// The view shared by the feed thread and the HTTP handlers. Locks are held only for short,
/// non-blocking sections, never across an `.await`.
#[derive(Clone, Debug)]
pub struct SharedView(Arc<RwLock<AdminView>>);

impl SharedView {
    pub fn new(view: AdminView) -> Self {
        SharedView(Arc::new(RwLock::new(view)))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, AdminView> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, AdminView> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl AdminView {
    pub fn new(propagation_delay: Duration) -> Self {
        AdminView {
            propagation_delay,
            tenants: HashMap::new(),
            audit: AuditLog::default(),
            loaded: false,
            claims: ClaimTables::default(),
        }
    }

    pub fn propagation_delay(&self) -> Duration {
        self.propagation_delay
    }

    /// Whether the topics have been read to the end they had when the feed started: before that,
    /// listings could be stale and a name check could miss a policy.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn mark_loaded(&mut self) {
        self.loaded = true;
    }

    fn tenant_mut(&mut self, tenant: &str) -> &mut TenantView {
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantView::default());
        }
        self.tenants.get_mut(tenant).expect("inserted above")
    }

    pub fn apply(&mut self, update: TableUpdate) {
        match update {
            TableUpdate::Settings(s) => self.apply_settings_record(s),
            TableUpdate::Policy(p) => self.apply_policy_record(p),
            TableUpdate::Inventory(i) => {
                let tenant = self.tenant_mut(&i.tenant_id);
                let newer = tenant
                    .inventory
                    .get(&i.product)
                    .is_none_or(|old| i.inventory.as_of >= old.as_of);
                if newer {
                    tenant.inventory.insert(i.product, i.inventory);
                }
            }
        }
    }

    fn apply_settings_record(&mut self, s: SettingsRecord) {
        let delay = self.propagation_delay;
        self.tenant_mut(&s.tenant_id).settings.record(
            s.changed_at,
            SettingsVersion {
                settings: s.settings,
                changed_at: s.changed_at,
                changed_by: s.changed_by,
            },
            delay,
        );
    }

    fn apply_policy_record(&mut self, p: PolicyRecord) {
        let delay = self.propagation_delay;
        self.tenant_mut(&p.tenant_id)
            .policies
            .entry(p.policy.policy_id.clone())
            .or_default()
            .record(p.policy.changed_at, p.policy, delay);
    }

    /// Applies a settings version given in its wire form (validated as the processor would).
    pub fn apply_settings(&mut self, settings: pb::TenantSettings) -> Result<(), WireError> {
        self.apply_settings_record(settings.try_into()?);
        Ok(())
    }

    /// Applies a policy version given in its wire form (validated as the processor would).
    pub fn apply_policy(&mut self, policy: pb::Policy) -> Result<(), WireError> {
        self.apply_policy_record(policy.try_into()?);
        Ok(())
    }

    pub fn apply_inventory(&mut self, inventory: pb::LicenseInventory) -> Result<(), WireError> {
        self.apply(TableUpdate::Inventory(inventory.try_into()?));
        Ok(())
    }

    /// Records an audit entry at its offset on the audit topic (read from it, or the API's own
    /// write); one already kept is ignored.
    pub fn apply_audit(&mut self, entry: pb::AuditEntry, offset: i64) -> Result<(), WireError> {
        self.audit.record(entry, offset)
    }

    /// The newest audit entries of every tenant.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Records an assignment read from the assignments topic; one already seen is ignored.
    pub fn apply_assignment(&mut self, a: pb::LicenseAssignment) -> Result<(), WireError> {
        let product = convert::product("product", &a.product)?;
        let occurred_at = convert::timestamp("occurredAt", a.occurred_at)?;
        let assigned_at = match a.decided_at {
            Some(t) => convert::timestamp("decidedAt", Some(t))?,
            None => occurred_at,
        };
        if a.tenant_id.is_empty() {
            return Err(WireError::field("tenantId", "is required"));
        }
        let trigger_kind =
            pb::ActivityKind::try_from(a.trigger_kind).unwrap_or(pb::ActivityKind::Unspecified);
        let pending_since = a
            .pending_since
            .map(|t| convert::timestamp("pendingSince", Some(t)))
            .transpose()?;
        let tenant = self.tenant_mut(&ids::canonical_str(&a.tenant_id));
        if !tenant.assignment_ids.insert(a.assignment_id.clone()) {
            return Ok(());
        }
        // Seats are counted as the processor counted them (see LicenseAssignment.seatsCountedFrom).
        let seats_counted_from = match a.seats_counted_from {
            Some(t) => convert::timestamp("seatsCountedFrom", Some(t))?,
            None => occurred_at,
        };
        tenant
            .usage
            .entry(product)
            .or_default()
            .record(seats_counted_from);
        let row = AssignmentRow {
            assignment_id: a.assignment_id,
            user_id: a.user_id,
            product,
            policy_id: a.policy_id,
            policy_name: a.policy_name,
            trigger_kind,
            trigger_event_id: a.trigger_event_id,
            occurred_at,
            assigned_at,
            pending_since,
        };
        let at = tenant
            .assignments
            .partition_point(|r| r.assigned_at <= row.assigned_at);
        tenant.assignments.insert(at, row);
        Ok(())
    }

    /// Forgets report rows older than the report's longest window before `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let cutoff = now.saturating_sub(REPORT_RETENTION + Duration::from_secs(24 * 3600));
        for tenant in self.tenants.values_mut() {
            let n = tenant
                .assignments
                .partition_point(|r| r.assigned_at < cutoff);
            for row in tenant.assignments.drain(..n) {
                tenant.assignment_ids.remove(&row.assignment_id);
            }
        }
        self.claims.prune(now);
    }

    /// The newest settings version, in force or not.
    pub fn latest_settings(&self, tenant: &str) -> Option<&SettingsVersion> {
        self.tenants
            .get(tenant)?
            .settings
            .latest()
            .map(|(_, version)| version)
    }

    /// The settings version in force at `at` (none: autoclaim is off).
    pub fn settings_in_force(&self, tenant: &str, at: Timestamp) -> Option<&SettingsVersion> {
        self.tenants
            .get(tenant)?
            .settings
            .in_force(at, self.propagation_delay)
    }

    pub fn settings_status(&self, tenant: &str, now: Timestamp) -> Status {
        let Some(latest) = self.latest_settings(tenant) else {
            return Status::Off;
        };
        let effective_at = latest.changed_at.saturating_add(self.propagation_delay);
        if effective_at > now {
            Status::Propagating {
                until: effective_at,
            }
        } else if latest.settings.autoclaim_enabled {
            Status::Active
        } else {
            Status::Off
        }
    }

    /// The newest version of a policy, in force or not, deleted or not.
    pub fn latest_policy(&self, tenant: &str, policy_id: &str) -> Option<&Policy> {
        self.tenants
            .get(tenant)?
            .policies
            .get(policy_id)?
            .latest()
            .map(|(_, p)| p)
    }

    /// A policy as an admin sees it; `None` when unknown or when its deletion is in force.
    pub fn policy_state(
        &self,
        tenant: &str,
        policy_id: &str,
        now: Timestamp,
    ) -> Option<PolicyState<'_>> {
        let versions = self.tenants.get(tenant)?.policies.get(policy_id)?;
        self.state_of(versions, now)
    }

    fn state_of<'a>(
        &self,
        versions: &'a Versioned<Policy>,
        now: Timestamp,
    ) -> Option<PolicyState<'a>> {
        let (changed_at, latest) = versions.latest()?;
        let effective_at = changed_at.saturating_add(self.propagation_delay);
        let status = if effective_at > now {
            Status::Propagating {
                until: effective_at,
            }
        } else if latest.deleted {
            return None;
        } else if latest.enabled {
            Status::Active
        } else {
            Status::Off
        };
        Some(PolicyState {
            latest,
            status,
            effective_at,
        })
    }

    /// The tenant's policies as listed: oldest first; deleted ones whose deletion is in force left out.
    pub fn policies(&self, tenant: &str, now: Timestamp) -> Vec<PolicyState<'_>> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let mut out: Vec<PolicyState<'_>> = t
            .policies
            .values()
            .filter_map(|versions| self.state_of(versions, now))
            .collect();
        out.sort_by(|a, b| {
            (a.latest.created_at, &a.latest.policy_id)
                .cmp(&(b.latest.created_at, &b.latest.policy_id))
        });
        out
    }

    /// Policies whose newest version is not a deletion: what names must be unique among and what
    /// the per-tenant limit counts.
    pub fn live_policies<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a Policy> + 'a {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.policies.values())
            .filter_map(|versions| versions.latest().map(|(_, p)| p))
            .filter(|p| !p.deleted)
    }

    /// Licences of a product the tenant can still assign: inventory available minus this
    /// processor's assignments after the inventory snapshot.
    pub fn available(&self, tenant: &str, product: ProductId) -> u64 {
        let Some(t) = self.tenants.get(tenant) else {
            return 0;
        };
        seats::available(t.inventory.get(&product), t.usage.get(&product))
    }

    /// The tenant's assignments with `assigned_at` at or after `since`, oldest first.
    pub fn assignments_since(&self, tenant: &str, since: Timestamp) -> &[AssignmentRow] {
        match self.tenants.get(tenant) {
            Some(t) => {
                let from = t.assignments.partition_point(|r| r.assigned_at < since);
                &t.assignments[from..]
            }
            None => &[],
        }
    }
}

impl AdminView {
    /// The claims and failures of every tenant.
    pub fn claim_tables(&self) -> &ClaimTables {
        &self.claims
    }

    pub fn claim_tables_mut(&mut self) -> &mut ClaimTables {
        &mut self.claims
    }
}

/// The wire form of a settings version.
pub fn settings_to_pb(tenant: &str, version: &SettingsVersion) -> pb::TenantSettings {
    pb::TenantSettings {
        tenant_id: tenant.to_owned(),
        autoclaim_enabled: version.settings.autoclaim_enabled,
        scope: scope_to_pb(version.settings.scope) as i32,
        low_seats_threshold: version.settings.low_seats_threshold,
        changed_at: Some(convert::to_wire_timestamp(version.changed_at)),
        changed_by: version.changed_by.clone(),
    }
}

pub fn scope_to_pb(scope: Scope) -> pb::Scope {
    match scope {
        Scope::AllEnvironments => pb::Scope::AllEnvironments,
        Scope::ManagedEnvironmentsOnly => pb::Scope::ManagedEnvironmentsOnly,
    }
}

/// The wire form of a policy version: products by catalog key, exclusions by plan id.
pub fn policy_to_pb(tenant: &str, policy: &Policy) -> pb::Policy {
    let key = |p: ProductId| Catalog::product(p).key.to_owned();
    pb::Policy {
        tenant_id: tenant.to_owned(),
        policy_id: policy.policy_id.clone(),
        name: policy.name.clone(),
        product: key(policy.primary()),
        backup_products: policy.chain[1..].iter().map(|l| key(l.product)).collect(),
        excluded_apps: policy
            .chain
            .iter()
            .filter(|l| !l.disabled_plans.is_empty())
            .map(|l| {
                let product = Catalog::product(l.product);
                pb::ExcludedApps {
                    product: product.key.to_owned(),
                    plan_ids: l
                        .disabled_plans
                        .iter()
                        .map(|i| product.plan(*i).id.to_owned())
                        .collect(),
                }
            })
            .collect(),
        enabled: policy.enabled,
        deleted: policy.deleted,
        created_at: Some(convert::to_wire_timestamp(policy.created_at)),
        changed_at: Some(convert::to_wire_timestamp(policy.changed_at)),
        changed_by: policy.changed_by.clone(),
    }
}
