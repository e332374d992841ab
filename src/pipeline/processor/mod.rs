//! The processing loop of `autoclaim run`, on a thread of its own so that librdkafka's blocking calls
//! never hold up the async runtime: consume activity in a group, decide with the shared engine, and
//! publish outputs and input offsets in one transaction per batch.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{gauge, histogram};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use thiserror::Error;
use tracing::{error, info, warn};

use super::clients;
use super::config::RunConfig;
use super::feed::TableFeed;
use super::kafka_stats::{self, ProducerStats};
use super::metrics::BatchMetrics;
use super::partitioner::{placement, Placement};
use super::positions::{start_at_committed_offsets, PositionsError};
use super::records::{self, RawRecord};
use super::restore::{restore_partitions, RestoreError};
use super::stall::{self, Change as StallChange, Stall, StallWatch};
use super::topics::{self, TopicError};
use super::transaction::{Input, InputTopics, TransactionalProducer, TxnError};
use crate::domain::activity::Activity;
use crate::domain::decision::Decision;
use crate::domain::time::Timestamp;
use crate::state::{self, PartitionState, Tables};
use crate::telemetry;
use crate::wire::{codec, output, Format, WireError};

/// How often the table feed is polled while activity flows.
const FEED_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Records taken from the consumer between checks of the batch bounds.
const MAX_BURST: usize = 256;
/// One decision in this many is timed for the decision-duration histogram.
const DECISION_SAMPLE: u64 = 16;
/// How often state gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// How long start-up waits for the global tables before it gives up.
const TABLE_LOAD_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("Kafka client error: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Transaction(#[from] TxnError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(
        "the global tables ({0}) could not be read to their end within {TABLE_LOAD_TIMEOUT:?}"
    )]
    TablesNotLoaded(String),
    #[error(transparent)]
    Positions(#[from] PositionsError),
    #[error(
        "the group {group} has members that rebalance eagerly (an autoclaim before incremental \
         rebalancing, or another client): stop them all, then start this version ({source})"
    )]
    EagerMembers { group: String, source: KafkaError },
    #[error("the directory copy stopped: {0}")]
    DirectoryCopy(Box<PipelineError>),
    #[error(
        "partition {} of {topic} has not moved from offset {} for {}s while committed records \
         wait after it (the consumer errors logged before say why); stopping rather than leave it \
         unread",
        stall.partition,
        stall.offset,
        stall.stalled_for.as_secs()
    )]
    Stalled { topic: String, stall: Stall },
}

impl PipelineError {
    /// Fenced by a newer instance with the same transactional id: it has taken over the work.
    pub fn is_fenced(&self) -> bool {
        self.fenced_id().is_some()
    }

    /// The transactional id a newer instance fenced, if that is what this error is.
    pub fn fenced_id(&self) -> Option<&str> {
        match self {
            PipelineError::Transaction(TxnError::Fenced {
                transactional_id, ..
            }) => Some(transactional_id),
            PipelineError::DirectoryCopy(e) => e.fenced_id(),
            _ => None,
        }
    }
}

pub use super::health::Health;
use copy_thread::CopyThread;
use headers::{content_type, with_producer_headers};
pub use headers::{is_service_header, ROUTE_OFFSET_HEADER, ROUTE_PARTITION_HEADER};
pub(crate) use rebalance::partition_numbers;
use rebalance::{PartitionEvent, RebalanceContext};

mod claims;
mod copy_thread;
mod headers;
mod rebalance;
mod restoring;

/// Counters the loop keeps (exported as metrics by the service).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopCounts {
    pub consumed: u64,
    /// Activity records sent on to the partition that owns their tenant.
    pub routed: u64,
    pub assignments: u64,
    pub failures: u64,
    pub dead_letters: u64,
    /// Changes of pending claims, and notices, published.
    pub claim_changes: u64,
    pub notices: u64,
    pub commits: u64,
    pub aborts: u64,
}

pub struct Processor {
    consumer: BaseConsumer<RebalanceContext>,
    state: LoopState,
}

