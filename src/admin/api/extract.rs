//! The admission of a tenant's request and the checks of its body, as axum extractors: a handler
//! takes an [`Admitted`] request (or a [`Change`], which is one with a checked body) and starts
//! from a caller who may manage the tenant.
//!
//! The checks run in one fixed order, so that nothing is revealed to a caller refused and a
//! client learns of its mistakes in the same order on every route:
//! 1. the token (401; 503 while the JWKS is not available);
//! 2. the path (400), then the tenant (403 for another tenant or without the Global Administrator
//!    role), then the tenant id and the token's oid as ids (400, 401);
//! 3. the names of the query parameters (400), then whether the view is loaded (503);
//! 4. the values of the query parameters (400);
//! 5. the body: its size (413), reading it (400), its content type (415), its JSON (400), then its
//!    fields (422, every broken rule at once).
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri};
use serde::de::DeserializeOwned;

use super::{AdminState, MAX_BODY_BYTES};
use crate::admin::auth::{authorize, Principal};
use crate::admin::problem::{FieldError, Problem};
use crate::domain::ids;
use crate::wire::convert::MAX_ID_LEN;

/// The query parameters of the routes that take none.
pub(in crate::admin) const NO_PARAMETERS: &[&str] = &[];

/// A request of a tenant's route whose caller may manage the tenant: authenticated, a Global
/// Administrator of the tenant in the path, with only the query parameters the route takes, and
/// the view loaded.
pub(super) struct Admitted<P = (), Q = NoQuery> {
    pub principal: Principal,
    /// The tenant in the path, in its canonical form.
    pub tenant: String,
    /// What the path holds after the tenant.
    pub path: P,
    pub query: Q,
}

/// An admitted request that changes something, with its body parsed and checked.
pub(super) struct Change<B, P = ()> {
    pub principal: Principal,
    pub tenant: String,
    pub path: P,
    pub body: B,
}

/// What a tenant route's path holds after the tenant: `()` for nothing.
pub(super) trait AfterTenant: Sized + Send {
    /// The path parameters, tenant first, as axum reads them.
    type Params: DeserializeOwned + Send;
    fn split(params: Self::Params) -> (String, Self);
}

impl AfterTenant for () {
    type Params = String;
    fn split(tenant: String) -> (String, ()) {
        (tenant, ())
    }
}

/// The policy id of `/v1/tenants/{tenant}/policies/{policy}`.
pub(super) struct PolicyId(pub String);

impl AfterTenant for PolicyId {
    type Params = (String, String);
    fn split((tenant, policy): (String, String)) -> (String, PolicyId) {
        (tenant, PolicyId(policy))
    }
}

/// The query parameters a route takes: their names, any other being refused at admission, and
/// their values, read once the caller is admitted.
pub(super) trait RouteQuery: Sized + Send {
    const NAMES: &'static [&'static str];
    fn read(uri: &Uri) -> Result<Self, Problem>;
}

/// The query of the routes that take no parameters.
pub(super) struct NoQuery;

impl RouteQuery for NoQuery {
    const NAMES: &'static [&'static str] = NO_PARAMETERS;
    fn read(_: &Uri) -> Result<Self, Problem> {
        Ok(NoQuery)
    }
}

/// The body of a change: the content types it is accepted in, and its checks.
pub(super) trait ChangeBody: Sized + Send {
    const MEDIA_TYPES: &'static [&'static str];
    /// Parses the body (400 for what is not the JSON expected) and checks its fields for the
    /// admitted tenant (422).
    fn check(body: &[u8], tenant: &str) -> Result<Self, Problem>;
}

impl<P: AfterTenant, Q: RouteQuery> FromRequestParts<AdminState> for Admitted<P, Q> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Problem> {
        // Read first, refused only after the token: a caller refused learns nothing of the path.
        let params = Path::<P::Params>::from_request_parts(parts, state).await;
        let principal = state
            .authenticator()
            .authenticate(parts.headers.get(AUTHORIZATION))
            .await?;
        let Path(params) = params.map_err(path_problem)?;
        let (tenant, path) = P::split(params);
        let tenant = ids::canonical(tenant);
        authorize(&principal, &tenant)?;
        check_ids(&tenant, &principal)?;
        check_query(&parts.uri, Q::NAMES)?;
        check_loaded(state)?;
        let query = Q::read(&parts.uri)?;
        Ok(Admitted {
            principal,
            tenant,
            path,
            query,
        })
    }
}

impl<B: ChangeBody, P: AfterTenant> FromRequest<AdminState> for Change<B, P> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AdminState) -> Result<Self, Problem> {
        let (mut parts, body) = request.into_parts();
        let Admitted {
            principal,
            tenant,
            path,
            query: NoQuery,
        } = Admitted::<P>::from_request_parts(&mut parts, state).await?;
        let content_type = parts.headers.get(CONTENT_TYPE).cloned();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state).await;
        let bytes = json_body(content_type.as_ref(), bytes, B::MEDIA_TYPES)?;
        let body = B::check(&bytes, &tenant)?;
        Ok(Change {
            principal,
            tenant,
            path,
            body,
        })
    }
}

fn path_problem(e: PathRejection) -> Problem {
    Problem::bad_request(format!("invalid path: {}", e.body_text()))
}

fn valid_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && !value.chars().any(|c| c.is_control() || c == '/')
}

/// The tenant id (from the path) and the caller's object id (from the token) must be ids the
/// topics can carry.
fn check_ids(tenant: &str, principal: &Principal) -> Result<(), Problem> {
    if !valid_id(tenant) {
        return Err(Problem::bad_request(format!(
            "a tenant id is 1 to {MAX_ID_LEN} bytes without '/' or control characters"
        )));
    }
    if !valid_id(&principal.object_id) {
        return Err(Problem::invalid_token("the token's oid claim is malformed"));
    }
    Ok(())
}

/// Until the topics are read to their end, listings could be stale and a name check could miss a
/// policy: 503.
fn check_loaded(state: &AdminState) -> Result<(), Problem> {
    if state.view().read().is_loaded() {
        return Ok(());
    }
    Err(Problem::unavailable(
        "the admin API is still reading its topics (policies, inventory, assignments, audit, claims, failures)",
        5,
    ))
}

/// Refuses a query parameter the route does not take, so that a misspelt or invented option
/// (`?dryRun=true` on a write) is never silently ignored.
pub(in crate::admin) fn check_query(uri: &Uri, allowed: &[&str]) -> Result<(), Problem> {
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

/// The body, once read whole (413 over the limit) and sent as one of the `accepted` types (415).
fn json_body(
    content_type: Option<&HeaderValue>,
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
    let essence = content_type.and_then(|v| v.to_str().ok()).map(|v| {
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

/// Decodes a JSON body (400 if it is not the JSON expected).
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
}

pub(super) fn field(field: &str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// A body may name its tenant, but only the one in the path.
pub(super) fn other_tenant(named: &str, tenant: &str) -> Option<FieldError> {
    (!named.is_empty() && !ids::same(named, tenant))
        .then(|| field("tenantId", "must be the tenant in the path, or left out"))
}
