//! `autoclaim loadgen`: publishes a seeded, realistic workload to a real broker — first the tables
//! (settings, policies, inventory, directory), then activity at a chosen rate.
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::publish::Publisher;
use crate::progress::Progress;
use crate::scenario::{Scenario, ScenarioConfig};
use crate::wire::pb::{self, replay_record::Record};
use crate::wire::Format;

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub scenario: ScenarioConfig,
    /// Activity events to send; 0 sends until stopped.
    pub events: usize,
    /// Events per second; 0 sends as fast as the producer allows.
    pub rate: u64,
    pub skip_tables: bool,
    pub format: Format,
    /// Send every activity record to the partition after its tenant's, so that all are routed.
    pub misplace_activity: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    pub table_records: usize,
    pub events: usize,
    pub elapsed: Duration,
}

/// Publishes the workload; `stop` is checked between events.
pub fn run(
    kafka: &KafkaArgs,
    topics: &Topics,
    options: &LoadOptions,
    stop: &dyn Fn() -> bool,
) -> Result<LoadReport, KafkaError> {
    let mut publisher = Publisher::new(kafka, topics, options.format)?;
    if options.misplace_activity {
        publisher = publisher.misplacing_activity()?;
    }
    let scenario = Scenario::new(options.scenario.clone());
    let mut report = LoadReport::default();
    if !options.skip_tables {
        for record in scenario.tables() {
            publisher.send(&record)?;
            report.table_records += 1;
        }
        publisher.flush(Duration::from_secs(60))?;
    }
    let started = Instant::now();
    let mut progress = Progress::on_stderr("loadgen: events sent");
    let limit = if options.events == 0 {
        usize::MAX
    } else {
        options.events
    };
    for (i, event) in scenario.activity(limit).enumerate() {
        if stop() {
            break;
        }
        if options.rate > 0 {
            // Pace against the schedule, not the previous send, so the average rate holds.
            let due = Duration::from_secs_f64(i as f64 / options.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        publisher.send(&pb::ReplayRecord {
            record: Some(Record::Activity(event)),
            written_at: None,
        })?;
        report.events += 1;
        progress.add(1);
    }
    progress.finish();
    publisher.flush(Duration::from_secs(120))?;
    report.elapsed = started.elapsed();
    Ok(report)
}
