//! Shared helpers of the tests that run against a real Kafka broker (started by `scripts/kafka`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoclaim::pipeline::clients;
pub use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::pipeline::topics;

pub mod segment;
use autoclaim::pipeline::publish::Publisher;
use autoclaim::pipeline::records;
use autoclaim::pipeline::topic_reader::{self, OpenTopic, ReadError};
use autoclaim::replay::Replayer;
use autoclaim::wire::{codec, pb, Format};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

/// The broker under test. Integration tests never pass silently without one.
pub fn brokers() -> String {
    std::env::var("AUTOCLAIM_TEST_BROKERS").unwrap_or_else(|_| {
        panic!(
            "AUTOCLAIM_TEST_BROKERS is not set: these tests need a real Kafka broker. \
             Start one with `scripts/kafka start` and export the address it prints \
             (or run `.ci/run`, which does both)."
        )
    })
}

pub fn kafka() -> KafkaArgs {
    KafkaArgs::plaintext(brokers())
}

/// The binary the services run: this build's, or AUTOCLAIM_TEST_BIN's (to run a test binary
/// against a saved build while the tree is rebuilt).
fn service_binary() -> std::path::PathBuf {
    std::env::var_os("AUTOCLAIM_TEST_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_autoclaim").into(), Into::into)
}

/// Topic names unique to one test, so tests can share a broker.
pub fn unique_topics(test: &str) -> Topics {
    let suffix = format!("{test}-{}-{}", std::process::id(), rand_u64());
    Topics {
        activity: format!("activity-{suffix}"),
        directory: format!("directory-{suffix}"),
        inventory: format!("inventory-{suffix}"),
        policies: format!("policies-{suffix}"),
        assignments: format!("assignments-{suffix}"),
        failures: format!("failures-{suffix}"),
        dead_letters: format!("dlq-{suffix}"),
        audit: format!("audit-{suffix}"),
        repartition: format!("repartition-{suffix}"),
        claims: format!("claims-{suffix}"),
        notices: format!("notices-{suffix}"),
        directory_by_partition: format!("directory-by-partition-{suffix}"),
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish() & 0xffff_ffff
}

pub fn create_topics(topics: &Topics, partitions: i32) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(topics::create_missing_topics(
            &kafka(),
            topics,
            partitions,
            Default::default(),
            Duration::from_secs(3600),
            Default::default(),
        ))
        .expect("create topics");
}

pub fn publish(topics: &Topics, records: &[pb::ReplayRecord], format: Format) {
    let publisher = Publisher::new(&kafka(), topics, format).unwrap();
    for r in records {
        publisher.send(r).unwrap();
    }
    publisher.flush(Duration::from_secs(60)).unwrap();
}

/// Like `publish`, but every activity record goes to the partition after its tenant's (as a producer
/// with another partitioner would put it), so that the service routes each one.
pub fn publish_misplaced(topics: &Topics, records: &[pb::ReplayRecord], format: Format) {
    let publisher = Publisher::new(&kafka(), topics, format)
        .unwrap()
        .misplacing_activity()
        .unwrap();
    for r in records {
        publisher.send(r).unwrap();
    }
    publisher.flush(Duration::from_secs(60)).unwrap();
}

pub fn activity_records(
    events: impl IntoIterator<Item = pb::ActivityEvent>,
) -> Vec<pb::ReplayRecord> {
    events
        .into_iter()
        .map(|e| pb::ReplayRecord {
            record: Some(pb::replay_record::Record::Activity(e)),
            written_at: None,
        })
        .collect()
}

/// One committed record read back.
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The headers by name (the last of a name wins).
    pub headers: HashMap<String, String>,
    /// Every header, in order (names may repeat).
    pub header_list: Vec<(String, String)>,
}

impl Read {
    /// How many headers are called `name`, in any letter case.
    pub fn header_count(&self, name: &str) -> usize {
        self.header_list
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    }
}

