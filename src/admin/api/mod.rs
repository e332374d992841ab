//! The admin API's routes and handlers. Every request is authenticated (401) and authorized for the
//! tenant in its path (403) before anything else is looked at; every error is a problem details
//! body; changes are validated exactly as the processor will read them, written to the policies
//! topic, applied to the local view (so that a read right after a write sees it) and answered with
//! the time they take effect.
//!
//! - `extract`: the admission of a request and the checks of its body, as axum extractors: a
//!   handler starts from an admitted caller, a parsed and checked body, in one fixed order;
//! - `change`: how an accepted change is written and applied, and what a failed write answers;
//! - `settings`, `policies`, `report` and `audit`: the handlers of each resource; `claims`, the
//!   claims listing and a user's history.
mod audit;
mod change;
mod claims;
mod extract;
mod policies;
mod report;
mod settings;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use super::auth::Authenticator;
use super::problem::Problem;
use super::view::SharedView;
use super::writer::PolicyWriter;

pub use audit::{AuditList, DEFAULT_LIMIT as AUDIT_DEFAULT_LIMIT, MAX_LIMIT as AUDIT_MAX_LIMIT};
pub(in crate::admin) use extract::{check_query, NO_PARAMETERS};
pub use policies::{PolicyList, PolicyView, ProductSeats};
pub use settings::SettingsView;

/// Request bodies over this size are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Policies a tenant may have (not counting deleted ones), unless configured otherwise.
pub const DEFAULT_MAX_POLICIES: usize = 50;
/// The OpenAPI document of this API, served at /v1/openapi.json.
pub const OPENAPI: &str = include_str!("../../../openapi/admin.json");

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
            get(settings::get_settings).put(settings::put_settings),
        )
        .route(
            "/v1/tenants/{tenant}/policies",
            get(policies::list_policies).post(policies::create_policy),
        )
        .route(
            "/v1/tenants/{tenant}/policies/{policy}",
            get(policies::get_policy)
                .patch(policies::patch_policy)
                .delete(policies::delete_policy),
        )
        .route("/v1/tenants/{tenant}/report", get(report::get_report))
        .route("/v1/tenants/{tenant}/audit", get(audit::get_audit))
        .route("/v1/tenants/{tenant}/claims", get(claims::list_claims))
        .route(
            "/v1/tenants/{tenant}/users/{user}/history",
            get(claims::user_history),
        )
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
