//! Throughput with 1, 2, 3 instances of `run` in one group.
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::*;

impl Bench<'_> {
    pub(super) fn instances(&mut self) -> anyhow::Result<()> {
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
}
