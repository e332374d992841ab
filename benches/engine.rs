//! Benchmarks of the engine's hot path on a realistic state: 10,000 tenants, 1,000,000 directory users
//! and a pool of 100,000 activity payloads. See BENCHMARKS.md for the method and the figures.
//!
//! `cargo bench --bench engine` runs everything; `cargo bench --bench engine -- full_path` filters.
//! `AUTOCLAIM_BENCH_USERS=10000` shrinks the directory, to compare a cache-resident state.
//! `AUTOCLAIM_BENCH_CLOCK=cpu` measures the thread's CPU time instead of wall time (shared machines).
//! Under `cargo test --benches` (criterion's test mode) a small state is used so that the check is fast.
//!
//! Groups (all with `Throughput::Elements`, one element = one activity event):
//! - `full_path/json_in_protobuf_out`: JSON decode + validate, decide, protobuf encode of the decision.
//! - `decide/pre_decoded`: `state::decide_and_record` only.
//! - `decode/json`: JSON decode + validate only (with `decode/protobuf` next to it for comparison, and
//!   `decode/json_without_schema_version`, the same payloads without their one numeric field).
//! - `full_path/protobuf_in_protobuf_out`: protobuf decode + validate, decide, protobuf encode.
//! - `encode/decision_protobuf`: building and encoding the decision message only.
//! - `restore/directory_user_{json,protobuf}`: what a partition restore does per directory record
//!   (decode, validate, reduce to a row, upsert), into a partition that grows to the whole directory.
//! - `first_claims/*`: the same paths when every event is a user's first claim (ASSIGNED or a seat
//!   failure), on a freshly built partition per batch, because a cycled pool only claims once.
//!
//! Before the groups, `main` prints the state's memory (VmRSS per tenant and per directory user), the
//! outcome mix of a first and a steady-state pass, and an interleaved snapshot of every stage (medians
//! of the stages timed in turn on the same blocks of events: ratios that hold on a drifting host).
//!
//! The pool is cycled: the first pass assigns licences, later passes see those users entitled, as a
//! live stream does. The state grows at most by users x products and stops growing after one pass.

/// The allocator the service runs with (`src/main.rs`), so that the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput};

use autoclaim::domain::activity::Activity;
use autoclaim::domain::catalog::{Capabilities, Catalog, ProductId};
use autoclaim::domain::decision::{Decision, Outcome};
use autoclaim::domain::directory::{DirectoryLicense, DirectoryUser};
use autoclaim::domain::policy::Policy;
use autoclaim::domain::seats::Inventory;
use autoclaim::domain::settings::{Scope, TenantSettings};
use autoclaim::domain::time::Timestamp;
use autoclaim::state::tables::DEFAULT_PROPAGATION_DELAY;
use autoclaim::state::{decide_and_record, PartitionState, Tables};
use autoclaim::wire::{activity_json, codec, output, pb, Format};

// ------------------------------------------------------------------------------------------ scale

/// How big the generated world is.
#[derive(Clone, Copy)]
struct Scale {
    tenants: usize,
    users: usize,
    pool: usize,
}

const FULL: Scale = Scale {
    tenants: 10_000,
    users: 1_000_000,
    pool: 100_000,
};

/// Used in criterion's test mode (`cargo test --benches`), where each benchmark runs once.
const SMOKE: Scale = Scale {
    tenants: 100,
    users: 10_000,
    pool: 2_000,
};

/// Events per batch in the first-claims groups.
const FIRST_CLAIM_BATCH: usize = 4_096;
/// Distinct first-claim batches generated up front (each is replayed on a fresh partition).
const FIRST_CLAIM_BATCHES: usize = 16;

const SEED: u64 = 0x5eed_a07c_1a1b_2026;

/// 2026-03-02T09:00:00Z: the first event of the pool. Events are 10 ms apart.
const T0_MILLIS: i64 = 1_772_442_000_000;
const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

fn t0() -> Timestamp {
    Timestamp::from_millis(T0_MILLIS)
}

// ------------------------------------------------------------------------------------------- PRNG

/// SplitMix64's finaliser: a good 64-bit mix, used both as a hash and as the generator's step.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: small, seeded, good enough for generating test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(mix(seed ^ SEED))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// In [0, n), skewed towards 0 (a few users do most of the work).
    fn skewed(&mut self, n: usize, power: i32) -> usize {
        ((self.unit().powi(power) * n as f64) as usize).min(n - 1)
    }
}

/// A GUID-shaped id (Entra object ids, tenant ids, event ids all look like this).
fn guid(h: u64) -> String {
    let h2 = mix(h ^ 0x1234_5678);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        ((h2 >> 48) & 0x3fff) | 0x8000,
        h2 & 0xffff_ffff_ffff
    )
}

// ----------------------------------------------------------------------------------------- catalog

const PER_USER_SKU: &str = "4a51bf65-409c-4a91-b845-1121b571cc9d";
const PREMIUM_SKU: &str = "eda1941c-3c4f-4995-b5eb-e85a42175ab9";
const EXCHANGE_FOUNDATION_PLAN: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";
const RPA_PLAN: &str = "375cd0ad-c407-49fd-866a-0bff4f8a9a4d";
/// Office 365 E3 and Microsoft 365 E5: outside the catalog, held by most users.
const E3_SKU: &str = "6fd2c87f-b296-4371-a115-0c9b9d2e1a1b";
const E5_SKU: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
/// Flow for Office 365 (P2) and Teams plans, commonly disabled inside E3/E5.
const FLOW_O365_P2_PLAN: &str = "76846ad7-7776-4c40-a281-a386362dd1b9";
const TEAMS_PLAN: &str = "57ff2da0-773e-42df-b2af-ffb7a2317929";
const COUNTRIES: [&str; 8] = ["US", "GB", "DE", "FR", "IN", "JP", "BR", "AU"];

