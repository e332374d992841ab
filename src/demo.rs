//! `autoclaim demo`: the whole pipeline with no set-up. An embedded Kafka-protocol broker
//! (librdkafka's mock cluster) runs in process; the demo publishes a realistic workload, runs the real
//! processing loop on it, checks the outputs against `replay`, and prints what happened.
//!
//! The mock cluster does not implement transaction isolation (aborted records stay visible), so the
//! demo shows the pipeline working, not its exactly-once guarantee: the tests prove that against real
//! Apache Kafka.
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;

use crate::domain::time::Timestamp;
use crate::pipeline::clients;
use crate::pipeline::config::{Compression, KafkaArgs, RunConfig, Topics};
use crate::pipeline::processor::{Health, LoopCounts, PipelineError, Processor};
use crate::pipeline::publish::Publisher;
use crate::pipeline::topic_reader::{OpenTopic, ReadError};
use crate::replay::Replayer;
use crate::scenario::{Scenario, ScenarioConfig};
use crate::wire::pb::{self, replay_record::Record};
use crate::wire::{codec, Format};

mod serve;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub events: usize,
    pub seed: u64,
    pub tenants: usize,
    pub users_per_tenant: usize,
    /// At least this many partitions; more when the events would not fit (see `partitions_for`).
    pub partitions: i32,
    pub propagation_delay: Duration,
    pub http_addr: SocketAddr,
    /// Keep the pipeline, the admin API and its console running after the workload, with live
    /// events, until Ctrl-C (`--serve`).
    pub serve: bool,
}

fn default_topics() -> Topics {
    Topics {
        activity: "flow.activity.v1".into(),
        directory: "directory.users.v1".into(),
        inventory: "licensing.inventory.v1".into(),
        policies: "autoclaim.policies.v1".into(),
        assignments: "autoclaim.assignments.v1".into(),
        failures: "autoclaim.failures.v1".into(),
        dead_letters: "autoclaim.dlq.v1".into(),
        audit: "autoclaim.audit.v1".into(),
        repartition: "autoclaim.activity-repartition.v1".into(),
        claims: "autoclaim.claims.v1".into(),
        notices: "autoclaim.notices.v1".into(),
        directory_by_partition: "autoclaim.directory-by-partition.v1".into(),
    }
}

/// Runs the demo, printing to `out`.
pub fn run(options: &DemoOptions, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "autoclaim demo: embedded Kafka-protocol broker (librdkafka mock cluster)."
    )?;
    writeln!(out, "  Note: the mock cluster offers no transaction isolation; exactly-once is proven by the tests against real Apache Kafka.")?;
    // Declared first so that it is dropped last: every client below talks to it.
    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    let topics = default_topics();
    let partitions = partitions_for(options.events, options.partitions);
    create_topics(&cluster, &topics, partitions)?;
    let kafka = KafkaArgs::plaintext(cluster.bootstrap_servers());

    let scenario = Scenario::new(scenario_config(options));
    let tables = scenario.tables();
    let activity = activity_records(&scenario, options.events);
    let publisher = Publisher::new(&kafka, &topics, Format::Json)?;
    publish_tables(&publisher, &tables, options, out)?;

    let mut pipeline = DemoPipeline::start(demo_config(&kafka, &topics, options, partitions));
    // With --serve, the admin API (and its console) is served beside /metrics from the start, so
    // that the page can be opened while the workload flows.
    let admin = if options.serve {
        let delay = options.propagation_delay;
        Some(serve::DemoAdmin::start(
            &kafka,
            &topics,
            delay,
            DEMO_TRANSACTIONAL_ID,
        )?)
    } else {
        None
    };
    let http = start_http(options, &pipeline, admin.as_ref(), out)?;

    let started = Instant::now();
    publish_activity(&publisher, &activity, &pipeline.health)?;
    let decisions = replay_decisions(options, &tables, &activity)?;
    // Every event in a committed transaction: every output is on the topics, to be read once.
    wait_for_committed(&pipeline.health, activity.len(), OUTPUT_STALL)?;
    let outputs = Outputs::read(&kafka, &topics)?;
    print_processed(out, options, &mut pipeline, started.elapsed())?;
    print_results(out, pipeline.metrics.as_ref(), &outputs, &decisions)?;
    let (Some(admin), Some(Ok((addr, server)))) = (admin, http) else {
        return Ok(());
    };
    let tenant = busiest_tenant(&outputs.assignments)
        .or_else(|| tables.iter().find_map(settings_tenant))
        .context("the workload has no tenant")?;
    let more = scenario.activity(usize::MAX).skip(options.events);
    let sent = serve_live(out, &admin, addr, &tenant, &publisher, more, &pipeline)?;
    let counts = pipeline.stop_and_join()?;
    // The server's admin routes hold Kafka clients: they must be gone before the embedded broker
    // is, or they log its absence.
    let _ = server.join();
    drop(admin);
    writeln!(
        out,
        "\nStopped: {sent} live events sent; {} activity events processed in all ({} transactions committed).",
        counts.consumed, counts.commits
    )?;
    Ok(())
}

