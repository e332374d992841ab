//! Seeded, realistic workloads: tenants with settings, policies, inventory and directory users, and a
//! stream of activity over them. Used by the demo, the load generator, benchmarks and tests; the same
//! seed always gives the same records.
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::domain::time::Timestamp;
use crate::wire::convert::to_wire_timestamp;
use crate::wire::pb::{self, replay_record::Record};

#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub tenants: usize,
    pub users_per_tenant: usize,
    pub seed: u64,
    /// Time of the first activity event; settings and policies are changed three hours before.
    pub start: Timestamp,
    /// Milliseconds between consecutive events.
    pub event_spacing_ms: i64,
    /// Seats purchased per user, on average (below 1 makes seats scarce).
    pub seats_per_user: f64,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            tenants: 20,
            users_per_tenant: 50,
            seed: 7,
            start: Timestamp::from_millis(1_772_438_400_000), // 2026-03-02T08:00:00Z
            event_spacing_ms: 10,
            seats_per_user: 0.3,
        }
    }
}

pub const PER_USER: &str = "power_automate_per_user";
pub const PREMIUM: &str = "power_automate_premium";
const PER_USER_SKU: &str = "4a51bf65-409c-4a91-b845-1121b571cc9d";
const PREMIUM_SKU: &str = "eda1941c-3c4f-4995-b5eb-e85a42175ab9";
const EXCHANGE_FOUNDATION: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";

struct TenantProfile {
    id: String,
    users: Vec<String>,
    /// Share of this tenant in the activity stream (larger tenants are busier).
    weight: f64,
}

pub struct Scenario {
    config: ScenarioConfig,
    tenants: Vec<TenantProfile>,
    cumulative_weight: Vec<f64>,
}

fn guid(rng: &mut SmallRng) -> String {
    Uuid::from_u128(rng.random::<u128>()).to_string()
}

/// A directory user as the workload draws them: 20% hold Power Automate per user, 10% Premium;
/// 4% are disabled, 3% guests and 2% have no usage location.
pub fn directory_user(
    rng: &mut impl Rng,
    tenant_id: String,
    user_id: String,
    as_of: Option<pbjson_types::Timestamp>,
) -> pb::DirectoryUser {
    let roll: f64 = rng.random();
    let sku = if roll < 0.2 {
        Some(PER_USER_SKU)
    } else if roll < 0.3 {
        Some(PREMIUM_SKU)
    } else {
        None
    };
    pb::DirectoryUser {
        tenant_id,
        user_id,
        account_enabled: rng.random_bool(0.96),
        user_type: if rng.random_bool(0.03) {
            pb::directory_user::UserType::Guest
        } else {
            pb::directory_user::UserType::Member
        } as i32,
        usage_location: if rng.random_bool(0.02) {
            String::new()
        } else {
            "US".into()
        },
        licenses: sku
            .map(|sku| pb::AssignedLicense {
                sku_id: sku.into(),
                disabled_plan_ids: vec![],
            })
            .into_iter()
            .collect(),
        as_of,
    }
}

fn ts(t: Timestamp) -> Option<pbjson_types::Timestamp> {
    Some(to_wire_timestamp(t))
}

impl Scenario {
    pub fn new(config: ScenarioConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let tenants: Vec<TenantProfile> = (0..config.tenants)
            .map(|i| TenantProfile {
                id: guid(&mut rng),
                users: (0..config.users_per_tenant)
                    .map(|_| guid(&mut rng))
                    .collect(),
                // Zipf-like: a few large tenants, many small ones.
                weight: 1.0 / (i as f64 + 1.0).sqrt(),
            })
            .collect();
        let mut total = 0.0;
        let cumulative_weight = tenants
            .iter()
            .map(|t| {
                total += t.weight;
                total
            })
            .collect();
        Scenario {
            config,
            tenants,
            cumulative_weight,
        }
    }

