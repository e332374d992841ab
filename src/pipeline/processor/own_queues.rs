//! Each assigned input partition gets a queue of its own, split from the consumer's, so that the
//! lanes read their partitions' records in parallel rather than take turns at one queue (which
//! hands out long runs of one partition: a burst from it would keep every other lane idle). The
//! consumer's own queue still carries the rebalances, errors and any record fetched before its
//! partition was split; the loop polls it as before.
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::BaseConsumer;
use tracing::warn;

use super::rebalance::RebalanceContext;
use crate::pipeline::transaction::{Input, InputTopics};

/// The input partition's records, fetched for its lane.
pub(super) struct OwnQueue {
    pub(super) partition: i32,
    pub(super) queue: PartitionQueue<RebalanceContext>,
}

/// Wakes the loop when a partition queue gets records, so that it can wait for input without
/// polling every queue in turn.
#[derive(Default)]
pub(super) struct Wake {
    arrived: Mutex<bool>,
    signal: Condvar,
}

impl Wake {
    fn notify(&self) {
        *self.arrived.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.signal.notify_one();
    }

    /// Waits until a queue has had records since the last wait, or `timeout`.
    pub(super) fn wait(&self, timeout: Duration) {
        let arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        let (mut arrived, _) = self
            .signal
            .wait_timeout_while(arrived, timeout, |arrived| !*arrived)
            .unwrap_or_else(|p| p.into_inner());
        *arrived = false;
    }
}

/// Splits both inputs' partitions of these numbers into queues of their own, which wake `wake`.
/// Called while they are paused for their restore, so that none of their records is fetched into
/// the consumer's queue after the split (any fetched before it is read from there).
pub(super) fn split(
    consumer: &Arc<BaseConsumer<RebalanceContext>>,
    inputs: &InputTopics,
    partitions: &[i32],
    wake: &Arc<Wake>,
) -> Vec<OwnQueue> {
    let mut queues = Vec::with_capacity(partitions.len() * 2);
    for &partition in partitions {
        for input in [Input::Activity, Input::Repartition] {
            let topic = inputs.name(input);
            let Some(mut queue) = consumer.split_partition_queue(topic, partition) else {
                // Its records then come on the consumer's queue, which the loop reads too.
                warn!(
                    topic,
                    partition, "could not give the partition a queue of its own"
                );
                continue;
            };
            let wake = Arc::clone(wake);
            queue.set_nonempty_callback(move || wake.notify());
            queues.push(OwnQueue { partition, queue });
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_notice_before_the_wait_ends_it_at_once_and_is_used_up() {
        let wake = Wake::default();
        wake.notify();
        let started = Instant::now();
        wake.wait(Duration::from_secs(30));
        assert!(started.elapsed() < Duration::from_secs(30));
        // Used up: the next wait runs to its timeout.
        let started = Instant::now();
        wake.wait(Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_notice_from_another_thread_ends_a_wait() {
        let wake = Arc::new(Wake::default());
        let notifier = Arc::clone(&wake);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            notifier.notify();
        });
        let started = Instant::now();
        wake.wait(Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(60));
        thread.join().unwrap();
    }
}
