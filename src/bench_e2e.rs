//! `autoclaim bench`: end-to-end figures against a real broker, in one run on the same topic shapes.
//!
//! 1. **Load**: the tables and N activity events of a seeded, realistic workload (`Scenario`, many
//!    tenants) into fresh topics (every topic name of a run starts with its prefix).
//! 2. **Ceilings**, in this process: a bare pass-through (a `read_committed` group member that copies
//!    each record, undecoded, to the same partition number of an output topic) without transactions,
//!    and the same with transactions cut like autoclaim's (same batch bounds,
//!    `send_offsets_to_transaction`, outputs drained with 1 ms polls, `commit_transaction`).
//! 3. **`autoclaim run`**: the release binary as a child process on the same activity topic, timed
//!    from its readiness (partitions restored, first record next) to the moment its committed
//!    counters (`autoclaim_events_total` + `autoclaim_dead_letters_total`, polled every 20 ms) reach N.
//! 4. **Latency**: a fresh activity topic, `run` started first, then events produced at a fixed rate;
//!    a `read_committed` consumer of the assignments and failures topics takes, for every output, the
//!    time it became visible minus the time its input event was handed to the producer (the event is
//!    found by the output's `triggerEventId`). The service's own bucketed histogram
//!    (`autoclaim_event_to_commit_seconds`, every event, until its commit returns) is printed next to it.
//! 5. **Scale**: directories of U users (0 for the baseline), `run` started on them; restore time
//!    (metric and log line), RSS after restore, bytes per tracked user.
//! 6. **Instances**: 1, 2, 3 instances of `run` in one group on the loaded activity topic.
//!
//! CPU figures come from `/proc/<pid>/stat` (utime + stime, all threads) deltas over the measured
//! window; peak memory from `VmHWM` (reset with `/proc/self/clear_refs` before each in-process
//! ceiling). Each figure carries the load average at its end and the machine's busy share of its
//! window (from `/proc/stat`), because the machine may be shared.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::pipeline::admin;
use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::publish::Publisher;
use crate::scenario::{Scenario, ScenarioConfig};
use crate::wire::pb::{self, replay_record::Record};
use crate::wire::{codec, Format};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child may take to become ready (table load and restore of a large directory).
const READY_TIMEOUT: Duration = Duration::from_secs(1200);
/// Guard against a hang while waiting for N events; not a performance threshold.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// In-process pass-through ceilings (plain and transactional).
    Ceiling,
    /// `autoclaim run` throughput on the loaded topic.
    Run,
    /// Event-to-commit latency at a fixed rate.
    Latency,
    /// State restore time and memory for large directories.
    Scale,
    /// Throughput with 1, 2, 3 instances in one group.
    Instances,
}

/// `autoclaim bench`: see the module documentation and BENCHMARKS.md.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Activity events loaded for the throughput phases.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Partitions of the activity, directory and output topics.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Tenants of the workload (Zipf-like activity over them).
    #[arg(long, default_value_t = 2000)]
    pub tenants: usize,
    #[arg(long, default_value_t = 50)]
    pub users_per_tenant: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Encoding of the published inputs.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Encoding of autoclaim's outputs (`run --output-format`).
    #[arg(long, value_enum, default_value = "json")]
    pub output_format: Format,
    /// Batch bounds of autoclaim and of the transactional pass-through.
    #[arg(long, default_value_t = 10_000)]
    pub batch_max_records: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub batch_max_time: Duration,
    /// Rounds of the ceiling and run phases, interleaved (plain, transactional, run, plain, ...):
    /// the transactional figures vary from run to run (see BENCHMARKS.md), so the summary gives the
    /// median and range of each and the ratios of the medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Events per second of the latency phase.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// How long the latency phase produces.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub latency_duration: Duration,
    /// Directory sizes of the scale phase (an empty directory is always measured first).
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    pub scale_users: Vec<usize>,
    /// Users per tenant of the scale directories.
    #[arg(long, default_value_t = 100)]
    pub scale_users_per_tenant: usize,
    /// Instance counts of the instances phase.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub instances: Vec<usize>,
    /// Phases to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ceiling,run,latency,scale,instances"
    )]
    pub phases: Vec<Phase>,
    /// The autoclaim binary to start (default: this executable).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Process id of the broker, to report its CPU (default: `$AUTOCLAIM_KAFKA_RUN/kafka.pid`).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Prefix of every topic and group of the run (default: `bench-<unix time>`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Where child logs (and perf data) go.
    #[arg(long, default_value = "/tmp/autoclaim-bench")]
    pub work_dir: PathBuf,
    /// Record a perf profile (`perf record -g --call-graph dwarf`) of `run` during the run phase.
    #[arg(long)]
    pub perf: bool,
    /// Keep the topics at the end (by default the run deletes what it created).
    #[arg(long)]
    pub keep_topics: bool,
    /// Log filter of the `run` children (`AUTOCLAIM_LOG`); e.g.
    /// `info,autoclaim::pipeline::transaction=debug` logs every commit's duration.
    #[arg(
        long,
        default_value = "info,autoclaim::pipeline::transaction=debug,librdkafka=warn,rdkafka=warn"
    )]
    pub child_log: String,
    /// How the transactional pass-through waits for its outputs before committing: `poll(0)` and
    /// sleeps of this many microseconds, as autoclaim's drain sleeps 200 us; 0: `poll(1 ms)` in a
    /// loop, which spins (rdkafka rounds the remaining time down to whole milliseconds).
    #[arg(long, default_value_t = 200)]
    pub drain_sleep_us: u64,
    /// `fetch.wait.max.ms` of the latency phase's output reader (bounds how late it can see an
    /// output that became visible).
    #[arg(long, default_value_t = 5)]
    pub watch_fetch_wait_ms: u64,
    /// Experiment: the pass-throughs copy only this share of the records (every record still counts
    /// and its offset commits), e.g. 0.23 to write as many outputs as autoclaim does on the default
    /// workload. 1: every record, as specified.
    #[arg(long, default_value_t = 1.0)]
    pub ceiling_output_share: f64,
    /// Experiment: `linger.ms` of the pass-through producers (default: autoclaim's, 5).
    #[arg(long)]
    pub ceiling_linger_ms: Option<u64>,
    /// Internal: run one pass-through (`plain` or `txn`) and print its figures as JSON.
    #[arg(long, hide = true)]
    pub internal_pass_through: Option<String>,
    #[arg(long, hide = true)]
    pub internal_input: Option<String>,
    #[arg(long, hide = true)]
    pub internal_output: Option<String>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

// ------------------------------------------------------------------------------------- /proc figures

fn proc_stat_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system, all threads) of a process; USER_HZ is 100 on Linux.
fn cpu_secs(pid: &str) -> f64 {
    proc_stat_ticks(pid).unwrap_or(0) as f64 / 100.0
}

fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// (busy, total) jiffies of the whole machine.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// What the machine and the broker did during a measured window.
struct Window {
    started: Instant,
    broker: Option<String>,
    broker_cpu: f64,
    machine: (u64, u64),
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct WindowFigures {
    wall: f64,
    broker_cpu: Option<f64>,
    machine_busy: f64,
    load: String,
}

impl Window {
    fn start(broker: Option<u32>) -> Window {
        let broker = broker.map(|p| p.to_string());
        Window {
            started: Instant::now(),
            broker_cpu: broker.as_deref().map_or(0.0, cpu_secs),
            broker,
            machine: machine_jiffies(),
        }
    }

    fn finish(&self) -> WindowFigures {
        let (busy, total) = machine_jiffies();
        WindowFigures {
            wall: self.started.elapsed().as_secs_f64(),
            broker_cpu: self
                .broker
                .as_deref()
                .map(|p| cpu_secs(p) - self.broker_cpu),
            machine_busy: (busy - self.machine.0) as f64 / (total - self.machine.1).max(1) as f64,
            load: loadavg(),
        }
    }
}

impl WindowFigures {
    fn json(&self) -> serde_json::Value {
        json!({
            "wall_s": self.wall,
            "broker_cpu_s": self.broker_cpu,
            "machine_busy": self.machine_busy,
            "loadavg": self.load,
        })
    }

    fn describe(&self, events: usize) -> String {
        let broker = self.broker_cpu.map_or(String::new(), |b| {
            format!(
                ", broker {:.1} CPU s/M events ({:.2} cores)",
                b / (events as f64 / 1e6),
                b / self.wall
            )
        });
        format!(
            "machine busy {:.0}% of 2 cores{broker}, load {}",
            self.machine_busy * 100.0,
            self.load
        )
    }
}

// ------------------------------------------------------------------------------------------- topics

fn topic_set(prefix: &str, tables: &str, outputs: &str, activity: &str) -> Topics {
    Topics {
        activity: format!("{prefix}.{activity}.activity"),
        directory: format!("{prefix}.{tables}.directory"),
        inventory: format!("{prefix}.{tables}.inventory"),
        policies: format!("{prefix}.{tables}.policies"),
        assignments: format!("{prefix}.{outputs}.assignments"),
        failures: format!("{prefix}.{outputs}.failures"),
        dead_letters: format!("{prefix}.{outputs}.dlq"),
    }
}

struct Cluster {
    kafka: KafkaArgs,
    runtime: tokio::runtime::Runtime,
    created: Vec<String>,
}

impl Cluster {
    fn create(&mut self, topics: &Topics, partitions: i32) -> anyhow::Result<()> {
        let created = self.runtime.block_on(admin::create_missing_topics(
            &self.kafka,
            topics,
            partitions,
            -1,
            Duration::from_secs(7200),
        ))?;
        self.created.extend(created);
        admin::check_topics(&self.kafka, topics)?;
        Ok(())
    }

    fn create_plain(&mut self, name: &str, partitions: i32) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            clients::admin(&self.kafka).create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        let results = self.runtime.block_on(admin.create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))?;
        for r in results {
            match r {
                Ok(name) => self.created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => bail!("cannot create {t}: {e}"),
            }
        }
        Ok(())
    }

    fn delete(&mut self, names: &[String]) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        if names.is_empty() {
            return;
        }
        let Ok(admin) = clients::admin(&self.kafka).create::<AdminClient<_>>() else {
            return;
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = self.runtime.block_on(admin.delete_topics(
            &refs,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
        ));
        self.created.retain(|c| !names.contains(c));
    }
}

// ------------------------------------------------------------------------------------ pass-through

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Throughput {
    events: usize,
    secs: f64,
    cpu_secs: f64,
    peak_rss_kib: u64,
    outputs: u64,
    window: WindowFigures,
    commits: Option<CommitTimes>,
}

/// Durations of the steps of each commit, in microseconds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct CommitTimes {
    offsets_us: Vec<u64>,
    /// Empty when the drain is part of `commit_us` (autoclaim's log times both together).
    drain_us: Vec<u64>,
    commit_us: Vec<u64>,
}

fn mean_ms(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1000.0
}

fn quantile_ms(v: &[u64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

impl CommitTimes {
    /// From the debug lines of `autoclaim::pipeline::transaction` in a child's log.
    fn from_log(log: &str) -> Option<CommitTimes> {
        let field = |l: &str| -> Option<u64> {
            l.split("elapsed_us=")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let mut times = CommitTimes::default();
        for l in log.lines() {
            if l.contains("offsets sent to transaction") {
                times.offsets_us.extend(field(l));
            } else if l.contains("transaction committed") {
                times.commit_us.extend(field(l));
            }
        }
        (!times.commit_us.is_empty()).then_some(times)
    }

    fn total_secs(&self) -> f64 {
        (self.offsets_us.iter().sum::<u64>()
            + self.drain_us.iter().sum::<u64>()
            + self.commit_us.iter().sum::<u64>()) as f64
            / 1e6
    }

    fn describe(&self, wall: f64) -> String {
        let drain = if self.drain_us.is_empty() {
            String::from(" (drain included in commit)")
        } else {
            format!(
                ", drain {:.1} (p99 {:.1})",
                mean_ms(&self.drain_us),
                quantile_ms(&self.drain_us, 0.99)
            )
        };
        format!(
            "{} commits; mean ms: send_offsets {:.1} (p99 {:.1}){drain}, commit {:.1} (p99 {:.1}); loop blocked in commits {:.0}% of the time",
            self.commit_us.len(),
            mean_ms(&self.offsets_us),
            quantile_ms(&self.offsets_us, 0.99),
            mean_ms(&self.commit_us),
            quantile_ms(&self.commit_us, 0.99),
            self.total_secs() / wall.max(1e-9) * 100.0
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "count": self.commit_us.len(),
            "send_offsets_ms": {"mean": mean_ms(&self.offsets_us), "p99": quantile_ms(&self.offsets_us, 0.99)},
            "drain_ms": {"mean": mean_ms(&self.drain_us), "p99": quantile_ms(&self.drain_us, 0.99)},
            "commit_ms": {"mean": mean_ms(&self.commit_us), "p99": quantile_ms(&self.commit_us, 0.99)},
            "blocked_s": self.total_secs(),
        })
    }
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }

    fn cpu_per_million(&self) -> f64 {
        self.cpu_secs / (self.events as f64 / 1e6)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "events": self.events,
            "seconds": self.secs,
            "events_per_s": self.rate(),
            "cpu_s": self.cpu_secs,
            "cpu_s_per_million": self.cpu_per_million(),
            "peak_rss_mib": self.peak_rss_kib as f64 / 1024.0,
            "outputs": self.outputs,
            "window": self.window.json(),
            "commits": self.commits.as_ref().map(CommitTimes::json),
        })
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<34} {:>9.0} events/s  {:>6.1} s  {:>6.1} CPU s/M events ({:.2} cores)  peak RSS {:>6.1} MiB  outputs {}\n{:<36}{}",
            self.rate(),
            self.secs,
            self.cpu_per_million(),
            self.cpu_secs / self.secs.max(1e-9),
            self.peak_rss_kib as f64 / 1024.0,
            self.outputs,
            "",
            self.window.describe(self.events)
        ) + &self.commits.as_ref().map_or(String::new(), |c| {
            format!("\n{:<36}{}", "", c.describe(self.secs))
        })
    }
}

