//! Rebuilding a partition's state before any of its input is processed: what this processor assigned
//! (its changelog partition, the assignments topic) and the directory rows of its tenants (a filtered
//! read of the whole directory topic, up to where the live table feed stands).
use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use thiserror::Error;
use tracing::{info, warn};

use super::clients::{self, QuietContext};
use super::config::{KafkaArgs, Topics};
use super::partitioner::tenant_partition;
use super::records::{self, DirectoryChange, RawRecord};
use super::topic_reader::{ReadError, TopicReader};
use crate::state::PartitionState;

/// A restore that cannot finish in this time fails rather than hang.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("Kafka error while restoring: {0}")]
    Kafka(#[from] KafkaError),
    #[error("restore of partitions {0:?} did not finish within {RESTORE_TIMEOUT:?}")]
    Timeout(Vec<i32>),
    #[error("restore could not run: {0}")]
    Thread(String),
}

impl From<ReadError> for RestoreError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Timeout { pending, .. } => RestoreError::Timeout(pending),
            ReadError::Consumer(e)
            | ReadError::Partitions { source: e, .. }
            | ReadError::Kafka { source: e, .. } => RestoreError::Kafka(e),
            // A restore names its partitions rather than look the topic up, so this never comes.
            ReadError::Missing(_) => RestoreError::Kafka(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            )),
        }
    }
}

/// What a restore read, for logs and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreStats {
    /// Records read from the changelog (assignments) and from the directory, all of them: the
    /// directory is read whole and filtered to the tenants of the restored partitions.
    pub changelog_read: u64,
    pub directory_read: u64,
    /// Records read from the claims and notices topics.
    pub claims_read: u64,
    pub assignments: u64,
    pub directory_rows: u64,
    pub skipped: u64,
    pub elapsed: Duration,
}

/// Rebuilds the state of `partitions` (activity partition numbers). `directory_until` gives, per
/// directory partition, the offset the live feed continues from: the restore reads the directory up
/// to it, so that no row is missed or applied out of order.
pub fn restore_partitions(
    kafka: &KafkaArgs,
    topics: &Topics,
    partitions: &[i32],
    activity_partitions: i32,
    directory_until: &HashMap<i32, i64>,
) -> Result<(HashMap<i32, PartitionState>, RestoreStats), RestoreError> {
    let started = Instant::now();
    let mut states: HashMap<i32, PartitionState> = partitions
        .iter()
        .map(|p| (*p, PartitionState::default()))
        .collect();
    let mut stats = RestoreStats::default();
    if partitions.is_empty() {
        return Ok((states, stats));
    }
    // Transactions still open on the changelog (a crashed instance's, until the broker times them
    // out) hide what was committed after them from a read_committed reader: wait for them to end.
    for topic in [&topics.assignments, &topics.claims, &topics.notices] {
        wait_for_open_transactions(kafka, topic, partitions, started)?;
    }
    // The changelog first: what this processor assigned in these partitions.
    let changelog: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    restore_changelog(
        kafka,
        &topics.assignments,
        &changelog,
        started,
        &mut states,
        &mut stats,
    )?;
    restore_claims(kafka, topics, &changelog, started, &mut states, &mut stats)?;
    // Then the directory rows of the tenants these partitions own.
    let directory = DirectoryRead {
        kafka,
        topic: &topics.directory,
        until: directory_until,
        activity_partitions,
        started,
    };
    let (read, rows, skipped) = directory.restore(&mut states)?;
    stats.directory_read = read;
    stats.directory_rows += rows;
    stats.skipped += skipped;
    stats.elapsed = started.elapsed();
    info!(
        ?partitions,
        assignments = stats.assignments,
        directory_rows = stats.directory_rows,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "partition state restored"
    );
    Ok((states, stats))
}

/// Applies the changelog (the assignments topic) of `partitions` to their states.
fn restore_changelog(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: &[(i32, Option<i64>)],
    started: Instant,
    states: &mut HashMap<i32, PartitionState>,
    stats: &mut RestoreStats,
) -> Result<(), RestoreError> {
    read_to_end(kafka, topic, partitions, started, |p, raw, offset| {
        stats.changelog_read += 1;
        match records::assignment_record(raw) {
            Ok(a) => {
                if let Some(state) = states.get_mut(&p) {
                    state.record_assignment(
                        &a.tenant_id,
                        &a.user_id,
                        a.product,
                        a.seats_counted_from,
                    );
                    stats.assignments += 1;
                }
            }
            Err(e) => {
                stats.skipped += 1;
                warn!(partition = p, offset, error = %e, "skipping unreadable assignment record");
            }
        }
    })
}

