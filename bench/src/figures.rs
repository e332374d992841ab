//! What a throughput phase measured, and how it is printed and recorded.
use serde_json::json;

use crate::procfs::WindowFigures;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Throughput {
    pub(crate) events: usize,
    pub(crate) secs: f64,
    pub(crate) cpu_secs: f64,
    pub(crate) peak_rss_kib: u64,
    pub(crate) outputs: u64,
    pub(crate) window: WindowFigures,
    pub(crate) commits: Option<CommitTimes>,
}

/// Durations of the steps of each commit, in microseconds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct CommitTimes {
    pub(crate) offsets_us: Vec<u64>,
    /// Empty when the drain is part of `commit_us` (autoclaim's log times both together).
    pub(crate) drain_us: Vec<u64>,
    pub(crate) commit_us: Vec<u64>,
}

pub(crate) fn mean_ms(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1000.0
}

pub(crate) fn quantile_ms(v: &[u64], q: f64) -> f64 {
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
    pub(crate) fn from_log(log: &str) -> Option<CommitTimes> {
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

    pub(crate) fn total_secs(&self) -> f64 {
        (self.offsets_us.iter().sum::<u64>()
            + self.drain_us.iter().sum::<u64>()
            + self.commit_us.iter().sum::<u64>()) as f64
            / 1e6
    }

    pub(crate) fn describe(&self, wall: f64) -> String {
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

    pub(crate) fn json(&self) -> serde_json::Value {
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
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }

    pub(crate) fn cpu_per_million(&self) -> f64 {
        self.cpu_secs / (self.events as f64 / 1e6)
    }

    /// The broker's CPU seconds over the window, per million events.
    pub(crate) fn broker_cpu_per_million(&self) -> Option<f64> {
        Some(self.window.broker_cpu? / (self.events as f64 / 1e6))
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "events": self.events,
            "seconds": self.secs,
            "events_per_s": self.rate(),
            "cpu_s": self.cpu_secs,
            "cpu_s_per_million": self.cpu_per_million(),
            "broker_cpu_s_per_million": self.broker_cpu_per_million(),
            "peak_rss_mib": self.peak_rss_kib as f64 / 1024.0,
            "outputs": self.outputs,
            "window": self.window.json(),
            "commits": self.commits.as_ref().map(CommitTimes::json),
        })
    }

    pub(crate) fn line(&self, name: &str) -> String {
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
