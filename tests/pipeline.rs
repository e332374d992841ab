//! The exactly-once pipeline against a real Kafka broker: `run` gives exactly what `replay` gives for
//! the same input, through restarts, with two instances, and with bad records in the stream.
//! Needs AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod kafka_support;

use std::time::Duration;

use autoclaim::domain::time::Timestamp;
use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::convert::to_wire_timestamp;
use autoclaim::wire::{pb, Format};
use kafka_support::*;

const DELAY: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(120);

fn scenario(
    seed: u64,
    tenants: usize,
    users: usize,
    events: usize,
) -> (Vec<pb::ReplayRecord>, Vec<pb::ReplayRecord>) {
    let scenario = Scenario::new(ScenarioConfig {
        tenants,
        users_per_tenant: users,
        seed,
        ..ScenarioConfig::default()
    });
    (
        scenario.tables(),
        activity_records(scenario.activity(events)),
    )
}

fn all(tables: &[pb::ReplayRecord], activity: &[pb::ReplayRecord]) -> Vec<pb::ReplayRecord> {
    tables.iter().chain(activity).cloned().collect()
}

/// Waits until the committed outputs reach the expected counts, then checks they are exactly the
/// expected ones (a duplicate or a stray output fails the comparison).
fn assert_outputs(topics: &kafka_support::Topics, expected: &Expected) {
    wait_until("all outputs to be committed", WAIT, || {
        read_committed(&topics.assignments).len() >= expected.assignments.len()
            && read_committed(&topics.failures).len() >= expected.failures.len()
    });
    let got = assignments(topics);
    assert_eq!(got.len(), expected.assignments.len(), "assignment count");
    assert_eq!(got, expected.assignments, "assignments differ from replay");
    assert_eq!(
        failures(topics),
        expected.failures,
        "failures differ from replay"
    );
    // Claim changes and notices too: through restarts, what a restored instance knows of the
    // waiting claims and of the notices already sent gives the same records, none twice.
    let claims = |records: Vec<pb::LicenseClaim>| -> Vec<String> {
        let mut out: Vec<String> = records
            .into_iter()
            .map(|c| serde_json::to_string(&c).unwrap())
            .collect();
        out.sort();
        out
    };
    let replayed = |f: fn(&pb::Decision) -> Vec<String>| -> Vec<String> {
        let mut out: Vec<String> = expected.decisions.iter().flat_map(f).collect();
        out.sort();
        out
    };
    assert_eq!(
        claims(decoded(&topics.claims)),
        replayed(|d| d
            .claims
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect()),
        "claim changes differ from replay"
    );
    let notices: Vec<pb::AdminNotice> = decoded(&topics.notices);
    let mut notices: Vec<String> = notices
        .iter()
        .map(|n| serde_json::to_string(n).unwrap())
        .collect();
    notices.sort();
    assert_eq!(
        notices,
        replayed(|d| d
            .notices
            .iter()
            .map(|n| serde_json::to_string(n).unwrap())
            .collect()),
        "notices differ from replay"
    );
}

/// Every committed record of `topic`, decoded.
fn decoded<M: prost::Message + serde::de::DeserializeOwned + Default>(topic: &str) -> Vec<M> {
    read_committed(topic)
        .iter()
        .map(|r| autoclaim::wire::codec::decode(r.value.as_deref().unwrap(), format_of(r)).unwrap())
        .collect()
}

#[test]
fn run_gives_the_same_outputs_as_replay() {
    let topics = unique_topics("same");
    create_topics(&topics, 3);
    let (tables, activity) = scenario(11, 12, 40, 3000);
    let expected = expected(&all(&tables, &activity), DELAY);
    assert!(
        expected.assignments.len() > 50,
        "the scenario should assign: {}",
        expected.assignments.len()
    );
    assert!(
        !expected.failures.is_empty(),
        "the scenario should have scarce seats"
    );
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        extra: vec!["--output-format".into(), "protobuf".into()],
        ..ServiceOptions::hour_delay(&topics, &group, "same-1")
    });
    // Half the activity as protobuf, half as JSON: one schema, two encodings.
    let (first, second) = activity.split_at(activity.len() / 2);
    publish(&topics, first, Format::Protobuf);
    publish(&topics, second, Format::Json);
    assert_outputs(&topics, &expected);
    assert!(
        service.stop().success(),
        "clean exit; log: {}",
        service.log_text()
    );
    // Assignments go to the partition number of the activity they came from.
    for read in read_committed(&topics.assignments) {
        let tenant = String::from_utf8(read.key.unwrap()).unwrap();
        assert_eq!(
            read.partition,
            autoclaim::pipeline::partitioner::tenant_partition(&tenant, 3)
        );
        assert_eq!(
            read.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
    }
}

