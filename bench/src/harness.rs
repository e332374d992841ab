//! One benchmark run: its topics and children, the phases asked for in order, and the figures they
//! record.
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use autoclaim::loadgen::{self, LoadOptions};
use autoclaim::pipeline::config::Topics;
use autoclaim::scenario::ScenarioConfig;
use serde_json::json;

use crate::args::{BenchArgs, Phase};
use crate::child::{format_name, ChildOptions, RunChild};
use crate::cluster::{topic_set, Cluster};
use crate::figures::Throughput;
use crate::pass_through::PassThrough;
use crate::procfs::{loadavg, machine};

/// The throughput phases of one `--repeat` round.
pub(crate) struct Round {
    pub(crate) plain: Option<Throughput>,
    /// The transactional pass-through copying every record.
    pub(crate) txn: Option<Throughput>,
    pub(crate) run: Option<Throughput>,
    pub(crate) like: Option<LikeForLike>,
}

/// The transactional pass-through copying the share of records autoclaim wrote.
pub(crate) struct LikeForLike {
    pub(crate) share: f64,
    pub(crate) figures: Throughput,
}

pub(crate) struct Bench<'a> {
    pub(crate) args: &'a BenchArgs,
    pub(crate) prefix: String,
    /// The `autoclaim` binary of the `run` children.
    pub(crate) binary: PathBuf,
    /// This executable, which runs each pass-through ceiling in a process of its own.
    pub(crate) harness: PathBuf,
    pub(crate) broker: Option<u32>,
    pub(crate) cluster: Cluster,
    pub(crate) results: serde_json::Map<String, serde_json::Value>,
    /// Round of the ceiling and run phases (`--repeat`): 0 for the first.
    pub(crate) round: usize,
}

/// `--broker-pid`, else the pid file of the scripts/kafka broker in `$AUTOCLAIM_KAFKA_RUN`.
pub(crate) fn broker_pid(args: &BenchArgs) -> Option<u32> {
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

/// `autoclaim` in the directory of this executable: cargo puts both binaries of the workspace in
/// the same target directory.
fn autoclaim_beside(harness: &Path) -> anyhow::Result<PathBuf> {
    let dir = harness
        .parent()
        .context("this executable has no directory")?;
    Ok(dir.join(format!("autoclaim{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs the phases asked for and prints the figures (or, with `--internal-pass-through`, the one
/// pass-through a parent run asked for).
pub fn command(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(kind) = &args.internal_pass_through {
        let figures = PassThrough::from_internal_args(&args, kind)?.run()?;
        println!("{}", serde_json::to_string(&figures)?);
        return Ok(());
    }
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench-{}", unix_secs()));
    let harness = std::env::current_exe().context("cannot find this executable")?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => autoclaim_beside(&harness)?,
    };
    std::fs::create_dir_all(&args.work_dir)?;
    let mut bench = Bench {
        round: 0,
        args: &args,
        prefix,
        binary,
        harness,
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
    pub(crate) fn has(&self, phase: Phase) -> bool {
        self.args.phases.contains(&phase)
    }

    pub(crate) fn main_topics(&self, outputs: &str) -> Topics {
        topic_set(&self.prefix, "tables", outputs, "load")
    }

    pub(crate) fn child(&self, topics: &Topics, group: &str, id: &str) -> anyhow::Result<RunChild> {
        RunChild::spawn(&ChildOptions {
            binary: &self.binary,
            kafka: &self.args.kafka,
            topics,
            group,
            transactional_id: id,
            output_format: self.args.output_format,
            batch: self.args.batch(),
            log: self.args.work_dir.join(format!("{id}.log")),
            log_filter: &self.args.child_log,
            extra_args: &self.args.run_args,
        })
    }

    pub(crate) fn scenario_config(&self) -> ScenarioConfig {
        ScenarioConfig {
            tenants: self.args.tenants,
            users_per_tenant: self.args.users_per_tenant,
            seed: self.args.seed,
            ..ScenarioConfig::default()
        }
    }

    fn run_all(&mut self) -> anyhow::Result<()> {
        self.record_setting();
        let needs_load = [Phase::Ceiling, Phase::Run, Phase::Latency, Phase::Instances]
            .iter()
            .any(|p| self.has(*p));
        if needs_load {
            self.load()?;
        }
        let rounds = self.throughput_rounds()?;
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
        if self.has(Phase::RestoreShare) {
            self.restore_share()?;
        }
        println!("done; load {}", loadavg());
        Ok(())
    }

    /// Prints and records the machine, the broker and the parameters of the run.
    fn record_setting(&mut self) {
        let a = self.args;
        println!(
            "autoclaim-bench: prefix {}, brokers {}",
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
                "batch_min_time_ms": a.batch_min_time.as_millis() as u64,
                "ceiling_output_share": a.ceiling_output_share.to_string(),
                "rate": a.rate, "latency_s": a.latency_duration.as_secs_f64(),
            }),
        );
    }

    /// The ceiling and run phases, `--repeat` times, interleaved: plain, transactional (every record
    /// copied), run, transactional (like for like).
    fn throughput_rounds(&mut self) -> anyhow::Result<Vec<Round>> {
        let repeat = self.args.repeat;
        let mut rounds: Vec<Round> = Vec::new();
        for round in 0..repeat.max(1) {
            self.round = round;
            if repeat > 1 {
                println!("round {} of {}", round + 1, repeat);
            }
            let (plain, txn) = if self.has(Phase::Ceiling) {
                let (p, t) = self.ceilings()?;
                (Some(p), Some(t))
            } else {
                (None, None)
            };
            let run = if self.has(Phase::Run) {
                Some(self.run_phase(plain.as_ref(), txn.as_ref())?)
            } else {
                None
            };
            // After the run, so that `auto` knows the share the run wrote.
            let like = if self.has(Phase::Ceiling) {
                self.like_for_like_ceiling(run.as_ref())?
            } else {
                None
            };
            rounds.push(Round {
                plain,
                txn,
                run,
                like,
            });
        }
        Ok(rounds)
    }

    fn load(&mut self) -> anyhow::Result<()> {
        let topics = self.main_topics("run");
        self.cluster.create(&topics, self.args.partitions)?;
        let options = LoadOptions {
            scenario: self.scenario_config(),
            events: self.args.events,
            rate: 0,
            skip_tables: false,
            format: self.args.format,
            misplace_activity: false,
        };
        let started = Instant::now();
        let report = loadgen::run(&self.args.kafka, &topics, &options, &|| false)?;
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
    pub(crate) fn tagged(&self, name: &str) -> String {
        if self.round == 0 {
            name.to_owned()
        } else {
            format!("{name}-r{}", self.round + 1)
        }
    }
}
