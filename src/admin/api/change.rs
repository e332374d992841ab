//! How an accepted change is recorded: written to the policies topic, then applied to the local
//! view so that a read right after the write sees it. A change is checked by the same conversion
//! the processor reads the topic with, so that the API never writes what the processor refuses.
use std::sync::RwLockWriteGuard;

use super::AdminState;
use crate::admin::problem::Problem;
use crate::admin::view::AdminView;
use crate::admin::writer::{TableWrite, WriteError};
use crate::domain::policy::PolicyError;
use crate::domain::time::Timestamp;
use crate::pipeline::records::TableUpdate;
use crate::wire::WireError;

impl AdminState {
    /// Writes a change (503 if the write is not confirmed), then applies it to the view; the view
    /// is returned locked, so that the answer shows the change and nothing newer.
    pub(super) async fn commit(
        &self,
        write: TableWrite,
        update: TableUpdate,
    ) -> Result<RwLockWriteGuard<'_, AdminView>, Problem> {
        self.0.writer.write(write).await.map_err(write_failed)?;
        let mut view = self.0.view.write();
        view.apply(update);
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