#[test]
fn a_restart_part_way_gives_no_duplicate_and_no_gap() {
    let topics = unique_topics("restart");
    create_topics(&topics, 3);
    let (tables, activity) = scenario(12, 10, 40, 8000);
    let expected = expected(&all(&tables, &activity), DELAY);
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let small_batches = vec!["--batch-max-records".to_string(), "50".to_string()];

    // First a graceful stop part-way, then a SIGKILL part-way, then run to the end.
    let mut service = Service::start(&ServiceOptions {
        extra: small_batches.clone(),
        ..ServiceOptions::hour_delay(&topics, &group, "restart-1")
    });
    // The stream starts once the service is ready and arrives over about eight seconds, so the
    // stop and the kill below land part-way however long the start took.
    let addr = service.http_addr();
    wait_until("readiness", WAIT, || http_get(addr, "/readyz").0 == 200);
    let producer = {
        let (topics, activity) = (topics.clone(), activity.clone());
        std::thread::spawn(move || {
            for chunk in activity.chunks(200) {
                publish(&topics, chunk, Format::Json);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    wait_until("some outputs", WAIT, || {
        !read_committed(&topics.assignments).is_empty()
    });
    assert!(
        service.stop().success(),
        "clean exit; log: {}",
        service.log_text()
    );
    assert_threads(&service, TEST_PROCESSING_THREADS);
    let after_stop = read_committed(&topics.assignments).len();
    assert!(
        after_stop < expected.assignments.len(),
        "stopped too late to test a restart"
    );

    // This incarnation decides on one thread (the default), the others on the tests' two: how many
    // an instance has is its own, and changing it across a restart keeps every output once.
    let one_thread = ["--processing-threads".to_string(), "1".to_string()];
    let mut service = Service::start(&ServiceOptions {
        extra: [small_batches.clone(), one_thread.to_vec()].concat(),
        ..ServiceOptions::hour_delay(&topics, &group, "restart-1")
    });
    wait_until("more outputs", WAIT, || {
        read_committed(&topics.assignments).len() > after_stop
    });
    assert_threads(&service, "1");
    service.kill();

    let mut service = Service::start(&ServiceOptions {
        extra: small_batches,
        ..ServiceOptions::hour_delay(&topics, &group, "restart-1")
    });
    producer.join().unwrap();
    assert_outputs(&topics, &expected);
    assert!(service.stop().success());
}

/// The service started with the processing threads the test meant (the loop logs them at start).
fn assert_threads(service: &Service, threads: &str) {
    let log = service.log_text();
    let logged = log
        .lines()
        .find_map(|line| line.split("processing_threads=").nth(1))
        .and_then(|rest| rest.split_whitespace().next());
    assert_eq!(logged, Some(threads), "processing threads; log: {log}");
}

#[test]
fn two_instances_share_the_partitions_and_give_the_same_outputs() {
    let topics = unique_topics("two");
    create_topics(&topics, 4);
    let (tables, activity) = scenario(13, 16, 30, 4000);
    let expected = expected(&all(&tables, &activity), DELAY);
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut a = Service::start(&ServiceOptions::hour_delay(&topics, &group, "two-a"));
    let mut b = Service::start(&ServiceOptions::hour_delay(&topics, &group, "two-b"));
    std::thread::sleep(Duration::from_secs(8)); // let both join before the stream starts
    publish(&topics, &activity, Format::Json);
    assert_outputs(&topics, &expected);
    assert!(a.stop().success());
    assert!(b.stop().success());
    for (name, service) in [("a", &a), ("b", &b)] {
        let log = service.log_text();
        let consumed: u64 = log
            .rsplit("consumed: ")
            .next()
            .and_then(|s| s.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            consumed > 0,
            "instance {name} processed nothing; log:\n{log}"
        );
    }
}

#[test]
fn bad_records_are_dead_lettered_and_do_not_stop_the_stream() {
    let topics = unique_topics("dlq");
    create_topics(&topics, 2);
    let (tables, activity) = scenario(14, 6, 30, 600);
    let expected = expected(&all(&tables, &activity), DELAY);
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions::hour_delay(&topics, &group, "dlq-1"));

    let publisher =
        autoclaim::pipeline::publish::Publisher::new(&kafka(), &topics, Format::Json).unwrap();
    let tenant = Scenario::new(ScenarioConfig {
        tenants: 6,
        users_per_tenant: 30,
        seed: 14,
        ..Default::default()
    })
    .tenant_ids()
    .next()
    .unwrap()
    .to_owned();
    let bad: Vec<(&[u8], Option<&str>, &str)> = vec![
        (b"not json at all", None, "json"),
        (b"\x08\x96\x01\xff\xff", Some("application/x-protobuf"), "protobuf"),
        (br#"{"eventId":"x","tenantId":"t"}"#, Some("text/plain"), "content_type"),
        (br#"{"schemaVersion":9,"eventId":"x"}"#, None, "schema_version"),
        (br#"{"eventId":"x","occurredAt":"2026-03-02T10:00:00Z","actorUserId":"u","kind":"GO_PREMIUM_SELECTED","source":"DESKTOP"}"#, None, "invalid_field"),
    ];
    let (first, second) = activity.split_at(activity.len() / 2);
    for r in first {
        publisher.send(r).unwrap();
    }
    for (value, content_type, _) in &bad {
        publisher
            .send_bytes(
                &topics.activity,
                Some(tenant.as_bytes()),
                value,
                *content_type,
            )
            .unwrap();
    }
    for r in second {
        publisher.send(r).unwrap();
    }
    publisher.flush(Duration::from_secs(30)).unwrap();

    assert_outputs(&topics, &expected);
    wait_until("dead letters", WAIT, || {
        read_committed(&topics.dead_letters).len() >= bad.len()
    });
    let dead = read_committed(&topics.dead_letters);
    assert_eq!(dead.len(), bad.len());
    for (read, (value, _, code)) in dead.iter().zip(&bad) {
        assert_eq!(read.value.as_deref(), Some(*value), "original bytes kept");
        assert_eq!(
            read.key.as_deref(),
            Some(tenant.as_bytes()),
            "original key kept"
        );
        assert_eq!(read.headers["autoclaim.error.code"], *code);
        assert!(!read.headers["autoclaim.error.reason"].is_empty());
        assert_eq!(read.headers["autoclaim.source.topic"], topics.activity);
        assert!(read.headers["autoclaim.source.offset"]
            .parse::<i64>()
            .is_ok());
    }
    assert!(service.stop().success());
}

fn ts(millis: i64) -> Option<pbjson_types::Timestamp> {
    Some(to_wire_timestamp(Timestamp::from_millis(millis)))
}

#[test]
fn a_policy_has_no_effect_before_its_propagation_delay() {
    let topics = unique_topics("delay");
    create_topics(&topics, 1);
    const HOUR: i64 = 3_600_000;
    let t0 = 1_772_438_400_000; // 2026-03-02T08:00:00Z
    let tenant = "tenant-delay";
    use pb::replay_record::Record;
    let mut tables = vec![
        Record::Settings(pb::TenantSettings {
            tenant_id: tenant.into(),
            autoclaim_enabled: true,
            changed_at: ts(t0 - 5 * HOUR),
            ..Default::default()
        }),
        Record::Inventory(pb::LicenseInventory {
            tenant_id: tenant.into(),
            product: "power_automate_per_user".into(),
            purchased_units: 10,
            assigned_units: 0,
            as_of: ts(t0 - 5 * HOUR),
        }),
        Record::Policy(pb::Policy {
            tenant_id: tenant.into(),
            policy_id: "p1".into(),
            name: "Flows".into(),
            product: "power_automate_per_user".into(),
            enabled: true,
            created_at: ts(t0),
            changed_at: ts(t0),
            ..Default::default()
        }),
    ];
    for user in ["early", "late"] {
        tables.push(Record::DirectoryUser(pb::DirectoryUser {
            tenant_id: tenant.into(),
            user_id: user.into(),
            account_enabled: true,
            user_type: pb::directory_user::UserType::Member as i32,
            usage_location: "US".into(),
            as_of: ts(t0 - 5 * HOUR),
            ..Default::default()
        }));
    }
    let tables: Vec<pb::ReplayRecord> = tables
        .into_iter()
        .map(|r| pb::ReplayRecord {
            record: Some(r),
            written_at: None,
        })
        .collect();
    let activity = vec![
        stamped_request(tenant, "before", "early", t0 + HOUR - 1, None),
        stamped_request(tenant, "after", "late", t0 + HOUR, None),
    ];
    publish(&topics, &tables, Format::Json);
    publish(&topics, &activity, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions::hour_delay(&topics, &group, "delay-1"));
    wait_until("the assignment", WAIT, || {
        !read_committed(&topics.assignments).is_empty()
    });
    // Both events are committed once the service has passed the second; give it a moment more to
    // show that nothing else appears.
    std::thread::sleep(Duration::from_secs(2));
    let got = assignments(&topics);
    assert_eq!(
        got.len(),
        1,
        "only the event after the delay is assigned: {got:?}"
    );
    assert_eq!(got[0].user_id, "late");
    assert_eq!(got[0].trigger_event_id, "after");
    assert!(service.stop().success());
}

/// Milliseconds in a day.
const DAY: i64 = 24 * 3_600_000;

/// A licence request of `user` in `tenant`, occurred at `at`, as written to Kafka at `written_at`
/// (None: the producer stamps it when it sends).
fn stamped_request(
    tenant: &str,
    id: &str,
    user: &str,
    at: i64,
    written_at: Option<i64>,
) -> pb::ReplayRecord {
    pb::ReplayRecord {
        record: Some(pb::replay_record::Record::Activity(pb::ActivityEvent {
            schema_version: 1,
            event_id: id.into(),
            tenant_id: tenant.into(),
            occurred_at: ts(at),
            actor_user_id: user.into(),
            kind: pb::ActivityKind::LicenseRequested as i32,
            source: pb::ActivitySource::Portal as i32,
            requested_product: "power_automate_per_user".into(),
            ..Default::default()
        })),
        written_at: written_at.and_then(ts),
    }
}

/// Autoclaim on, a policy in force and `seats` per-user seats for `tenant`, and members `users`.
fn tenant_tables(tenant: &str, since: i64, seats: u64, users: &[&str]) -> Vec<pb::ReplayRecord> {
    use pb::replay_record::Record;
    let mut tables = vec![
        Record::Settings(pb::TenantSettings {
            tenant_id: tenant.into(),
            autoclaim_enabled: true,
            changed_at: ts(since),
            ..Default::default()
        }),
        Record::Inventory(pb::LicenseInventory {
            tenant_id: tenant.into(),
            product: "power_automate_per_user".into(),
            purchased_units: seats,
            assigned_units: 0,
            as_of: ts(since),
        }),
        Record::Policy(pb::Policy {
            tenant_id: tenant.into(),
            policy_id: "p1".into(),
            name: "Flows".into(),
            product: "power_automate_per_user".into(),
            enabled: true,
            created_at: ts(since),
            changed_at: ts(since),
            ..Default::default()
        }),
    ];
    for user in users {
        tables.push(Record::DirectoryUser(pb::DirectoryUser {
            tenant_id: tenant.into(),
            user_id: (*user).into(),
            account_enabled: true,
            user_type: pb::directory_user::UserType::Member as i32,
            usage_location: "US".into(),
            as_of: ts(since),
            ..Default::default()
        }));
    }
    tables
        .into_iter()
        .map(|r| pb::ReplayRecord {
            record: Some(r),
            written_at: None,
        })
        .collect()
}

#[test]
fn an_event_a_year_ahead_of_its_kafka_timestamp_is_dead_lettered_not_decided_nor_routed() {
    let topics = unique_topics("skew");
    create_topics(&topics, 2);
    // Kafka timestamps of now (brokers refuse ones far from their clock); events from there on.
    let now = Timestamp::now().as_millis();
    let since = now - 5 * 3_600_000;
    // Tenant "direct" on its own partition, "routed" always on the other one.
    let direct = "tenant-skew-direct";
    let routed = "tenant-skew-routed";
    let mut tables = tenant_tables(direct, since, 1, &["ahead", "on-time", "late"]);
    tables.extend(tenant_tables(routed, since, 5, &["ahead", "on-time"]));
    let direct_activity = vec![
        // A year ahead of its write time: it would take the one seat, under the policies of then.
        stamped_request(direct, "d-ahead", "ahead", now + 365 * DAY, Some(now)),
        // Within the skew (4 minutes): decided by its own time, and gets the seat.
        stamped_request(direct, "d-on-time", "on-time", now + 4 * 60_000, Some(now)),
        // Late, and stamped by the producer when sent: not bounded; no seat left.
        stamped_request(direct, "d-late", "late", now - 3_600_000, None),
    ];
    let routed_activity = vec![
        stamped_request(routed, "r-ahead", "ahead", now + 365 * DAY, Some(now)),
        stamped_request(routed, "r-on-time", "on-time", now - 60_000, Some(now)),
    ];
    let all_records: Vec<pb::ReplayRecord> = tables
        .iter()
        .chain(&direct_activity)
        .chain(&routed_activity)
        .cloned()
        .collect();
    // Replay sees the same write times (ReplayRecord.writtenAt) and refuses the same events.
    let expected = expected(&all_records, DELAY);
    let decided: Vec<&str> = expected
        .decisions
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    assert_eq!(decided, ["d-on-time", "d-late", "r-on-time"]);
    assert_eq!(expected.assignments.len(), 2, "d-on-time and r-on-time");
    assert_eq!(expected.failures.len(), 1, "d-late: no seat left");

    publish(&topics, &tables, Format::Json);
    publish(&topics, &direct_activity, Format::Json);
    publish_misplaced(&topics, &routed_activity, Format::Protobuf);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions::hour_delay(&topics, &group, "skew-1"));
    assert_outputs(&topics, &expected);
    wait_processed_by(&mut service, &topics, &group, WAIT);

    let dead = read_committed(&topics.dead_letters);
    assert_eq!(dead.len(), 2, "the two events a year ahead, once each");
    let mut dead_events = Vec::new();
    for read in &dead {
        assert_eq!(read.headers["autoclaim.error.code"], "event_time_in_future");
        assert_eq!(
            read.headers["autoclaim.source.topic"], topics.activity,
            "refused where it arrived"
        );
        let reason = &read.headers["autoclaim.error.reason"];
        let written = Timestamp::from_millis(now).to_string();
        let occurred = Timestamp::from_millis(now + 365 * DAY).to_string();
        assert!(
            reason.contains(&written) && reason.contains(&occurred) && reason.contains("5m"),
            "{reason}"
        );
        let tenant = String::from_utf8(read.key.clone().unwrap()).unwrap();
        dead_events.push(tenant);
    }
    dead_events.sort();
    assert_eq!(dead_events, [direct, routed]);
    // Only the routed tenant's readable event went through the repartition topic.
    let reroutes = read_committed(&topics.repartition);
    assert_eq!(reroutes.len(), 1, "the refused event is not routed");

    // The dead letters are counted like any other code (published just after their commit).
    let addr = service.http_addr();
    let refused = || {
        let metrics = http_get(addr, "/metrics").1;
        let label = r#"reason="event_time_in_future""#;
        metric_with_labels(&metrics, autoclaim::telemetry::DEAD_LETTERS, &[label])
    };
    wait_until("the dead letters to be counted", WAIT, || refused() >= 2.0);
    assert_eq!(refused(), 2.0);
    assert!(service.stop().success(), "log: {}", service.log_text());

    // verify applies the same bound to what it reads: both dead letters expected, outputs replay's.
    let report = verify(&topics, &group);
    assert!(report.clean, "{}", report.human());
    assert!(report.compared_with_replay, "{}", report.human());
    assert_eq!(report.counts.unreadable_records, 2, "{}", report.human());
    assert_eq!(report.counts.dead_letters, 2, "{}", report.human());
    assert_eq!(report.counts.expected_assignments, Some(2));
    assert_eq!(report.counts.expected_failures, Some(1));
    // A checker that allowed a year of skew would find the run's dead letters wrong.
    let mut lax = verify_args(&topics, &group, true);
    lax.event_time.max_skew = Duration::from_secs(366 * 24 * 3600);
    let report = autoclaim::verify::verify(&lax).expect("autoclaim verify");
    assert_eq!(
        report.count("valid_record_dead_lettered"),
        2,
        "{}",
        report.human()
    );
}
