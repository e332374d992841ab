//! `/v1/tenants/{tenant}/audit`: the tenant's audit log, newest first, a page at a time: who
//! changed what, the versions before and after, when it was made and when it comes into force.
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::{Admitted, RouteQuery};
use super::AdminState;
use crate::admin::audit::{AuditQuery, Cursor};
use crate::admin::problem::Problem;
use crate::domain::time::Timestamp;
use crate::wire::convert::MAX_ID_LEN;
use crate::wire::{pb, timestamp};

/// Entries on a page unless the client asks for another number.
pub const DEFAULT_LIMIT: usize = 50;
/// The most entries on a page.
pub const MAX_LIMIT: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<String>,
    cursor: Option<String>,
    #[serde(rename = "policyId")]
    policy_id: Option<String>,
    since: Option<String>,
}

/// The audit query of a request.
pub(super) struct AuditOptions(AuditQuery);

impl RouteQuery for AuditOptions {
    const NAMES: &'static [&'static str] = &["limit", "cursor", "policyId", "since"];

    fn read(uri: &Uri) -> Result<Self, Problem> {
        let Query(params) = Query::<AuditParams>::try_from_uri(uri)
            .map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))?;
        Ok(AuditOptions(AuditQuery {
            limit: limit(params.limit.as_deref())?,
            after: params.cursor.as_deref().map(cursor).transpose()?,
            policy_id: params.policy_id.map(policy_id).transpose()?,
            since: params.since.as_deref().map(since).transpose()?,
        }))
    }
}

fn limit(value: Option<&str>) -> Result<usize, Problem> {
    let Some(value) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ))
        })
}

fn cursor(value: &str) -> Result<Cursor, Problem> {
    Cursor::decode(value).ok_or_else(|| {
        Problem::bad_request("cursor is not one this API gave: pass the previous page's next as is")
    })
}

/// A filter: any id of a policy's length is taken (one nobody changed matches nothing).
fn policy_id(value: String) -> Result<String, Problem> {
    if value.is_empty() || value.chars().count() > MAX_ID_LEN {
        return Err(Problem::bad_request(format!(
            "policyId is 1 to {MAX_ID_LEN} characters"
        )));
    }
    Ok(value)
}

fn since(value: &str) -> Result<Timestamp, Problem> {
    // RFC 3339 allows a lower-case t and z; the topics' timestamps are written upper-case.
    // Any time RFC 3339 can write is taken, 1970 or not (before it, every entry is after it).
    timestamp::parse_rfc3339(&value.to_ascii_uppercase())
        .ok()
        .map(|t| Timestamp::from_millis(t.seconds * 1000 + i64::from(t.nanos / 1_000_000)))
        .ok_or_else(|| {
            Problem::bad_request("since must be an RFC 3339 time, e.g. 2026-03-02T08:00:00Z")
        })
}

/// A page of the audit log.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditList<'a> {
    pub tenant_id: &'a str,
    /// Newest first.
    pub entries: Vec<&'a pb::AuditEntry>,
    /// The cursor of the next (older) page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

pub(super) async fn get_audit(
    State(s): State<AdminState>,
    Admitted {
        tenant,
        query: AuditOptions(query),
        ..
    }: Admitted<(), AuditOptions>,
) -> Response {
    let view = s.view().read();
    let page = view.audit().page(&tenant, &query);
    let list = AuditList {
        tenant_id: &tenant,
        entries: page.entries,
        next: page.next.as_ref().map(Cursor::encode),
    };
    // Rendered under the read lock: the page borrows the view's entries.
    Json(list).into_response()
}
