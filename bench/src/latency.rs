//! Event-to-commit latency at a fixed rate, seen by an independent read_committed reader: of
//! autoclaim, then of the like-for-like transactional pass-through at the same rate, one after the
//! other (they would share the two cores otherwise).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autoclaim::pipeline::clients::{self, QuietContext};
use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::pipeline::publish::Publisher;
use autoclaim::scenario::Scenario;
use autoclaim::telemetry;
use autoclaim::wire::pb::{self, replay_record::Record};
use autoclaim::wire::{codec, Format};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use anyhow::Context;

use crate::child::{wait_processed, RunChild};
use crate::cluster::topic_set;
use crate::figures::{quantile_ms, CommitTimes, Throughput};
use crate::harness::Bench;
use crate::metrics_text::histogram_quantile;
use crate::pass_child::{PassThroughChild, PassThroughJob};
use crate::procfs::{cpu_secs, Window, WindowFigures};
use crate::share::{published_records, written_share};

/// When each event of the phase was handed to the producer, in nanoseconds after `base` (0: not
/// yet), shared with the output watcher.
struct SendTimes {
    base: Instant,
    sent: Vec<AtomicU64>,
}

impl SendTimes {
    fn new(count: usize) -> SendTimes {
        SendTimes {
            base: Instant::now(),
            sent: (0..count).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn record(&self, index: usize) {
        self.sent[index].store(self.now_ns(), Ordering::Relaxed);
    }

    /// Microseconds from the hand-over of event `index` to `seen_ns`, if it was handed over.
    fn latency_us(&self, index: usize, seen_ns: u64) -> Option<u64> {
        let at = self.sent.get(index)?.load(Ordering::Relaxed);
        (at > 0 && seen_ns >= at).then(|| (seen_ns - at) / 1000)
    }
}

/// What one latency run measured, whatever ran it.
pub(crate) struct Measured {
    pub(crate) count: usize,
    pub(crate) produce_secs: f64,
    /// Produce to output visible, microseconds, one per output seen.
    pub(crate) latencies: Vec<u64>,
    /// CPU seconds of the process under test over the window.
    pub(crate) subject_cpu: f64,
    /// CPU seconds of this process (load generator and output reader).
    pub(crate) own_cpu: f64,
    pub(crate) window: WindowFigures,
}

/// The process under test in a latency run.
trait Subject {
    /// Marks the start of the measured window.
    fn start_cpu(&mut self);
    /// Waits until it has committed all `count` events; returns its CPU seconds in the window.
    fn finish(&mut self, count: usize) -> anyhow::Result<f64>;
}

struct AutoclaimSubject<'c> {
    child: &'c mut RunChild,
    cpu0: f64,
}

impl Subject for AutoclaimSubject<'_> {
    fn start_cpu(&mut self) {
        self.cpu0 = cpu_secs(&self.child.pid());
    }

    fn finish(&mut self, count: usize) -> anyhow::Result<f64> {
        wait_processed(&mut [&mut *self.child], count as f64)?;
        Ok(cpu_secs(&self.child.pid()) - self.cpu0)
    }
}

/// The pass-through child exits when it has committed its records; its CPU is its own count, from
/// its first record.
struct PassThroughSubject {
    child: Option<PassThroughChild>,
    figures: Option<Throughput>,
}

impl Subject for PassThroughSubject {
    fn start_cpu(&mut self) {}

    fn finish(&mut self, _count: usize) -> anyhow::Result<f64> {
        let child = self.child.take().context("the pass-through has finished")?;
        let figures = child.finish()?;
        let cpu = figures.cpu_secs;
        self.figures = Some(figures);
        Ok(cpu)
    }
}