fn create_topics(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    topics: &Topics,
    partitions: i32,
) -> anyhow::Result<()> {
    for topic in [
        &topics.activity,
        &topics.directory,
        &topics.assignments,
        &topics.failures,
        &topics.dead_letters,
        &topics.repartition,
        &topics.claims,
        &topics.notices,
        &topics.directory_by_partition,
    ] {
        cluster.create_topic(topic, partitions, 1)?;
    }
    cluster.create_topic(&topics.inventory, 1, 1)?;
    cluster.create_topic(&topics.policies, 1, 1)?;
    cluster.create_topic(&topics.audit, 1, 1)?;
    Ok(())
}

/// The workload: tables first, then activity; with a policy turned on part-way through, so the
/// propagation delay shows.
fn scenario_config(options: &DemoOptions) -> ScenarioConfig {
    let mut config = ScenarioConfig {
        tenants: options.tenants,
        users_per_tenant: options.users_per_tenant,
        seed: options.seed,
        ..ScenarioConfig::default()
    };
    if options.serve {
        // The workload ends now rather than on the fixed date of the plain demo, so that the
        // console's report (the past 1 to 90 days) shows it next to the live events.
        config.start = Timestamp::from_millis(
            Timestamp::now().as_millis() - options.events as i64 * config.event_spacing_ms - 1_000,
        );
    }
    config
}

fn activity_records(scenario: &Scenario, events: usize) -> Vec<pb::ReplayRecord> {
    scenario
        .activity(events)
        .map(|e| pb::ReplayRecord {
            record: Some(Record::Activity(e)),
            written_at: None,
        })
        .collect()
}

fn publish_tables(
    publisher: &Publisher,
    tables: &[pb::ReplayRecord],
    options: &DemoOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for r in tables {
        publisher.send(r)?;
    }
    publisher.flush(Duration::from_secs(30))?;
    writeln!(
        out,
        "Published {} table records: {} tenants with settings, policies and inventory (seats are scarce), {} directory users.",
        tables.len(),
        options.tenants,
        options.tenants * options.users_per_tenant
    )?;
    Ok(())
}

/// The embedded broker drops what does not fit: stay at most a chunk ahead of the pipeline.
fn publish_activity(
    publisher: &Publisher,
    activity: &[pb::ReplayRecord],
    health: &Health,
) -> anyhow::Result<()> {
    for (chunk_index, chunk) in activity.chunks(PUBLISH_CHUNK).enumerate() {
        wait_for_committed(health, chunk_index * PUBLISH_CHUNK, OUTPUT_STALL)?;
        for r in chunk {
            publisher.send(r)?;
        }
        publisher.flush(Duration::from_secs(60))?;
    }
    Ok(())
}

/// What replay says must come out of the same input.
fn replay_decisions(
    options: &DemoOptions,
    tables: &[pb::ReplayRecord],
    activity: &[pb::ReplayRecord],
) -> anyhow::Result<Vec<pb::Decision>> {
    let mut replayer = Replayer::new(options.propagation_delay);
    let mut decisions = Vec::new();
    for r in tables.iter().chain(activity) {
        decisions.extend(replayer.apply(r.clone())?);
    }
    Ok(decisions)
}

/// The processor as `autoclaim run` runs it, with the demo's settings.
fn demo_config(
    kafka: &KafkaArgs,
    topics: &Topics,
    options: &DemoOptions,
    partitions: i32,
) -> RunConfig {
    RunConfig {
        kafka: kafka.clone(),
        topics: topics.clone(),
        group_id: DEMO_GROUP.into(),
        transactional_id: Some(DEMO_TRANSACTIONAL_ID.into()),
        propagation_delay: options.propagation_delay,
        event_time: Default::default(),
        claims: Default::default(),
        output_format: Format::Json,
        processing_threads: 1,
        batch_max_records: 500,
        batch_max_time: Duration::from_millis(50),
        batch_min_time: Duration::ZERO,
        stable_offsets_timeout: Duration::from_secs(120),
        stall_timeout: Duration::from_secs(120),
        output_compression: Compression::default(),
        transaction_timeout: Duration::from_secs(60),
        watchdog_timeout: Duration::from_secs(60),
        http_addr: options.http_addr,
        create_topics: false,
        partitions,
        replication: Default::default(),
        retention: Default::default(),
    }
}

