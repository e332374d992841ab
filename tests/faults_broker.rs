//! Fault: the broker is stopped and restarted (same port, same data) in the middle of the stream,
//! while the service is working. The service must recover by itself, without being restarted: at
//! the end it is still the same process, `autoclaim verify` finds nothing wrong and the outputs are
//! exactly `replay`'s.
//!
//! Alone in its test binary: the restart would disturb any test running beside it. Needs the broker
//! script of `scripts/test` (AUTOCLAIM_TEST_KAFKA_SCRIPT, with AUTOCLAIM_KAFKA_RUN naming the run
//! dir of the broker under test); without it the test fails, it never passes silently.
mod kafka_support;

use std::process::Command;
use std::time::{Duration, Instant};

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::{pb, Format};
use kafka_support::*;

const DEFAULT_SEED: u64 = 777;
/// Guards against a hang; not a performance threshold.
const GUARD: Duration = Duration::from_secs(600);

fn seed() -> u64 {
    std::env::var("AUTOCLAIM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// The script, checked to drive the broker under test (not some other run dir's).
fn script_of_the_broker_under_test() -> std::path::PathBuf {
    let script = kafka_script();
    let out = Command::new(&script)
        .arg("env")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let env = String::from_utf8_lossy(&out.stdout);
    let brokers = brokers();
    assert!(
        out.status.success() && env.trim() == format!("KAFKA_BOOTSTRAP={brokers}"),
        "{} env says {:?} (run dir AUTOCLAIM_KAFKA_RUN={:?}), but the broker under test is \
         {brokers}: set AUTOCLAIM_KAFKA_RUN to the run dir of that broker (scripts/test does)",
        script.display(),
        env.trim(),
        std::env::var("AUTOCLAIM_KAFKA_RUN").ok()
    );
    script
}

#[test]
fn the_service_recovers_by_itself_when_the_broker_restarts_mid_stream() {
    let script = script_of_the_broker_under_test();
    let started = Instant::now();
    let seed = seed();
    let topics = unique_topics("broker");
    create_topics(&topics, 3);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 40,
        users_per_tenant: 30,
        seed,
        seats_per_user: 0.3,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(20_000));
    let all: Vec<pb::ReplayRecord> = tables.iter().chain(&activity).cloned().collect();
    let expected = expected(&all, Duration::from_secs(3600));
    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: "broker-1",
        delay: "1h",
        extra: vec![],
    });
    let pid = service.pid().unwrap();

    // The first 8,000 events in chunks while it runs; then 2,000 at once and, while it works on
    // them, the broker goes down and comes back.
    let chunks: Vec<&[pb::ReplayRecord]> = activity.chunks(1000).collect();
    for chunk in &chunks[..8] {
        publish(&topics, chunk, Format::Json);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("part of the stream to be processed", GUARD, || {
        committed_total(&topics, &group) >= 4000
    });
    publish(&topics, &chunks[8..10].concat(), Format::Json);
    let before_restart = committed_total(&topics, &group);
    let restart_began = started.elapsed();
    // `scripts/kafka start` can mistake a broker that has not exec'd java yet for one that died
    // (its pid check races the exec) and then stops it: start again if so. The broker is down
    // longer then, which the service must survive all the same.
    let mut attempts = 1;
    let mut ok = Command::new(&script)
        .arg("restart")
        .status()
        .expect("run the broker script")
        .success();
    while !ok && attempts < 3 {
        attempts += 1;
        ok = Command::new(&script)
            .arg("start")
            .status()
            .expect("run the broker script")
            .success();
    }
    assert!(ok, "{} could not restart the broker", script.display());
    let restarted = started.elapsed();
    assert!(
        service.is_running(),
        "the service exited while the broker was down; log:\n{}",
        service.log_text()
    );

    // The rest of the stream, on the restarted broker.
    for chunk in &chunks[10..] {
        publish(&topics, chunk, Format::Json);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_processed_by(&mut service, &topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    assert_equal_to_replay(&topics, &expected);
    assert!(
        service.is_running() && service.pid() == Some(pid),
        "the same process must still be running; log:\n{}",
        service.log_text()
    );
    let log = service.log_text();
    assert!(
        service.stop().success(),
        "clean exit; log:\n{}",
        service.log_text()
    );
    assert!(!log.contains("panicked"), "log shows a panic:\n{log}");
    eprintln!(
        "broker: FIGURES seed={seed} events={} restart from {:.1}s to {:.1}s ({attempts} attempts) with {before_restart} \
         records committed; aborted_transactions_logged={} connection_warnings={} assignments={} \
         failures={} duplicates=0 lost=0 elapsed={:.1}s",
        activity.len(),
        restart_began.as_secs_f64(),
        restarted.as_secs_f64(),
        log.matches("transaction aborted").count(),
        log.matches("Kafka connection problem").count(),
        report.counts.assignments,
        report.counts.failures,
        started.elapsed().as_secs_f64()
    );
}
