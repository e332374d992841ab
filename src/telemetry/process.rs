//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...),
//! read from `/proc/self` when `/metrics` is scraped, as Prometheus' own client libraries do.
//!
//! Read here rather than through a crate: six numbers from three files do not justify a procfs
//! crate's dependency tree, and they cannot go through the metrics recorder, whose counters are
//! integers (CPU time is fractional seconds). On systems without `/proc` nothing is rendered.
use std::fmt::Write;

use super::{
    PROCESS_CPU, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY, PROCESS_START_TIME,
    PROCESS_VIRTUAL_MEMORY,
};

/// Clock ticks per second of `/proc/<pid>/stat`: USER_HZ, which Linux fixes at 100 for what it
/// exports to user space whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one reading found; a figure that could not be read is left out of the output.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Fields of `/proc/self/stat` this module uses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    /// User plus system time, in ticks.
    cpu_ticks: u64,
    /// Start time after boot, in ticks.
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name, field 2, is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) is fields[n - 3]: the state (field 3) comes first.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (the file gives kB).
fn parse_resident(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits` (absent when unlimited).
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads this process's figures now.
pub fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
    let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
    Sample {
        cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / TICKS_PER_SECOND),
        resident_bytes: read("/proc/self/status")
            .as_deref()
            .and_then(parse_resident),
        virtual_bytes: stat.map(|s| s.virtual_bytes),
        // The directory listing counts the descriptor that reads it too, as other clients' do.
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: read("/proc/self/limits").as_deref().and_then(parse_max_fds),
        start_time_seconds: stat
            .zip(boot)
            .map(|(s, b)| b as f64 + s.start_ticks as f64 / TICKS_PER_SECOND),
    }
}

impl Sample {
    /// Appends the figures in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        };
        let int = |v: Option<u64>| v.map(|v| v.to_string());
        let float = |v: Option<f64>| v.map(|v| v.to_string());
        metric(
            PROCESS_CPU,
            "counter",
            "Total user and system CPU time spent in seconds.",
            float(self.cpu_seconds),
        );
        metric(
            PROCESS_RESIDENT_MEMORY,
            "gauge",
            "Resident memory size in bytes.",
            int(self.resident_bytes),
        );
        metric(
            PROCESS_VIRTUAL_MEMORY,
            "gauge",
            "Virtual memory size in bytes.",
            int(self.virtual_bytes),
        );
        metric(
            PROCESS_OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            int(self.open_fds),
        );
        metric(
            PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            int(self.max_fds),
        );
        metric(
            PROCESS_START_TIME,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            float(self.start_time_seconds),
        );
    }
}

/// Reads the process's figures and appends them to a `/metrics` body.
pub fn render(out: &mut String) {
    sample().render(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis; fields 14, 15, 22 and 23 set apart.
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".into();
        fields[14 - 3] = "250".into();
        fields[15 - 3] = "50".into();
        fields[22 - 3] = "1000".into();
        fields[23 - 3] = "4096".into();
        let text = format!("1234 (auto claim) x) {}\n", fields.join(" "));
        assert_eq!(
            parse_stat(&text),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 1000,
                virtual_bytes: 4096
            })
        );
        assert_eq!(parse_stat("1234 (cut"), None);
    }

    #[test]
    fn status_limits_and_boot_time_are_read() {
        let status = "Name:\tautoclaim\nVmPeak:\t  20000 kB\nVmRSS:\t   1500 kB\n";
        assert_eq!(parse_resident(status), Some(1500 * 1024));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_is_read_and_rendered() {
        let sample = sample();
        if cfg!(target_os = "linux") {
            assert!(sample.resident_bytes.is_some_and(|b| b > 0), "{sample:?}");
            assert!(sample.open_fds.is_some_and(|n| n >= 3), "{sample:?}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let start = sample.start_time_seconds.unwrap();
            assert!(
                start <= now + 1.0 && start > now - 86_400.0,
                "{start} {now}"
            );
        }
        let mut text = String::new();
        Sample {
            cpu_seconds: Some(1.5),
            resident_bytes: Some(2048),
            ..Sample::default()
        }
        .render(&mut text);
        assert!(text
            .contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"));
        assert!(text.contains("process_resident_memory_bytes 2048\n"));
        assert!(
            !text.contains("process_open_fds"),
            "absent figures are left out: {text}"
        );
    }
}
