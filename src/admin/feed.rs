//! The admin view's feed: a thread of its own (librdkafka's calls block; the async runtime is never
//! held up) that reads the policies, inventory, assignments, audit, claims and failures topics from
//! their beginning and keeps reading, applying each record to the shared view. The view is marked
//! loaded once every topic has been read to the end it had when the feed started. Every reader is
//! `read_committed` (`clients::table_reader`), so a change whose transaction was aborted is never
//! seen, neither its version nor its audit entry.
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::claims::ClaimsUpdate;
use super::view::SharedView;
use crate::domain::time::Timestamp;
use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::records::{self, RawRecord, TableUpdate};
use crate::wire::{codec, pb, Format, WireError};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Records applied under one write lock at most.
const BATCH: usize = 2_000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Table {
    Policies,
    Inventory,
    Assignments,
    Audit,
    Claims,
    Failures,
}

enum Update {
    Table(TableUpdate),
    Assignment(pb::LicenseAssignment),
    /// An entry and its offset: its place in the log. Boxed: an entry holds two versions.
    Audit(Box<pb::AuditEntry>, i64),
    Claims(ClaimsUpdate),
}

struct Reader {
    table: Table,
    topic: String,
    consumer: BaseConsumer<QuietContext>,
    /// Partitions not yet read to the end they had at start.
    pending: HashSet<i32>,
}

fn open(kafka: &KafkaArgs, table: Table, topic: &str) -> Result<Option<Reader>, KafkaError> {
    let consumer: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    let marks = clients::watermarks(&consumer, topic, METADATA_TIMEOUT)?;
    if marks.is_empty() {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    let mut pending = HashSet::new();
    for (p, (low, high)) in marks {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        if high > low {
            pending.insert(p);
        }
    }
    consumer.assign(&assignment)?;
    Ok(Some(Reader {
        table,
        topic: topic.to_owned(),
        consumer,
        pending,
    }))
}

/// A record of `table` at `offset`, decoded.
fn decode(table: Table, raw: &RawRecord<'_>, offset: i64) -> Result<Option<Update>, WireError> {
    match table {
        Table::Policies => Ok(records::policies_record(raw)?.map(Update::Table)),
        Table::Inventory => Ok(records::inventory_record(raw)?.map(Update::Table)),
        Table::Assignments => Ok(message(raw)?.map(Update::Assignment)),
        Table::Audit => Ok(message(raw)?.map(|e| Update::Audit(Box::new(e), offset))),
        Table::Claims => Ok(ClaimsUpdate::claim(raw)?.map(Update::Claims)),
        Table::Failures => Ok(ClaimsUpdate::failure(raw)?.map(Update::Claims)),
    }
}

/// A record's value in the format its content type names; `None` for a tombstone.
fn message<M>(raw: &RawRecord<'_>) -> Result<Option<M>, WireError>
where
    M: prost::Message + serde::de::DeserializeOwned + Default,
{
    let Some(value) = raw.value else {
        return Ok(None);
    };
    let format = Format::from_content_type(raw.content_type)?;
    Ok(Some(codec::decode(value, format)?))
}

/// Reads one batch of a topic; returns how many records were read.
fn poll(reader: &mut Reader, view: &SharedView) -> Result<usize, KafkaError> {
    let mut updates = Vec::new();
    let mut read = 0;
    let mut wait = POLL_WAIT;
    while updates.len() < BATCH {
        let message = match reader.consumer.poll(wait) {
            None => break,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                reader.pending.remove(&p);
                continue;
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(m)) => m,
        };
        wait = Duration::ZERO;
        read += 1;
        match decode(reader.table, &RawRecord::of(&message), message.offset()) {
            Ok(Some(update)) => updates.push(update),
            Ok(None) => {}
            Err(e) => warn!(
                topic = reader.topic,
                partition = message.partition(),
                offset = message.offset(),
                error = %e,
                "admin view: skipping an unreadable record"
            ),
        }
    }
    if !updates.is_empty() {
        let mut view = view.write();
        for update in updates {
            match update {
                Update::Table(u) => view.apply(u),
                Update::Assignment(a) => {
                    if let Err(e) = view.apply_assignment(a) {
                        warn!(topic = reader.topic, error = %e, "admin view: skipping an unreadable assignment");
                    }
                }
                Update::Audit(entry, offset) => {
                    if let Err(e) = view.apply_audit(*entry, offset) {
                        warn!(topic = reader.topic, error = %e, "admin view: skipping an unreadable audit entry");
                    }
                }
                Update::Claims(u) => {
                    if let Err(e) = view.claim_tables_mut().apply(u) {
                        warn!(topic = reader.topic, error = %e, "admin view: skipping an unreadable record");
                    }
                }
            }
        }
    }
    Ok(read)
}

/// Runs the feed until `stop` is set.
pub fn spawn(
    kafka: KafkaArgs,
    topics: Topics,
    view: SharedView,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("autoclaim-admin-feed".into())
        .spawn(move || run(&kafka, &topics, &view, &stop))
}

fn run(kafka: &KafkaArgs, topics: &Topics, view: &SharedView, stop: &AtomicBool) {
    let wanted = [
        (Table::Policies, topics.policies.as_str()),
        (Table::Inventory, topics.inventory.as_str()),
        (Table::Assignments, topics.assignments.as_str()),
        (Table::Audit, topics.audit.as_str()),
        (Table::Claims, topics.claims.as_str()),
        (Table::Failures, topics.failures.as_str()),
    ];
    let mut readers: Vec<Reader> = Vec::new();
    let mut waiting_since = Instant::now();
    // Open every topic; one that does not exist yet is waited for (the processor may create it).
    while readers.len() < wanted.len() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (table, topic) = wanted[readers.len()];
        match open(kafka, table, topic) {
            Ok(Some(reader)) => readers.push(reader),
            Ok(None) => {
                if waiting_since.elapsed() > Duration::from_secs(30) {
                    warn!(topic, "admin view: waiting for the topic to exist");
                    waiting_since = Instant::now();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                warn!(topic, error = %e, "admin view: cannot open the topic; retrying");
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    let started = Instant::now();
    let mut last_prune = Instant::now();
    let mut loaded = false;
    while !stop.load(Ordering::Relaxed) {
        for reader in &mut readers {
            if let Err(e) = poll(reader, view) {
                warn!(topic = reader.topic, error = %e, "admin view: read error; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        if !loaded && readers.iter().all(|r| r.pending.is_empty()) {
            loaded = true;
            view.write().mark_loaded();
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "admin view loaded"
            );
        }
        if last_prune.elapsed() > PRUNE_EVERY {
            last_prune = Instant::now();
            view.write().prune(Timestamp::now());
        }
    }
}