/// What the loop owns besides the consumer (tables, partition states, the transactional producer,
/// the table feed, counters), apart so that a consumed message, which borrows the consumer, can be
/// processed while this is changed.
struct LoopState {
    config: RunConfig,
    inputs: InputTopics,
    activity_partitions: i32,
    tables: Tables,
    states: HashMap<i32, PartitionState>,
    transactions: Arc<TransactionalProducer>,
    feed: TableFeed,
    health: Arc<Health>,
    counts: LoopCounts,
    batch: BatchMetrics,
    last_gauges: Instant,
    /// Looked up once: the `histogram!` macro resolves its key in the registry on every call.
    decision_seconds: metrics::Histogram,
    decisions_seen: u64,
    /// A table changed or partitions were restored: waiting claims may be due a re-decision.
    redecide_soon: bool,
    redecide_after: Option<Instant>,
    /// Newly assigned partitions being restored (paused until then).
    restoring: Option<restoring::BackgroundRestore>,
    /// The directory copy, which restores wait for.
    copy: CopyThread,
}

/// A transactional producer with the service's settings, which fences any earlier incarnation
/// with the same id (the loop's, with statistics for its metrics; the directory copy's, without).
pub(crate) fn init_transactions(
    config: &RunConfig,
    transactional_id: String,
    inputs: Vec<String>,
    statistics: bool,
) -> Result<TransactionalProducer, PipelineError> {
    let producer: ThreadedProducer<_> = clients::transactional_producer(
        &config.kafka,
        &transactional_id,
        clients::ProducerSettings {
            compression: config.output_compression,
            transaction_timeout: config.transaction_timeout,
            statistics,
        },
    )
    .create_with_context(ProducerStats)?;
    Ok(TransactionalProducer::init(
        producer,
        transactional_id,
        inputs,
        config.transaction_timeout,
    )?)
}

/// The global tables (policies, inventory) read to their end before anything is decided, and the
/// feed that keeps them current afterwards.
fn load_tables(
    config: &RunConfig,
    tables: &mut Tables,
    states: &mut HashMap<i32, PartitionState>,
    activity_partitions: i32,
) -> Result<TableFeed, PipelineError> {
    let mut feed = TableFeed::start(&config.kafka, &config.topics)?;
    if !feed.load_tables(tables, states, TABLE_LOAD_TIMEOUT)? {
        return Err(PipelineError::TablesNotLoaded(format!(
            "{}, {}",
            config.topics.policies, config.topics.inventory
        )));
    }
    info!(
        activity_partitions,
        transactional_id = config.transactional_id(),
        "global tables loaded"
    );
    Ok(feed)
}

impl Processor {
    /// Connects, checks the topics, fences earlier incarnations and loads the global tables.
    pub fn start(config: RunConfig, health: Arc<Health>) -> Result<Self, PipelineError> {
        let activity_partitions = topics::check_topics(&config.kafka, &config.topics)?;
        let inputs = InputTopics::of(&config.topics);
        let transactions = Arc::new(init_transactions(
            &config,
            config.transactional_id(),
            inputs.names(),
            true,
        )?);
        // Started first: it copies while the tables load, and restores wait for it.
        let copy = CopyThread::start(&config, activity_partitions)?;
        let mut tables =
            Tables::new(config.propagation_delay).with_claim_rules(config.claims.rules());
        let mut states = HashMap::new();
        let feed = load_tables(&config, &mut tables, &mut states, activity_partitions)?;
        let context = RebalanceContext::new(&config, &inputs, &transactions, &health);
        let consumer: BaseConsumer<RebalanceContext> =
            clients::activity_consumer(&config.kafka, &config.group_id)
                .create_with_context(context)?;
        // Only the activity topic: the repartition partitions follow it (see `rebalance`).
        consumer.subscribe(&[&inputs.activity])?;
        Ok(Processor {
            consumer,
            state: LoopState {
                config,
                inputs,
                activity_partitions,
                tables,
                states,
                transactions,
                feed,
                health,
                counts: LoopCounts::default(),
                batch: BatchMetrics::default(),
                last_gauges: Instant::now(),
                decision_seconds: histogram!(telemetry::DECISION_SECONDS),
                decisions_seen: 0,
                redecide_soon: true,
                redecide_after: None,
                restoring: None,
                copy,
            },
        })
    }

