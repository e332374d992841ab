//! The transactional producer and the open batch: outputs and input offsets commit together, and
//! errors are handled as librdkafka's exactly-once rules say: retry what is retriable, abort what
//! requires it, stop on what is fatal (such as being fenced by a newer instance).
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kafka_stats::ProducerStats;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tracing::{info, warn};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: usize = 5;
/// How long an abort is retried while librdkafka is still recovering the producer (a coordinator
/// that moved, an epoch being bumped after timed-out messages) before the producer is given up.
const ABORT_PATIENCE: Duration = Duration::from_secs(120);
/// librdkafka's answer to an abort when no transaction is left to abort (it already ended it).
const NOTHING_TO_ABORT: &str = "in state Ready";

#[derive(Debug, Error)]
pub enum TxnError {
    /// The transaction was aborted; its outputs are discarded and its inputs must be read again.
    #[error("transaction aborted: {0}")]
    Aborted(KafkaError),
    /// The producer cannot go on (a fatal error other than being fenced).
    #[error("transactional producer failed fatally: {0}")]
    Fatal(KafkaError),
    /// Fenced by a newer instance with the same transactional id, as the broker says it: that
    /// instance has taken over, and this one stops.
    #[error("fenced: another instance with transactional id {transactional_id} has started; this one stops")]
    Fenced {
        transactional_id: String,
        source: KafkaError,
    },
    /// Fenced, but the open transaction had outlived `transaction.timeout.ms`: the broker aborted it
    /// and bumped the producer's epoch (a broker failover that outlasted the timeout), which looks
    /// the same to librdkafka as a newer instance. A restart re-initialises the producer.
    #[error(
        "the broker aborted this instance's transaction after {0:?} (transaction.timeout.ms) and \
         fenced its producer epoch; a restart recovers: {1}"
    )]
    TimedOutOnBroker(Duration, KafkaError),
}

impl TxnError {
    /// Fenced by a newer instance (not an epoch the broker no longer knows after a failover,
    /// which a restart recovers from).
    pub fn is_fenced(&self) -> bool {
        matches!(self, TxnError::Fenced { .. })
    }
}

fn is_fenced_code(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
    )
}

enum Class {
    Retry,
    Abort,
    Fatal,
}

fn classify(error: &KafkaError) -> Class {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => Class::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => Class::Abort,
        KafkaError::Transaction(e) if e.is_retriable() => Class::Retry,
        _ => Class::Abort,
    }
}

/// The input offsets of the open transaction.
#[derive(Default)]
struct Open {
    began: Option<Instant>,
    records: usize,
    /// Next offset to consume, per input (its index in the producer's input topics) and partition.
    next_offsets: BTreeMap<(usize, i32), i64>,
}

/// The input topic of the processing loop a consumed record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    Activity,
    Repartition,
}

/// An input's index among the loop's input topics (`InputTopics::names`).
impl From<Input> for usize {
    fn from(input: Input) -> usize {
        match input {
            Input::Activity => 0,
            Input::Repartition => 1,
        }
    }
}

/// The names of the loop's input topics, whose offsets its transactions commit.
#[derive(Debug, Clone)]
pub struct InputTopics {
    pub activity: String,
    pub repartition: String,
}

impl InputTopics {
    pub fn of(topics: &super::config::Topics) -> Self {
        InputTopics {
            activity: topics.activity.clone(),
            repartition: topics.repartition.clone(),
        }
    }

    pub fn name(&self, input: Input) -> &str {
        match input {
            Input::Activity => &self.activity,
            Input::Repartition => &self.repartition,
        }
    }

    /// The input topics in the order of their indexes, for `TransactionalProducer::init`.
    pub fn names(&self) -> Vec<String> {
        vec![self.activity.clone(), self.repartition.clone()]
    }

    /// Which input `topic` is, if it is one.
    pub fn input(&self, topic: &str) -> Option<Input> {
        [Input::Activity, Input::Repartition]
            .into_iter()
            .find(|input| self.name(*input) == topic)
    }
}

pub struct TransactionalProducer {
    producer: ThreadedProducer<ProducerStats>,
    /// The producer's `transactional.id`, named when a newer instance fences this one.
    transactional_id: String,
    /// The topics whose offsets it commits; an input is named by its index here.
    inputs: Vec<String>,
    /// The producer's `transaction.timeout.ms`.
    timeout: Duration,
    open: Mutex<Open>,
}

