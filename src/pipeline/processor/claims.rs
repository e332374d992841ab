//! Waiting claims in the loop: deciding them again when a table change may have freed a seat (an
//! event of the tenant does so itself, in `state::decide_and_record`), and publishing claim changes
//! and notices in the open transaction, on the tenant's partition number (the claims topic is also
//! what a restore rebuilds them from).
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{LoopConsumer, LoopState, PipelineError};
use crate::pipeline::transaction::{Input, TxnError};
use crate::state;

/// How soon a re-decision that could not commit (no input position known yet) is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl LoopState {
    /// After a table change (or a restore), decides waiting claims again where it may have freed a
    /// seat; an abort while sending their outputs rewinds like any other.
    pub(super) fn redecide_if_due(&mut self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
        if !self.redecide_soon || self.redecide_after.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        self.redecide_soon = false;
        self.redecide_after = None;
        match self.redecide(consumer) {
            Err(PipelineError::Transaction(TxnError::Aborted(e))) => {
                warn!(error = %e, "sending the outputs of waiting claims failed; aborting and rewinding");
                self.abort_and_rewind(consumer)
            }
            other => other,
        }
    }

    fn redecide(&mut self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
        let waiting: Vec<i32> = self
            .states
            .iter()
            .filter(|(_, s)| s.pending_claims() > 0)
            .map(|(p, _)| *p)
            .collect();
        let mut positioned = Vec::with_capacity(waiting.len());
        for partition in waiting {
            match self.input_position(consumer, partition) {
                Some(next_offset) => positioned.push((partition, next_offset)),
                None => {
                    // Look again shortly: the table change must not be forgotten.
                    warn!(
                        partition,
                        "no position to commit waiting claims with yet; trying again"
                    );
                    self.redecide_soon = true;
                    self.redecide_after = Some(Instant::now() + RETRY_AFTER);
                }
            }
        }
        let result = self.redecide_positioned(&positioned);
        self.take_tallies();
        result
    }

    /// Decides again the waiting claims of partitions whose input position is known, counting on
    /// the first lane's tally.
    fn redecide_positioned(&mut self, positioned: &[(i32, i64)]) -> Result<(), PipelineError> {
        let parts = self.lane_parts();
        let (shared, tally) = (&parts.shared, &mut parts.tallies[0]);
        for &(partition, next_offset) in positioned {
            let state = parts.states.get_mut(&partition).expect("listed above");
            let redecided = state::redecide_waiting(shared.tables, state);
            if redecided.is_empty() {
                continue;
            }
            shared.transactions.ensure_begun()?;
            shared
                .transactions
                .hold_position(Input::Activity, partition, next_offset);
            info!(
                partition,
                assignments = redecided.assignments.len(),
                claim_changes = redecided.claims.len(),
                "waiting claims decided again after a table change"
            );
            tally.send_redecided(shared, &redecided, partition)?;
        }
        Ok(())
    }

    /// The activity partition's next offset: where the loop stands, or the group's committed
    /// offset before it has read anything. None if neither is known.
    fn input_position(&self, consumer: &LoopConsumer, partition: i32) -> Option<i64> {
        let topic = &self.inputs.activity;
        let of = |list: TopicPartitionList| match list.find_partition(topic, partition)?.offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        };
        if let Some(n) = consumer.position().ok().and_then(of) {
            return Some(n);
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        consumer
            .committed_offsets(list, Duration::from_secs(10))
            .ok()
            .and_then(of)
    }
}
