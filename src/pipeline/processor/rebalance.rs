//! The consumer's rebalance callbacks: they run inside `poll`, so they only commit or abort what
//! must end before partitions move and record what changed; the loop acts on it after `poll`.
use super::*;

/// Partition changes seen in rebalance callbacks, handled by the loop after `poll` returns.
#[derive(Debug)]
pub(super) enum PartitionEvent {
    Assigned(Vec<i32>),
    Revoked {
        partitions: Vec<i32>,
        lost: bool,
    },
    /// The open transaction was committed (or aborted) inside the revocation callback.
    BatchEnded {
        committed: bool,
    },
}

pub(super) struct RebalanceContext {
    pub(super) inputs: InputTopics,
    group: String,
    pub(super) stable_offsets_timeout: Duration,
    /// Set whenever `events` or `fatal` gets something, so the loop need not lock to look.
    pub(super) pending: AtomicBool,
    pub(super) transactions: Arc<TransactionalProducer>,
    pub(super) events: Mutex<Vec<PartitionEvent>>,
    pub(super) fatal: Mutex<Option<PipelineError>>,
    /// One stall watch per input topic: (topic, its watch).
    pub(super) stalls: Mutex<Vec<(String, StallWatch)>>,
    /// Partition numbers paused while their state is restored: not stalled, only waiting.
    restoring: Mutex<Vec<i32>>,
    /// The member is leaving the group: an assignment that comes meanwhile is taken empty.
    pub(super) leaving: AtomicBool,
    pub(super) health: Arc<Health>,
}

impl RebalanceContext {
    pub(super) fn new(
        config: &RunConfig,
        inputs: &InputTopics,
        transactions: &Arc<TransactionalProducer>,
        health: &Arc<Health>,
    ) -> Self {
        let stalls = [&inputs.activity, &inputs.repartition]
            .map(|topic| (topic.clone(), StallWatch::for_timeout(config.stall_timeout)));
        RebalanceContext {
            inputs: inputs.clone(),
            group: config.group_id.clone(),
            stable_offsets_timeout: config.stable_offsets_timeout,
            pending: AtomicBool::new(false),
            transactions: Arc::clone(transactions),
            events: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            stalls: Mutex::new(stalls.into()),
            restoring: Mutex::new(Vec::new()),
            leaving: AtomicBool::new(false),
            health: Arc::clone(health),
        }
    }

    pub(super) fn push(&self, event: PartitionEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        self.pending.store(true, Ordering::Release);
    }

    pub(super) fn has_events(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// An error met inside a callback, for the loop to stop on. The first is kept: what fails
    /// after it is usually its consequence.
    pub(super) fn set_fatal(&self, error: PipelineError) {
        self.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
        self.pending.store(true, Ordering::Release);
    }

    pub(super) fn set_restoring(&self, partitions: &[i32]) {
        *self.restoring.lock().unwrap_or_else(|p| p.into_inner()) = partitions.to_vec();
    }

    /// Statistics come every few seconds: the stall watches' readings, of both inputs.
    pub(super) fn watch_for_stalls(&self, stats: &rdkafka::Statistics) {
        let now = Instant::now();
        let restoring = self
            .restoring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut watches = self.stalls.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, watch) in watches.iter_mut() {
            let mut readings = stall::readings(stats, topic);
            readings.retain(|r| !restoring.contains(&r.partition));
            for change in watch.observe(now, &readings) {
                report_stall_change(topic, change);
            }
            if let Some(stall) = watch.expired() {
                self.set_fatal(PipelineError::Stalled {
                    topic: topic.clone(),
                    stall,
                });
            }
        }
        let alarmed = watches.iter().any(|(_, watch)| watch.any_alarmed());
        self.health.stalled.store(alarmed, Ordering::Relaxed);
    }
}

pub(super) fn report_stall_change(topic: &str, change: StallChange) {
    match change {
        StallChange::Alarm(stall) => {
            error!(
                topic,
                partition = stall.partition,
                offset = stall.offset,
                waiting = stall.waiting,
                stalled_for_s = stall.stalled_for.as_secs(),
                "partition stalled: input is waiting but nothing is consumed; not ready"
            );
            gauge!(telemetry::PARTITION_STALLED, "topic" => topic.to_owned(), "partition" => stall.partition.to_string())
                .set(1.0);
        }
        StallChange::Cleared(partition) => {
            info!(
                topic,
                partition, "partition moving again (or no longer owned)"
            );
            gauge!(telemetry::PARTITION_STALLED, "topic" => topic.to_owned(), "partition" => partition.to_string())
                .set(0.0);
        }
    }
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Revoked credentials: librdkafka would retry for ever while nothing is consumed.
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => {
                self.set_fatal(PipelineError::Kafka(error.clone()));
            }
            // The group will not take this member while members of another protocol remain, and
            // librdkafka would ask again for ever.
            Some(RDKafkaErrorCode::InconsistentGroupProtocol) => {
                self.set_fatal(PipelineError::EagerMembers {
                    group: self.group.clone(),
                    source: error.clone(),
                });
            }
            _ => {}
        }
        clients::log_client_error(error, reason);
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        crate::pipeline::metrics::record_lags(
            &stats,
            &self.inputs.activity,
            &self.inputs.repartition,
        );
        kafka_stats::record_rtts("consumer", &stats);
        self.watch_for_stalls(&stats);
    }
}

