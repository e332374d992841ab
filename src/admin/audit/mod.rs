//! The audit log of administration: every change made through the admin API is also an
//! [`pb::AuditEntry`] on the audit topic (who, what before and after, when made, when in force),
//! written in the same transaction as the change. The policies topic is compacted, so its history
//! goes; the audit topic is never compacted, and answers "who changed this policy" for as long as
//! its retention keeps it.
//!
//! This module builds entries from a change; [`log`] keeps the newest of each tenant in memory
//! and pages through them, newest first.
pub mod log;

use std::time::Duration;

use crate::admin::auth::Principal;
use crate::admin::writer::TableWrite;
use crate::domain::ids;
use crate::wire::convert::{self, to_wire_timestamp, MAX_ID_LEN};
use crate::wire::{pb, WireError};
pub use log::{AuditLog, AuditPage, AuditQuery, Cursor, MAX_ENTRIES_PER_TENANT};

/// The entry of a change: `after` is the version written, `before` the newest version it
/// replaces (none for a new policy or a tenant's first settings).
pub fn entry(
    actor: &Principal,
    before: Option<&TableWrite>,
    after: &TableWrite,
    propagation_delay: Duration,
) -> pb::AuditEntry {
    let (tenant_id, policy_id, made_at) = match after {
        TableWrite::Settings(s) => (&s.tenant_id, String::new(), s.changed_at),
        TableWrite::Policy(p) => (&p.tenant_id, p.policy_id.clone(), p.changed_at),
    };
    let in_force_at = convert::timestamp("changedAt", made_at)
        .ok()
        .map(|t| to_wire_timestamp(t.saturating_add(propagation_delay)));
    pb::AuditEntry {
        entry_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant_id.clone(),
        actor: Some(pb::AuditActor {
            object_id: actor.object_id.clone(),
            display_name: actor.display_name.clone().unwrap_or_default(),
        }),
        action: action(before, after) as i32,
        policy_id,
        before: before.map(version),
        after: Some(version(after)),
        made_at,
        in_force_at,
    }
}

fn version(write: &TableWrite) -> pb::AuditedVersion {
    use pb::audited_version::Version;
    pb::AuditedVersion {
        version: Some(match write {
            TableWrite::Settings(s) => Version::Settings(s.clone()),
            TableWrite::Policy(p) => Version::Policy(p.clone()),
        }),
    }
}

/// What the change did. Turning a policy on or off is told apart only when nothing else changed
/// with it; `before` and `after` show any change in full.
fn action(before: Option<&TableWrite>, after: &TableWrite) -> pb::AuditAction {
    use pb::AuditAction as A;
    let after = match after {
        TableWrite::Settings(_) => return A::SettingsChanged,
        TableWrite::Policy(p) => p,
    };
    let before = match before {
        Some(TableWrite::Policy(p)) => p,
        _ => return A::PolicyCreated,
    };
    if after.deleted {
        return A::PolicyDeleted;
    }
    let only_enabled_changed = pb::Policy {
        enabled: after.enabled,
        changed_at: after.changed_at,
        changed_by: after.changed_by.clone(),
        ..before.clone()
    } == *after;
    match (only_enabled_changed, before.enabled != after.enabled) {
        (true, true) if after.enabled => A::PolicyEnabled,
        (true, true) => A::PolicyDisabled,
        _ => A::PolicyUpdated,
    }
}

