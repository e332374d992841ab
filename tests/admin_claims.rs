//! The claims listing, a user's history and the report's failures and pending claims, through the
//! admin API in process: a view filled by hand from a table of facts, an in-memory writer, no
//! broker. Filters, sorting, CSV, tenants kept apart, bad parameters as problem details, and a
//! property test of the listing's query parameters against a model of the facts.
mod writer_support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use autoclaim::admin::api::{self, AdminState};
use autoclaim::admin::auth::{self, AuthSettings, Authenticator, GLOBAL_ADMINISTRATOR};
use autoclaim::admin::view::{AdminView, SharedView};
use autoclaim::admin::writer::PolicyWriter;
use autoclaim::domain::time::Timestamp;
use autoclaim::pipeline::security::Secret;
use autoclaim::wire::convert::to_wire_timestamp;
use autoclaim::wire::pb;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use writer_support::MemoryWriter;

const SECRET: &str = "claims-test-secret-0123456789-abcdefghij";
const ISSUER: &str = "https://login.example.test/{tenantid}/v2.0";
const AUDIENCE: &str = "api://autoclaim-admin";
const TENANT: &str = "tenant-a";
const OTHER: &str = "tenant-b";
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const PER_USER: &str = "power_automate_per_user";
const PREMIUM: &str = "power_automate_premium";

// ------------------------------------------------------------------ facts

/// One row the listing may show, as the model of the test knows it. Times are offsets before the
/// fixture's now, never within minutes of a whole day, so that a window edge never falls between
/// the fixture's clock and the server's.
#[derive(Clone, Copy, Debug)]
struct Fact {
    user: &'static str,
    status: &'static str,
    product: &'static str,
    policy: &'static str,
    first: i64,
    last: i64,
    /// A claim's last change (for a failure: its last seen).
    changed: i64,
}

const FACTS: [Fact; 8] = [
    Fact {
        user: "u-wait-1",
        status: "pending",
        product: PREMIUM,
        policy: "p-rpa",
        first: 5 * DAY + 10 * MIN,
        last: HOUR,
        changed: HOUR,
    },
    Fact {
        user: "u-wait-2",
        status: "pending",
        product: PREMIUM,
        policy: "p-rpa",
        first: 2 * DAY + 10 * MIN,
        last: 2 * DAY + 10 * MIN,
        changed: 2 * DAY + 10 * MIN,
    },
    Fact {
        user: "u-wait-3",
        status: "pending",
        product: PER_USER,
        policy: "p-flows",
        first: DAY + 10 * MIN,
        last: DAY + 10 * MIN,
        changed: DAY + 10 * MIN,
    },
    Fact {
        user: "u-got",
        status: "fulfilled",
        product: PER_USER,
        policy: "p-flows",
        first: 3 * DAY + 10 * MIN,
        last: 3 * DAY + 10 * MIN,
        changed: 2 * HOUR,
    },
    Fact {
        user: "u-ended",
        status: "ended_not_eligible",
        product: PREMIUM,
        policy: "p-rpa",
        first: 10 * DAY + 10 * MIN,
        last: 10 * DAY + 10 * MIN,
        changed: 9 * DAY + 10 * MIN,
    },
    Fact {
        user: "u-old",
        status: "expired",
        product: PREMIUM,
        policy: "p-rpa",
        first: 80 * DAY + 10 * MIN,
        last: 80 * DAY + 10 * MIN,
        changed: 50 * DAY + 10 * MIN,
    },
    Fact {
        user: "u-plan",
        status: "failed",
        product: PREMIUM,
        policy: "p-rpa",
        first: 6 * HOUR,
        last: 3 * HOUR,
        changed: 3 * HOUR,
    },
    Fact {
        user: "u-loc",
        status: "failed",
        product: "",
        policy: "",
        first: 4 * HOUR,
        last: 4 * HOUR,
        changed: 4 * HOUR,
    },
];

fn ts(millis: i64) -> Option<pbjson_types::Timestamp> {
    Some(to_wire_timestamp(Timestamp::from_millis(millis)))
}

fn claim_status(name: &str) -> pb::ClaimStatus {
    match name {
        "pending" => pb::ClaimStatus::Pending,
        "fulfilled" => pb::ClaimStatus::Fulfilled,
        "ended_not_eligible" => pb::ClaimStatus::EndedNotEligible,
        "expired" => pb::ClaimStatus::Expired,
        other => panic!("not a claim status: {other}"),
    }
}