fn per_user() -> ProductId {
    Catalog::by_key("power_automate_per_user").expect("catalog product")
}

fn premium() -> ProductId {
    Catalog::by_key("power_automate_premium").expect("catalog product")
}

// ----------------------------------------------------------------------------------------- tenants

/// What the generator decided about one tenant; directory users are derived from it on demand, so the
/// bench itself holds no per-user data while the state is measured.
struct TenantSpec {
    id: String,
    /// Global index of the tenant's first user.
    first_user: usize,
    users: usize,
    /// Users who build flows; activity concentrates on them.
    makers: usize,
    enabled: bool,
    managed_only: bool,
}

/// Heavy-tailed tenant sizes (rank^-0.8, a few tenants with tens of thousands of users, a median of
/// about forty), summing to exactly `total`.
fn tenant_sizes(tenants: usize, total: usize) -> Vec<usize> {
    let weights: Vec<f64> = (0..tenants).map(|i| (i as f64 + 1.0).powf(-0.8)).collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|w| ((w / sum * total as f64) as usize).max(3))
        .collect();
    let mut assigned: usize = sizes.iter().sum();
    let mut i = 0;
    while assigned < total {
        sizes[i % tenants] += 1;
        assigned += 1;
        i += 1;
    }
    while assigned > total {
        if sizes[i % tenants] > 3 {
            sizes[i % tenants] -= 1;
            assigned -= 1;
        }
        i += 1;
    }
    sizes
}

fn tenant_specs(scale: Scale) -> Vec<TenantSpec> {
    let mut rng = Rng::new(1);
    let mut first_user = 0;
    tenant_sizes(scale.tenants, scale.users)
        .into_iter()
        .enumerate()
        .map(|(i, users)| {
            let enabled = rng.chance(0.85);
            let spec = TenantSpec {
                id: guid(mix(i as u64 ^ 0x7e4a_4700)),
                first_user,
                users,
                makers: (users * 12 / 100).max(1),
                enabled,
                managed_only: enabled && rng.chance(0.10),
            };
            first_user += users;
            spec
        })
        .collect()
}

/// Settings, 1-3 policies and inventory for every tenant.
fn build_tables(specs: &[TenantSpec]) -> Tables {
    let mut tables = Tables::new(DEFAULT_PROPAGATION_DELAY);
    let mut rng = Rng::new(2);
    let long_ago = Timestamp::from_millis(T0_MILLIS - 30 * DAY);
    for (i, t) in specs.iter().enumerate() {
        tables.record_settings(
            &t.id,
            long_ago,
            TenantSettings {
                autoclaim_enabled: t.enabled,
                scope: if t.managed_only {
                    Scope::ManagedEnvironmentsOnly
                } else {
                    Scope::AllEnvironments
                },
                low_seats_threshold: 0,
            },
        );
        // Some tenants have a settings change still propagating during the pool's time span.
        if rng.chance(0.03) {
            tables.record_settings(
                &t.id,
                Timestamp::from_millis(T0_MILLIS - 10 * MINUTE),
                TenantSettings {
                    autoclaim_enabled: !t.enabled,
                    scope: Scope::AllEnvironments,
                    low_seats_threshold: 0,
                },
            );
        }
        if t.enabled {
            let count = match rng.unit() {
                x if x < 0.50 => 1,
                x if x < 0.85 => 2,
                _ => 3,
            };
            for p in 0..count {
                let (primary, backups, excluded) = match (p, rng.unit()) {
                    // Most first policies: per user, premium as backup, Exchange foundation left out.
                    (0, x) if x < 0.6 => (
                        per_user(),
                        vec![premium()],
                        vec![(per_user(), vec![EXCHANGE_FOUNDATION_PLAN.to_owned()])],
                    ),
                    (0, _) => (premium(), vec![], vec![]),
                    (1, _) => (premium(), vec![], vec![]),
                    _ => (premium(), vec![per_user()], vec![]),
                };
                let chain =
                    Policy::build_chain(primary, &backups, &excluded).expect("valid policy");
                let created = Timestamp::from_millis(T0_MILLIS - (20 - p as i64) * DAY);
                // The third policy is usually switched off; a few policies have a newer version
                // still propagating (in force only after the pool's time span).
                let enabled = p < 2 || rng.chance(0.3);
                let mut policy = Policy {
                    policy_id: guid(mix((i * 4 + p) as u64 ^ 0x0090_11c7)),
                    name: ["Premium flows", "Desktop RPA", "Legacy per user"][p].to_owned(),
                    chain,
                    enabled,
                    deleted: false,
                    created_at: created,
                    changed_at: created,
                    changed_by: guid(mix(i as u64 ^ 0xad_0001)),
                };
                tables.record_policy(&t.id, policy.clone());
                if rng.chance(0.05) {
                    policy.changed_at = Timestamp::from_millis(T0_MILLIS - 30 * MINUTE);
                    policy.enabled = !policy.enabled;
                    tables.record_policy(&t.id, policy);
                }
            }
        }
        // Inventory: most tenants have room; about 10% are scarce (a few seats or none).
        let scarce = rng.chance(0.10);
        for (product, held, prob) in [(per_user(), 0.14, 0.6), (premium(), 0.16, 0.95)] {
            if !rng.chance(prob) {
                continue;
            }
            let assigned = (t.users as f64 * held) as u64;
            let spare = if scarce {
                rng.below(3) as u64
            } else {
                (t.users as u64 * 6 / 10) + 5
            };
            tables.record_inventory(
                &t.id,
                product,
                Inventory {
                    purchased_units: assigned + spare,
                    assigned_units: assigned,
                    as_of: Timestamp::from_millis(T0_MILLIS - DAY),
                },
            );
        }
    }
    tables
}

