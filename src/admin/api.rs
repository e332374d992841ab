//! The admin API's routes and handlers. Every request is authenticated (401) and authorized for the
//! tenant in its path (403) before anything else is looked at; every error is a problem details
//! body; changes are validated exactly as the processor will read them, written to the policies
//! topic, applied to the local view (so that a read right after a write sees it) and answered with
//! the time they take effect.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use pbjson_types::Timestamp as WireTimestamp;
use serde::{Deserialize, Serialize};

use super::auth::{authorize, Authenticator, Principal};
use super::feature::{feature, Feature};
use super::problem::{FieldError, Problem};
use super::report;
use super::view::{
    policy_to_pb, settings_to_pb, AdminView, PolicyState, SettingsVersion, SharedView, Status,
};
use super::writer::{PolicyWriter, TableWrite};
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::ids;
use crate::domain::policy::PolicyError;
use crate::domain::settings::{Scope, TenantSettings};
use crate::domain::time::Timestamp;
use crate::pipeline::records::TableUpdate;
use crate::wire::convert::{
    to_wire_timestamp, PolicyRecord, SettingsRecord, MAX_ID_LEN, MAX_POLICY_NAME_CHARS,
};
use crate::wire::{pb, WireError};

/// Request bodies over this size are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Policies a tenant may have (not counting deleted ones), unless configured otherwise.
pub const DEFAULT_MAX_POLICIES: usize = 50;
/// The OpenAPI document of this API, served at /v1/openapi.json.
pub const OPENAPI: &str = include_str!("../../openapi/admin.json");

struct Inner {
    view: SharedView,
    writer: Arc<dyn PolicyWriter>,
    auth: Authenticator,
    max_policies: usize,
    /// Writes of this instance go one at a time, so that a name check and the write it allows
    /// cannot interleave with another write.
    write_gate: tokio::sync::Mutex<()>,
}

/// What the handlers share: the view, the writer and the authenticator.
#[derive(Clone)]
pub struct AdminState(Arc<Inner>);

impl AdminState {
    pub fn new(
        view: SharedView,
        writer: Arc<dyn PolicyWriter>,
        auth: Authenticator,
        max_policies: usize,
    ) -> Self {
        AdminState(Arc::new(Inner {
            view,
            writer,
            auth,
            max_policies,
            write_gate: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn view(&self) -> &SharedView {
        &self.0.view
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.0.auth
    }
}

/// The routes, under /v1. Every path under /v1 answers with problem details, even unknown ones,
/// without taking over the rest of the server (no global fallback).
pub fn router(state: AdminState) -> Router {
    let not_found = || async {
        Problem::not_found("no such endpoint; the API is described at /v1/openapi.json")
    };
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/catalog", get(super::catalog::get_catalog))
        .route(
            "/v1/tenants/{tenant}/settings",
            get(get_settings).put(put_settings),
        )
        .route(
            "/v1/tenants/{tenant}/policies",
            get(list_policies).post(create_policy),
        )
        .route(
            "/v1/tenants/{tenant}/policies/{policy}",
            get(get_policy).patch(patch_policy).delete(delete_policy),
        )
        .route("/v1/tenants/{tenant}/report", get(get_report))
        .route("/v1", any(not_found))
        .route("/v1/", any(not_found))
        .route("/v1/{*rest}", any(not_found))
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn openapi(uri: Uri) -> Result<Response, Problem> {
    check_query(&uri, NO_PARAMETERS)?;
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response())
}

// ------------------------------------------------------------------ admission

fn path_problem(e: PathRejection) -> Problem {
    Problem::bad_request(format!("invalid path: {}", e.body_text()))
}

/// The query parameters of the routes that take none.
pub(super) const NO_PARAMETERS: &[&str] = &[];
/// The report's query parameters.
const REPORT_PARAMETERS: &[&str] = &["days", "format"];

/// Refuses a query parameter the route does not take, so that a misspelt or invented option
/// (`?dryRun=true` on a write) is never silently ignored.
pub(super) fn check_query(uri: &Uri, allowed: &[&str]) -> Result<(), Problem> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))?;
    let Some((unknown, _)) = pairs
        .iter()
        .find(|(name, _)| !allowed.contains(&name.as_str()))
    else {
        return Ok(());
    };
    let takes = if allowed.is_empty() {
        "this operation takes no query parameters".to_owned()
    } else {
        format!("this operation takes {}", allowed.join(", "))
    };
    Err(Problem::bad_request(format!(
        "unknown query parameter {:?}: {takes}",
        unknown.chars().take(64).collect::<String>()
    )))
}

fn valid_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && !value.chars().any(|c| c.is_control() || c == '/')
}