fn claim(tenant: &str, f: &Fact, now: i64) -> pb::LicenseClaim {
    let status = claim_status(f.status);
    pb::LicenseClaim {
        tenant_id: tenant.into(),
        user_id: f.user.into(),
        needs: vec!["premium_cloud_flows".into()],
        status: status as i32,
        trigger: Some(pb::ActivityEvent {
            event_id: format!("first-{}", f.user),
            kind: pb::ActivityKind::CloudFlowSaved as i32,
            ..Default::default()
        }),
        first_seen: ts(now - f.first),
        last_seen: ts(now - f.last),
        events: 1,
        product: f.product.into(),
        policy_id: f.policy.into(),
        changed_at: ts(now - f.changed),
        assignment_id: if status == pb::ClaimStatus::Fulfilled {
            format!("a-{}", f.user)
        } else {
            String::new()
        },
        ended_outcome: if status == pb::ClaimStatus::EndedNotEligible {
            pb::Outcome::NotEligible as i32
        } else {
            0
        },
        ended_reason: if status == pb::ClaimStatus::EndedNotEligible {
            pb::Reason::AccountDisabled as i32
        } else {
            0
        },
        expires_at: ts(now - f.last + 30 * DAY),
    }
}

fn failure(
    tenant: &str,
    user: &str,
    product: &str,
    policy: &str,
    reason: pb::Reason,
    at: i64,
) -> pb::AutoclaimFailure {
    pb::AutoclaimFailure {
        tenant_id: tenant.into(),
        user_id: user.into(),
        product: product.into(),
        policy_id: policy.into(),
        trigger_event_id: format!("e-{user}-{at}"),
        trigger_kind: pb::ActivityKind::CloudFlowSaved as i32,
        reason: reason as i32,
        occurred_at: ts(at),
        ..Default::default()
    }
}

fn policy(id: &str, name: &str, product: &str, at: i64) -> pb::Policy {
    pb::Policy {
        tenant_id: TENANT.into(),
        policy_id: id.into(),
        name: name.into(),
        product: product.into(),
        enabled: true,
        created_at: ts(at),
        changed_at: ts(at),
        changed_by: "seed".into(),
        ..Default::default()
    }
}

/// Tenant A: the facts, the refusals for want of a seat behind its claims (which show as the
/// claims, not as rows of their own), u-got's assignment; tenant B: a claim and a failure that must
/// never show to A.
fn fill(view: &mut AdminView, now: i64) {
    view.apply_policy(policy("p-flows", "Flows", PER_USER, now - 100 * DAY))
        .unwrap();
    view.apply_policy(policy("p-rpa", "RPA", PREMIUM, now - 99 * DAY))
        .unwrap();
    let tables = view.claim_tables_mut();
    for f in FACTS.iter().filter(|f| f.status != "failed") {
        tables.apply_claim(claim(TENANT, f, now)).unwrap();
    }
    let no_seat = pb::Reason::NoLicensesAvailable;
    for at in [now - 5 * DAY - 10 * MIN, now - 3 * DAY, now - HOUR] {
        tables
            .apply_failure(failure(TENANT, "u-wait-1", PREMIUM, "p-rpa", no_seat, at))
            .unwrap();
    }
    tables
        .apply_failure(failure(
            TENANT,
            "u-got",
            PER_USER,
            "p-flows",
            no_seat,
            now - 3 * DAY - 10 * MIN,
        ))
        .unwrap();
    let disabled = pb::Reason::GrantingPlanDisabled;
    for at in [now - 6 * HOUR, now - 3 * HOUR] {
        tables
            .apply_failure(failure(TENANT, "u-plan", PREMIUM, "p-rpa", disabled, at))
            .unwrap();
    }
    tables
        .apply_failure(failure(
            TENANT,
            "u-loc",
            "",
            "",
            pb::Reason::UsageLocationMissing,
            now - 4 * HOUR,
        ))
        .unwrap();
    tables
        .apply_claim(claim(
            OTHER,
            &Fact {
                user: "u-b-secret",
                ..FACTS[0]
            },
            now,
        ))
        .unwrap();
    tables
        .apply_failure(failure(
            OTHER,
            "u-b-secret",
            PREMIUM,
            "p-b",
            disabled,
            now - HOUR,
        ))
        .unwrap();
    view.apply_assignment(pb::LicenseAssignment {
        assignment_id: "a-u-got".into(),
        tenant_id: TENANT.into(),
        user_id: "u-got".into(),
        product: PER_USER.into(),
        policy_id: "p-flows".into(),
        policy_name: "Flows then".into(),
        trigger_event_id: "first-u-got".into(),
        trigger_kind: pb::ActivityKind::CloudFlowSaved as i32,
        occurred_at: ts(now - 2 * HOUR),
        decided_at: ts(now - 2 * HOUR),
        pending_since: ts(now - 3 * DAY - 10 * MIN),
        ..Default::default()
    })
    .unwrap();
}

