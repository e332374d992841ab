//! Invariants of the processor over random input streams: several tenants, users with random
//! licences and flags, random inventory snapshots, policies with random chains, settings, and
//! activity events with nondecreasing-ish times, under random propagation delays.
//!
//! Each invariant is checked against a model written here from design section 2, never against
//! values computed by the code under test.
mod support;

use std::collections::{HashMap, HashSet};

use autoclaim::replay::Replayer;
use autoclaim::wire::pb;
use autoclaim::wire::pb::replay_record::Record;
use proptest::prelude::*;
use proptest::test_runner::Config;
use support::*;

const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
const PRODUCTS: [&str; 2] = [PER_USER, PREMIUM];
/// Users u0..u4 may appear in the directory; u5 never does.
const DIRECTORY_USERS: usize = 5;
const ALL_USERS: usize = 6;

fn config() -> Config {
    Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    }
}

// ------------------------------------------------------------------------------------- model

#[derive(Clone, Debug)]
struct PolicyShape {
    /// Indexes into PRODUCTS, primary first.
    chain: Vec<usize>,
    /// Per link: exclude the first / the second non-granting plan.
    exclude: [[bool; 2]; 2],
    enabled: bool,
    deleted: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Settings {
        tenant: usize,
        enabled: bool,
        managed_only: bool,
    },
    Policy {
        tenant: usize,
        policy: usize,
        shape: PolicyShape,
    },
    Inventory {
        tenant: usize,
        product: usize,
        purchased: u64,
        assigned: u64,
    },
    User {
        tenant: usize,
        user: usize,
        enabled: bool,
        guest: bool,
        usage_location: bool,
        /// (product, granting plan disabled, another plan disabled)
        licences: Vec<(usize, bool, bool)>,
    },
    DeleteUser {
        tenant: usize,
        user: usize,
    },
    Event {
        tenant: usize,
        actor: usize,
        /// 0..=2 cloud flow saved/triggered/turned on, 3 request, 4 go premium, 5 trial.
        kind: usize,
        trigger: usize,
        owner: usize,
        premium: bool,
        rpa: bool,
        managed: bool,
        product: usize,
        /// 0: the flow is under a process plan, 1: in a licensed app's context, else neither.
        exempt: usize,
    },
}

/// A step, the seconds the clock advances before it, and how far the record's own time is off the
/// clock (so times are nondecreasing only roughly).
#[derive(Clone, Debug)]
struct Timed {
    step: Step,
    advance_s: i64,
    jitter_s: i64,
}

fn arb_policy_shape() -> impl Strategy<Value = PolicyShape> {
    (
        prop_oneof![
            Just(vec![0]),
            Just(vec![1]),
            Just(vec![0, 1]),
            Just(vec![1, 0])
        ],
        any::<[[bool; 2]; 2]>(),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(chain, exclude, enabled, deleted)| PolicyShape {
            chain,
            exclude,
            enabled,
            deleted,
        })
}

fn arb_step() -> impl Strategy<Value = Step> {
    let tenant = 0..TENANTS.len();
    prop_oneof![
        1 => (tenant.clone(), prop::bool::weighted(0.8), prop::bool::weighted(0.3))
            .prop_map(|(tenant, enabled, managed_only)| Step::Settings { tenant, enabled, managed_only }),
        2 => (tenant.clone(), 0..3usize, arb_policy_shape())
            .prop_map(|(tenant, policy, shape)| Step::Policy { tenant, policy, shape }),
        2 => (tenant.clone(), 0..PRODUCTS.len(), 0u64..5, 0u64..4)
            .prop_map(|(tenant, product, purchased, assigned)| Step::Inventory { tenant, product, purchased, assigned }),
        3 => (
            tenant.clone(),
            0..DIRECTORY_USERS,
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.9),
            prop::collection::vec((0..PRODUCTS.len(), prop::bool::weighted(0.3), any::<bool>()), 0..3),
        )
            .prop_map(|(tenant, user, enabled, guest, usage_location, licences)| Step::User {
                tenant, user, enabled, guest, usage_location, licences,
            }),
        1 => (tenant.clone(), 0..DIRECTORY_USERS).prop_map(|(tenant, user)| Step::DeleteUser { tenant, user }),
        12 => (
            tenant,
            0..ALL_USERS,
            0..6usize,
            0..3usize,
            0..ALL_USERS,
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.3),
            0..PRODUCTS.len(),
            0..10usize,
        )
            .prop_map(|(tenant, actor, kind, trigger, owner, premium, rpa, managed, product, exempt)| Step::Event {
                tenant, actor, kind, trigger, owner, premium, rpa, managed, product, exempt,
            }),
    ]
}

