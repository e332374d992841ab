//! The processing loop of `autoclaim run`, on a thread of its own so that librdkafka's blocking calls
//! never hold up the async runtime: consume activity in a group, decide with the shared engine, and
//! publish outputs and input offsets in one transaction per batch.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{gauge, histogram};

use rayon::ThreadPool;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::ThreadedProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use thiserror::Error;
use tracing::{error, info, warn};

use super::clients;
use super::config::RunConfig;
use super::feed::TableFeed;
use super::kafka_stats::{self, ProducerStats};
use super::metrics::BatchMetrics;
use super::positions::{start_at_committed_offsets, PositionsError};
use super::restore::{restore_partitions, RestoreError};
use super::stall::{self, Change as StallChange, Stall, StallWatch};
use super::topics::{self, TopicError};
use super::transaction::{Input, InputTopics, TransactionalProducer, TxnError};
use crate::domain::time::Timestamp;
use crate::state::{PartitionState, Tables};
use crate::telemetry;
use crate::wire::{codec, Format};

/// How often the table feed is polled while activity flows.
const FEED_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Records taken from the consumer between checks of the batch bounds.
const MAX_BURST: usize = 256;
/// Records each lane takes in a burst when there is more than one: waking the other lanes costs
/// tens of microseconds, and a burst waits for the slowest, so each needs a share worth that.
const LANE_BURST: usize = 1024;
/// How long the loop waits for input when it has none (a record arriving ends the wait).
const INPUT_WAIT: Duration = Duration::from_millis(20);
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
    #[error("the processing threads could not be started: {0}")]
    Lanes(#[from] rayon::ThreadPoolBuildError),
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
pub use headers::{is_service_header, ROUTE_OFFSET_HEADER, ROUTE_PARTITION_HEADER};
use lanes::{Burst, Shared, Tally};
use own_queues::{OwnQueue, Wake};
pub(crate) use rebalance::partition_numbers;
use rebalance::{PartitionEvent, RebalanceContext};

mod claims;
mod copy_thread;
mod headers;
mod lanes;
mod own_queues;
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

impl LoopCounts {
    fn add(&mut self, other: &LoopCounts) {
        self.consumed += other.consumed;
        self.routed += other.routed;
        self.assignments += other.assignments;
        self.failures += other.failures;
        self.dead_letters += other.dead_letters;
        self.claim_changes += other.claim_changes;
        self.notices += other.notices;
        self.commits += other.commits;
        self.aborts += other.aborts;
    }
}

/// The activity consumer, shared with the partitions' own queues split from it.
type LoopConsumer = Arc<BaseConsumer<RebalanceContext>>;

pub struct Processor {
    consumer: LoopConsumer,
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
    /// The threads of lanes 1.. (lane 0 is the loop's own); none with one lane.
    lanes: Option<ThreadPool>,
    /// One per lane.
    tallies: Vec<Tally>,
    /// With more than one lane (`split_queues`), each assigned input partition's queue of its own,
    /// and what wakes the loop when they get records.
    queues: Vec<OwnQueue>,
    wake: Arc<Wake>,
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

/// The threads of the lanes after the first, which runs on the loop's thread.
fn lane_pool(threads: usize) -> Result<Option<ThreadPool>, PipelineError> {
    if threads <= 1 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads - 1)
        .thread_name(|i| format!("autoclaim-lane-{}", i + 1))
        .build()?;
    Ok(Some(pool))
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
        processing_threads = config.processing_threads,
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
        let lanes = lane_pool(config.processing_threads)?;
        // With one lane the consumer's own queue serves: there is nothing to share out.
        let consumer_config = if lanes.is_some() {
            clients::split_queue_consumer(&config.kafka, &config.group_id, activity_partitions)
        } else {
            clients::activity_consumer(&config.kafka, &config.group_id)
        };
        let consumer: LoopConsumer = Arc::new(consumer_config.create_with_context(context)?);
        // Only the activity topic: the repartition partitions follow it (see `rebalance`).
        consumer.subscribe(&[&inputs.activity])?;
        let tallies = (0..config.processing_threads.max(1))
            .map(|_| Tally::default())
            .collect();
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
                lanes,
                tallies,
                queues: Vec::new(),
                wake: Arc::new(Wake::default()),
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
            if drained && self.state.split_queues() {
                self.state.wake.wait(INPUT_WAIT);
            }
        }
        Ok(())
    }

    /// Takes what is fetched, without waiting, up to the batch's size bound, and processes it as
    /// one burst, so that the batch bounds are checked once per burst. Returns whether the burst
    /// emptied what the consumer had fetched.
    fn process_burst(&mut self) -> Result<bool, PipelineError> {
        let consumer = &self.consumer;
        let state = &mut self.state;
        let room = state
            .config
            .batch_max_records
            .saturating_sub(state.transactions.records())
            .clamp(1, state.burst_bound());
        let wait = if state.split_queues() {
            Duration::ZERO
        } else {
            INPUT_WAIT
        };
        let (mut polled, polled_all) = take_burst(consumer, room, wait);
        // A rebalance during the burst: what it revoked was committed without the records taken
        // since, which are its next owner's now, and a rewind makes all of them stale.
        let rebalanced = consumer.context().has_events();
        if state.take_partition_events(consumer)? {
            polled.clear();
        } else if rebalanced {
            keep_assigned(consumer, &mut polled)?;
        }
        let emptied = state.process_records(consumer, &polled, polled_all, room)?;
        Ok(polled_all && emptied)
    }
}

