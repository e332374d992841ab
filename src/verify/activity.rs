//! The inputs read back, after the outputs (see the module documentation of `verify`): the activity
//! as `run` reads it, and the records routed from it. Then what the group did with each activity
//! record: processed or not, routed if it had to be, dead-lettered if and only if it cannot be read.
use std::collections::BTreeMap;

use rdkafka::message::Message;
use serde_json::json;

use super::dead_letters::{self, DeadLetters};
use super::offsets::{Committed, GroupOffsets};
use super::report::{Counts, PartitionStatus};
use super::routes::{self, RoutedEntry, Routes};
use super::{read_topic, Findings, Layout, ProblemKind, VerifyArgs};
use crate::domain::activity::Activity;
use crate::pipeline::clients::Watermarks;
use crate::pipeline::partitioner::{placement, Placement};
use crate::pipeline::records::{self, RawRecord};
use crate::pipeline::transaction::Input;

/// One activity record: its offset, and the event or the code `run` dead-letters it with.
pub(super) struct ActivityEntry {
    pub offset: i64,
    pub outcome: Result<Activity, &'static str>,
}

pub(super) struct Inputs {
    /// The activity records by partition, in offset order.
    pub activity: BTreeMap<i32, Vec<ActivityEntry>>,
    /// The activity topic's watermarks when it was read.
    pub watermarks: Watermarks,
    pub routes: Routes,
}

impl Inputs {
    /// Reads the activity, then the routed records: the route of every activity record processed
    /// by then is committed with it.
    pub fn read(args: &VerifyArgs, layout: &Layout, counts: &mut Counts) -> anyhow::Result<Self> {
        let (kafka, topics, timeout) = (&args.kafka, &args.topics, args.timeout);
        let mut activity: BTreeMap<i32, Vec<ActivityEntry>> = BTreeMap::new();
        let watermarks = read_topic(kafka, &topics.activity, timeout, |m| {
            // As `run` reads it: on any partition (a record elsewhere than its tenant's is routed),
            // with its event time bounded by the record's timestamp (routed records were bounded
            // here).
            let outcome = records::bounded_activity_record(
                &RawRecord::of(m),
                records::written_at(m),
                args.event_time.max_skew,
            )
            .map_err(|e| e.code());
            activity
                .entry(m.partition())
                .or_default()
                .push(ActivityEntry {
                    offset: m.offset(),
                    outcome,
                });
        })?;
        let mut routes = Routes::default();
        if layout.has_routes {
            read_topic(kafka, &topics.repartition, timeout, |m| {
                routes.add(m.partition(), RoutedEntry::of(m));
            })?;
        }
        counts.routed_records = routes.len() as u64;
        Ok(Inputs {
            activity,
            watermarks,
            routes,
        })
    }

    fn entries(&self, p: i32) -> &[ActivityEntry] {
        self.activity.get(&p).map_or(&[][..], Vec::as_slice)
    }
}

/// Each activity partition's status; records not processed yet are a problem (a note with
/// --allow-lag).
pub(super) fn check_partitions(
    inputs: &Inputs,
    offsets: &GroupOffsets,
    allow_lag: bool,
    findings: &mut Findings,
) -> Vec<PartitionStatus> {
    let committed: &Committed = &offsets.activity;
    let mut partitions = Vec::new();
    for (p, (low, high)) in &inputs.watermarks {
        let mut waiting = inputs
            .entries(*p)
            .iter()
            .filter(|e| !committed.is_processed(*p, e.offset));
        let from = waiting.next().map(|e| e.offset);
        let unprocessed = from.map_or(0, |_| 1 + waiting.count() as u64);
        let status = PartitionStatus {
            partition: *p,
            low_watermark: *low,
            high_watermark: *high,
            committed: committed.of(*p),
            records: inputs.entries(*p).len() as u64,
            unprocessed,
        };
        if let Some(from) = from {
            if allow_lag {
                findings.notes.push(format!(
                    "partition {p}: {unprocessed} records from offset {from} not processed yet"
                ));
            } else {
                findings.problems.add_n(
                    ProblemKind::UnprocessedRecords,
                    unprocessed,
                    json!({"partition": p, "committed": status.committed, "firstUnprocessedOffset": from, "records": unprocessed}),
                );
            }
        }
        findings.counts.unprocessed_records += unprocessed;
        partitions.push(status);
    }
    partitions
}

/// Every activity record: counted, its route checked if it is readable, its dead letters checked;
/// then the routed records no activity record accounted for.
pub(super) fn check_records(
    inputs: &Inputs,
    offsets: &GroupOffsets,
    dead_letters: &mut DeadLetters,
    activity_partitions: i32,
    findings: &mut Findings,
) {
    let mut destinations = inputs.routes.destinations();
    let (counts, problems) = (&mut findings.counts, &mut findings.problems);
    for (p, entries) in &inputs.activity {
        for e in entries {
            let source = (*p, e.offset);
            counts.activity_records += 1;
            let processed = offsets.activity.is_processed(*p, e.offset);
            if processed {
                counts.processed_records += 1;
            }
            let letters = dead_letters.take(source);
            match &e.outcome {
                Ok(event) => {
                    counts.readable_records += 1;
                    let routed_to = destinations.remove(&source).unwrap_or_default();
                    let place =
                        placement(&event.tenant_id, *p, Input::Activity, activity_partitions);
                    let misplaced = place != Placement::Owned;
                    routes::check_route(problems, source, misplaced, processed, &routed_to);
                    dead_letters::check_readable(source, letters, problems);
                }
                Err(code) => {
                    counts.unreadable_records += 1;
                    dead_letters::check_unreadable(source, code, processed, &letters, problems);
                }
            }
        }
    }
    routes::check_unmatched(problems, &inputs.routes, destinations);
}