impl ConsumerContext for RebalanceContext {
    /// As rdkafka's default, except that an assignment is given explicit start positions (the
    /// committed offsets, fetched by `positions`) rather than left for librdkafka to look up.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            // A rebalance that ends while the consumer closes (another member left meanwhile)
            // would fetch committed offsets the closing consumer can no longer get answered, until
            // the stable-offsets timeout; nothing of it would be processed anyway.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if self.leaving.load(Ordering::Relaxed) =>
            {
                info!("leaving the group: an assignment made meanwhile is not taken");
                Ok(())
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut both = with_repartition(&self.inputs, partitions);
                // Bounded by --stable-offsets-timeout: not the watchdog's to judge.
                let positions = self.health.excused(|| {
                    start_at_committed_offsets(consumer, &mut both, self.stable_offsets_timeout)
                });
                match positions {
                    Ok(()) => {
                        crate::pipeline::metrics::rebalanced("assigned");
                        let rebalance = Rebalance::Assign(&both);
                        self.pre_rebalance(consumer, &rebalance);
                        let assigned = if cooperative {
                            consumer.incremental_assign(&both)
                        } else {
                            consumer.assign(&both)
                        };
                        // Nothing of them is read until their state is restored (the loop
                        // restores in the background and resumes them).
                        let assigned = assigned.and_then(|()| consumer.pause(&both));
                        self.post_rebalance(consumer, &rebalance);
                        assigned
                    }
                    Err(e) => {
                        // Without its committed offsets a partition cannot start anywhere safe:
                        // nothing is assigned, the loop stops on this error and a restart tries
                        // again.
                        self.set_fatal(PipelineError::Positions(e));
                        Ok(())
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Lost: the group went on without this member (a missed session timeout), so
                // another may already be processing these partitions.
                crate::pipeline::metrics::rebalanced(if consumer.assignment_lost() {
                    "lost"
                } else {
                    "revoked"
                });
                let both = with_repartition(&self.inputs, partitions);
                let rebalance = Rebalance::Revoke(&both);
                self.pre_rebalance(consumer, &rebalance);
                let revoked = if cooperative {
                    consumer.incremental_unassign(&both)
                } else {
                    consumer.unassign()
                };
                self.post_rebalance(consumer, &rebalance);
                revoked
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                error!(error = %code, "rebalance error");
                if cooperative {
                    consumer
                        .assignment()
                        .and_then(|all| consumer.incremental_unassign(&all))
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            self.set_fatal(PipelineError::Kafka(e));
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            // Offsets of revoked partitions must be committed (with their outputs) before another
            // instance takes them over; a failed commit leaves them for the next owner to redo.
            if self.transactions.is_open() {
                let result = consumer
                    .group_metadata()
                    .ok_or_else(|| {
                        TxnError::Aborted(KafkaError::Subscription("no group metadata".into()))
                    })
                    .and_then(|group| self.transactions.commit(&group));
                let committed = match result {
                    Ok(stats) => {
                        self.health.committed(stats.records);
                        info!(records = stats.records, "committed before revocation");
                        true
                    }
                    Err(TxnError::Aborted(e)) => {
                        warn!(error = %e, "transaction aborted at revocation");
                        false
                    }
                    Err(fatal) => {
                        self.set_fatal(fatal.into());
                        false
                    }
                };
                self.push(PartitionEvent::BatchEnded { committed });
            }
            let partitions = partition_numbers(list);
            self.push(PartitionEvent::Revoked {
                partitions,
                lost: consumer.assignment_lost(),
            });
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.push(PartitionEvent::Assigned(partition_numbers(list)));
        }
    }
}

/// The partition numbers in `list`, each once (a number stands for the same tenants in every input).
pub(crate) fn partition_numbers(list: &TopicPartitionList) -> Vec<i32> {
    let numbers: std::collections::BTreeSet<i32> =
        list.elements().iter().map(|e| e.partition()).collect();
    numbers.into_iter().collect()
}

/// The activity partitions the group gave or took, with the repartition partitions of the same
/// numbers: the owner of a tenant's activity partition is the one that reads the records routed to
/// it. The group knows only the activity topic, so it cannot give one without the other.
pub(super) fn with_repartition(
    inputs: &InputTopics,
    group: &TopicPartitionList,
) -> TopicPartitionList {
    let mut both = TopicPartitionList::new();
    for input in [Input::Activity, Input::Repartition] {
        for e in group.elements() {
            if e.topic() == inputs.activity {
                both.add_partition(inputs.name(input), e.partition());
            }
        }
    }
    both
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> InputTopics {
        InputTopics {
            activity: "act".into(),
            repartition: "rep".into(),
        }
    }

    fn list(entries: &[(&str, i32)]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, p) in entries {
            list.add_partition(topic, *p);
        }
        list
    }

    #[test]
    fn the_group_s_activity_partitions_bring_the_repartition_partitions_of_their_numbers() {
        let group = list(&[("act", 2), ("act", 0)]);
        let both = with_repartition(&inputs(), &group);
        let entries: Vec<(String, i32)> = both
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        assert_eq!(
            entries,
            [("act", 2), ("act", 0), ("rep", 2), ("rep", 0)].map(|(t, p)| (t.to_owned(), p))
        );
        assert_eq!(partition_numbers(&both), [0, 2]);
    }

    #[test]
    fn partitions_of_other_topics_in_a_group_assignment_bring_nothing() {
        let both = with_repartition(&inputs(), &list(&[("rep", 1), ("other", 3)]));
        assert_eq!(both.count(), 0);
    }
}