fn arb_timed() -> impl Strategy<Value = Timed> {
    (arb_step(), 0i64..=600, -300i64..=300).prop_map(|(step, advance_s, jitter_s)| Timed {
        step,
        advance_s,
        jitter_s,
    })
}

fn arb_delay_ms() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(SEC),
        Just(30 * SEC),
        Just(10 * MIN),
        Just(HOUR),
        Just(2 * HOUR),
    ]
}

/// Per tenant, a set-up made well before the first event (settings, policies, inventory and directory
/// users, each random), so that the random steps after it meet tenants in every state.
fn arb_preamble() -> impl Strategy<Value = Vec<Timed>> {
    let tenant = |tenant: usize| {
        (
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.2),
            prop::collection::vec(arb_policy_shape(), 0..4),
            prop::collection::vec((0u64..5, 0u64..3), 2),
            prop::collection::vec(
                (
                    prop::bool::weighted(0.9),
                    prop::bool::weighted(0.1),
                    prop::bool::weighted(0.9),
                    prop::collection::vec(
                        (0..PRODUCTS.len(), prop::bool::weighted(0.3), any::<bool>()),
                        0..2,
                    ),
                ),
                DIRECTORY_USERS,
            ),
        )
            .prop_map(move |(enabled, managed_only, policies, seats, users)| {
                let mut steps = vec![Step::Settings {
                    tenant,
                    enabled,
                    managed_only,
                }];
                for (policy, shape) in policies.into_iter().enumerate() {
                    steps.push(Step::Policy {
                        tenant,
                        policy,
                        shape,
                    });
                }
                for (product, (purchased, assigned)) in seats.into_iter().enumerate() {
                    steps.push(Step::Inventory {
                        tenant,
                        product,
                        purchased,
                        assigned,
                    });
                }
                for (user, (enabled, guest, usage_location, licences)) in
                    users.into_iter().enumerate()
                {
                    steps.push(Step::User {
                        tenant,
                        user,
                        enabled,
                        guest,
                        usage_location,
                        licences,
                    });
                }
                steps
            })
    };
    (tenant(0), tenant(1), tenant(2)).prop_map(|(a, b, c)| {
        a.into_iter()
            .chain(b)
            .chain(c)
            .map(|step| Timed {
                step,
                advance_s: 0,
                jitter_s: 0,
            })
            .collect()
    })
}

/// A stream: an optional set-up three hours before T0, then random steps from T0 on.
fn arb_steps() -> impl Strategy<Value = Vec<Timed>> {
    (
        prop::option::weighted(0.9, arb_preamble()),
        prop::collection::vec(arb_timed(), 1..90),
    )
        .prop_map(|(preamble, steps)| {
            let mut all = preamble.unwrap_or_default();
            if let Some(first) = steps.first() {
                let mut first = first.clone();
                // The set-up is at T0 - 3 h; the steps start at T0.
                first.advance_s += 3 * 3600;
                all.push(first);
                all.extend(steps.into_iter().skip(1));
            }
            all
        })
}

/// Users of the busy tenant, all in the directory, eligible and unlicensed.
const BUSY_USERS: usize = 30;