/// The real processing loop on its own thread, and what the demo reads of it.
struct DemoPipeline {
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    /// None when a metrics recorder was installed already (a second demo in one process).
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    thread: Option<std::thread::JoinHandle<Result<LoopCounts, PipelineError>>>,
}

impl DemoPipeline {
    fn start(config: RunConfig) -> Self {
        let metrics = crate::telemetry::install().ok();
        crate::telemetry::describe();
        let health = Arc::new(Health::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (health, stop) = (Arc::clone(&health), Arc::clone(&stop));
            std::thread::spawn(move || Processor::start(config, health).and_then(|p| p.run(&stop)))
        };
        DemoPipeline {
            health,
            stop,
            metrics,
            thread: Some(thread),
        }
    }

    /// Stops the loop (it commits what is open) and returns its counts.
    fn stop_and_join(&mut self) -> anyhow::Result<LoopCounts> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .take()
            .context("the pipeline was joined already")?;
        let counts = thread
            .join()
            .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
        Ok(counts)
    }
}

type HttpServer = std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)>;

/// /metrics (and with --serve the admin API) while the demo runs; `None` without a recorder.
fn start_http(
    options: &DemoOptions,
    pipeline: &DemoPipeline,
    admin: Option<&serve::DemoAdmin>,
    out: &mut impl Write,
) -> anyhow::Result<Option<HttpServer>> {
    let http = pipeline.metrics.clone().map(|handle| {
        serve_metrics(
            options.http_addr,
            Arc::clone(&pipeline.health),
            handle,
            admin.map(|a| a.service.router()),
            Arc::clone(&pipeline.stop),
        )
    });
    if options.serve && !matches!(http, Some(Ok(_))) {
        anyhow::bail!(
            "--serve: the console cannot be served on {} (it is in use, or a metrics recorder was installed already)",
            options.http_addr
        );
    }
    match &http {
        Some(Ok((addr, _))) => writeln!(out, "Metrics while the demo runs: http://{addr}/metrics")?,
        Some(Err(e)) => writeln!(
            out,
            "(/metrics not served: {} is not free: {e})",
            options.http_addr
        )?,
        None => {}
    }
    Ok(http)
}

/// What the pipeline wrote, read back once it has committed every event.
struct Outputs {
    assignments: Vec<pb::LicenseAssignment>,
    failures: Vec<pb::AutoclaimFailure>,
}

impl Outputs {
    fn read(kafka: &KafkaArgs, topics: &Topics) -> anyhow::Result<Self> {
        Ok(Outputs {
            assignments: read_all(kafka, &topics.assignments)?,
            failures: read_all(kafka, &topics.failures)?,
        })
    }
}

/// With --serve the pipeline goes on (live events follow): the events committed so far; else it
/// stops here and its own counts are reported.
fn print_processed(
    out: &mut impl Write,
    options: &DemoOptions,
    pipeline: &mut DemoPipeline,
    elapsed: Duration,
) -> anyhow::Result<()> {
    if options.serve {
        writeln!(
            out,
            "\nProcessed {} activity events in {:.2}s.",
            pipeline.health.committed_records(),
            elapsed.as_secs_f64()
        )?;
    } else {
        let counts = pipeline.stop_and_join()?;
        writeln!(
            out,
            "\nProcessed {} activity events in {:.2}s ({} transactions committed).",
            counts.consumed,
            elapsed.as_secs_f64(),
            counts.commits
        )?;
    }
    Ok(())
}

fn print_results(
    out: &mut impl Write,
    metrics: Option<&metrics_exporter_prometheus::PrometheusHandle>,
    outputs: &Outputs,
    decisions: &[pb::Decision],
) -> anyhow::Result<()> {
    match metrics {
        Some(handle) => print_outcomes(out, &handle.render())?,
        None => writeln!(
            out,
            "(outcome counts unavailable: a metrics recorder was already installed)"
        )?,
    }
    print_report(out, &outputs.assignments)?;
    print_failures(out, &outputs.failures)?;
    let expected_failures = decisions.iter().filter(|d| d.failure.is_some()).count();
    let same = same_outputs(&outputs.assignments, decisions)
        && outputs.failures.len() == expected_failures;
    writeln!(
        out,
        "\nPipeline outputs equal replay's for the same input: {} ({} assignments, {} failures).",
        if same { "yes" } else { "NO" },
        outputs.assignments.len(),
        outputs.failures.len()
    )?;
    Ok(())
}

