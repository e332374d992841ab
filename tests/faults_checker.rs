//! The checker itself: `autoclaim verify` must find every kind of problem it claims to find. The
//! fault tests rely on it reporting nothing; this test shows that it does report, on outputs
//! written by hand with known faults (no service runs). Needs AUTOCLAIM_TEST_BROKERS.
mod kafka_support;

use std::process::Command;
use std::time::Duration;

use autoclaim::domain::time::Timestamp;
use autoclaim::pipeline::partitioner::tenant_partition;
use autoclaim::wire::convert::to_wire_timestamp;
use autoclaim::wire::{codec, pb, Format};
use kafka_support::*;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_772_438_400_000; // 2026-03-02T08:00:00Z

fn ts(millis: i64) -> Option<pbjson_types::Timestamp> {
    Some(to_wire_timestamp(Timestamp::from_millis(millis)))
}

/// A tenant id whose activity goes to `partition` of 2.
fn tenant_on(partition: i32) -> String {
    (0..)
        .map(|i| format!("tenant-{i}"))
        .find(|t| tenant_partition(t, 2) == partition)
        .unwrap()
}

fn request(id: &str, tenant: &str, user: &str, minute: i64) -> pb::ActivityEvent {
    pb::ActivityEvent {
        schema_version: 1,
        event_id: id.into(),
        tenant_id: tenant.into(),
        occurred_at: ts(T0 + minute * 60_000),
        actor_user_id: user.into(),
        kind: pb::ActivityKind::LicenseRequested as i32,
        source: pb::ActivitySource::Portal as i32,
        requested_product: "power_automate_per_user".into(),
        ..Default::default()
    }
}

fn tables(t0: &str, t1: &str) -> Vec<pb::ReplayRecord> {
    use pb::replay_record::Record;
    let mut out = Vec::new();
    for tenant in [t0, t1] {
        out.push(Record::Settings(pb::TenantSettings {
            tenant_id: tenant.into(),
            autoclaim_enabled: true,
            changed_at: ts(T0 - 5 * HOUR),
            ..Default::default()
        }));
        out.push(Record::Policy(pb::Policy {
            tenant_id: tenant.into(),
            policy_id: "p1".into(),
            name: "Flows".into(),
            product: "power_automate_per_user".into(),
            enabled: true,
            created_at: ts(T0 - 5 * HOUR),
            changed_at: ts(T0 - 5 * HOUR),
            ..Default::default()
        }));
        for user in ["u1", "u2", "u3"] {
            out.push(Record::DirectoryUser(pb::DirectoryUser {
                tenant_id: tenant.into(),
                user_id: user.into(),
                account_enabled: true,
                user_type: pb::directory_user::UserType::Member as i32,
                usage_location: "US".into(),
                as_of: ts(T0 - 5 * HOUR),
                ..Default::default()
            }));
        }
    }
    // One seat in t0; no inventory at all in t1.
    out.push(Record::Inventory(pb::LicenseInventory {
        tenant_id: t0.into(),
        product: "power_automate_per_user".into(),
        purchased_units: 1,
        assigned_units: 0,
        as_of: ts(T0 - 5 * HOUR),
    }));
    out.into_iter()
        .map(|r| pb::ReplayRecord {
            record: Some(r),
            written_at: None,
        })
        .collect()
}

fn json_ct() -> [(&'static str, &'static [u8]); 1] {
    [("content-type", b"application/json")]
}

fn dead_letter(producer: &RawProducer, topics: &Topics, source: (i32, i64), with_reason: bool) {
    let (p, o) = (source.0.to_string(), source.1.to_string());
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("autoclaim.source.topic", topics.activity.as_bytes()),
        ("autoclaim.source.partition", p.as_bytes()),
        ("autoclaim.source.offset", o.as_bytes()),
    ];
    if with_reason {
        headers.push(("autoclaim.error.code", b"json"));
        headers.push(("autoclaim.error.reason", b"invalid JSON: expected value"));
    }
    producer.send(
        &topics.dead_letters,
        Some(0),
        Some(b"k"),
        Some(b"not json"),
        &headers,
    );
}