struct App {
    router: Router,
    now: i64,
}

fn app_loaded(loaded: bool) -> App {
    let now = Timestamp::now().as_millis();
    let mut view = AdminView::new(Duration::from_secs(3600));
    fill(&mut view, now);
    if loaded {
        view.mark_loaded();
    }
    let auth = Authenticator::new(AuthSettings {
        jwks: None,
        hs256_secret: Some(Secret::new(SECRET)),
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
    })
    .unwrap();
    let writer = Arc::new(MemoryWriter::new()) as Arc<dyn PolicyWriter>;
    let state = AdminState::new(SharedView::new(view), writer, auth, 50);
    App {
        router: api::router(state),
        now,
    }
}

fn app() -> App {
    app_loaded(true)
}

// ------------------------------------------------------------------ requests

fn token_with(tid: &str, roles: &[&str]) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": ISSUER.replace("{tenantid}", tid),
        "aud": AUDIENCE,
        "tid": tid,
        "oid": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "wids": roles,
        "nbf": now - 10,
        "exp": now + 3600,
    });
    auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap()
}

fn ga() -> String {
    token_with(TENANT, &[GLOBAL_ADMINISTRATOR])
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn is_problem(&self) -> bool {
        self.header(header::CONTENT_TYPE) == "application/problem+json"
            && self.json()["status"] == self.status.as_u16()
    }
}

async fn get(router: &Router, uri: &str, token: Option<&str>) -> Reply {
    let mut request = Request::builder().method("GET").uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn claims_uri(query: &str) -> String {
    format!("/v1/tenants/{TENANT}/claims{query}")
}

fn history_uri(user: &str) -> String {
    format!("/v1/tenants/{TENANT}/users/{user}/history")
}

fn users(body: &Value) -> Vec<String> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userId"].as_str().unwrap().to_owned())
        .collect()
}

fn millis(value: &Value) -> i64 {
    let wire: pbjson_types::Timestamp = serde_json::from_value(value.clone()).unwrap();
    wire.seconds * 1000 + i64::from(wire.nanos / 1_000_000)
}

// ------------------------------------------------------------------ the listing