/// An entry read from the audit topic, checked far enough to be kept and paged: a tenant, an id and
/// a time. Its tenant is taken in canonical form, as the API names tenants.
pub fn checked(mut entry: pb::AuditEntry) -> Result<pb::AuditEntry, WireError> {
    if entry.tenant_id.is_empty() {
        return Err(WireError::field("tenantId", "is required"));
    }
    if entry.entry_id.is_empty() || entry.entry_id.len() > MAX_ID_LEN {
        return Err(WireError::field(
            "entryId",
            format!("must be 1 to {MAX_ID_LEN} bytes"),
        ));
    }
    convert::timestamp("madeAt", entry.made_at)?;
    entry.tenant_id = ids::canonical(entry.tenant_id);
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use pb::audited_version::Version;

    const DELAY: Duration = Duration::from_secs(7200);

    fn admin() -> Principal {
        Principal {
            tenant_id: "contoso".into(),
            object_id: "oid-1".into(),
            display_name: Some("Megan Bowen".into()),
            roles: vec![],
        }
    }

    fn at(millis: i64) -> Option<pbjson_types::Timestamp> {
        Some(to_wire_timestamp(Timestamp::from_millis(millis)))
    }

    fn policy(enabled: bool, changed: i64) -> pb::Policy {
        pb::Policy {
            tenant_id: "contoso".into(),
            policy_id: "p-1".into(),
            name: "Flows".into(),
            product: "power_automate_per_user".into(),
            enabled,
            created_at: at(1_000),
            changed_at: at(changed),
            changed_by: "oid-0".into(),
            ..Default::default()
        }
    }

    fn policy_in(version: &Option<pb::AuditedVersion>) -> Option<&pb::Policy> {
        match version.as_ref()?.version.as_ref()? {
            Version::Policy(p) => Some(p),
            Version::Settings(_) => None,
        }
    }

    #[test]
    fn a_created_policy_has_no_before_and_comes_into_force_after_the_delay() {
        let after = TableWrite::Policy(policy(true, 5_000));
        let e = entry(&admin(), None, &after, DELAY);
        assert_eq!(e.action(), pb::AuditAction::PolicyCreated);
        assert_eq!(e.tenant_id, "contoso");
        assert_eq!(e.policy_id, "p-1");
        assert!(e.before.is_none());
        assert_eq!(policy_in(&e.after), Some(&policy(true, 5_000)));
        assert_eq!(e.made_at, at(5_000));
        assert_eq!(e.in_force_at, at(5_000 + 7_200_000));
        let actor = e.actor.unwrap();
        assert_eq!(
            (actor.object_id.as_str(), actor.display_name.as_str()),
            ("oid-1", "Megan Bowen")
        );
        assert!(uuid::Uuid::parse_str(&e.entry_id).is_ok(), "{}", e.entry_id);
    }

    #[test]
    fn an_update_keeps_both_versions_and_says_what_kind_of_change_it_was() {
        let before = TableWrite::Policy(policy(true, 5_000));
        let renamed = pb::Policy {
            name: "Premium flows".into(),
            ..policy(true, 6_000)
        };
        let e = entry(
            &admin(),
            Some(&before),
            &TableWrite::Policy(renamed.clone()),
            DELAY,
        );
        assert_eq!(e.action(), pb::AuditAction::PolicyUpdated);
        assert_eq!(policy_in(&e.before), Some(&policy(true, 5_000)));
        assert_eq!(policy_in(&e.after), Some(&renamed));

        let off = TableWrite::Policy(policy(false, 6_000));
        let e = entry(&admin(), Some(&before), &off, DELAY);
        assert_eq!(e.action(), pb::AuditAction::PolicyDisabled);
        let on = entry(
            &admin(),
            Some(&off),
            &TableWrite::Policy(policy(true, 7_000)),
            DELAY,
        );
        assert_eq!(on.action(), pb::AuditAction::PolicyEnabled);

        // Turned off and renamed at once: an update, whose versions show both.
        let both = pb::Policy {
            enabled: false,
            ..renamed
        };
        let e = entry(&admin(), Some(&before), &TableWrite::Policy(both), DELAY);
        assert_eq!(e.action(), pb::AuditAction::PolicyUpdated);
    }

    #[test]
    fn a_deletion_shows_the_policy_it_deleted() {
        let before = TableWrite::Policy(policy(true, 5_000));
        let deleted = pb::Policy {
            deleted: true,
            ..policy(true, 6_000)
        };
        let e = entry(
            &admin(),
            Some(&before),
            &TableWrite::Policy(deleted.clone()),
            DELAY,
        );
        assert_eq!(e.action(), pb::AuditAction::PolicyDeleted);
        assert_eq!(policy_in(&e.before), Some(&policy(true, 5_000)));
        assert_eq!(policy_in(&e.after), Some(&deleted));
    }

    #[test]
    fn a_settings_change_names_no_policy_and_keeps_the_settings_it_replaced() {
        let settings = |enabled, changed| pb::TenantSettings {
            tenant_id: "contoso".into(),
            autoclaim_enabled: enabled,
            scope: pb::Scope::AllEnvironments as i32,
            changed_at: at(changed),
            changed_by: "oid-1".into(),
            ..Default::default()
        };
        let first = entry(
            &admin(),
            None,
            &TableWrite::Settings(settings(true, 1_000)),
            Duration::ZERO,
        );
        assert_eq!(first.action(), pb::AuditAction::SettingsChanged);
        assert!(first.before.is_none() && first.policy_id.is_empty());
        assert_eq!(
            first.in_force_at, first.made_at,
            "no delay: in force at once"
        );
        let before = TableWrite::Settings(settings(true, 1_000));
        let e = entry(
            &admin(),
            Some(&before),
            &TableWrite::Settings(settings(false, 2_000)),
            DELAY,
        );
        let before = match e.before.and_then(|v| v.version) {
            Some(Version::Settings(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(before.autoclaim_enabled);
        assert!(matches!(
            e.after.and_then(|v| v.version),
            Some(Version::Settings(s)) if !s.autoclaim_enabled
        ));
    }

    #[test]
    fn an_entry_read_back_needs_a_tenant_an_id_and_a_time() {
        let good = entry(
            &admin(),
            None,
            &TableWrite::Policy(policy(true, 5_000)),
            DELAY,
        );
        assert!(checked(good.clone()).is_ok());
        let upper = pb::AuditEntry {
            tenant_id: "0F8FAD5B-D9CB-469F-A165-70867728950E".into(),
            ..good.clone()
        };
        assert_eq!(
            checked(upper).unwrap().tenant_id,
            "0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        for broken in [
            pb::AuditEntry {
                tenant_id: String::new(),
                ..good.clone()
            },
            pb::AuditEntry {
                entry_id: String::new(),
                ..good.clone()
            },
            pb::AuditEntry {
                made_at: None,
                ..good.clone()
            },
        ] {
            assert!(checked(broken).is_err());
        }
    }
}
