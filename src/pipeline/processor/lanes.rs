//! A burst of records spread over lanes: a lane owns the partitions whose number falls to it,
//! decides their records in order and publishes what they cause in the loop's one open
//! transaction. A tenant lives on one partition, so lanes share nothing they change; the tables are
//! only read while a burst runs. What a lane counted (records, offsets, metrics) reaches the
//! transaction and the loop's counts when the burst ends, before anything can commit.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::ThreadPool;
use rdkafka::message::{BorrowedMessage, Header, Message};
use rdkafka::producer::BaseRecord;
use tracing::warn;

use super::headers::{content_type, with_producer_headers};
use super::own_queues::OwnQueue;
use super::{LoopCounts, PipelineError, ROUTE_OFFSET_HEADER, ROUTE_PARTITION_HEADER};
use crate::domain::activity::Activity;
use crate::domain::claims::{ClaimChange, Notice};
use crate::domain::decision::Decision;
use crate::domain::time::Timestamp;
use crate::pipeline::config::RunConfig;
use crate::pipeline::metrics::BatchMetrics;
use crate::pipeline::partitioner::{placement, Placement};
use crate::pipeline::records::{self, RawRecord};
use crate::pipeline::transaction::{Input, InputTopics, TransactionalProducer};
use crate::state::{self, PartitionState, Redecided, Tables};
use crate::wire::claims::{claim_key, claim_record, notice_record};
use crate::wire::{codec, output, WireError};

/// Records a lane takes from one of its queues before it turns to the next.
const QUEUE_RUN: usize = 64;
/// One decision in this many is timed for the decision-duration histogram: two clock reads per
/// event were 2-3% of the loop.
const DECISION_SAMPLE: u64 = 16;

/// What the lanes of a burst read.
pub(super) struct Shared<'a> {
    pub(super) config: &'a RunConfig,
    pub(super) inputs: &'a InputTopics,
    pub(super) activity_partitions: i32,
    pub(super) tables: &'a Tables,
    pub(super) transactions: &'a TransactionalProducer,
    /// Looked up once: the `histogram!` macro resolves its key in the registry on every call.
    pub(super) decision_seconds: &'a metrics::Histogram,
}

/// What one lane did in a burst, added to the loop's counts and the open transaction afterwards.
/// Kept between bursts so that its maps keep their capacity.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) counts: LoopCounts,
    pub(super) batch: BatchMetrics,
    /// Input records processed.
    records: usize,
    /// The next offset to consume of each input partition read: (input, partition, offset).
    next_offsets: Vec<(Input, i32, i64)>,
    /// Where in its queues the lane starts its next burst.
    next_queue: usize,
    /// Decisions the lane has made, ever: the first of every `DECISION_SAMPLE` is timed, so that
    /// however the work falls to lanes at least one in that many is.
    decisions: u64,
}

/// Which lane a partition's records go to (both inputs' partitions of a number share a state).
fn lane_of(partition: i32, lanes: usize) -> usize {
    partition.unsigned_abs() as usize % lanes
}

/// What a burst is given to process: records from the consumer's own queue, and the queues of
/// the partitions ready to be read (their state in place), from which each lane takes up to `quota`.
pub(super) struct Burst<'b, 'm> {
    pub(super) polled: &'b [BorrowedMessage<'m>],
    pub(super) queues: Vec<&'b OwnQueue>,
    pub(super) quota: usize,
}

/// Processes a burst on the lanes of `tallies` (one per lane): lane 0 on this thread, the others on
/// the pool's threads, each lane's records in their order; what `burst_outcome` makes of the
/// lanes' results once every lane has stopped.
pub(super) fn run_burst(
    pool: Option<&ThreadPool>,
    shared: &Shared<'_>,
    states: &mut HashMap<i32, PartitionState>,
    tallies: &mut [Tally],
    burst: &Burst<'_, '_>,
) -> Result<bool, PipelineError> {
    let count = tallies.len();
    let mut lanes: Vec<Lane<'_, '_>> = tallies
        .iter_mut()
        .map(|tally| Lane {
            states: Vec::new(),
            queues: Vec::new(),
            tally,
        })
        .collect();
    for (partition, state) in states.iter_mut() {
        lanes[lane_of(*partition, count)]
            .states
            .push((*partition, state));
    }
    for lane in &mut lanes {
        lane.states
            .sort_unstable_by_key(|(partition, _)| *partition);
    }
    for queue in &burst.queues {
        lanes[lane_of(queue.partition, count)].queues.push(queue);
    }
    let busy: Vec<bool> = (0..count)
        .map(|lane| lanes[lane].has_work(burst, lane, count))
        .collect();
    let Some(pool) = pool.filter(|_| busy.iter().filter(|b| **b).count() > 1) else {
        // One lane has work (or there is only one): no other thread need wake.
        let lane = busy.iter().position(|b| *b).unwrap_or(0);
        return lanes[lane].run(shared, burst, lane, count);
    };
    let mut results: Vec<Result<bool, PipelineError>> = (0..count).map(|_| Ok(true)).collect();
    pool.in_place_scope(|scope| {
        let mut work = lanes.iter_mut().zip(results.iter_mut()).enumerate();
        let first = work.next();
        for (index, (lane, result)) in work.filter(|(index, _)| busy[*index]) {
            scope.spawn(move |_| *result = lane.run(shared, burst, index, count));
        }
        if let Some((index, (lane, result))) = first.filter(|_| busy[0]) {
            *result = lane.run(shared, burst, index, count);
        }
    });
    burst_outcome(results)
}