#[test]
fn the_checker_finds_every_kind_of_problem() {
    let topics = unique_topics("checker");
    create_topics(&topics, 2);
    let (t0, t1) = (tenant_on(0), tenant_on(1));
    // A tenant of partition 1 with no settings (autoclaim off: its events have no outputs), whose
    // records arrive on partition 0 and must be routed.
    let t2 = (0..)
        .map(|i| format!("other-{i}"))
        .find(|t| tenant_partition(t, 2) == 1)
        .unwrap();
    let tables = tables(&t0, &t1);
    publish(&topics, &tables, Format::Json);

    // Activity, partition 0: e1 (u1 gets the one seat), e2 (no seat left), two unreadable
    // records, e3 (no seat). Partition 1: e4, e5 (no inventory: no seat).
    let producer = RawProducer::new();
    let e = |ev: &pb::ActivityEvent| codec::encode(ev, Format::Json);
    let events = [
        request("e1", &t0, "u1", 1),
        request("e2", &t0, "u2", 2),
        request("e3", &t0, "u3", 3),
        request("e4", &t1, "u1", 4),
        request("e5", &t1, "u2", 5),
    ];
    let a = &topics.activity;
    let k0 = Some(t0.as_bytes());
    let k1 = Some(t1.as_bytes());
    producer.send(a, Some(0), k0, Some(&e(&events[0])), &json_ct()); // 0/0
    producer.send(a, Some(0), k0, Some(&e(&events[1])), &json_ct()); // 0/1
    producer.send(a, Some(0), k0, Some(b"not json"), &[]); // 0/2
    producer.send(a, Some(0), k0, Some(b"{\"schemaVersion\":7}"), &[]); // 0/3
    producer.send(a, Some(0), k0, Some(&e(&events[2])), &json_ct()); // 0/4
    producer.send(a, Some(1), k1, Some(&e(&events[3])), &json_ct()); // 1/0
    producer.send(a, Some(1), k1, Some(&e(&events[4])), &json_ct()); // 1/1
    let k2 = Some(t2.as_bytes());
    let e6 = request("e6", &t2, "u1", 6);
    let e7 = request("e7", &t2, "u2", 7);
    producer.send(a, Some(0), k2, Some(&e(&e6)), &json_ct()); // 0/5: misplaced, never routed
    producer.send(a, Some(0), k2, Some(&e(&e7)), &json_ct()); // 0/6: misplaced, routed twice
                                                              // The repartition topic, partition 1 (t2's): two routes of 0/6, one naming 0/0 (a record on
                                                              // its own partition), one naming nothing; the group has decided the first three.
    let r = &topics.repartition;
    let route = |offset: &'static [u8]| -> [(&'static str, &'static [u8]); 3] {
        [
            json_ct()[0],
            ("autoclaim.route.partition", b"0"),
            ("autoclaim.route.offset", offset),
        ]
    };
    producer.send(r, Some(1), k2, Some(&e(&e7)), &route(b"6")); // 1/0
    producer.send(r, Some(1), k2, Some(&e(&e7)), &route(b"6")); // 1/1: a duplicate
    producer.send(r, Some(1), k2, Some(&e(&e7)), &route(b"0")); // 1/2: 0/0 needed no route
    producer.send(r, Some(1), k2, Some(&e(&e7)), &json_ct()); // 1/3: no source, not decided
    producer.flush();

    // What replay gives, then outputs with known faults.
    let mut records = tables.clone();
    records.extend(activity_records(events.iter().cloned()));
    let expected = expected(&records, Duration::from_secs(3600));
    assert_eq!(expected.assignments.len(), 1, "only u1 of t0 gets a seat");
    let good = expected.assignments[0].clone();
    let failure_e3 = expected
        .failures
        .iter()
        .find(|f| f.trigger_event_id == "e3")
        .unwrap()
        .clone();
    let mut to_u2 = good.clone();
    to_u2.user_id = "u2".into();
    to_u2.trigger_event_id = "e2".into();
    let mut in_t1 = good.clone();
    in_t1.tenant_id = t1.clone();
    in_t1.trigger_event_id = "e4".into();
    let j = |m: &pb::LicenseAssignment| codec::encode(m, Format::Json);
    let s = &topics.assignments;
    producer.send(s, Some(0), k0, Some(&j(&good)), &json_ct());
    producer.send(s, Some(0), k0, Some(&j(&good)), &json_ct()); // duplicate
    producer.send(s, Some(0), k0, Some(&j(&to_u2)), &json_ct()); // over the one seat
    producer.send(s, Some(0), k1, Some(&j(&in_t1)), &json_ct()); // no inventory, misplaced
    producer.send(s, Some(1), k1, Some(b"\x00garbage"), &json_ct()); // unreadable
    producer.send(
        &topics.failures,
        Some(0),
        k0,
        Some(&codec::encode(&failure_e3, Format::Json)),
        &json_ct(),
    );
    // Failures of e2 and e4 are missing (e5 is not processed: its failure may come later).
    dead_letter(&producer, &topics, (0, 2), true);
    dead_letter(&producer, &topics, (0, 2), true); // duplicate
    dead_letter(&producer, &topics, (0, 0), true); // a valid record
    dead_letter(&producer, &topics, (0, 999), true); // no such record
    dead_letter(&producer, &topics, (1, 998), false); // no such record, no reason
    producer.flush(); // 0/3 has no dead letter

    // The group has processed partition 0 and the first record of partition 1.
    let group = format!("g-{}", topics.activity);
    let mut config = autoclaim::pipeline::clients::table_reader(&kafka());
    config.set("group.id", &group);
    let consumer: BaseConsumer = config.create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topics.activity, 0, Offset::Offset(7))
        .unwrap();
    offsets
        .add_partition_offset(&topics.repartition, 1, Offset::Offset(3))
        .unwrap();
    offsets
        .add_partition_offset(&topics.activity, 1, Offset::Offset(1))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
    drop(consumer);

    let report = verify(&topics, &group);
    let expected_counts = [
        ("duplicate_assignment", 1),
        ("over_assignment", 2),
        ("misplaced_assignment", 1),
        ("unreadable_output", 1),
        ("unexpected_output", 3),
        ("missing_output", 2),
        ("unprocessed_records", 2),
        ("missing_route", 1),
        ("duplicate_route", 1),
        ("unmatched_route", 2),
        ("missing_dead_letter", 1),
        ("duplicate_dead_letter", 1),
        ("valid_record_dead_lettered", 1),
        ("unmatched_dead_letter", 2),
        ("dead_letter_without_reason", 1),
    ];
    let human = report.human();
    for (kind, n) in expected_counts {
        assert_eq!(report.count(kind), n, "{kind}; report:\n{human}");
    }
    assert_eq!(
        report.problems.len(),
        expected_counts.len(),
        "no other kind of problem; report:\n{human}"
    );
    assert!(!report.clean);
    assert_eq!(report.counts.activity_records, 9);
    assert_eq!(report.counts.unreadable_records, 2);
    assert_eq!(report.counts.processed_records, 8);
    assert_eq!(report.counts.routed_records, 4);
    assert_eq!(report.counts.unprocessed_routed_records, 1);
    assert_eq!(report.counts.expected_assignments, Some(1));
    assert_eq!(report.counts.expected_failures, Some(3));

    // Without the replay comparison, what needs no replay is still found.
    let mut args = verify_args(&topics, &group, false);
    args.allow_lag = true;
    let without = autoclaim::verify::verify(&args).unwrap();
    assert_eq!(without.count("missing_output"), 0);
    assert_eq!(without.count("unexpected_output"), 0);
    assert_eq!(without.count("unprocessed_records"), 0, "--allow-lag");
    assert!(without
        .notes
        .iter()
        .any(|n| n.contains("not processed yet")));
    assert_eq!(without.count("duplicate_assignment"), 1);
    assert_eq!(without.count("over_assignment"), 2);

    // The command: exit status 1, the same findings as JSON and for people.
    let run = |json: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_autoclaim"));
        command
            .args(["verify", "--compare-replay", "--brokers", &brokers()])
            .args(["--group-id", &group, "--propagation-delay", "1h"])
            .args(topics.command_line_args());
        if json {
            command.arg("--json");
        }
        command.output().expect("run autoclaim verify")
    };
    let out = run(true);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit status 1 on a problem; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(json["clean"], Value::Bool(false));
    let kinds: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    for (kind, _) in expected_counts {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let out = run(false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PROBLEMS") && text.contains("duplicate_assignment (1)"),
        "{text}"
    );
}
