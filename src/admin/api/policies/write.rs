//! Creating, changing and deleting a policy. Each change is made under the write gate: the name
//! and limit checks and the write they allow cannot interleave with another write of this
//! instance.
use std::sync::RwLockWriteGuard;

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::body::{backup_errors, NewPolicy, PolicyPatch};
use super::one_policy;
use crate::admin::api::change::{next_change_time, wire_problem};
use crate::admin::api::extract::{Admitted, Change, PolicyId};
use crate::admin::api::AdminState;
use crate::admin::auth::Principal;
use crate::admin::problem::Problem;
use crate::admin::view::{policy_to_pb, AdminView};
use crate::admin::writer::TableWrite;
use crate::domain::policy::Policy;
use crate::domain::time::Timestamp;
use crate::pipeline::records::TableUpdate;
use crate::wire::convert::{to_wire_timestamp, PolicyRecord};
use crate::wire::pb;

pub(in crate::admin::api) async fn create_policy(
    State(s): State<AdminState>,
    Change {
        principal,
        tenant,
        body: new_policy,
        ..
    }: Change<NewPolicy>,
) -> Result<Response, Problem> {
    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let version = new_policy.first_version(&tenant, now, &principal.object_id);
    let record = PolicyRecord::try_from(version).map_err(wire_problem)?;
    check_room(&s, &tenant, &record.policy.name)?;
    let id = record.policy.policy_id.clone();
    let view = commit_policy(&s, &principal, None, record).await?;
    tracing::info!(
        tenant,
        policy_id = id,
        changed_by = principal.object_id,
        "admin API: policy created"
    );
    let mut response = one_policy(&view, &tenant, &id, now)?;
    *response.status_mut() = StatusCode::CREATED;
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tenants/{tenant}/policies/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// Writes a policy version in its canonical wire form (with its audit entry: who, and the version
/// `before` it), then applies it to the view.
async fn commit_policy<'s>(
    s: &'s AdminState,
    principal: &Principal,
    before: Option<pb::Policy>,
    record: PolicyRecord,
) -> Result<RwLockWriteGuard<'s, AdminView>, Problem> {
    let write = TableWrite::Policy(policy_to_pb(&record.tenant_id, &record.policy));
    let before = before.map(TableWrite::Policy);
    s.commit(principal, before, write, TableUpdate::Policy(record))
        .await
}

/// A new policy needs a name no other policy of the tenant has, and room under the tenant's
/// limit (409 otherwise).
fn check_room(s: &AdminState, tenant: &str, name: &str) -> Result<(), Problem> {
    let view = s.view().read();
    check_name_unique(&view, tenant, name, None)?;
    if view.live_policies(tenant).count() >= s.0.max_policies {
        return Err(Problem::conflict(
            "too-many-policies",
            "Too many policies",
            format!(
                "a tenant may have at most {} policies; delete one first",
                s.0.max_policies
            ),
        ));
    }
    Ok(())
}

/// Names are unique in a tenant among the newest versions of its policies that are not deleted,
/// compared without case.
fn check_name_unique(
    view: &AdminView,
    tenant: &str,
    name: &str,
    except: Option<&str>,
) -> Result<(), Problem> {
    let wanted = name.to_lowercase();
    let taken = view
        .live_policies(tenant)
        .filter(|p| Some(p.policy_id.as_str()) != except)
        .any(|p| p.name.trim().to_lowercase() == wanted);
    if taken {
        return Err(Problem::conflict(
            "name-taken",
            "Name already used",
            format!("another policy of this tenant is named {name:?}"),
        ));
    }
    Ok(())
}

/// The newest version of a policy that is not deleted (404 otherwise).
fn live_policy<'a>(view: &'a AdminView, tenant: &str, id: &str) -> Result<&'a Policy, Problem> {
    view.latest_policy(tenant, id)
        .filter(|p| !p.deleted)
        .ok_or_else(|| Problem::not_found("no such policy in this tenant"))
}

pub(in crate::admin::api) async fn patch_policy(
    State(s): State<AdminState>,
    Change {
        principal,
        tenant,
        path: PolicyId(id),
        body: patch,
    }: Change<PolicyPatch, PolicyId>,
) -> Result<Response, Problem> {
    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let (before, record) = {
        let view = s.view().read();
        match patched_version(&view, &tenant, &id, &patch, &principal.object_id, now)? {
            // Nothing changes: no new version, and no new propagation delay.
            None => return one_policy(&view, &tenant, &id, now),
            Some(record) => {
                check_name_unique(&view, &tenant, &record.policy.name, Some(&id))?;
                let before = live_policy(&view, &tenant, &id)?;
                (policy_to_pb(&tenant, before), record)
            }
        }
    };
    let view = commit_policy(&s, &principal, Some(before), record).await?;
    tracing::info!(tenant, policy_id = id, changed_by = principal.object_id, fields = ?patch.fields, "admin API: policy changed");
    one_policy(&view, &tenant, &id, now)
}

/// The policy's newest version with the patch applied, checked as a new policy is (404, 422);
/// `None` when the patch changes nothing.
fn patched_version(
    view: &AdminView,
    tenant: &str,
    id: &str,
    patch: &PolicyPatch,
    changed_by: &str,
    now: Timestamp,
) -> Result<Option<PolicyRecord>, Problem> {
    let latest = live_policy(view, tenant, id)?;
    let mut merged = policy_to_pb(tenant, latest);
    patch.apply_to(&mut merged)?;
    merged.changed_at = Some(to_wire_timestamp(next_change_time(
        now,
        Some(latest.changed_at),
    )));
    merged.changed_by = changed_by.to_owned();
    let errors = backup_errors(&merged);
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let record = PolicyRecord::try_from(merged).map_err(wire_problem)?;
    let same = record.policy.name == latest.name
        && record.policy.chain == latest.chain
        && record.policy.enabled == latest.enabled;
    Ok((!same).then_some(record))
}

pub(in crate::admin::api) async fn delete_policy(
    State(s): State<AdminState>,
    Admitted {
        principal,
        tenant,
        path: PolicyId(id),
        ..
    }: Admitted<PolicyId>,
) -> Result<Response, Problem> {
    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let (before, record) = {
        let view = s.view().read();
        let latest = live_policy(&view, &tenant, &id)?;
        let mut deleted = latest.clone();
        deleted.deleted = true;
        deleted.changed_at = next_change_time(now, Some(latest.changed_at));
        deleted.changed_by = principal.object_id.clone();
        let record = PolicyRecord {
            tenant_id: tenant.clone(),
            policy: deleted,
        };
        (policy_to_pb(&tenant, latest), record)
    };
    let view = commit_policy(&s, &principal, Some(before), record).await?;
    tracing::info!(
        tenant,
        policy_id = id,
        changed_by = principal.object_id,
        "admin API: policy deleted"
    );
    // With no propagation delay the deletion is in force at once: the policy is gone, which is
    // success (204), not "no such policy".
    if view.policy_state(&tenant, &id, now).is_none() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    one_policy(&view, &tenant, &id, now)
}
