//! Activity from producers that do not partition as Kafka's Java client does, on 6 partitions:
//! kcat with librdkafka's default partitioner (CRC32 of the key), kcat with `murmur2_random` (the
//! Java client's placement), kcat with `fnv1a` (Sarama's hash), round-robin with no key (kafka-go's
//! default), and keyed records sent to random partitions. Every record that lands on a partition
//! that does not own its tenant is routed to the one that does and decided there, once: the
//! outputs are exactly replay's, `verify --compare-replay` is clean, and the service counts one
//! decision per event.
//!
//! A producer that keeps each tenant on one partition keeps its order, so those runs use a
//! scenario where seats run out (order decides who gets one). A producer that spreads a tenant over
//! partitions gives its records no order at all, so those runs use one event per user and seats
//! for everyone, where every order gives the same outputs.
mod kafka_support;

use std::collections::HashSet;
use std::time::Duration;

use autoclaim::pipeline::partitioner::tenant_partition;
use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::{codec, pb, Format};
use kafka_support::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const PARTITIONS: i32 = 6;
const EVENTS: usize = 3000;
const GUARD: Duration = Duration::from_secs(300);

/// How a run's activity reaches Kafka.
enum Producer {
    /// kcat with these extra arguments (keyed by tenant id).
    Kcat(&'static [&'static str]),
    /// No key; partition `i % 6` for the i-th record.
    RoundRobinWithoutKey,
    /// Keyed by tenant id; a random partition.
    RandomPartition,
}

struct Run {
    topics: Topics,
    group: String,
    tables: Vec<pb::ReplayRecord>,
    activity: Vec<pb::ReplayRecord>,
}

/// Tables and activity of a seeded scenario; `one_event_per_user` keeps only events whose users
/// (actor and flow owner) no earlier kept event has, and buys seats for everyone.
fn prepare(name: &str, seed: u64, one_event_per_user: bool) -> Run {
    let topics = unique_topics(name);
    create_topics(&topics, PARTITIONS);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 24,
        users_per_tenant: if one_event_per_user { 400 } else { 30 },
        seed,
        seats_per_user: if one_event_per_user { 3.0 } else { 0.3 },
        ..ScenarioConfig::default()
    });
    let mut events: Vec<pb::ActivityEvent> = scenario.activity(EVENTS).collect();
    if one_event_per_user {
        // The licence may be the actor's or the flow owner's: no user in two kept events.
        let mut seen = HashSet::new();
        events.retain(|e| {
            let owner = e.flow.as_ref().map(|f| f.owner_user_id.clone());
            let users: Vec<String> = std::iter::once(e.actor_user_id.clone())
                .chain(owner)
                .collect();
            let fresh = users
                .iter()
                .all(|u| !seen.contains(&(e.tenant_id.clone(), u.clone())));
            if fresh {
                seen.extend(users.into_iter().map(|u| (e.tenant_id.clone(), u)));
            }
            fresh
        });
    }
    Run {
        group: format!("g-{}", topics.activity),
        tables: scenario.tables(),
        activity: activity_records(events),
        topics,
    }
}

fn events(run: &Run) -> impl Iterator<Item = &pb::ActivityEvent> {
    run.activity.iter().map(|r| match &r.record {
        Some(pb::replay_record::Record::Activity(e)) => e,
        _ => unreachable!("activity records only"),
    })
}

fn produce(run: &Run, producer: &Producer) {
    match producer {
        Producer::Kcat(args) => {
            kcat_produce(&run.topics.activity, &kcat_lines(&run.activity), args)
        }
        Producer::RoundRobinWithoutKey => {
            let raw = RawProducer::new();
            for (i, e) in events(run).enumerate() {
                let value = codec::encode(e, Format::Json);
                raw.send(
                    &run.topics.activity,
                    Some(i as i32 % PARTITIONS),
                    None,
                    Some(&value),
                    &[],
                );
            }
            raw.flush();
        }
        Producer::RandomPartition => {
            let raw = RawProducer::new();
            let mut rng = SmallRng::seed_from_u64(5);
            for e in events(run) {
                let value = codec::encode(e, Format::Json);
                let partition = rng.random_range(0..PARTITIONS);
                raw.send(
                    &run.topics.activity,
                    Some(partition),
                    Some(e.tenant_id.as_bytes()),
                    Some(&value),
                    &[],
                );
            }
            raw.flush();
        }
    }
}

/// How many activity records sit on a partition that does not own their tenant.
fn misplaced(run: &Run) -> usize {
    read_committed(&run.topics.activity)
        .iter()
        .filter(|r| {
            let value = r.value.as_deref().unwrap_or_default();
            let event: pb::ActivityEvent = codec::decode(value, Format::Json).unwrap();
            tenant_partition(&event.tenant_id, PARTITIONS) != r.partition
        })
        .count()
}