/// Up to `room` records (and one past them) of the consumer's own queue, which also serves its
/// callbacks, waiting up to `wait` for the first, stopping early at a rebalance; and whether that
/// queue had no more.
fn take_burst(
    consumer: &LoopConsumer,
    room: usize,
    wait: Duration,
) -> (Vec<BorrowedMessage<'_>>, bool) {
    let mut burst = Vec::new();
    let mut polled = consumer.poll(wait);
    loop {
        match polled {
            None => return (burst, true),
            Some(Ok(message)) => burst.push(message),
            Some(Err(e)) => consumer_error(&e),
        }
        if burst.len() > room || consumer.context().has_events() {
            return (burst, false);
        }
        polled = consumer.poll(Duration::ZERO);
    }
}

/// `LoopState` split for a burst (`LoopState::lane_parts`).
struct LaneParts<'a> {
    shared: Shared<'a>,
    pool: Option<&'a ThreadPool>,
    queues: &'a [OwnQueue],
    restoring: Option<&'a restoring::BackgroundRestore>,
    states: &'a mut HashMap<i32, PartitionState>,
    tallies: &'a mut [Tally],
}

/// The queues of partitions whose state is in place (a restoring partition's records wait).
fn ready_queues<'q>(
    queues: &'q [OwnQueue],
    states: &HashMap<i32, PartitionState>,
    restoring: Option<&restoring::BackgroundRestore>,
) -> Vec<&'q OwnQueue> {
    queues
        .iter()
        .filter(|q| states.contains_key(&q.partition))
        .filter(|q| !restoring.is_some_and(|r| r.includes(q.partition)))
        .collect()
}

/// Drops the records of partitions this member no longer has.
fn keep_assigned(
    consumer: &LoopConsumer,
    burst: &mut Vec<BorrowedMessage<'_>>,
) -> Result<(), PipelineError> {
    let assignment = consumer.assignment()?;
    burst.retain(|m| {
        assignment
            .find_partition(m.topic(), m.partition())
            .is_some()
    });
    Ok(())
}

