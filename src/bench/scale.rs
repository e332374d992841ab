//! State restore time and memory for large directories.
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::publish::Publisher;
use crate::wire::pb::{self, replay_record::Record};
use crate::wire::Format;

use super::throughput::stop_perf;
use super::*;

impl Bench<'_> {
    pub(super) fn scale(&mut self) -> anyhow::Result<()> {
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

/// Publishes a directory of `users` users (`per_tenant` a tenant), drawn as the scenario draws
/// them. Streams, so that 10M users need no memory.
pub(super) fn publish_directory(
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
        let user_id = guid(&mut rng);
        let user = crate::scenario::directory_user(&mut rng, tenant.clone(), user_id, as_of);
        publisher.send(&pb::ReplayRecord {
            record: Some(Record::DirectoryUser(user)),
            written_at: None,
        })?;
    }
    publisher.flush(Duration::from_secs(600))?;
    Ok(())
}