// ------------------------------------------------------------------------------------------- users

fn user_id(global: usize) -> String {
    guid(mix(global as u64 ^ 0x05e7_0000_0000))
}

/// The directory snapshot of one user, derived from its global index: about 30% hold a per-user or
/// premium licence, most hold an E3/E5 outside the catalog, a few are disabled, guests or have no
/// usage location.
fn directory_user(tenant: &TenantSpec, global: usize) -> DirectoryUser {
    let mut rng = Rng::new(global as u64 ^ 0xd1_0000_0000);
    let guest = rng.chance(0.03);
    let mut licenses = Vec::with_capacity(2);
    if !guest && rng.chance(0.85) {
        licenses.push(DirectoryLicense {
            sku_id: if rng.chance(0.7) { E3_SKU } else { E5_SKU }.to_owned(),
            disabled_plan_ids: if rng.chance(0.3) {
                vec![FLOW_O365_P2_PLAN.to_owned(), TEAMS_PLAN.to_owned()]
            } else {
                vec![]
            },
        });
    }
    let licence = |sku: &str, disabled: &[&str]| DirectoryLicense {
        sku_id: sku.to_owned(),
        disabled_plan_ids: disabled.iter().map(|s| (*s).to_owned()).collect(),
    };
    match rng.unit() {
        _ if guest => {}
        x if x < 0.14 => licenses.push(licence(PER_USER_SKU, &[])),
        x if x < 0.28 => licenses.push(licence(PREMIUM_SKU, &[])),
        x if x < 0.30 => licenses.push(licence(PREMIUM_SKU, &[EXCHANGE_FOUNDATION_PLAN])),
        // Holds premium with the granting plan disabled: holds the product, has no capability.
        x if x < 0.31 => licenses.push(licence(PREMIUM_SKU, &[RPA_PLAN])),
        _ => {}
    }
    DirectoryUser {
        tenant_id: tenant.id.clone(),
        user_id: user_id(global),
        account_enabled: !rng.chance(0.02),
        guest,
        usage_location: (!rng.chance(0.01))
            .then(|| COUNTRIES[rng.below(COUNTRIES.len())].to_owned()),
        licenses,
        as_of: Timestamp::from_millis(T0_MILLIS - DAY),
    }
}

fn load_tenant_users(partition: &mut PartitionState, tenant: &TenantSpec) {
    for global in tenant.first_user..tenant.first_user + tenant.users {
        let user = directory_user(tenant, global);
        partition.upsert_directory_user(&user.tenant_id, &user.user_id, user.row());
    }
}

/// The directory record of a user, as its producer writes it to `directory.users.v1`.
fn directory_message(user: &DirectoryUser) -> pb::DirectoryUser {
    pb::DirectoryUser {
        tenant_id: user.tenant_id.clone(),
        user_id: user.user_id.clone(),
        account_enabled: user.account_enabled,
        user_type: if user.guest {
            pb::directory_user::UserType::Guest
        } else {
            pb::directory_user::UserType::Member
        } as i32,
        usage_location: user.usage_location.clone().unwrap_or_default(),
        licenses: user
            .licenses
            .iter()
            .map(|l| pb::AssignedLicense {
                sku_id: l.sku_id.clone(),
                disabled_plan_ids: l.disabled_plan_ids.clone(),
            })
            .collect(),
        as_of: Some(autoclaim::wire::convert::to_wire_timestamp(user.as_of)),
    }
}

/// Every directory user's record in both encodings, in a shuffled order (the directory topic is
/// partitioned by key hash, so a restore sees tenants interleaved).
struct DirectoryRecords {
    json: Vec<Vec<u8>>,
    protobuf: Vec<Vec<u8>>,
}

fn directory_records(specs: &[TenantSpec]) -> DirectoryRecords {
    let mut order: Vec<usize> = (0..specs.iter().map(|t| t.users).sum()).collect();
    let mut rng = Rng::new(4);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let messages: Vec<pb::DirectoryUser> = order
        .into_iter()
        .map(|global| directory_message(&directory_user(tenant_of(specs, global), global)))
        .collect();
    DirectoryRecords {
        json: messages
            .iter()
            .map(|m| codec::encode(m, Format::Json))
            .collect(),
        protobuf: messages
            .iter()
            .map(|m| codec::encode(m, Format::Protobuf))
            .collect(),
    }
}

/// What a restore does per directory record: decode, validate, reduce to a row, upsert.
fn restore_record(partition: &mut PartitionState, bytes: &[u8], format: Format) {
    let message: pb::DirectoryUser = codec::decode(bytes, format).expect("valid directory record");
    let user = DirectoryUser::try_from(message).expect("valid directory user");
    partition.upsert_directory_user(&user.tenant_id, &user.user_id, user.row());
}

