//! Waiting claims in the loop: deciding them again when a table change may have freed a seat (an
//! event of the tenant does so itself, in `state::decide_and_record`), and publishing claim changes
//! and notices in the open transaction, on the tenant's partition number (the claims topic is also
//! what a restore rebuilds them from).
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::headers::content_type;
use super::rebalance::RebalanceContext;
use super::{LoopState, PipelineError};
use crate::domain::claims::{ClaimChange, Notice};
use crate::pipeline::transaction::{Input, TxnError};
use crate::state::{self, Redecided};
use crate::wire::claims::{claim_key, claim_record, notice_record};
use crate::wire::codec;

/// How soon a re-decision that could not commit (no input position known yet) is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl LoopState {
    /// After a table change (or a restore), decides waiting claims again where it may have freed a
    /// seat; an abort while sending their outputs rewinds like any other.
    pub(super) fn redecide_if_due(
        &mut self,
        consumer: &BaseConsumer<RebalanceContext>,
    ) -> Result<(), PipelineError> {
        if !self.redecide_soon || self.redecide_after.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        self.redecide_soon = false;
        self.redecide_after = None;
        match self.redecide(consumer) {
            Err(PipelineError::Transaction(TxnError::Aborted(e))) => {
                warn!(error = %e, "sending the outputs of waiting claims failed; aborting and rewinding");
                self.transactions.abort()?;
                self.counts.aborts += 1;
                self.batch.aborted();
                self.rewind(consumer)
            }
            other => other,
        }
    }

    fn redecide(&mut self, consumer: &BaseConsumer<RebalanceContext>) -> Result<(), PipelineError> {
        let waiting: Vec<i32> = self
            .states
            .iter()
            .filter(|(_, s)| s.pending_claims() > 0)
            .map(|(p, _)| *p)
            .collect();
        for partition in waiting {
            let Some(next_offset) = self.input_position(consumer, partition) else {
                // Look again shortly: the table change must not be forgotten.
                warn!(
                    partition,
                    "no position to commit waiting claims with yet; trying again"
                );
                self.redecide_soon = true;
                self.redecide_after = Some(Instant::now() + RETRY_AFTER);
                continue;
            };
            let state = self.states.get_mut(&partition).expect("listed above");
            let redecided = state::redecide_waiting(&self.tables, state);
            if redecided.is_empty() {
                continue;
            }
            self.transactions.ensure_begun()?;
            self.transactions
                .hold_position(Input::Activity, partition, next_offset);
            info!(
                partition,
                assignments = redecided.assignments.len(),
                claim_changes = redecided.claims.len(),
                "waiting claims decided again after a table change"
            );
            self.send_redecided(&redecided, partition)?;
        }
        Ok(())
    }

    /// The activity partition's next offset: where the loop stands, or the group's committed
    /// offset before it has read anything. None if neither is known.
    fn input_position(
        &self,
        consumer: &BaseConsumer<RebalanceContext>,
        partition: i32,
    ) -> Option<i64> {
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

    pub(super) fn send_redecided(
        &mut self,
        r: &Redecided,
        partition: i32,
    ) -> Result<(), PipelineError> {
        for decision in &r.assignments {
            self.batch.decided(decision);
            self.send_outputs(decision, partition, &decision.tenant_id)?;
        }
        self.send_claims(&r.claims, partition)?;
        self.send_notices(&r.notices, partition)
    }

    pub(super) fn send_claims(
        &mut self,
        changes: &[ClaimChange],
        partition: i32,
    ) -> Result<(), PipelineError> {
        let format = self.config.output_format;
        for change in changes {
            let key = claim_key(&change.tenant_id, &change.claim.user_id, change.claim.need);
            let bytes = codec::encode(&claim_record(change), format);
            self.transactions.send(
                BaseRecord::to(&self.config.topics.claims)
                    .partition(partition)
                    .key(key.as_bytes())
                    .payload(&bytes[..])
                    .headers(content_type(format)),
            )?;
            self.counts.claim_changes += 1;
            self.batch.claim_changed(change);
        }
        Ok(())
    }

    pub(super) fn send_notices(
        &mut self,
        notices: &[Notice],
        partition: i32,
    ) -> Result<(), PipelineError> {
        let format = self.config.output_format;
        for notice in notices {
            let bytes = codec::encode(&notice_record(notice), format);
            self.transactions.send(
                BaseRecord::to(&self.config.topics.notices)
                    .partition(partition)
                    .key(notice.tenant_id.as_bytes())
                    .payload(&bytes[..])
                    .headers(content_type(format)),
            )?;
            self.counts.notices += 1;
            self.batch.noticed(notice);
        }
        Ok(())
    }
}