#[tokio::test]
async fn the_listing_shows_claims_and_failures_that_leave_none_newest_first() {
    let app = app();
    let reply = get(&app.router, &claims_uri(""), Some(&ga())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    let body = reply.json();
    assert_eq!(body["days"], 30);
    // Refusals for want of a seat show as their claims (u-wait-1 and u-got once each), u-old is
    // outside 30 days, and nothing of tenant B shows.
    assert_eq!(
        users(&body),
        ["u-wait-1", "u-plan", "u-loc", "u-wait-3", "u-wait-2", "u-got", "u-ended"]
    );
    assert!(!reply.text().contains("u-b-secret"));
    let rows = body["rows"].as_array().unwrap();
    let plan = &rows[1];
    assert_eq!(plan["status"], "failed");
    assert_eq!(plan["reason"], "GRANTING_PLAN_DISABLED");
    assert_eq!(
        (plan["count"].as_u64(), plan["policyName"].as_str()),
        (Some(2), Some("RPA"))
    );
    assert_eq!(millis(&plan["firstSeen"]), app.now - 6 * HOUR);
    assert_eq!(millis(&plan["lastSeen"]), app.now - 3 * HOUR);
    assert!(plan.get("pendingSince").is_none());
    let loc = &rows[2];
    assert_eq!(loc["reason"], "USAGE_LOCATION_MISSING");
    assert!(
        loc.get("product").is_none() && loc.get("policyId").is_none(),
        "{loc}"
    );
    let got = &rows[5];
    assert_eq!(got["status"], "fulfilled");
    assert_eq!(got["assignmentId"], "a-u-got");
    assert_eq!(got["reason"], "NO_LICENSES_AVAILABLE");
    assert_eq!(millis(&got["pendingSince"]), app.now - 3 * DAY - 10 * MIN);
    assert_eq!(millis(&got["changedAt"]), app.now - 2 * HOUR);
    assert!(
        got.get("expiresAt").is_none(),
        "only a pending claim lapses"
    );
    let ended = &rows[6];
    assert_eq!(
        (
            ended["endedOutcome"].as_str(),
            ended["endedReason"].as_str()
        ),
        (Some("NOT_ELIGIBLE"), Some("ACCOUNT_DISABLED"))
    );
    let waiting = &rows[0];
    assert_eq!(waiting["needs"], json!(["premium_cloud_flows"]));
    assert_eq!(waiting["productName"], "Power Automate Premium");
    assert_eq!(millis(&waiting["expiresAt"]), app.now - HOUR + 30 * DAY);
}

#[tokio::test]
async fn who_waits_for_premium_and_since_when() {
    let app = app();
    let query = "?status=pending&product=power_automate_premium&sort=firstSeen";
    let body = get(&app.router, &claims_uri(query), Some(&ga()))
        .await
        .json();
    assert_eq!(
        users(&body),
        ["u-wait-1", "u-wait-2"],
        "the longest waiting first"
    );
    let since: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| millis(&r["pendingSince"]))
        .collect();
    assert_eq!(
        since,
        [app.now - 5 * DAY - 10 * MIN, app.now - 2 * DAY - 10 * MIN]
    );
    assert_eq!(body["rows"][0]["count"], 1);
}

#[tokio::test]
async fn filters_combine_and_statuses_may_be_repeated_or_listed() {
    let app = app();
    for (query, expected) in [
        ("?status=failed,fulfilled", vec!["u-plan", "u-loc", "u-got"]),
        (
            "?status=failed&status=fulfilled",
            vec!["u-plan", "u-loc", "u-got"],
        ),
        (
            "?status=failed&status=expired&days=90",
            vec!["u-plan", "u-loc", "u-old"],
        ),
        ("?status=expired", vec![]),
        // A claim fulfilled two hours ago shows in the last day, though asked for days ago.
        ("?days=1", vec!["u-wait-1", "u-plan", "u-loc", "u-got"]),
        (
            "?product=power_automate_per_user&sort=firstSeen",
            vec!["u-got", "u-wait-3"],
        ),
        (
            "?product=power_automate_per_user&status=pending,pending",
            vec!["u-wait-3"],
        ),
        (
            "?days=366&sort=firstSeen&status=ended_not_eligible,expired",
            vec!["u-old", "u-ended"],
        ),
    ] {
        let reply = get(&app.router, &claims_uri(query), Some(&ga())).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
        assert_eq!(users(&reply.json()), expected, "{query}");
    }
}

#[tokio::test]
async fn the_listing_as_csv_follows_the_reports_convention() {
    let app = app();
    let reply = get(
        &app.router,
        &claims_uri("?format=csv&status=fulfilled,failed"),
        Some(&ga()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        reply.header(header::CONTENT_DISPOSITION),
        "attachment; filename=\"autoclaim-claims-tenant-a-30d.csv\""
    );
    let csv = reply.text();
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[0], autoclaim::admin::claim_rows::CSV_HEADER);
    assert_eq!(
        lines.len(),
        5,
        "header, three rows, and the last line's end: {csv}"
    );
    assert!(
        lines[1]
            .starts_with("u-plan,failed,power_automate_premium,p-rpa,RPA,GRANTING_PLAN_DISABLED,"),
        "{csv}"
    );
    assert!(lines[1].ends_with(",2,,"), "{csv}");
    assert!(
        lines[2].starts_with("u-loc,failed,,,,USAGE_LOCATION_MISSING,"),
        "{csv}"
    );
    let got: Vec<&str> = lines[3].split(',').collect();
    assert_eq!(
        got[..6],
        [
            "u-got",
            "fulfilled",
            PER_USER,
            "p-flows",
            "Flows",
            "NO_LICENSES_AVAILABLE"
        ]
    );
    assert_eq!(got[10], "a-u-got");
    assert!(got[9].ends_with('Z'), "pendingSince in RFC 3339: {csv}");
    assert_eq!(lines[4], "");
}