    pub fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.tenants.iter().map(|t| t.id.as_str())
    }

    /// Settings, policies, inventory and directory users: what must be in place before activity.
    pub fn tables(&self) -> Vec<pb::ReplayRecord> {
        let mut rng = SmallRng::seed_from_u64(self.config.seed ^ 0x007a_b1e5);
        let changed = self
            .config
            .start
            .saturating_sub(std::time::Duration::from_secs(3 * 3600));
        let mut records = Vec::new();
        for tenant in &self.tenants {
            self.tenant_tables(&mut rng, tenant, changed, &mut records);
        }
        records
            .into_iter()
            .map(|r| pb::ReplayRecord {
                record: Some(r),
                written_at: None,
            })
            .collect()
    }

    /// One tenant's table records. The random draws are taken in a fixed order: the same seed
    /// must give the same workload.
    fn tenant_tables(
        &self,
        rng: &mut SmallRng,
        tenant: &TenantProfile,
        changed: Timestamp,
        out: &mut Vec<Record>,
    ) {
        out.push(Record::Settings(settings(rng, &tenant.id, changed)));
        if rng.random_bool(0.7) {
            out.push(Record::Policy(flows_policy(rng, &tenant.id, changed)));
        }
        if rng.random_bool(0.8) {
            let created = changed.saturating_add(std::time::Duration::from_secs(60));
            out.push(Record::Policy(rpa_policy(&tenant.id, created)));
        }
        let users = tenant.users.len() as f64;
        for product in [PER_USER, PREMIUM] {
            let purchased =
                (users * self.config.seats_per_user * rng.random_range(0.5..1.5)) as u64;
            out.push(Record::Inventory(pb::LicenseInventory {
                tenant_id: tenant.id.clone(),
                product: product.into(),
                purchased_units: purchased,
                assigned_units: purchased / 4,
                as_of: ts(changed),
            }));
        }
        for user in &tenant.users {
            let row = directory_user(rng, tenant.id.clone(), user.clone(), ts(changed));
            out.push(Record::DirectoryUser(row));
        }
    }

    fn pick_tenant(&self, rng: &mut SmallRng) -> &TenantProfile {
        let total = *self.cumulative_weight.last().unwrap_or(&1.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative_weight.partition_point(|w| *w < x);
        &self.tenants[i.min(self.tenants.len() - 1)]
    }

    /// The activity stream: `count` events, the same for the same seed.
    pub fn activity(&self, count: usize) -> impl Iterator<Item = pb::ActivityEvent> + '_ {
        let mut rng = SmallRng::seed_from_u64(self.config.seed ^ 0x00ac_717e);
        (0..count).map(move |i| self.event(&mut rng, i))
    }

    fn event(&self, rng: &mut SmallRng, i: usize) -> pb::ActivityEvent {
        let tenant = self.pick_tenant(rng);
        let mut user = || {
            if rng.random_bool(0.01) {
                guid(rng) // someone the directory has not synced yet
            } else {
                tenant.users[rng.random_range(0..tenant.users.len())].clone()
            }
        };
        let actor = user();
        let owner = user();
        let occurred = Timestamp::from_millis(
            self.config.start.as_millis() + i as i64 * self.config.event_spacing_ms,
        );
        let (kind, source) = kind_and_source(rng.random());
        let is_flow =
            source == pb::ActivitySource::Portal && kind != pb::ActivityKind::LicenseRequested;
        let managed = rng.random_bool(0.3);
        let flow = is_flow.then(|| flow(rng, owner, managed));
        let requested_product = if kind == pb::ActivityKind::LicenseRequested {
            if rng.random_bool(0.5) {
                PER_USER
            } else {
                PREMIUM
            }
            .into()
        } else {
            String::new()
        };
        pb::ActivityEvent {
            schema_version: 1,
            event_id: format!("evt-{}-{i}", self.config.seed),
            tenant_id: tenant.id.clone(),
            occurred_at: ts(occurred),
            actor_user_id: actor,
            kind: kind as i32,
            source: source as i32,
            flow,
            requested_product,
        }
    }
}

