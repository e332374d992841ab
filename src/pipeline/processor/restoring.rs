//! Restores of newly assigned partitions on a thread of their own, so that the partitions an
//! instance keeps through an incremental rebalance go on processing meanwhile. The rebalance
//! callback pauses the new partitions as it assigns them; they are resumed once their state is in
//! place, and the feed follows their partitions of the directory copy from where the restore read
//! up to.
use std::thread::JoinHandle;

use super::*;
use crate::pipeline::copy_cut::CopySource;
use crate::pipeline::restore::Restored;

/// A restore running on its own thread.
pub(super) struct BackgroundRestore {
    partitions: Vec<i32>,
    handle: JoinHandle<Result<Restored, RestoreError>>,
}

impl BackgroundRestore {
    fn start(config: &RunConfig, partitions: &[i32], copy: &CopySource) -> std::io::Result<Self> {
        let (kafka, topics, copy) = (config.kafka.clone(), config.topics.clone(), copy.clone());
        let restored = partitions.to_vec();
        let handle = std::thread::Builder::new()
            .name("autoclaim-restore".into())
            .spawn(move || restore_partitions(&kafka, &topics, &restored, &copy))?;
        Ok(BackgroundRestore {
            partitions: partitions.to_vec(),
            handle,
        })
    }

    pub(super) fn includes(&self, partition: i32) -> bool {
        self.partitions.contains(&partition)
    }
}

impl LoopState {
    /// Starts restoring newly assigned partitions (paused by the callback) in the background,
    /// after any restore still running.
    pub(super) fn start_restore(
        &mut self,
        consumer: &LoopConsumer,
        partitions: &[i32],
    ) -> Result<(), PipelineError> {
        self.finish_restore(consumer)?;
        let restore = BackgroundRestore::start(&self.config, partitions, &self.copy.source)
            .map_err(|e| RestoreError::Thread(e.to_string()))?;
        consumer.context().set_restoring(partitions);
        info!(?partitions, "restoring newly assigned partitions");
        self.restoring = Some(restore);
        Ok(())
    }

    /// Puts in place the state of a restore that has finished, if one has.
    pub(super) fn finish_restore_if_done(
        &mut self,
        consumer: &LoopConsumer,
    ) -> Result<(), PipelineError> {
        if self
            .restoring
            .as_ref()
            .is_some_and(|r| r.handle.is_finished())
        {
            self.finish_restore(consumer)?;
        }
        Ok(())
    }

    /// Waits for the running restore, if any, puts its state in place and resumes its partitions
    /// (those still assigned: some may have been revoked meanwhile).
    pub(super) fn finish_restore(&mut self, consumer: &LoopConsumer) -> Result<(), PipelineError> {
        let Some(restore) = self.restoring.take() else {
            return Ok(());
        };
        let health = Arc::clone(&self.health);
        let joined = health.excused(|| restore.handle.join());
        consumer.context().set_restoring(&[]);
        let restored =
            joined.map_err(|_| RestoreError::Thread("the restore thread panicked".into()))??;
        self.install(&restore.partitions, restored)?;
        resume_assigned(consumer, &self.inputs, &restore.partitions)?;
        let owned = self.owned_partitions();
        info!(partitions = ?restore.partitions, ?owned, "partitions assigned and restored");
        self.health.ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The restored state of `partitions`, in place, and their directory rows followed from
    /// where the restore read up to.
    pub(super) fn install(
        &mut self,
        partitions: &[i32],
        restored: Restored,
    ) -> Result<(), PipelineError> {
        self.states.extend(restored.states);
        self.feed.follow_directory(&restored.copy_ends)?;
        self.redecide_soon = true;
        crate::pipeline::metrics::restored(partitions.len(), &restored.stats);
        gauge!(telemetry::PARTITIONS_OWNED).set(self.states.len() as f64);
        Ok(())
    }
}

/// Resumes both inputs' partitions of these numbers that are still assigned.
fn resume_assigned(
    consumer: &LoopConsumer,
    inputs: &InputTopics,
    partitions: &[i32],
) -> Result<(), KafkaError> {
    let assigned = consumer.assignment()?;
    let mut resume = TopicPartitionList::new();
    for e in assigned.elements() {
        if partitions.contains(&e.partition()) && inputs.input(e.topic()).is_some() {
            resume.add_partition(e.topic(), e.partition());
        }
    }
    if resume.count() > 0 {
        consumer.resume(&resume)?;
    }
    Ok(())
}