/// One tenant under seat pressure: autoclaim on, enabled policies, many eligible users, and a random
/// interleaving of inventory snapshots and events needing a licence.
fn arb_busy_steps() -> impl Strategy<Value = Vec<Timed>> {
    let setup = prop::collection::vec(arb_policy_shape(), 1..3).prop_map(|shapes| {
        let mut steps = vec![Step::Settings {
            tenant: 0,
            enabled: true,
            managed_only: false,
        }];
        for (policy, mut shape) in shapes.into_iter().enumerate() {
            shape.enabled = true;
            shape.deleted = false;
            steps.push(Step::Policy {
                tenant: 0,
                policy,
                shape,
            });
        }
        for user in 0..BUSY_USERS {
            steps.push(Step::User {
                tenant: 0,
                user,
                enabled: true,
                guest: false,
                usage_location: true,
                licences: vec![],
            });
        }
        steps
    });
    let step = prop_oneof![
        1 => (0..PRODUCTS.len(), 0u64..6, 0u64..4).prop_map(|(product, purchased, assigned)| {
            Step::Inventory { tenant: 0, product, purchased, assigned }
        }),
        4 => (0..BUSY_USERS, 0..6usize, prop::bool::weighted(0.3), 0..PRODUCTS.len()).prop_map(
            |(actor, kind, rpa, product)| Step::Event {
                tenant: 0, actor, kind, trigger: 2, owner: actor, premium: true, rpa,
                managed: false, product, exempt: usize::MAX,
            }
        ),
    ];
    (
        setup,
        prop::collection::vec((step, 0i64..=600, -300i64..=300), 1..60),
    )
        .prop_map(|(setup, steps)| {
            let mut all: Vec<Timed> = setup
                .into_iter()
                .map(|step| Timed {
                    step,
                    advance_s: 0,
                    jitter_s: 0,
                })
                .collect();
            for (i, (step, advance_s, jitter_s)) in steps.into_iter().enumerate() {
                let advance_s = if i == 0 {
                    advance_s + 3 * 3600
                } else {
                    advance_s
                };
                all.push(Timed {
                    step,
                    advance_s,
                    jitter_s,
                });
            }
            all
        })
}

fn policy_record(
    tenant: &str,
    policy: usize,
    shape: &PolicyShape,
    created_at: i64,
    changed_at: i64,
) -> pb::ReplayRecord {
    let mut spec = PolicySpec::new(
        tenant,
        &format!("p{policy}"),
        PRODUCTS[shape.chain[0]],
        created_at,
    )
    .changed_at(changed_at)
    .enabled(shape.enabled);
    for &backup in &shape.chain[1..] {
        spec = spec.backup(PRODUCTS[backup]);
    }
    for (link, &product) in shape.chain.iter().enumerate() {
        let plans: Vec<&str> = non_granting_plans(PRODUCTS[product])
            .iter()
            .zip(shape.exclude[link])
            .filter(|(_, on)| *on)
            .map(|(p, _)| *p)
            .collect();
        if !plans.is_empty() {
            spec = spec.exclude(PRODUCTS[product], &plans);
        }
    }
    if shape.deleted {
        spec = spec.deleted();
    }
    spec.record()
}

