//! Faults of a replicated cluster: three KRaft nodes on loopback (`scripts/kafka cluster-start`:
//! replication 3, min ISR 2, internal topics replicated), and a broker lost in the middle of the
//! stream. The service must ride each out as the same process, and end with nothing lost,
//! duplicated or over-assigned: `autoclaim verify --compare-replay` finds nothing and the outputs
//! are exactly `replay`'s. How long committed progress stood still around each fault is printed
//! (FIGURES lines) for docs/reliability.md; nothing here times anything against a threshold.
//!
//! The tests take turns (one cluster, and each kills its brokers), and point the shared test
//! helpers at the cluster. Needs the broker script of `scripts/test` (AUTOCLAIM_TEST_KAFKA_SCRIPT);
//! without it they fail, never pass silently.
mod kafka_support;

use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::{pb, Format};
use kafka_support::*;

/// Guards against a hang; not a performance threshold.
const GUARD: Duration = Duration::from_secs(300);
const PARTITIONS: i32 = 3;
const EVENTS: usize = 12_000;

/// The script's answer to `args`, failing the test if it fails.
fn script(args: &[&str]) -> String {
    let out = Command::new(kafka_script())
        .args(args)
        .output()
        .expect("run the broker script");
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts the cluster once for this binary, points the helpers at it, and hands out the turn.
fn cluster() -> MutexGuard<'static, ()> {
    static STARTED: OnceLock<String> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    STARTED.get_or_init(|| {
        let line = script(&["cluster-start"]);
        let bootstrap = line
            .strip_prefix("KAFKA_CLUSTER_BOOTSTRAP=")
            .unwrap_or_else(|| panic!("cluster-start printed {line:?}"))
            .to_owned();
        // Every helper (publish, read back, verify, the services) goes to the cluster.
        std::env::set_var("AUTOCLAIM_TEST_BROKERS", &bootstrap);
        bootstrap
    });
    // A test that failed half-way may have left a node down.
    for node in ["1", "2", "3"] {
        script(&["node-start", node]);
    }
    turn
}

struct Run {
    topics: Topics,
    group: String,
    expected: Expected,
    chunks: Vec<Vec<pb::ReplayRecord>>,
    started: Instant,
}

fn prepare(name: &str, seed: u64) -> Run {
    let topics = unique_topics(name);
    create_topics(&topics, PARTITIONS);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 30,
        users_per_tenant: 25,
        seed,
        seats_per_user: 0.3,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(EVENTS));
    let all: Vec<pb::ReplayRecord> = tables.iter().chain(&activity).cloned().collect();
    publish(&topics, &tables, Format::Json);
    Run {
        group: format!("g-{}", topics.activity),
        expected: expected(&all, Duration::from_secs(3600)),
        chunks: activity.chunks(500).map(<[_]>::to_vec).collect(),
        topics,
        started: Instant::now(),
    }
}

fn start(run: &Run, id: &str) -> Service {
    Service::start(&ServiceOptions {
        topics: &run.topics,
        group: &run.group,
        transactional_id: id,
        delay: "1h",
        extra: vec![],
    })
}

