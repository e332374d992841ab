//! The directory copy on a thread of its own, owned by the processor: started with it, checked by
//! its loop (the processor stops when the copy does, since restores wait for the copy), and stopped
//! with it.
use std::thread::JoinHandle;

use super::*;
use crate::pipeline::copy_cut::CopySource;
use crate::pipeline::directory_copy::{copy_group, DirectoryCopy};

pub(super) struct CopyThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), PipelineError>>>,
    /// What restores read to learn how far the copy has got.
    pub(super) source: CopySource,
}

impl CopyThread {
    pub(super) fn start(
        config: &RunConfig,
        activity_partitions: i32,
    ) -> Result<Self, PipelineError> {
        let source = CopySource::group(copy_group(&config.group_id));
        let copy = DirectoryCopy::start(config, activity_partitions, source.local.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("autoclaim-directory-copy".into())
            .spawn(move || copy.run(&stopped))
            .map_err(|e| RestoreError::Thread(e.to_string()))?;
        Ok(CopyThread {
            stop,
            handle: Some(handle),
            source,
        })
    }

    /// An error if the copy has stopped: it runs for as long as the processor.
    pub(super) fn check(&mut self) -> Result<(), PipelineError> {
        if self.handle.as_ref().is_some_and(JoinHandle::is_finished) {
            return Err(self.join().err().unwrap_or_else(|| {
                PipelineError::DirectoryCopy(Box::new(PipelineError::Kafka(
                    KafkaError::Subscription("the directory copy ended".into()),
                )))
            }));
        }
        Ok(())
    }

    /// Stops the copy (it commits what it has copied) and waits for it.
    pub(super) fn stop(&mut self) -> Result<(), PipelineError> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    fn join(&mut self) -> Result<(), PipelineError> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        match handle.join() {
            Ok(result) => result.map_err(|e| PipelineError::DirectoryCopy(Box::new(e))),
            Err(_) => Err(PipelineError::DirectoryCopy(Box::new(
                RestoreError::Thread("the directory copy thread panicked".into()).into(),
            ))),
        }
    }
}