impl Bench<'_> {
    pub(crate) fn latency(&mut self) -> anyhow::Result<()> {
        let (autoclaim, share) = self.autoclaim_latency()?;
        let Some(share) = self.args.ceiling_output_share.resolve(share) else {
            println!("latency of the pass-through: skipped (no share of outputs measured)");
            return Ok(());
        };
        let pass_through = self.pass_through_latency(share)?;
        self.compare_latency(&autoclaim, &pass_through, share);
        Ok(())
    }

    fn latency_events(&self) -> usize {
        (self.args.rate as f64 * self.args.latency_duration.as_secs_f64()) as usize
    }

    /// `run` on a fresh activity topic; returns what it measured and the share of outputs it wrote.
    fn autoclaim_latency(&mut self) -> anyhow::Result<(Measured, Option<f64>)> {
        let a = self.args;
        let topics = topic_set(&self.prefix, "tables", "latency", "latency");
        self.cluster.create(&topics, a.partitions)?;
        let group = format!("{}.latency", self.prefix);
        let mut child = self.child(&topics, &group, &format!("{}.latency-0", self.prefix))?;
        child.wait_ready(Duration::from_millis(20))?;
        let mut subject = AutoclaimSubject {
            child: &mut child,
            cpu0: 0.0,
        };
        let measured = self.measure(&topics, WatchSpec::outputs_of(&topics), &mut subject)?;
        let metrics = child.metrics();
        child.stop();
        let share = written_share(published_records(&metrics), measured.count as f64);
        let commits = CommitTimes::from_log(&child.log_text());
        self.report_autoclaim_latency(&measured, &metrics, commits.as_ref(), share);
        Ok((measured, share))
    }

    /// The transactional pass-through copying `share` of the records, on topics of its own, with
    /// the same rate, duration and batch bounds.
    fn pass_through_latency(&mut self, share: f64) -> anyhow::Result<Measured> {
        let a = self.args;
        let topics = topic_set(&self.prefix, "tables", "latency-pt", "latency-pt");
        let output = format!("{}.latency-pt.out", self.prefix);
        self.cluster.create_plain(&topics.activity, a.partitions)?;
        self.cluster.create_plain(&output, a.partitions)?;
        let job = PassThroughJob {
            kind: "txn",
            name: "latency-pt",
            input: &topics.activity,
            output: &output,
            events: self.latency_events(),
            share,
        };
        let mut child = PassThroughChild::spawn(self, &job)?;
        child.wait_ready()?;
        let mut subject = PassThroughSubject {
            child: Some(child),
            figures: None,
        };
        let measured = self.measure(&topics, WatchSpec::copies_in(&output), &mut subject)?;
        let commits = subject.figures.and_then(|f| f.commits);
        let name = format!("pass-through, transactions, share {share:.4}");
        let mut entry = self.print_measured(&name, &measured, commits.as_ref());
        entry["output_share"] = json!(share);
        self.results.insert("latency_pass_through".into(), entry);
        Ok(measured)
    }

    /// Produces the phase's events at `--rate` into `topics.activity` while `watch` sees the
    /// outputs, until `subject` has committed them all.
    fn measure(
        &self,
        topics: &Topics,
        watch: WatchSpec,
        subject: &mut dyn Subject,
    ) -> anyhow::Result<Measured> {
        let a = self.args;
        let count = self.latency_events();
        let times = Arc::new(SendTimes::new(count));
        let prefix = format!("evt-{}-", a.seed);
        let watcher = Watcher::start(&a.kafka, watch, prefix, &times, a.watch_fetch_wait_ms);
        // Let the watcher's assignment settle before the first event.
        std::thread::sleep(Duration::from_secs(2));
        let publisher = Publisher::new(&a.kafka, topics, a.format)?;
        let scenario = Scenario::new(self.scenario_config());
        let window = Window::start(self.broker);
        subject.start_cpu();
        let own0 = cpu_secs("self");
        let produce_secs = self.produce_at_rate(&publisher, &scenario, &times)?;
        publisher.flush(Duration::from_secs(60))?;
        let subject_cpu = subject.finish(count)?;
        let own_cpu = cpu_secs("self") - own0;
        let window = window.finish();
        std::thread::sleep(Duration::from_millis(500));
        Ok(Measured {
            count,
            produce_secs,
            latencies: watcher.finish()?,
            subject_cpu,
            own_cpu,
            window,
        })
    }

    /// Produces every event of `times` at `--rate`, each stamped as it is handed over; returns how
    /// long producing took.
    fn produce_at_rate(
        &self,
        publisher: &Publisher,
        scenario: &Scenario,
        times: &SendTimes,
    ) -> anyhow::Result<f64> {
        let rate = self.args.rate as f64;
        let started = Instant::now();
        for (i, event) in scenario.activity(times.sent.len()).enumerate() {
            let due = Duration::from_secs_f64(i as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_millis(1) {
                std::thread::sleep(due - elapsed);
            }
            times.record(i);
            publisher.send(&pb::ReplayRecord {
                record: Some(Record::Activity(event)),
                written_at: None,
            })?;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Prints what a latency run measured; returns it as JSON.
    fn print_measured(
        &self,
        name: &str,
        m: &Measured,
        commits: Option<&CommitTimes>,
    ) -> serde_json::Value {
        let a = self.args;
        let visible = Visible::of(&m.latencies);
        let wall = m.window.wall;
        println!(
            "latency of {name} at {} events/s for {:.0} s ({} events, produced in {:.1} s): {} outputs seen",
            a.rate,
            a.latency_duration.as_secs_f64(),
            m.count,
            m.produce_secs,
            m.latencies.len()
        );
        println!(
            "{:<36}produce -> output visible (read_committed): {}",
            "",
            visible.describe()
        );
        println!(
            "{:<36}its CPU {:.2} cores ({:.1} CPU s/M events), load generator and output reader {:.2} cores; {}",
            "",
            m.subject_cpu / wall,
            per_million(m.subject_cpu, m.count),
            m.own_cpu / wall,
            m.window.describe(m.count)
        );
        if let Some(c) = commits {
            println!("{:<36}{}", "", c.describe(wall));
        }
        json!({
            "rate": a.rate, "events": m.count, "outputs_seen": m.latencies.len(),
            "produce_s": m.produce_secs,
            "visible_ms": visible.json(),
            "cores": m.subject_cpu / wall,
            "cpu_s_per_million": per_million(m.subject_cpu, m.count),
            "broker_cpu_s_per_million": m.window.broker_cpu.map(|b| per_million(b, m.count)),
            "bench_cores": m.own_cpu / wall,
            "commits": commits.map(CommitTimes::json),
            "window": m.window.json(),
        })
    }

    fn report_autoclaim_latency(
        &mut self,
        m: &Measured,
        metrics: &str,
        commits: Option<&CommitTimes>,
        share: Option<f64>,
    ) {
        let mut entry = self.print_measured("autoclaim run", m, commits);
        let hist = |q: f64| {
            histogram_quantile(metrics, telemetry::EVENT_TO_COMMIT_SECONDS, q)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        let (h50, h99, h999) = (hist(0.5), hist(0.99), hist(0.999));
        println!(
            "{:<36}service histogram (bucketed, record timestamp -> commit returned): p50 {h50:.1} ms  p99 {h99:.1} ms  p99.9 {h999:.1} ms",
            ""
        );
        entry["histogram_ms"] = json!({"p50": h50, "p99": h99, "p999": h999});
        entry["output_share"] = json!(share);
        self.results.insert("latency".into(), entry);
    }

    /// Both runs side by side, and autoclaim's p99 over the pass-through's against the target.
    fn compare_latency(&mut self, autoclaim: &Measured, pass_through: &Measured, share: f64) {
        println!(
            "latency side by side at {} events/s, produce -> visible (ms), CPU and broker CPU s/M events:",
            self.args.rate
        );
        println!("  {:<44} {}", "", Visible::HEADER);
        let rows = [
            ("autoclaim run".to_owned(), autoclaim),
            (
                format!("pass-through, transactions, share {share:.4}"),
                pass_through,
            ),
        ];
        for (name, m) in &rows {
            let broker = m.window.broker_cpu.map(|b| per_million(b, m.count));
            println!(
                "  {name:<44} {}  {:>7.1}  {:>7}",
                Visible::of(&m.latencies).row(),
                per_million(m.subject_cpu, m.count),
                broker.map_or("-".to_owned(), |b| format!("{b:.1}"))
            );
        }
        let ratio =
            Visible::of(&autoclaim.latencies).p99 / Visible::of(&pass_through.latencies).p99;
        println!(
            "  autoclaim p99 / pass-through p99: {}",
            latency_ratio_verdict(ratio, P99_RATIO_TARGET)
        );
        self.results.insert(
            "latency_comparison".into(),
            json!({"rate": self.args.rate, "output_share": share, "p99_ratio": ratio,
                   "target_p99_ratio": P99_RATIO_TARGET}),
        );
    }
}

/// Target of autoclaim's p99 latency over the like-for-like pass-through's.
const P99_RATIO_TARGET: f64 = 1.2;

fn per_million(secs: f64, events: usize) -> f64 {
    secs / (events.max(1) as f64 / 1e6)
}

/// `1.13x (target at most 1.20x: met)`.
fn latency_ratio_verdict(ratio: f64, target: f64) -> String {
    let verdict = if ratio <= target { "met" } else { "missed" };
    format!("{ratio:.2}x (target at most {target:.2}x: {verdict})")
}

/// Quantiles of produce-to-visible latencies, milliseconds.
#[derive(Debug, PartialEq)]
struct Visible {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Visible {
    const HEADER: &'static str = "    p50      p99    p99.9      max   CPU s/M   broker";

    fn of(latencies_us: &[u64]) -> Visible {
        let q = |q: f64| quantile_ms(latencies_us, q);
        Visible {
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: q(1.0),
        }
    }

    fn describe(&self) -> String {
        format!(
            "p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
            self.p50, self.p99, self.p999, self.max
        )
    }

    fn row(&self) -> String {
        format!(
            "{:>7.1}  {:>7.1}  {:>7.1}  {:>7.1}",
            self.p50, self.p99, self.p999, self.max
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({"p50": self.p50, "p99": self.p99, "p999": self.p999, "max": self.max})
    }
}

/// Finds the trigger event's id in a watched record.
type EventIdOf = Box<dyn Fn(&BorrowedMessage<'_>) -> Option<String> + Send>;

/// What a watcher reads: its topics, and how the trigger event's id is found in a record of them.
struct WatchSpec {
    topics: Vec<String>,
    event_id: EventIdOf,
}

impl WatchSpec {
    /// autoclaim's assignments and failures, by their `triggerEventId`.
    fn outputs_of(topics: &Topics) -> WatchSpec {
        let assignments = topics.assignments.clone();
        WatchSpec {
            topics: vec![topics.assignments.clone(), topics.failures.clone()],
            event_id: Box::new(move |m| trigger_event_id(m, &assignments)),
        }
    }

    /// The pass-through's copies, by the `eventId` of the activity event each copies verbatim
    /// (robust where offsets are not: the copies' offsets differ from the inputs' by the share
    /// and the transaction markers).
    fn copies_in(topic: &str) -> WatchSpec {
        WatchSpec {
            topics: vec![topic.to_owned()],
            event_id: Box::new(|m| copied_event_id(m.payload()?, content_format(m))),
        }
    }
}

/// The output watcher of the latency phase: a thread running `watch_outputs` until `finish`.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Vec<u64>>>,
}

impl Watcher {
    fn start(
        kafka: &KafkaArgs,
        watch: WatchSpec,
        event_prefix: String,
        times: &Arc<SendTimes>,
        fetch_wait_ms: u64,
    ) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (kafka, times) = (kafka.clone(), Arc::clone(times));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                watch_outputs(&kafka, &watch, &event_prefix, &times, &stop, fetch_wait_ms)
            })
        };
        Watcher { stop, thread }
    }

    /// Stops the watcher and returns the latencies it saw.
    fn finish(self) -> anyhow::Result<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the output watcher panicked"))?
    }
}