/// Applies the pending claims (the claims topic, the latest change of each claim last) and what the
/// notices said (for the first-then-digest rule) of `partitions` to their states.
fn restore_claims(
    kafka: &KafkaArgs,
    topics: &Topics,
    partitions: &[(i32, Option<i64>)],
    started: Instant,
    states: &mut HashMap<i32, PartitionState>,
    stats: &mut RestoreStats,
) -> Result<(), RestoreError> {
    read_to_end(
        kafka,
        &topics.claims,
        partitions,
        started,
        |p, raw, offset| {
            stats.claims_read += 1;
            match (records::claim_record(raw), states.get_mut(&p)) {
                (Ok(r), Some(state)) => {
                    state
                        .claims_mut(&r.tenant_id)
                        .restore(r.claim, r.pending, r.changed_at)
                }
                (Ok(_), None) => {}
                (Err(e), _) => {
                    stats.skipped += 1;
                    warn!(partition = p, offset, error = %e, "skipping unreadable claim record");
                }
            }
        },
    )?;
    read_to_end(
        kafka,
        &topics.notices,
        partitions,
        started,
        |p, raw, offset| {
            stats.claims_read += 1;
            match (records::notice_record(raw), states.get_mut(&p)) {
                (Ok(n), Some(state)) => state
                    .claims_mut(&n.tenant_id)
                    .notices(n.product)
                    .apply(n.kind, n.at),
                (Ok(_), None) => {}
                (Err(e), _) => {
                    stats.skipped += 1;
                    warn!(partition = p, offset, error = %e, "skipping unreadable notice record");
                }
            }
        },
    )
}

/// The directory read of a restore: every directory partition up to where the live feed stands.
struct DirectoryRead<'a> {
    kafka: &'a KafkaArgs,
    topic: &'a str,
    until: &'a HashMap<i32, i64>,
    activity_partitions: i32,
    started: Instant,
}

impl DirectoryRead<'_> {
    /// Applies the rows of the tenants `states` owns; returns the records read, the rows applied
    /// and the records skipped. Decoding them is most of a restore's work, so it runs on a second
    /// thread while this one reads from Kafka.
    fn restore(
        &self,
        states: &mut HashMap<i32, PartitionState>,
    ) -> Result<(u64, u64, u64), RestoreError> {
        let directory: Vec<(i32, Option<i64>)> = self
            .until
            .iter()
            .filter(|(_, until)| **until > 0)
            .map(|(p, until)| (*p, Some(*until)))
            .collect();
        let mut read = 0;
        let (rows, skipped) = std::thread::scope(|scope| {
            let (batches, received) = mpsc::sync_channel::<RecordBatch>(DIRECTORY_QUEUE_BATCHES);
            let applier = scope.spawn(|| {
                apply_directory_batches(received, states, self.activity_partitions, self.topic)
            });
            let mut batch = RecordBatch::with_capacity(DIRECTORY_BATCH);
            let result = read_to_end(
                self.kafka,
                self.topic,
                &directory,
                self.started,
                |p, raw, offset| {
                    read += 1;
                    batch.push(p, raw, offset);
                    if batch.len() == DIRECTORY_BATCH {
                        // A send fails only if the applier is gone, which its join below reports.
                        let _ = batches.send(std::mem::replace(
                            &mut batch,
                            RecordBatch::with_capacity(DIRECTORY_BATCH),
                        ));
                    }
                },
            );
            if !batch.is_empty() {
                let _ = batches.send(batch);
            }
            drop(batches);
            let applied = applier
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            result.map(|()| applied)
        })?;
        Ok((read, rows, skipped))
    }
}

/// Directory records handed to the applier thread at a time, and batches it may have queued.
const DIRECTORY_BATCH: usize = 1024;
const DIRECTORY_QUEUE_BATCHES: usize = 16;

/// Records copied out of the consumer's buffers for the applier thread: their bytes in one buffer
/// (two allocations a batch rather than three a record, and no frees of one thread's small
/// allocations by another, which glibc's per-thread arenas would keep as resident memory).
#[derive(Default)]
struct RecordBatch {
    bytes: Vec<u8>,
    records: Vec<RecordSpans>,
}

struct RecordSpans {
    partition: i32,
    offset: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    content_type: Option<Range<usize>>,
}

