//! The directory copy: reads the directory topic (the contract of directory sync, partitioned as
//! its producer likes) and writes each row, unchanged, to the directory-by-partition topic's
//! partition number that owns the row's tenant, exactly once: the copies and the directory offsets
//! they came from commit in one transaction. A restore of partition p then reads partition p of the
//! copy, its own share of the directory, instead of the whole directory.
//!
//! The copy runs on a thread of its own, in a consumer group of its own (`<group>.directory-copy`,
//! with the transactional id `<transactional id>.directory-copy`), so that a restore may wait for
//! it to catch up (see `copy_cut`) without ever waiting on the loop that waits for the restore.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{info, warn};

use super::clients;
use super::config::RunConfig;
use super::copy_cut::CopyProgress;
use super::partitioner::tenant_partition;
use super::positions::start_at_committed_offsets;
use super::processor::{init_transactions, partition_numbers, PipelineError};
use super::records::{self, RawRecord};
use super::transaction::{TransactionalProducer, TxnError};
use crate::telemetry;
use crate::wire::codec;

/// The copy's one input, the directory topic, among its transaction's inputs.
const DIRECTORY_INPUT: usize = 0;

/// A copy transaction commits after this many records, or this long, or when nothing waits.
const MAX_BATCH_RECORDS: usize = 20_000;
const MAX_BATCH_TIME: Duration = Duration::from_millis(200);

/// The consumer group of the directory copy of the processors in `group_id`.
pub fn copy_group(group_id: &str) -> String {
    format!("{group_id}.directory-copy")
}

fn copy_transactional_id(config: &RunConfig) -> String {
    format!("{}.directory-copy", config.transactional_id())
}

pub struct DirectoryCopy {
    consumer: BaseConsumer<CopyContext>,
    transactions: Arc<TransactionalProducer>,
    target: String,
    activity_partitions: i32,
    stable_offsets_timeout: Duration,
}

impl DirectoryCopy {
    /// Fences any earlier copy with the same transactional id and joins the copy's group; what it
    /// commits is recorded in `progress` too.
    pub fn start(
        config: &RunConfig,
        activity_partitions: i32,
        progress: CopyProgress,
    ) -> Result<Self, PipelineError> {
        let transactions = Arc::new(init_transactions(
            config,
            copy_transactional_id(config),
            vec![config.topics.directory.clone()],
            false,
        )?);
        let group = copy_group(&config.group_id);
        let context = CopyContext {
            transactions: Arc::clone(&transactions),
            stable_offsets_timeout: config.stable_offsets_timeout,
            fatal: Mutex::new(None),
            rewind_needed: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            progress,
        };
        let mut consumer_config = clients::activity_consumer(&config.kafka, &group);
        // The loop's consumer reads statistics for its lag and stall metrics; the copy has none.
        consumer_config.set("statistics.interval.ms", "0");
        let consumer: BaseConsumer<CopyContext> = consumer_config.create_with_context(context)?;
        consumer.subscribe(&[&config.topics.directory])?;
        Ok(DirectoryCopy {
            consumer,
            transactions,
            target: config.topics.directory_by_partition.clone(),
            activity_partitions,
            stable_offsets_timeout: config.stable_offsets_timeout,
        })
    }

    /// Copies until `stop` is set, then commits what is open and leaves the group.
    pub fn run(self, stop: &AtomicBool) -> Result<(), PipelineError> {
        let result = self.copy_until(stop);
        match &result {
            Ok(()) => {
                self.commit()?;
            }
            Err(e) if !e.is_fenced() => {
                let _ = self.transactions.abort();
            }
            Err(_) => {}
        }
        self.consumer
            .context()
            .leaving
            .store(true, Ordering::Relaxed);
        self.consumer.unsubscribe();
        result
    }