/// Publishes chunks `range` with a pause between them, so that the service works meanwhile.
fn feed(run: &Run, range: std::ops::Range<usize>) {
    for chunk in &run.chunks[range] {
        publish(&run.topics, chunk, Format::Json);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long committed progress stood still after `since`: the time until the committed total
/// first passes what it was then (polled every 200 ms). On a hang, the failure shows the logs of
/// `services` and the cluster's view of the group.
fn stall_after(run: &Run, services: &[&Service], since: Instant, committed_then: i64) -> Duration {
    let deadline = since + GUARD;
    while committed_total(&run.topics, &run.group) <= committed_then {
        if Instant::now() >= deadline {
            let logs: Vec<String> = services.iter().map(|s| s.log_text()).collect();
            panic!(
                "no committed progress past {committed_then} within {GUARD:?} of the fault; \
                 service logs:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    since.elapsed()
}

/// The end of every run: all processed, nothing wrong, the services the same processes.
fn finish(
    run: &Run,
    services: &mut [&mut Service],
    pids: &[u32],
    fault: &str,
    stall: Option<Duration>,
) {
    let survivor = services
        .iter_mut()
        .position(|s| s.is_running())
        .expect("a service running");
    wait_processed_by(services[survivor], &run.topics, &run.group, GUARD);
    let report = wait_clean(&run.topics, &run.group, GUARD);
    assert_equal_to_replay(&run.topics, &run.expected);
    for (service, pid) in services.iter_mut().zip(pids) {
        let log = service.log_text();
        assert!(!log.contains("panicked"), "a panic:\n{log}");
        if service.is_running() {
            assert_eq!(service.pid(), Some(*pid), "the same process");
            assert!(
                service.stop().success(),
                "clean exit; log:\n{}",
                service.log_text()
            );
        }
    }
    eprintln!(
        "cluster: FIGURES fault=\"{fault}\" events={EVENTS} committed_progress_stalled={} \
         assignments={} failures={} duplicates=0 lost=0 elapsed={:.1}s",
        stall.map_or("-".to_owned(), |s| format!("{:.1}s", s.as_secs_f64())),
        report.counts.assignments,
        report.counts.failures,
        run.started.elapsed().as_secs_f64()
    );
}

fn wait_for_progress(run: &Run, at_least: i64) {
    wait_until("part of the stream to be processed", GUARD, || {
        committed_total(&run.topics, &run.group) >= at_least
    });
}

fn assert_running(service: &mut Service, during: &str) {
    assert!(
        service.is_running(),
        "the service exited {during}; log:\n{}",
        service.log_text()
    );
}

/// Which node a fault takes down.
enum Target {
    /// The instance's transaction coordinator (often also a partition leader).
    Coordinator,
    /// Any node but the coordinator.
    Other,
}

/// One instance; part of the stream; a node lost by `action` (node-kill or node-stop) while more
/// arrives; the node back; the rest of the stream; nothing wrong at the end.
fn lose_a_broker_mid_stream(name: &str, seed: u64, target: Target, action: &str, fault: &str) {
    let _turn = cluster();
    let run = prepare(name, seed);
    let id = format!("{name}-1");
    let mut service = start(&run, &id);
    let pid = service.pid().unwrap();
    feed(&run, 0..8);
    wait_for_progress(&run, 2000);
    let coordinator = script(&["cluster-txn-coordinator", &id]);
    let node = match target {
        Target::Coordinator => coordinator,
        Target::Other => ["1", "2", "3"]
            .into_iter()
            .find(|n| *n != coordinator)
            .unwrap()
            .to_owned(),
    };
    let before = committed_total(&run.topics, &run.group);
    let lost = Instant::now();
    script(&[action, &node]);
    feed(&run, 8..16);
    let stall = stall_after(&run, &[&service], lost, before);
    assert_running(&mut service, &format!("after {fault}"));
    script(&["node-start", &node]);
    feed(&run, 16..run.chunks.len());
    finish(&run, &mut [&mut service], &[pid], fault, Some(stall));
}

#[test]
fn the_transaction_coordinator_s_broker_sigkilled_mid_stream_and_restarted() {
    lose_a_broker_mid_stream(
        "cl-coordinator",
        101,
        Target::Coordinator,
        "node-kill",
        "transaction coordinator SIGKILLed",
    );
}

#[test]
fn a_broker_stopped_cleanly_mid_stream_and_restarted() {
    lose_a_broker_mid_stream(
        "cl-stop",
        102,
        Target::Other,
        "node-stop",
        "another broker stopped",
    );
}

#[test]
fn the_service_starts_while_a_broker_is_down() {
    let _turn = cluster();
    let run = prepare("cl-start-down", 103);
    script(&["node-kill", "2"]);
    // Long enough for the controller to fence it (broker.session.timeout.ms).
    std::thread::sleep(Duration::from_secs(8));
    let started = Instant::now();
    let mut service = start(&run, "cluster-start-down-1");
    let pid = service.pid().unwrap();
    feed(&run, 0..16);
    let stall = stall_after(&run, &[&service], started, 0);
    assert_running(&mut service, "starting while a broker was down");
    // The checker and the `report` command, too, with the broker still down.
    wait_processed_by(&mut service, &run.topics, &run.group, GUARD);
    wait_clean(&run.topics, &run.group, GUARD);
    let report = Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args([
            "report",
            "--brokers",
            &brokers(),
            "--tenant",
            "any",
            "--days",
            "1",
        ])
        .args(["--assignments-topic", &run.topics.assignments])
        .output()
        .expect("run autoclaim report");
    assert!(
        report.status.success(),
        "report with a broker down: {}",
        String::from_utf8_lossy(&report.stderr)
    );
    script(&["node-start", "2"]);
    feed(&run, 16..run.chunks.len());
    finish(
        &run,
        &mut [&mut service],
        &[pid],
        "started with a broker down",
        Some(stall),
    );
}

#[test]
fn an_instance_sigkilled_while_a_broker_is_down() {
    let _turn = cluster();
    let run = prepare("cl-instance", 104);
    let mut a = start(&run, "cluster-instance-a");
    let mut b = start(&run, "cluster-instance-b");
    let pid_b = b.pid().unwrap();
    feed(&run, 0..8);
    wait_for_progress(&run, 2000);
    let node = script(&["cluster-txn-coordinator", "cluster-instance-b"]);
    script(&["node-kill", &node]);
    feed(&run, 8..12);
    let before = committed_total(&run.topics, &run.group);
    let killed = Instant::now();
    a.kill();
    feed(&run, 12..16);
    // b takes over a's partitions once the group notices (session timeout) and a's open
    // transaction is aborted by the broker (transaction timeout).
    let stall = stall_after(&run, &[&b], killed, before);
    assert_running(&mut b, "after a broker and the other instance were lost");
    script(&["node-start", &node]);
    feed(&run, 16..run.chunks.len());
    finish(
        &run,
        &mut [&mut b],
        &[pid_b],
        "instance SIGKILLed while a broker was down",
        Some(stall),
    );
}

/// Signals every node of the cluster (SIGSTOP freezes a broker without closing its connections:
/// requests to it neither fail nor return).
fn signal_all_nodes(signal: &str) {
    for node in ["1", "2", "3"] {
        let pid = script(&["node-pid", node]);
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

#[test]
fn a_loop_blocked_in_a_kafka_call_turns_health_red_and_exits_for_a_restart() {
    let _turn = cluster();
    let run = prepare("cl-watchdog", 105);
    // A transaction stays open at least 10 s after its first record, so that the cluster can be
    // frozen while one is open: its commit then blocks in librdkafka.
    let mut service = Service::start(&ServiceOptions {
        topics: &run.topics,
        group: &run.group,
        transactional_id: "cluster-watchdog-1",
        delay: "1h",
        extra: [
            "--watchdog-timeout",
            "5s",
            "--batch-min-time",
            "10s",
            "--batch-max-time",
            "30s",
        ]
        .map(str::to_owned)
        .to_vec(),
    });
    let addr = service.http_addr();
    wait_until("the service to be ready", GUARD, || {
        http_get(addr, "/readyz").0 == 200
    });
    feed(&run, 0..4);
    signal_all_nodes("-STOP");
    let mut saw_red = false;
    let deadline = Instant::now() + GUARD;
    while service.is_running() {
        assert!(
            Instant::now() < deadline,
            "the watchdog never ended the process"
        );
        // The process may end between two looks; a refused connection is not a verdict.
        if let Some((status, _)) = try_http_get(addr, "/healthz") {
            saw_red |= status == 503;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal_all_nodes("-CONT");
    let status = service.wait(Duration::from_secs(5));
    let log = service.log_text();
    assert_eq!(
        status.code(),
        Some(2),
        "exit status 2 for a restart; log:\n{log}"
    );
    assert!(saw_red, "/healthz turned red before the exit; log:\n{log}");
    assert!(
        log.contains("processing loop has not come round"),
        "the log says why; log:\n{log}"
    );
    // What an orchestrator does next: the same instance again. Nothing is lost or doubled.
    let mut restarted = start(&run, "cluster-watchdog-1");
    let pid = restarted.pid().unwrap();
    feed(&run, 4..run.chunks.len());
    finish(
        &run,
        &mut [&mut restarted],
        &[pid],
        "loop blocked in a Kafka call (cluster frozen)",
        None,
    );
}
