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
    pub(super) stable_offsets_timeout: Duration,
    /// Set whenever `events` or `fatal` gets something, so the loop need not lock to look.
    pub(super) pending: AtomicBool,
    pub(super) transactions: Arc<TransactionalProducer>,
    pub(super) events: Mutex<Vec<PartitionEvent>>,
    pub(super) fatal: Mutex<Option<PipelineError>>,
    /// One stall watch per input topic: (topic, its watch).
    pub(super) stalls: Mutex<Vec<(String, StallWatch)>>,
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
            stable_offsets_timeout: config.stable_offsets_timeout,
            pending: AtomicBool::new(false),
            transactions: Arc::clone(transactions),
            events: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            stalls: Mutex::new(stalls.into()),
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

    /// An error met inside a callback, for the loop to stop on.
    pub(super) fn set_fatal(&self, error: PipelineError) {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.pending.store(true, Ordering::Release);
    }

    /// Statistics come every few seconds: the stall watches' readings, of both inputs.
    pub(super) fn watch_for_stalls(&self, stats: &rdkafka::Statistics) {
        let now = Instant::now();
        let mut watches = self.stalls.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, watch) in watches.iter_mut() {
            for change in watch.observe(now, &stall::readings(stats, topic)) {
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
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            self.set_fatal(PipelineError::Kafka(error.clone()));
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
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Bounded by --stable-offsets-timeout: not the watchdog's to judge.
                let positions = self.health.excused(|| {
                    start_at_committed_offsets(consumer, partitions, self.stable_offsets_timeout)
                });
                match positions {
                    Ok(()) => {
                        crate::pipeline::metrics::rebalanced("assigned");
                        let rebalance = Rebalance::Assign(partitions);
                        self.pre_rebalance(consumer, &rebalance);
                        let assigned = if cooperative {
                            consumer.incremental_assign(partitions)
                        } else {
                            consumer.assign(partitions)
                        };
                        self.post_rebalance(consumer, &rebalance);
                        assigned
                    }
                    Err(e) => {
                        // Without its committed offsets a partition cannot start anywhere safe;
                        // the loop stops on this error and a restart tries again.
                        self.set_fatal(PipelineError::Positions(e));
                        consumer.unassign()
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
                let rebalance = Rebalance::Revoke(partitions);
                self.pre_rebalance(consumer, &rebalance);
                let revoked = if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                };
                self.post_rebalance(consumer, &rebalance);
                revoked
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                error!(error = %code, "rebalance error");
                consumer.unassign()
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
            match co_assigned(&self.inputs, list) {
                Ok(partitions) => self.push(PartitionEvent::Assigned(partitions)),
                Err(e) => self.set_fatal(e),
            }
        }
    }
}

/// The partition numbers in `list`, each once (a number stands for the same tenants in every input).
pub(super) fn partition_numbers(list: &TopicPartitionList) -> Vec<i32> {
    let numbers: std::collections::BTreeSet<i32> =
        list.elements().iter().map(|e| e.partition()).collect();
    numbers.into_iter().collect()
}

/// The partition numbers of an assignment, if it holds the same numbers of both inputs: the owner
/// of a tenant's activity partition must also be the one that reads the records routed to it.
pub(super) fn co_assigned(
    inputs: &InputTopics,
    list: &TopicPartitionList,
) -> Result<Vec<i32>, PipelineError> {
    let of = |input: Input| -> Vec<i32> {
        let mut numbers: Vec<i32> = list
            .elements()
            .iter()
            .filter(|e| e.topic() == inputs.name(input))
            .map(|e| e.partition())
            .collect();
        numbers.sort_unstable();
        numbers
    };
    let (activity, repartition) = (of(Input::Activity), of(Input::Repartition));
    if activity == repartition {
        Ok(activity)
    } else {
        Err(PipelineError::NotCoAssigned {
            activity,
            repartition,
        })
    }
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
    fn an_assignment_of_the_same_numbers_of_both_inputs_is_those_numbers_once() {
        let both = list(&[("act", 2), ("rep", 2), ("act", 0), ("rep", 0)]);
        assert_eq!(co_assigned(&inputs(), &both).unwrap(), [0, 2]);
        assert_eq!(partition_numbers(&both), [0, 2]);
    }

    #[test]
    fn an_assignment_of_a_number_of_one_input_only_is_refused() {
        for entries in [
            &[("act", 0), ("act", 1), ("rep", 0)][..],
            &[("rep", 0)],
            &[("act", 0), ("rep", 1)],
        ] {
            let e = co_assigned(&inputs(), &list(entries)).unwrap_err();
            assert!(matches!(e, PipelineError::NotCoAssigned { .. }), "{e}");
        }
    }
}