impl AdminState {
    /// Authenticates (401, or 503 while the JWKS is not available), reads the tenant from the path
    /// (400), authorizes (403), refuses query parameters the route does not take (400), and checks
    /// that the view is loaded (503). In that order, so that nothing is revealed to a caller
    /// refused.
    async fn admit(
        &self,
        headers: &HeaderMap,
        tenant: Result<String, PathRejection>,
        (uri, parameters): (&Uri, &[&str]),
    ) -> Result<(Principal, String), Problem> {
        let principal = self.0.auth.authenticate(headers.get(AUTHORIZATION)).await?;
        let tenant = ids::canonical(tenant.map_err(path_problem)?);
        authorize(&principal, &tenant)?;
        if !valid_id(&tenant) {
            return Err(Problem::bad_request(format!(
                "a tenant id is 1 to {MAX_ID_LEN} bytes without '/' or control characters"
            )));
        }
        if !valid_id(&principal.object_id) {
            return Err(Problem::invalid_token("the token's oid claim is malformed"));
        }
        check_query(uri, parameters)?;
        if !self.0.view.read().is_loaded() {
            return Err(Problem::unavailable(
                "the admin API is still reading the policies, inventory and assignments topics",
                5,
            ));
        }
        Ok((principal, tenant))
    }
}

fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    accepted: &[&str],
) -> Result<Bytes, Problem> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::too_large(MAX_BODY_BYTES)
        } else {
            Problem::bad_request(format!("cannot read the body: {}", e.body_text()))
        }
    })?;
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match essence {
        Some(e) if accepted.contains(&e.as_str()) => Ok(body),
        _ => Err(Problem::unsupported_media_type(&accepted.join(" or "))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
}

fn write_failed(e: super::writer::WriteError) -> Problem {
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
fn next_change_time(now: Timestamp, latest: Option<Timestamp>) -> Timestamp {
    match latest {
        Some(t) if t >= now => Timestamp::from_millis(t.as_millis().saturating_add(1)),
        _ => now,
    }
}

fn wire_problem(e: WireError) -> Problem {
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

fn field(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

// ------------------------------------------------------------------ settings

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

async fn get_settings(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let (_, tenant) = s
        .admit(&headers, tenant.map(|Path(t)| t), (&uri, NO_PARAMETERS))
        .await?;
    let view = s.0.view.read();
    Ok(Json(settings_view(&view, &tenant, Timestamp::now())).into_response())
}

async fn put_settings(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    tenant: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (principal, tenant) = s
        .admit(&headers, tenant.map(|Path(t)| t), (&uri, NO_PARAMETERS))
        .await?;
    let body = json_body(&headers, body, &["application/json"])?;
    let request: pb::TenantSettings = parse(&body)?;
    let mut errors = Vec::new();
    if !request.tenant_id.is_empty() && !ids::same(&request.tenant_id, &tenant) {
        errors.push(field(
            "tenantId",
            "must be the tenant in the path, or left out",
        ));
    }
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
    let wanted = TenantSettings {
        autoclaim_enabled: request.autoclaim_enabled,
        scope,
    };

    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let changed_at = {
        let view = s.0.view.read();
        let latest = view.latest_settings(&tenant);
        if latest.is_some_and(|l| l.settings == wanted) {
            // Nothing changes: no new version, and no new propagation delay.
            return Ok(Json(settings_view(&view, &tenant, now)).into_response());
        }
        next_change_time(now, latest.map(|l| l.changed_at))
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
    s.0.writer
        .write(TableWrite::Settings(record))
        .await
        .map_err(write_failed)?;
    let mut view = s.0.view.write();
    view.apply(TableUpdate::Settings(update));
    tracing::info!(
        tenant,
        changed_by = principal.object_id,
        autoclaim_enabled = wanted.autoclaim_enabled,
        ?scope,
        "admin API: settings changed"
    );
    Ok(Json(settings_view(&view, &tenant, now)).into_response())
}

// ------------------------------------------------------------------ policies

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductSeats {
    pub product: &'static str,
    pub display_name: &'static str,
    pub sku_part_number: &'static str,
    /// Inventory available minus this processor's assignments since the inventory snapshot.
    pub available_licenses: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// The newest version of the policy, in force or not.
    pub policy: pb::Policy,
    /// PROPAGATING while the newest version waits for the propagation delay, else ACTIVE or OFF.
    pub status: &'static str,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub propagating_until: Option<WireTimestamp>,
    /// When the newest version takes (or took) effect: its changedAt plus the propagation delay.
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub effective_at: WireTimestamp,
    /// The app the admin center shows for the policy's primary product.
    pub autoclaim_app: &'static str,
    /// Display name of the primary product.
    pub assigned_product: &'static str,
    /// Licences of the primary product still available.
    pub available_licenses: u64,
    /// The primary product then the backups, in order, with the licences available of each.
    pub products: Vec<ProductSeats>,
    /// Whether the policy assigns licences now: ACTIVE, and the tenant's autoclaim setting in force
    /// is on.
    pub assigning_licenses: bool,
    /// Set when the tenant's autoclaim setting keeps (or will keep) the policy from assigning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyList {
    pub tenant_id: String,
    /// The tenant's autoclaim setting in force is on.
    pub autoclaim_on: bool,
    /// Set when autoclaim is off, or a pending setting turns it on or off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    pub policies: Vec<PolicyView>,
}

fn policy_view(
    view: &AdminView,
    tenant: &str,
    state: &PolicyState<'_>,
    feature: &Feature,
) -> PolicyView {
    let primary = Catalog::product(state.latest.primary());
    let seats = |p: ProductId| {
        let product = Catalog::product(p);
        ProductSeats {
            product: product.key,
            display_name: product.display_name,
            sku_part_number: product.sku_part_number,
            available_licenses: view.available(tenant, p),
        }
    };
    PolicyView {
        policy: policy_to_pb(tenant, state.latest),
        status: state.status.name(),
        propagating_until: state.status.until().map(to_wire_timestamp),
        effective_at: to_wire_timestamp(state.effective_at),
        autoclaim_app: primary.autoclaim_app,
        assigned_product: primary.display_name,
        available_licenses: view.available(tenant, state.latest.primary()),
        products: state
            .latest
            .chain
            .iter()
            .map(|l| seats(l.product))
            .collect(),
        assigning_licenses: feature.on && state.status == Status::Active,
        notice: feature.notice.clone(),
    }
}

fn one_policy(
    view: &AdminView,
    tenant: &str,
    id: &str,
    now: Timestamp,
) -> Result<Response, Problem> {
    let state = view
        .policy_state(tenant, id, now)
        .ok_or_else(|| Problem::not_found("no such policy in this tenant"))?;
    let feature = feature(view, tenant, now);
    Ok(Json(policy_view(view, tenant, &state, &feature)).into_response())
}

async fn list_policies(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    tenant: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let (_, tenant) = s
        .admit(&headers, tenant.map(|Path(t)| t), (&uri, NO_PARAMETERS))
        .await?;
    let view = s.0.view.read();
    let now = Timestamp::now();
    let feature = feature(&view, &tenant, now);
    let policies = view
        .policies(&tenant, now)
        .iter()
        .map(|state| policy_view(&view, &tenant, state, &feature))
        .collect();
    Ok(Json(PolicyList {
        tenant_id: tenant,
        autoclaim_on: feature.on,
        notice: feature.notice,
        policies,
    })
    .into_response())
}

/// A name as stored: trimmed, 1 to 64 characters, no control characters.
fn policy_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(field(
            "name",
            format!("is required (1 to {MAX_POLICY_NAME_CHARS} characters)"),
        ));
    }
    if name.chars().count() > MAX_POLICY_NAME_CHARS {
        return Err(field(
            "name",
            format!("is over {MAX_POLICY_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(field("name", "contains control characters"));
    }
    Ok(name.to_owned())
}

/// Backups must not repeat the primary (the catalog and the chain rules check the rest).
fn backup_errors(policy: &pb::Policy) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !policy.product.is_empty() && policy.backup_products.contains(&policy.product) {
        errors.push(field(
            "backupProducts",
            format!(
                "{} is the primary product; a backup must be another product",
                policy.product
            ),
        ));
    }
    errors
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

async fn create_policy(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    tenant: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (principal, tenant) = s
        .admit(&headers, tenant.map(|Path(t)| t), (&uri, NO_PARAMETERS))
        .await?;
    let body = json_body(&headers, body, &["application/json"])?;
    let request: pb::Policy = parse(&body)?;
    let mut errors = Vec::new();
    if !request.tenant_id.is_empty() && !ids::same(&request.tenant_id, &tenant) {
        errors.push(field(
            "tenantId",
            "must be the tenant in the path, or left out",
        ));
    }
    for (name, set) in [
        ("policyId", !request.policy_id.is_empty()),
        ("createdAt", request.created_at.is_some()),
        ("changedAt", request.changed_at.is_some()),
        ("changedBy", !request.changed_by.is_empty()),
    ] {
        if set {
            errors.push(field(name, "is set by the server"));
        }
    }
    if request.deleted {
        errors.push(field("deleted", "a new policy cannot be deleted"));
    }
    let name = policy_name(&request.name).map_err(|e| errors.push(e)).ok();
    errors.extend(backup_errors(&request));
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let name = name.expect("no error, so a name");

    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let candidate = pb::Policy {
        tenant_id: tenant.clone(),
        policy_id: uuid::Uuid::new_v4().to_string(),
        name,
        product: request.product,
        backup_products: request.backup_products,
        excluded_apps: request.excluded_apps,
        enabled: request.enabled,
        deleted: false,
        created_at: Some(to_wire_timestamp(now)),
        changed_at: Some(to_wire_timestamp(now)),
        changed_by: principal.object_id.clone(),
    };
    let record = PolicyRecord::try_from(candidate).map_err(wire_problem)?;
    {
        let view = s.0.view.read();
        check_name_unique(&view, &tenant, &record.policy.name, None)?;
        let count = view.live_policies(&tenant).count();
        if count >= s.0.max_policies {
            return Err(Problem::conflict(
                "too-many-policies",
                "Too many policies",
                format!(
                    "a tenant may have at most {} policies; delete one first",
                    s.0.max_policies
                ),
            ));
        }
    }
    let canonical = policy_to_pb(&tenant, &record.policy);
    let id = record.policy.policy_id.clone();
    s.0.writer
        .write(TableWrite::Policy(canonical))
        .await
        .map_err(write_failed)?;
    let mut view = s.0.view.write();
    view.apply(TableUpdate::Policy(record));
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

fn policy_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> (Result<String, PathRejection>, String) {
    match path {
        Ok(Path((tenant, policy))) => (Ok(tenant), policy),
        Err(e) => (Err(e), String::new()),
    }
}

async fn get_policy(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let (tenant, id) = policy_path(path);
    let (_, tenant) = s.admit(&headers, tenant, (&uri, NO_PARAMETERS)).await?;
    let view = s.0.view.read();
    one_policy(&view, &tenant, &id, Timestamp::now())
}

/// The fields a PATCH may change, by their JSON names (pbjson also reads the proto names).
const PATCHABLE: [(&str, &str); 5] = [
    ("name", "name"),
    ("product", "product"),
    ("backupProducts", "backup_products"),
    ("excludedApps", "excluded_apps"),
    ("enabled", "enabled"),
];
const SERVER_OWNED: [(&str, &str); 6] = [
    ("tenantId", "tenant_id"),
    ("policyId", "policy_id"),
    ("createdAt", "created_at"),
    ("changedAt", "changed_at"),
    ("changedBy", "changed_by"),
    ("deleted", "deleted"),
];

async fn patch_policy(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (tenant, id) = policy_path(path);
    let (principal, tenant) = s.admit(&headers, tenant, (&uri, NO_PARAMETERS)).await?;
    let body = json_body(
        &headers,
        body,
        &["application/json", "application/merge-patch+json"],
    )?;
    let value: serde_json::Value = parse(&body)?;
    let serde_json::Value::Object(object) = &value else {
        return Err(Problem::bad_request(
            "the body must be a JSON object of the fields to change",
        ));
    };
    let mut errors = Vec::new();
    let mut present = Vec::new();
    for (key, v) in object {
        if let Some((json, _)) = PATCHABLE.iter().find(|(a, b)| key == a || key == b) {
            if v.is_null() {
                return Err(Problem::bad_request(format!(
                    "{json} is null: send the new value, or leave the field out"
                )));
            }
            present.push(*json);
        } else if let Some((json, _)) = SERVER_OWNED.iter().find(|(a, b)| key == a || key == b) {
            let why = if *json == "deleted" {
                "cannot be changed with PATCH: DELETE the policy"
            } else {
                "is set by the server"
            };
            errors.push(field(json, why));
        } else {
            return Err(Problem::bad_request(format!(
                "unknown field {:?}: a PATCH may change {}",
                key.chars().take(64).collect::<String>(),
                PATCHABLE.map(|(a, _)| a).join(", ")
            )));
        }
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    if present.is_empty() {
        return Err(Problem::bad_request(format!(
            "the body changes nothing: send some of {}",
            PATCHABLE.map(|(a, _)| a).join(", ")
        )));
    }
    // Decoded from the bytes, not from `value`: a JSON object keeps only the last of repeated
    // keys, and a repeated key is refused, as in POST and PUT.
    let patch: pb::Policy = parse(&body)?;

    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let (merged, latest) = {
        let view = s.0.view.read();
        let latest = view
            .latest_policy(&tenant, &id)
            .filter(|p| !p.deleted)
            .ok_or_else(|| Problem::not_found("no such policy in this tenant"))?;
        let mut merged = policy_to_pb(&tenant, latest);
        for name in &present {
            match *name {
                "name" => {
                    merged.name = policy_name(&patch.name).map_err(|e| Problem::invalid(vec![e]))?
                }
                "product" => merged.product = patch.product.clone(),
                "backupProducts" => merged.backup_products = patch.backup_products.clone(),
                "excludedApps" => merged.excluded_apps = patch.excluded_apps.clone(),
                "enabled" => merged.enabled = patch.enabled,
                _ => unreachable!("only patchable fields are present"),
            }
        }
        merged.changed_at = Some(to_wire_timestamp(next_change_time(
            now,
            Some(latest.changed_at),
        )));
        merged.changed_by = principal.object_id.clone();
        (merged, latest.clone())
    };
    let errors = backup_errors(&merged);
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let record = PolicyRecord::try_from(merged).map_err(wire_problem)?;
    let same = record.policy.name == latest.name
        && record.policy.chain == latest.chain
        && record.policy.enabled == latest.enabled;
    if same {
        // Nothing changes: no new version, and no new propagation delay.
        let view = s.0.view.read();
        return one_policy(&view, &tenant, &id, now);
    }
    {
        let view = s.0.view.read();
        check_name_unique(&view, &tenant, &record.policy.name, Some(&id))?;
    }
    s.0.writer
        .write(TableWrite::Policy(policy_to_pb(&tenant, &record.policy)))
        .await
        .map_err(write_failed)?;
    let mut view = s.0.view.write();
    view.apply(TableUpdate::Policy(record));
    tracing::info!(tenant, policy_id = id, changed_by = principal.object_id, fields = ?present, "admin API: policy changed");
    one_policy(&view, &tenant, &id, now)
}

async fn delete_policy(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, Problem> {
    let (tenant, id) = policy_path(path);
    let (principal, tenant) = s.admit(&headers, tenant, (&uri, NO_PARAMETERS)).await?;
    let _gate = s.0.write_gate.lock().await;
    let now = Timestamp::now();
    let record = {
        let view = s.0.view.read();
        let latest = view
            .latest_policy(&tenant, &id)
            .filter(|p| !p.deleted)
            .ok_or_else(|| Problem::not_found("no such policy in this tenant"))?;
        let mut deleted = latest.clone();
        deleted.deleted = true;
        deleted.changed_at = next_change_time(now, Some(latest.changed_at));
        deleted.changed_by = principal.object_id.clone();
        PolicyRecord {
            tenant_id: tenant.clone(),
            policy: deleted,
        }
    };
    s.0.writer
        .write(TableWrite::Policy(policy_to_pb(&tenant, &record.policy)))
        .await
        .map_err(write_failed)?;
    let mut view = s.0.view.write();
    view.apply(TableUpdate::Policy(record));
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

// ------------------------------------------------------------------ report

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    days: Option<String>,
    format: Option<String>,
}

async fn get_report(
    State(s): State<AdminState>,
    headers: HeaderMap,
    uri: Uri,
    tenant: Result<Path<String>, PathRejection>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let (_, tenant) = s
        .admit(&headers, tenant.map(|Path(t)| t), (&uri, REPORT_PARAMETERS))
        .await?;
    let Query(query) =
        query.map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))?;
    let days = match query.days.as_deref() {
        None => report::DEFAULT_DAYS,
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| report::WINDOWS.contains(d))
            .ok_or_else(|| Problem::bad_request("days must be 1, 7, 30 or 90"))?,
    };
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(Problem::bad_request("format must be json or csv")),
    };
    let now = Timestamp::now();
    let report = {
        let view = s.0.view.read();
        let policies: Vec<(String, String)> = view
            .policies(&tenant, now)
            .iter()
            .filter(|p| !p.latest.deleted)
            .map(|p| (p.latest.policy_id.clone(), p.latest.name.clone()))
            .collect();
        let rows = view.assignments_since(&tenant, report::window_start(now, days));
        let mut report = report::build(&tenant, days, now, rows, &policies);
        // Rows of a policy that still exists carry its current name.
        for p in &mut report.policies {
            if let Some(current) = view.latest_policy(&tenant, &p.policy_id) {
                p.policy_name = current.name.clone();
            }
        }
        report
    };
    if csv {
        let safe: String = tenant
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        let disposition = format!("attachment; filename=\"autoclaim-report-{safe}-{days}d.csv\"");
        let mut response = report::to_csv(&report).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            headers.insert(CONTENT_DISPOSITION, v);
        }
        return Ok(response);
    }
    Ok(Json(report).into_response())
}
