//! The live table feed: consumers outside any group that read the policies and inventory topics
//! whole (every instance holds them) and the owned partitions of the directory copy from where
//! their restore stopped, applying each record as it arrives so that the tables stay fresh.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::clients::{self, QuietContext};
use super::config::{KafkaArgs, Topics};
use super::records::{self, RawRecord, TableUpdate};
use super::restore::apply_directory_change;
use crate::state::{PartitionState, Tables};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Policies,
    Inventory,
    Directory,
}

/// One consumer per topic, so that librdkafka's end-of-partition events (which name only the
/// partition) are unambiguous.
struct TopicReader {
    table: Table,
    topic: String,
    consumer: BaseConsumer<QuietContext>,
    /// Partitions not yet read to the end they had at start.
    pending: HashSet<i32>,
}

pub struct TableFeed {
    readers: Vec<TopicReader>,
    /// Partitions of the directory copy being followed (those of restored partitions).
    followed: HashSet<i32>,
    last_applied: Instant,
}

/// A reader of a whole table topic, from its beginning; or, for the directory copy, of no
/// partition until a restore says where one goes on from.
fn reader(kafka: &KafkaArgs, table: Table, topic: &str) -> Result<TopicReader, KafkaError> {
    let consumer: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    let mut pending = HashSet::new();
    if table != Table::Directory {
        let marks = clients::watermarks(&consumer, topic, clients::TRANSIENT_WINDOW)?;
        let mut assignment = TopicPartitionList::new();
        for (p, (low, high)) in &marks {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
            // An empty partition is loaded already (and may never report its end).
            if high > low {
                pending.insert(*p);
            }
        }
        consumer.assign(&assignment)?;
    }
    Ok(TopicReader {
        table,
        topic: topic.to_owned(),
        consumer,
        pending,
    })
}

impl TableFeed {
    pub fn start(kafka: &KafkaArgs, topics: &Topics) -> Result<Self, KafkaError> {
        let readers = vec![
            reader(kafka, Table::Policies, &topics.policies)?,
            reader(kafka, Table::Inventory, &topics.inventory)?,
            reader(kafka, Table::Directory, &topics.directory_by_partition)?,
        ];
        Ok(TableFeed {
            readers,
            followed: HashSet::new(),
            last_applied: Instant::now(),
        })
    }

    /// Whether the global tables have been read to the end they had at start.
    pub fn tables_loaded(&self) -> bool {
        self.readers.iter().all(|r| r.pending.is_empty())
    }

    fn directory_reader(&self) -> &TopicReader {
        self.readers
            .iter()
            .find(|r| r.table == Table::Directory)
            .expect("the feed has a directory reader")
    }

    /// Follows these partitions of the directory copy, each from the offset its restore read up to
    /// (one followed already starts again from there: it was restored again).
    pub fn follow_directory(&mut self, ends: &HashMap<i32, i64>) -> Result<(), KafkaError> {
        let again: Vec<i32> = ends
            .keys()
            .filter(|p| self.followed.contains(p))
            .copied()
            .collect();
        self.unfollow_directory(&again)?;
        let reader = self.directory_reader();
        let mut list = TopicPartitionList::new();
        for (p, end) in ends {
            list.add_partition_offset(&reader.topic, *p, Offset::Offset(*end))?;
        }
        if list.count() > 0 {
            reader.consumer.incremental_assign(&list)?;
        }
        self.followed.extend(ends.keys());
        Ok(())
    }

    /// Stops following these partitions of the directory copy (revoked, or to be restored again).
    pub fn unfollow_directory(&mut self, partitions: &[i32]) -> Result<(), KafkaError> {
        let reader = self.directory_reader();
        let mut list = TopicPartitionList::new();
        for p in partitions.iter().filter(|p| self.followed.contains(p)) {
            list.add_partition(&reader.topic, *p);
        }
        if list.count() > 0 {
            reader.consumer.incremental_unassign(&list)?;
        }
        for p in partitions {
            self.followed.remove(p);
        }
        Ok(())
    }

    /// Time since a table record was last applied (or since start).
    pub fn since_last_update(&self) -> Duration {
        self.last_applied.elapsed()
    }

    /// Applies what has arrived, at most `max` records per topic, waiting at most `wait` on each.
    pub fn poll(
        &mut self,
        tables: &mut Tables,
        states: &mut HashMap<i32, PartitionState>,
        wait: Duration,
        max: usize,
    ) -> Result<usize, KafkaError> {
        let mut applied = 0;
        for reader in &mut self.readers {
            let mut timeout = wait;
            for _ in 0..max {
                let message = match reader.consumer.poll(timeout) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        reader.pending.remove(&p);
                        continue;
                    }
                    Some(Err(e)) => {
                        // Brokers going away is routine: librdkafka reconnects by itself.
                        warn!(topic = reader.topic, error = %e, "table feed consumer error");
                        break;
                    }
                    Some(Ok(m)) => m,
                };
                timeout = Duration::ZERO;
                applied += 1;
                self.last_applied = Instant::now();
                let raw = RawRecord::of(&message);
                let result = match reader.table {
                    // The copy wrote the row to the partition of its tenant.
                    Table::Directory => records::directory_record(&raw).map(|change| {
                        if let Some(state) = states.get_mut(&message.partition()) {
                            apply_directory_change(state, change);
                        }
                    }),
                    Table::Policies => records::policies_record(&raw)
                        .map(|u| u.map_or((), |u| apply_table_update(tables, u))),
                    Table::Inventory => records::inventory_record(&raw)
                        .map(|u| u.map_or((), |u| apply_table_update(tables, u))),
                };
                let table = match reader.table {
                    Table::Policies => "policies",
                    Table::Inventory => "inventory",
                    Table::Directory => "directory",
                };
                let outcome = if result.is_ok() {
                    "applied"
                } else {
                    "rejected"
                };
                metrics::counter!(crate::telemetry::TABLE_RECORDS, "table" => table, "result" => outcome)
                    .increment(1);
                if let Err(e) = result {
                    warn!(topic = reader.topic, partition = message.partition(), offset = message.offset(), error = %e, "skipping unreadable table record");
                }
            }
        }
        Ok(applied)
    }

    /// Reads the global tables to the end they had at start; false if `timeout` passed first.
    pub fn load_tables(
        &mut self,
        tables: &mut Tables,
        states: &mut HashMap<i32, PartitionState>,
        timeout: Duration,
    ) -> Result<bool, KafkaError> {
        let started = Instant::now();
        while !self.tables_loaded() && started.elapsed() < timeout {
            self.poll(tables, states, Duration::from_millis(100), 10_000)?;
        }
        Ok(self.tables_loaded())
    }
}

pub fn apply_table_update(tables: &mut Tables, update: TableUpdate) {
    match update {
        TableUpdate::Settings(s) => tables.record_settings(&s.tenant_id, s.changed_at, s.settings),
        TableUpdate::Policy(p) => tables.record_policy(&p.tenant_id, p.policy),
        TableUpdate::Inventory(i) => tables.record_inventory(&i.tenant_id, i.product, i.inventory),
    }
}
