//! Event-to-commit latency at a fixed rate, seen by an independent read_committed reader.
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

use crate::child::wait_processed;
use crate::cluster::topic_set;
use crate::figures::{quantile_ms, CommitTimes};
use crate::harness::Bench;
use crate::metrics_text::histogram_quantile;
use crate::procfs::{cpu_secs, Window, WindowFigures};

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

/// What the latency phase measured.
struct LatencyFigures {
    count: usize,
    produce_secs: f64,
    /// Produce to output visible, microseconds, one per output seen.
    latencies: Vec<u64>,
    /// The child's /metrics at the end, for its own event-to-commit histogram.
    metrics: String,
    autoclaim_cpu: f64,
    own_cpu: f64,
    window: WindowFigures,
    commits: Option<CommitTimes>,
}

impl Bench<'_> {
    pub(crate) fn latency(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let topics = topic_set(&self.prefix, "tables", "latency", "latency");
        self.cluster.create(&topics, a.partitions)?;
        let group = format!("{}.latency", self.prefix);
        let mut child = self.child(&topics, &group, &format!("{}.latency-0", self.prefix))?;
        child.wait_ready(Duration::from_millis(20))?;
        let pid = child.pid();
        let count = (a.rate as f64 * a.latency_duration.as_secs_f64()) as usize;
        let times = Arc::new(SendTimes::new(count));
        let watcher = Watcher::start(
            &a.kafka,
            &topics,
            format!("evt-{}-", a.seed),
            &times,
            a.watch_fetch_wait_ms,
        );
        // Let the watcher's assignment settle before the first event.
        std::thread::sleep(Duration::from_secs(2));
        let publisher = Publisher::new(&a.kafka, &topics, a.format)?;
        let scenario = Scenario::new(self.scenario_config());
        let window = Window::start(self.broker);
        let cpu0 = cpu_secs(&pid);
        let own0 = cpu_secs("self");
        let produce_secs = self.produce_at_rate(&publisher, &scenario, &times)?;
        publisher.flush(Duration::from_secs(60))?;
        wait_processed(&mut [&mut child], count as f64)?;
        let autoclaim_cpu = cpu_secs(&pid) - cpu0;
        let own_cpu = cpu_secs("self") - own0;
        let window = window.finish();
        std::thread::sleep(Duration::from_millis(500));
        let latencies = watcher.finish()?;
        let metrics = child.metrics();
        child.stop();
        let figures = LatencyFigures {
            count,
            produce_secs,
            latencies,
            metrics,
            autoclaim_cpu,
            own_cpu,
            window,
            commits: CommitTimes::from_log(&child.log_text()),
        };
        self.report_latency(&figures);
        Ok(())
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

    fn report_latency(&mut self, f: &LatencyFigures) {
        let a = self.args;
        let visible = |q: f64| quantile_ms(&f.latencies, q);
        let hist = |q: f64| {
            histogram_quantile(&f.metrics, telemetry::EVENT_TO_COMMIT_SECONDS, q)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        let (p50, p99, p999, max) = (visible(0.5), visible(0.99), visible(0.999), visible(1.0));
        let (h50, h99, h999) = (hist(0.5), hist(0.99), hist(0.999));
        let wall = f.window.wall;
        println!(
            "latency at {} events/s for {:.0} s ({} events, produced in {:.1} s): {} outputs seen",
            a.rate,
            a.latency_duration.as_secs_f64(),
            f.count,
            f.produce_secs,
            f.latencies.len()
        );
        println!(
            "{:<36}produce -> output visible (read_committed): p50 {p50:.1} ms  p99 {p99:.1} ms  p99.9 {p999:.1} ms  max {max:.1} ms (target p99 < 50 ms)",
            ""
        );
        println!(
            "{:<36}service histogram (bucketed, record timestamp -> commit returned): p50 {h50:.1} ms  p99 {h99:.1} ms  p99.9 {h999:.1} ms",
            ""
        );
        println!(
            "{:<36}autoclaim CPU {:.2} cores, load generator and output reader {:.2} cores; {}",
            "",
            f.autoclaim_cpu / wall,
            f.own_cpu / wall,
            f.window.describe(f.count)
        );
        if let Some(c) = &f.commits {
            println!("{:<36}{}", "", c.describe(wall));
        }
        self.results.insert(
            "latency".into(),
            json!({
                "rate": a.rate, "events": f.count, "outputs_seen": f.latencies.len(),
                "produce_s": f.produce_secs,
                "visible_ms": {"p50": p50, "p99": p99, "p999": p999, "max": max},
                "histogram_ms": {"p50": h50, "p99": h99, "p999": h999},
                "autoclaim_cores": f.autoclaim_cpu / wall,
                "bench_cores": f.own_cpu / wall,
                "commits": f.commits.as_ref().map(CommitTimes::json),
                "window": f.window.json(),
            }),
        );
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
        topics: &Topics,
        event_prefix: String,
        times: &Arc<SendTimes>,
        fetch_wait_ms: u64,
    ) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (kafka, topics, times) = (kafka.clone(), topics.clone(), Arc::clone(times));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                watch_outputs(&kafka, &topics, &event_prefix, &times, &stop, fetch_wait_ms)
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

/// Reads the assignments and failures topics (read_committed) and returns, for each output, the
/// microseconds from its input's hand-over to the producer to its visibility here.
fn watch_outputs(
    kafka: &KafkaArgs,
    topics: &Topics,
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
    for topic in [&topics.assignments, &topics.failures] {
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
        let Some(index) = trigger_event_id(&message, topics)
            .as_deref()
            .and_then(|id| id.strip_prefix(event_prefix))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        latencies.extend(times.latency_us(index, seen));
    }
    Ok(latencies)
}

/// The `triggerEventId` of an assignment or failure, decoded in the format its content-type
/// header names (JSON without one).
fn trigger_event_id(message: &BorrowedMessage<'_>, topics: &Topics) -> Option<String> {
    let format = message
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key.eq_ignore_ascii_case(codec::CONTENT_TYPE_HEADER))
                .and_then(|h| h.value)
        })
        .map_or(Ok(Format::Json), |v| Format::from_content_type(Some(v)))
        .unwrap_or(Format::Json);
    let payload = message.payload()?;
    if message.topic() == topics.assignments {
        codec::decode::<pb::LicenseAssignment>(payload, format)
            .map(|m| m.trigger_event_id)
            .ok()
    } else {
        codec::decode::<pb::AutoclaimFailure>(payload, format)
            .map(|m| m.trigger_event_id)
            .ok()
    }
}
