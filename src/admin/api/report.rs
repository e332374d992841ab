//! `/v1/tenants/{tenant}/report`: the licences assigned over a window, per policy, as JSON or as a
//! CSV attachment.
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::extract::{Admitted, RouteQuery};
use super::AdminState;
use crate::admin::problem::Problem;
use crate::admin::report::{self, Report};
use crate::admin::view::AdminView;
use crate::domain::time::Timestamp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    days: Option<String>,
    format: Option<String>,
}

/// The report's query: the window and the format.
pub(super) struct ReportOptions {
    days: u32,
    csv: bool,
}

impl RouteQuery for ReportOptions {
    const NAMES: &'static [&'static str] = &["days", "format"];

    fn read(uri: &Uri) -> Result<Self, Problem> {
        let Query(query) = Query::<ReportQuery>::try_from_uri(uri)
            .map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))?;
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
        Ok(ReportOptions { days, csv })
    }
}

pub(super) async fn get_report(
    State(s): State<AdminState>,
    Admitted {
        tenant,
        query: ReportOptions { days, csv },
        ..
    }: Admitted<(), ReportOptions>,
) -> Response {
    let now = Timestamp::now();
    let report = tenant_report(&s.view().read(), &tenant, days, now);
    if csv {
        return csv_attachment(&report, &tenant, days);
    }
    Json(report).into_response()
}

/// The report of the window of `days` before `now`.
fn tenant_report(view: &AdminView, tenant: &str, days: u32, now: Timestamp) -> Report {
    let policies: Vec<(String, String)> = view
        .policies(tenant, now)
        .iter()
        .filter(|p| !p.latest.deleted)
        .map(|p| (p.latest.policy_id.clone(), p.latest.name.clone()))
        .collect();
    let rows = view.assignments_since(tenant, report::window_start(now, days));
    let mut report = report::build(tenant, days, now, rows, &policies);
    // Rows of a policy that still exists carry its current name.
    for p in &mut report.policies {
        if let Some(current) = view.latest_policy(tenant, &p.policy_id) {
            p.policy_name = current.name.clone();
        }
    }
    report
}

/// The report as a CSV file to save, named after the tenant (only its safe characters) and window.
fn csv_attachment(report: &Report, tenant: &str, days: u32) -> Response {
    let safe: String = tenant
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    let disposition = format!("attachment; filename=\"autoclaim-report-{safe}-{days}d.csv\"");
    let mut response = report::to_csv(report).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    response
}
