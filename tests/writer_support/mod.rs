//! An in-memory `PolicyWriter` for the tests that run the admin API without a broker: it keeps what
//! was written, and can be told to fail.
#![allow(dead_code)] // each test file uses a part

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use autoclaim::admin::writer::{PolicyWriter, TableWrite, WriteError, WriteFuture};

/// An in-memory writer for tests: keeps what was written, and can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryWriter {
    writes: Mutex<Vec<TableWrite>>,
    failing: AtomicBool,
}

impl MemoryWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<TableWrite> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes later writes fail (as an unreachable cluster would) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

impl PolicyWriter for MemoryWriter {
    fn write(&self, record: TableWrite) -> WriteFuture<'_> {
        Box::pin(async move {
            if self.failing.load(Ordering::Relaxed) {
                return Err(WriteError::NotAcknowledged(
                    "the test writer is failing".into(),
                ));
            }
            self.writes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record);
            Ok(())
        })
    }
}