    fn copy_until(&self, stop: &AtomicBool) -> Result<(), PipelineError> {
        while !stop.load(Ordering::Relaxed) {
            self.consumer.context().check_fatal()?;
            let drained = match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    self.copy_or_rewind(&message)?;
                    false
                }
                Some(Err(e)) => {
                    warn!(error = %e, "directory copy consumer error");
                    false
                }
                None => true,
            };
            if self
                .consumer
                .context()
                .rewind_needed
                .swap(false, Ordering::Relaxed)
            {
                self.rewind()?;
            }
            if self.transactions.is_open()
                && (drained
                    || self
                        .transactions
                        .batch_full(MAX_BATCH_RECORDS, MAX_BATCH_TIME))
            {
                self.commit_or_rewind()?;
            }
        }
        Ok(())
    }

    fn copy_or_rewind(&self, message: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        match self.copy(message) {
            Err(TxnError::Aborted(e)) => {
                warn!(error = %e, "copying a directory row failed; aborting and rewinding");
                self.transactions.abort()?;
                self.rewind()
            }
            other => other.map_err(Into::into),
        }
    }

    /// Copies one directory record to the partition that owns its tenant, in the open transaction.
    /// A record that cannot be read is left out, logged and counted, as the table feed does with
    /// unreadable table records: it stays in the directory topic, which directory sync owns, for
    /// the sync to correct.
    fn copy(&self, message: &BorrowedMessage<'_>) -> Result<(), TxnError> {
        self.transactions.ensure_begun()?;
        let raw = RawRecord::of(message);
        match records::directory_record(&raw) {
            Ok(change) => {
                let owner = tenant_partition(change.tenant_id(), self.activity_partitions);
                let mut record = BaseRecord::to(&self.target)
                    .partition(owner)
                    .headers(content_type_of(&raw));
                if let Some(key) = raw.key {
                    record = record.key(key);
                }
                if let Some(value) = raw.value {
                    record = record.payload(value);
                }
                self.transactions.send(record)?;
                metrics::counter!(telemetry::TABLE_RECORDS, "table" => "directory", "result" => "copied")
                    .increment(1);
            }
            Err(e) => {
                metrics::counter!(telemetry::TABLE_RECORDS, "table" => "directory", "result" => "rejected")
                    .increment(1);
                warn!(partition = message.partition(), offset = message.offset(), error = %e, "skipping unreadable directory record");
            }
        }
        self.transactions
            .consumed(DIRECTORY_INPUT, message.partition(), message.offset());
        Ok(())
    }

    fn commit(&self) -> Result<(), TxnError> {
        self.consumer.context().commit(&self.consumer)
    }

    fn commit_or_rewind(&self) -> Result<(), PipelineError> {
        match self.commit() {
            Err(TxnError::Aborted(e)) => {
                warn!(error = %e, "directory copy transaction aborted; rewinding");
                self.rewind()
            }
            other => other.map_err(Into::into),
        }
    }

    /// After an abort, every assigned partition goes back to its committed offset: what was
    /// copied since is copied again.
    fn rewind(&self) -> Result<(), PipelineError> {
        let mut assignment = self.consumer.assignment()?;
        start_at_committed_offsets(&self.consumer, &mut assignment, self.stable_offsets_timeout)?;
        self.consumer
            .seek_partitions(assignment, Duration::from_secs(30))?;
        Ok(())
    }
}

/// The copy keeps the record's content type (its only header that matters to a reader).
fn content_type_of(raw: &RawRecord<'_>) -> OwnedHeaders {
    let headers = OwnedHeaders::new();
    match raw.content_type {
        Some(value) => headers.insert(Header {
            key: codec::CONTENT_TYPE_HEADER,
            value: Some(value),
        }),
        None => headers,
    }
}

/// The copy consumer's callbacks: an assignment starts at the committed offsets; a revocation
/// commits what is open first, so that the next owner starts where this one stopped.
struct CopyContext {
    transactions: Arc<TransactionalProducer>,
    stable_offsets_timeout: Duration,
    fatal: Mutex<Option<PipelineError>>,
    /// A commit at revocation was aborted: the kept partitions must go back to their committed
    /// offsets (the loop does it after `poll`).
    rewind_needed: AtomicBool,
    /// Leaving the group: an assignment that comes meanwhile is not taken (see the processor's).
    leaving: AtomicBool,
    progress: CopyProgress,
}

impl CopyContext {
    fn set_fatal(&self, error: PipelineError) {
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
    }

    /// Commits the open transaction; once it is committed, what it copied is progress.
    fn commit(&self, consumer: &BaseConsumer<Self>) -> Result<(), TxnError> {
        let group = consumer.group_metadata().ok_or_else(|| {
            TxnError::Aborted(KafkaError::Subscription("no group metadata".into()))
        })?;
        let committed = self.transactions.commit(&group)?;
        let copied: HashMap<i32, i64> = committed
            .next_offsets
            .into_iter()
            .map(|((_, partition), next)| (partition, next))
            .collect();
        self.progress.record(&copied);
        Ok(())
    }

    fn check_fatal(&self) -> Result<(), PipelineError> {
        let fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
        fatal.map_or(Ok(()), Err)
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &TopicPartitionList,
    ) -> Result<(), PipelineError> {
        let mut positioned = partitions.clone();
        start_at_committed_offsets(consumer, &mut positioned, self.stable_offsets_timeout)?;
        consumer.incremental_assign(&positioned)?;
        info!(
            partitions = ?partition_numbers(partitions),
            "directory copy took partitions"
        );
        Ok(())
    }

    fn revoke(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &TopicPartitionList,
    ) -> Result<(), PipelineError> {
        if self.transactions.is_open() {
            match self.commit(consumer) {
                Ok(()) => {}
                Err(TxnError::Aborted(e)) => {
                    warn!(error = %e, "directory copy transaction aborted at revocation");
                    self.rewind_needed.store(true, Ordering::Relaxed);
                }
                Err(fatal) => return Err(fatal.into()),
            }
        }
        consumer.incremental_unassign(partitions)?;
        info!(
            partitions = ?partition_numbers(partitions),
            "directory copy gave partitions up"
        );
        Ok(())
    }
}

impl ClientContext for CopyContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            self.set_fatal(PipelineError::Kafka(error.clone()));
        }
        clients::log_client_error(error, reason);
    }

    fn stats(&self, _: rdkafka::Statistics) {}
}

impl ConsumerContext for CopyContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if self.leaving.load(Ordering::Relaxed) =>
            {
                Ok(())
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, partitions)
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                warn!(error = %code, "directory copy rebalance error");
                consumer
                    .assignment()
                    .and_then(|all| consumer.incremental_unassign(&all))
                    .map_err(Into::into)
            }
        };
        if let Err(e) = result {
            self.set_fatal(e);
        }
    }
}