/// Reads the watched topics (read_committed) and returns, for each output, the microseconds from
/// its input's hand-over to the producer to its visibility here.
fn watch_outputs(
    kafka: &KafkaArgs,
    watch: &WatchSpec,
    event_prefix: &str,
    times: &SendTimes,
    stop: &AtomicBool,
    fetch_wait_ms: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut config = clients::table_reader(kafka);
    config
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut assignment = TopicPartitionList::new();
    for topic in &watch.topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let seen = times.now_ns();
        let Some(index) = (watch.event_id)(&message)
            .as_deref()
            .and_then(|id| event_index(id, event_prefix))
        else {
            continue;
        };
        latencies.extend(times.latency_us(index, seen));
    }
    Ok(latencies)
}

/// The index of the phase's event with id `id` (`<prefix><index>`).
fn event_index(id: &str, prefix: &str) -> Option<usize> {
    id.strip_prefix(prefix)?.parse().ok()
}

/// The format a record's content-type header names (JSON without one, or with one not known).
fn content_format(message: &BorrowedMessage<'_>) -> Format {
    let content_type = message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key.eq_ignore_ascii_case(codec::CONTENT_TYPE_HEADER))
            .and_then(|h| h.value)
    });
    Format::from_content_type(content_type).unwrap_or(Format::Json)
}

