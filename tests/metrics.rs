//! `/metrics`, `/healthz` and `/readyz` while `run` processes real Kafka traffic: the values move.
//! Needs AUTOCLAIM_TEST_BROKERS (see `scripts/kafka`).
mod kafka_support;

use std::time::Duration;

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::telemetry;
use autoclaim::wire::Format;
use kafka_support::*;

/// The value of a series, summed over its label sets (0 when absent).
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_move_while_run_processes_traffic() {
    let topics = unique_topics("metrics");
    create_topics(&topics, 2);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 8,
        users_per_tenant: 30,
        seed: 21,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(2000));
    let expected = expected(
        &tables.iter().chain(&activity).cloned().collect::<Vec<_>>(),
        Duration::from_secs(3600),
    );
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: "metrics-1",
        delay: "1h",
        extra: vec![],
    });
    let addr = service.http_addr();
    assert_eq!(http_get(addr, "/healthz").0, 200);
    wait_until("readiness", Duration::from_secs(60), || {
        http_get(addr, "/readyz").0 == 200
    });
    let (_, before) = http_get(addr, "/metrics");
    assert_eq!(total(&before, telemetry::EVENTS), 0.0);

    publish(&topics, &activity, Format::Json);
    wait_until(
        "every event to be counted",
        Duration::from_secs(120),
        || total(&http_get(addr, "/metrics").1, telemetry::EVENTS) >= activity.len() as f64,
    );
    let (status, after) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    // Counters count committed decisions, exactly once each.
    assert_eq!(total(&after, telemetry::EVENTS), activity.len() as f64);
    assert_eq!(
        total(&after, telemetry::ASSIGNMENTS),
        expected.assignments.len() as f64
    );
    assert_eq!(
        total(&after, telemetry::FAILURES),
        expected.failures.len() as f64
    );
    // One decision in 16 is timed (the histogram is a sample; its quantiles are what it is for).
    let timed = total(&after, &format!("{}_count", telemetry::DECISION_SECONDS));
    assert!(
        timed >= (activity.len() / 16) as f64 && timed > 0.0,
        "decision timings: {timed} for {} events",
        activity.len()
    );
    // Its buckets are its own (sub-microsecond to 10 ms), not the latency buckets.
    let bucket_prefix = format!("{}_bucket{{", telemetry::DECISION_SECONDS);
    let buckets = after
        .lines()
        .filter(|l| l.starts_with(&bucket_prefix))
        .count();
    assert_eq!(buckets, telemetry::DECISION_BUCKETS.len() + 1, "{after}");
    assert!(
        total(
            &after,
            &format!("{}_count", telemetry::EVENT_TO_COMMIT_SECONDS)
        ) >= activity.len() as f64
    );
    assert!(after.contains(&format!(
        "{}{{result=\"committed\"}}",
        telemetry::TRANSACTIONS
    )));
    assert_eq!(total(&after, telemetry::PARTITIONS_OWNED), 2.0);
    // The feed reads settings, policies and inventory whole; the directory copy copies every
    // directory row, which restores then read back (not the feed).
    let is_directory = |r: &&autoclaim::wire::pb::ReplayRecord| {
        matches!(
            r.record,
            Some(autoclaim::wire::pb::replay_record::Record::DirectoryUser(_))
        )
    };
    let directory = tables.iter().filter(is_directory).count();
    let global = tables.len() - directory;
    let table_records = |table: &str, result: &str| {
        metric_with_labels(
            &after,
            telemetry::TABLE_RECORDS,
            &[
                &format!("table=\"{table}\""),
                &format!("result=\"{result}\""),
            ],
        )
    };
    let applied: f64 = ["policies", "inventory"]
        .iter()
        .map(|t| table_records(t, "applied"))
        .sum();
    assert_eq!(applied, global as f64);
    assert_eq!(table_records("directory", "copied"), directory as f64);
    assert_eq!(table_records("directory", "applied"), 0.0);
    assert_eq!(
        total(&after, telemetry::TABLE_RECORDS),
        (global + directory) as f64
    );
    assert!(service.stop().success());
}

/// The partitions whose consumer-lag series an instance exports.
fn lag_partitions(metrics: &str) -> Vec<String> {
    let prefix = format!("{}{{partition=\"", telemetry::CONSUMER_LAG);
    let mut partitions: Vec<String> = metrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix(&prefix)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    partitions.sort();
    partitions
}