/// Every committed record of a topic (read_committed, to its end; none if it does not exist).
pub fn read_committed(topic: &str) -> Vec<Read> {
    let config = clients::table_reader(&kafka());
    let mut reader = match OpenTopic::new(&config, topic, Duration::from_secs(10)) {
        Ok(open) => open.read_all(Duration::from_secs(60)),
        Err(ReadError::Missing(_)) => return Vec::new(),
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| panic!("reading {topic}: {e}"));
    let mut out = Vec::new();
    while let Some(m) = reader
        .next_record()
        .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
    {
        out.push(Read {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: records::header_pairs(&m).into_iter().collect(),
            header_list: records::header_pairs(&m),
        });
    }
    out
}

/// The activity topic's partitions and their watermarks (of committed records).
pub fn activity_watermarks(topics: &Topics) -> clients::Watermarks {
    topic_reader::watermarks(
        &clients::table_reader(&kafka()),
        &topics.activity,
        Duration::from_secs(30),
    )
    .expect("activity watermarks")
}

pub fn format_of(read: &Read) -> Format {
    Format::from_content_type(read.headers.get("content-type").map(|s| s.as_bytes())).unwrap()
}

/// Assignments without their wall-clock decision time, sorted: comparable across runs.
pub fn assignments(topics: &Topics) -> Vec<pb::LicenseAssignment> {
    let mut out: Vec<pb::LicenseAssignment> = read_committed(&topics.assignments)
        .iter()
        .map(|r| {
            let mut a: pb::LicenseAssignment =
                codec::decode(r.value.as_deref().unwrap(), format_of(r)).unwrap();
            a.decided_at = None;
            a
        })
        .collect();
    out.sort_by(|a, b| a.trigger_event_id.cmp(&b.trigger_event_id));
    out
}

pub fn failures(topics: &Topics) -> Vec<pb::AutoclaimFailure> {
    let mut out: Vec<pb::AutoclaimFailure> = read_committed(&topics.failures)
        .iter()
        .map(|r| {
            let mut f: pb::AutoclaimFailure =
                codec::decode(r.value.as_deref().unwrap(), format_of(r)).unwrap();
            f.decided_at = None;
            f
        })
        .collect();
    out.sort_by(|a, b| a.trigger_event_id.cmp(&b.trigger_event_id));
    out
}

/// What `replay` says the outputs of these records are.
pub struct Expected {
    pub assignments: Vec<pb::LicenseAssignment>,
    pub failures: Vec<pb::AutoclaimFailure>,
    pub decisions: Vec<pb::Decision>,
}

pub fn expected(records: &[pb::ReplayRecord], delay: Duration) -> Expected {
    let mut replayer = Replayer::new(delay);
    let mut decisions = Vec::new();
    for r in records {
        if let Ok(lines) = replayer.apply(r.clone()) {
            decisions.extend(lines);
        }
    }
    let mut assignments: Vec<_> = decisions
        .iter()
        .filter_map(|d| d.assignment.clone())
        .map(|mut a| {
            a.decided_at = None;
            a
        })
        .collect();
    assignments.sort_by(|a, b| a.trigger_event_id.cmp(&b.trigger_event_id));
    let mut failures: Vec<_> = decisions
        .iter()
        .filter_map(|d| d.failure.clone())
        .map(|mut f| {
            f.decided_at = None;
            f
        })
        .collect();
    failures.sort_by(|a, b| a.trigger_event_id.cmp(&b.trigger_event_id));
    Expected {
        assignments,
        failures,
        decisions,
    }
}

/// Waits until `done` holds, checking every 300 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every service the integration tests start decides on two threads (a test may give
/// `--processing-threads` itself), so that the fault suite runs the multi-threaded loop.
pub const TEST_PROCESSING_THREADS: &str = "2";

/// A running `autoclaim run` process, killed when dropped.
pub struct Service {
    child: Option<Child>,
    pub log: PathBuf,
}

pub struct ServiceOptions<'a> {
    pub topics: &'a Topics,
    pub group: &'a str,
    pub transactional_id: &'a str,
    pub delay: &'a str,
    pub extra: Vec<String>,
}

