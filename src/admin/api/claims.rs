//! `/v1/tenants/{tenant}/claims` (who waits for a licence, who was refused, what became of their
//! claims; filtered, as JSON or CSV) and `/v1/tenants/{tenant}/users/{user}/history` (what
//! autoclaim did for one user).
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::{Admitted, AfterTenant, RouteQuery};
use super::report::csv_attachment;
use super::AdminState;
use crate::admin::claim_rows::{self, ClaimList, ClaimListRow, Filter, History, Sort};
use crate::admin::claims::{RowStatus, MAX_DAYS};
use crate::admin::problem::Problem;
use crate::admin::report::window_start;
use crate::admin::view::AdminView;
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::ids;
use crate::domain::time::Timestamp;
use crate::wire::convert::{to_wire_timestamp, MAX_ID_LEN};

/// The window of the listing when none is asked for, in days.
pub const DEFAULT_DAYS: u32 = 30;

/// The listing's query, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimsQuery {
    /// Empty: every status.
    pub statuses: Vec<RowStatus>,
    pub product: Option<ProductId>,
    pub days: u32,
    pub sort: Sort,
    pub csv: bool,
}

impl RouteQuery for ClaimsQuery {
    const NAMES: &'static [&'static str] = &["status", "product", "days", "sort", "format"];

    fn read(uri: &Uri) -> Result<Self, Problem> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))?;
        ClaimsQuery::parse(&pairs)
    }
}

fn statuses_named() -> String {
    RowStatus::ALL.map(RowStatus::name).join(", ")
}

impl ClaimsQuery {
    /// Reads the parameters (their names already checked): 400 for a value the parameter cannot
    /// take or a parameter given twice (but `status`, which may be repeated), 422 for a product
    /// outside the catalog (which the OpenAPI document cannot list).
    pub fn parse(pairs: &[(String, String)]) -> Result<ClaimsQuery, Problem> {
        let once = |name: &str| -> Result<Option<&str>, Problem> {
            let mut values = pairs
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str());
            let first = values.next();
            match values.next() {
                Some(_) => Err(Problem::bad_request(format!(
                    "{name} is given more than once"
                ))),
                None => Ok(first),
            }
        };
        let days = match once("days")? {
            None => DEFAULT_DAYS,
            Some(d) => d
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=MAX_DAYS).contains(d))
                .ok_or_else(|| Problem::bad_request(format!("days must be 1 to {MAX_DAYS}")))?,
        };
        let sort = match once("sort")? {
            None | Some("lastSeen") => Sort::LastSeen,
            Some("firstSeen") => Sort::FirstSeen,
            Some(_) => return Err(Problem::bad_request("sort must be lastSeen or firstSeen")),
        };
        let csv = match once("format")? {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => return Err(Problem::bad_request("format must be json or csv")),
        };
        let statuses = parse_statuses(pairs)?;
        let product = match once("product")? {
            None => None,
            Some(key) => Some(Catalog::by_key(key).ok_or_else(|| {
                Problem::invalid_field(
                    "product",
                    format!(
                        "not a catalog product; the catalog has {}",
                        Catalog::keys().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?),
        };
        Ok(ClaimsQuery {
            statuses,
            product,
            days,
            sort,
            csv,
        })
    }
}

/// Every `status` parameter, each a comma-separated list; no status twice.
fn parse_statuses(pairs: &[(String, String)]) -> Result<Vec<RowStatus>, Problem> {
    let mut statuses = Vec::new();
    for (_, value) in pairs.iter().filter(|(n, _)| n == "status") {
        for name in value.split(',') {
            let status = RowStatus::parse(name).ok_or_else(|| {
                Problem::bad_request(format!(
                    "status must be one or more of {}, repeated or comma-separated",
                    statuses_named()
                ))
            })?;
            if !statuses.contains(&status) {
                statuses.push(status);
            }
        }
    }
    Ok(statuses)
}

/// The current name of each policy of the tenant the view knows.
fn policy_names<'a>(view: &'a AdminView, tenant: &'a str) -> impl Fn(&str) -> Option<String> + 'a {
    move |id| view.latest_policy(tenant, id).map(|p| p.name.clone())
}

/// The listing of the tenant's claims and failures for the query, as of `now`.
pub fn claim_list(
    view: &AdminView,
    tenant: &str,
    query: &ClaimsQuery,
    now: Timestamp,
) -> ClaimList {
    let from = window_start(now, query.days);
    let filter = Filter {
        statuses: query.statuses.clone(),
        product: query.product,
        since: from,
        sort: query.sort,
    };
    let names = policy_names(view, tenant);
    let rows = claim_rows::list(view.claim_tables(), tenant, &filter)
        .into_iter()
        .map(|row| ClaimListRow::of(row, &names))
        .collect();
    ClaimList {
        tenant_id: tenant.to_owned(),
        days: query.days,
        from: to_wire_timestamp(from),
        to: to_wire_timestamp(now),
        rows,
    }
}

pub(super) async fn list_claims(
    State(s): State<AdminState>,
    Admitted { tenant, query, .. }: Admitted<(), ClaimsQuery>,
) -> Response {
    let list = claim_list(&s.view().read(), &tenant, &query, Timestamp::now());
    if query.csv {
        let csv = claim_rows::to_csv(&list.rows);
        return csv_attachment(csv, "autoclaim-claims", &tenant, query.days);
    }
    Json(list).into_response()
}

/// The user of `/v1/tenants/{tenant}/users/{user}/history`.
pub(super) struct UserId(String);

impl AfterTenant for UserId {
    type Params = (String, String);
    fn split((tenant, user): (String, String)) -> (String, UserId) {
        (tenant, UserId(user))
    }
}

pub(super) async fn user_history(
    State(s): State<AdminState>,
    Admitted {
        tenant,
        path: UserId(user),
        ..
    }: Admitted<UserId>,
) -> Result<Json<History>, Problem> {
    // Characters, as the OpenAPI document counts; an id no user can have (over MAX_ID_LEN bytes,
    // a '/', control characters) simply has no history.
    if user.chars().count() > MAX_ID_LEN {
        return Err(Problem::bad_request(format!(
            "a user id is at most {MAX_ID_LEN} characters"
        )));
    }
    let user = ids::canonical(user);
    let view = s.view().read();
    let names = policy_names(&view, &tenant);
    let assignments = view.assignments_since(&tenant, Timestamp::MIN);
    Ok(Json(claim_rows::history(
        &tenant,
        &user,
        assignments,
        view.claim_tables(),
        &names,
    )))
}
