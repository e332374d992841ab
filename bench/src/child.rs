//! `autoclaim run` as a child process: start, readiness, counters from its /metrics, stop.
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::telemetry;
use autoclaim::wire::Format;

use crate::args::BatchBounds;
use crate::metrics_text::metric_sum;

/// How long to wait for a child's HTTP server: it answers at once when it is up.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bounds a request to a child that stopped answering; /metrics takes milliseconds.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a child may take to become ready (table load and restore of a large directory).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(1200);
/// Guard against a hang while waiting for N events; not a performance threshold.
pub(crate) const PROCESS_TIMEOUT: Duration = Duration::from_secs(1800);

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A client for the children's /readyz and /metrics: a status is an answer (not an error), no
/// proxy (they listen on loopback), and a new connection each time, as a scraper makes.
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(HTTP_CONNECT_TIMEOUT))
        .timeout_global(Some(HTTP_TIMEOUT))
        .http_status_as_error(false)
        .proxy(None)
        .max_idle_connections(0)
        .build()
        .into()
}

/// The status and body of `GET path` at `addr`; `None` if it cannot be had (not listening yet,
/// gone, timed out).
fn http_get(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut response = agent.get(format!("http://{addr}{path}")).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

pub(crate) struct RunChild {
    pub(crate) child: Option<Child>,
    pub(crate) http: SocketAddr,
    agent: ureq::Agent,
    pub(crate) log: PathBuf,
    pub(crate) spawned: Instant,
}

pub(crate) struct ChildOptions<'a> {
    pub(crate) binary: &'a Path,
    pub(crate) kafka: &'a KafkaArgs,
    pub(crate) topics: &'a Topics,
    pub(crate) group: &'a str,
    pub(crate) transactional_id: &'a str,
    pub(crate) output_format: Format,
    pub(crate) batch: BatchBounds,
    pub(crate) log: PathBuf,
    pub(crate) log_filter: &'a str,
    /// More arguments of `run` (`--run-arg`), after the bench's own.
    pub(crate) extra_args: &'a [String],
}

impl RunChild {
    pub(crate) fn spawn(o: &ChildOptions<'_>) -> anyhow::Result<RunChild> {
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
            .args(o.batch.command_line_args());
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
            agent: http_agent(),
            log: o.log.clone(),
            spawned: Instant::now(),
        })
    }

    pub(crate) fn pid(&self) -> String {
        self.child
            .as_ref()
            .map_or_else(String::new, |c| c.id().to_string())
    }

    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
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

    pub(crate) fn ready(&self) -> bool {
        http_get(&self.agent, self.http, "/readyz").is_some_and(|(s, _)| s == 200)
    }

    /// Ready and owning partitions: with incremental rebalancing a member is ready as soon as it
    /// has joined, possibly with nothing assigned yet.
    pub(crate) fn working(&self) -> bool {
        self.ready() && metric_sum(&self.metrics(), telemetry::PARTITIONS_OWNED) > 0.0
    }

    pub(crate) fn metrics(&self) -> String {
        http_get(&self.agent, self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub(crate) fn processed(&self) -> f64 {
        let m = self.metrics();
        metric_sum(&m, telemetry::EVENTS) + metric_sum(&m, telemetry::DEAD_LETTERS)
    }

    pub(crate) fn wait_ready(&mut self, step: Duration) -> anyhow::Result<Instant> {
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

    pub(crate) fn log_text(&self) -> String {
        // Plain text: the service colours its log only when stderr is a terminal.
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and a clean exit (the open transaction commits).
    pub(crate) fn stop(&mut self) {
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

pub(crate) fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Protobuf => "protobuf",
    }
}

/// `elapsed_ms` of the "partition state restored" log lines.
pub(crate) fn restore_log_ms(log: &str) -> Vec<u64> {
    restore_log_field(log, "elapsed_ms")
}

/// A number field (`copy_wait_ms`, `elapsed_ms`, ...) of the "partition state restored" log lines.
pub(crate) fn restore_log_field(log: &str, field: &str) -> Vec<u64> {
    let prefix = format!("{field}=");
    log.lines()
        .filter(|l| l.contains("partition state restored"))
        .filter_map(|l| {
            l.split(prefix.as_str())
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until the children's committed counters add up to `target`; returns when they did.
pub(crate) fn wait_processed(
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
pub(crate) fn poll_interval(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_lines_are_read() {
        let log = "2026 INFO partition state restored partitions=[0] assignments=0 directory_rows=5 copy_wait_ms=17 elapsed_ms=1234\nother";
        assert_eq!(restore_log_ms(log), vec![1234]);
        assert_eq!(restore_log_field(log, "copy_wait_ms"), vec![17]);
    }
}
