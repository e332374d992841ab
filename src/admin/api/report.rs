//! `/v1/tenants/{tenant}/report`: the licences assigned over a window, per policy, the failures
//! per policy and reason and the claims pending per product, as JSON or as a CSV attachment (one
//! table of them: `table`).
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::extract::{Admitted, RouteQuery};
use super::AdminState;
use crate::admin::problem::Problem;
use crate::admin::report::{self, CsvTable, Report};
use crate::admin::view::AdminView;
use crate::domain::time::Timestamp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    days: Option<String>,
    format: Option<String>,
    table: Option<String>,
}

/// The report's query: the window, the format and the CSV's table.
pub(super) struct ReportOptions {
    days: u32,
    csv: bool,
    table: CsvTable,
}

impl RouteQuery for ReportOptions {
    const NAMES: &'static [&'static str] = &["days", "format", "table"];

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
        // Accepted with JSON too, which holds every table.
        let table = match query.table.as_deref() {
            None => CsvTable::Assignments,
            Some(t) => CsvTable::parse(t).ok_or_else(|| {
                Problem::bad_request("table must be assignments, failures or pending")
            })?,
        };
        Ok(ReportOptions { days, csv, table })
    }
}

pub(super) async fn get_report(
    State(s): State<AdminState>,
    Admitted {
        tenant,
        query: ReportOptions { days, csv, table },
        ..
    }: Admitted<(), ReportOptions>,
) -> Response {
    let now = Timestamp::now();
    let report = tenant_report(&s.view().read(), &tenant, days, now);
    if csv {
        let stem = match table {
            CsvTable::Assignments => "autoclaim-report",
            CsvTable::Failures => "autoclaim-failures",
            CsvTable::Pending => "autoclaim-pending",
        };
        return csv_attachment(report::to_csv_table(&report, table), stem, &tenant, days);
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
    let names = |id: &str| view.latest_policy(tenant, id).map(|p| p.name.clone());
    report::add_claims(&mut report, view.claim_tables(), now, &names);
    report
}

/// CSV as a file to save, named `<stem>-<tenant>-<days>d.csv` (only the tenant's safe characters).
pub(super) fn csv_attachment(csv: String, stem: &str, tenant: &str, days: u32) -> Response {
    let safe: String = tenant
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    let disposition = format!("attachment; filename=\"{stem}-{safe}-{days}d.csv\"");
    let mut response = csv.into_response();
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