/// --serve: the console, a token for `tenant`, and live events until a stop signal; returns how
/// many live events were sent.
fn serve_live(
    out: &mut impl Write,
    admin: &serve::DemoAdmin,
    addr: SocketAddr,
    tenant: &str,
    publisher: &Publisher,
    more: impl Iterator<Item = pb::ActivityEvent>,
    pipeline: &DemoPipeline,
) -> anyhow::Result<u64> {
    let token = admin.token(tenant)?;
    let signals = crate::signal::stop_on_signal("autoclaim-demo-signals")?;
    writeln!(
        out,
        "\nAdmin console: http://{addr}/   (tenant {tenant}; the admin API is at http://{addr}/v1/)"
    )?;
    writeln!(
        out,
        "Sign in with this development token (a Global Administrator of {tenant}, valid for 12 hours):\n\n{token}\n"
    )?;
    writeln!(
        out,
        "Live: {} more events a second go through the pipeline; the console refreshes every 5 s. Ctrl-C stops.",
        serve::LIVE_EVENTS_PER_SECOND
    )?;
    out.flush()?;
    let sent = serve::live_events(publisher, more, &signals, &mut |sent| {
        let assigned = pipeline.metrics.as_ref().map_or(0, |h| {
            metric_total(&h.render(), crate::telemetry::ASSIGNMENTS) as u64
        });
        writeln!(
            out,
            "  live: {} events decided, {assigned} licences assigned ({sent} live events sent)",
            pipeline.health.committed_records()
        )?;
        out.flush()
    })?;
    Ok(sent)
}

/// The sum of a metric's series in Prometheus' text format.
fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The tenant with the most licences assigned: the most to look at in the console.
fn busiest_tenant(assignments: &[pb::LicenseAssignment]) -> Option<String> {
    let mut by_tenant: BTreeMap<&str, usize> = BTreeMap::new();
    for a in assignments {
        *by_tenant.entry(&a.tenant_id).or_default() += 1;
    }
    by_tenant
        .into_iter()
        .max_by_key(|(tenant, n)| (*n, std::cmp::Reverse(*tenant)))
        .map(|(tenant, _)| tenant.to_owned())
}

fn settings_tenant(record: &pb::ReplayRecord) -> Option<String> {
    match &record.record {
        Some(Record::Settings(s)) => Some(s.tenant_id.clone()),
        _ => None,
    }
}

fn serve_metrics(
    addr: SocketAddr,
    health: Arc<Health>,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    admin: Option<axum::Router>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                let mut router = crate::http::router(health, handle);
                if let Some(admin) = admin {
                    router = router.merge(admin);
                }
                let _ = crate::http::serve_on(
                    listener,
                    router,
                    crate::http::HttpLimits::default(),
                    async move {
                        while !stop.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                )
                .await;
            }
        });
    });
    Ok((bound, server))
}

const DEMO_GROUP: &str = "autoclaim-demo";
/// The processor's transactional id; the admin API's writer derives its own from it.
const DEMO_TRANSACTIONAL_ID: &str = "autoclaim-demo-1";
/// Events published at a time; the pipeline must have consumed one chunk before the next is sent.
const PUBLISH_CHUNK: usize = 4_000;

