//! Where the group stands: its committed offsets of the activity and repartition topics, read
//! first of all (see the module documentation of `verify`).
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::{Layout, VerifyArgs};
use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::KafkaArgs;
use crate::pipeline::transaction::Input;

/// The group's committed offsets of `topic`'s partitions (None: nothing committed). Reads them with
/// `read_committed`, so offsets of a transaction still open are waited for, not returned; if one is
/// still held when `timeout` runs out, that is an error, never "nothing committed".
pub fn committed_offsets(
    kafka: &KafkaArgs,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>, KafkaError> {
    let mut config = clients::table_reader(kafka);
    config.set("group.id", group_id);
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = clients::retry_transient(timeout, "committed offsets", || {
        consumer.committed_offsets(tpl.clone(), timeout)
    })?;
    for element in committed.elements() {
        element.error()?;
    }
    Ok(partitions
        .iter()
        .map(|p| {
            let offset = committed
                .find_partition(topic, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
            (*p, offset)
        })
        .collect())
}

/// The committed offsets of one topic, by partition (None: nothing committed).
#[derive(Default)]
pub(super) struct Committed(BTreeMap<i32, Option<i64>>);

impl Committed {
    /// The next offset the group would process on partition `p`, if it committed any.
    pub fn of(&self, p: i32) -> Option<i64> {
        self.0.get(&p).copied().flatten()
    }

    /// Whether `offset` of partition `p` is before the committed offset (processed).
    pub fn is_processed(&self, p: i32, offset: i64) -> bool {
        self.of(p).is_some_and(|c| offset < c)
    }
}

/// The group's committed offsets of both inputs.
pub(super) struct GroupOffsets {
    pub activity: Committed,
    /// Empty when there is no repartition topic (a note says so).
    pub routes: Committed,
}

impl GroupOffsets {
    pub fn read(
        args: &VerifyArgs,
        layout: &Layout,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Self> {
        let topics = &args.topics;
        let group = &args.group_id;
        let partitions = layout.partition_ids();
        let committed = |topic: &str| {
            committed_offsets(&args.kafka, group, topic, &partitions, args.timeout).map(Committed)
        };
        let activity = committed(&topics.activity)
            .with_context(|| format!("cannot read the committed offsets of group {group}"))?;
        let routes = if layout.has_routes {
            committed(&topics.repartition).with_context(|| {
                format!(
                    "cannot read the committed offsets of group {group} on {}",
                    topics.repartition
                )
            })?
        } else {
            notes.push(format!(
                "topic {} does not exist: no records were routed",
                topics.repartition
            ));
            Committed::default()
        };
        Ok(GroupOffsets { activity, routes })
    }

    /// Whether the record at `offset` of partition `p` of `input` was processed.
    pub fn is_processed(&self, input: Input, p: i32, offset: i64) -> bool {
        match input {
            Input::Activity => self.activity.is_processed(p, offset),
            Input::Repartition => self.routes.is_processed(p, offset),
        }
    }
}