/// Turns steps into records, in order.
fn materialize(steps: &[Timed]) -> Vec<pb::ReplayRecord> {
    let mut clock = T0 - 3 * HOUR;
    let mut created: HashMap<(usize, usize), i64> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in steps.iter().enumerate() {
        clock += t.advance_s * SEC;
        let at = clock + t.jitter_s * SEC;
        let record = match &t.step {
            Step::Settings {
                tenant,
                enabled,
                managed_only,
            } => settings(
                TENANTS[*tenant],
                *enabled,
                if *managed_only {
                    pb::Scope::ManagedEnvironmentsOnly
                } else {
                    pb::Scope::AllEnvironments
                },
                at,
            ),
            Step::Policy {
                tenant,
                policy,
                shape,
            } => {
                let created_at = *created.entry((*tenant, *policy)).or_insert(at);
                policy_record(TENANTS[*tenant], *policy, shape, created_at, at)
            }
            Step::Inventory {
                tenant,
                product,
                purchased,
                assigned,
            } => inventory(
                TENANTS[*tenant],
                PRODUCTS[*product],
                *purchased,
                *assigned,
                at,
            ),
            Step::User {
                tenant,
                user,
                enabled,
                guest,
                usage_location,
                licences,
            } => {
                let mut u = UserSpec::member(TENANTS[*tenant], &format!("u{user}"));
                u.0.as_of = Some(ts(at));
                if !enabled {
                    u = u.disabled();
                }
                if *guest {
                    u = u.guest();
                }
                if !usage_location {
                    u = u.no_usage_location();
                }
                for &(product, granting_off, other_off) in licences {
                    let mut off = Vec::new();
                    if granting_off {
                        off.push(if PRODUCTS[product] == PER_USER {
                            FLOW_PER_USER
                        } else {
                            POWER_AUTOMATE_ATTENDED_RPA
                        });
                    }
                    if other_off {
                        off.push(EXCHANGE_S_FOUNDATION);
                    }
                    u = u.licence(sku_of(PRODUCTS[product]), &off);
                }
                u.record()
            }
            Step::DeleteUser { tenant, user } => {
                user_deleted(TENANTS[*tenant], &format!("u{user}"))
            }
            Step::Event {
                tenant,
                actor,
                kind,
                trigger,
                owner,
                premium,
                rpa,
                managed,
                product,
                exempt,
            } => {
                let (tenant, id, actor) = (TENANTS[*tenant], format!("e{i}"), format!("u{actor}"));
                let e = match kind {
                    0..=2 => {
                        let mut e = Ev::saved(tenant, &id, &actor, at)
                            .kind(
                                [
                                    pb::ActivityKind::CloudFlowSaved,
                                    pb::ActivityKind::CloudFlowTriggered,
                                    pb::ActivityKind::CloudFlowTurnedOn,
                                ][*kind],
                            )
                            .trigger(
                                [
                                    pb::TriggerType::Automated,
                                    pb::TriggerType::Scheduled,
                                    pb::TriggerType::Instant,
                                ][*trigger],
                            )
                            .owner(&format!("u{owner}"))
                            .standard();
                        let f = e.0.flow.as_mut().unwrap();
                        f.uses_premium_connectors = *premium;
                        f.uses_attended_rpa = *rpa;
                        if *managed {
                            e = e.managed();
                        }
                        match exempt {
                            0 => e.process_plan(),
                            1 => e.licensed_app_context(),
                            _ => e,
                        }
                    }
                    3 => Ev::request(tenant, &id, &actor, at, PRODUCTS[*product]),
                    4 => Ev::desktop(tenant, &id, &actor, at, pb::ActivityKind::GoPremiumSelected),
                    _ => Ev::desktop(
                        tenant,
                        &id,
                        &actor,
                        at,
                        pb::ActivityKind::PremiumTrialRpaUsed,
                    ),
                };
                e.record()
            }
        };
        out.push(record);
    }
    out
}

fn tenant_of(r: &pb::ReplayRecord) -> &str {
    match r.record.as_ref().unwrap() {
        Record::Activity(e) => &e.tenant_id,
        Record::DirectoryUser(u) => &u.tenant_id,
        Record::Inventory(i) => &i.tenant_id,
        Record::Settings(s) => &s.tenant_id,
        Record::Policy(p) => &p.tenant_id,
        Record::DirectoryUserDeleted(d) => &d.tenant_id,
    }
}