impl<'a> ServiceOptions<'a> {
    /// `run` on these topics, in this group, with this transactional id, a propagation delay of an
    /// hour (policies of the seeded workloads are in force long before) and nothing else.
    pub fn hour_delay(topics: &'a Topics, group: &'a str, id: &'a str) -> Self {
        ServiceOptions {
            topics,
            group,
            transactional_id: id,
            delay: "1h",
            extra: vec![],
        }
    }
}

impl Service {
    pub fn start(options: &ServiceOptions<'_>) -> Service {
        Service::start_connected(options, &["--brokers".to_owned(), brokers()], &[])
    }

    /// As `start`, with the Kafka connection given by `connection` (flags) and `env` (variables).
    pub fn start_connected(
        options: &ServiceOptions<'_>,
        connection: &[String],
        env: &[(&str, &str)],
    ) -> Service {
        let log = std::env::temp_dir().join(format!(
            "autoclaim-{}-{}.log",
            options.transactional_id,
            rand_u64()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let t = options.topics;
        let child = Command::new(service_binary())
            .arg("run")
            .args(connection)
            .args(["--group-id", options.group])
            .args(["--transactional-id", options.transactional_id])
            .args(["--propagation-delay", options.delay])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(t.command_line_args())
            .args(&options.extra)
            .env("AUTOCLAIM_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("AUTOCLAIM_PROCESSING_THREADS", TEST_PROCESSING_THREADS)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start autoclaim run");
        Service {
            child: Some(child),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL: no chance to commit or abort anything.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        self.wait(Duration::from_secs(30));
    }

    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "autoclaim did not exit; log: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------- fault tests (tests/faults_*.rs,
// tests/hostile_kafka.rs): the checker, progress, process figures and raw records.

impl Service {
    /// The process id of the running service.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// `autoclaim verify`'s options for a test's topics and group (propagation delay 1h, as the tests
/// start the service with).
pub fn verify_args(
    topics: &Topics,
    group: &str,
    compare_replay: bool,
) -> autoclaim::verify::VerifyArgs {
    let mut args = autoclaim::verify::VerifyArgs::new(kafka(), topics.clone(), group);
    args.propagation_delay = Duration::from_secs(3600);
    args.compare_replay = compare_replay;
    args
}

/// The committed assignments and failures are exactly replay's.
pub fn assert_equal_to_replay(topics: &Topics, expected: &Expected) {
    let got = assignments(topics);
    assert_eq!(got.len(), expected.assignments.len(), "assignment count");
    assert!(
        got == expected.assignments,
        "assignments differ from replay"
    );
    assert!(
        failures(topics) == expected.failures,
        "failures differ from replay"
    );
}

/// Runs the checker (with the replay comparison).
pub fn verify(topics: &Topics, group: &str) -> autoclaim::verify::Report {
    autoclaim::verify::verify(&verify_args(topics, group, true)).expect("autoclaim verify")
}

/// Sum over the activity partitions of the group's committed offsets: how far the group is (0 while
/// an open transaction still holds one of them; for polling until a target is reached).
pub fn committed_total(topics: &Topics, group: &str) -> i64 {
    let partitions: Vec<i32> = activity_watermarks(topics).into_keys().collect();
    try_committed_sum(topics, group, &partitions).unwrap_or(0)
}

/// Sum of the group's committed offsets of some activity partitions, once every one is stable (a
/// dead instance's open transaction holds them until the broker aborts it).
pub fn stable_committed_sum(topics: &Topics, group: &str, partitions: &[i32]) -> i64 {
    let mut sum = None;
    wait_until("stable committed offsets", Duration::from_secs(600), || {
        sum = try_committed_sum(topics, group, partitions);
        sum.is_some()
    });
    sum.expect("stable offsets")
}

/// The sum, or None when an offset is still held (or the fetch failed).
fn try_committed_sum(topics: &Topics, group: &str, partitions: &[i32]) -> Option<i64> {
    autoclaim::verify::committed_offsets(
        &kafka(),
        group,
        &topics.activity,
        partitions,
        Duration::from_secs(10),
    )
    .ok()
    .map(|offsets| offsets.values().map(|o| o.unwrap_or(0)).sum())
}

/// Sum of the activity partitions' high watermarks: how many records were published.
pub fn activity_end_total(topics: &Topics) -> i64 {
    activity_watermarks(topics)
        .values()
        .map(|(_, high)| *high)
        .sum()
}

/// Routed records (repartition topic) the group has not decided yet, as the checker counts them
/// (the topic's high watermark is no measure: transaction markers take offsets too); None while it
/// cannot tell.
pub fn routed_pending(topics: &Topics, group: &str) -> Option<u64> {
    let mut args = verify_args(topics, group, false);
    args.allow_lag = true;
    autoclaim::verify::verify(&args)
        .ok()
        .map(|report| report.counts.unprocessed_routed_records)
}

/// Waits until the group has committed every activity record published so far, and decided every
/// record routed meanwhile.
pub fn wait_processed(topics: &Topics, group: &str, timeout: Duration) {
    let end = activity_end_total(topics);
    wait_until(
        &format!("group {group} to commit all {end} activity records and their routes"),
        timeout,
        || committed_total(topics, group) >= end && routed_pending(topics, group) == Some(0),
    );
}

/// Like `wait_processed`, but fails at once (with the log) if `service` exits meanwhile.
pub fn wait_processed_by(service: &mut Service, topics: &Topics, group: &str, timeout: Duration) {
    let end = activity_end_total(topics);
    wait_until(
        &format!("group {group} to commit all {end} activity records and their routes"),
        timeout,
        || {
            assert!(
                service.is_running(),
                "the service exited before processing everything; log:\n{}",
                service.log_text()
            );
            committed_total(topics, group) >= end && routed_pending(topics, group) == Some(0)
        },
    );
}

/// Problems that no later commit can repair: once seen in committed outputs they stay.
pub const PERMANENT_PROBLEMS: [&str; 8] = [
    "duplicate_assignment",
    "over_assignment",
    "misplaced_assignment",
    "unexpected_output",
    "unreadable_output",
    "duplicate_dead_letter",
    "valid_record_dead_lettered",
    "dead_letter_without_reason",
];

/// Waits until the checker finds nothing wrong, then returns its report. Outputs of transactions
/// still open (a dead instance's, until the broker times it out) become visible only when they end,
/// so missing outputs and dead letters are waited for; a permanent problem fails at once, and
/// anything left after `timeout` fails with the last report.
pub fn wait_clean(topics: &Topics, group: &str, timeout: Duration) -> autoclaim::verify::Report {
    wait_clean_by(topics, group, timeout, true)
}

/// `wait_clean`, with or without the checker's replay comparison (which reads the tables before
/// the activity, so it cannot follow tables that change in the middle of the stream).
pub fn wait_clean_by(
    topics: &Topics,
    group: &str,
    timeout: Duration,
    compare_replay: bool,
) -> autoclaim::verify::Report {
    let deadline = Instant::now() + timeout;
    loop {
        let report = autoclaim::verify::verify(&verify_args(topics, group, compare_replay))
            .expect("autoclaim verify");
        if report.clean {
            return report;
        }
        let permanent = report
            .problems
            .iter()
            .any(|p| PERMANENT_PROBLEMS.contains(&p.kind.name()));
        assert!(
            !permanent && Instant::now() < deadline,
            "autoclaim verify finds problems:\n{}",
            report.human()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Resident memory of a process, in KiB (VmRSS of /proc/<pid>/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status")
}

/// The broker script of `scripts/test` (AUTOCLAIM_TEST_KAFKA_SCRIPT); tests that restart the broker
/// fail, never pass silently, without it.
pub fn kafka_script() -> PathBuf {
    let script = std::env::var("AUTOCLAIM_TEST_KAFKA_SCRIPT").unwrap_or_else(|_| {
        panic!(
            "AUTOCLAIM_TEST_KAFKA_SCRIPT is not set: this test restarts the broker and needs the \
             script that started it. Run it through `scripts/test` (which starts a broker of its \
             own and sets AUTOCLAIM_TEST_KAFKA_SCRIPT and AUTOCLAIM_KAFKA_RUN), or set both to the \
             broker under test (AUTOCLAIM_TEST_KAFKA_SCRIPT=$PWD/scripts/kafka and the run dir of \
             AUTOCLAIM_TEST_BROKERS)."
        )
    });
    PathBuf::from(script)
}

/// Delivery failures of a `RawProducer`.
#[derive(Default)]
pub struct DeliveryErrors(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for DeliveryErrors {}

impl rdkafka::producer::ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}/{:?}: {e}", m.topic(), m.partition()));
        }
    }
}

/// A plain producer of arbitrary records: any partition, key, value (or none) and headers. `flush`
/// fails the test if any record was not delivered.
pub struct RawProducer {
    producer: rdkafka::producer::BaseProducer<DeliveryErrors>,
}

impl RawProducer {
    pub fn new() -> RawProducer {
        let mut config = clients::idempotent_producer(&kafka());
        config
            .set("queue.buffering.max.messages", "1000000")
            // Up to the broker's default limit (message.max.bytes 1048588 per batch), beyond
            // librdkafka's default of 1,000,000 bytes.
            .set("message.max.bytes", "1048576");
        RawProducer {
            producer: config
                .create_with_context(DeliveryErrors::default())
                .expect("create producer"),
        }
    }

    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::BaseRecord;
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(owned);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }

    pub fn flush(&self) {
        use rdkafka::producer::Producer;
        self.producer.flush(Duration::from_secs(60)).expect("flush");
    }
}

impl Service {
    /// The address the service's HTTP server bound (it logs it at start; tests pass port 0).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log_text();
            let found = log
                .lines()
                .filter(|l| l.contains("serving HTTP"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.trim_matches('"').parse().ok());
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "the service never logged its HTTP address; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// GET over plain HTTP/1.1 on loopback (tests only; no client dependency needed).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).expect("connect to the service")
}

/// As `http_get`, or None when the service does not answer (it may have just exited).
pub fn try_http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Activity records as `key<TAB>value` lines (tenant id, proto3 JSON), the input of `kcat -K '\t'`.
pub fn kcat_lines(records: &[pb::ReplayRecord]) -> String {
    let mut lines = String::new();
    for record in records {
        let Some(pb::replay_record::Record::Activity(event)) = &record.record else {
            panic!("kcat_lines takes activity records");
        };
        let value = String::from_utf8(codec::encode(event, Format::Json)).unwrap();
        lines.push_str(&format!("{}\t{value}\n", event.tenant_id));
    }
    lines
}

/// Produces `lines` with kcat (Debian's, librdkafka's defaults but for `args`); fails the test if
/// kcat does.
pub fn kcat_produce(topic: &str, lines: &str, args: &[&str]) {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(["-P", "-b", &brokers(), "-t", topic, "-K", "\t"])
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (apt-get install kcat; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sum of a metric's series that carry every one of `labels` (e.g. `table="directory"`), in
/// Prometheus text; 0 when there is none.
pub fn metric_with_labels(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A seeded workload of the scenario: its tables, its activity and what replay makes of them.
pub struct Workload {
    pub tables: Vec<pb::ReplayRecord>,
    pub activity: Vec<pb::ReplayRecord>,
    pub expected: Expected,
}

pub fn workload_of_users(
    seed: u64,
    tenants: usize,
    users_per_tenant: usize,
    events: usize,
    seats_per_user: f64,
) -> Workload {
    let scenario = autoclaim::scenario::Scenario::new(autoclaim::scenario::ScenarioConfig {
        tenants,
        users_per_tenant,
        seed,
        seats_per_user,
        ..autoclaim::scenario::ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let activity = activity_records(scenario.activity(events));
    let all: Vec<pb::ReplayRecord> = tables.iter().chain(&activity).cloned().collect();
    let expected = expected(&all, Duration::from_secs(3600));
    Workload {
        tables,
        activity,
        expected,
    }
}