    /// Runs until `stop` is set, then commits what is open and leaves the group.
    pub fn run(mut self, stop: &AtomicBool) -> Result<LoopCounts, PipelineError> {
        let result = self.run_loop(stop);
        let copied = self.state.copy.stop();
        let result = result.and(copied);
        let state = &mut self.state;
        state.health.ready.store(false, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                state.commit(&self.consumer)?;
                info!(counts = ?state.counts, "stopping: transaction committed, leaving the group");
            }
            Err(e) => {
                error!(error = %e, "stopping on error");
                // Best effort: the open transaction would time out anyway; aborting frees its
                // partitions for the next owner now.
                if !e.is_fenced() {
                    let _ = state.transactions.abort();
                }
            }
        }
        self.consumer
            .context()
            .leaving
            .store(true, Ordering::Relaxed);
        self.consumer.unsubscribe();
        result.map(|()| self.state.counts)
    }

    fn run_loop(&mut self, stop: &AtomicBool) -> Result<(), PipelineError> {
        let mut last_feed_poll = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.state.health.beat();
            // The tables change rarely: looking every few milliseconds keeps them fresh without
            // three extra polls per event.
            if last_feed_poll.elapsed() >= FEED_POLL_INTERVAL {
                self.state.copy.check()?;
                self.state.poll_feed()?;
                last_feed_poll = Instant::now();
            }
            let drained = self.process_burst()?;
            self.state.take_partition_events(&self.consumer)?;
            self.state.finish_restore_if_done(&self.consumer)?;
            self.state.redecide_if_due(&self.consumer)?;
            self.state.report_gauges();
            self.state.commit_if_due(&self.consumer, drained)?;
        }
        Ok(())
    }

    /// Waits for a record, then takes what is already fetched without waiting, up to the batch's
    /// size bound, so that the batch bounds are checked once per burst. Returns whether the burst
    /// emptied what the consumer had fetched.
    fn process_burst(&mut self) -> Result<bool, PipelineError> {
        let consumer = &self.consumer;
        let state = &mut self.state;
        let mut message = consumer.poll(Duration::from_millis(20));
        let room = state
            .config
            .batch_max_records
            .saturating_sub(state.transactions.records())
            .clamp(1, MAX_BURST);
        for _ in 0..room {
            let Some(polled) = message.take() else {
                break;
            };
            state.handle_polled(consumer, polled)?;
            message = consumer.poll(Duration::ZERO);
        }
        let drained = message.is_none();
        if let Some(polled) = message {
            // One past the burst: process it rather than lose its place.
            state.handle_polled(consumer, polled)?;
        }
        Ok(drained)
    }
}

impl LoopState {
    /// One polled record or consumer error, after the rebalances that came before it.
    fn handle_polled(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
        polled: Result<BorrowedMessage<'_>, KafkaError>,
    ) -> Result<(), PipelineError> {
        self.take_partition_events(consumer)?;
        match polled {
            Ok(m) => self.process_or_recover(consumer, &m),
            Err(e) => {
                consumer_error(&e);
                Ok(())
            }
        }
    }

    /// Partitions assigned or revoked, and fatal errors, that the rebalance callback left for the
    /// loop (the callback only records them: it runs inside poll).
    fn take_partition_events(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
    ) -> Result<(), PipelineError> {
        if consumer.context().has_events() {
            self.check_fatal(consumer)?;
            self.handle_partition_events(consumer)?;
        }
        Ok(())
    }

    fn poll_feed(&mut self) -> Result<(), PipelineError> {
        let applied = self
            .feed
            .poll(&mut self.tables, &mut self.states, Duration::ZERO, 1000)?;
        // A table change may have freed seats: look at the waiting claims without waiting.
        self.redecide_soon |= applied > 0;
        Ok(())
    }

    /// Commits when the batch is full, or when nothing is waiting (`drained`) and the batch has
    /// been open for its minimum time: committing then costs no throughput and spares the batch's
    /// records the wait.
    fn commit_if_due(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
        drained: bool,
    ) -> Result<(), PipelineError> {
        if !self.transactions.is_open() {
            return Ok(());
        }
        let config = &self.config;
        let due = self
            .transactions
            .batch_full(config.batch_max_records, config.batch_max_time)
            || (drained && self.transactions.open_for(config.batch_min_time));
        if due {
            self.commit(consumer)?;
        }
        Ok(())
    }
}