// ------------------------------------------------------------------ history

#[tokio::test]
async fn a_users_history_lists_the_failure_the_claim_and_the_assignment() {
    let app = app();
    let reply = get(&app.router, &history_uri("u-got"), Some(&ga())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let h = reply.json();
    assert_eq!(
        (h["tenantId"].as_str(), h["userId"].as_str()),
        (Some(TENANT), Some("u-got"))
    );
    let a = &h["assignments"][0];
    assert_eq!(a["assignmentId"], "a-u-got");
    assert_eq!(a["policyName"], "Flows", "the policy's current name");
    assert_eq!(millis(&a["pendingSince"]), app.now - 3 * DAY - 10 * MIN);
    let f = &h["failures"][0];
    assert_eq!(
        (f["reason"].as_str(), f["count"].as_u64()),
        (Some("NO_LICENSES_AVAILABLE"), Some(1))
    );
    let c = &h["claims"][0];
    assert_eq!(
        (c["status"].as_str(), c["assignmentId"].as_str()),
        (Some("fulfilled"), Some("a-u-got"))
    );
    for list in ["assignments", "failures", "claims"] {
        assert_eq!(h[list].as_array().unwrap().len(), 1, "{list}: {h}");
    }

    // Failures oldest first; a user autoclaim never decided for has an empty history.
    let h = get(&app.router, &history_uri("u-wait-1"), Some(&ga()))
        .await
        .json();
    assert_eq!(h["failures"][0]["count"], 3);
    assert_eq!(
        h["failures"][0]["lastEventId"],
        format!("e-u-wait-1-{}", app.now - HOUR)
    );
    let h = get(&app.router, &history_uri("nobody"), Some(&ga()))
        .await
        .json();
    assert_eq!(
        h,
        json!({"tenantId": TENANT, "userId": "nobody", "assignments": [], "failures": [], "claims": []})
    );
    // Another tenant's user is not this tenant's.
    let h = get(&app.router, &history_uri("u-b-secret"), Some(&ga()))
        .await
        .json();
    assert_eq!(h["claims"], json!([]));
}

#[tokio::test]
async fn a_guid_user_is_the_same_in_any_letter_case() {
    let app = app();
    let guid = "5B0F0B52-1C55-4F8B-9E4D-2A8D1C3E9F10";
    let reply = get(&app.router, &history_uri(guid), Some(&ga())).await;
    assert_eq!(reply.json()["userId"], guid.to_ascii_lowercase());
}

// ------------------------------------------------------------------ the report

#[tokio::test]
async fn the_report_has_failures_per_policy_and_reason_and_claims_pending_per_product() {
    let app = app();
    let report = get(
        &app.router,
        &format!("/v1/tenants/{TENANT}/report?days=30"),
        Some(&ga()),
    )
    .await
    .json();
    let groups: Vec<(String, String, u64, u64)> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["policyName"].as_str().unwrap().to_owned(),
                g["reason"].as_str().unwrap().to_owned(),
                g["users"].as_u64().unwrap(),
                g["events"].as_u64().unwrap(),
            )
        })
        .collect();
    let g = |name: &str, reason: &str, users, events| {
        (name.to_owned(), reason.to_owned(), users, events)
    };
    assert_eq!(
        groups,
        [
            g("Flows", "NO_LICENSES_AVAILABLE", 1, 1),
            g("RPA", "NO_LICENSES_AVAILABLE", 1, 3),
            g("RPA", "GRANTING_PLAN_DISABLED", 1, 2),
            g("", "USAGE_LOCATION_MISSING", 1, 1),
        ]
    );
    assert_eq!(report["failures"][0]["rows"][0]["userId"], "u-got");
    let pending: Vec<(String, u64, i64)> = report["pendingClaims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["product"].as_str().unwrap().to_owned(),
                p["pending"].as_u64().unwrap(),
                millis(&p["oldestPendingSince"]),
            )
        })
        .collect();
    assert_eq!(
        pending,
        [
            (PER_USER.to_owned(), 1, app.now - DAY - 10 * MIN),
            (PREMIUM.to_owned(), 2, app.now - 5 * DAY - 10 * MIN)
        ]
    );
    // The window counts users last refused in it; pending claims are now's, whatever the window.
    let report = get(
        &app.router,
        &format!("/v1/tenants/{TENANT}/report?days=1"),
        Some(&ga()),
    )
    .await
    .json();
    assert_eq!(
        report["failures"].as_array().unwrap().len(),
        3,
        "u-got was last refused days ago"
    );
    assert_eq!(report["pendingClaims"].as_array().unwrap().len(), 2);
    assert!(!report.to_string().contains("u-b-secret"));
}

