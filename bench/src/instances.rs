//! Throughput with 1, 2, 3 instances of `run` in one group.
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::child::{poll_interval, RunChild, PROCESS_TIMEOUT};
use crate::harness::Bench;
use crate::procfs::{cpu_secs, Window, WindowFigures};

/// The moment every instance of the group was ready, and where they stood then.
struct AllReady {
    at: Instant,
    processed: f64,
    /// CPU seconds of each instance.
    cpu: Vec<f64>,
    window: Window,
}

/// When the instances of one group became ready and when they had processed every event.
struct GroupProgress {
    first_ready: Option<Instant>,
    all_ready: Option<AllReady>,
    done: Instant,
}

/// What one instance count measured.
struct InstancesFigures {
    instances: usize,
    /// Events per second from the first ready instance to the last commit.
    total_rate: f64,
    /// Events per second from starting the instances to the last commit: what a group that
    /// starts together takes, start-up (table load, rebalances, restores) included.
    from_start_rate: f64,
    /// Share of the events left when every instance was ready (0 if they never all were).
    steady_share: f64,
    steady_rate: Option<f64>,
    steady_cores: Option<f64>,
    steady_window: Option<WindowFigures>,
    cpu_per_million: f64,
    rebalances: usize,
    window: WindowFigures,
}

impl Bench<'_> {
    pub(crate) fn instances(&mut self) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        for &k in &self.args.instances {
            let figures = self.instances_round(k)?;
            figures.print(self.args.events);
            rows.push(figures.json());
        }
        self.results.insert("instances".into(), json!(rows));
        Ok(())
    }

    /// `k` instances of `run` in one group on output topics of their own, until they processed
    /// every event.
    fn instances_round(&mut self, k: usize) -> anyhow::Result<InstancesFigures> {
        let events = self.args.events as f64;
        let topics = self.main_topics(&format!("instances-{k}"));
        self.cluster.create(&topics, self.args.partitions)?;
        let group = format!("{}.instances-{k}", self.prefix);
        let mut children = Vec::new();
        for j in 0..k {
            let id = format!("{}.instances-{k}-{j}", self.prefix);
            children.push(self.child(&topics, &group, &id)?);
        }
        let spawned = Instant::now();
        let pids: Vec<String> = children.iter().map(RunChild::pid).collect();
        let cpu_start: Vec<f64> = pids.iter().map(|p| cpu_secs(p)).collect();
        let window = Window::start(self.broker);
        let progress = self.wait_group(&mut children, &pids, spawned)?;
        let whole = window.finish();
        let cpu_end: Vec<f64> = pids.iter().map(|p| cpu_secs(p)).collect();
        let rebalances: usize = children
            .iter()
            .map(|c| c.log_text().matches("partitions assigned").count())
            .sum();
        for c in &mut children {
            c.stop();
        }
        let first = progress.first_ready.unwrap_or(spawned);
        let steady = progress
            .all_ready
            .as_ref()
            .filter(|r| progress.done > r.at && events - r.processed > 0.0);
        let steady_secs = steady.map(|r| progress.done.duration_since(r.at).as_secs_f64());
        let total_cpu: f64 = cpu_end.iter().zip(&cpu_start).map(|(e, s)| e - s).sum();
        let figures = InstancesFigures {
            instances: k,
            total_rate: events / progress.done.duration_since(first).as_secs_f64(),
            from_start_rate: events / progress.done.duration_since(spawned).as_secs_f64(),
            steady_share: progress
                .all_ready
                .as_ref()
                .map_or(0.0, |r| 1.0 - r.processed / events),
            steady_rate: steady
                .zip(steady_secs)
                .map(|(r, s)| (events - r.processed) / s),
            steady_cores: steady.zip(steady_secs).map(|(r, secs)| {
                cpu_end.iter().zip(&r.cpu).map(|(e, s)| e - s).sum::<f64>() / secs
            }),
            steady_window: steady.map(|r| r.window.finish()),
            cpu_per_million: total_cpu / (events / 1e6),
            rebalances,
            window: whole,
        };
        let names = [topics.assignments, topics.failures, topics.dead_letters];
        self.cluster.delete(&names);
        Ok(figures)
    }

    /// Polls the group's readiness and counters until they processed every event: readiness (ready
    /// and owning partitions) every 20 ms until all are, then the counters as `wait_processed` does.
    fn wait_group(
        &self,
        children: &mut [RunChild],
        pids: &[String],
        spawned: Instant,
    ) -> anyhow::Result<GroupProgress> {
        let target = self.args.events as f64;
        let mut first_ready: Option<Instant> = None;
        let mut all_ready: Option<AllReady> = None;
        let mut last: Option<(Instant, f64)> = None;
        loop {
            for c in children.iter_mut() {
                c.check_alive()?;
            }
            let ready: Vec<bool> = if all_ready.is_none() {
                children.iter().map(RunChild::working).collect()
            } else {
                vec![true; children.len()]
            };
            let processed: f64 = children.iter().map(RunChild::processed).sum();
            let now = Instant::now();
            if first_ready.is_none() && ready.iter().any(|r| *r) {
                first_ready = Some(Instant::now());
            }
            if all_ready.is_none() && ready.iter().all(|r| *r) {
                all_ready = Some(AllReady {
                    at: Instant::now(),
                    processed,
                    cpu: pids.iter().map(|p| cpu_secs(p)).collect(),
                    window: Window::start(self.broker),
                });
            }
            if processed >= target {
                let done = Instant::now();
                return Ok(GroupProgress {
                    first_ready,
                    all_ready,
                    done,
                });
            }
            if spawned.elapsed() > PROCESS_TIMEOUT {
                bail!(
                    "{} instances did not process {} events",
                    children.len(),
                    self.args.events
                );
            }
            if all_ready.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            } else {
                std::thread::sleep(poll_interval(last, now, processed, target));
                last = Some((now, processed));
            }
        }
    }
}

impl InstancesFigures {
    fn print(&self, events: usize) {
        let k = self.instances;
        println!(
            "instances {k}: {:.0} events/s from start to the last commit, {:.0} from the first ready instance; steady (all {k} ready with partitions, {:.0}% of events left): {}; autoclaim CPU {:.1} s/M events, {} cores in steady state; {} partition assignments",
            self.from_start_rate,
            self.total_rate,
            self.steady_share * 100.0,
            self.steady_rate
                .map_or("n/a".to_owned(), |r| format!("{r:.0} events/s")),
            self.cpu_per_million,
            self.steady_cores
                .map_or("n/a".to_owned(), |c| format!("{c:.2}")),
            self.rebalances,
        );
        if let Some(w) = &self.steady_window {
            println!("{:<36}steady window: {}", "", w.describe(events));
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "instances": self.instances, "events_per_s": self.total_rate,
            "events_per_s_from_start": self.from_start_rate,
            "steady_events_per_s": self.steady_rate, "steady_autoclaim_cores": self.steady_cores,
            "cpu_s_per_million": self.cpu_per_million, "rebalances": self.rebalances,
            "window": self.window.json(),
            "steady_window": self.steady_window.as_ref().map(WindowFigures::json),
        })
    }
}