fn send_copy(
    producer: &BaseProducer,
    topic: &str,
    message: &BorrowedMessage<'_>,
) -> Result<(), KafkaError> {
    producer.poll(Duration::ZERO);
    let headers = message.headers().map(|h| h.detach());
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).partition(message.partition());
    if let Some(k) = message.key() {
        record = record.key(k);
    }
    if let Some(v) = message.payload() {
        record = record.payload(v);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn drain(producer: &BaseProducer, sleep_us: u64) {
    let deadline = Instant::now() + TXN_TIMEOUT;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        if sleep_us == 0 {
            producer.poll(Duration::from_millis(1));
        } else {
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(sleep_us));
        }
    }
}

/// Copies `events` records of `input` to `output` (same partition numbers), in transactions cut like
/// autoclaim's when `transactional_id` is given.
#[allow(clippy::too_many_arguments)]
fn pass_through(
    kafka: &KafkaArgs,
    input: &str,
    output: &str,
    group: &str,
    events: usize,
    transactional_id: Option<&str>,
    batch: (usize, Duration),
    broker: Option<u32>,
    drain_sleep_us: u64,
    linger_ms: Option<u64>,
    output_share: f64,
) -> anyhow::Result<Throughput> {
    let mut copied = 0u64;
    reset_peak_rss();
    let consumer: BaseConsumer<QuietContext> =
        clients::activity_consumer(kafka, group).create_with_context(QuietContext)?;
    let mut config = match transactional_id {
        Some(id) => clients::transactional_producer(kafka, id),
        None => clients::idempotent_producer(kafka),
    };
    if let Some(linger) = linger_ms {
        config.set("linger.ms", linger.to_string());
    }
    let producer: BaseProducer = config.create()?;
    if transactional_id.is_some() {
        producer.init_transactions(TXN_TIMEOUT)?;
    }
    consumer.subscribe(&[input])?;
    let mut count = 0usize;
    let mut started: Option<(Instant, f64, Window)> = None;
    let mut open: Option<Instant> = None;
    let mut in_batch = 0usize;
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let guard = Instant::now();
    let mut times = CommitTimes::default();
    let mut commit = |next_offsets: &mut BTreeMap<i32, i64>| -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for (p, o) in next_offsets.iter() {
            offsets.add_partition_offset(input, *p, Offset::Offset(*o))?;
        }
        let group = consumer
            .group_metadata()
            .context("no consumer group metadata")?;
        let t = Instant::now();
        producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
        times.offsets_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        drain(&producer, drain_sleep_us);
        times.drain_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        producer.commit_transaction(TXN_TIMEOUT)?;
        times.commit_us.push(t.elapsed().as_micros() as u64);
        next_offsets.clear();
        Ok(())
    };
    while count < events {
        if guard.elapsed() > PROCESS_TIMEOUT {
            bail!(
                "pass-through to {output}: only {count} of {events} records in {PROCESS_TIMEOUT:?}"
            );
        }
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(e)) => eprintln!("bench: consumer error: {e}"),
            Some(Ok(m)) => {
                if started.is_none() {
                    started = Some((Instant::now(), cpu_secs("self"), Window::start(broker)));
                }
                if transactional_id.is_some() && open.is_none() {
                    producer.begin_transaction()?;
                    open = Some(Instant::now());
                }
                // A deterministic share of the records (by offset), spread over all partitions.
                if output_share >= 1.0
                    || (m.offset() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000
                        < (output_share * 10_000.0) as u64
                {
                    send_copy(&producer, output, &m)?;
                    copied += 1;
                }
                next_offsets.insert(m.partition(), m.offset() + 1);
                in_batch += 1;
                count += 1;
            }
        }
        if let Some(began) = open {
            if in_batch >= batch.0 || began.elapsed() >= batch.1 || count >= events {
                commit(&mut next_offsets)?;
                open = None;
                in_batch = 0;
            }
        }
    }
    if transactional_id.is_none() {
        producer.flush(Duration::from_secs(120))?;
    }
    let (t0, cpu0, window) = started.context("no record consumed")?;
    let secs = t0.elapsed().as_secs_f64();
    let figures = Throughput {
        events,
        secs,
        cpu_secs: cpu_secs("self") - cpu0,
        peak_rss_kib: status_kib("self", "VmHWM"),
        outputs: copied,
        window: window.finish(),
        commits: transactional_id.map(|_| times),
    };
    consumer.unsubscribe();
    Ok(figures)
}

// ------------------------------------------------------------------------------- the child process

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Sum of every series of a metric in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Quantile of a Prometheus histogram, interpolated linearly inside its bucket (as
/// `histogram_quantile` does).
fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            let share = if count > previous.1 {
                (rank - previous.1) / (count - previous.1)
            } else {
                0.0
            };
            return Some(previous.0 + (le - previous.0) * share);
        }
        previous = (le, count);
    }
    None
}

struct RunChild {
    child: Option<Child>,
    http: SocketAddr,
    log: PathBuf,
    spawned: Instant,
}

struct ChildOptions<'a> {
    binary: &'a Path,
    kafka: &'a KafkaArgs,
    topics: &'a Topics,
    group: &'a str,
    transactional_id: &'a str,
    output_format: Format,
    batch: (usize, Duration),
    log: PathBuf,
    log_filter: &'a str,
}