#[tokio::test]
async fn the_reports_csv_holds_one_table_at_a_time() {
    let app = app();
    let base = format!("/v1/tenants/{TENANT}/report?days=30&format=csv");
    let failures = get(&app.router, &format!("{base}&table=failures"), Some(&ga())).await;
    assert_eq!(failures.status, StatusCode::OK);
    assert!(failures
        .header(header::CONTENT_DISPOSITION)
        .contains("autoclaim-failures-tenant-a-30d.csv"));
    let text = failures.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        autoclaim::admin::report_claims::FAILURES_CSV_HEADER
    );
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[2].starts_with("p-rpa,RPA,NO_LICENSES_AVAILABLE,u-wait-1,power_automate_premium,"),
        "{text}"
    );
    assert!(lines[2].ends_with(",3"), "{text}");
    let pending = get(&app.router, &format!("{base}&table=pending"), Some(&ga()))
        .await
        .text();
    let lines: Vec<&str> = pending.lines().collect();
    assert_eq!(
        lines[0],
        autoclaim::admin::report_claims::PENDING_CSV_HEADER
    );
    assert!(
        lines[2].starts_with("power_automate_premium,Power Automate Premium,2,"),
        "{pending}"
    );
    // The assignments are still the report's CSV by default, and JSON holds every table.
    let assignments = get(&app.router, &base, Some(&ga())).await.text();
    assert!(assignments.starts_with(autoclaim::admin::report::CSV_HEADER));
    let json = get(
        &app.router,
        &format!("/v1/tenants/{TENANT}/report?table=failures"),
        Some(&ga()),
    )
    .await;
    assert_eq!(json.status, StatusCode::OK);
    assert!(json.json()["policies"].is_array());
}

// ------------------------------------------------------------------ refusals

#[tokio::test]
async fn other_tenants_and_roles_are_refused_before_any_parameter_is_read() {
    let app = app();
    let other = token_with(OTHER, &[GLOBAL_ADMINISTRATOR]);
    let helpdesk = token_with(TENANT, &["729827e3-9c14-49f7-bb1b-9608f156bbb8"]);
    for uri in [
        claims_uri(""),
        claims_uri("?days=0&nope=1"),
        history_uri("u-got"),
    ] {
        let reply = get(&app.router, &uri, None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(reply.is_problem());
        for token in [&other, &helpdesk] {
            let reply = get(&app.router, &uri, Some(token)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}");
            assert!(
                reply.is_problem() && !reply.text().contains("u-"),
                "{uri}: {}",
                reply.text()
            );
        }
    }
    // Tenant B's administrator sees only B.
    let reply = get(
        &app.router,
        &format!("/v1/tenants/{OTHER}/claims"),
        Some(&other),
    )
    .await;
    assert_eq!(users(&reply.json()), ["u-b-secret", "u-b-secret"]);
}

#[tokio::test]
async fn bad_parameters_are_problems_that_say_what_to_fix() {
    let app = app();
    let long_user = "x".repeat(257);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            claims_uri("?days=0"),
            StatusCode::BAD_REQUEST,
            "days must be 1 to 366",
        ),
        (
            claims_uri("?days=367"),
            StatusCode::BAD_REQUEST,
            "days must be 1 to 366",
        ),
        (
            claims_uri("?days=week"),
            StatusCode::BAD_REQUEST,
            "days must be 1 to 366",
        ),
        (
            claims_uri("?days=1&days=2"),
            StatusCode::BAD_REQUEST,
            "days is given more than once",
        ),
        (
            claims_uri("?status=waiting"),
            StatusCode::BAD_REQUEST,
            "status must be one or more of pending, fulfilled, failed",
        ),
        (
            claims_uri("?status="),
            StatusCode::BAD_REQUEST,
            "status must be",
        ),
        (
            claims_uri("?status=pending,"),
            StatusCode::BAD_REQUEST,
            "status must be",
        ),
        (
            claims_uri("?status=PENDING"),
            StatusCode::BAD_REQUEST,
            "status must be",
        ),
        (
            claims_uri("?sort=newest"),
            StatusCode::BAD_REQUEST,
            "sort must be lastSeen or firstSeen",
        ),
        (
            claims_uri("?format=xml"),
            StatusCode::BAD_REQUEST,
            "format must be json or csv",
        ),
        (
            claims_uri("?product=a&product=b"),
            StatusCode::BAD_REQUEST,
            "product is given more than once",
        ),
        (
            claims_uri("?user=u-got"),
            StatusCode::BAD_REQUEST,
            "unknown query parameter \"user\"",
        ),
        (
            claims_uri("?product=power_automate_premum"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the catalog has power_automate_per_user, power_automate_premium",
        ),
        (
            history_uri(&long_user),
            StatusCode::BAD_REQUEST,
            "a user id is at most 256 characters",
        ),
        (
            format!("{}?days=7", history_uri("u-got")),
            StatusCode::BAD_REQUEST,
            "takes no query parameters",
        ),
        (
            format!("/v1/tenants/{TENANT}/report?table=claims"),
            StatusCode::BAD_REQUEST,
            "table must be assignments, failures or pending",
        ),
    ];
    for (uri, status, detail) in cases {
        let reply = get(&app.router, &uri, Some(&ga())).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text());
        assert!(reply.is_problem(), "{uri}");
        let body = reply.json();
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{uri}: {body}"
        );
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(body["errors"][0]["field"], "product");
        }
    }
}