fn millis(t: &Option<pbjson_types::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

/// The times decisions are made at: the events', and the inventory snapshots' and directory rows'
/// (waiting claims are decided again at the time of the snapshot or row that may have freed a seat).
fn decision_times(records: &[pb::ReplayRecord]) -> Vec<i64> {
    records
        .iter()
        .filter_map(|r| match r.record.as_ref().unwrap() {
            Record::Activity(e) => Some(millis(&e.occurred_at)),
            Record::Inventory(i) => Some(millis(&i.as_of)),
            Record::DirectoryUser(u) => Some(millis(&u.as_of)),
            _ => None,
        })
        .collect()
}

fn event_times(records: &[pb::ReplayRecord]) -> Vec<i64> {
    records
        .iter()
        .filter_map(|r| match r.record.as_ref().unwrap() {
            Record::Activity(e) => Some(millis(&e.occurred_at)),
            _ => None,
        })
        .collect()
}

/// Design 2.2: what the event requires.
fn need_of(e: &pb::ActivityEvent) -> Caps {
    match pb::ActivityKind::try_from(e.kind).unwrap() {
        pb::ActivityKind::CloudFlowSaved
        | pb::ActivityKind::CloudFlowTriggered
        | pb::ActivityKind::CloudFlowTurnedOn => {
            let f = e.flow.as_ref().unwrap();
            if f.covered_by_process_plan || f.runs_in_licensed_app_context {
                Caps::NONE
            } else if f.uses_attended_rpa {
                Caps::RPA_AND_FLOWS
            } else if f.uses_premium_connectors || f.managed_environment {
                Caps::FLOWS
            } else {
                Caps::NONE
            }
        }
        pb::ActivityKind::LicenseRequested => product_caps(&e.requested_product),
        _ => Caps::RPA_AND_FLOWS,
    }
}

/// Design 2.2: whose licence.
fn subject_of(e: &pb::ActivityEvent) -> &str {
    match (pb::ActivityKind::try_from(e.kind).unwrap(), &e.flow) {
        (pb::ActivityKind::CloudFlowTriggered, Some(f))
            if f.trigger_type == pb::TriggerType::Automated as i32
                || f.trigger_type == pb::TriggerType::Scheduled as i32 =>
        {
            &f.owner_user_id
        }
        _ => &e.actor_user_id,
    }
}

/// What one record gave: decisions made again for waiting claims (each with the event it decided
/// again), then, for an activity, its own decision.
struct Lines {
    again: Vec<(pb::ActivityEvent, pb::Decision)>,
    own: Option<pb::Decision>,
}

impl Lines {
    /// Every decision with the event it decided: the record's own event for its own decision.
    fn with_events<'a>(
        &'a self,
        record: &'a pb::ReplayRecord,
    ) -> impl Iterator<Item = (&'a pb::ActivityEvent, &'a pb::Decision)> {
        let own = match record.record.as_ref() {
            Some(Record::Activity(e)) => self.own.as_ref().map(|d| (e, d)),
            _ => None,
        };
        self.again.iter().map(|(e, d)| (e, d)).chain(own)
    }

    fn all(&self) -> impl Iterator<Item = &pb::Decision> {
        self.again.iter().map(|(_, d)| d).chain(&self.own)
    }
}

/// Applies every record; every generated record must be accepted.
fn replay(delay: i64, records: &[pb::ReplayRecord]) -> Vec<Lines> {
    let mut r = Replayer::new(delay_ms(delay));
    records
        .iter()
        .map(|rec| {
            let mut lines = r
                .apply(rec.clone())
                .unwrap_or_else(|e| panic!("{rec:?} refused: {e}"));
            let own = matches!(rec.record, Some(Record::Activity(_)))
                .then(|| lines.pop().expect("an activity gives a decision"));
            let again = lines
                .into_iter()
                .map(|d| {
                    let trigger = d.claims[0]
                        .trigger
                        .clone()
                        .expect("a claim names its trigger");
                    (trigger, d)
                })
                .collect();
            Lines { again, own }
        })
        .collect()
}

fn decision_lines(decisions: &[Lines], tenant: Option<&str>) -> Vec<String> {
    decisions
        .iter()
        .flat_map(Lines::all)
        .filter(|d| tenant.is_none_or(|t| d.tenant_id == t))
        .map(|d| serde_json::to_string(d).unwrap())
        .collect()
}

fn json_lines(records: &[pb::ReplayRecord]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

fn is_assigned(d: &pb::Decision) -> bool {
    d.outcome == pb::Outcome::Assigned as i32
}

type UserKey = (String, String);

/// The products a directory row shows, whatever their plans.
fn held_products(u: &pb::DirectoryUser) -> HashSet<&'static str> {
    PRODUCTS
        .into_iter()
        .filter(|product| {
            u.licenses
                .iter()
                .any(|l| l.sku_id.eq_ignore_ascii_case(sku_of(product)))
        })
        .collect()
}

/// Design 2.5 and the rule on reflection: an own assignment counts until a directory row of the
/// user, taken at or after the assignment, shows the product.
#[derive(Default)]
struct OwnModel {
    unreflected: HashMap<UserKey, Vec<(String, i64)>>,
}

impl OwnModel {
    fn assigned(&mut self, d: &pb::Decision) {
        let at = millis(&d.assignment.as_ref().unwrap().seats_counted_from);
        self.unreflected
            .entry((d.tenant_id.clone(), d.subject_user_id.clone()))
            .or_default()
            .push((d.product.clone(), at));
    }

    fn directory_row(&mut self, u: &pb::DirectoryUser) {
        let held = held_products(u);
        let as_of = millis(&u.as_of);
        if let Some(own) = self
            .unreflected
            .get_mut(&(u.tenant_id.clone(), u.user_id.clone()))
        {
            own.retain(|(product, at)| !(held.contains(product.as_str()) && as_of >= *at));
        }
    }

