//! Rebuilding a partition's state before any of its input is processed: what this processor assigned
//! (its changelog partition, the assignments topic), its pending claims and notices, and the
//! directory rows of its tenants (its partition of the directory copy, read up to a point that
//! includes every directory record written before the restore began: see `copy_cut`).
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
use super::copy_cut;
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
    #[error(
        "the directory copy did not catch up with directory partitions {0:?} within \
         {RESTORE_TIMEOUT:?} (is every instance's directory copy running? its errors are logged)"
    )]
    CopyBehind(Vec<i32>),
    #[error("cannot read how far the directory copy has got: {0}")]
    CopyPositions(String),
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
    /// Records read from the changelog (assignments) and from the directory copy.
    pub changelog_read: u64,
    pub directory_read: u64,
    /// Bytes (keys and values) read from the directory copy.
    pub directory_bytes: u64,
    /// Records read from the claims and notices topics.
    pub claims_read: u64,
    pub assignments: u64,
    pub directory_rows: u64,
    pub skipped: u64,
    /// Time spent waiting for the directory copy to catch up.
    pub copy_wait: Duration,
    pub elapsed: Duration,
}

/// The state of restored partitions, and where each one's live directory feed goes on from.
pub struct Restored {
    pub states: HashMap<i32, PartitionState>,
    pub stats: RestoreStats,
    /// Per partition: the offset of the directory copy the restore read up to (exclusive).
    pub copy_ends: HashMap<i32, i64>,
}

