//! Event-to-commit latency at a fixed rate, seen by an independent read_committed reader.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::publish::Publisher;
use crate::scenario::Scenario;
use crate::wire::pb::{self, replay_record::Record};
use crate::wire::{codec, Format};

use super::*;

impl Bench<'_> {
    pub(super) fn latency(&mut self) -> anyhow::Result<()> {
        let a = self.args;
        let topics = topic_set(&self.prefix, "tables", "latency", "latency");
        self.cluster.create(&topics, a.partitions)?;
        let group = format!("{}.latency", self.prefix);
        let mut child = self.child(&topics, &group, &format!("{}.latency-0", self.prefix))?;
        child.wait_ready(Duration::from_millis(20))?;
        let pid = child.pid();
        let count = (a.rate as f64 * a.latency_duration.as_secs_f64()) as usize;
        let base = Instant::now();
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (kafka, topics, sent, stop) = (
                a.kafka.clone(),
                topics.clone(),
                Arc::clone(&sent),
                Arc::clone(&stop),
            );
            let event_prefix = format!("evt-{}-", a.seed);
            let fetch_wait = a.watch_fetch_wait_ms;
            std::thread::spawn(move || {
                watch_outputs(
                    &kafka,
                    &topics,
                    &event_prefix,
                    base,
                    &sent,
                    &stop,
                    fetch_wait,
                )
            })
        };
        // Let the watcher's assignment settle before the first event.
        std::thread::sleep(Duration::from_secs(2));
        let publisher = Publisher::new(&a.kafka, &topics, a.format)?;
        let scenario = Scenario::new(self.scenario_config());
        let window = Window::start(self.broker);
        let cpu0 = cpu_secs(&pid);
        let own0 = cpu_secs("self");
        let started = Instant::now();
        for (i, event) in scenario.activity(count).enumerate() {
            let due = Duration::from_secs_f64(i as f64 / a.rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_millis(1) {
                std::thread::sleep(due - elapsed);
            }
            sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            publisher.send(&pb::ReplayRecord {
                record: Some(Record::Activity(event)),
                written_at: None,
            })?;
        }
        let produce_secs = started.elapsed().as_secs_f64();
        publisher.flush(Duration::from_secs(60))?;
        wait_processed(&mut [&mut child], count as f64)?;
        let cpu = cpu_secs(&pid) - cpu0;
        let own = cpu_secs("self") - own0;
        let win = window.finish();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let mut latencies = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the output watcher panicked"))??;
        let metrics = child.metrics();
        child.stop();
        let commits = CommitTimes::from_log(&child.log_text());
        latencies.sort_unstable();
        let pct = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        };
        let hist = |q: f64| {
            histogram_quantile(&metrics, crate::telemetry::EVENT_TO_COMMIT_SECONDS, q)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        println!(
            "latency at {} events/s for {:.0} s ({} events, produced in {:.1} s): {} outputs seen",
            a.rate,
            a.latency_duration.as_secs_f64(),
            count,
            produce_secs,
            latencies.len()
        );
        println!(
            "{:<36}produce -> output visible (read_committed): p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms (target p99 < 50 ms)",
            "",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            pct(1.0)
        );
        println!(
            "{:<36}service histogram (bucketed, record timestamp -> commit returned): p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms",
            "",
            hist(0.5),
            hist(0.99),
            hist(0.999)
        );
        println!(
            "{:<36}autoclaim CPU {:.2} cores, load generator and output reader {:.2} cores; {}",
            "",
            cpu / win.wall,
            own / win.wall,
            win.describe(count)
        );
        if let Some(c) = &commits {
            println!("{:<36}{}", "", c.describe(win.wall));
        }
        self.results.insert(
            "latency".into(),
            json!({
                "rate": a.rate, "events": count, "outputs_seen": latencies.len(),
                "produce_s": produce_secs,
                "visible_ms": {"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0)},
                "histogram_ms": {"p50": hist(0.5), "p99": hist(0.99), "p999": hist(0.999)},
                "autoclaim_cores": cpu / win.wall,
                "bench_cores": own / win.wall,
                "commits": commits.as_ref().map(CommitTimes::json),
                "window": win.json(),
            }),
        );
        Ok(())
    }
}

/// Reads the assignments and failures topics (read_committed) and returns, for each output, the
/// microseconds from its input's hand-over to the producer to its visibility here.
pub(super) fn watch_outputs(
    kafka: &KafkaArgs,
    topics: &Topics,
    event_prefix: &str,
    base: Instant,
    sent: &[AtomicU64],
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
        let Some(result) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let Ok(message) = result else {
            continue;
        };
        let seen = base.elapsed().as_nanos() as u64;
        let format = message
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key.eq_ignore_ascii_case(codec::CONTENT_TYPE_HEADER))
                    .and_then(|h| h.value)
            })
            .map_or(Ok(Format::Json), |v| Format::from_content_type(Some(v)))
            .unwrap_or(Format::Json);
        let Some(payload) = message.payload() else {
            continue;
        };
        let event_id = if message.topic() == topics.assignments {
            codec::decode::<pb::LicenseAssignment>(payload, format)
                .map(|m| m.trigger_event_id)
                .ok()
        } else {
            codec::decode::<pb::AutoclaimFailure>(payload, format)
                .map(|m| m.trigger_event_id)
                .ok()
        };
        let Some(index) = event_id
            .as_deref()
            .and_then(|id| id.strip_prefix(event_prefix))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(at) = sent.get(index).map(|s| s.load(Ordering::Relaxed)) else {
            continue;
        };
        if at > 0 && seen >= at {
            latencies.push((seen - at) / 1000);
        }
    }
    Ok(latencies)
}