impl LoopState {
    /// Partitions assigned or revoked, and fatal errors, that the rebalance callback left for the
    /// loop (the callback only records them: it runs inside poll). True if the loop rewound.
    fn take_partition_events(&mut self, consumer: &LoopConsumer) -> Result<bool, PipelineError> {
        if !consumer.context().has_events() {
            return Ok(false);
        }
        self.check_fatal(consumer)?;
        self.handle_partition_events(consumer)
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
        consumer: &LoopConsumer,
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
    /// Whether each input partition is read from a queue of its own: only with more than one
    /// lane, since with one the consumer's queue has nothing to share out.
    fn split_queues(&self) -> bool {
        self.lanes.is_some()
    }

    fn burst_bound(&self) -> usize {
        if self.split_queues() {
            LANE_BURST * self.tallies.len()
        } else {
            MAX_BURST
        }
    }

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

    fn check_fatal(&self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
        let fatal = consumer
            .context()
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        fatal.map_or(Ok(()), Err)
    }

    fn handle_partition_events(&mut self, consumer: &LoopConsumer) -> Result<bool, PipelineError> {
        consumer.context().pending.store(false, Ordering::Release);
        let events: Vec<PartitionEvent> = std::mem::take(
            &mut *consumer
                .context()
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut aborted = false;
        for event in events {
            match event {
                PartitionEvent::Revoked { partitions, lost } => {
                    // A restore still running may hold some of them: end it first.
                    self.finish_restore(consumer)?;
                    telemetry::partition_gauges().forget(&partitions);
                    for p in &partitions {
                        self.states.remove(p);
                    }
                    // Records left in their queues are the next owner's.
                    self.queues.retain(|q| !partitions.contains(&q.partition));
                    self.feed.unfollow_directory(&partitions)?;
                    let kept = self.owned_partitions();
                    info!(?partitions, lost, ?kept, "partitions revoked");
                    self.health.ready.store(false, Ordering::Relaxed);
                }
                PartitionEvent::BatchEnded { committed: true } => self.batch.committed(),
                PartitionEvent::BatchEnded { committed: false } => {
                    self.batch.aborted();
                    self.counts.aborts += 1;
                    aborted = true;
                }
                // An incremental rebalance that moved nothing here assigns nothing.
                PartitionEvent::Assigned(partitions) if partitions.is_empty() => {
                    let owned = self.owned_partitions();
                    info!(?partitions, ?owned, "partitions assigned and restored");
                    self.health.ready.store(true, Ordering::Relaxed);
                }
                PartitionEvent::Assigned(partitions) => {
                    if self.split_queues() {
                        let split =
                            own_queues::split(consumer, &self.inputs, &partitions, &self.wake);
                        self.queues.extend(split);
                    }
                    self.start_restore(consumer, &partitions)?;
                }
            }
        }
        if aborted {
            // The partitions kept were read on in the aborted transaction: read them again.
            warn!("the transaction aborted at revocation; rewinding the partitions kept");
            self.rewind(consumer)?;
        }
        Ok(aborted)
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

    /// Processes a burst of records on the lanes; if a send aborts the transaction, rewinds to the
    /// committed offsets and rebuilds the state, as a failed commit does, instead of stopping.
    ///
    /// The partitions' own queues are read only once the consumer's queue is empty (`polled_all`):
    /// it may still hold records of a partition fetched before the partition was split, which are
    /// older than any in its own queue.
    fn process_records(
        &mut self,
        consumer: &LoopConsumer,
        polled: &[BorrowedMessage<'_>],
        polled_all: bool,
        room: usize,
    ) -> Result<bool, PipelineError> {
        if polled.is_empty() && self.queues.is_empty() {
            return Ok(true);
        }
        self.states_in_place(consumer, polled)?;
        self.transactions.ensure_begun()?;
        let parts = self.lane_parts();
        let queues = if polled_all {
            ready_queues(parts.queues, parts.states, parts.restoring)
        } else {
            Vec::new()
        };
        let burst = Burst {
            polled,
            queues,
            quota: room.div_ceil(parts.tallies.len()),
        };
        let result = lanes::run_burst(
            parts.pool,
            &parts.shared,
            parts.states,
            parts.tallies,
            &burst,
        );
        // The burst holds the queues, borrowed from the state the tallies go back to.
        drop(burst);
        self.take_tallies();
        match result {
            Err(e) if lanes::is_abort(&e) => {
                warn!(error = %e, "sending an output failed; aborting and rewinding");
                self.abort_and_rewind(consumer)?;
                Ok(false)
            }
            other => other,
        }
    }

    /// The loop state as a burst sees it: what the lanes read, and the partition states and
    /// tallies they change.
    fn lane_parts(&mut self) -> LaneParts<'_> {
        LaneParts {
            shared: Shared {
                config: &self.config,
                inputs: &self.inputs,
                activity_partitions: self.activity_partitions,
                tables: &self.tables,
                transactions: &self.transactions,
                decision_seconds: &self.decision_seconds,
            },
            pool: self.lanes.as_ref(),
            queues: &self.queues,
            restoring: self.restoring.as_ref(),
            states: &mut self.states,
            tallies: &mut self.tallies,
        }
    }

    /// Every partition of the burst has its state before any lane runs: one fetched before its
    /// partition was paused waits for its restore; one assigned without a restore is restored.
    fn states_in_place(
        &mut self,
        consumer: &LoopConsumer,
        burst: &[BorrowedMessage<'_>],
    ) -> Result<(), PipelineError> {
        let restoring = |p: i32| self.restoring.as_ref().is_some_and(|r| r.includes(p));
        if burst.iter().any(|m| restoring(m.partition())) {
            self.finish_restore(consumer)?;
        }
        let mut missing: Vec<i32> = burst
            .iter()
            .map(|m| m.partition())
            .filter(|p| !self.states.contains_key(p))
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            self.restore(&missing)?;
        }
        Ok(())
    }

    /// The lanes' records and offsets into the open transaction, their counts into the loop's.
    fn take_tallies(&mut self) {
        for tally in &mut self.tallies {
            tally.drain_into(&self.transactions, &mut self.counts, &mut self.batch);
        }
    }

    fn abort_and_rewind(&mut self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
        self.transactions.abort()?;
        self.counts.aborts += 1;
        self.batch.aborted();
        self.rewind(consumer)
    }

    /// Commits the open batch. After an abort, rewinds every owned partition to its committed offset
    /// and rebuilds its state, so the aborted batch is processed again from the same starting point.
    fn commit(&mut self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
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

    fn rewind(&mut self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
        self.finish_restore(consumer)?;
        let mut assignment = consumer.assignment()?;
        let timeout = self.config.stable_offsets_timeout;
        self.health
            .excused(|| start_at_committed_offsets(&**consumer, &mut assignment, timeout))?;
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
