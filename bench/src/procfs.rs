//! Figures of processes and of the machine, read from `/proc`.
use std::process::Command;
use std::time::Instant;

use serde_json::json;

pub(crate) fn proc_stat_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system, all threads) of a process; USER_HZ is 100 on Linux.
pub(crate) fn cpu_secs(pid: &str) -> f64 {
    proc_stat_ticks(pid).unwrap_or(0) as f64 / 100.0
}

pub(crate) fn status_kib(pid: &str, field: &str) -> u64 {
    status_like(&format!("/proc/{pid}/status"), field)
}

pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// (busy, total) jiffies of the whole machine.
pub(crate) fn machine_jiffies() -> (u64, u64) {
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
pub(crate) struct Window {
    pub(crate) started: Instant,
    pub(crate) broker: Option<String>,
    pub(crate) broker_cpu: f64,
    pub(crate) machine: (u64, u64),
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct WindowFigures {
    pub(crate) wall: f64,
    pub(crate) broker_cpu: Option<f64>,
    pub(crate) machine_busy: f64,
    pub(crate) load: String,
}

impl Window {
    pub(crate) fn start(broker: Option<u32>) -> Window {
        let broker = broker.map(|p| p.to_string());
        Window {
            started: Instant::now(),
            broker_cpu: broker.as_deref().map_or(0.0, cpu_secs),
            broker,
            machine: machine_jiffies(),
        }
    }

    pub(crate) fn finish(&self) -> WindowFigures {
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
    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "wall_s": self.wall,
            "broker_cpu_s": self.broker_cpu,
            "machine_busy": self.machine_busy,
            "loadavg": self.load,
        })
    }

    pub(crate) fn describe(&self, events: usize) -> String {
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

pub(crate) fn machine() -> serde_json::Value {
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

/// The number after `field:` in a file of `/proc/<pid>/status` or `/proc/meminfo` form (0 if none).
pub(crate) fn status_like(path: &str, field: &str) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_are_readable() {
        assert!(status_kib("self", "VmHWM") > 0);
        assert!(proc_stat_ticks("self").is_some());
    }
}
