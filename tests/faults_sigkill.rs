//! Fault: the service is SIGKILLed at seeded random points of a 100,000-event stream over many
//! tenants with scarce seats, and restarted each time (same transactional id, so the new incarnation
//! fences the dead one and aborts its open transaction). All events are published before the first
//! start; the kill points are fractions of the stream the group has committed, so the same seed
//! gives the same schedule. At the end `autoclaim verify` finds nothing wrong and the outputs are
//! exactly `replay`'s. A second run does the same on 50,000 events that all arrive on the partition
//! after their tenant's, so that every one is routed through the repartition topic. Seed:
//! AUTOCLAIM_FAULT_SEED (default below). Needs AUTOCLAIM_TEST_BROKERS.
mod kafka_support;

use std::time::{Duration, Instant};

use autoclaim::scenario::{Scenario, ScenarioConfig};
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
