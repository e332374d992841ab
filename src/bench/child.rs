//! `autoclaim run` as a child process: start, readiness, counters from its /metrics, stop.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pipeline::config::{KafkaArgs, Topics};
use crate::wire::Format;

use super::*;

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(super) fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Sum of every series of a metric in Prometheus text.
pub(super) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Quantile of a Prometheus histogram, interpolated linearly inside its bucket (as
/// `histogram_quantile` does).
pub(super) fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            let share = if count > previous.1 {
                (rank - previous.1) / (count - previous.1)
            } else {
                0.0
            };
            return Some(previous.0 + (le - previous.0) * share);
        }
        previous = (le, count);
    }
    None
}

pub(super) struct RunChild {
    pub(super) child: Option<Child>,
    pub(super) http: SocketAddr,
    pub(super) log: PathBuf,
    pub(super) spawned: Instant,
}

pub(super) struct ChildOptions<'a> {
    pub(super) binary: &'a Path,
    pub(super) kafka: &'a KafkaArgs,
    pub(super) topics: &'a Topics,
    pub(super) group: &'a str,
    pub(super) transactional_id: &'a str,
    pub(super) output_format: Format,
    pub(super) batch: (usize, Duration),
    pub(super) log: PathBuf,
    pub(super) log_filter: &'a str,
    /// More arguments of `run` (`--run-arg`), after the bench's own.
    pub(super) extra_args: &'a [String],
}

impl RunChild {
    pub(super) fn spawn(o: &ChildOptions<'_>) -> anyhow::Result<RunChild> {
        let port = free_port()?;
        let http: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(&o.log)
            .with_context(|| format!("cannot create {}", o.log.display()))?;
        let t = o.topics;
        let mut command = Command::new(o.binary);
        for (key, _) in std::env::vars() {
            if key.starts_with("AUTOCLAIM_") {
                command.env_remove(key);
            }
        }
        command
            .args(["run", "--brokers", &o.kafka.brokers])
            .args(["--group-id", o.group])
            .args(["--transactional-id", o.transactional_id])
            .args(["--propagation-delay", "2h"])
            .args(["--http-addr", &http.to_string()])
            .args(t.command_line_args())
            .args(["--output-format", format_name(o.output_format)])
            .args(["--batch-max-records", &o.batch.0.to_string()])
            .args([
                "--batch-max-time",
                &humantime::format_duration(o.batch.1).to_string(),
            ]);
        for (k, v) in &o.kafka.properties {
            command.args(["--kafka-property", &format!("{k}={v}")]);
        }
        command.args(o.extra_args);
        let child = command
            .env("AUTOCLAIM_LOG", o.log_filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", o.binary.display()))?;
        Ok(RunChild {
            child: Some(child),
            http,
            log: o.log.clone(),
            spawned: Instant::now(),
        })
    }

    pub(super) fn pid(&self) -> String {
        self.child
            .as_ref()
            .map_or_else(String::new, |c| c.id().to_string())
    }

    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "autoclaim run exited ({status}); log {}:\n{}",
                    self.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }

    pub(super) fn ready(&self) -> bool {
        http_get(self.http, "/readyz").is_some_and(|(s, _)| s == 200)
    }

    pub(super) fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub(super) fn processed(&self) -> f64 {
        let m = self.metrics();
        metric_sum(&m, crate::telemetry::EVENTS) + metric_sum(&m, crate::telemetry::DEAD_LETTERS)
    }

    pub(super) fn wait_ready(&mut self, step: Duration) -> anyhow::Result<Instant> {
        loop {
            self.check_alive()?;
            if self.ready() {
                return Ok(Instant::now());
            }
            if self.spawned.elapsed() > READY_TIMEOUT {
                bail!("autoclaim run not ready after {READY_TIMEOUT:?}");
            }
            std::thread::sleep(step);
        }
    }

    pub(super) fn log_text(&self) -> String {
        // Plain text: the service colours its log only when stderr is a terminal.
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit (the open transaction commits).
    pub(super) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(super) fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Protobuf => "protobuf",
    }
}

/// `elapsed_ms` of the "partition state restored" log lines.
pub(super) fn restore_log_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("partition state restored"))
        .filter_map(|l| {
            l.split("elapsed_ms=")
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until the children's committed counters add up to `target`; returns when they did.
pub(super) fn wait_processed(
    children: &mut [&mut RunChild],
    target: f64,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    let mut last: Option<(Instant, f64)> = None;
    loop {
        let mut processed = 0.0;
        for c in children.iter_mut() {
            c.check_alive()?;
            processed += c.processed();
        }
        let now = Instant::now();
        if processed >= target {
            return Ok(now);
        }
        if started.elapsed() > PROCESS_TIMEOUT {
            bail!("only {processed} of {target} events processed in {PROCESS_TIMEOUT:?}");
        }
        std::thread::sleep(poll_interval(last, now, processed, target));
        last = Some((now, processed));
    }
}

/// How long to wait before looking at the counters again: half the expected time to the target at
/// the current rate, between 10 and 200 ms, so that scraping /metrics costs the child little and
/// the end is still seen within 10 ms.
pub(super) fn poll_interval(
    last: Option<(Instant, f64)>,
    now: Instant,
    processed: f64,
    target: f64,
) -> Duration {
    let Some((then, before)) = last else {
        return Duration::from_millis(10);
    };
    let rate = (processed - before) / now.duration_since(then).as_secs_f64().max(1e-6);
    if rate <= 0.0 {
        return Duration::from_millis(100);
    }
    Duration::from_secs_f64(((target - processed) / rate / 2.0).clamp(0.01, 0.2))
}