// ------------------------------------------------------------------------------------------ events

/// The tenant a global user index belongs to.
fn tenant_of(specs: &[TenantSpec], global: usize) -> &TenantSpec {
    let i = specs.partition_point(|t| t.first_user <= global) - 1;
    &specs[i]
}

fn flow(tenant: &TenantSpec, owner: usize, k: usize) -> pb::Flow {
    // A flow's properties are fixed by its identity, so repeated events agree about the flow.
    let mut rng = Rng::new((owner as u64) << 8 ^ k as u64 ^ 0xf1_0000_0000_0000);
    let managed = rng.chance(0.2);
    let trigger = match rng.unit() {
        x if x < 0.5 => pb::TriggerType::Automated,
        x if x < 0.7 => pb::TriggerType::Scheduled,
        _ => pb::TriggerType::Instant,
    };
    let rpa = rng.chance(0.05);
    pb::Flow {
        flow_id: guid(mix((owner as u64) << 8 ^ k as u64 ^ 0xf10)),
        owner_user_id: user_id(owner),
        trigger_type: trigger as i32,
        uses_premium_connectors: rpa || rng.chance(0.45),
        uses_attended_rpa: rpa,
        environment_id: if managed {
            guid(mix(tenant.first_user as u64 ^ 0xe7 ^ (k as u64 % 3)))
        } else {
            format!("Default-{}", tenant.id)
        },
        managed_environment: managed,
        covered_by_process_plan: false,
        runs_in_licensed_app_context: false,
    }
}

/// One realistic activity event. Activity is proportional to tenant size and concentrated on each
/// tenant's makers (skewed), so most subjects repeat and are entitled after their first claim.
fn activity_event(
    specs: &[TenantSpec],
    users: usize,
    rng: &mut Rng,
    seq: usize,
) -> pb::ActivityEvent {
    let tenant = tenant_of(specs, rng.below(users));
    let maker = |rng: &mut Rng| tenant.first_user + rng.skewed(tenant.makers, 3);
    let anyone = |rng: &mut Rng| tenant.first_user + rng.below(tenant.users);
    let (kind, source) = match rng.unit() {
        x if x < 0.58 => (
            pb::ActivityKind::CloudFlowTriggered,
            pb::ActivitySource::Portal,
        ),
        x if x < 0.83 => (pb::ActivityKind::CloudFlowSaved, pb::ActivitySource::Portal),
        x if x < 0.89 => (
            pb::ActivityKind::CloudFlowTurnedOn,
            pb::ActivitySource::Portal,
        ),
        x if x < 0.94 => (
            pb::ActivityKind::LicenseRequested,
            pb::ActivitySource::Portal,
        ),
        x if x < 0.98 => (
            pb::ActivityKind::GoPremiumSelected,
            pb::ActivitySource::Desktop,
        ),
        _ => (
            pb::ActivityKind::PremiumTrialRpaUsed,
            pb::ActivitySource::Desktop,
        ),
    };
    let mut requested_product = String::new();
    let (actor, flow) = match kind {
        pb::ActivityKind::CloudFlowTriggered
        | pb::ActivityKind::CloudFlowSaved
        | pb::ActivityKind::CloudFlowTurnedOn => {
            let owner = maker(rng);
            let f = flow(tenant, owner, rng.below(4));
            let actor = if kind == pb::ActivityKind::CloudFlowTriggered
                && f.trigger_type == pb::TriggerType::Instant as i32
            {
                anyone(rng) // whoever pressed the button
            } else if rng.chance(0.85) {
                owner
            } else {
                maker(rng) // a co-owner
            };
            (actor, Some(f))
        }
        pb::ActivityKind::LicenseRequested => {
            let product = if rng.chance(0.7) {
                per_user()
            } else {
                premium()
            };
            requested_product = Catalog::product(product).key.to_owned();
            (anyone(rng), None)
        }
        _ => (maker(rng), None),
    };
    pb::ActivityEvent {
        schema_version: 1,
        event_id: guid(mix(seq as u64 ^ 0xe7e7_0000_0000)),
        tenant_id: tenant.id.clone(),
        occurred_at: Some(autoclaim::wire::convert::to_wire_timestamp(
            Timestamp::from_millis(T0_MILLIS + seq as i64 * 10),
        )),
        actor_user_id: user_id(actor),
        kind: kind as i32,
        source: source as i32,
        flow,
        requested_product,
    }
}

/// Pre-generated payloads, in both encodings, and the decoded activities.
struct Pool {
    json: Vec<Vec<u8>>,
    /// The same JSON without `schemaVersion` (absent means version 1).
    json_unversioned: Vec<Vec<u8>>,
    protobuf: Vec<Vec<u8>>,
    decoded: Vec<Activity>,
}

fn pool_of(events: Vec<pb::ActivityEvent>) -> Pool {
    let json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| codec::encode(e, Format::Json))
        .collect();
    let json_unversioned = events
        .iter()
        .map(|e| {
            let e = pb::ActivityEvent {
                schema_version: 0,
                ..e.clone()
            };
            codec::encode(&e, Format::Json)
        })
        .collect();
    let protobuf = events
        .iter()
        .map(|e| codec::encode(e, Format::Protobuf))
        .collect();
    let decoded = json.iter().map(|bytes| decode_json(bytes)).collect();
    Pool {
        json,
        json_unversioned,
        protobuf,
        decoded,
    }
}