impl LoopState {
    /// State gauges, refreshed every few seconds (cheap enough, and off the per-event path).
    fn report_gauges(&mut self) {
        if self.last_gauges.elapsed() < GAUGE_INTERVAL {
            return;
        }
        self.last_gauges = Instant::now();
        gauge!(telemetry::TABLES_AGE).set(self.feed.since_last_update().as_secs_f64());
        gauge!(telemetry::PARTITIONS_OWNED).set(self.states.len() as f64);
        let users: usize = self
            .states
            .values()
            .map(PartitionState::tracked_users)
            .sum();
        gauge!(telemetry::TRACKED_USERS).set(users as f64);
        let pending: usize = self
            .states
            .values()
            .map(PartitionState::pending_claims)
            .sum();
        gauge!(telemetry::PENDING_CLAIMS).set(pending as f64);
        let counts = self.tables.policy_status_counts(Timestamp::now());
        gauge!(telemetry::POLICIES, "status" => "active").set(counts.active as f64);
        gauge!(telemetry::POLICIES, "status" => "propagating").set(counts.propagating as f64);
        gauge!(telemetry::POLICIES, "status" => "off").set(counts.off as f64);
    }

    fn check_fatal(&self, consumer: &BaseConsumer<RebalanceContext>) -> Result<(), PipelineError> {
        let fatal = consumer
            .context()
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        fatal.map_or(Ok(()), Err)
    }

    fn handle_partition_events(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
    ) -> Result<(), PipelineError> {
        consumer.context().pending.store(false, Ordering::Release);
        let events: Vec<PartitionEvent> = std::mem::take(
            &mut *consumer
                .context()
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for event in events {
            match event {
                PartitionEvent::Revoked { partitions, lost } => {
                    // A restore still running may hold some of them: end it first.
                    self.finish_restore(consumer)?;
                    telemetry::partition_gauges().forget(&partitions);
                    for p in &partitions {
                        self.states.remove(p);
                    }
                    self.feed.unfollow_directory(&partitions)?;
                    let kept = self.owned_partitions();
                    info!(?partitions, lost, ?kept, "partitions revoked");
                    self.health.ready.store(false, Ordering::Relaxed);
                }
                PartitionEvent::BatchEnded { committed: true } => self.batch.committed(),
                PartitionEvent::BatchEnded { committed: false } => self.batch.aborted(),
                // An incremental rebalance that moved nothing here assigns nothing.
                PartitionEvent::Assigned(partitions) if partitions.is_empty() => {
                    let owned = self.owned_partitions();
                    info!(?partitions, ?owned, "partitions assigned and restored");
                    self.health.ready.store(true, Ordering::Relaxed);
                }
                PartitionEvent::Assigned(partitions) => {
                    self.start_restore(consumer, &partitions)?;
                }
            }
        }
        Ok(())
    }

    /// The partitions whose state is in place, in order (for the logs of ownership changes).
    fn owned_partitions(&self) -> Vec<i32> {
        let mut owned: Vec<i32> = self.states.keys().copied().collect();
        owned.sort_unstable();
        owned
    }

    fn restore(&mut self, partitions: &[i32]) -> Result<(), PipelineError> {
        // A restore has its own time bound; the watchdog leaves it alone.
        let health = Arc::clone(&self.health);
        let restored = health.excused(|| {
            restore_partitions(
                &self.config.kafka,
                &self.config.topics,
                partitions,
                &self.copy.source,
            )
        })?;
        self.install(partitions, restored)
    }

    /// Processes a record; if that aborts the transaction (a send failed), rewinds to the committed
    /// offsets and rebuilds the state, as a failed commit does, instead of stopping.
    fn process_or_recover(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        // Fetched before its partition was paused: its state must be in place first.
        if self
            .restoring
            .as_ref()
            .is_some_and(|r| r.includes(message.partition()))
        {
            self.finish_restore(consumer)?;
        }
        match self.process(message) {
            Err(PipelineError::Transaction(TxnError::Aborted(e))) => {
                warn!(error = %e, "sending an output failed; aborting and rewinding");
                self.transactions.abort()?;
                self.counts.aborts += 1;
                self.batch.aborted();
                self.rewind(consumer)
            }
            other => other,
        }
    }

    fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        let partition = message.partition();
        let offset = message.offset();
        // Only the two inputs are subscribed.
        let input = self
            .inputs
            .input(message.topic())
            .unwrap_or(Input::Activity);
        self.transactions.ensure_begun()?;
        self.counts.consumed += 1;
        let routed = match self.read_activity(message, input) {
            Err(e) => {
                self.dead_letter(message, &e)?;
                false
            }
            Ok(event) => self.decide_or_route(message, input, &event)?,
        };
        // A routed record's time to commit is counted where it is decided.
        if !routed {
            self.batch.record_time(message.timestamp().to_millis());
        }
        self.transactions.consumed(input, partition, offset);
        Ok(())
    }