#[tokio::test]
async fn before_the_topics_are_read_the_api_says_to_come_back() {
    let app = app_loaded(false);
    for uri in [claims_uri(""), history_uri("u-got")] {
        let reply = get(&app.router, &uri, Some(&ga())).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(reply.is_problem() && !reply.header(header::RETRY_AFTER).is_empty());
    }
}

#[tokio::test]
async fn the_openapi_document_describes_both_routes_and_their_parameters() {
    let app = app();
    let doc = get(&app.router, "/v1/openapi.json", None).await.json();
    let query_names = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        query_names("/v1/tenants/{tenantId}/claims"),
        ["status", "product", "days", "sort", "format"]
    );
    assert_eq!(
        query_names("/v1/tenants/{tenantId}/report"),
        ["days", "format", "table"]
    );
    for path in [
        "/v1/tenants/{tenantId}/claims",
        "/v1/tenants/{tenantId}/users/{userId}/history",
    ] {
        let op = &doc["paths"][path]["get"];
        for status in ["200", "400", "401", "403", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "GET {path} does not document {status}"
            );
        }
    }
    let required = &doc["components"]["schemas"]["Report"]["required"];
    assert!(required
        .as_array()
        .unwrap()
        .contains(&json!("pendingClaims")));
}

// ------------------------------------------------------------------ property

mod query_parameters {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const STATUSES: [&str; 6] = [
        "pending",
        "fulfilled",
        "failed",
        "ended_entitled",
        "ended_not_eligible",
        "expired",
    ];

    /// One parameter's value: valid or not.
    #[derive(Clone, Debug)]
    enum Param {
        Status(Vec<String>),
        Product(String),
        Days(String),
        Sort(String),
        Format(String),
    }

    fn param() -> impl Strategy<Value = Param> {
        let status = prop_oneof![
            4 => proptest::sample::select(STATUSES.to_vec()).prop_map(str::to_owned),
            1 => "[a-zA-Z_]{0,10}",
        ];
        prop_oneof![
            vec(status, 1..3).prop_map(Param::Status),
            prop_oneof![
                Just(PER_USER.to_owned()),
                Just(PREMIUM.to_owned()),
                "[a-z_]{0,12}".prop_map(String::from)
            ]
            .prop_map(Param::Product),
            prop_oneof![
                (1u32..=366).prop_map(|d| d.to_string()),
                "[0-9a-z+-]{0,4}".prop_map(String::from)
            ]
            .prop_map(Param::Days),
            prop_oneof![
                Just("lastSeen".to_owned()),
                Just("firstSeen".to_owned()),
                "[a-zA-Z]{0,9}".prop_map(String::from)
            ]
            .prop_map(Param::Sort),
            // CSV is not the JSON the model reads; it has a test of its own.
            prop_oneof![
                Just("json".to_owned()),
                "[a-z]{0,4}".prop_filter("not csv", |f| f != "csv")
            ]
            .prop_map(Param::Format),
        ]
    }

