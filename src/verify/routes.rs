//! The routed records of `verify`: activity records that arrived on a partition that does not own
//! their tenant were written to the repartition topic (with the partition and offset they came
//! from) and decided from there. Here they are read back and matched with their sources: every
//! processed misplaced activity record routed exactly once, every routed record naming one.
use std::collections::{BTreeMap, HashMap};

use rdkafka::message::{BorrowedMessage, Headers, Message};

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

    /// Where each activity record was routed to: source → (repartition partition, offset).
    pub fn destinations(&self) -> HashMap<(i32, i64), Vec<(i32, i64)>> {
        let mut destinations: HashMap<(i32, i64), Vec<(i32, i64)>> = HashMap::new();
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