    /// Reads an activity record. Its event time is bounded by its write time where the record first
    /// arrives, on the activity topic, so that one refused is dead-lettered there, once, and never
    /// routed. A routed record passed that check before it was routed (it keeps the original
    /// timestamp), so it is not checked again: an instance with another --max-event-time-skew (a
    /// rolling change) cannot dead-letter on the repartition topic a record already routed.
    fn read_activity(
        &self,
        message: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<Activity, WireError> {
        let raw = RawRecord::of(message);
        match input {
            Input::Activity => records::bounded_activity_record(
                &raw,
                records::written_at(message),
                self.config.event_time.max_skew,
            ),
            Input::Repartition => records::activity_record(&raw),
        }
    }

    /// Decides a readable event on its tenant's partition, or routes it there; true if routed.
    fn decide_or_route(
        &mut self,
        message: &BorrowedMessage<'_>,
        input: Input,
        event: &Activity,
    ) -> Result<bool, PipelineError> {
        let partition = message.partition();
        match placement(&event.tenant_id, partition, input, self.activity_partitions) {
            Placement::Owned => {
                self.decide(partition, event)?;
                Ok(false)
            }
            Placement::Route { owner } => {
                self.route(message, &event.tenant_id, owner)?;
                Ok(true)
            }
            Placement::Misrouted { owner } => {
                let e = WireError::field(
                    "tenantId",
                    format!("tenant {} belongs to partition {owner}, but was routed to partition {partition} (has the activity topic's partition count changed?)", event.tenant_id),
                );
                self.dead_letter(message, &e)?;
                Ok(false)
            }
        }
    }

    fn decide(&mut self, partition: i32, event: &Activity) -> Result<(), PipelineError> {
        if !self.states.contains_key(&partition) {
            // Assigned without an event seen yet: restore before deciding anything.
            self.restore(&[partition])?;
        }
        let state = self.states.get_mut(&partition).expect("restored above");
        // Two clock reads per event were 2-3% of the loop: time one decision in
        // DECISION_SAMPLE (quantiles stay true; the histogram's count is a sample).
        self.decisions_seen = self.decisions_seen.wrapping_add(1);
        let started = (self.decisions_seen % DECISION_SAMPLE == 0).then(Instant::now);
        let decision = state::decide_and_record(&self.tables, state, event);
        if let Some(started) = started {
            self.decision_seconds
                .record(started.elapsed().as_secs_f64());
        }
        if !decision.redecided.is_empty() {
            self.send_redecided(&decision.redecided, partition)?;
        }
        self.batch.decided(&decision.decision);
        if output::has_output(&decision.decision) {
            self.send_outputs(&decision.decision, partition, &event.tenant_id)?;
        }
        self.send_claims(&decision.claims, partition)?;
        self.send_notices(&decision.notices, partition)?;
        Ok(())
    }

    /// Sends an activity record that arrived on a partition that does not own its tenant to the
    /// repartition topic's partition that does, in the open transaction: it is decided there, once,
    /// by the tenant's one writer. The bytes, content type and timestamp are the producer's.
    fn route(
        &mut self,
        message: &BorrowedMessage<'_>,
        tenant_id: &str,
        owner: i32,
    ) -> Result<(), PipelineError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = with_producer_headers(
            &[
                (ROUTE_PARTITION_HEADER, &partition),
                (ROUTE_OFFSET_HEADER, &offset),
            ],
            message,
        );
        let mut record = BaseRecord::to(&self.config.topics.repartition)
            .partition(owner)
            .key(tenant_id.as_bytes())
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(millis) = message.timestamp().to_millis() {
            record = record.timestamp(millis);
        }
        self.transactions.send(record)?;
        self.counts.routed += 1;
        self.batch.routed();
        Ok(())
    }