fn event_pool(specs: &[TenantSpec], scale: Scale) -> Pool {
    let mut rng = Rng::new(3);
    pool_of(
        (0..scale.pool)
            .map(|seq| activity_event(specs, scale.users, &mut rng, seq))
            .collect(),
    )
}

/// A batch of first claims: one premium event (flow, or desktop RPA for one in ten) for three in ten
/// eligible, not yet entitled users of consecutive enabled tenants, shuffled, with those tenants' directory.
struct FirstClaims {
    tenants: Vec<usize>,
    pool: Pool,
}

fn first_claim_batch(specs: &[TenantSpec], batch: usize, size: usize) -> FirstClaims {
    let mut rng = Rng::new(0xf1c_0000 ^ batch as u64);
    let mut tenants = Vec::new();
    let mut events = Vec::with_capacity(size);
    let mut ti = rng.below(specs.len());
    while events.len() < size {
        let index = ti;
        ti = (ti + 1) % specs.len();
        let t = &specs[index];
        if !t.enabled {
            continue;
        }
        tenants.push(index);
        for global in t.first_user..t.first_user + t.users {
            if events.len() == size {
                break;
            }
            let row = directory_user(t, global).row();
            if !row.account_enabled
                || row.guest
                || !row.has_usage_location
                || row.capabilities.contains(Capabilities::PREMIUM_CLOUD_FLOWS)
                || !rng.chance(0.3)
            {
                continue;
            }
            let seq = events.len();
            let mut event = if rng.chance(0.1) {
                pb::ActivityEvent {
                    kind: pb::ActivityKind::GoPremiumSelected as i32,
                    source: pb::ActivitySource::Desktop as i32,
                    ..Default::default()
                }
            } else {
                let mut f = flow(t, global, 0);
                f.uses_premium_connectors = true;
                f.managed_environment |= t.managed_only;
                pb::ActivityEvent {
                    kind: pb::ActivityKind::CloudFlowSaved as i32,
                    source: pb::ActivitySource::Portal as i32,
                    flow: Some(f),
                    ..Default::default()
                }
            };
            event.schema_version = 1;
            event.event_id = guid(mix((batch * size + seq) as u64 ^ 0xfc_0000_0000));
            event.tenant_id = t.id.clone();
            event.occurred_at = Some(autoclaim::wire::convert::to_wire_timestamp(
                Timestamp::from_millis(T0_MILLIS + seq as i64 * 10),
            ));
            event.actor_user_id = user_id(global);
            events.push(event);
        }
    }
    // Shuffle (Fisher-Yates) so tenants interleave as they would on a partition.
    for i in (1..events.len()).rev() {
        events.swap(i, rng.below(i + 1));
    }
    FirstClaims {
        tenants,
        pool: pool_of(events),
    }
}

// ---------------------------------------------------------------------------------------- the path

/// What the pipeline does with a JSON activity record: the fast path, or the general decoder.
fn decode_json(bytes: &[u8]) -> Activity {
    activity_json::decode(bytes).expect("valid JSON event")
}

/// The general decoder alone (serde_json into the pbjson message, then validation).
fn decode_json_general(bytes: &[u8]) -> Activity {
    let event: pb::ActivityEvent = codec::decode(bytes, Format::Json).expect("valid JSON event");
    Activity::try_from(event).expect("valid event")
}

fn decode_protobuf(bytes: &[u8]) -> Activity {
    let event: pb::ActivityEvent =
        codec::decode(bytes, Format::Protobuf).expect("valid protobuf event");
    Activity::try_from(event).expect("valid event")
}

fn encode_decision(decision: &Decision, decided_at: Timestamp) -> Vec<u8> {
    codec::encode(&output::decision(decision, decided_at), Format::Protobuf)
}

/// Decode, decide, encode: what the pipeline does per input record (without Kafka).
fn full_path(
    tables: &Tables,
    partition: &mut PartitionState,
    bytes: &[u8],
    format: Format,
    decided_at: Timestamp,
) -> Vec<u8> {
    let event = match format {
        Format::Json => decode_json(bytes),
        Format::Protobuf => decode_protobuf(bytes),
    };
    let decided = decide_and_record(tables, partition, &event);
    encode_decision(&decided.decision, decided_at)
}

