//! `/v1/tenants/{tenant}/settings`: the tenant's autoclaim setting, read and changed.
use axum::extract::State;
use axum::Json;
use pbjson_types::Timestamp as WireTimestamp;
use serde::Serialize;

use super::change::{next_change_time, wire_problem};
use super::extract::{field, other_tenant, parse, Admitted, Change, ChangeBody};
use super::AdminState;
use crate::admin::problem::Problem;
use crate::admin::view::{settings_to_pb, AdminView, SettingsVersion};
use crate::admin::writer::TableWrite;
use crate::domain::settings::{Scope, TenantSettings};
use crate::domain::time::Timestamp;
use crate::pipeline::records::TableUpdate;
use crate::wire::convert::{to_wire_timestamp, SettingsRecord};
use crate::wire::pb;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    /// The newest settings version, in force or not (defaults when never set: autoclaim off).
    pub settings: pb::TenantSettings,
    /// PROPAGATING while the newest version waits for the propagation delay, else ACTIVE
    /// (autoclaim on) or OFF.
    pub status: &'static str,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub propagating_until: Option<WireTimestamp>,
    /// When the newest version takes (or took) effect: its changedAt plus the propagation delay.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub effective_at: Option<WireTimestamp>,
    /// The version in force now.
    pub in_force: pb::TenantSettings,
}

fn default_settings(tenant: &str) -> pb::TenantSettings {
    pb::TenantSettings {
        tenant_id: tenant.to_owned(),
        scope: pb::Scope::AllEnvironments as i32,
        ..Default::default()
    }
}

fn settings_view(view: &AdminView, tenant: &str, now: Timestamp) -> SettingsView {
    let latest = view.latest_settings(tenant);
    let status = view.settings_status(tenant, now);
    SettingsView {
        settings: latest
            .map(|v| settings_to_pb(tenant, v))
            .unwrap_or_else(|| default_settings(tenant)),
        status: status.name(),
        propagating_until: status.until().map(to_wire_timestamp),
        effective_at: latest
            .map(|v| to_wire_timestamp(v.changed_at.saturating_add(view.propagation_delay()))),
        in_force: view
            .settings_in_force(tenant, now)
            .map(|v| settings_to_pb(tenant, v))
            .unwrap_or_else(|| default_settings(tenant)),
    }
}

pub(super) async fn get_settings(
    State(s): State<AdminState>,
    Admitted { tenant, .. }: Admitted,
) -> Json<SettingsView> {
    let view = s.view().read();
    Json(settings_view(&view, &tenant, Timestamp::now()))
}

/// The body of a PUT: the settings wanted. What the server records (who, when) may not be sent.
pub(super) struct WantedSettings(TenantSettings);

impl ChangeBody for WantedSettings {
    const MEDIA_TYPES: &'static [&'static str] = &["application/json"];

    fn check(body: &[u8], tenant: &str) -> Result<Self, Problem> {
        let request: pb::TenantSettings = parse(body)?;
        let mut errors = Vec::from_iter(other_tenant(&request.tenant_id, tenant));
        if request.changed_at.is_some() {
            errors.push(field("changedAt", "is set by the server"));
        }
        if !request.changed_by.is_empty() {
            errors.push(field("changedBy", "is set by the server (the token's oid)"));
        }
        let scope = match pb::Scope::try_from(request.scope) {
            Ok(pb::Scope::Unspecified | pb::Scope::AllEnvironments) => Scope::AllEnvironments,
            Ok(pb::Scope::ManagedEnvironmentsOnly) => Scope::ManagedEnvironmentsOnly,
            Err(_) => {
                errors.push(field("scope", format!("unknown value {}", request.scope)));
                Scope::AllEnvironments
            }
        };
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        Ok(WantedSettings(TenantSettings {
            autoclaim_enabled: request.autoclaim_enabled,
            scope,
            low_seats_threshold: request.low_seats_threshold,
        }))
    }
}

pub(super) async fn put_settings(
    State(s): State<AdminState>,
    Change {
        principal,
        tenant,
        body: WantedSettings(wanted),
        ..
    }: Change<WantedSettings>,
) -> Result<Json<SettingsView>, Problem> {
    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let (before, changed_at) = {
        let view = s.view().read();
        let latest = view.latest_settings(&tenant);
        if latest.is_some_and(|l| l.settings == wanted) {
            // Nothing changes: no new version, and no new propagation delay.
            return Ok(Json(settings_view(&view, &tenant, now)));
        }
        let before = latest.map(|l| TableWrite::Settings(settings_to_pb(&tenant, l)));
        (before, next_change_time(now, latest.map(|l| l.changed_at)))
    };
    let record = settings_to_pb(
        &tenant,
        &SettingsVersion {
            settings: wanted.clone(),
            changed_at,
            changed_by: principal.object_id.clone(),
        },
    );
    let update = SettingsRecord::try_from(record.clone()).map_err(wire_problem)?;
    let view = s
        .commit(
            &principal,
            before,
            TableWrite::Settings(record),
            TableUpdate::Settings(update),
        )
        .await?;
    tracing::info!(
        tenant,
        changed_by = principal.object_id,
        autoclaim_enabled = wanted.autoclaim_enabled,
        scope = ?wanted.scope,
        "admin API: settings changed"
    );
    Ok(Json(settings_view(&view, &tenant, now)))
}
