//! A pass-through ceiling in a process of its own (this executable with `--internal-pass-through`),
//! so that its CPU and peak memory are its own, as autoclaim's are.
use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{bail, Context};

use crate::figures::Throughput;
use crate::harness::Bench;
use crate::pass_through::READY_LINE;

/// What one pass-through child is asked to do.
pub(crate) struct PassThroughJob<'a> {
    /// `plain` or `txn`.
    pub(crate) kind: &'a str,
    /// Names its group and transactional id (with the run's prefix) and its perf profile: each
    /// job needs its own, or it would start from another's committed offsets.
    pub(crate) name: &'a str,
    pub(crate) input: &'a str,
    pub(crate) output: &'a str,
    pub(crate) events: usize,
    /// Share of the records copied.
    pub(crate) share: f64,
}

/// A running pass-through child; its stdout says when it is ready, then gives its figures.
pub(crate) struct PassThroughChild {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    kind: String,
}

impl PassThroughChild {
    pub(crate) fn spawn(bench: &Bench<'_>, job: &PassThroughJob<'_>) -> anyhow::Result<Self> {
        let a = bench.args;
        let mut command = Command::new(&bench.harness);
        command
            .args(["--brokers", &a.kafka.brokers])
            .args(["--events", &job.events.to_string()])
            .args(a.batch().command_line_args())
            .args(["--drain-sleep-us", &a.drain_sleep_us.to_string()])
            .args(["--ceiling-output-share", &job.share.to_string()])
            .args(
                a.ceiling_linger_ms
                    .map(|l| vec!["--ceiling-linger-ms".to_owned(), l.to_string()])
                    .unwrap_or_default(),
            )
            .args(["--prefix", &format!("{}.{}", bench.prefix, job.name)])
            .args(["--internal-pass-through", job.kind])
            .args(["--internal-input", job.input])
            .args(["--internal-output", job.output]);
        if let Some(pid) = bench.broker {
            command.args(["--broker-pid", &pid.to_string()]);
        }
        for (k, v) in &a.kafka.properties {
            command.args(["--kafka-property", &format!("{k}={v}")]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the pass-through process")?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout of the pass-through")?;
        Ok(PassThroughChild {
            child,
            stdout: BufReader::new(stdout).lines(),
            kind: job.kind.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits until the child owns partitions of its input.
    pub(crate) fn wait_ready(&mut self) -> anyhow::Result<()> {
        for line in self.stdout.by_ref() {
            if line? == READY_LINE {
                return Ok(());
            }
        }
        bail!("the {} pass-through ended before it was ready", self.kind)
    }

    /// Waits for the child to copy its records and exit; its figures are its last line.
    pub(crate) fn finish(mut self) -> anyhow::Result<Throughput> {
        let mut last = String::new();
        for line in self.stdout.by_ref() {
            last = line?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the {} pass-through failed ({status})", self.kind);
        }
        serde_json::from_str(&last).with_context(|| format!("pass-through output: {last}"))
    }
}

impl Drop for PassThroughChild {
    /// A child left behind by an error would otherwise wait for records that never come.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