/// Runs one stage over the whole pool once, for instruction counts
/// (`valgrind --tool=callgrind --toggle-collect='*count_stage*'`, BENCHMARKS.md): the setup before
/// it is not collected, so the count divided by the pool's size is the stage's cost per event.
#[inline(never)]
fn count_stage(
    stage: &str,
    tables: &Tables,
    partition: &mut PartitionState,
    pool: &Pool,
    decided_at: Timestamp,
) {
    for i in 0..pool.json.len() {
        match stage {
            "full_path_json" | "full_path_protobuf" => {
                let (bytes, format) = match stage {
                    "full_path_json" => (&pool.json[i], Format::Json),
                    _ => (&pool.protobuf[i], Format::Protobuf),
                };
                drop(black_box(full_path(
                    tables, partition, bytes, format, decided_at,
                )))
            }
            "decide" => drop(black_box(decide_and_record(
                tables,
                partition,
                &pool.decoded[i],
            ))),
            "decode_json" => drop(black_box(decode_json(black_box(&pool.json[i])))),
            "decode_protobuf" => drop(black_box(decode_protobuf(black_box(&pool.protobuf[i])))),
            "decode_json_general" => drop(black_box(decode_json_general(black_box(&pool.json[i])))),
            other => panic!(
                "AUTOCLAIM_BENCH_COUNT={other:?}: expected full_path_json, full_path_protobuf, \
                 decide, decode_json, decode_json_general or decode_protobuf"
            ),
        }
    }
    eprintln!("{stage}: {} events", pool.json.len());
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Assigned(_) => "ASSIGNED",
        Outcome::AlreadyEntitled => "ALREADY_ENTITLED",
        Outcome::NotRequired => "NOT_REQUIRED",
        Outcome::OutOfScope => "OUT_OF_SCOPE",
        Outcome::AutoclaimOff => "AUTOCLAIM_OFF",
        Outcome::NoPolicy => "NO_POLICY",
        Outcome::NotEligible(_) => "NOT_ELIGIBLE",
        Outcome::Failed(_) => "FAILED",
    }
}

/// Runs the pool once through `process`, untimed by criterion, and prints the outcome mix.
fn pass(label: &str, tables: &Tables, partition: &mut PartitionState, events: &[Activity]) {
    let mut mix: BTreeMap<&str, usize> = BTreeMap::new();
    let start = Instant::now();
    for event in events {
        let d = decide_and_record(tables, partition, event);
        *mix.entry(outcome_name(&d.decision.outcome)).or_default() += 1;
    }
    let elapsed = start.elapsed();
    let shares: Vec<String> = mix
        .iter()
        .map(|(k, n)| format!("{k} {:.1}%", *n as f64 * 100.0 / events.len() as f64))
        .collect();
    eprintln!(
        "{label}: {} events in {elapsed:.2?} ({:.0} ns/event); outcomes: {}",
        events.len(),
        elapsed.as_nanos() as f64 / events.len() as f64,
        shares.join(", ")
    );
}

/// Times each variant on the same block of events, in turn, many rounds over, and prints the medians.
/// Criterion measures one benchmark after another; on a machine whose speed drifts (a shared VM) the
/// ratios between stages are only trustworthy when measured interleaved like this.
fn interleaved(names: &[&str], n: usize, mut run: impl FnMut(usize, usize)) {
    const ROUNDS: usize = 31;
    const BLOCK: usize = 4_000;
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); names.len()];
    for round in 0..ROUNDS {
        let first = (round * BLOCK) % n;
        for (variant, samples) in ns.iter_mut().enumerate() {
            let start = Instant::now();
            for k in 0..BLOCK {
                run(variant, (first + k) % n);
            }
            samples.push(start.elapsed().as_nanos() as f64 / BLOCK as f64);
        }
    }
    let medians: Vec<String> = names
        .iter()
        .zip(&mut ns)
        .map(|(name, samples)| {
            samples.sort_by(f64::total_cmp);
            format!("{name} {:.0}", samples[samples.len() / 2])
        })
        .collect();
    eprintln!(
        "interleaved medians, ns/event (wall time): {}",
        medians.join(", ")
    );
}

// ------------------------------------------------------------------------------------------ memory

/// A field of /proc/self/status in bytes (Linux), 0 elsewhere.
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ------------------------------------------------------------------------------------------- clock

/// What a sample measures: wall time (criterion's default), or with `AUTOCLAIM_BENCH_CLOCK=cpu` the
/// CPU time of the benchmarking thread (Linux `/proc/thread-self/schedstat`, about 1 ms resolution,
/// negligible next to samples of tens of milliseconds), so that time spent waiting for a core that
/// other processes of a shared machine hold is not counted. Either way the unit is nanoseconds of one
/// core, so elements per second are events per second per core.
#[derive(Clone, Copy)]
struct Clock {
    cpu: bool,
    origin: Instant,
}

static WALL_TIME: WallTime = WallTime;

impl Clock {
    fn from_env() -> Clock {
        let cpu = match std::env::var("AUTOCLAIM_BENCH_CLOCK").as_deref() {
            Ok("cpu") => true,
            Ok("wall") | Err(_) => false,
            Ok(other) => panic!("AUTOCLAIM_BENCH_CLOCK={other:?}: expected cpu or wall"),
        };
        let clock = Clock {
            cpu,
            origin: Instant::now(),
        };
        clock.now(); // fails early if the CPU clock is unavailable
        clock
    }

    fn now(&self) -> Duration {
        if !self.cpu {
            return self.origin.elapsed();
        }
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
            .expect("AUTOCLAIM_BENCH_CLOCK=cpu needs /proc/thread-self/schedstat (Linux)");
        let nanos = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .expect("schedstat starts with the thread's run time in ns");
        Duration::from_nanos(nanos)
    }

    fn name(&self) -> &'static str {
        if self.cpu {
            "thread CPU time"
        } else {
            "wall time"
        }
    }
}

impl Measurement for Clock {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        self.now()
    }

    fn end(&self, start: Duration) -> Duration {
        self.now().saturating_sub(start)
    }

    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

// -------------------------------------------------------------------------------------------- main