/// Sum of a counter's series in the service's /metrics.
fn metric_total(service: &Service, name: &str) -> f64 {
    let (_, body) = http_get(service.http_addr(), "/metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes, runs one instance to the end, and checks everything; returns how many records were
/// misplaced.
fn decide_all(name: &str, seed: u64, producer: Producer, one_event_per_user: bool) -> usize {
    let run = prepare(name, seed, one_event_per_user);
    let all: Vec<pb::ReplayRecord> = run.tables.iter().chain(&run.activity).cloned().collect();
    let expected = expected(&all, Duration::from_secs(3600));
    assert!(!expected.assignments.is_empty(), "the scenario assigns");
    publish(&run.topics, &run.tables, Format::Json);
    produce(&run, &producer);
    let misplaced = misplaced(&run);

    let mut service = Service::start(&ServiceOptions {
        topics: &run.topics,
        group: &run.group,
        transactional_id: &format!("{name}-1"),
        delay: "1h",
        extra: vec![],
    });
    wait_processed_by(&mut service, &run.topics, &run.group, GUARD);
    let report = wait_clean(&run.topics, &run.group, GUARD);
    assert!(report.compared_with_replay);
    assert_eq!(report.counts.dead_letters, 0, "{}", report.human());
    assert_eq!(report.counts.routed_records as usize, misplaced);
    // Only a producer that spreads tenants over partitions leaves tenants whose order the checker
    // cannot rebuild (their exact comparison is this test's, below).
    let unordered = report.notes.iter().any(|n| n.contains("left out"));
    assert_eq!(unordered, one_event_per_user, "{}", report.human());
    assert_equal_to_replay(&run.topics, &expected);
    // One decision per event, and the routed ones counted as such (committed work only).
    let decided = metric_total(&service, "autoclaim_events_total");
    assert_eq!(decided as usize, run.activity.len(), "decisions");
    let routed = metric_total(&service, "autoclaim_records_routed_total");
    assert_eq!(routed as usize, misplaced, "routed records");
    assert!(
        service.stop().success(),
        "clean exit; log:\n{}",
        service.log_text()
    );
    eprintln!(
        "producers: FIGURES run={name} events={} misplaced={misplaced} assignments={} failures={}",
        run.activity.len(),
        expected.assignments.len(),
        expected.failures.len()
    );
    misplaced
}

#[test]
fn kcat_with_librdkafka_s_default_partitioner() {
    let misplaced = decide_all("prod-crc32", 31, Producer::Kcat(&[]), false);
    assert!(
        misplaced > EVENTS / 2,
        "CRC32 places most tenants elsewhere"
    );
}

#[test]
fn kcat_with_the_java_client_s_murmur2_placement() {
    let misplaced = decide_all(
        "prod-murmur2",
        32,
        Producer::Kcat(&["-X", "topic.partitioner=murmur2_random"]),
        false,
    );
    assert_eq!(
        misplaced, 0,
        "murmur2 is the owners' placement: nothing routed"
    );
}

#[test]
fn kcat_with_an_fnv1a_placement() {
    let misplaced = decide_all(
        "prod-fnv1a",
        33,
        Producer::Kcat(&["-X", "topic.partitioner=fnv1a"]),
        false,
    );
    assert!(misplaced > 0);
}

#[test]
fn round_robin_without_keys() {
    let misplaced = decide_all("prod-round-robin", 34, Producer::RoundRobinWithoutKey, true);
    assert!(misplaced > 0);
}

#[test]
fn keyed_records_on_random_partitions() {
    let misplaced = decide_all("prod-random", 35, Producer::RandomPartition, true);
    assert!(misplaced > 0);
}

#[test]
fn guids_in_any_letter_case_are_one_tenant_and_one_user() {
    let run = prepare("prod-case", 36, false);
    let all: Vec<pb::ReplayRecord> = run.tables.iter().chain(&run.activity).cloned().collect();
    let expected = expected(&all, Duration::from_secs(3600));
    // Every other event names its tenant and users in uppercase, as some Entra exports do. The
    // producer keys every record by the lowercase id, so that a tenant stays on one partition (a
    // key in two cases would spread it over two, and so give its records no order).
    let shouted: Vec<pb::ReplayRecord> = events(&run)
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            if i % 2 == 1 {
                e.tenant_id = e.tenant_id.to_uppercase();
                e.actor_user_id = e.actor_user_id.to_uppercase();
                if let Some(flow) = &mut e.flow {
                    flow.owner_user_id = flow.owner_user_id.to_uppercase();
                }
            }
            e
        })
        .map(|e| activity_records([e]).remove(0))
        .collect();
    assert!(events(&run).any(|e| e.tenant_id != e.tenant_id.to_uppercase()));
    publish(&run.topics, &run.tables, Format::Json);
    let lines: String = kcat_lines(&shouted)
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('\t').unwrap();
            format!("{}\t{value}\n", key.to_lowercase())
        })
        .collect();
    kcat_produce(&run.topics.activity, &lines, &[]);
    let mut service = Service::start(&ServiceOptions {
        topics: &run.topics,
        group: &run.group,
        transactional_id: "prod-case-1",
        delay: "1h",
        extra: vec![],
    });
    wait_processed_by(&mut service, &run.topics, &run.group, GUARD);
    let report = wait_clean(&run.topics, &run.group, GUARD);
    assert_eq!(report.counts.dead_letters, 0, "{}", report.human());
    // The outputs of the lowercase stream, in lowercase.
    assert_equal_to_replay(&run.topics, &expected);
    assert!(
        service.stop().success(),
        "clean exit; log:\n{}",
        service.log_text()
    );
}