fn settings(rng: &mut SmallRng, tenant: &str, changed: Timestamp) -> pb::TenantSettings {
    let enabled = rng.random_bool(0.9);
    let scope = if rng.random_bool(0.2) {
        pb::Scope::ManagedEnvironmentsOnly
    } else {
        pb::Scope::AllEnvironments
    };
    pb::TenantSettings {
        tenant_id: tenant.into(),
        autoclaim_enabled: enabled,
        scope: scope as i32,
        changed_at: ts(changed),
        changed_by: "admin".into(),
        low_seats_threshold: 0,
    }
}

/// The per user plan for premium cloud flows, sometimes with Premium as its backup and Exchange
/// Foundation excluded.
fn flows_policy(rng: &mut SmallRng, tenant: &str, changed: Timestamp) -> pb::Policy {
    let backup_products = if rng.random_bool(0.6) {
        vec![PREMIUM.into()]
    } else {
        vec![]
    };
    let excluded_apps = if rng.random_bool(0.3) {
        vec![pb::ExcludedApps {
            product: PER_USER.into(),
            plan_ids: vec![EXCHANGE_FOUNDATION.into()],
        }]
    } else {
        vec![]
    };
    pb::Policy {
        tenant_id: tenant.into(),
        policy_id: format!("{}-flows", &tenant[..8]),
        name: "Premium cloud flows".into(),
        product: PER_USER.into(),
        backup_products,
        excluded_apps,
        enabled: rng.random_bool(0.95),
        deleted: false,
        created_at: ts(changed),
        changed_at: ts(changed),
        changed_by: "admin".into(),
    }
}

fn rpa_policy(tenant: &str, created: Timestamp) -> pb::Policy {
    pb::Policy {
        tenant_id: tenant.into(),
        policy_id: format!("{}-rpa", &tenant[..8]),
        name: "Desktop RPA".into(),
        product: PREMIUM.into(),
        backup_products: vec![],
        excluded_apps: vec![],
        enabled: true,
        deleted: false,
        created_at: ts(created),
        changed_at: ts(created),
        changed_by: "admin".into(),
    }
}

/// The event mix: half flow runs, then saves, turn-ons, licence requests and desktop events.
fn kind_and_source(roll: f64) -> (pb::ActivityKind, pb::ActivitySource) {
    use pb::{ActivityKind as Kind, ActivitySource as Source};
    match roll {
        r if r < 0.50 => (Kind::CloudFlowTriggered, Source::Portal),
        r if r < 0.72 => (Kind::CloudFlowSaved, Source::Portal),
        r if r < 0.85 => (Kind::CloudFlowTurnedOn, Source::Portal),
        r if r < 0.90 => (Kind::LicenseRequested, Source::Portal),
        r if r < 0.96 => (Kind::GoPremiumSelected, Source::Desktop),
        _ => (Kind::PremiumTrialRpaUsed, Source::Desktop),
    }
}

fn flow(rng: &mut SmallRng, owner: String, managed: bool) -> pb::Flow {
    pb::Flow {
        flow_id: guid(rng),
        owner_user_id: owner,
        trigger_type: match rng.random_range(0..3) {
            0 => pb::TriggerType::Automated,
            1 => pb::TriggerType::Scheduled,
            _ => pb::TriggerType::Instant,
        } as i32,
        uses_premium_connectors: rng.random_bool(0.45),
        uses_attended_rpa: rng.random_bool(0.1),
        environment_id: if managed {
            "env-managed".into()
        } else {
            "env-default".into()
        },
        managed_environment: managed,
        // Exempt flows are left out: they would change every seeded workload's outcomes.
        covered_by_process_plan: false,
        runs_in_licensed_app_context: false,
    }
}
