//! The ceiling and run phases of a round.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autoclaim::telemetry;
use serde_json::json;

use crate::child::wait_processed;
use crate::figures::{CommitTimes, Throughput};
use crate::harness::{Bench, LikeForLike};
use crate::metrics_text::metric_sum;
use crate::pass_child::{PassThroughChild, PassThroughJob};
use crate::procfs::{cpu_secs, status_kib, Window};
use crate::share::{published_records, written_share};
use crate::summary::ratio_verdict;

impl Bench<'_> {
    /// The plain and the transactional pass-through, both copying every record.
    pub(crate) fn ceilings(&mut self) -> anyhow::Result<(Throughput, Throughput)> {
        let plain = self.ceiling("plain", "ceiling-plain", 1.0)?;
        println!("{}", plain.line("ceiling: pass-through, plain"));
        let txn = self.ceiling("txn", "ceiling-txn", 1.0)?;
        println!("{}", txn.line("ceiling: transactions, every record"));
        self.results
            .insert(self.tagged("ceiling_plain"), plain.json());
        self.results
            .insert(self.tagged("ceiling_transactional"), txn.json());
        Ok((plain, txn))
    }

    /// The transactional pass-through copying the share of records autoclaim wrote in this round's
    /// run (`auto`) or the share given; none with `auto` and no run.
    pub(crate) fn like_for_like_ceiling(
        &mut self,
        run: Option<&Throughput>,
    ) -> anyhow::Result<Option<LikeForLike>> {
        let measured = run.and_then(|r| written_share(r.outputs as f64, r.events as f64));
        let Some(share) = self.args.ceiling_output_share.resolve(measured) else {
            println!("ceiling: transactions, like for like: skipped (`auto` needs the run phase)");
            return Ok(None);
        };
        let figures = self.ceiling("txn", "ceiling-txn-like", share)?;
        println!(
            "{}",
            figures.line(&format!("ceiling: transactions, share {share:.4}"))
        );
        let mut entry = figures.json();
        entry["output_share"] = json!(share);
        if let Some(r) = run {
            let ratio = r.rate() / figures.rate();
            println!(
                "{:<36}autoclaim / like-for-like transactional ceiling: {}",
                "",
                ratio_verdict(ratio, 0.8)
            );
            if let Some(run_entry) = self.results.get_mut(&self.tagged("run")) {
                run_entry["ratio_like_for_like"] = json!(ratio);
            }
        }
        self.results
            .insert(self.tagged("ceiling_transactional_like"), entry);
        Ok(Some(LikeForLike { share, figures }))
    }

    /// One pass-through child over the loaded activity topic, into an output topic of its own that
    /// is deleted afterwards (to free the broker's disk).
    fn ceiling(&mut self, kind: &str, name: &str, share: f64) -> anyhow::Result<Throughput> {
        let input = self.main_topics("run").activity;
        let name = self.tagged(name);
        let output = format!("{}.{name}.out", self.prefix);
        self.cluster.create_plain(&output, self.args.partitions)?;
        let job = PassThroughJob {
            kind,
            name: &name,
            input: &input,
            output: &output,
            events: self.args.events,
            share,
        };
        let child = PassThroughChild::spawn(self, &job)?;
        let perf = self.start_perf(&child.pid(), &name);
        let figures = child.finish();
        stop_perf(perf);
        self.cluster.delete(&[output]);
        figures
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
        let outputs = published_records(&metrics);
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
        entry["output_share"] = json!(written_share(outputs, a.events as f64));
        let ceilings = [
            (plain, "plain", "ratio_plain", 60),
            (
                txn,
                "transactional (every record)",
                "ratio_transactional",
                0,
            ),
        ];
        for (ceiling, name, key, target) in ceilings {
            if let Some(c) = ceiling {
                let r = figures.rate() / c.rate();
                let shown = match target {
                    0 => format!("{:.0}%", r * 100.0),
                    t => ratio_verdict(r, f64::from(t) / 100.0),
                };
                println!("{:<36}ratio to the {name} pass-through: {shown}", "");
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