impl RunChild {
    fn spawn(o: &ChildOptions<'_>) -> anyhow::Result<RunChild> {
        let port = free_port()?;
        let http: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(&o.log)
            .with_context(|| format!("cannot create {}", o.log.display()))?;
        let t = o.topics;
        let mut command = Command::new(o.binary);
        for (key, _) in std::env::vars() {
            if key.starts_with("AUTOCLAIM_") {
                command.env_remove(key);
            }
        }
        command
            .args(["run", "--brokers", &o.kafka.brokers])
            .args(["--group-id", o.group])
            .args(["--transactional-id", o.transactional_id])
            .args(["--propagation-delay", "2h"])
            .args(["--http-addr", &http.to_string()])
            .args(["--activity-topic", &t.activity])
            .args(["--directory-topic", &t.directory])
            .args(["--inventory-topic", &t.inventory])
            .args(["--policies-topic", &t.policies])
            .args(["--assignments-topic", &t.assignments])
            .args(["--failures-topic", &t.failures])
            .args(["--dlq-topic", &t.dead_letters])
            .args(["--output-format", format_name(o.output_format)])
            .args(["--batch-max-records", &o.batch.0.to_string()])
            .args([
                "--batch-max-time",
                &humantime::format_duration(o.batch.1).to_string(),
            ]);
        for (k, v) in &o.kafka.properties {
            command.args(["--kafka-property", &format!("{k}={v}")]);
        }
        let child = command
            .env("AUTOCLAIM_LOG", o.log_filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", o.binary.display()))?;
        Ok(RunChild {
            child: Some(child),
            http,
            log: o.log.clone(),
            spawned: Instant::now(),
        })
    }

    fn pid(&self) -> String {
        self.child
            .as_ref()
            .map_or_else(String::new, |c| c.id().to_string())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "autoclaim run exited ({status}); log {}:\n{}",
                    self.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        http_get(self.http, "/readyz").is_some_and(|(s, _)| s == 200)
    }

    fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    fn processed(&self) -> f64 {
        let m = self.metrics();
        metric_sum(&m, crate::telemetry::EVENTS) + metric_sum(&m, crate::telemetry::DEAD_LETTERS)
    }

    fn wait_ready(&mut self, step: Duration) -> anyhow::Result<Instant> {
        loop {
            self.check_alive()?;
            if self.ready() {
                return Ok(Instant::now());
            }
            if self.spawned.elapsed() > READY_TIMEOUT {
                bail!("autoclaim run not ready after {READY_TIMEOUT:?}");
            }
            std::thread::sleep(step);
        }
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM and a clean exit (the open transaction commits).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        self.stop();
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Protobuf => "protobuf",
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `elapsed_ms` of the "partition state restored" log lines.
fn restore_log_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("partition state restored"))
        .filter_map(|l| {
            l.split("elapsed_ms=")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------- the run

/// The throughput phases of one `--repeat` round.
struct Round {
    plain: Option<Throughput>,
    txn: Option<Throughput>,
    run: Option<Throughput>,
}

struct Bench<'a> {
    args: &'a BenchArgs,
    prefix: String,
    binary: PathBuf,
    broker: Option<u32>,
    cluster: Cluster,
    results: serde_json::Map<String, serde_json::Value>,
    /// Round of the ceiling and run phases (`--repeat`): 0 for the first.
    round: usize,
}

fn broker_pid(args: &BenchArgs) -> Option<u32> {
    args.broker_pid.or_else(|| {
        let run = std::env::var("AUTOCLAIM_KAFKA_RUN").ok()?;
        std::fs::read_to_string(Path::new(&run).join("kafka.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = status_like("/proc/meminfo", "MemTotal") as f64 / 1024.0 / 1024.0;
    let source = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    json!({"cpu": model, "cores": cores, "memory_gib": memory_gib, "loadavg": loadavg(), "source": source})
}

fn status_like(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the phases asked for and prints the figures.
pub fn command(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(kind) = &args.internal_pass_through {
        let prefix = args.prefix.clone().unwrap_or_default();
        let transactional = kind == "txn";
        let figures = pass_through(
            &args.kafka,
            args.internal_input.as_deref().context("--internal-input")?,
            args.internal_output
                .as_deref()
                .context("--internal-output")?,
            &format!("{prefix}.ceiling-{kind}"),
            args.events,
            transactional
                .then(|| format!("{prefix}.ceiling-{kind}"))
                .as_deref(),
            (args.batch_max_records, args.batch_max_time),
            broker_pid(&args),
            args.drain_sleep_us,
            args.ceiling_linger_ms,
            args.ceiling_output_share,
        )?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{}", unix_secs()));
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this executable")?,
    };
    std::fs::create_dir_all(&args.work_dir)?;
    let mut bench = Bench {
        round: 0,
        args: &args,
        prefix,
        binary,
        broker: broker_pid(&args),
        cluster: Cluster {
            kafka: args.kafka.clone(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            created: Vec::new(),
        },
        results: serde_json::Map::new(),
    };
    let result = bench.run_all();
    if !args.keep_topics {
        let created = bench.cluster.created.clone();
        bench.cluster.delete(&created);
    }
    if let Some(path) = &args.json_out {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::Value::Object(bench.results.clone()))?,
        )?;
        println!("figures written to {}", path.display());
    }
    result
}

impl Bench<'_> {
    fn has(&self, phase: Phase) -> bool {
        self.args.phases.contains(&phase)
    }

    fn main_topics(&self, outputs: &str) -> Topics {
        topic_set(&self.prefix, "tables", outputs, "load")
    }

    fn child(&self, topics: &Topics, group: &str, id: &str) -> anyhow::Result<RunChild> {
        RunChild::spawn(&ChildOptions {
            binary: &self.binary,
            kafka: &self.args.kafka,
            topics,
            group,
            transactional_id: id,
            output_format: self.args.output_format,
            batch: (self.args.batch_max_records, self.args.batch_max_time),
            log: self.args.work_dir.join(format!("{id}.log")),
            log_filter: &self.args.child_log,
        })
    }

    fn scenario_config(&self) -> ScenarioConfig {
        ScenarioConfig {
            tenants: self.args.tenants,
            users_per_tenant: self.args.users_per_tenant,
            seed: self.args.seed,
            ..ScenarioConfig::default()
        }
    }

    fn run_all(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        println!(
            "autoclaim bench: prefix {}, brokers {}",
            self.prefix, a.kafka.brokers
        );
        let m = machine();
        println!(
            "machine: {} ({} cores, {:.1} GiB), load {}; broker pid {:?}; source {}",
            m["cpu"].as_str().unwrap_or(""),
            m["cores"],
            m["memory_gib"].as_f64().unwrap_or(0.0),
            m["loadavg"].as_str().unwrap_or(""),
            self.broker,
            m["source"].as_str().unwrap_or("unknown")
        );
        self.results.insert("machine".into(), m);
        self.results.insert(
            "parameters".into(),
            json!({
                "events": a.events, "partitions": a.partitions, "tenants": a.tenants,
                "users_per_tenant": a.users_per_tenant, "seed": a.seed,
                "format": format_name(a.format), "output_format": format_name(a.output_format),
                "batch_max_records": a.batch_max_records,
                "batch_max_time_ms": a.batch_max_time.as_millis() as u64,
                "rate": a.rate, "latency_s": a.latency_duration.as_secs_f64(),
            }),
        );
        let needs_load = [Phase::Ceiling, Phase::Run, Phase::Latency, Phase::Instances]
            .iter()
            .any(|p| self.has(*p));
        if needs_load {
            self.load()?;
        }
        let mut rounds: Vec<Round> = Vec::new();
        for round in 0..a.repeat.max(1) {
            self.round = round;
            if a.repeat > 1 {
                println!("round {} of {}", round + 1, a.repeat);
            }
            let mut plain = None;
            let mut txn = None;
            let mut run = None;
            if self.has(Phase::Ceiling) {
                let (p, t) = self.ceilings()?;
                plain = Some(p);
                txn = Some(t);
            }
            if self.has(Phase::Run) {
                run = Some(self.run_phase(plain.as_ref(), txn.as_ref())?);
            }
            rounds.push(Round { plain, txn, run });
        }
        if rounds.len() > 1 {
            self.summarise_rounds(&rounds);
        }
        if self.has(Phase::Latency) {
            self.latency()?;
        }
        if self.has(Phase::Instances) {
            self.instances()?;
        }
        if self.has(Phase::Scale) {
            self.scale()?;
        }
        println!("done; load {}", loadavg());
        Ok(())
    }

    fn load(&mut self) -> anyhow::Result<()> {
        let topics = self.main_topics("run");
        self.cluster.create(&topics, self.args.partitions)?;
        let options = crate::loadgen::LoadOptions {
            scenario: self.scenario_config(),
            events: self.args.events,
            rate: 0,
            skip_tables: false,
            format: self.args.format,
        };
        let started = Instant::now();
        let report = crate::loadgen::run(&self.args.kafka, &topics, &options, &|| false)?;
        println!(
            "load: {} table records, {} events into {} ({} partitions) in {:.1} s ({:.0} events/s); load {}",
            report.table_records,
            report.events,
            topics.activity,
            self.args.partitions,
            started.elapsed().as_secs_f64(),
            report.events as f64 / report.elapsed.as_secs_f64().max(1e-9),
            loadavg()
        );
        self.results.insert(
            "load".into(),
            json!({"table_records": report.table_records, "events": report.events,
                   "seconds": report.elapsed.as_secs_f64(), "loadavg": loadavg()}),
        );
        Ok(())
    }

    /// Name of something of the current round: `name`, then `name-r2`, `name-r3`...
    fn tagged(&self, name: &str) -> String {
        if self.round == 0 {
            name.to_owned()
        } else {
            format!("{name}-r{}", self.round + 1)
        }
    }

    fn summarise_rounds(&mut self, rounds: &[Round]) {
        let stats = |pick: &dyn Fn(&Round) -> Option<f64>| {
            let mut v: Vec<f64> = rounds.iter().filter_map(pick).collect();
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| {
                let n = v.len();
                let median = if n % 2 == 0 {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                } else {
                    v[n / 2]
                };
                (median, v[0], v[n - 1], v)
            })
        };
        let plain = stats(&|r| r.plain.as_ref().map(Throughput::rate));
        let txn = stats(&|r| r.txn.as_ref().map(Throughput::rate));
        let run = stats(&|r| r.run.as_ref().map(Throughput::rate));
        let run_cpu = stats(&|r| r.run.as_ref().map(Throughput::cpu_per_million));
        println!("summary of {} rounds (median, min..max):", rounds.len());
        for (name, s) in [
            ("ceiling: pass-through, plain", &plain),
            ("ceiling: pass-through, transactions", &txn),
            ("autoclaim run (exactly once)", &run),
        ] {
            if let Some((median, min, max, _)) = s {
                println!("  {name:<36} {median:>9.0} events/s ({min:.0}..{max:.0})");
            }
        }
        if let Some((median, min, max, _)) = &run_cpu {
            println!(
                "  {:<36} {median:>9.1} CPU s/M events ({min:.1}..{max:.1})",
                "autoclaim run CPU"
            );
        }
        let mut summary = json!({
            "rounds": rounds.len(),
            "plain": plain.as_ref().map(|s| s.3.clone()),
            "transactional": txn.as_ref().map(|s| s.3.clone()),
            "run": run.as_ref().map(|s| s.3.clone()),
            "run_cpu_s_per_million": run_cpu.as_ref().map(|s| s.3.clone()),
        });
        if let (Some(r), Some(p)) = (&run, &plain) {
            println!(
                "  ratio of medians to the plain pass-through: {:.0}% (target 60%)",
                r.0 / p.0 * 100.0
            );
            summary["ratio_plain"] = json!(r.0 / p.0);
        }
        if let (Some(r), Some(t)) = (&run, &txn) {
            println!(
                "  ratio of medians to the transactional pass-through: {:.0}% (target 80%)",
                r.0 / t.0 * 100.0
            );
            summary["ratio_transactional"] = json!(r.0 / t.0);
        }
        self.results.insert("summary".into(), summary);
    }

    fn ceilings(&mut self) -> anyhow::Result<(Throughput, Throughput)> {
        let a = self.args;
        let input = self.main_topics("run").activity;
        let plain_out = format!("{}.{}.out", self.prefix, self.tagged("ceiling-plain"));
        let txn_out = format!("{}.{}.out", self.prefix, self.tagged("ceiling-txn"));
        self.cluster.create_plain(&plain_out, a.partitions)?;
        self.cluster.create_plain(&txn_out, a.partitions)?;
        let plain = self.pass_through_child("plain", &input, &plain_out)?;
        println!("{}", plain.line("ceiling: pass-through, plain"));
        let txn = self.pass_through_child("txn", &input, &txn_out)?;
        println!("{}", txn.line("ceiling: pass-through, transactions"));
        self.results
            .insert(self.tagged("ceiling_plain"), plain.json());
        self.results
            .insert(self.tagged("ceiling_transactional"), txn.json());
        // The copies are not needed any more; free the broker's disk.
        self.cluster.delete(&[plain_out, txn_out]);
        Ok((plain, txn))
    }

    /// With `--perf`: `perf record` of a child process until `stop_perf`.
    fn start_perf(&self, pid: &str, name: &str) -> Option<(Child, PathBuf)> {
        if !self.args.perf {
            return None;
        }
        let path = self
            .args
            .work_dir
            .join(format!("{}.{name}.perf.data", self.prefix));
        Command::new("perf")
            .args(["record", "-F", "299", "-g", "--call-graph", "dwarf,16384"])
            .args(["-p", pid, "-o"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|c| (c, path))
    }

    /// One pass-through in a process of its own (this binary), so that its CPU and peak memory are
    /// its own, as autoclaim's are.
    fn pass_through_child(
        &self,
        kind: &str,
        input: &str,
        output: &str,
    ) -> anyhow::Result<Throughput> {
        let a = self.args;
        let mut command = Command::new(&self.binary);
        command
            .args(["bench", "--brokers", &a.kafka.brokers])
            .args(["--events", &a.events.to_string()])
            .args(["--batch-max-records", &a.batch_max_records.to_string()])
            .args([
                "--batch-max-time",
                &humantime::format_duration(a.batch_max_time).to_string(),
            ])
            .args(["--drain-sleep-us", &a.drain_sleep_us.to_string()])
            .args([
                "--ceiling-output-share",
                &a.ceiling_output_share.to_string(),
            ])
            .args(
                a.ceiling_linger_ms
                    .map(|l| vec!["--ceiling-linger-ms".to_owned(), l.to_string()])
                    .unwrap_or_default(),
            )
            .args(["--prefix", &self.tagged(&self.prefix)])
            .args(["--internal-pass-through", kind])
            .args(["--internal-input", input])
            .args(["--internal-output", output]);
        if let Some(pid) = self.broker {
            command.args(["--broker-pid", &pid.to_string()]);
        }
        for (k, v) in &a.kafka.properties {
            command.args(["--kafka-property", &format!("{k}={v}")]);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the pass-through process")?;
        let perf = self.start_perf(&child.id().to_string(), &format!("ceiling-{kind}"));
        let out = child.wait_with_output()?;
        stop_perf(perf);
        if !out.status.success() {
            bail!("the {kind} pass-through failed ({})", out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("pass-through output: {line}"))
    }

    fn run_phase(
        &mut self,
        plain: Option<&Throughput>,
        txn: Option<&Throughput>,
    ) -> anyhow::Result<Throughput> {
        let a = self.args;
        let topics = self.main_topics(&self.tagged("run"));
        if self.round > 0 {
            self.cluster.create(&topics, a.partitions)?;
        }
        let group = format!("{}.{}", self.prefix, self.tagged("run"));
        let mut child = self.child(
            &topics,
            &group,
            &format!("{}.{}-0", self.prefix, self.tagged("run")),
        )?;
        let pid = child.pid();
        let ready = child.wait_ready(Duration::from_millis(5))?;
        let window = Window::start(self.broker);
        let cpu0 = cpu_secs(&pid);
        let startup = ready.duration_since(child.spawned).as_secs_f64();
        let perf = self.start_perf(&pid, &self.tagged("run"));
        let done = wait_processed(&mut [&mut child], a.events as f64)?;
        let secs = done.duration_since(ready).as_secs_f64();
        let cpu = cpu_secs(&pid) - cpu0;
        let peak = status_kib(&pid, "VmHWM");
        let metrics = child.metrics();
        stop_perf(perf);
        let outputs = metric_sum(&metrics, crate::telemetry::ASSIGNMENTS)
            + metric_sum(&metrics, crate::telemetry::FAILURES)
            + metric_sum(&metrics, crate::telemetry::DEAD_LETTERS);
        let mut figures = Throughput {
            events: a.events,
            secs,
            cpu_secs: cpu,
            peak_rss_kib: peak,
            outputs: outputs as u64,
            window: window.finish(),
            commits: None,
        };
        let transactions = metric_sum(&metrics, crate::telemetry::TRANSACTIONS);
        child.stop();
        figures.commits = CommitTimes::from_log(&child.log_text());
        println!("{}", figures.line("autoclaim run (exactly once)"));
        println!(
            "{:<36}start to ready {startup:.1} s; {transactions:.0} transactions ({:.0} records each)",
            "",
            a.events as f64 / transactions.max(1.0)
        );
        let mut entry = figures.json();
        entry["startup_s"] = json!(startup);
        entry["transactions"] = json!(transactions);
        if let Some(p) = plain {
            let r = figures.rate() / p.rate();
            println!(
                "{:<36}ratio to the plain pass-through: {:.0}% (target 60%)",
                "",
                r * 100.0
            );
            entry["ratio_plain"] = json!(r);
        }
        if let Some(t) = txn {
            let r = figures.rate() / t.rate();
            println!(
                "{:<36}ratio to the transactional pass-through: {:.0}% (target 80%)",
                "",
                r * 100.0
            );
            entry["ratio_transactional"] = json!(r);
        }
        self.results.insert(self.tagged("run"), entry);
        Ok(figures)
    }

    fn latency(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let topics = topic_set(&self.prefix, "tables", "latency", "latency");
        self.cluster.create(&topics, a.partitions)?;
        let group = format!("{}.latency", self.prefix);
        let mut child = self.child(&topics, &group, &format!("{}.latency-0", self.prefix))?;
        child.wait_ready(Duration::from_millis(20))?;
        let pid = child.pid();
        let count = (a.rate as f64 * a.latency_duration.as_secs_f64()) as usize;
        let base = Instant::now();
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (kafka, topics, sent, stop) = (
                a.kafka.clone(),
                topics.clone(),
                Arc::clone(&sent),
                Arc::clone(&stop),
            );
            let event_prefix = format!("evt-{}-", a.seed);
            let fetch_wait = a.watch_fetch_wait_ms;
            std::thread::spawn(move || {
                watch_outputs(
                    &kafka,
                    &topics,
                    &event_prefix,
                    base,
                    &sent,
                    &stop,
                    fetch_wait,
                )
            })
        };
        // Let the watcher's assignment settle before the first event.
        std::thread::sleep(Duration::from_secs(2));
        let publisher = Publisher::new(&a.kafka, &topics, a.format)?;
        let scenario = Scenario::new(self.scenario_config());
        let window = Window::start(self.broker);
        let cpu0 = cpu_secs(&pid);
        let own0 = cpu_secs("self");
        let started = Instant::now();
        for (i, event) in scenario.activity(count).enumerate() {
            let due = Duration::from_secs_f64(i as f64 / a.rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_millis(1) {
                std::thread::sleep(due - elapsed);
            }
            sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            publisher.send(&pb::ReplayRecord {
                record: Some(Record::Activity(event)),
            })?;
        }
        let produce_secs = started.elapsed().as_secs_f64();
        publisher.flush(Duration::from_secs(60))?;
        wait_processed(&mut [&mut child], count as f64)?;
        let cpu = cpu_secs(&pid) - cpu0;
        let own = cpu_secs("self") - own0;
        let win = window.finish();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let mut latencies = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the output watcher panicked"))??;
        let metrics = child.metrics();
        child.stop();
        let commits = CommitTimes::from_log(&child.log_text());
        latencies.sort_unstable();
        let pct = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        };
        let hist = |q: f64| {
            histogram_quantile(&metrics, crate::telemetry::EVENT_TO_COMMIT_SECONDS, q)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        println!(
            "latency at {} events/s for {:.0} s ({} events, produced in {:.1} s): {} outputs seen",
            a.rate,
            a.latency_duration.as_secs_f64(),
            count,
            produce_secs,
            latencies.len()
        );
        println!(
            "{:<36}produce -> output visible (read_committed): p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms (target p99 < 50 ms)",
            "",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            pct(1.0)
        );
        println!(
            "{:<36}service histogram (bucketed, record timestamp -> commit returned): p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms",
            "",
            hist(0.5),
            hist(0.99),
            hist(0.999)
        );
        println!(
            "{:<36}autoclaim CPU {:.2} cores, load generator and output reader {:.2} cores; {}",
            "",
            cpu / win.wall,
            own / win.wall,
            win.describe(count)
        );
        if let Some(c) = &commits {
            println!("{:<36}{}", "", c.describe(win.wall));
        }
        self.results.insert(
            "latency".into(),
            json!({
                "rate": a.rate, "events": count, "outputs_seen": latencies.len(),
                "produce_s": produce_secs,
                "visible_ms": {"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0)},
                "histogram_ms": {"p50": hist(0.5), "p99": hist(0.99), "p999": hist(0.999)},
                "autoclaim_cores": cpu / win.wall,
                "bench_cores": own / win.wall,
                "commits": commits.as_ref().map(CommitTimes::json),
                "window": win.json(),
            }),
        );
        Ok(())
    }

    fn instances(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let mut rows = Vec::new();
        for &k in &a.instances {
            let topics = self.main_topics(&format!("instances-{k}"));
            self.cluster.create(&topics, a.partitions)?;
            let group = format!("{}.instances-{k}", self.prefix);
            let mut children = Vec::new();
            for j in 0..k {
                children.push(self.child(
                    &topics,
                    &group,
                    &format!("{}.instances-{k}-{j}", self.prefix),
                )?);
            }
            let spawned = Instant::now();
            let pids: Vec<String> = children.iter().map(RunChild::pid).collect();
            let cpu_start: Vec<f64> = pids.iter().map(|p| cpu_secs(p)).collect();
            let window = Window::start(self.broker);
            let mut first_ready: Option<Instant> = None;
            let mut all_ready: Option<(Instant, f64, Vec<f64>, Window)> = None;
            let mut last: Option<(Instant, f64)> = None;
            let done = loop {
                for c in &mut children {
                    c.check_alive()?;
                }
                let ready: Vec<bool> = if all_ready.is_none() {
                    children.iter().map(RunChild::ready).collect()
                } else {
                    vec![true; k]
                };
                let processed: f64 = children.iter().map(RunChild::processed).sum();
                let now = Instant::now();
                if first_ready.is_none() && ready.iter().any(|r| *r) {
                    first_ready = Some(Instant::now());
                }
                if all_ready.is_none() && ready.iter().all(|r| *r) {
                    all_ready = Some((
                        Instant::now(),
                        processed,
                        pids.iter().map(|p| cpu_secs(p)).collect(),
                        Window::start(self.broker),
                    ));
                }
                if processed >= a.events as f64 {
                    break Instant::now();
                }
                if spawned.elapsed() > PROCESS_TIMEOUT {
                    bail!("{k} instances did not process {} events", a.events);
                }
                if all_ready.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    std::thread::sleep(poll_interval(last, now, processed, a.events as f64));
                    last = Some((now, processed));
                }
            };
            let whole = window.finish();
            let cpu_end: Vec<f64> = pids.iter().map(|p| cpu_secs(p)).collect();
            let rebalances: usize = children
                .iter()
                .map(|c| c.log_text().matches("partitions assigned").count())
                .sum();
            for c in &mut children {
                c.stop();
            }
            let first = first_ready.unwrap_or(spawned);
            let total_rate = a.events as f64 / done.duration_since(first).as_secs_f64();
            let (steady_rate, steady_cpu, steady_window) = match &all_ready {
                Some((t, p, cpu, w)) if done > *t && (a.events as f64 - p) > 0.0 => {
                    let secs = done.duration_since(*t).as_secs_f64();
                    let cpu: f64 = cpu_end.iter().zip(cpu).map(|(e, s)| e - s).sum();
                    (
                        Some((a.events as f64 - p) / secs),
                        Some(cpu / secs),
                        Some(w.finish()),
                    )
                }
                _ => (None, None, None),
            };
            let total_cpu: f64 = cpu_end.iter().zip(&cpu_start).map(|(e, s)| e - s).sum();
            println!(
                "instances {k}: {:.0} events/s from the first ready instance to the last commit; steady (all {k} ready, {:.0}% of events left): {}; autoclaim CPU {:.1} s/M events, {} cores in steady state; {rebalances} partition assignments",
                total_rate,
                all_ready
                    .as_ref()
                    .map_or(0.0, |(_, p, _, _)| (1.0 - p / a.events as f64) * 100.0),
                steady_rate.map_or("n/a".to_owned(), |r| format!("{r:.0} events/s")),
                total_cpu / (a.events as f64 / 1e6),
                steady_cpu.map_or("n/a".to_owned(), |c| format!("{c:.2}")),
            );
            if let Some(w) = &steady_window {
                println!("{:<36}steady window: {}", "", w.describe(a.events));
            }
            rows.push(json!({
                "instances": k, "events_per_s": total_rate, "steady_events_per_s": steady_rate,
                "steady_autoclaim_cores": steady_cpu, "cpu_s_per_million": total_cpu / (a.events as f64 / 1e6),
                "rebalances": rebalances, "window": whole.json(),
                "steady_window": steady_window.map(|w| w.json()),
            }));
            let names = vec![
                topics.assignments.clone(),
                topics.failures.clone(),
                topics.dead_letters.clone(),
            ];
            self.cluster.delete(&names);
        }
        self.results.insert("instances".into(), json!(rows));
        Ok(())
    }

    fn scale(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let mut sizes = vec![0usize];
        sizes.extend(a.scale_users.iter().copied().filter(|u| *u > 0));
        let mut baseline: Option<u64> = None;
        let mut rows = Vec::new();
        for users in sizes {
            let tables = format!("scale-{users}");
            let topics = topic_set(&self.prefix, &tables, "scale-out", "scale");
            self.cluster.create(&topics, a.partitions)?;
            let published = Instant::now();
            publish_directory(
                &a.kafka,
                &topics,
                a.format,
                users,
                a.scale_users_per_tenant,
                a.seed,
            )?;
            let publish_secs = published.elapsed().as_secs_f64();
            let group = format!("{}.scale-{users}", self.prefix);
            let mut child =
                self.child(&topics, &group, &format!("{}.scale-{users}-0", self.prefix))?;
            let perf = if users > 0 {
                self.start_perf(&child.pid(), &format!("restore-{users}"))
            } else {
                None
            };
            let window = Window::start(self.broker);
            let ready = child.wait_ready(Duration::from_millis(50))?;
            stop_perf(perf);
            let startup = ready.duration_since(child.spawned).as_secs_f64();
            let startup_cpu = cpu_secs(&child.pid());
            let startup_window = window.finish();
            // The tracked-users gauge is refreshed every 5 s.
            let mut tracked = 0.0;
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
                tracked = metric_sum(&child.metrics(), crate::telemetry::TRACKED_USERS);
                if tracked as usize >= users && Instant::now() > ready + Duration::from_secs(6) {
                    break;
                }
            }
            let pid = child.pid();
            let rss = status_kib(&pid, "VmRSS");
            let hwm = status_kib(&pid, "VmHWM");
            let metrics = child.metrics();
            let restore_sum = metric_sum(
                &metrics,
                &format!("{}_sum", crate::telemetry::RESTORE_SECONDS),
            );
            let log_ms = restore_log_ms(&child.log_text());
            child.stop();
            let base = *baseline.get_or_insert(rss);
            let per_user = if users > 0 {
                Some((rss as f64 - base as f64) * 1024.0 / users as f64)
            } else {
                None
            };
            println!(
                "scale {users:>9} users (published in {publish_secs:.1} s): start to ready {startup:.1} s, restore {restore_sum:.2} s (log elapsed_ms {log_ms:?}), tracked {tracked:.0}, RSS {:.1} MiB (peak {:.1} MiB){}; load {}",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0,
                per_user.map_or(String::new(), |b| format!(", {b:.0} bytes per tracked user over the empty directory")),
                loadavg()
            );
            println!(
                "{:<36}start to ready: autoclaim {startup_cpu:.1} CPU s ({:.2} cores), broker {:.2} cores, machine busy {:.0}%",
                "",
                startup_cpu / startup.max(1e-9),
                startup_window.broker_cpu.unwrap_or(0.0) / startup.max(1e-9),
                startup_window.machine_busy * 100.0
            );
            rows.push(json!({
                "users": users, "publish_s": publish_secs, "startup_s": startup,
                "restore_s": restore_sum, "restore_log_ms": log_ms, "tracked_users": tracked,
                "rss_mib": rss as f64 / 1024.0, "peak_rss_mib": hwm as f64 / 1024.0,
                "bytes_per_user": per_user, "loadavg": loadavg(),
                "startup_cpu_s": startup_cpu, "startup_window": startup_window.json(),
            }));
            self.cluster.delete(std::slice::from_ref(&topics.directory));
        }
        self.results.insert("scale".into(), json!(rows));
        Ok(())
    }
}

fn stop_perf(perf: Option<(Child, PathBuf)>) {
    if let Some((mut c, path)) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let _ = c.wait();
        println!("      perf profile: {}", path.display());
    }
}

/// Waits until the children's committed counters add up to `target`; returns when they did.
fn wait_processed(children: &mut [&mut RunChild], target: f64) -> anyhow::Result<Instant> {
    let started = Instant::now();
    let mut last: Option<(Instant, f64)> = None;
    loop {
        let mut processed = 0.0;
        for c in children.iter_mut() {
            c.check_alive()?;
            processed += c.processed();
        }
        let now = Instant::now();
        if processed >= target {
            return Ok(now);
        }
        if started.elapsed() > PROCESS_TIMEOUT {
            bail!("only {processed} of {target} events processed in {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(poll_interval(last, now, processed, target));
        last = Some((now, processed));
    }
}

/// How long to wait before looking at the counters again: half the expected time to the target at
/// the current rate, between 10 and 200 ms, so that scraping /metrics costs the child little and
/// the end is still seen within 10 ms.
fn poll_interval(
    last: Option<(Instant, f64)>,
    now: Instant,
    processed: f64,
    target: f64,
) -> Duration {
    let Some((then, before)) = last else {
        return Duration::from_millis(10);
    };
    let rate = (processed - before) / now.duration_since(then).as_secs_f64().max(1e-6);
    if rate <= 0.0 {
        return Duration::from_millis(100);
    }
    Duration::from_secs_f64(((target - processed) / rate / 2.0).clamp(0.01, 0.2))
}

/// Reads the assignments and failures topics (read_committed) and returns, for each output, the
/// microseconds from its input's hand-over to the producer to its visibility here.
fn watch_outputs(
    kafka: &KafkaArgs,
    topics: &Topics,
    event_prefix: &str,
    base: Instant,
    sent: &[AtomicU64],
    stop: &AtomicBool,
    fetch_wait_ms: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut config = clients::table_reader(kafka);
    config
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut assignment = TopicPartitionList::new();
    for topic in [&topics.assignments, &topics.failures] {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(result) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let Ok(message) = result else {
            continue;
        };
        let seen = base.elapsed().as_nanos() as u64;
        let format = message
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key.eq_ignore_ascii_case(codec::CONTENT_TYPE_HEADER))
                    .and_then(|h| h.value)
            })
            .map_or(Ok(Format::Json), |v| Format::from_content_type(Some(v)))
            .unwrap_or(Format::Json);
        let Some(payload) = message.payload() else {
            continue;
        };
        let event_id = if message.topic() == topics.assignments {
            codec::decode::<pb::LicenseAssignment>(payload, format)
                .map(|m| m.trigger_event_id)
                .ok()
        } else {
            codec::decode::<pb::AutoclaimFailure>(payload, format)
                .map(|m| m.trigger_event_id)
                .ok()
        };
        let Some(index) = event_id
            .as_deref()
            .and_then(|id| id.strip_prefix(event_prefix))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(at) = sent.get(index).map(|s| s.load(Ordering::Relaxed)) else {
            continue;
        };
        if at > 0 && seen >= at {
            latencies.push((seen - at) / 1000);
        }
    }
    Ok(latencies)
}

/// Publishes a directory of `users` users (`per_tenant` a tenant), shaped like the scenario's:
/// 20% with Power Automate per user, 10% with Premium, 4% disabled, 3% guests, 2% without a usage
/// location. Streams, so that 10M users need no memory.
fn publish_directory(
    kafka: &KafkaArgs,
    topics: &Topics,
    format: Format,
    users: usize,
    per_tenant: usize,
    seed: u64,
) -> anyhow::Result<()> {
    if users == 0 {
        return Ok(());
    }
    let publisher = Publisher::new(kafka, topics, format)?;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5ca1e);
    let guid = |rng: &mut SmallRng| uuid::Uuid::from_u128(rng.random::<u128>()).to_string();
    let as_of = Some(crate::wire::convert::to_wire_timestamp(
        crate::domain::time::Timestamp::from_millis(1_772_427_600_000),
    ));
    let mut tenant = guid(&mut rng);
    for i in 0..users {
        if i > 0 && i % per_tenant.max(1) == 0 {
            tenant = guid(&mut rng);
        }
        let roll: f64 = rng.random();
        let licenses = if roll < 0.2 {
            vec![pb::AssignedLicense {
                sku_id: "4a51bf65-409c-4a91-b845-1121b571cc9d".into(),
                disabled_plan_ids: vec![],
            }]
        } else if roll < 0.3 {
            vec![pb::AssignedLicense {
                sku_id: "eda1941c-3c4f-4995-b5eb-e85a42175ab9".into(),
                disabled_plan_ids: vec![],
            }]
        } else {
            vec![]
        };
        let user = pb::DirectoryUser {
            tenant_id: tenant.clone(),
            user_id: guid(&mut rng),
            account_enabled: rng.random_bool(0.96),
            user_type: if rng.random_bool(0.03) {
                pb::directory_user::UserType::Guest
            } else {
                pb::directory_user::UserType::Member
            } as i32,
            usage_location: if rng.random_bool(0.02) {
                String::new()
            } else {
                "US".into()
            },
            licenses,
            as_of,
        };
        publisher.send(&pb::ReplayRecord {
            record: Some(Record::DirectoryUser(user)),
        })?;
    }
    publisher.flush(Duration::from_secs(600))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_quantiles_of_prometheus_text() {
        let text = "\
autoclaim_events_total{kind=\"a\",outcome=\"b\"} 10
autoclaim_events_total{kind=\"c\",outcome=\"d\"} 5
autoclaim_events_total_other 100
x_bucket{le=\"0.01\"} 50
x_bucket{le=\"0.1\"} 100
x_bucket{le=\"+Inf\"} 100
x_sum 3
x_count 100
";
        assert_eq!(metric_sum(text, "autoclaim_events_total"), 15.0);
        assert_eq!(metric_sum(text, "x_count"), 100.0);
        let p50 = histogram_quantile(text, "x", 0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9);
        let p75 = histogram_quantile(text, "x", 0.75).unwrap();
        assert!((p75 - 0.055).abs() < 1e-9);
    }

    #[test]
    fn restore_lines_are_read() {
        let log = "2026 INFO partition state restored partitions=[0] assignments=0 directory_rows=5 elapsed_ms=1234\nother";
        assert_eq!(restore_log_ms(log), vec![1234]);
    }

    #[test]
    fn own_process_figures_are_readable() {
        assert!(status_kib("self", "VmHWM") > 0);
        assert!(proc_stat_ticks("self").is_some());
    }
}
