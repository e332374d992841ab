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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::pipeline::config::{KafkaArgs, Topics};
use crate::scenario::ScenarioConfig;
use crate::wire::Format;

mod child;
mod cluster;
mod figures;
mod instances;
mod latency;
mod pass_through;
mod procfs;
mod scale;
mod throughput;

use child::*;
use cluster::*;
use figures::*;
use pass_through::*;
use procfs::*;

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
    /// More arguments for every `autoclaim run` child, e.g. `--run-arg=--batch-min-time=100ms`
    /// (repeatable).
    #[arg(long = "run-arg", allow_hyphen_values = true)]
    pub run_args: Vec<String>,
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
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
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
            extra_args: &self.args.run_args,
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
            misplace_activity: false,
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