    /// What the server should answer: the users listed, in order, or the status of the problem.
    fn model(params: &[Param], now: i64) -> Result<Vec<&'static str>, StatusCode> {
        let (mut statuses, mut products, mut days, mut sorts, mut formats) =
            (vec![], vec![], vec![], vec![], vec![]);
        for p in params {
            match p {
                Param::Status(v) => statuses.extend(v.iter().cloned()),
                Param::Product(v) => products.push(v.clone()),
                Param::Days(v) => days.push(v.clone()),
                Param::Sort(v) => sorts.push(v.clone()),
                Param::Format(v) => formats.push(v.clone()),
            }
        }
        let bad = StatusCode::BAD_REQUEST;
        if [products.len(), days.len(), sorts.len(), formats.len()]
            .iter()
            .any(|n| *n > 1)
        {
            return Err(bad);
        }
        let days = match days.first() {
            None => 30,
            Some(d) => match d.parse::<i64>() {
                Ok(d) if (1..=366).contains(&d) => d,
                _ => return Err(bad),
            },
        };
        let by_first = match sorts.first().map(String::as_str) {
            None | Some("lastSeen") => false,
            Some("firstSeen") => true,
            Some(_) => return Err(bad),
        };
        if formats.first().is_some_and(|f| f != "json")
            || statuses.iter().any(|s| !STATUSES.contains(&s.as_str()))
        {
            return Err(bad);
        }
        if products
            .first()
            .is_some_and(|p| p != PER_USER && p != PREMIUM)
        {
            return Err(StatusCode::UNPROCESSABLE_ENTITY);
        }
        let since = now - days * DAY;
        let mut kept: Vec<&Fact> = FACTS
            .iter()
            .filter(|f| statuses.is_empty() || statuses.iter().any(|s| s == f.status))
            .filter(|f| products.first().is_none_or(|p| p == f.product))
            .filter(|f| now - f.last.min(f.changed) >= since)
            .collect();
        if by_first {
            kept.sort_by_key(|f| std::cmp::Reverse(f.first));
        } else {
            kept.sort_by_key(|f| f.last);
        }
        Ok(kept.iter().map(|f| f.user).collect())
    }

    fn query(params: &[Param], commas: bool) -> String {
        let mut pairs: Vec<String> = Vec::new();
        for p in params {
            match p {
                Param::Status(v) if commas => pairs.push(format!("status={}", v.join(","))),
                Param::Status(v) => pairs.extend(v.iter().map(|s| format!("status={s}"))),
                Param::Product(v) => pairs.push(format!("product={v}")),
                Param::Days(v) => pairs.push(format!("days={}", v.replace('+', "%2B"))),
                Param::Sort(v) => pairs.push(format!("sort={v}")),
                Param::Format(v) => pairs.push(format!("format={v}")),
            }
        }
        format!("?{}", pairs.join("&"))
    }

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        })
    }

    fn shared() -> &'static (App, String) {
        static APP: OnceLock<(App, String)> = OnceLock::new();
        APP.get_or_init(|| (app(), ga()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn the_listing_answers_as_the_model_of_its_parameters_says(
            params in vec(param(), 0..5),
            commas in any::<bool>(),
        ) {
            let (app, token) = shared();
            let uri = claims_uri(&query(&params, commas));
            let reply = runtime().block_on(get(&app.router, &uri, Some(token)));
            match model(&params, app.now) {
                Ok(expected) => {
                    prop_assert_eq!(reply.status, StatusCode::OK, "{}: {}", uri, reply.text());
                    prop_assert_eq!(users(&reply.json()), expected, "{}", uri);
                }
                Err(status) => {
                    prop_assert_eq!(reply.status, status, "{}: {}", uri, reply.text());
                    prop_assert!(reply.is_problem(), "{}", uri);
                }
            }
        }
    }
}
