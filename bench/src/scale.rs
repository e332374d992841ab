//! State restore time and memory for large directories.
use std::time::{Duration, Instant};

use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::pipeline::publish::Publisher;
use autoclaim::telemetry;
use autoclaim::wire::pb::{self, replay_record::Record};
use autoclaim::wire::Format;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::child::{restore_log_ms, RunChild};
use crate::cluster::topic_set;
use crate::harness::Bench;
use crate::metrics_text::metric_sum;
use crate::procfs::{cpu_secs, loadavg, status_kib, Window, WindowFigures};
use crate::throughput::stop_perf;

/// What one directory size measured.
struct ScaleFigures {
    users: usize,
    publish_secs: f64,
    /// Spawn to ready.
    startup: f64,
    startup_cpu: f64,
    startup_window: WindowFigures,
    restore_sum: f64,
    restore_log_ms: Vec<u64>,
    tracked: f64,
    rss_kib: u64,
    hwm_kib: u64,
    /// RSS over the empty directory's, per user.
    bytes_per_user: Option<f64>,
    load: String,
}

impl Bench<'_> {
    pub(crate) fn scale(&mut self) -> anyhow::Result<()> {
        let mut sizes = vec![0usize];
        sizes.extend(self.args.scale_users.iter().copied().filter(|u| *u > 0));
        let mut baseline: Option<u64> = None;
        let mut rows = Vec::new();
        for users in sizes {
            let mut figures = self.scale_round(users)?;
            let base = *baseline.get_or_insert(figures.rss_kib);
            figures.bytes_per_user =
                (users > 0).then(|| (figures.rss_kib as f64 - base as f64) * 1024.0 / users as f64);
            figures.print();
            rows.push(figures.json());
        }
        self.results.insert("scale".into(), json!(rows));
        Ok(())
    }

    /// A directory of `users` users published, `run` started on it until ready and its tracked
    /// users counted, then stopped.
    fn scale_round(&mut self, users: usize) -> anyhow::Result<ScaleFigures> {
        let a = self.args;
        let topics = topic_set(
            &self.prefix,
            &format!("scale-{users}"),
            "scale-out",
            "scale",
        );
        self.cluster.create(&topics, a.partitions)?;
        let publish_secs = self.publish_directory(&topics, users)?;
        let group = format!("{}.scale-{users}", self.prefix);
        let mut child = self.child(&topics, &group, &format!("{}.scale-{users}-0", self.prefix))?;
        let perf = (users > 0)
            .then(|| self.start_perf(&child.pid(), &format!("restore-{users}")))
            .flatten();
        let window = Window::start(self.broker);
        let ready = child.wait_ready(Duration::from_millis(50))?;
        stop_perf(perf);
        let startup = ready.duration_since(child.spawned).as_secs_f64();
        let startup_cpu = cpu_secs(&child.pid());
        let startup_window = window.finish();
        let tracked = wait_tracked(&child, users, ready);
        let pid = child.pid();
        let (rss_kib, hwm_kib) = (status_kib(&pid, "VmRSS"), status_kib(&pid, "VmHWM"));
        let restore_sum = metric_sum(
            &child.metrics(),
            &format!("{}_sum", telemetry::RESTORE_SECONDS),
        );
        let restore_log_ms = restore_log_ms(&child.log_text());
        child.stop();
        let load = loadavg();
        self.cluster.delete(&[
            topics.directory.clone(),
            topics.directory_by_partition.clone(),
        ]);
        Ok(ScaleFigures {
            users,
            publish_secs,
            startup,
            startup_cpu,
            startup_window,
            restore_sum,
            restore_log_ms,
            tracked,
            rss_kib,
            hwm_kib,
            bytes_per_user: None,
            load,
        })
    }
}

impl Bench<'_> {
    /// Publishes a directory of `users` users of the run's format, tenant size and seed; returns
    /// the seconds it took.
    pub(crate) fn publish_directory(&self, topics: &Topics, users: usize) -> anyhow::Result<f64> {
        let a = self.args;
        let published = Instant::now();
        write_directory(
            &a.kafka,
            topics,
            a.format,
            users,
            a.scale_users_per_tenant,
            a.seed,
        )?;
        Ok(published.elapsed().as_secs_f64())
    }
}

/// The child's tracked-users gauge once it counts every user of the directory (it is refreshed
/// every 5 s, so at least 6 s after `ready`), or what it says after 15 s.
fn wait_tracked(child: &RunChild, users: usize, ready: Instant) -> f64 {
    let mut tracked = 0.0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        tracked = metric_sum(&child.metrics(), telemetry::TRACKED_USERS);
        if tracked as usize >= users && Instant::now() > ready + Duration::from_secs(6) {
            break;
        }
    }
    tracked
}

impl ScaleFigures {
    fn print(&self) {
        let users = self.users;
        let startup = self.startup;
        println!(
            "scale {users:>9} users (published in {:.1} s): start to ready {startup:.1} s, restore {:.2} s (log elapsed_ms {:?}), tracked {:.0}, RSS {:.1} MiB (peak {:.1} MiB){}; load {}",
            self.publish_secs,
            self.restore_sum,
            self.restore_log_ms,
            self.tracked,
            self.rss_kib as f64 / 1024.0,
            self.hwm_kib as f64 / 1024.0,
            self.bytes_per_user.map_or(String::new(), |b| format!(", {b:.0} bytes per tracked user over the empty directory")),
            self.load
        );
        println!(
            "{:<36}start to ready: autoclaim {:.1} CPU s ({:.2} cores), broker {:.2} cores, machine busy {:.0}%",
            "",
            self.startup_cpu,
            self.startup_cpu / startup.max(1e-9),
            self.startup_window.broker_cpu.unwrap_or(0.0) / startup.max(1e-9),
            self.startup_window.machine_busy * 100.0
        );
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "users": self.users, "publish_s": self.publish_secs, "startup_s": self.startup,
            "restore_s": self.restore_sum, "restore_log_ms": self.restore_log_ms,
            "tracked_users": self.tracked,
            "rss_mib": self.rss_kib as f64 / 1024.0, "peak_rss_mib": self.hwm_kib as f64 / 1024.0,
            "bytes_per_user": self.bytes_per_user, "loadavg": self.load,
            "startup_cpu_s": self.startup_cpu, "startup_window": self.startup_window.json(),
        })
    }
}

/// Publishes a directory of `users` users (`per_tenant` a tenant), drawn as the scenario draws
/// them. Streams, so that 10M users need no memory.
fn write_directory(
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
    let as_of = Some(autoclaim::wire::convert::to_wire_timestamp(
        autoclaim::domain::time::Timestamp::from_millis(1_772_427_600_000),
    ));
    let mut tenant = guid(&mut rng);
    for i in 0..users {
        if i > 0 && i % per_tenant.max(1) == 0 {
            tenant = guid(&mut rng);
        }
        let user_id = guid(&mut rng);
        let user = autoclaim::scenario::directory_user(&mut rng, tenant.clone(), user_id, as_of);
        publisher.send(&pb::ReplayRecord {
            record: Some(Record::DirectoryUser(user)),
            written_at: None,
        })?;
    }
    publisher.flush(Duration::from_secs(600))?;
    Ok(())
}
