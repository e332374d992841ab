//! Fault: the service is SIGKILLed at seeded random points of a 100,000-event stream over many
//! tenants with scarce seats, and restarted each time (same transactional id, so the new incarnation
//! fences the dead one and aborts its open transaction). All events are published before the first
//! start; the kill points are fractions of the stream the group has committed, so the same seed
//! gives the same schedule. At the end `autoclaim verify` finds nothing wrong and the outputs are
//! exactly `replay`'s. A second run does the same on 50,000 events that all arrive on the partition
//! after their tenant's, so that every one is routed through the repartition topic. A third kills
//! the service while waiting claims are fulfilled by new inventory snapshots. Seed:
//! AUTOCLAIM_FAULT_SEED (default below). Needs AUTOCLAIM_TEST_BROKERS.
mod kafka_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::pb::replay_record::Record;
use autoclaim::wire::{pb, Format};
use kafka_support::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 100_000;
const KILLS: usize = 5;
const DEFAULT_SEED: u64 = 20_260_302;
/// Guards against a hang; not a performance threshold.
const GUARD: Duration = Duration::from_secs(600);

fn seed() -> u64 {
    std::env::var("AUTOCLAIM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn start(topics: &Topics, group: &str) -> Service {
    Service::start(&ServiceOptions {
        topics,
        group,
        // Its own per test (the group is): the tests of this file run side by side.
        transactional_id: &format!("{group}-1"),
        delay: "1h",
        extra: vec!["--batch-max-records".into(), "1000".into()],
    })
}

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    sigkill_at_random_points("sigkill", EVENTS, Placement::TenantsPartition);
}

/// The same with every record on the partition after its tenant's (a producer with another
/// partitioner): each is routed, and kills land while records are routed, decided from the
/// repartition topic, restored and rewound.
#[test]
fn sigkill_while_every_record_is_routed_loses_and_duplicates_nothing() {
    sigkill_at_random_points("sigkill-routed", EVENTS / 2, Placement::Misplaced);
}

/// Where the activity is published.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    TenantsPartition,
    Misplaced,
}

fn sigkill_at_random_points(name: &str, events: usize, placement: Placement) {
    let started = Instant::now();
    let seed = seed();
    let topics = unique_topics(name);
    create_topics(&topics, 4);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 200,
        users_per_tenant: 25,
        seed,
        seats_per_user: 0.1,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(events));
    let all: Vec<pb::ReplayRecord> = tables.iter().chain(&activity).cloned().collect();
    let expected = expected(&all, Duration::from_secs(3600));
    assert!(
        expected.assignments.len() > 100 && expected.failures.len() > 1000,
        "the scenario should assign and run out of seats: {} assignments, {} failures",
        expected.assignments.len(),
        expected.failures.len()
    );
    publish(&topics, &tables, Format::Json);
    let (first, second) = activity.split_at(activity.len() / 2);
    if placement == Placement::Misplaced {
        publish_misplaced(&topics, first, Format::Protobuf);
        publish_misplaced(&topics, second, Format::Json);
    } else {
        publish(&topics, first, Format::Protobuf);
        publish(&topics, second, Format::Json);
    }
    eprintln!(
        "{name}: seed {seed}; published {} table records and {events} events in {:.1}s",
        tables.len(),
        started.elapsed().as_secs_f64()
    );

    // The schedule: kill when the group has committed these fractions of the stream, after a
    // further random pause (so that kills land inside transactions, restores and commits alike).
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut points: Vec<f64> = (0..KILLS).map(|_| rng.random_range(0.05..0.9)).collect();
    points.sort_by(f64::total_cmp);
    let pauses: Vec<u64> = (0..KILLS).map(|_| rng.random_range(0..400)).collect();

    let group = format!("g-{}", topics.activity);
    let mut logs = Vec::new();
    let mut service = start(&topics, &group);
    for (i, (point, pause)) in points.iter().zip(&pauses).enumerate() {
        let target = (point * events as f64) as i64;
        let deadline = Instant::now() + GUARD;
        loop {
            assert!(
                service.is_running(),
                "the service exited by itself before kill {}; log:\n{}",
                i + 1,
                service.log_text()
            );
            if committed_total(&topics, &group) >= target {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no progress to {target} records; log: {}",
                service.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(*pause));
        let at = committed_total(&topics, &group);
        service.kill();
        eprintln!(
            "{name}: kill {} of {KILLS} at {:.1}s: target {target} records, {at} committed at the kill (+{pause} ms)",
            i + 1,
            started.elapsed().as_secs_f64()
        );
        logs.push(service.log_text());
        service = start(&topics, &group);
    }
    wait_processed_by(&mut service, &topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &expected);
    assert!(service.is_running(), "log:\n{}", service.log_text());
    assert!(
        service.stop().success(),
        "clean exit; log:\n{}",
        service.log_text()
    );
    logs.push(service.log_text());
    let panicked = logs.iter().filter(|l| l.contains("panicked")).count();
    assert_eq!(panicked, 0, "a service log shows a panic");
    let rebalances: usize = logs
        .iter()
        .map(|l| l.matches("partitions assigned").count())
        .sum();
    eprintln!(
        "{name}: FIGURES seed={seed} events={events} tenants=200 kills={KILLS} incarnations={} \
         partition_assignments={rebalances} \
         assignments={} failures={} duplicates=0 lost=0 verify_ms={} elapsed={:.1}s",
        logs.len(),
        report.counts.assignments,
        report.counts.failures,
        report.elapsed_ms,
        started.elapsed().as_secs_f64()
    );
}

