//! The command line of `autoclaim-bench`: the phases to run and the shape of the workload.
use std::path::PathBuf;
use std::time::Duration;

use autoclaim::pipeline::config::KafkaArgs;
use autoclaim::wire::Format;
use clap::{Parser, ValueEnum};

use crate::share::OutputShare;

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
    /// Restore of one partition, and of all, from the directory copy at 6, 24, 48 partitions.
    RestoreShare,
}

/// End-to-end benchmark against a real broker: pass-through ceilings, `autoclaim run` throughput,
/// latency at a fixed rate, restore and memory at scale, 1-3 instances (see BENCHMARKS.md).
#[derive(Parser, Clone, Debug)]
#[command(name = "autoclaim-bench", version)]
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
    /// Both also commit as soon as nothing more is waiting, once the transaction is this old
    /// (autoclaim's `--batch-min-time`; give it here, not with `--run-arg`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0ms")]
    pub batch_min_time: Duration,
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
    /// Directory users of the restore-share phase.
    #[arg(long, default_value_t = 10_000_000)]
    pub share_users: usize,
    /// Activity partition counts of the restore-share phase.
    #[arg(long, value_delimiter = ',', default_value = "6,24,48")]
    pub share_partitions: Vec<i32>,
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
    /// The autoclaim binary to start (default: `autoclaim` beside this executable, as cargo builds
    /// them).
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
    /// Share of the records the like-for-like transactional pass-through copies (every record still
    /// counts and its offset commits): `auto`, the share of outputs autoclaim wrote on the same
    /// input in the same run (measured by the run phase of the round, and by the latency phase for
    /// its own pass-through), or a number in (0, 1]. The plain and the full-copy transactional
    /// ceilings always copy every record.
    #[arg(long, default_value = "auto")]
    pub ceiling_output_share: OutputShare,
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

/// The batch bounds autoclaim and the transactional pass-through are given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchBounds {
    pub(crate) max_records: usize,
    pub(crate) max_time: Duration,
    pub(crate) min_time: Duration,
}

impl BenchArgs {
    pub(crate) fn batch(&self) -> BatchBounds {
        BatchBounds {
            max_records: self.batch_max_records,
            max_time: self.batch_max_time,
            min_time: self.batch_min_time,
        }
    }
}

impl BatchBounds {
    /// The bounds as `run` (and this executable) take them on the command line.
    pub(crate) fn command_line_args(&self) -> Vec<String> {
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        vec![
            "--batch-max-records".to_owned(),
            self.max_records.to_string(),
            "--batch-max-time".to_owned(),
            duration(self.max_time),
            "--batch-min-time".to_owned(),
            duration(self.min_time),
        ]
    }
}