/// Whether every lane emptied its queues, or the error to act on: a fatal error outranks an abort,
/// as an abort is recovered from and a fatal error must stop the loop.
fn burst_outcome(results: Vec<Result<bool, PipelineError>>) -> Result<bool, PipelineError> {
    let mut abort = None;
    let mut drained = true;
    for result in results {
        match result {
            Err(e) if is_abort(&e) => abort = abort.or(Some(e)),
            Err(e) => return Err(e),
            Ok(emptied) => drained &= emptied,
        }
    }
    abort.map_or(Ok(drained), Err)
}

pub(super) fn is_abort(e: &PipelineError) -> bool {
    matches!(
        e,
        PipelineError::Transaction(crate::pipeline::transaction::TxnError::Aborted(_))
    )
}

/// The partitions of one lane, their queues, and what it counts.
struct Lane<'s, 'q> {
    /// In partition order, looked up per record.
    states: Vec<(i32, &'s mut PartitionState)>,
    queues: Vec<&'q OwnQueue>,
    tally: &'s mut Tally,
}

impl Lane<'_, '_> {
    fn has_work(&self, burst: &Burst<'_, '_>, lane: usize, lanes: usize) -> bool {
        !self.queues.is_empty()
            || burst
                .polled
                .iter()
                .any(|m| lane_of(m.partition(), lanes) == lane)
    }

    /// Processes, in order, the burst's records of this lane's partitions from the consumer's
    /// queue (fetched before their partition was split: older than what its own queue holds), then
    /// up to the quota from its partitions' queues. True if those queues were emptied. Stops at
    /// the first error (the loop aborts or stops, so what follows would be redone or never
    /// committed).
    fn run(
        &mut self,
        shared: &Shared<'_>,
        burst: &Burst<'_, '_>,
        lane: usize,
        lanes: usize,
    ) -> Result<bool, PipelineError> {
        for message in burst.polled {
            if lane_of(message.partition(), lanes) == lane {
                self.process(shared, message)?;
            }
        }
        self.take_from_queues(shared, burst.quota)
    }

    /// Takes records from the lane's queues in turn, a run from each, until the quota is reached
    /// (false) or a round finds every queue empty (true). The next burst starts at the queue after
    /// the one this one stopped at, so that no partition waits behind the others.
    fn take_from_queues(
        &mut self,
        shared: &Shared<'_>,
        quota: usize,
    ) -> Result<bool, PipelineError> {
        let queues = std::mem::take(&mut self.queues);
        let mut left = quota;
        loop {
            let mut found = false;
            for turn in 0..queues.len() {
                let index = (self.tally.next_queue + turn) % queues.len();
                let taken = self.take_run(shared, queues[index], left.min(QUEUE_RUN))?;
                found |= taken > 0;
                left -= taken;
                if left == 0 {
                    self.tally.next_queue = index + 1;
                    return Ok(false);
                }
            }
            if !found {
                return Ok(true);
            }
        }
    }