    /// Publishes a decision's assignment or failure in the open transaction. Assignments go to the
    /// changelog partition of the activity partition (its state is restored from there).
    fn send_outputs(
        &mut self,
        decision: &Decision,
        partition: i32,
        tenant_id: &str,
    ) -> Result<(), PipelineError> {
        let decided_at = Timestamp::now();
        let format = self.config.output_format;
        if let Some(assignment) = output::assignment(decision, decided_at) {
            let bytes = codec::encode(&assignment, format);
            self.transactions.send(
                BaseRecord::to(&self.config.topics.assignments)
                    .partition(partition)
                    .key(tenant_id.as_bytes())
                    .payload(&bytes[..])
                    .headers(content_type(format)),
            )?;
            self.counts.assignments += 1;
        }
        if let Some(failure) = output::failure(decision, decided_at) {
            let bytes = codec::encode(&failure, format);
            self.transactions.send(
                BaseRecord::to(&self.config.topics.failures)
                    .key(tenant_id.as_bytes())
                    .payload(&bytes[..])
                    .headers(content_type(format)),
            )?;
            self.counts.failures += 1;
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        message: &BorrowedMessage<'_>,
        e: &WireError,
    ) -> Result<(), PipelineError> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let reason = e.to_string();
        let mut headers = with_producer_headers(
            &[
                ("autoclaim.error.code", e.code()),
                ("autoclaim.error.reason", &reason),
                ("autoclaim.source.topic", message.topic()),
                ("autoclaim.source.partition", &partition),
                ("autoclaim.source.offset", &offset),
            ],
            message,
        );
        // A record refused for its size is kept only up to the limit (with its size in a header), so
        // that its dead letter always fits within the broker's message size.
        let payload = message.payload().unwrap_or_default();
        let kept = &payload[..payload.len().min(codec::MAX_RECORD_BYTES)];
        if kept.len() < payload.len() {
            let size = payload.len().to_string();
            headers = headers.insert(Header {
                key: "autoclaim.error.original-size",
                value: Some(&size),
            });
        }
        let mut record = BaseRecord::to(&self.config.topics.dead_letters)
            .payload(kept)
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.transactions.send(record)?;
        self.counts.dead_letters += 1;
        self.batch.dead_lettered(e.code());
        warn!(partition = message.partition(), offset = message.offset(), code = e.code(), error = %e, "dead-lettered");
        Ok(())
    }

    /// Commits the open batch. After an abort, rewinds every owned partition to its committed offset
    /// and rebuilds its state, so the aborted batch is processed again from the same starting point.
    fn commit(&mut self, consumer: &BaseConsumer<RebalanceContext>) -> Result<(), PipelineError> {
        if !self.transactions.is_open() {
            return Ok(());
        }
        let group = consumer
            .group_metadata()
            .ok_or_else(|| KafkaError::Subscription("no consumer group metadata".into()))?;
        match self.transactions.commit(&group) {
            Ok(stats) => {
                self.health.committed(stats.records);
                self.counts.commits += 1;
                self.batch.committed();
                Ok(())
            }
            Err(TxnError::Aborted(e)) => {
                self.counts.aborts += 1;
                self.batch.aborted();
                warn!(error = %e, "transaction aborted; rewinding to committed offsets");
                self.rewind(consumer)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn rewind(&mut self, consumer: &BaseConsumer<RebalanceContext>) -> Result<(), PipelineError> {
        self.finish_restore(consumer)?;
        let mut assignment = consumer.assignment()?;
        let timeout = self.config.stable_offsets_timeout;
        self.health
            .excused(|| start_at_committed_offsets(consumer, &mut assignment, timeout))?;
        consumer.seek_partitions(assignment.clone(), Duration::from_secs(30))?;
        // Both inputs' partitions of a number share one state: rebuild each once.
        let partitions = partition_numbers(&assignment);
        for p in &partitions {
            self.states.remove(p);
        }
        self.restore(&partitions)
    }
}

/// A partition's fetch or decoding failed (librdkafka retries it). librdkafka's error callback has
/// already logged it at ERROR with its reason (which names the offset); here it is counted, and the
/// stall watch notices if it keeps the partition from moving.
fn consumer_error(e: &KafkaError) {
    let code = e
        .rdkafka_error_code()
        .map_or_else(|| "unknown".to_owned(), |c| format!("{c:?}"));
    tracing::debug!(error = %e, code, "consumer error reading activity");
    metrics::counter!(telemetry::CONSUMER_ERRORS, "error" => code).increment(1);
}
