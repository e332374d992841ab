//! How an accepted change is recorded: written to the policies topic with its audit entry (one
//! transaction), then both applied to the local view so that a read right after the write sees
//! them. A change is checked by the same conversion the processor reads the topic with, so that
//! the API never writes what the processor refuses.
use std::sync::RwLockWriteGuard;

use super::AdminState;
use crate::admin::audit;
use crate::admin::auth::Principal;
use crate::admin::problem::Problem;
use crate::admin::view::AdminView;
use crate::admin::writer::{RecordedChange, TableWrite, WriteError};
use crate::domain::policy::PolicyError;
use crate::domain::time::Timestamp;
use crate::pipeline::records::TableUpdate;
use crate::wire::WireError;

impl AdminState {
    /// Writes a change made by `principal`, with its audit entry (503 if the write is not
    /// confirmed: then neither is recorded), then applies both to the view; the view is returned
    /// locked, so that the answer shows the change and nothing newer. `before` is the newest
    /// version the change replaces.
    pub(super) async fn commit(
        &self,
        principal: &Principal,
        before: Option<TableWrite>,
        write: TableWrite,
        update: TableUpdate,
    ) -> Result<RwLockWriteGuard<'_, AdminView>, Problem> {
        let delay = self.0.view.read().propagation_delay();
        let entry = audit::entry(principal, before.as_ref(), &write, delay);
        let change = RecordedChange {
            version: write,
            audit: entry.clone(),
        };
        let written = self.0.writer.write(change).await.map_err(write_failed)?;
        let mut view = self.0.view.write();
        view.apply(update);
        if let Err(e) = view.apply_audit(entry, written.audit_offset) {
            // Built here from a version that was just checked: not expected, and not worth
            // failing a change the topics already hold.
            tracing::warn!(error = %e, "admin API: the audit entry of a change is malformed");
        }
        Ok(view)
    }
}

fn write_failed(e: WriteError) -> Problem {
    tracing::warn!(error = %e, "admin API: a change could not be written");
    Problem::unavailable(
        format!(
            "{e}. The change may or may not have been recorded: read it back before trying again"
        ),
        5,
    )
}

/// The change time of a new version: now, but always after the entity's newest version, so that a
/// new version never replaces one that is already recorded.
pub(super) fn next_change_time(now: Timestamp, latest: Option<Timestamp>) -> Timestamp {
    match latest {
        Some(t) if t >= now => Timestamp::from_millis(t.as_millis().saturating_add(1)),
        _ => now,
    }
}

/// A version the processor would refuse, as a 422 on the field at fault.
pub(super) fn wire_problem(e: WireError) -> Problem {
    let (field, problem) = match e {
        WireError::Field { field, problem } => (field.to_owned(), problem),
        WireError::Policy(p) => {
            let field = match &p {
                PolicyError::TooManyBackups(_) | PolicyError::RepeatedProduct(_) => {
                    "backupProducts"
                }
                PolicyError::ExclusionForOtherProduct(_) => "excludedApps.product",
                PolicyError::UnknownPlan { .. } | PolicyError::ExcludesGrantingPlan { .. } => {
                    "excludedApps.planIds"
                }
            };
            (field.to_owned(), p.to_string())
        }
        other => ("body".to_owned(), other.to_string()),
    };
    Problem::invalid_field(field, problem)
}