    /// Processes up to `most` records of one queue; returns how many it had.
    fn take_run(
        &mut self,
        shared: &Shared<'_>,
        own: &OwnQueue,
        most: usize,
    ) -> Result<usize, PipelineError> {
        let mut taken = 0;
        while taken < most {
            match own.queue.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => super::consumer_error(&e),
                Some(Ok(message)) => {
                    self.process(shared, &message)?;
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    fn process(
        &mut self,
        shared: &Shared<'_>,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        // Only the two inputs are subscribed.
        let input = shared
            .inputs
            .input(message.topic())
            .unwrap_or(Input::Activity);
        self.tally.counts.consumed += 1;
        let routed = match read_activity(shared, message, input) {
            Err(e) => {
                self.tally.dead_letter(shared, message, &e)?;
                false
            }
            Ok(event) => self.decide_or_route(shared, message, input, &event)?,
        };
        // A routed record's time to commit is counted where it is decided.
        if !routed {
            self.tally
                .batch
                .record_time(message.timestamp().to_millis());
        }
        self.tally
            .consumed(input, message.partition(), message.offset());
        Ok(())
    }

    /// Decides a readable event on its tenant's partition, or routes it there; true if routed.
    fn decide_or_route(
        &mut self,
        shared: &Shared<'_>,
        message: &BorrowedMessage<'_>,
        input: Input,
        event: &Activity,
    ) -> Result<bool, PipelineError> {
        let partition = message.partition();
        match placement(
            &event.tenant_id,
            partition,
            input,
            shared.activity_partitions,
        ) {
            Placement::Owned => {
                self.decide(shared, partition, event)?;
                Ok(false)
            }
            Placement::Route { owner } => {
                self.tally.route(shared, message, &event.tenant_id, owner)?;
                Ok(true)
            }
            Placement::Misrouted { owner } => {
                let e = WireError::field(
                    "tenantId",
                    format!("tenant {} belongs to partition {owner}, but was routed to partition {partition} (has the activity topic's partition count changed?)", event.tenant_id),
                );
                self.tally.dead_letter(shared, message, &e)?;
                Ok(false)
            }
        }
    }

    fn decide(
        &mut self,
        shared: &Shared<'_>,
        partition: i32,
        event: &Activity,
    ) -> Result<(), PipelineError> {
        let found = self.states.binary_search_by_key(&partition, |(p, _)| *p);
        let index =
            found.expect("the loop puts every partition's state in place before its burst runs");
        let state = &mut *self.states[index].1;
        let tally = &mut *self.tally;
        tally.decisions += 1;
        let sampled = (tally.decisions - 1) % DECISION_SAMPLE == 0;
        let started = sampled.then(Instant::now);
        let decision = state::decide_and_record(shared.tables, state, event);
        if let Some(started) = started {
            shared
                .decision_seconds
                .record(started.elapsed().as_secs_f64());
        }
        if !decision.redecided.is_empty() {
            tally.send_redecided(shared, &decision.redecided, partition)?;
        }
        tally.batch.decided(&decision.decision);
        if output::has_output(&decision.decision) {
            tally.send_outputs(shared, &decision.decision, partition, &event.tenant_id)?;
        }
        tally.send_claims(shared, &decision.claims, partition)?;
        tally.send_notices(shared, &decision.notices, partition)
    }
}

/// Reads an activity record. Its event time is bounded by its write time where the record first
/// arrives, on the activity topic, so that one refused is dead-lettered there, once, and never
/// routed. A routed record passed that check before it was routed (it keeps the original
/// timestamp), so it is not checked again: an instance with another --max-event-time-skew (a
/// rolling change) cannot dead-letter on the repartition topic a record already routed.
fn read_activity(
    shared: &Shared<'_>,
    message: &BorrowedMessage<'_>,
    input: Input,
) -> Result<Activity, WireError> {
    let raw = RawRecord::of(message);
    match input {
        Input::Activity => records::bounded_activity_record(
            &raw,
            records::written_at(message),
            shared.config.event_time.max_skew,
        ),
        Input::Repartition => records::activity_record(&raw),
    }
}

impl Tally {
    fn consumed(&mut self, input: Input, partition: i32, offset: i64) {
        self.records += 1;
        // Records come in runs of one partition: the last entry is nearly always the one.
        let entry = self
            .next_offsets
            .iter_mut()
            .rev()
            .find(|(i, p, _)| *i == input && *p == partition);
        match entry {
            Some((_, _, next)) => *next = offset + 1,
            None => self.next_offsets.push((input, partition, offset + 1)),
        }
    }

    /// Hands the lane's records and offsets to the open transaction and its counts to the loop's,
    /// leaving the tally empty (its capacity kept).
    pub(super) fn drain_into(
        &mut self,
        transactions: &TransactionalProducer,
        counts: &mut LoopCounts,
        batch: &mut BatchMetrics,
    ) {
        if self.records > 0 || !self.next_offsets.is_empty() {
            let offsets = self
                .next_offsets
                .drain(..)
                .map(|(i, p, o)| (i.into(), p, o));
            transactions.consumed_up_to(self.records, offsets);
            self.records = 0;
        }
        counts.add(&std::mem::take(&mut self.counts));
        batch.absorb(&mut self.batch);
    }

    /// Sends an activity record that arrived on a partition that does not own its tenant to the
    /// repartition topic's partition that does, in the open transaction: it is decided there, once,
    /// by the tenant's one writer. The bytes, content type and timestamp are the producer's.
    fn route(
        &mut self,
        shared: &Shared<'_>,
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
        let mut record = BaseRecord::to(&shared.config.topics.repartition)
            .partition(owner)
            .key(tenant_id.as_bytes())
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(millis) = message.timestamp().to_millis() {
            record = record.timestamp(millis);
        }
        shared.transactions.send(record)?;
        self.counts.routed += 1;
        self.batch.routed();
        Ok(())
    }

    /// Publishes a decision's assignment or failure in the open transaction. Assignments go to the
    /// changelog partition of the activity partition (its state is restored from there).
    pub(super) fn send_outputs(
        &mut self,
        shared: &Shared<'_>,
        decision: &Decision,
        partition: i32,
        tenant_id: &str,
    ) -> Result<(), PipelineError> {
        let decided_at = Timestamp::now();
        let topics = &shared.config.topics;
        let key = tenant_id.as_bytes();
        if let Some(assignment) = output::assignment(decision, decided_at) {
            send_encoded(
                shared,
                &topics.assignments,
                Some(partition),
                key,
                &assignment,
            )?;
            self.counts.assignments += 1;
        }
        if let Some(failure) = output::failure(decision, decided_at) {
            send_encoded(shared, &topics.failures, None, key, &failure)?;
            self.counts.failures += 1;
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        shared: &Shared<'_>,
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
        let mut record = BaseRecord::to(&shared.config.topics.dead_letters)
            .payload(kept)
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        shared.transactions.send(record)?;
        self.counts.dead_letters += 1;
        self.batch.dead_lettered(e.code());
        warn!(partition = message.partition(), offset = message.offset(), code = e.code(), error = %e, "dead-lettered");
        Ok(())
    }

    pub(super) fn send_redecided(
        &mut self,
        shared: &Shared<'_>,
        r: &Redecided,
        partition: i32,
    ) -> Result<(), PipelineError> {
        for decision in &r.assignments {
            self.batch.decided(decision);
            self.send_outputs(shared, decision, partition, &decision.tenant_id)?;
        }
        self.send_claims(shared, &r.claims, partition)?;
        self.send_notices(shared, &r.notices, partition)
    }

    fn send_claims(
        &mut self,
        shared: &Shared<'_>,
        changes: &[ClaimChange],
        partition: i32,
    ) -> Result<(), PipelineError> {
        let topic = &shared.config.topics.claims;
        for change in changes {
            let key = claim_key(&change.tenant_id, &change.claim.user_id, change.claim.need);
            let record = claim_record(change);
            send_encoded(shared, topic, Some(partition), key.as_bytes(), &record)?;
            self.counts.claim_changes += 1;
            self.batch.claim_changed(change);
        }
        Ok(())
    }

    fn send_notices(
        &mut self,
        shared: &Shared<'_>,
        notices: &[Notice],
        partition: i32,
    ) -> Result<(), PipelineError> {
        let topic = &shared.config.topics.notices;
        for notice in notices {
            let key = notice.tenant_id.as_bytes();
            send_encoded(shared, topic, Some(partition), key, &notice_record(notice))?;
            self.counts.notices += 1;
            self.batch.noticed(notice);
        }
        Ok(())
    }
}

/// Sends an output in the open transaction, encoded in the configured format with its content type.
fn send_encoded<M>(
    shared: &Shared<'_>,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    message: &M,
) -> Result<(), PipelineError>
where
    M: prost::Message + serde::Serialize,
{
    let format = shared.config.output_format;
    let bytes = codec::encode(message, format);
    let mut record = BaseRecord::to(topic)
        .key(key)
        .payload(&bytes[..])
        .headers(content_type(format));
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    Ok(shared.transactions.send(record)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_gets_partitions_and_one_lane_gets_them_all() {
        for lanes in 1..=4 {
            let used: std::collections::BTreeSet<usize> =
                (0..48).map(|p| lane_of(p, lanes)).collect();
            assert_eq!(used, (0..lanes).collect());
        }
        assert!((0..48).all(|p| lane_of(p, 1) == 0));
    }

    fn abort() -> PipelineError {
        PipelineError::Transaction(crate::pipeline::transaction::TxnError::Aborted(
            rdkafka::error::KafkaError::Canceled,
        ))
    }

    fn fatal() -> PipelineError {
        PipelineError::Transaction(crate::pipeline::transaction::TxnError::Fatal(
            rdkafka::error::KafkaError::Canceled,
        ))
    }

    #[test]
    fn a_fatal_error_outranks_an_abort_and_the_burst_drained_only_if_every_lane_did() {
        let result = burst_outcome(vec![Ok(true), Err(abort()), Err(fatal()), Ok(false)]);
        assert!(matches!(
            result,
            Err(PipelineError::Transaction(
                crate::pipeline::transaction::TxnError::Fatal(_)
            ))
        ));
        assert!(burst_outcome(vec![Ok(true), Err(abort())]).is_err_and(|e| is_abort(&e)));
        assert!(burst_outcome(vec![Ok(true), Ok(true)]).is_ok_and(|drained| drained));
        assert!(burst_outcome(vec![Ok(true), Ok(false)]).is_ok_and(|drained| !drained));
    }
}
