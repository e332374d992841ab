//! Where the admin API's changes go: the new version to the policies topic, keyed `<tenant>/settings`
//! or `<tenant>/policy/<policyId>`, and its audit entry to the audit topic, keyed by tenant, in one
//! Kafka transaction ([`kafka`]). Behind a trait so that tests can run the API without a broker
//! (their in-memory writer is in tests/writer_support).
mod kafka;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use thiserror::Error;

use crate::wire::{codec, pb, Format};
pub use kafka::{admin_transactional_id, KafkaPolicyWriter};

/// How long a write may wait for the brokers' acknowledgement before it is reported as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One record for the policies topic.
#[derive(Clone, Debug, PartialEq)]
pub enum TableWrite {
    Settings(pb::TenantSettings),
    Policy(pb::Policy),
}

impl TableWrite {
    /// The record's key: the entity it is a version of.
    pub fn key(&self) -> String {
        match self {
            TableWrite::Settings(s) => format!("{}/settings", s.tenant_id),
            TableWrite::Policy(p) => format!("{}/policy/{}", p.tenant_id, p.policy_id),
        }
    }

    /// The record's value in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match self {
            TableWrite::Settings(s) => codec::encode(s, format),
            TableWrite::Policy(p) => codec::encode(p, format),
        }
    }
}

/// A change as it is recorded: the new version and the audit entry that says who made it and what
/// it replaced. The two are written together or not at all.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedChange {
    pub version: TableWrite,
    pub audit: pb::AuditEntry,
}

/// Where a change was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The audit entry's offset on the audit topic (one partition): its place in the log.
    pub audit_offset: i64,
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("the policies topic did not acknowledge the change: {0}")]
    NotAcknowledged(String),
}

/// What `PolicyWriter::write` returns: resolves once the records are stored or the write failed.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<Written, WriteError>> + Send + 'a>>;

/// Writes one change (its version and its audit entry, atomically) and resolves once it is
/// durably stored (or has failed, and then neither record is).
pub trait PolicyWriter: Send + Sync {
    fn write(&self, change: RecordedChange) -> WriteFuture<'_>;
}