impl TransactionalProducer {
    /// Creates the producer and fences any earlier producer with the same transactional id (its open
    /// transaction is aborted).
    pub fn init(
        producer: ThreadedProducer<ProducerStats>,
        transactional_id: String,
        inputs: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, TxnError> {
        let transactions = TransactionalProducer {
            producer,
            transactional_id,
            inputs,
            timeout,
            open: Mutex::new(Open::default()),
        };
        retry(|| transactions.producer.init_transactions(TXN_TIMEOUT)).map_err(
            |e| match classify(&e) {
                Class::Fatal => transactions.fatal(None, e),
                _ => TxnError::Aborted(e),
            },
        )?;
        Ok(transactions)
    }

    /// A fatal error of the transaction that began at `began`: fenced after outliving its timeout
    /// is the broker's abort, not a newer instance.
    fn fatal(&self, began: Option<Instant>, error: KafkaError) -> TxnError {
        if !is_fenced_code(&error) {
            return TxnError::Fatal(error);
        }
        match began.map(|b| b.elapsed()) {
            Some(age) if age >= self.timeout => TxnError::TimedOutOnBroker(self.timeout, error),
            _ => TxnError::Fenced {
                transactional_id: self.transactional_id.clone(),
                source: error,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Begins a transaction unless one is open.
    pub fn ensure_begun(&self) -> Result<(), TxnError> {
        let mut open = self.lock();
        if open.began.is_none() {
            self.producer
                .begin_transaction()
                .map_err(|e| match classify(&e) {
                    Class::Fatal => self.fatal(None, e),
                    _ => TxnError::Aborted(e),
                })?;
            open.began = Some(Instant::now());
        }
        Ok(())
    }

    /// Sends an output record in the open transaction, waiting while the local queue is full.
    pub fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), TxnError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    let began = self.lock().began;
                    // A send may be the first call to see that the producer is fenced.
                    if let Some((code, _)) = self.producer.client().fatal_error() {
                        return Err(self.fatal(began, KafkaError::MessageProduction(code)));
                    }
                    return Err(match classify(&e) {
                        Class::Fatal => self.fatal(began, e),
                        _ => TxnError::Aborted(e),
                    });
                }
            }
        }
    }

    /// Marks an input record as processed in the open transaction.
    pub fn consumed(&self, input: impl Into<usize>, partition: i32, offset: i64) {
        let mut open = self.lock();
        open.records += 1;
        open.next_offsets
            .insert((input.into(), partition), offset + 1);
    }

    /// Marks a burst of `records` input records as processed in the open transaction, the next
    /// offset of each input partition they came from being as given.
    pub fn consumed_up_to(
        &self,
        records: usize,
        next_offsets: impl IntoIterator<Item = (usize, i32, i64)>,
    ) {
        let mut open = self.lock();
        open.records += records;
        for (input, partition, next) in next_offsets {
            open.next_offsets.insert((input, partition), next);
        }
    }

    /// Commits an input's position, unchanged, with the open transaction, unless a record of it was
    /// processed in it: outputs that no input record caused (claims decided again) then still go
    /// through the group's generation check, so a member that lost the partition cannot commit them.
    pub fn hold_position(&self, input: impl Into<usize>, partition: i32, next_offset: i64) {
        self.lock()
            .next_offsets
            .entry((input.into(), partition))
            .or_insert(next_offset);
    }

    /// Whether the open batch has reached its size or time bound.
    pub fn batch_full(&self, max_records: usize, max_time: Duration) -> bool {
        let open = self.lock();
        open.records >= max_records || open.began.is_some_and(|b| b.elapsed() >= max_time)
    }

    /// Whether the open transaction has been open at least this long.
    pub fn open_for(&self, at_least: Duration) -> bool {
        self.lock().began.is_some_and(|b| b.elapsed() >= at_least)
    }

    /// Input records in the open transaction.
    pub fn records(&self) -> usize {
        self.lock().records
    }

    pub fn is_open(&self) -> bool {
        self.lock().began.is_some()
    }

    /// Commits the open transaction with its input offsets. On `Aborted`, the transaction has been
    /// aborted: the caller rewinds the inputs to the committed offsets and rebuilds the state.
    pub fn commit(&self, group: &ConsumerGroupMetadata) -> Result<CommitStats, TxnError> {
        let mut open = self.lock();
        let Some(began) = open.began else {
            return Ok(CommitStats::default());
        };
        let result = self.commit_open(&open, group);
        let committed = std::mem::take(&mut *open);
        match result {
            Ok(()) => Ok(CommitStats {
                records: committed.records,
                duration: began.elapsed(),
                next_offsets: committed.next_offsets,
            }),
            Err(e) => match classify(&e) {
                Class::Fatal => Err(self.fatal(Some(began), e)),
                _ => {
                    warn!(error = %e, records = committed.records, "aborting transaction");
                    self.abort_patiently(Some(began))
                        .map(|()| Err(TxnError::Aborted(e)))?
                }
            },
        }
    }

    fn commit_open(&self, open: &Open, group: &ConsumerGroupMetadata) -> Result<(), KafkaError> {
        if !open.next_offsets.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for ((input, partition), next) in &open.next_offsets {
                offsets.add_partition_offset(
                    &self.inputs[*input],
                    *partition,
                    Offset::Offset(*next),
                )?;
            }
            let started = Instant::now();
            retry(|| {
                self.producer
                    .send_offsets_to_transaction(&offsets, group, TXN_TIMEOUT)
            })?;
            tracing::debug!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "offsets sent to transaction"
            );
        }
        let started = Instant::now();
        self.drain_outputs();
        let result = retry(|| self.producer.commit_transaction(TXN_TIMEOUT));
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            records = open.records,
            "transaction committed"
        );
        result
    }

    /// Aborts the open transaction, if any (shutdown with nothing to keep, or after a fatal error of
    /// the batch).
    pub fn abort(&self) -> Result<(), TxnError> {
        let mut open = self.lock();
        if open.began.is_none() {
            return Ok(());
        }
        let began = open.began;
        *open = Open::default();
        info!("aborting open transaction");
        self.abort_patiently(began)
    }

    /// Aborts, retrying whatever is not fatal until ABORT_PATIENCE: while its transaction
    /// coordinator moves to another broker, or it bumps its epoch after messages timed out,
    /// librdkafka answers an abort with retriable or "wrong state" errors that resolve by
    /// themselves. Nothing left to abort counts as aborted.
    fn abort_patiently(&self, began: Option<Instant>) -> Result<(), TxnError> {
        let deadline = Instant::now() + ABORT_PATIENCE;
        loop {
            let error = match self.producer.abort_transaction(TXN_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e) if e.to_string().contains(NOTHING_TO_ABORT) => return Ok(()),
                Err(e) => e,
            };
            let fatal = matches!(classify(&error), Class::Fatal)
                || self.producer.client().fatal_error().is_some();
            if fatal || Instant::now() >= deadline {
                return Err(self.fatal(began, error));
            }
            warn!(error = %error, "abort not done yet; retrying");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl TransactionalProducer {
    /// Waits until every output of the batch is acknowledged (the producer's own thread serves the
    /// delivery reports). rdkafka's flush, which commit calls first, waits in steps of up to
    /// 100 ms, which would add that much to every commit; after this it finds nothing to wait for.
    fn drain_outputs(&self) {
        let deadline = Instant::now() + TXN_TIMEOUT;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// What a commit carried.
#[derive(Debug, Default, Clone)]
pub struct CommitStats {
    pub records: usize,
    pub duration: Duration,
    /// The committed next offset per input (its index) and partition.
    pub next_offsets: BTreeMap<(usize, i32), i64>,
}

fn retry(mut op: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e) if matches!(classify(&e), Class::Retry) && attempt < RETRIES => {
                attempt += 1;
                warn!(error = %e, attempt, "retrying transactional operation");
                std::thread::sleep(Duration::from_millis(100 * attempt as u64));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_s_index_names_its_topic() {
        let inputs = InputTopics {
            activity: "act".into(),
            repartition: "rep".into(),
        };
        for input in [Input::Activity, Input::Repartition] {
            assert_eq!(inputs.names()[usize::from(input)], inputs.name(input));
        }
    }
}