    fn holds(&self, key: &UserKey, product: &str) -> bool {
        self.unreflected
            .get(key)
            .is_some_and(|own| own.iter().any(|(p, _)| p == product))
    }

    fn caps(&self, key: &UserKey) -> Caps {
        self.unreflected.get(key).map_or(Caps::NONE, |own| {
            own.iter()
                .fold(Caps::NONE, |c, (p, _)| c.union(product_caps(p)))
        })
    }
}

// -------------------------------------------------------------------------------- invariants

proptest! {
    #![proptest_config(config())]

    /// Design 2.6: per tenant and product, the assignments made while a snapshot is the newest
    /// one never exceed its purchased - assigned; and without a snapshot there is nothing to assign.
    #[test]
    fn seats_never_go_below_zero(
        steps in prop_oneof![arb_steps(), arb_busy_steps()],
        delay in arb_delay_ms(),
    ) {
        let records = materialize(&steps);
        let decisions = replay(delay, &records);
        // (tenant, product) -> (as_of, seats in the snapshot, assignments made since it was read)
        let mut snapshot: HashMap<(String, String), (i64, u64, u64)> = HashMap::new();
        for (record, decision) in records.iter().zip(&decisions) {
            if let Record::Inventory(i) = record.record.as_ref().unwrap() {
                let key = (i.tenant_id.clone(), i.product.clone());
                let as_of = millis(&i.as_of);
                let newer = snapshot.get(&key).is_none_or(|(seen, _, _)| as_of >= *seen);
                if newer {
                    let seats = i.purchased_units.saturating_sub(i.assigned_units);
                    snapshot.insert(key, (as_of, seats, 0));
                }
            }
            for d in decision.all().filter(|d| is_assigned(d)) {
                let key = (d.tenant_id.clone(), d.product.clone());
                let entry = snapshot.get_mut(&key);
                prop_assert!(entry.is_some(), "assigned without any inventory: {:?}", d);
                let (as_of, seats, used) = entry.unwrap();
                *used += 1;
                prop_assert!(
                    *used <= *seats,
                    "{} assignments of {} in {} after the snapshot as of {} with {} seats; last {:?}",
                    used, key.1, key.0, as_of, seats, d
                );
            }
        }
    }

    /// Design 2.5 step 7: a product the subject holds is never assigned: not one the directory
    /// shows (whatever its plans), nor one assigned before that the directory has not reflected.
    #[test]
    fn a_held_product_is_never_assigned(steps in arb_steps(), delay in arb_delay_ms()) {
        let records = materialize(&steps);
        let decisions = replay(delay, &records);
        let mut directory: HashMap<UserKey, HashSet<&'static str>> = HashMap::new();
        let mut own = OwnModel::default();
        for (record, decision) in records.iter().zip(&decisions) {
            match record.record.as_ref().unwrap() {
                Record::DirectoryUser(u) => {
                    directory.insert((u.tenant_id.clone(), u.user_id.clone()), held_products(u));
                    own.directory_row(u);
                }
                Record::DirectoryUserDeleted(u) => {
                    directory.remove(&(u.tenant_id.clone(), u.user_id.clone()));
                }
                _ => {}
            }
            for (_, d) in decision.with_events(record) {
                {
                    let key = (d.tenant_id.clone(), d.subject_user_id.clone());
                    if d.reason == pb::Reason::GrantingPlanDisabled as i32 {
                        let product = d.failure.as_ref().map(|f| f.product.as_str()).unwrap_or_default();
                        let held = directory.get(&key).is_some_and(|h| h.contains(product))
                            || own.holds(&key, product);
                        prop_assert!(held, "GRANTING_PLAN_DISABLED for a product not held: {:?}", d);
                    }
                    if !is_assigned(d) {
                        continue;
                    }
                    let in_directory = directory.get(&key).is_some_and(|h| h.contains(d.product.as_str()));
                    prop_assert!(!in_directory, "assigned a product the directory shows: {:?}", d);
                    prop_assert!(!own.holds(&key, &d.product), "assigned twice before the directory reflected it: {:?}", d);
                    own.assigned(d);
                }
            }
        }
    }

    /// Design 2.5 steps 4 to 6: a subject whose licences (directory plus own assignments) cover the
    /// need is never assigned, is ALREADY_ENTITLED only then, and an assignment goes to the right
    /// subject, who is eligible, with a product that covers the need.
    #[test]
    fn entitled_users_are_never_assigned(steps in arb_steps(), delay in arb_delay_ms()) {
        let records = materialize(&steps);
        let decisions = replay(delay, &records);
        // (tenant, user) -> (capabilities from the directory, eligible)
        let mut directory: HashMap<(String, String), (Caps, bool)> = HashMap::new();
        let mut own = OwnModel::default();
        for (record, decision) in records.iter().zip(&decisions) {
            match record.record.as_ref().unwrap() {
                Record::DirectoryUser(u) => {
                    own.directory_row(u);
                    let caps = u.licenses.iter().fold(Caps::NONE, |c, l| {
                        c.union(licence_caps(&l.sku_id, &l.disabled_plan_ids))
                    });
                    let eligible = u.account_enabled
                        && u.user_type == pb::directory_user::UserType::Member as i32
                        && !u.usage_location.is_empty();
                    directory.insert((u.tenant_id.clone(), u.user_id.clone()), (caps, eligible));
                }
                Record::DirectoryUserDeleted(u) => {
                    directory.remove(&(u.tenant_id.clone(), u.user_id.clone()));
                }
                _ => {}
            }
            for (e, d) in decision.with_events(record) {
                {
                    let subject = subject_of(e);
                    prop_assert_eq!(&d.subject_user_id, subject);
                    let key = (e.tenant_id.clone(), subject.to_owned());
                    let (dir_caps, eligible) = directory.get(&key).copied().unwrap_or((Caps::NONE, false));
                    let has = dir_caps.union(own.caps(&key));
                    let need = need_of(e);
                    let outcome = pb::Outcome::try_from(d.outcome).unwrap();
                    if outcome == pb::Outcome::AlreadyEntitled {
                        prop_assert!(has.covers(need) && !need.is_empty(), "{:?} for {:?}", d, e);
                    }
                    if has.covers(need) {
                        prop_assert!(
                            !matches!(outcome, pb::Outcome::Assigned | pb::Outcome::NotEligible
                                | pb::Outcome::Failed | pb::Outcome::NoPolicy),
                            "entitled subject got {:?} for {:?}", d, e
                        );
                    }
                    if is_assigned(d) {
                        prop_assert!(eligible, "ineligible subject assigned: {:?}", d);
                        prop_assert!(!need.is_empty(), "{:?}", d);
                        prop_assert!(has.union(product_caps(&d.product)).covers(need), "{:?} for {:?}", d, e);
                        own.assigned(d);
                    }
                }
            }
        }
    }

    /// Design 2.4: a change whose effect time lies after every decision (an event's, or a waiting
    /// claim's decided again at a snapshot's or row's time) changes no decision.
    #[test]
    fn a_change_not_yet_in_force_has_no_effect(
        steps in arb_steps(),
        delay in arb_delay_ms(),
        change in (0..TENANTS.len(), 0..4usize, arb_policy_shape(), any::<bool>(), any::<bool>(), any::<bool>()),
        position in any::<prop::sample::Index>(),
        late_s in 0i64..7200,
    ) {
        let records = materialize(&steps);
        let times = decision_times(&records);
        prop_assume!(!times.is_empty());
        let changed_at = times.iter().max().unwrap() - delay + 1 + late_s * SEC;
        let (tenant, policy, shape, is_policy, enabled, managed_only) = change;
        let extra = if is_policy {
            policy_record(TENANTS[tenant], policy, &shape, changed_at, changed_at)
        } else {
            let scope = if managed_only { pb::Scope::ManagedEnvironmentsOnly } else { pb::Scope::AllEnvironments };
            settings(TENANTS[tenant], enabled, scope, changed_at)
        };
        let mut changed = records.clone();
        changed.insert(position.index(records.len() + 1), extra);
        prop_assert_eq!(
            decision_lines(&replay(delay, &records), None),
            decision_lines(&replay(delay, &changed), None)
        );
    }

    /// Design 2.4: a change in force before every event has its full effect: the earlier versions
    /// of that setting or policy no longer matter at all.
    #[test]
    fn a_change_in_force_supersedes_earlier_versions(
        steps in arb_steps(),
        delay in arb_delay_ms(),
        change in (0..TENANTS.len(), 0..3usize, arb_policy_shape(), any::<bool>(), any::<bool>(), any::<bool>()),
        position in any::<prop::sample::Index>(),
        early_s in 0i64..7200,
    ) {
        let records = materialize(&steps);
        let times = event_times(&records);
        prop_assume!(!times.is_empty());
        // Odd milliseconds: no generated version shares the instant.
        let changed_at = times.iter().min().unwrap() - delay - early_s * SEC - 7;
        let (tenant, policy, shape, is_policy, enabled, managed_only) = change;
        let tenant = TENANTS[tenant];
        let policy_id = format!("p{policy}");
        let extra = if is_policy {
            policy_record(tenant, policy, &shape, changed_at - HOUR, changed_at)
        } else {
            let scope = if managed_only { pb::Scope::ManagedEnvironmentsOnly } else { pb::Scope::AllEnvironments };
            settings(tenant, enabled, scope, changed_at)
        };
        // Anywhere before the first event (a record only acts on the events after it).
        let first_event = records
            .iter()
            .position(|r| matches!(r.record, Some(Record::Activity(_))))
            .unwrap();
        let mut with_history = records.clone();
        with_history.insert(position.index(first_event + 1), extra);
        let superseded = |r: &pb::ReplayRecord| match r.record.as_ref().unwrap() {
            Record::Settings(s) if !is_policy => {
                s.tenant_id == tenant && millis(&s.changed_at) < changed_at
            }
            Record::Policy(p) if is_policy => {
                p.tenant_id == tenant && p.policy_id == policy_id && millis(&p.changed_at) < changed_at
            }
            _ => false,
        };
        let without_history: Vec<_> = with_history.iter().filter(|r| !superseded(r)).cloned().collect();
        prop_assert_eq!(
            decision_lines(&replay(delay, &with_history), None),
            decision_lines(&replay(delay, &without_history), None)
        );
    }

    /// Tenants never affect each other: a tenant's decisions are the same without the others.
    #[test]
    fn tenants_never_affect_each_other(steps in arb_steps(), delay in arb_delay_ms()) {
        let records = materialize(&steps);
        let all = replay(delay, &records);
        for tenant in TENANTS {
            let alone: Vec<_> = records.iter().filter(|r| tenant_of(r) == tenant).cloned().collect();
            prop_assert_eq!(
                decision_lines(&all, Some(tenant)),
                decision_lines(&replay(delay, &alone), None),
                "tenant {}", tenant
            );
        }
    }

    /// Replay is deterministic: the same input twice gives byte-identical output, and the JSON-lines
    /// driver gives the same decisions as applying the records one by one.
    #[test]
    fn replay_is_deterministic(steps in arb_steps(), delay in arb_delay_ms()) {
        let records = materialize(&steps);
        let input = json_lines(&records);
        let run = || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let summary = Replayer::new(delay_ms(delay))
                .run(input.as_bytes(), &mut out, &mut err)
                .unwrap();
            (out, err, summary)
        };
        let (a, a_err, a_summary) = run();
        let (b, _, _) = run();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a_summary.rejected, 0, "{}", String::from_utf8_lossy(&a_err));
        let expected: String = decision_lines(&replay(delay, &records), None)
            .into_iter()
            .map(|l| l + "\n")
            .collect();
        prop_assert_eq!(String::from_utf8(a).unwrap(), expected);
    }

    /// Table topics are compacted and re-read: a table record applied twice changes nothing.
    #[test]
    fn table_records_are_idempotent(steps in arb_steps(), delay in arb_delay_ms()) {
        let records = materialize(&steps);
        let doubled: Vec<_> = records
            .iter()
            .flat_map(|r| match r.record.as_ref().unwrap() {
                Record::Activity(_) => vec![r.clone()],
                _ => vec![r.clone(), r.clone()],
            })
            .collect();
        prop_assert_eq!(
            decision_lines(&replay(delay, &records), None),
            decision_lines(&replay(delay, &doubled), None)
        );
    }
}
