//! An in-memory `PolicyWriter` for the tests that run the admin API without a broker: it keeps what
//! was written (the versions and their audit entries), and can be told to fail.
#![allow(dead_code)] // each test file uses a part

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use autoclaim::admin::writer::{
    PolicyWriter, RecordedChange, TableWrite, WriteError, WriteFuture, Written,
};
use autoclaim::wire::pb;

/// The offset of the first audit entry written: as if the audit topic already held this many
/// records, so that a test can place entries of "other instances" before and after the writer's.
pub const FIRST_AUDIT_OFFSET: i64 = 1_000;

/// An in-memory writer for tests: keeps what was written, and can be told to fail (then it keeps
/// nothing of the change, as a transaction that did not commit).
#[derive(Debug, Default)]
pub struct MemoryWriter {
    changes: Mutex<Vec<RecordedChange>>,
    failing: AtomicBool,
}

impl MemoryWriter {
    pub fn new() -> Self {
        Self::default()
    }

    fn changes(&self) -> Vec<RecordedChange> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every version written so far, in order.
    pub fn writes(&self) -> Vec<TableWrite> {
        self.changes().into_iter().map(|c| c.version).collect()
    }

    /// The audit entry of every change written so far, in order.
    pub fn audit_entries(&self) -> Vec<pb::AuditEntry> {
        self.changes().into_iter().map(|c| c.audit).collect()
    }

    /// Makes later writes fail (as an unreachable cluster would) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

impl PolicyWriter for MemoryWriter {
    fn write(&self, change: RecordedChange) -> WriteFuture<'_> {
        Box::pin(async move {
            if self.failing.load(Ordering::Relaxed) {
                return Err(WriteError::NotAcknowledged(
                    "the test writer is failing".into(),
                ));
            }
            let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            changes.push(change);
            Ok(Written {
                audit_offset: FIRST_AUDIT_OFFSET + changes.len() as i64 - 1,
            })
        })
    }
}
