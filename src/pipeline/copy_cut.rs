//! Where a restore reads the directory copy up to: a point known to include every directory record
//! written before the restore began. The directory topic's ends (for a read_committed reader, its
//! last stable offsets) are taken first; the restore then waits until the copy has committed every
//! record before them, and reads each copy partition up to its end taken after that. A restore
//! that read the copy while it was still behind (a first start on a full directory, a copy member
//! restarting) would decide with rows missing.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::info;

use super::clients::{self, QuietContext, Watermarks};
use super::config::KafkaArgs;
use super::positions::start_at_committed_offsets;
use super::restore::{RestoreError, RESTORE_TIMEOUT};
use super::topic_reader::TopicReader;

const RECHECK_PAUSE: Duration = Duration::from_millis(100);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How far the copy has got: the copy group's committed offsets, and what this instance's own copy
/// has committed, which is known here at once (the group's offsets take a round trip, and
/// librdkafka's mock cluster, the demo's, keeps no offsets committed in a transaction).
#[derive(Clone)]
pub struct CopySource {
    pub group: String,
    pub local: CopyProgress,
}

impl CopySource {
    /// The group's committed offsets alone (a process that runs no copy of its own).
    pub fn group(group: String) -> Self {
        CopySource {
            group,
            local: CopyProgress::default(),
        }
    }
}

/// Per directory partition, the offset up to which a copy in this process has committed its
/// copies. Only ever raised: what was committed stays copied, whoever copies the partition next.
#[derive(Clone, Default)]
pub struct CopyProgress(Arc<Mutex<HashMap<i32, i64>>>);

impl CopyProgress {
    pub fn record(&self, committed: &HashMap<i32, i64>) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (p, next) in committed {
            let entry = known.entry(*p).or_insert(*next);
            *entry = (*entry).max(*next);
        }
    }

    fn get(&self, partition: i32) -> Option<i64> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&partition).copied()
    }
}

/// Waits until the copy has copied every record of `directory` written before this call.
pub fn wait_for_copy(
    kafka: &KafkaArgs,
    directory: &str,
    copy: &CopySource,
    started: Instant,
) -> Result<(), RestoreError> {
    let ends = read_committed_ends(kafka, directory)?;
    let mut wait = CopyWait::new(kafka, directory, copy, started)?;
    // Partitions still behind, with the copy's position at the last look.
    let mut behind: HashMap<i32, Option<i64>> = ends
        .iter()
        .filter(|(_, (low, end))| end > low)
        .map(|(p, _)| (*p, None))
        .collect();
    let mut last_log = None::<Instant>;
    loop {
        wait.narrow(&ends, &mut behind)?;
        if behind.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<i32> = behind.keys().copied().collect();
        pending.sort_unstable();
        if started.elapsed() >= RESTORE_TIMEOUT {
            return Err(RestoreError::CopyBehind(pending));
        }
        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            info!(
                directory_partitions = ?pending,
                "waiting for the directory copy to catch up with the directory"
            );
            last_log = Some(Instant::now());
        }
        std::thread::sleep(RECHECK_PAUSE);
    }
}

/// The partitions of `topic` with the end a read_committed reader sees now.
fn read_committed_ends(kafka: &KafkaArgs, topic: &str) -> Result<Watermarks, RestoreError> {
    let consumer: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    Ok(clients::watermarks(
        &consumer,
        topic,
        clients::TRANSIENT_WINDOW,
    )?)
}

/// The end a read_committed reader sees now of each of `partitions` of `topic`.
pub fn read_committed_ends_of(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, RestoreError> {
    let consumer: BaseConsumer<QuietContext> =
        clients::table_reader(kafka).create_with_context(QuietContext)?;
    partitions
        .iter()
        .map(|p| {
            let (_, end) = clients::retry_transient(clients::TRANSIENT_WINDOW, topic, || {
                consumer.fetch_watermarks(topic, *p, Duration::from_secs(30))
            })?;
            Ok((*p, end))
        })
        .collect()
}

/// One restore's look at the copy's progress, with a reader of the copy group's offsets kept for
/// the whole wait.
struct CopyWait<'a> {
    kafka: &'a KafkaArgs,
    directory: &'a str,
    copy: &'a CopySource,
    group_offsets: BaseConsumer<QuietContext>,
    started: Instant,
}

impl<'a> CopyWait<'a> {
    fn new(
        kafka: &'a KafkaArgs,
        directory: &'a str,
        copy: &'a CopySource,
        started: Instant,
    ) -> Result<Self, RestoreError> {
        let mut config = clients::table_reader(kafka);
        config.set("group.id", &copy.group);
        Ok(CopyWait {
            kafka,
            directory,
            copy,
            group_offsets: config.create_with_context(QuietContext)?,
            started,
        })
    }

    /// Drops from `behind` the partitions in which every record before `ends` has been copied. A
    /// partition whose copy position has not moved since the last look is checked for records
    /// between there and its end (it may be transaction markers only); one that moved is looked
    /// at again next time.
    fn narrow(
        &mut self,
        ends: &Watermarks,
        behind: &mut HashMap<i32, Option<i64>>,
    ) -> Result<(), RestoreError> {
        let positions = self.positions(behind.keys().copied())?;
        let mut caught_up = Vec::new();
        for (p, last) in behind.iter_mut() {
            let (low, end) = ends[p];
            let from = positions[p]
                .max(self.copy.local.get(*p).unwrap_or(low))
                .max(low);
            let settled = *last == Some(from);
            *last = Some(from);
            if from >= end
                || (settled
                    && !has_record_between(
                        self.kafka,
                        self.directory,
                        *p,
                        from,
                        end,
                        self.started,
                    )?)
            {
                caught_up.push(*p);
            }
        }
        for p in caught_up {
            behind.remove(&p);
        }
        Ok(())
    }

    /// Where the copy goes on from in each partition: the group's committed offset (waiting while
    /// a copy transaction holds it), or the log start where it has committed none.
    fn positions(
        &self,
        partitions: impl Iterator<Item = i32>,
    ) -> Result<HashMap<i32, i64>, RestoreError> {
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition(self.directory, p);
        }
        let left = RESTORE_TIMEOUT.saturating_sub(self.started.elapsed());
        start_at_committed_offsets(&self.group_offsets, &mut list, left)
            .map_err(|e| RestoreError::CopyPositions(e.to_string()))?;
        Ok(list
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                _ => (e.partition(), 0),
            })
            .collect())
    }
}

/// Whether a committed record lies in [from, end) of the partition: the offsets between the copy's
/// position and the end may hold only transaction markers, which are no records to copy.
fn has_record_between(
    kafka: &KafkaArgs,
    topic: &str,
    partition: i32,
    from: i64,
    end: i64,
    started: Instant,
) -> Result<bool, RestoreError> {
    let left = RESTORE_TIMEOUT.saturating_sub(started.elapsed());
    let span = [(partition, Offset::Offset(from), Some(end))];
    let mut reader = TopicReader::spans(&clients::restore_reader(kafka), topic, &span, left)?;
    let found = reader.next_record()?.is_some();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_rises_and_knows_only_what_was_recorded() {
        let progress = CopyProgress::default();
        progress.record(&HashMap::from([(0, 10), (1, 5)]));
        // A later commit of partition 0, and a lower figure for partition 1: it stays at 5.
        progress.record(&HashMap::from([(0, 12), (1, 3)]));
        assert_eq!(progress.get(0), Some(12));
        assert_eq!(progress.get(1), Some(5));
        assert_eq!(progress.get(2), None);
    }
}
