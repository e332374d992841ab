//! The routed records of `verify`: activity records that arrived on a partition that does not own
//! their tenant were written to the repartition topic (with the partition and offset they came
//! from) and decided from there. Here they are read back and matched with their sources: every
//! processed misplaced activity record routed exactly once, every routed record naming one.
use std::collections::{BTreeMap, HashMap};

use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde_json::json;

use super::offsets::Committed;
use super::problems::{ProblemKind, Problems};
use super::{Findings, VerifyArgs};
use crate::domain::activity::Activity;
use crate::pipeline::processor::{ROUTE_OFFSET_HEADER, ROUTE_PARTITION_HEADER};
use crate::pipeline::records::{self, RawRecord};

/// One record of the repartition topic.
pub(super) struct RoutedEntry {
    /// Where it is in the repartition topic.
    pub offset: i64,
    /// The activity partition and offset it was routed from, if its headers say.
    pub source: Option<(i32, i64)>,
    /// The event, if it reads (it always should: only readable records are routed). Its event
    /// time is not bounded again: as in `run`, it was bounded on the activity topic before routing.
    pub event: Option<Activity>,
}

impl RoutedEntry {
    pub fn of(message: &BorrowedMessage<'_>) -> Self {
        RoutedEntry {
            offset: message.offset(),
            source: route_source(message),
            event: records::activity_record(&RawRecord::of(message)).ok(),
        }
    }
}

/// The `autoclaim.route.partition` and `autoclaim.route.offset` headers of a routed record.
fn route_source(message: &BorrowedMessage<'_>) -> Option<(i32, i64)> {
    let headers = message.headers()?;
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let partition = value(ROUTE_PARTITION_HEADER)?.parse().ok()?;
    let offset = value(ROUTE_OFFSET_HEADER)?.parse().ok()?;
    Some((partition, offset))
}

/// The repartition topic read back, by partition, in offset order.
#[derive(Default)]
pub(super) struct Routes {
    pub by_partition: BTreeMap<i32, Vec<RoutedEntry>>,
}

impl Routes {
    pub fn add(&mut self, partition: i32, entry: RoutedEntry) {
        self.by_partition.entry(partition).or_default().push(entry);
    }

    /// Where each activity record was routed to.
    pub fn destinations(&self) -> Destinations {
        let mut destinations = Destinations::new();
        for (p, entries) in &self.by_partition {
            for e in entries {
                if let Some(source) = e.source {
                    destinations.entry(source).or_default().push((*p, e.offset));
                }
            }
        }
        destinations
    }

    pub fn len(&self) -> usize {
        self.by_partition.values().map(Vec::len).sum()
    }
}

/// Where each activity record was routed to: source → the repartition partitions and offsets.
pub(super) type Destinations = HashMap<(i32, i64), Vec<(i32, i64)>>;

/// A readable activity record at `source` and where it was routed to: one that arrived on a
/// partition that does not own its tenant (`misplaced`) exactly once if processed (at most once if
/// not: its route may have committed after the offsets were read), any other never.
pub(super) fn check_route(
    problems: &mut Problems,
    source: (i32, i64),
    misplaced: bool,
    processed: bool,
    routed_to: &[(i32, i64)],
) {
    let example = || {
        json!({
            "sourcePartition": source.0,
            "sourceOffset": source.1,
            "routedTo": routed_to.iter().map(|(p, o)| format!("{p}/{o}")).collect::<Vec<_>>(),
        })
    };
    match (misplaced, routed_to.len()) {
        (true, 0) if processed => problems.add(ProblemKind::MissingRoute, example()),
        (true, 0 | 1) | (false, 0) => {}
        (true, _) => problems.add(ProblemKind::DuplicateRoute, example()),
        (false, _) => problems.add(ProblemKind::UnmatchedRoute, example()),
    }
}

/// Routed records that no activity record accounted for: no source headers, or a source that does
/// not exist (`left`: the destinations no activity record took).
pub(super) fn check_unmatched(problems: &mut Problems, routes: &Routes, left: Destinations) {
    let without_source = routes.by_partition.iter().flat_map(|(p, entries)| {
        entries
            .iter()
            .filter(|e| e.source.is_none())
            .map(move |e| (*p, e.offset))
    });
    for (p, o) in without_source {
        problems.add(
            ProblemKind::UnmatchedRoute,
            json!({"partition": p, "offset": o}),
        );
    }
    for (source, routed_to) in left {
        check_route(problems, source, false, true, &routed_to);
    }
}

/// Routed records at or after the group's committed offset of the repartition topic: not decided
/// yet (a note with --allow-lag).
pub(super) fn check_undecided(
    routes: &Routes,
    args: &VerifyArgs,
    committed: &Committed,
    findings: &mut Findings,
) {
    for (p, entries) in &routes.by_partition {
        let mut waiting = entries
            .iter()
            .filter(|e| !committed.is_processed(*p, e.offset));
        let Some(first) = waiting.next() else {
            continue;
        };
        let n = 1 + waiting.count() as u64;
        findings.counts.unprocessed_routed_records += n;
        if args.allow_lag {
            findings.notes.push(format!(
                "repartition partition {p}: {n} routed records from offset {} not decided yet",
                first.offset
            ));
        } else {
            findings.problems.add_n(
                ProblemKind::UnprocessedRecords,
                n,
                json!({"topic": args.topics.repartition, "partition": p, "committed": committed.of(*p), "firstUnprocessedOffset": first.offset, "records": n}),
            );
        }
    }
}