/// The `triggerEventId` of an assignment (on `assignments`) or failure.
fn trigger_event_id(message: &BorrowedMessage<'_>, assignments: &str) -> Option<String> {
    let format = content_format(message);
    let payload = message.payload()?;
    if message.topic() == assignments {
        codec::decode::<pb::LicenseAssignment>(payload, format)
            .map(|m| m.trigger_event_id)
            .ok()
    } else {
        codec::decode::<pb::AutoclaimFailure>(payload, format)
            .map(|m| m.trigger_event_id)
            .ok()
    }
}

/// The `eventId` of the activity event a pass-through copy carries.
fn copied_event_id(payload: &[u8], format: Format) -> Option<String> {
    codec::decode::<pb::ActivityEvent>(payload, format)
        .map(|e| e.event_id)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_give_the_index_of_this_phase_only() {
        assert_eq!(event_index("evt-7-123", "evt-7-"), Some(123));
        assert_eq!(event_index("evt-8-123", "evt-7-"), None);
        assert_eq!(event_index("evt-7-x", "evt-7-"), None);
    }

    #[test]
    fn copies_are_matched_by_the_event_id_in_either_format() {
        let event = pb::ActivityEvent {
            event_id: "evt-7-42".to_owned(),
            tenant_id: "t1".to_owned(),
            ..Default::default()
        };
        for format in [Format::Json, Format::Protobuf] {
            let payload = codec::encode(&event, format);
            assert_eq!(
                copied_event_id(&payload, format).as_deref(),
                Some("evt-7-42")
            );
        }
        assert_eq!(copied_event_id(b"not an event", Format::Json), None);
    }

    #[test]
    fn quantiles_and_ratio_are_read_as_printed() {
        let latencies: Vec<u64> = (1..=1000).map(|ms| ms * 1000).collect();
        let v = Visible::of(&latencies);
        assert_eq!(
            v,
            Visible {
                p50: 500.0,
                p99: 990.0,
                p999: 999.0,
                max: 1000.0
            }
        );
        assert_eq!(v.row(), "  500.0    990.0    999.0   1000.0");
        assert_eq!(
            latency_ratio_verdict(1.13, 1.2),
            "1.13x (target at most 1.20x: met)"
        );
        assert_eq!(
            latency_ratio_verdict(1.5, 1.2),
            "1.50x (target at most 1.20x: missed)"
        );
        assert_eq!(per_million(6.0, 2_000_000), 3.0);
    }
}