impl RecordBatch {
    fn with_capacity(records: usize) -> Self {
        RecordBatch {
            bytes: Vec::with_capacity(records * 256),
            records: Vec::with_capacity(records),
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn push(&mut self, partition: i32, raw: &RawRecord<'_>, offset: i64) {
        let mut copy = |part: Option<&[u8]>| {
            part.map(|bytes| {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(bytes);
                start..self.bytes.len()
            })
        };
        let spans = RecordSpans {
            partition,
            offset,
            key: copy(raw.key),
            value: copy(raw.value),
            content_type: copy(raw.content_type),
        };
        self.records.push(spans);
    }

    fn iter(&self) -> impl Iterator<Item = (&RecordSpans, RawRecord<'_>)> {
        let part = |span: &Option<Range<usize>>| span.clone().map(|r| &self.bytes[r]);
        self.records.iter().map(move |spans| {
            let raw = RawRecord {
                key: part(&spans.key),
                value: part(&spans.value),
                content_type: part(&spans.content_type),
            };
            (spans, raw)
        })
    }
}

/// Decodes directory records in the order read and applies those of tenants that `states` owns;
/// returns the rows applied and the records skipped as unreadable (logged and counted as rejected,
/// as the live feed does).
fn apply_directory_batches(
    batches: mpsc::Receiver<RecordBatch>,
    states: &mut HashMap<i32, PartitionState>,
    activity_partitions: i32,
    directory_topic: &str,
) -> (u64, u64) {
    let (mut rows, mut skipped) = (0, 0);
    for batch in batches {
        for (record, raw) in batch.iter() {
            match records::directory_record(&raw) {
                Ok(change) => {
                    let owner = tenant_partition(change.tenant_id(), activity_partitions);
                    if let Some(state) = states.get_mut(&owner) {
                        apply_directory_change(state, change);
                        rows += 1;
                    }
                }
                Err(e) => {
                    skipped += 1;
                    metrics::counter!(crate::telemetry::TABLE_RECORDS, "table" => "directory", "result" => "rejected")
                        .increment(1);
                    warn!(topic = directory_topic, partition = record.partition, offset = record.offset, error = %e, "skipping unreadable directory record");
                }
            }
        }
    }
    (rows, skipped)
}

/// Reads the committed records of `topic`'s partitions from the beginning, each to its end or to the
/// offset given (exclusive), and hands each record to `apply`.
fn read_to_end(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: &[(i32, Option<i64>)],
    started: Instant,
    mut apply: impl FnMut(i32, &RawRecord<'_>, i64),
) -> Result<(), RestoreError> {
    if partitions.is_empty() {
        return Ok(());
    }
    let left = RESTORE_TIMEOUT.saturating_sub(started.elapsed());
    let config = clients::restore_reader(kafka);
    let mut reader = TopicReader::partitions(&config, topic, partitions, left)?;
    while let Some(message) = reader.next_record()? {
        apply(
            message.partition(),
            &RawRecord::of(&message),
            message.offset(),
        );
    }
    Ok(())
}

pub fn apply_directory_change(state: &mut PartitionState, change: DirectoryChange) {
    match change {
        DirectoryChange::Upsert(user) => {
            state.upsert_directory_user(&user.tenant_id, &user.user_id, user.row())
        }
        DirectoryChange::Delete { tenant_id, user_id } => {
            state.delete_directory_user(&tenant_id, &user_id)
        }
    }
}

/// Waits until no transaction is open on the changelog partitions: the last stable offset (what a
/// read_committed consumer sees as the end) reaches the high watermark. This instance has no open
/// transaction of its own on these partitions at restore time (it commits before revocation and
/// aborts before a rewind), so what it waits for is another, dead instance's.
fn wait_for_open_transactions(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: &[i32],
    started: Instant,
) -> Result<(), RestoreError> {
    let mut uncommitted = clients::table_reader(kafka);
    uncommitted.set("isolation.level", "read_uncommitted");
    let uncommitted: BaseConsumer<QuietContext> = uncommitted.create_with_context(QuietContext)?;
    let committed: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    for p in partitions {
        let watermarks = |consumer: &BaseConsumer<QuietContext>| {
            clients::retry_transient(clients::TRANSIENT_WINDOW, topic, || {
                consumer.fetch_watermarks(topic, *p, Duration::from_secs(30))
            })
        };
        let (_, high) = watermarks(&uncommitted)?;
        loop {
            let (_, stable) = watermarks(&committed)?;
            if stable >= high {
                break;
            }
            if started.elapsed() > RESTORE_TIMEOUT {
                return Err(RestoreError::Timeout(vec![*p]));
            }
            warn!(
                partition = p,
                stable, high, "waiting for an open transaction on the changelog to end"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}