/// Fault: SIGKILLs while waiting claims are fulfilled. Every tenant starts with no free seat, so
/// its users' claims wait; then new snapshots with seats are published tenant by tenant, and the
/// service is killed each time the fulfilments committed pass a fraction of what there is to
/// fulfil (restarted each time); then more activity follows. An instance decides the waiting
/// claims again with the snapshots it has read by then (a restarted one may read several at once,
/// where `replay` decides after each record), so the checks are the guarantees rather than equality
/// with replay: no assignment twice, none beyond the seats, no claim left waiting where a seat of
/// its product is free, the oldest first, every fulfilled claim's assignment published and every
/// assignment that fulfilled a claim named by it, and `verify` clean.
#[test]
fn sigkill_while_pending_claims_are_fulfilled_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let seed = seed();
    let topics = unique_topics("sigkill-claims");
    create_topics(&topics, 4);
    let plan = ClaimsPlan::new(seed);
    publish(&topics, &plan.tables, Format::Json);
    publish(&topics, &plan.waiting, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = start(&topics, &group);
    wait_processed_by(&mut service, &topics, &group, GUARD);
    let waiting = Claims::read(&topics).count(pb::ClaimStatus::Pending);
    assert!(waiting > 500, "claims should wait: {waiting}");

    // The snapshots, spread over a few seconds; a kill each time the fulfilments committed pass a
    // fraction of the seats, after a random pause (so kills land inside the transactions).
    let seats: u64 = plan.freed_seats();
    let publisher = std::thread::spawn({
        let (topics, snapshots) = (topics.clone(), plan.snapshots.clone());
        move || {
            for chunk in snapshots.chunks(10) {
                publish(&topics, chunk, Format::Json);
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut logs = Vec::new();
    for (i, fraction) in [0.1, 0.3, 0.5].into_iter().enumerate() {
        let target = (fraction * seats as f64) as usize;
        wait_until("fulfilments to the next kill", GUARD, || {
            assignments(&topics).len() >= target
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        let at = assignments(&topics).len();
        service.kill();
        eprintln!(
            "sigkill-claims: kill {} with {at} fulfilments committed",
            i + 1
        );
        logs.push(service.log_text());
        service = start(&topics, &group);
    }
    publisher.join().expect("snapshots published");
    wait_until("no claim waiting where a seat is free", GUARD, || {
        Claims::read(&topics).settled().is_ok()
    });
    publish(&topics, &plan.later, Format::Json);
    wait_processed_by(&mut service, &topics, &group, GUARD);
    // The checker's own replay reads the tables before the activity, so it cannot follow the
    // snapshots: it checks duplicates, seats and that every record was processed.
    wait_clean_by(&topics, &group, GUARD, false);
    let claims = Claims::read(&topics);
    claims.settled().unwrap();
    claims.within_seats().unwrap();
    claims.oldest_first().unwrap();
    claims.each_fulfilment_once().unwrap();
    assert!(service.stop().success(), "log:\n{}", service.log_text());
    logs.push(service.log_text());
    assert_eq!(logs.iter().filter(|l| l.contains("panicked")).count(), 0);
    eprintln!(
        "sigkill-claims: FIGURES seed={seed} kills=3 waiting={waiting} fulfilled={} still_waiting={} elapsed={:.1}s",
        claims.count(pb::ClaimStatus::Fulfilled),
        claims.count(pb::ClaimStatus::Pending),
        started.elapsed().as_secs_f64()
    );
}

/// The records of the claims fault test, in the order they are published.
struct ClaimsPlan {
    /// Settings, policies, the directory, and snapshots with no free seat.
    tables: Vec<pb::ReplayRecord>,
    /// Activity refused for want of a seat.
    waiting: Vec<pb::ReplayRecord>,
    /// Snapshots with seats, after every waiting event.
    snapshots: Vec<pb::ReplayRecord>,
    /// Activity after the snapshots.
    later: Vec<pb::ReplayRecord>,
}

impl ClaimsPlan {
    fn new(seed: u64) -> Self {
        let scenario = Scenario::new(ScenarioConfig {
            tenants: 100,
            users_per_tenant: 25,
            seed,
            seats_per_user: 0.3,
            ..ScenarioConfig::default()
        });
        let (inventory, mut tables): (Vec<_>, Vec<_>) = scenario
            .tables()
            .into_iter()
            .partition(|r| matches!(r.record, Some(Record::Inventory(_))));
        let activity = activity_records(scenario.activity(8_000));
        let (waiting, later) = activity.split_at(6_000);
        let after = waiting.iter().filter_map(event_millis).max().unwrap() + 60_000;
        let mut snapshots = Vec::new();
        for record in inventory {
            let Some(Record::Inventory(i)) = record.record else {
                continue;
            };
            let sold_out = pb::LicenseInventory {
                assigned_units: i.purchased_units,
                ..i.clone()
            };
            tables.push(replay_record(Record::Inventory(sold_out)));
            let freed = pb::LicenseInventory {
                assigned_units: 0,
                as_of: Some(millis_to_ts(after)),
                ..i
            };
            snapshots.push(replay_record(Record::Inventory(freed)));
        }
        ClaimsPlan {
            tables,
            waiting: waiting.to_vec(),
            snapshots,
            later: later.to_vec(),
        }
    }

    fn freed_seats(&self) -> u64 {
        self.snapshots
            .iter()
            .map(|r| match &r.record {
                Some(Record::Inventory(i)) => i.purchased_units,
                _ => 0,
            })
            .sum()
    }
}

fn event_millis(r: &pb::ReplayRecord) -> Option<i64> {
    match &r.record {
        Some(Record::Activity(e)) => e.occurred_at.map(|t| t.seconds * 1000),
        _ => None,
    }
}

fn millis_to_ts(millis: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: 0,
    }
}

fn replay_record(record: Record) -> pb::ReplayRecord {
    pb::ReplayRecord {
        record: Some(record),
        written_at: None,
    }
}

fn millis(t: &Option<pbjson_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// The committed outputs of the claims test: each claim's last state, the assignments, and the
/// newest snapshot of each tenant's product.
struct Claims {
    latest: BTreeMap<String, pb::LicenseClaim>,
    assignments: Vec<pb::LicenseAssignment>,
    /// (tenant, product) -> (purchased - assigned, as of)
    snapshots: BTreeMap<(String, String), (u64, i64)>,
}

impl Claims {
    fn read(topics: &Topics) -> Claims {
        let mut latest = BTreeMap::new();
        for read in read_committed(&topics.claims) {
            let c: pb::LicenseClaim =
                autoclaim::wire::codec::decode(&read.value.unwrap(), Format::Json).unwrap();
            let key = format!("{}/{}/{}", c.tenant_id, c.user_id, c.needs.join("+"));
            latest.insert(key, c);
        }
        let mut snapshots = BTreeMap::new();
        for read in read_committed(&topics.inventory) {
            let i: pb::LicenseInventory =
                autoclaim::wire::codec::decode(&read.value.unwrap(), Format::Json).unwrap();
            let seats = i.purchased_units.saturating_sub(i.assigned_units);
            snapshots.insert((i.tenant_id, i.product), (seats, millis(&i.as_of)));
        }
        Claims {
            latest,
            assignments: assignments(topics),
            snapshots,
        }
    }

    fn count(&self, status: pb::ClaimStatus) -> usize {
        let status = status as i32;
        self.latest.values().filter(|c| c.status == status).count()
    }

    /// Seats of the tenant's product left after this processor's assignments since the snapshot.
    fn seats_left(&self, tenant: &str, product: &str) -> i64 {
        let Some((seats, as_of)) = self.snapshots.get(&(tenant.to_owned(), product.to_owned()))
        else {
            return 0;
        };
        let used = self
            .assignments
            .iter()
            .filter(|a| a.tenant_id == tenant && a.product == product)
            .filter(|a| millis(&a.seats_counted_from) > *as_of)
            .count();
        *seats as i64 - used as i64
    }

    fn settled(&self) -> Result<(), String> {
        for c in self.latest.values() {
            let left = self.seats_left(&c.tenant_id, &c.product);
            if c.status == pb::ClaimStatus::Pending as i32 && left > 0 {
                return Err(format!(
                    "{left} seats of {} free while {c:?} waits",
                    c.product
                ));
            }
        }
        Ok(())
    }

    fn within_seats(&self) -> Result<(), String> {
        for (tenant, product) in self.snapshots.keys() {
            let left = self.seats_left(tenant, product);
            if left < 0 {
                return Err(format!("{product} of {tenant}: {} beyond the seats", -left));
            }
        }
        Ok(())
    }

    /// Of the claims of one need, refused for one product by one policy, none waits that came
    /// before one fulfilled.
    fn oldest_first(&self) -> Result<(), String> {
        let mut groups: BTreeMap<(String, String, String, Vec<String>), Vec<&pb::LicenseClaim>> =
            BTreeMap::new();
        for c in self.latest.values() {
            let key = (
                c.tenant_id.clone(),
                c.product.clone(),
                c.policy_id.clone(),
                c.needs.clone(),
            );
            groups.entry(key).or_default().push(c);
        }
        for claims in groups.values() {
            let newest_fulfilled = claims
                .iter()
                .filter(|c| c.status == pb::ClaimStatus::Fulfilled as i32)
                .map(|c| millis(&c.first_seen))
                .max();
            let oldest_waiting = claims
                .iter()
                .filter(|c| c.status == pb::ClaimStatus::Pending as i32)
                .min_by_key(|c| millis(&c.first_seen));
            if let (Some(fulfilled), Some(waiting)) = (newest_fulfilled, oldest_waiting) {
                if millis(&waiting.first_seen) < fulfilled {
                    return Err(format!(
                        "{waiting:?} waits behind a younger claim fulfilled"
                    ));
                }
            }
        }
        Ok(())
    }

    fn each_fulfilment_once(&self) -> Result<(), String> {
        let ids: BTreeMap<&str, &pb::LicenseAssignment> = self
            .assignments
            .iter()
            .map(|a| (a.assignment_id.as_str(), a))
            .collect();
        if ids.len() != self.assignments.len() {
            return Err("an assignment id published twice".into());
        }
        let fulfilled: Vec<&str> = self
            .latest
            .values()
            .filter(|c| c.status == pb::ClaimStatus::Fulfilled as i32)
            .map(|c| c.assignment_id.as_str())
            .collect();
        for id in &fulfilled {
            if !ids.contains_key(id) {
                return Err(format!(
                    "claim fulfilled by {id}, which was never published"
                ));
            }
        }
        let named: std::collections::BTreeSet<&str> = fulfilled.into_iter().collect();
        for a in self
            .assignments
            .iter()
            .filter(|a| a.pending_since.is_some())
        {
            if !named.contains(a.assignment_id.as_str()) {
                return Err(format!("{a:?} fulfilled a claim that does not say so"));
            }
        }
        Ok(())
    }
}
