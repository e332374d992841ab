//! The live table feed: one consumer, outside any group, that reads the policies and inventory topics
//! whole (every instance holds them) and the directory from where it stood at start, applying each
//! record as it arrives so that the tables stay fresh.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::clients::{self, QuietContext};
use super::config::{KafkaArgs, Topics};
use super::partitioner::tenant_partition;
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
    /// Next directory offset per partition: where a restore must read up to.
    directory_next: HashMap<i32, i64>,
    /// While a restore reads the directory up to `directory_next`, the feed must not move past it.
    directory_held: bool,
    last_applied: Instant,
}

fn reader(
    kafka: &KafkaArgs,
    table: Table,
    topic: &str,
    directory_next: &mut HashMap<i32, i64>,
) -> Result<TopicReader, KafkaError> {
    let consumer: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    let marks = clients::watermarks(&consumer, topic, clients::TRANSIENT_WINDOW)?;
    let mut assignment = TopicPartitionList::new();
    let mut pending = HashSet::new();
    for (p, (low, high)) in &marks {
        if table == Table::Directory {
            // The directory is read from its current end: restores read what came before.
            assignment.add_partition_offset(topic, *p, Offset::Offset(*high))?;
            directory_next.insert(*p, *high);
        } else {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
            // An empty partition is loaded already (and may never report its end).
            if high > low {
                pending.insert(*p);
            }
        }
    }
    consumer.assign(&assignment)?;
    Ok(TopicReader {
        table,
        topic: topic.to_owned(),
        consumer,
        pending,
    })
}

impl TableFeed {
    pub fn start(kafka: &KafkaArgs, topics: &Topics) -> Result<Self, KafkaError> {
        let mut directory_next = HashMap::new();
        let readers = vec![
            reader(
                kafka,
                Table::Policies,
                &topics.policies,
                &mut directory_next,
            )?,
            reader(
                kafka,
                Table::Inventory,
                &topics.inventory,
                &mut directory_next,
            )?,
            reader(
                kafka,
                Table::Directory,
                &topics.directory,
                &mut directory_next,
            )?,
        ];
        Ok(TableFeed {
            readers,
            directory_next,
            directory_held: false,
            last_applied: Instant::now(),
        })
    }

    /// Whether the global tables have been read to the end they had at start.
    pub fn tables_loaded(&self) -> bool {
        self.readers.iter().all(|r| r.pending.is_empty())
    }

    /// Where each directory partition's restore must stop.
    pub fn directory_positions(&self) -> &HashMap<i32, i64> {
        &self.directory_next
    }

    /// Holds the directory where it stands (a restore is reading up to there), or lets it go on.
    pub fn hold_directory(&mut self, held: bool) {
        self.directory_held = held;
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
        activity_partitions: i32,
        wait: Duration,
        max: usize,
    ) -> Result<usize, KafkaError> {
        let mut applied = 0;
        for reader in &mut self.readers {
            if reader.table == Table::Directory && self.directory_held {
                continue;
            }
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
                    Table::Directory => {
                        self.directory_next
                            .insert(message.partition(), message.offset() + 1);
                        records::directory_record(&raw).map(|change| {
                            let owner = tenant_partition(change.tenant_id(), activity_partitions);
                            if let Some(state) = states.get_mut(&owner) {
                                apply_directory_change(state, change);
                            }
                        })
                    }
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
        activity_partitions: i32,
        timeout: Duration,
    ) -> Result<bool, KafkaError> {
        let started = Instant::now();
        while !self.tables_loaded() && started.elapsed() < timeout {
            self.poll(
                tables,
                states,
                activity_partitions,
                Duration::from_millis(100),
                10_000,
            )?;
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