/// Rebuilds the state of `partitions` (activity partition numbers). The directory rows come from
/// their partitions of the directory copy, once `copy` has copied every directory record written
/// before this call.
pub fn restore_partitions(
    kafka: &KafkaArgs,
    topics: &Topics,
    partitions: &[i32],
    copy: &copy_cut::CopySource,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let mut states: HashMap<i32, PartitionState> = partitions
        .iter()
        .map(|p| (*p, PartitionState::default()))
        .collect();
    let mut stats = RestoreStats::default();
    if partitions.is_empty() {
        return Ok(Restored {
            states,
            stats,
            copy_ends: HashMap::new(),
        });
    }
    let [changelog, claims, notices] = changelog_spans(
        kafka,
        [&topics.assignments, &topics.claims, &topics.notices],
        partitions,
        started,
    )?;
    // The changelog first: what this processor assigned in these partitions.
    restore_changelog(
        kafka,
        &topics.assignments,
        &changelog,
        started,
        &mut states,
        &mut stats,
    )?;
    let spans = ClaimSpans { claims, notices };
    restore_claims(kafka, topics, &spans, started, &mut states, &mut stats)?;
    // Then the directory rows of the tenants these partitions own.
    let waited = Instant::now();
    copy_cut::wait_for_copy(kafka, &topics.directory, copy, started)?;
    stats.copy_wait = waited.elapsed();
    let copy_ends =
        copy_cut::read_committed_ends_of(kafka, &topics.directory_by_partition, partitions)?;
    let directory = DirectoryRead {
        kafka,
        topic: &topics.directory_by_partition,
        ends: &copy_ends,
        started,
    };
    directory.restore(&mut states, &mut stats)?;
    stats.elapsed = started.elapsed();
    info!(
        ?partitions,
        assignments = stats.assignments,
        directory_rows = stats.directory_rows,
        directory_read = stats.directory_read,
        directory_bytes = stats.directory_bytes,
        copy_wait_ms = stats.copy_wait.as_millis() as u64,
        elapsed_ms = stats.elapsed.as_millis() as u64,
        "partition state restored"
    );
    Ok(Restored {
        states,
        stats,
        copy_ends,
    })
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

/// Partitions of a topic to read, each from its beginning to the offset given (or its end).
type Spans = Vec<(i32, Option<i64>)>;

/// What a restore reads of the claims and notices topics.
struct ClaimSpans {
    claims: Spans,
    notices: Spans,
}

/// Applies the pending claims (the claims topic, the latest change of each claim last) and what the
/// notices said (for the first-then-digest rule) of `partitions` to their states.
fn restore_claims(
    kafka: &KafkaArgs,
    topics: &Topics,
    spans: &ClaimSpans,
    started: Instant,
    states: &mut HashMap<i32, PartitionState>,
    stats: &mut RestoreStats,
) -> Result<(), RestoreError> {
    read_to_end(
        kafka,
        &topics.claims,
        &spans.claims,
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
        &spans.notices,
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

/// The directory read of a restore: the restored partitions of the directory copy, each up to
/// its end taken once the copy had caught up.
struct DirectoryRead<'a> {
    kafka: &'a KafkaArgs,
    topic: &'a str,
    ends: &'a HashMap<i32, i64>,
    started: Instant,
}

impl DirectoryRead<'_> {
    /// Applies the rows to `states`, counting what was read, applied and skipped. Decoding them is
    /// most of a restore's work, so it runs on a second thread while this one reads from Kafka.
    fn restore(
        &self,
        states: &mut HashMap<i32, PartitionState>,
        stats: &mut RestoreStats,
    ) -> Result<(), RestoreError> {
        let spans: Vec<(i32, Option<i64>)> = self
            .ends
            .iter()
            .filter(|(_, end)| **end > 0)
            .map(|(p, end)| (*p, Some(*end)))
            .collect();
        let (mut read, mut bytes) = (0, 0);
        let (rows, skipped) = std::thread::scope(|scope| {
            let (batches, received) = mpsc::sync_channel::<RecordBatch>(DIRECTORY_QUEUE_BATCHES);
            let applier = scope.spawn(|| apply_directory_batches(received, states, self.topic));
            let mut batch = RecordBatch::with_capacity(DIRECTORY_BATCH);
            let result = read_to_end(
                self.kafka,
                self.topic,
                &spans,
                self.started,
                |p, raw, offset| {
                    read += 1;
                    bytes +=
                        (raw.key.map_or(0, <[u8]>::len) + raw.value.map_or(0, <[u8]>::len)) as u64;
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
        stats.directory_read = read;
        stats.directory_bytes = bytes;
        stats.directory_rows += rows;
        stats.skipped += skipped;
        Ok(())
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

/// Decodes directory records in the order read and applies each to the state of the partition it
/// was read from (the copy wrote it to the partition of its tenant); returns the rows applied and
/// the records skipped as unreadable (logged and counted as rejected, as the live feed does).
fn apply_directory_batches(
    batches: mpsc::Receiver<RecordBatch>,
    states: &mut HashMap<i32, PartitionState>,
    directory_topic: &str,
) -> (u64, u64) {
    let (mut rows, mut skipped) = (0, 0);
    for batch in batches {
        for (record, raw) in batch.iter() {
            match records::directory_record(&raw) {
                Ok(change) => {
                    if let Some(state) = states.get_mut(&record.partition) {
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

/// What a restore reads of each changelog topic (assignments, claims, notices): the restored
/// partitions that hold records, each up to its end. Transactions still open on them (a crashed
/// instance's, until the broker times them out) hide what was committed after them from a
/// read_committed reader, so the end is taken once the last stable offset has reached the high
/// watermark. This instance has no open transaction of its own on these partitions at restore time
/// (it commits before revocation and aborts before a rewind), so what it waits for is another,
/// dead instance's. An empty partition is not read at all: a restore of one partition costs only
/// what that partition holds.
fn changelog_spans<const N: usize>(
    kafka: &KafkaArgs,
    topics: [&str; N],
    partitions: &[i32],
    started: Instant,
) -> Result<[Spans; N], RestoreError> {
    let mut uncommitted = clients::table_reader(kafka);
    uncommitted.set("isolation.level", "read_uncommitted");
    let uncommitted: BaseConsumer<QuietContext> = uncommitted.create_with_context(QuietContext)?;
    let committed: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    let mut spans: [Spans; N] = std::array::from_fn(|_| Vec::new());
    for (topic, spans) in topics.iter().zip(spans.iter_mut()) {
        for p in partitions {
            let watermarks = |consumer: &BaseConsumer<QuietContext>| {
                clients::retry_transient(clients::TRANSIENT_WINDOW, topic, || {
                    consumer.fetch_watermarks(topic, *p, Duration::from_secs(30))
                })
            };
            let (low, high) = watermarks(&uncommitted)?;
            wait_until_stable(topic, *p, high, started, || Ok(watermarks(&committed)?.1))?;
            if high > low {
                spans.push((*p, Some(high)));
            }
        }
    }
    Ok(spans)
}

/// Waits until `stable` (the partition's last stable offset) reaches `high`.
fn wait_until_stable(
    topic: &str,
    partition: i32,
    high: i64,
    started: Instant,
    mut stable: impl FnMut() -> Result<i64, RestoreError>,
) -> Result<(), RestoreError> {
    loop {
        let now = stable()?;
        if now >= high {
            return Ok(());
        }
        if started.elapsed() > RESTORE_TIMEOUT {
            return Err(RestoreError::Timeout(vec![partition]));
        }
        warn!(
            topic,
            partition,
            stable = now,
            high,
            "waiting for an open transaction on the changelog to end"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
