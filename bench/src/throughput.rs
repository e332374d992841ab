//! The ceiling and run phases, and the summary of repeated rounds.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use autoclaim::telemetry;
use serde_json::json;

use crate::child::wait_processed;
use crate::figures::{CommitTimes, Throughput};
use crate::harness::{Bench, Round};
use crate::metrics_text::metric_sum;
use crate::procfs::{cpu_secs, status_kib, Window};

impl Bench<'_> {
    pub(crate) fn summarise_rounds(&mut self, rounds: &[Round]) {
        let stats = |pick: &dyn Fn(&Round) -> Option<f64>| {
            let mut v: Vec<f64> = rounds.iter().filter_map(pick).collect();
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| {
                let n = v.len();
                let median = if n % 2 == 0 {
                    (v[n / 2 - 1] + v[n / 2]) / 2.0
                } else {
                    v[n / 2]
                };
                (median, v[0], v[n - 1], v)
            })
        };
        let plain = stats(&|r| r.plain.as_ref().map(Throughput::rate));
        let txn = stats(&|r| r.txn.as_ref().map(Throughput::rate));
        let run = stats(&|r| r.run.as_ref().map(Throughput::rate));
        let run_cpu = stats(&|r| r.run.as_ref().map(Throughput::cpu_per_million));
        println!("summary of {} rounds (median, min..max):", rounds.len());
        for (name, s) in [
            ("ceiling: pass-through, plain", &plain),
            ("ceiling: pass-through, transactions", &txn),
            ("autoclaim run (exactly once)", &run),
        ] {
            if let Some((median, min, max, _)) = s {
                println!("  {name:<36} {median:>9.0} events/s ({min:.0}..{max:.0})");
            }
        }
        if let Some((median, min, max, _)) = &run_cpu {
            println!(
                "  {:<36} {median:>9.1} CPU s/M events ({min:.1}..{max:.1})",
                "autoclaim run CPU"
            );
        }
        let mut summary = json!({
            "rounds": rounds.len(),
            "plain": plain.as_ref().map(|s| s.3.clone()),
            "transactional": txn.as_ref().map(|s| s.3.clone()),
            "run": run.as_ref().map(|s| s.3.clone()),
            "run_cpu_s_per_million": run_cpu.as_ref().map(|s| s.3.clone()),
        });
        if let (Some(r), Some(p)) = (&run, &plain) {
            println!(
                "  ratio of medians to the plain pass-through: {:.0}% (target 60%)",
                r.0 / p.0 * 100.0
            );
            summary["ratio_plain"] = json!(r.0 / p.0);
        }
        if let (Some(r), Some(t)) = (&run, &txn) {
            println!(
                "  ratio of medians to the transactional pass-through: {:.0}% (target 80%)",
                r.0 / t.0 * 100.0
            );
            summary["ratio_transactional"] = json!(r.0 / t.0);
        }
        self.results.insert("summary".into(), summary);
    }

    pub(crate) fn ceilings(&mut self) -> anyhow::Result<(Throughput, Throughput)> {
        let a = self.args;
        let input = self.main_topics("run").activity;
        let plain_out = format!("{}.{}.out", self.prefix, self.tagged("ceiling-plain"));
        let txn_out = format!("{}.{}.out", self.prefix, self.tagged("ceiling-txn"));
        self.cluster.create_plain(&plain_out, a.partitions)?;
        self.cluster.create_plain(&txn_out, a.partitions)?;
        let plain = self.pass_through_child("plain", &input, &plain_out)?;
        println!("{}", plain.line("ceiling: pass-through, plain"));
        let txn = self.pass_through_child("txn", &input, &txn_out)?;
        println!("{}", txn.line("ceiling: pass-through, transactions"));
        self.results
            .insert(self.tagged("ceiling_plain"), plain.json());
        self.results
            .insert(self.tagged("ceiling_transactional"), txn.json());
        // The copies are not needed any more; free the broker's disk.
        self.cluster.delete(&[plain_out, txn_out]);
        Ok((plain, txn))
    }

    /// With `--perf`: `perf record` of a child process until `stop_perf`.
    pub(crate) fn start_perf(&self, pid: &str, name: &str) -> Option<(Child, PathBuf)> {
        if !self.args.perf {
            return None;
        }
        let path = self
            .args
            .work_dir
            .join(format!("{}.{name}.perf.data", self.prefix));
        Command::new("perf")
            .args(["record", "-F", "299", "-g", "--call-graph", "dwarf,16384"])
            .args(["-p", pid, "-o"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(|c| (c, path))
    }

    /// One pass-through in a process of its own (this executable), so that its CPU and peak memory
    /// are its own, as autoclaim's are.
    pub(crate) fn pass_through_child(
        &self,
        kind: &str,
        input: &str,
        output: &str,
    ) -> anyhow::Result<Throughput> {
        let a = self.args;
        let mut command = Command::new(&self.harness);
        command
            .args(["--brokers", &a.kafka.brokers])
            .args(["--events", &a.events.to_string()])
            .args(["--batch-max-records", &a.batch_max_records.to_string()])
            .args([
                "--batch-max-time",
                &humantime::format_duration(a.batch_max_time).to_string(),
            ])
            .args(["--drain-sleep-us", &a.drain_sleep_us.to_string()])
            .args([
                "--ceiling-output-share",
                &a.ceiling_output_share.to_string(),
            ])
            .args(
                a.ceiling_linger_ms
                    .map(|l| vec!["--ceiling-linger-ms".to_owned(), l.to_string()])
                    .unwrap_or_default(),
            )
            .args(["--prefix", &self.tagged(&self.prefix)])
            .args(["--internal-pass-through", kind])
            .args(["--internal-input", input])
            .args(["--internal-output", output]);
        if let Some(pid) = self.broker {
            command.args(["--broker-pid", &pid.to_string()]);
        }
        for (k, v) in &a.kafka.properties {
            command.args(["--kafka-property", &format!("{k}={v}")]);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the pass-through process")?;
        let perf = self.start_perf(&child.id().to_string(), &format!("ceiling-{kind}"));
        let out = child.wait_with_output()?;
        stop_perf(perf);
        if !out.status.success() {
            bail!("the {kind} pass-through failed ({})", out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("pass-through output: {line}"))
    }

    pub(crate) fn run_phase(
        &mut self,
        plain: Option<&Throughput>,
        txn: Option<&Throughput>,
    ) -> anyhow::Result<Throughput> {
        let a = self.args;
        let topics = self.main_topics(&self.tagged("run"));
        if self.round > 0 {
            self.cluster.create(&topics, a.partitions)?;
        }
        let group = format!("{}.{}", self.prefix, self.tagged("run"));
        let mut child = self.child(
            &topics,
            &group,
            &format!("{}.{}-0", self.prefix, self.tagged("run")),
        )?;
        let pid = child.pid();
        let ready = child.wait_ready(Duration::from_millis(5))?;
        let window = Window::start(self.broker);
        let cpu0 = cpu_secs(&pid);
        let startup = ready.duration_since(child.spawned).as_secs_f64();
        let perf = self.start_perf(&pid, &self.tagged("run"));
        let done = wait_processed(&mut [&mut child], a.events as f64)?;
        let secs = done.duration_since(ready).as_secs_f64();
        let cpu = cpu_secs(&pid) - cpu0;
        let peak = status_kib(&pid, "VmHWM");
        let metrics = child.metrics();
        stop_perf(perf);
        let outputs = metric_sum(&metrics, telemetry::ASSIGNMENTS)
            + metric_sum(&metrics, telemetry::FAILURES)
            + metric_sum(&metrics, telemetry::DEAD_LETTERS);
        let mut figures = Throughput {
            events: a.events,
            secs,
            cpu_secs: cpu,
            peak_rss_kib: peak,
            outputs: outputs as u64,
            window: window.finish(),
            commits: None,
        };
        let transactions = metric_sum(&metrics, telemetry::TRANSACTIONS);
        child.stop();
        figures.commits = CommitTimes::from_log(&child.log_text());
        println!("{}", figures.line("autoclaim run (exactly once)"));
        println!(
            "{:<36}start to ready {startup:.1} s; {transactions:.0} transactions ({:.0} records each)",
            "",
            a.events as f64 / transactions.max(1.0)
        );
        let mut entry = figures.json();
        entry["startup_s"] = json!(startup);
        entry["transactions"] = json!(transactions);
        let ceilings = [
            (plain, "plain", "ratio_plain", 60),
            (txn, "transactional", "ratio_transactional", 80),
        ];
        for (ceiling, name, key, target) in ceilings {
            if let Some(c) = ceiling {
                let r = figures.rate() / c.rate();
                println!(
                    "{:<36}ratio to the {name} pass-through: {:.0}% (target {target}%)",
                    "",
                    r * 100.0
                );
                entry[key] = json!(r);
            }
        }
        self.results.insert(self.tagged("run"), entry);
        Ok(figures)
    }
}

pub(crate) fn stop_perf(perf: Option<(Child, PathBuf)>) {
    if let Some((mut c, path)) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let _ = c.wait();
        println!("      perf profile: {}", path.display());
    }
}
