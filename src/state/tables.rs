//! The global tables every instance reads whole: tenant settings and policies (versioned, with the
//! propagation delay) and licence inventory.
use std::collections::HashMap;
use std::time::Duration;

use super::id_map::{IdKey, IdMap};
use crate::domain::catalog::ProductId;
use crate::domain::claims::ClaimRules;
use crate::domain::policy::Policy;
use crate::domain::propagation::Versioned;
use crate::domain::seats::Inventory;
use crate::domain::settings::TenantSettings;
use crate::domain::time::Timestamp;

/// Default propagation delay: the documented upper bound of two hours.
pub const DEFAULT_PROPAGATION_DELAY: Duration = Duration::from_secs(2 * 3600);

/// One tenant's settings, policies and inventory.
#[derive(Debug, Default)]
pub struct TenantTables {
    settings: Versioned<TenantSettings>,
    policies: HashMap<String, Versioned<Policy>>,
    inventory: HashMap<ProductId, Inventory>,
    /// Inventory records applied: one waiting claims have not seen yet may have freed a seat, even
    /// with the same time as the last (two products' snapshots). Settings and policy versions
    /// count by the time they come into force instead: one not yet in force changes nothing.
    inventory_records: u64,
}

impl TenantTables {
    pub fn settings_in_force(&self, at: Timestamp, delay: Duration) -> Option<&TenantSettings> {
        self.settings.in_force(at, delay)
    }

    pub fn active_policies(
        &self,
        at: Timestamp,
        delay: Duration,
    ) -> impl Iterator<Item = &Policy> + '_ {
        self.policies
            .values()
            .filter_map(move |versions| versions.in_force(at, delay))
            .filter(|policy| policy.is_active())
    }

    pub fn inventory(&self, product: ProductId) -> Option<&Inventory> {
        self.inventory.get(&product)
    }

    /// The time of the latest change that may have freed seats for waiting claims by `now`: the
    /// newest inventory snapshot, or a settings or policy version coming into force.
    pub fn last_change_in_force(&self, now: Timestamp, delay: Duration) -> Option<Timestamp> {
        let inventory = self.inventory.values().map(|i| i.as_of).max();
        let settings = self.settings.in_force_since(now, delay);
        let policies = self
            .policies
            .values()
            .filter_map(|v| v.in_force_since(now, delay))
            .max();
        inventory.max(settings).max(policies)
    }
}

#[derive(Debug)]
pub struct Tables {
    propagation_delay: Duration,
    claim_rules: ClaimRules,
    tenants: IdMap<TenantTables>,
}

impl Tables {
    pub fn new(propagation_delay: Duration) -> Self {
        Tables {
            propagation_delay,
            claim_rules: ClaimRules::default(),
            tenants: IdMap::default(),
        }
    }

    /// How long claims wait and how often notices may repeat (the defaults otherwise).
    pub fn with_claim_rules(mut self, rules: ClaimRules) -> Self {
        self.claim_rules = rules;
        self
    }

    pub fn propagation_delay(&self) -> Duration {
        self.propagation_delay
    }

    pub fn claim_rules(&self) -> ClaimRules {
        self.claim_rules
    }

    /// See `TenantTables::last_change_in_force`.
    pub fn last_change_in_force(&self, tenant: &str, now: Timestamp) -> Option<Timestamp> {
        self.tenant(tenant)?
            .last_change_in_force(now, self.propagation_delay)
    }

    /// The tenant's tables, if any record about the tenant has been seen.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantTables> {
        self.tenants.get(tenant)
    }

    pub(super) fn tenant_by_key(&self, tenant: IdKey<'_>) -> Option<&TenantTables> {
        self.tenants.get_by_key(tenant)
    }

    fn tenant_mut(&mut self, tenant: &str) -> &mut TenantTables {
        self.tenants.get_or_default(tenant)
    }

    /// How many inventory records the tenant's tables have taken (see
    /// `TenantTables::inventory_records`).
    pub fn inventory_records_of(&self, tenant: &str) -> u64 {
        self.tenant(tenant).map_or(0, |t| t.inventory_records)
    }

    pub fn record_settings(
        &mut self,
        tenant: &str,
        changed_at: Timestamp,
        settings: TenantSettings,
    ) {
        let delay = self.propagation_delay;
        self.tenant_mut(tenant)
            .settings
            .record(changed_at, settings, delay);
    }

    pub fn record_policy(&mut self, tenant: &str, policy: Policy) {
        let delay = self.propagation_delay;
        let versions = self
            .tenant_mut(tenant)
            .policies
            .entry(policy.policy_id.clone())
            .or_default();
        versions.record(policy.changed_at, policy, delay);
    }

    /// Keeps the newest snapshot: an older one arriving late does not roll the count back.
    pub fn record_inventory(&mut self, tenant: &str, product: ProductId, inventory: Inventory) {
        let tables = self.tenant_mut(tenant);
        tables.inventory_records += 1;
        let slot = tables.inventory.entry(product);
        match slot {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if inventory.as_of >= e.get().as_of {
                    e.insert(inventory);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(inventory);
            }
        }
    }

    pub fn settings_in_force(&self, tenant: &str, at: Timestamp) -> Option<&TenantSettings> {
        self.tenant(tenant)?
            .settings_in_force(at, self.propagation_delay)
    }

    pub fn active_policies<'a>(
        &'a self,
        tenant: &str,
        at: Timestamp,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        let delay = self.propagation_delay;
        self.tenant(tenant)
            .into_iter()
            .flat_map(move |t| t.active_policies(at, delay))
    }

    /// How many policies are active, propagating or off at `now` (deleted ones in force are not
    /// counted).
    pub fn policy_status_counts(&self, now: Timestamp) -> PolicyStatusCounts {
        let mut counts = PolicyStatusCounts::default();
        for versions in self.tenants.values().flat_map(|t| t.policies.values()) {
            if versions
                .pending_until(now, self.propagation_delay)
                .is_some()
            {
                counts.propagating += 1;
            } else {
                match versions.in_force(now, self.propagation_delay) {
                    Some(p) if p.deleted => {}
                    Some(p) if p.enabled => counts.active += 1,
                    _ => counts.off += 1,
                }
            }
        }
        counts
    }

    pub fn inventory(&self, tenant: &str, product: ProductId) -> Option<&Inventory> {
        self.tenant(tenant)?.inventory(product)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PolicyStatusCounts {
    pub active: usize,
    pub propagating: usize,
    pub off: usize,
}