#[test]
fn an_instance_exports_lag_only_for_the_partitions_it_owns() {
    let topics = unique_topics("lag-series");
    create_topics(&topics, 4);
    let group = format!("g-{}", topics.activity);
    let options = |id| ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: id,
        delay: "1h",
        extra: vec![],
    };
    let mut first = Service::start(&options("lag-1"));
    let first_addr = first.http_addr();
    wait_until(
        "the first instance to export lag for all 4 partitions",
        Duration::from_secs(90),
        || lag_partitions(&http_get(first_addr, "/metrics").1).len() == 4,
    );
    // A second member takes half the partitions: the first stops exporting the ones it lost, so a
    // sum over instances counts each partition once.
    let mut second = Service::start(&options("lag-2"));
    let second_addr = second.http_addr();
    wait_until(
        "the partitions to be shared out",
        Duration::from_secs(120),
        || {
            let a = lag_partitions(&http_get(first_addr, "/metrics").1);
            let b = lag_partitions(&http_get(second_addr, "/metrics").1);
            a.len() == 2 && b.len() == 2
        },
    );
    let a = lag_partitions(&http_get(first_addr, "/metrics").1);
    let b = lag_partitions(&http_get(second_addr, "/metrics").1);
    assert!(
        a.iter().all(|p| !b.contains(p)),
        "both export some partition: {a:?} {b:?}"
    );
    assert!(second.stop().success());
    wait_until(
        "the first instance to take all 4 back",
        Duration::from_secs(120),
        || lag_partitions(&http_get(first_addr, "/metrics").1).len() == 4,
    );
    assert!(first.stop().success());
}

/// Every series of `name`: (its labels as written, its value).
fn series(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let labels = match key.strip_prefix(name)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the one series of `name` whose labels include every `label="value"` given.
fn value(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    series(metrics, name)
        .into_iter()
        .find(|(l, _)| {
            labels
                .iter()
                .all(|want| l.split(',').any(|have| have == *want))
        })
        .map(|(_, v)| v)
}

#[test]
fn operator_metrics_are_exported_with_plausible_values() {
    let topics = unique_topics("operator-metrics");
    create_topics(&topics, 2);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 4,
        users_per_tenant: 20,
        seed: 5,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let directory_rows = tables
        .iter()
        .filter(|r| {
            matches!(
                r.record,
                Some(autoclaim::wire::pb::replay_record::Record::DirectoryUser(_))
            )
        })
        .count();
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: "operator-metrics-1",
        delay: "1h",
        extra: vec![],
    });
    let addr = service.http_addr();
    wait_until("readiness", Duration::from_secs(60), || {
        http_get(addr, "/readyz").0 == 200
    });
    let activity = activity_records(scenario.activity(300));
    publish(&topics, &activity, Format::Json);
    // librdkafka's statistics come every 5 s, readiness every second (the watchdog's beat).
    let metrics = || http_get(addr, "/metrics").1;
    wait_until(
        "the events, the ready gauge and both clients' round trips",
        Duration::from_secs(60),
        || {
            let m = metrics();
            total(&m, telemetry::EVENTS) >= activity.len() as f64
                && value(&m, telemetry::READY, &[]) == Some(1.0)
                && value(&m, telemetry::KAFKA_BROKER_RTT, &["client=\"consumer\""]).is_some()
                && value(&m, telemetry::KAFKA_BROKER_RTT, &["client=\"producer\""]).is_some()
                && total(&m, telemetry::PRODUCER_SENT) > 0.0
        },
    );
    let m = metrics();

    // Process metrics, read from /proc at the scrape.
    let rss = value(&m, telemetry::PROCESS_RESIDENT_MEMORY, &[]).expect("resident memory");
    assert!(rss > 1e6, "resident memory {rss}");
    assert!(value(&m, telemetry::PROCESS_VIRTUAL_MEMORY, &[]).unwrap() >= rss);
    assert!(value(&m, telemetry::PROCESS_CPU, &[]).unwrap() > 0.0);
    let open = value(&m, telemetry::PROCESS_OPEN_FDS, &[]).unwrap();
    assert!(open >= 5.0, "open fds {open}");
    assert!(value(&m, telemetry::PROCESS_MAX_FDS, &[]).unwrap() > open);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&m, telemetry::PROCESS_START_TIME, &[]).unwrap();
    assert!(
        started <= now + 1.0 && started > now - 300.0,
        "started {started}, now {now}"
    );
    assert!(m.contains("# TYPE process_cpu_seconds_total counter"));

    // Build info: the version of this crate.
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        value(&m, telemetry::BUILD_INFO, &[&version]),
        Some(1.0),
        "{:?}",
        series(&m, telemetry::BUILD_INFO)
    );

    // The start-up assignment: one rebalance, both partitions restored, the directory read whole.
    assert!(value(&m, telemetry::REBALANCES, &["kind=\"assigned\""]).unwrap() >= 1.0);
    assert!(total(&m, telemetry::PARTITIONS_RESTORED) >= 2.0);
    assert!(
        value(&m, telemetry::RESTORE_RECORDS, &["source=\"directory\""]).unwrap()
            >= directory_rows as f64
    );
    assert!(value(&m, telemetry::RESTORE_RECORDS, &["source=\"changelog\""]).is_some());

    // librdkafka's statistics: round trips of a local broker are short, not zero-width nonsense.
    for (labels, rtt) in series(&m, telemetry::KAFKA_BROKER_RTT) {
        assert!(rtt > 0.0 && rtt < 5.0, "round trip {rtt} s of {labels}");
        assert!(
            labels.contains("broker=\"") && labels.contains("quantile=\""),
            "{labels}"
        );
    }
    let sent = total(&m, telemetry::PRODUCER_SENT);
    assert!(sent >= 1.0, "messages sent {sent}");
    assert!(value(&m, telemetry::PRODUCER_QUEUE, &[]).is_some());
    assert!(service.stop().success());
}