fn main() {
    let clock = Clock::from_env();
    let mut criterion = Criterion::default()
        .with_measurement(clock)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    // `cargo bench` passes --bench; anything else (cargo test --benches) is criterion's test mode.
    let bench_mode = std::env::args().any(|a| a == "--bench")
        && !std::env::args().any(|a| a == "--test" || a == "--list");
    let mut scale = if bench_mode { FULL } else { SMOKE };
    // For experiments: AUTOCLAIM_BENCH_USERS=10000 shrinks the directory (100 users a tenant) to show
    // how much of the cost is cache misses on a large state.
    if let Some(users) = std::env::var("AUTOCLAIM_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        scale.users = users.max(3);
        scale.tenants = (users / 100).max(1);
    }

    let rss_start = proc_status_bytes("VmRSS:");
    let specs = tenant_specs(scale);
    let tables = build_tables(&specs);
    let rss_tables = proc_status_bytes("VmRSS:");
    let build = Instant::now();
    let mut partition = PartitionState::default();
    for tenant in &specs {
        load_tenant_users(&mut partition, tenant);
    }
    let build = build.elapsed();
    let rss_state = proc_status_bytes("VmRSS:");
    assert_eq!(partition.tracked_users(), scale.users);
    eprintln!(
        "state: {} tenants, {} directory users built in {build:.2?}; samples measure {}",
        scale.tenants,
        scale.users,
        clock.name()
    );
    eprintln!(
        "memory: VmRSS {:.1} MiB at start, {:.1} MiB after tables (+{:.1} MiB, {:.0} B/tenant), \
         {:.1} MiB after directory (+{:.1} MiB, {:.1} B/directory user), VmHWM {:.1} MiB",
        mib(rss_start),
        mib(rss_tables),
        mib(rss_tables - rss_start),
        (rss_tables - rss_start) as f64 / scale.tenants as f64,
        mib(rss_state),
        mib(rss_state - rss_tables),
        (rss_state - rss_tables) as f64 / scale.users as f64,
        mib(proc_status_bytes("VmHWM:")),
    );

    let pool = event_pool(&specs, scale);
    let avg = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len() as f64;
    eprintln!(
        "pool: {} events, {:.0} B/event as JSON, {:.0} B/event as protobuf",
        pool.json.len(),
        avg(&pool.json),
        avg(&pool.protobuf)
    );
    pass("first pass", &tables, &mut partition, &pool.decoded);
    pass(
        "steady state (second pass)",
        &tables,
        &mut partition,
        &pool.decoded,
    );
    let rss_after = proc_status_bytes("VmRSS:");
    eprintln!(
        "memory: VmRSS {:.1} MiB with the pool and assignments",
        mib(rss_after)
    );

    let decided_at = t0();
    let n = pool.json.len();

    if let Ok(stage) = std::env::var("AUTOCLAIM_BENCH_COUNT") {
        count_stage(&stage, &tables, &mut partition, &pool, decided_at);
        return;
    }

    if bench_mode {
        let decisions: Vec<Decision> = pool
            .decoded
            .iter()
            .map(|e| decide_and_record(&tables, &mut partition, e).decision)
            .collect();
        interleaved(
            &[
                "full_path/json_in_protobuf_out",
                "full_path/protobuf_in_protobuf_out",
                "decide/pre_decoded",
                "decode/json",
                "decode/json_without_schema_version",
                "decode/protobuf",
                "encode/decision_protobuf",
                "decode/json_general_decoder",
            ],
            n,
            |variant, i| match variant {
                0 => drop(black_box(full_path(
                    &tables,
                    &mut partition,
                    &pool.json[i],
                    Format::Json,
                    decided_at,
                ))),
                1 => drop(black_box(full_path(
                    &tables,
                    &mut partition,
                    &pool.protobuf[i],
                    Format::Protobuf,
                    decided_at,
                ))),
                2 => drop(black_box(decide_and_record(
                    &tables,
                    &mut partition,
                    &pool.decoded[i],
                ))),
                3 => drop(black_box(decode_json(black_box(&pool.json[i])))),
                4 => drop(black_box(decode_json(black_box(&pool.json_unversioned[i])))),
                5 => drop(black_box(decode_protobuf(black_box(&pool.protobuf[i])))),
                6 => drop(black_box(encode_decision(
                    black_box(&decisions[i]),
                    decided_at,
                ))),
                _ => drop(black_box(decode_json_general(black_box(&pool.json[i])))),
            },
        );
    }

    // (a) the full path, JSON in, protobuf out.
    {
        let mut group = criterion.benchmark_group("full_path");
        group.throughput(Throughput::Elements(1));
        let mut i = 0;
        group.bench_function("json_in_protobuf_out", |b| {
            b.iter(|| {
                let out = full_path(
                    &tables,
                    &mut partition,
                    &pool.json[i],
                    Format::Json,
                    decided_at,
                );
                i = (i + 1) % n;
                out
            })
        });
        // (d) the full path, protobuf in, protobuf out.
        let mut i = 0;
        group.bench_function("protobuf_in_protobuf_out", |b| {
            b.iter(|| {
                let out = full_path(
                    &tables,
                    &mut partition,
                    &pool.protobuf[i],
                    Format::Protobuf,
                    decided_at,
                );
                i = (i + 1) % n;
                out
            })
        });
        group.finish();
    }

    // (b) decide only, on pre-decoded events.
    {
        let mut group = criterion.benchmark_group("decide");
        group.throughput(Throughput::Elements(1));
        let mut i = 0;
        group.bench_function("pre_decoded", |b| {
            b.iter(|| {
                let d = decide_and_record(&tables, &mut partition, &pool.decoded[i]);
                i = (i + 1) % n;
                d
            })
        });
        group.finish();
    }

    // (c) decode only.
    {
        let mut group = criterion.benchmark_group("decode");
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(4));
        let mut i = 0;
        group.bench_function("json", |b| {
            b.iter(|| {
                let e = decode_json(black_box(&pool.json[i]));
                i = (i + 1) % n;
                e
            })
        });
        // pbjson reads a JSON number through an untagged enum that first tries a string, which
        // builds (and drops) a serde_json error: this shows what the one numeric field costs.
        let mut i = 0;
        group.bench_function("json_without_schema_version", |b| {
            b.iter(|| {
                let e = decode_json(black_box(&pool.json_unversioned[i]));
                i = (i + 1) % n;
                e
            })
        });
        let mut i = 0;
        group.bench_function("protobuf", |b| {
            b.iter(|| {
                let e = decode_protobuf(black_box(&pool.protobuf[i]));
                i = (i + 1) % n;
                e
            })
        });
        group.finish();
    }

    // Encode only: the decisions of the steady state, built into messages and encoded.
    {
        // Built lazily: criterion only calls a benchmark's closure when its id passes the filter.
        let decisions: OnceCell<Vec<Decision>> = OnceCell::new();
        let mut group = criterion.benchmark_group("encode");
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(4));
        let mut i = 0;
        group.bench_function("decision_protobuf", |b| {
            let decisions = decisions.get_or_init(|| {
                pool.decoded
                    .iter()
                    .map(|e| decide_and_record(&tables, &mut partition, e).decision)
                    .collect()
            });
            b.iter(|| {
                let out = encode_decision(black_box(&decisions[i]), decided_at);
                i = (i + 1) % n;
                out
            })
        });
        group.finish();
    }

    // Restore: every directory record decoded, validated and upserted into a partition that starts
    // empty and grows to the whole directory, as `autoclaim run` rebuilds one. When the records run
    // out, the partition is dropped and a fresh one started, untimed.
    {
        let records: OnceCell<DirectoryRecords> = OnceCell::new();
        let records = || {
            records.get_or_init(|| {
                let start = Instant::now();
                let r = directory_records(&specs);
                eprintln!(
                    "restore: {} directory records, {:.0} B as JSON, {:.0} B as protobuf, \
                     encoded in {:.2?}",
                    r.json.len(),
                    avg(&r.json),
                    avg(&r.protobuf),
                    start.elapsed()
                );
                r
            })
        };
        let mut group = criterion.benchmark_group("restore");
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(6));
        for (name, format) in [
            ("directory_user_json", Format::Json),
            ("directory_user_protobuf", Format::Protobuf),
        ] {
            let mut state = PartitionState::default();
            let mut next = 0;
            group.bench_function(name, |b| {
                let records = records();
                let records = match format {
                    Format::Json => &records.json,
                    Format::Protobuf => &records.protobuf,
                };
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut start = clock.now();
                    for _ in 0..iters {
                        if next == records.len() {
                            timed += clock.now().saturating_sub(start);
                            drop(std::mem::take(&mut state));
                            next = 0;
                            start = clock.now();
                        }
                        restore_record(&mut state, &records[next], format);
                        next += 1;
                    }
                    timed + clock.now().saturating_sub(start)
                })
            });
        }
        group.finish();
    }

    // First claims: every event is a first claim, replayed on a freshly built partition per batch
    // (building it is not timed). The global tables are the full ones.
    {
        let batch_size = if bench_mode { FIRST_CLAIM_BATCH } else { 256 };
        let fresh_partition = |batch: &FirstClaims| {
            let mut p = PartitionState::default();
            for &t in &batch.tenants {
                load_tenant_users(&mut p, &specs[t]);
            }
            p
        };
        // Generated lazily (see above), and the outcome mix of one batch printed.
        let batches: OnceCell<Vec<FirstClaims>> = OnceCell::new();
        let batches = || {
            batches.get_or_init(|| {
                let batches: Vec<FirstClaims> = (0..FIRST_CLAIM_BATCHES)
                    .map(|b| first_claim_batch(&specs, b, batch_size))
                    .collect();
                let mut p = fresh_partition(&batches[0]);
                pass(
                    "first claims batch",
                    &tables,
                    &mut p,
                    &batches[0].pool.decoded,
                );
                batches
            })
        };
        let mut group = criterion.benchmark_group("first_claims");
        group.throughput(Throughput::Elements(batch_size as u64));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));
        let mut next = 0;
        group.bench_function("json_in_protobuf_out", |b| {
            let batches = batches();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let batch = &batches[next];
                    next = (next + 1) % batches.len();
                    let mut p = fresh_partition(batch);
                    let start = clock.now();
                    for bytes in &batch.pool.json {
                        black_box(full_path(&tables, &mut p, bytes, Format::Json, decided_at));
                    }
                    timed += clock.now().saturating_sub(start);
                }
                timed
            })
        });
        group.bench_function("decide_pre_decoded", |b| {
            let batches = batches();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let batch = &batches[next];
                    next = (next + 1) % batches.len();
                    let mut p = fresh_partition(batch);
                    let start = clock.now();
                    for event in &batch.pool.decoded {
                        black_box(decide_and_record(&tables, &mut p, event));
                    }
                    timed += clock.now().saturating_sub(start);
                }
                timed
            })
        });
        group.finish();
    }

    criterion.final_summary();
}