/// Waits until the pipeline has committed `events` input records; gives up if it stops moving for
/// `stall`.
fn wait_for_committed(health: &Health, events: usize, stall: Duration) -> anyhow::Result<()> {
    let (mut seen, mut last_move) = (0, Instant::now());
    loop {
        let committed = health.committed_records();
        if committed >= events as u64 {
            return Ok(());
        }
        if committed > seen {
            (seen, last_move) = (committed, Instant::now());
        }
        if last_move.elapsed() > stall {
            anyhow::bail!("the pipeline stopped at {committed} of {events} events");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Activity events one partition of the embedded broker holds: it keeps at most 5 MB a partition and
/// drops the oldest records beyond that, published or not (librdkafka's mock cluster), and a demo
/// event is up to about 400 bytes of JSON.
const EVENTS_PER_MOCK_PARTITION: usize = 8_000;

/// Enough partitions for every event to stay on the embedded broker until it is processed.
fn partitions_for(events: usize, at_least: i32) -> i32 {
    let needed = events.div_ceil(EVENTS_PER_MOCK_PARTITION);
    i32::try_from(needed).unwrap_or(i32::MAX).max(at_least)
}

/// How long the pipeline may make no progress before the demo gives up: a bigger run takes longer
/// but keeps committing, so no fixed deadline fits every size.
const OUTPUT_STALL: Duration = Duration::from_secs(60);

/// Every record of `topic` decoded, or as many as were read in 30 s (then the comparison with
/// replay tells the outputs are incomplete).
fn read_all<M>(kafka: &KafkaArgs, topic: &str) -> anyhow::Result<Vec<M>>
where
    M: prost::Message + serde::de::DeserializeOwned + Default,
{
    let config = clients::table_reader(kafka);
    let mut reader = match OpenTopic::new(&config, topic, Duration::from_secs(10)) {
        Ok(open) => open.read_all(Duration::from_secs(30))?,
        Err(ReadError::Missing(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(m)) => {
                if let Some(v) = m.payload() {
                    out.push(codec::decode(v, Format::Json)?);
                }
            }
            Ok(None) | Err(ReadError::Timeout { .. }) => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The pipeline's own outcome counts, from its `autoclaim_events_total` metric.
fn print_outcomes(out: &mut impl Write, metrics_text: &str) -> std::io::Result<()> {
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let prefix = format!("{}{{", crate::telemetry::EVENTS);
    for line in metrics_text.lines().filter(|l| l.starts_with(&prefix)) {
        let outcome = line
            .split("outcome=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("?");
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        *by_outcome.entry(outcome.to_owned()).or_default() += n;
    }
    writeln!(
        out,
        "\nOutcomes (the pipeline's committed decisions, from {}):",
        crate::telemetry::EVENTS
    )?;
    for (outcome, n) in &by_outcome {
        writeln!(out, "  {outcome:<40} {n:>7}")?;
    }
    Ok(())
}

fn print_report(
    out: &mut impl Write,
    assignments: &[pb::LicenseAssignment],
) -> std::io::Result<()> {
    let mut by_policy: BTreeMap<(String, String), Vec<&pb::LicenseAssignment>> = BTreeMap::new();
    for a in assignments {
        by_policy
            .entry((a.policy_name.clone(), a.product.clone()))
            .or_default()
            .push(a);
    }
    writeln!(
        out,
        "\nAutoclaim report (licences assigned by each policy and product):"
    )?;
    writeln!(out, "  {:<24} {:<26} {:>7}", "policy", "product", "count")?;
    for ((policy, product), rows) in &by_policy {
        writeln!(out, "  {policy:<24} {product:<26} {:>7}", rows.len())?;
    }
    writeln!(out, "  First rows (user, product, assigned at, trigger):")?;
    for a in assignments.iter().take(5) {
        let at = a
            .occurred_at
            .as_ref()
            .map(|t| {
                crate::domain::time::Timestamp::from_millis(
                    t.seconds * 1000 + i64::from(t.nanos / 1_000_000),
                )
                .to_string()
            })
            .unwrap_or_default();
        let trigger = pb::ActivityKind::try_from(a.trigger_kind)
            .map(|k| k.as_str_name())
            .unwrap_or("?");
        writeln!(out, "    {}  {}  {}  {}", a.user_id, a.product, at, trigger)?;
    }
    Ok(())
}

fn print_failures(out: &mut impl Write, failures: &[pb::AutoclaimFailure]) -> std::io::Result<()> {
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for f in failures {
        let reason = pb::Reason::try_from(f.reason)
            .map(|r| r.as_str_name())
            .unwrap_or("?");
        *by_reason.entry(reason).or_default() += 1;
    }
    writeln!(
        out,
        "\nFailures (sent to autoclaim.failures.v1 for admins):"
    )?;
    for (reason, n) in &by_reason {
        writeln!(out, "  {reason:<40} {n:>7}")?;
    }
    Ok(())
}

fn same_outputs(assignments: &[pb::LicenseAssignment], decisions: &[pb::Decision]) -> bool {
    let key = |a: &pb::LicenseAssignment| (a.trigger_event_id.clone(), a.assignment_id.clone());
    let mut got: Vec<_> = assignments.iter().map(key).collect();
    let mut want: Vec<_> = decisions
        .iter()
        .filter_map(|d| d.assignment.as_ref())
        .map(key)
        .collect();
    got.sort();
    want.sort();
    got == want
}
