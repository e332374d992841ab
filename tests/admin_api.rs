//! The admin API in process: a view filled by hand and an in-memory writer, so no broker is needed.
//! The authorization matrix of every endpoint, validation with problem details, the behaviour of
//! listings, writes and the report, and property tests on request bodies (never a 5xx).
mod writer_support;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use autoclaim::admin::api::{self, AdminState};
use autoclaim::admin::auth::{self, AuthSettings, Authenticator, JwksSource, GLOBAL_ADMINISTRATOR};
use autoclaim::admin::view::{AdminView, SharedView};
use autoclaim::admin::writer::{PolicyWriter, TableWrite};
use autoclaim::domain::time::Timestamp;
use autoclaim::pipeline::security::Secret;
use autoclaim::wire::convert::to_wire_timestamp;
use autoclaim::wire::pb;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt;
use writer_support::MemoryWriter;

const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
const ISSUER: &str = "https://login.example.test/{tenantid}/v2.0";
const AUDIENCE: &str = "api://autoclaim-admin";
const TENANT: &str = "tenant-a";
const OTHER: &str = "tenant-b";
const OTHER_SECRET_NAME: &str = "Secret B policy";
const OID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const HELPDESK_ADMIN: &str = "729827e3-9c14-49f7-bb1b-9608f156bbb8";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const PER_USER: &str = "power_automate_per_user";
const PREMIUM: &str = "power_automate_premium";
/// FLOW_PER_USER: the plan that grants per user's capability.
const FLOW_PER_USER_PLAN: &str = "c5002c70-f725-4367-b409-f0eff4fee6c0";
/// EXCHANGE_S_FOUNDATION: in both products, grants nothing autoclaim needs.
const EXCHANGE_PLAN: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";
/// CDS_ATTENDED_RPA: a plan of premium only.
const CDS_RPA_PLAN: &str = "3da2fd4c-1bee-4b61-a17f-94c31e5cab93";

// Two RSA keys made for these tests only: A is in the JWKS, B signs forgeries.
const KEY_A_PEM: &str = include_str!("fixtures/admin-key-a.pem");
const KEY_B_PEM: &str = include_str!("fixtures/admin-key-b.pem");
const KEY_A_N: &str = include_str!("fixtures/admin-key-a.n");

// ------------------------------------------------------------------ fixture

fn ts(millis: i64) -> Option<pbjson_types::Timestamp> {
    Some(to_wire_timestamp(Timestamp::from_millis(millis)))
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

fn jwks_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("autoclaim-admin-jwks-{}.json", std::process::id()));
        let jwks = json!({"keys": [
            {"kty": "RSA", "use": "sig", "kid": "key-a", "alg": "RS256", "n": KEY_A_N, "e": "AQAB"},
            {"kty": "EC", "use": "sig", "kid": "ec-ignored", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "use": "enc", "kid": "enc-ignored", "n": KEY_A_N, "e": "AQAB"}
        ]});
        std::fs::write(&path, jwks.to_string()).unwrap();
        path
    })
    .clone()
}

fn authenticator() -> Authenticator {
    Authenticator::new(AuthSettings {
        jwks: Some(JwksSource::File(jwks_path())),
        hs256_secret: Some(Secret::new(SECRET)),
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
    })
    .unwrap()
}

fn policy(tenant: &str, id: &str, name: &str, product: &str, enabled: bool, at: i64) -> pb::Policy {
    pb::Policy {
        tenant_id: tenant.into(),
        policy_id: id.into(),
        name: name.into(),
        product: product.into(),
        enabled,
        created_at: ts(at),
        changed_at: ts(at),
        changed_by: "seed".into(),
        ..Default::default()
    }
}

fn assignment(
    tenant: &str,
    id: &str,
    user: &str,
    product: &str,
    policy: &str,
    at: i64,
) -> pb::LicenseAssignment {
    pb::LicenseAssignment {
        assignment_id: id.into(),
        tenant_id: tenant.into(),
        user_id: user.into(),
        product: product.into(),
        policy_id: policy.into(),
        policy_name: format!("{policy} as it was"),
        trigger_event_id: format!("event-{id}"),
        trigger_kind: pb::ActivityKind::CloudFlowSaved as i32,
        occurred_at: ts(at - 1000),
        decided_at: ts(at),
        ..Default::default()
    }
}

struct App {
    router: Router,
    writer: Arc<MemoryWriter>,
    view: SharedView,
}

/// Tenant A: autoclaim on, policy "Flows" (per user, on) and "RPA" (premium, off), both in force;
/// 10 per-user licences of which 4 assigned before the snapshot 3 h ago and one by the processor
/// since; premium sold out. Tenant B has a policy whose name must never leak to A.
fn fill(view: &mut AdminView, now: i64) {
    view.apply_settings(pb::TenantSettings {
        tenant_id: TENANT.into(),
        autoclaim_enabled: true,
        scope: pb::Scope::AllEnvironments as i32,
        changed_at: ts(now - 3 * HOUR),
        changed_by: "seed".into(),
        ..Default::default()
    })
    .unwrap();
    view.apply_policy(policy(
        TENANT,
        "p-flows",
        "Flows",
        PER_USER,
        true,
        now - 3 * HOUR,
    ))
    .unwrap();
    view.apply_policy(policy(
        TENANT,
        "p-rpa",
        "RPA",
        PREMIUM,
        false,
        now - 3 * HOUR - 1,
    ))
    .unwrap();
    view.apply_policy(policy(
        OTHER,
        "p-secret",
        OTHER_SECRET_NAME,
        PER_USER,
        true,
        now - 3 * HOUR,
    ))
    .unwrap();
    for (product, purchased, assigned) in [(PER_USER, 10, 4), (PREMIUM, 5, 5)] {
        view.apply_inventory(pb::LicenseInventory {
            tenant_id: TENANT.into(),
            product: product.into(),
            purchased_units: purchased,
            assigned_units: assigned,
            as_of: ts(now - 3 * HOUR),
        })
        .unwrap();
    }
    view.apply_assignment(assignment(
        TENANT,
        "a1",
        "user-1",
        PER_USER,
        "p-flows",
        now - HOUR,
    ))
    .unwrap();
    view.apply_assignment(assignment(
        TENANT,
        "a2",
        "user-2",
        PER_USER,
        "p-flows",
        now - 2 * DAY,
    ))
    .unwrap();
    view.apply_assignment(assignment(
        TENANT,
        "a3",
        "user-3",
        PREMIUM,
        "p-gone",
        now - 10 * DAY,
    ))
    .unwrap();
    view.apply_assignment(assignment(
        OTHER,
        "b1",
        "user-b",
        PER_USER,
        "p-secret",
        now - HOUR,
    ))
    .unwrap();
}

fn app_with(delay: Duration, max_policies: usize, loaded: bool) -> App {
    let mut view = AdminView::new(delay);
    fill(&mut view, now_ms());
    if loaded {
        view.mark_loaded();
    }
    let view = SharedView::new(view);
    let writer = Arc::new(MemoryWriter::new());
    let state = AdminState::new(
        view.clone(),
        Arc::clone(&writer) as Arc<dyn PolicyWriter>,
        authenticator(),
        max_policies,
    );
    App {
        router: api::router(state),
        writer,
        view,
    }
}

fn app() -> App {
    app_with(Duration::from_secs(2 * 3600), 50, true)
}

// ------------------------------------------------------------------ tokens

fn claims(tid: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "iss": ISSUER.replace("{tenantid}", tid),
        "aud": AUDIENCE,
        "tid": tid,
        "oid": OID,
        "wids": [GLOBAL_ADMINISTRATOR],
        "iat": now,
        "nbf": now - 10,
        "exp": now + 3600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(key);
    } else {
        claims[key] = value;
    }
    claims
}

fn hs256(claims: &Value) -> String {
    auth::mint_hs256(SECRET.as_bytes(), claims).unwrap()
}

fn rs256(claims: &Value, pem: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes())
    )
}

// ------------------------------------------------------------------ requests

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

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn is_problem(&self) -> bool {
        self.content_type() == "application/problem+json"
            && self.json()["status"] == self.status.as_u16()
    }
}

async fn send_raw(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
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

async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(b) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    send_raw(router, request.body(body).unwrap()).await
}

fn ga() -> String {
    hs256(&claims(TENANT))
}

fn settings_uri(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/settings")
}

fn policies_uri(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/policies")
}

fn policy_uri(tenant: &str, id: &str) -> String {
    format!("/v1/tenants/{tenant}/policies/{id}")
}

// ------------------------------------------------------------------ authorization matrix

struct Endpoint {
    method: &'static str,
    uri: String,
    body: Option<Value>,
    success: StatusCode,
}

fn endpoints(tenant: &str) -> Vec<Endpoint> {
    let e = |method, uri: String, body, success| Endpoint {
        method,
        uri,
        body,
        success,
    };
    vec![
        e("GET", settings_uri(tenant), None, StatusCode::OK),
        e(
            "PUT",
            settings_uri(tenant),
            Some(json!({"autoclaimEnabled": false, "scope": "MANAGED_ENVIRONMENTS_ONLY"})),
            StatusCode::OK,
        ),
        e("GET", policies_uri(tenant), None, StatusCode::OK),
        e(
            "POST",
            policies_uri(tenant),
            Some(json!({"name": "New", "product": PREMIUM, "enabled": true})),
            StatusCode::CREATED,
        ),
        e("GET", policy_uri(tenant, "p-flows"), None, StatusCode::OK),
        e(
            "PATCH",
            policy_uri(tenant, "p-flows"),
            Some(json!({"enabled": false})),
            StatusCode::OK,
        ),
        e(
            "DELETE",
            policy_uri(tenant, "p-flows"),
            None,
            StatusCode::OK,
        ),
        e(
            "GET",
            format!("/v1/tenants/{tenant}/report"),
            None,
            StatusCode::OK,
        ),
        e(
            "GET",
            format!("/v1/tenants/{tenant}/report?days=7&format=csv"),
            None,
            StatusCode::OK,
        ),
        e(
            "GET",
            format!("/v1/tenants/{tenant}/audit"),
            None,
            StatusCode::OK,
        ),
    ]
}

#[tokio::test]
async fn authorization_matrix_of_every_endpoint() {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let good = claims(TENANT);
    let cases: Vec<(&str, Option<String>, StatusCode)> = vec![
        ("no token", None, StatusCode::UNAUTHORIZED),
        (
            "garbage",
            Some("not-a-jwt".into()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "three garbage parts",
            Some("a.b.c".into()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            Some(hs256(&with(
                with(good.clone(), "exp", json!(now - 3600)),
                "nbf",
                json!(now - 7200),
            ))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not yet valid",
            Some(hs256(&with(
                with(good.clone(), "nbf", json!(now + 3600)),
                "exp",
                json!(now + 7200),
            ))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no exp",
            Some(hs256(&with(good.clone(), "exp", Value::Null))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong HS256 secret",
            Some(auth::mint_hs256(b"another-secret-of-at-least-32-bytes!!", &good).unwrap()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "RS256 signed by a key not in the JWKS",
            Some(rs256(&good, KEY_B_PEM, Some("key-a"))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "RS256 with an unknown kid",
            Some(rs256(&good, KEY_A_PEM, Some("key-z"))),
            StatusCode::UNAUTHORIZED,
        ),
        ("alg none", Some(unsigned(&good)), StatusCode::UNAUTHORIZED),
        (
            "wrong issuer",
            Some(hs256(&with(
                good.clone(),
                "iss",
                json!("https://evil.example/v2.0"),
            ))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "issuer of another tenant",
            Some(hs256(&with(
                good.clone(),
                "iss",
                json!(ISSUER.replace("{tenantid}", OTHER)),
            ))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong audience",
            Some(hs256(&with(
                good.clone(),
                "aud",
                json!("api://something-else"),
            ))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no audience",
            Some(hs256(&with(good.clone(), "aud", Value::Null))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no tid",
            Some(hs256(&with(good.clone(), "tid", Value::Null))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no oid",
            Some(hs256(&with(good.clone(), "oid", Value::Null))),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "other tenant",
            Some(hs256(&claims(OTHER))),
            StatusCode::FORBIDDEN,
        ),
        (
            "other role",
            Some(hs256(&with(good.clone(), "wids", json!([HELPDESK_ADMIN])))),
            StatusCode::FORBIDDEN,
        ),
        (
            "no role",
            Some(hs256(&with(good.clone(), "wids", Value::Null))),
            StatusCode::FORBIDDEN,
        ),
        (
            "Global Administrator, HS256",
            Some(hs256(&good)),
            StatusCode::OK,
        ),
        (
            "Global Administrator, RS256",
            Some(rs256(&good, KEY_A_PEM, Some("key-a"))),
            StatusCode::OK,
        ),
        (
            "Global Administrator, upper-case role id",
            Some(hs256(&with(
                good.clone(),
                "wids",
                json!([HELPDESK_ADMIN, GLOBAL_ADMINISTRATOR.to_uppercase()]),
            ))),
            StatusCode::OK,
        ),
    ];
    let mut failures = Vec::new();
    for endpoint in endpoints(TENANT) {
        for (case, token, expected) in &cases {
            let app = app();
            let reply = send(
                &app.router,
                endpoint.method,
                &endpoint.uri,
                token.as_deref(),
                endpoint.body.as_ref(),
            )
            .await;
            let expected = if *expected == StatusCode::OK {
                endpoint.success
            } else {
                *expected
            };
            let what = format!("{} {} with {case}", endpoint.method, endpoint.uri);
            if reply.status != expected {
                failures.push(format!(
                    "{what}: got {} want {expected}: {}",
                    reply.status,
                    reply.text()
                ));
                continue;
            }
            if expected.is_success() {
                continue;
            }
            if !reply.is_problem() {
                failures.push(format!(
                    "{what}: not a problem details body: {}",
                    reply.text()
                ));
            }
            if !reply.headers.contains_key(header::WWW_AUTHENTICATE) {
                failures.push(format!("{what}: no WWW-Authenticate challenge"));
            }
            if !app.writer.writes().is_empty() || !app.writer.audit_entries().is_empty() {
                failures.push(format!("{what}: something was written on a refusal"));
            }
            if reply.text().contains(OTHER_SECRET_NAME) || reply.text().contains("Flows") {
                failures.push(format!(
                    "{what}: a refusal reveals tenant data: {}",
                    reply.text()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_token_of_one_tenant_reveals_nothing_of_another() {
    let app = app();
    for endpoint in endpoints(OTHER) {
        let reply = send(
            &app.router,
            endpoint.method,
            &endpoint.uri,
            Some(&ga()),
            endpoint.body.as_ref(),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{} {}",
            endpoint.method,
            endpoint.uri
        );
        assert!(reply.is_problem());
        assert!(
            !reply.text().contains(OTHER_SECRET_NAME),
            "{}",
            reply.text()
        );
        assert!(!reply.text().contains("p-secret"), "{}", reply.text());
    }
    assert!(app.writer.writes().is_empty());
    // A policy id of another tenant is not found under the caller's own tenant.
    let reply = send(
        &app.router,
        "GET",
        &policy_uri(TENANT, "p-secret"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn missing_token_gets_a_bare_challenge_and_a_bad_one_says_why() {
    let app = app();
    let reply = send(&app.router, "GET", &settings_uri(TENANT), None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"autoclaim-admin\""
    );
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let expired = hs256(&with(
        with(claims(TENANT), "exp", json!(now - 3600)),
        "nbf",
        json!(now - 7200),
    ));
    let reply = send(
        &app.router,
        "GET",
        &settings_uri(TENANT),
        Some(&expired),
        None,
    )
    .await;
    assert!(reply.json()["detail"].as_str().unwrap().contains("expired"));
    let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let reply = send(
        &app.router,
        "GET",
        &settings_uri(TENANT),
        Some(&hs256(&claims(OTHER))),
        None,
    )
    .await;
    let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    // Another scheme is not a bearer token.
    let request = Request::get(settings_uri(TENANT))
        .header(header::AUTHORIZATION, format!("Basic {}", ga()))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send_raw(&app.router, request).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refusals_come_before_anything_else() {
    // Unauthenticated: 401 even for a loading view, a bad body or an unknown policy.
    let loading = app_with(Duration::from_secs(7200), 50, false);
    let reply = send(&loading.router, "GET", &settings_uri(TENANT), None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = send(
        &loading.router,
        "GET",
        &settings_uri(TENANT),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.is_problem());
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    let app = app();
    let reply = send(
        &app.router,
        "POST",
        &policies_uri(TENANT),
        Some(&hs256(&claims(OTHER))),
        Some(&json!({"bogus": 1})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(
        &app.router,
        "PATCH",
        &policy_uri(TENANT, "nope"),
        None,
        Some(&json!({})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

// ------------------------------------------------------------------ listings and status

#[tokio::test]
async fn list_shows_app_product_licences_and_status() {
    let app = app();
    let reply = send(&app.router, "GET", &policies_uri(TENANT), Some(&ga()), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let body = reply.json();
    assert_eq!(body["tenantId"], TENANT);
    let policies = body["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{body}");
    // Oldest first: RPA was created a millisecond before Flows.
    let (rpa, flows) = (&policies[0], &policies[1]);
    assert_eq!(flows["policy"]["name"], "Flows");
    assert_eq!(flows["status"], "ACTIVE");
    assert_eq!(flows["autoclaimApp"], "Power Automate per User Plan");
    assert_eq!(flows["assignedProduct"], "Power Automate per user plan");
    // 10 purchased - 4 assigned as of the snapshot - 1 assigned by the processor since.
    assert_eq!(flows["availableLicenses"], 5);
    assert_eq!(flows["products"][0]["availableLicenses"], 5);
    assert!(flows.get("propagatingUntil").is_none());
    assert_eq!(rpa["status"], "OFF");
    assert_eq!(rpa["availableLicenses"], 0);
    assert_eq!(rpa["autoclaimApp"], "Power Automate RPA Attended");
    assert!(!reply.text().contains(OTHER_SECRET_NAME));
    // Autoclaim is on in force: the active policy assigns and nothing needs saying.
    assert_eq!(body["autoclaimOn"], true);
    assert!(body.get("notice").is_none(), "{body}");
    assert_eq!(flows["assigningLicenses"], true);
    assert_eq!(rpa["assigningLicenses"], false);
    assert!(flows.get("notice").is_none());
}

/// Tenant A with autoclaim turned off at `changed_at`.
fn turn_off(app: &App, changed_at: i64) {
    app.view
        .write()
        .apply_settings(pb::TenantSettings {
            tenant_id: TENANT.into(),
            autoclaim_enabled: false,
            scope: pb::Scope::AllEnvironments as i32,
            changed_at: ts(changed_at),
            changed_by: "seed".into(),
            ..Default::default()
        })
        .unwrap();
}

#[tokio::test]
async fn with_autoclaim_off_no_policy_is_listed_as_assigning_and_the_answer_says_why() {
    let app = app();
    // Off, and in force (3 h ago with a 2 h delay).
    turn_off(&app, now_ms() - 3 * HOUR + 1);
    let reply = send(&app.router, "GET", &policies_uri(TENANT), Some(&ga()), None).await;
    let body = reply.json();
    assert_eq!(body["autoclaimOn"], false, "{body}");
    let notice = body["notice"].as_str().expect("a notice");
    assert!(notice.contains("autoclaim is off"), "{notice}");
    let flows = body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"]["name"] == "Flows")
        .unwrap();
    // The policy itself is on and in force, and is still listed so; it just does not assign.
    assert_eq!(flows["status"], "ACTIVE");
    assert_eq!(flows["assigningLicenses"], false);
    assert_eq!(flows["notice"], notice);

    // Creating a policy while it is off is allowed, and the answer says the feature is off.
    let reply = post(
        &app,
        json!({"name": "While off", "product": PER_USER, "enabled": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let created = reply.json();
    assert_eq!(created["assigningLicenses"], false);
    assert!(created["notice"]
        .as_str()
        .is_some_and(|n| n.contains("autoclaim is off")));
}

#[tokio::test]
async fn a_pending_setting_change_is_announced_with_its_time() {
    let app = app();
    // Turned off a minute ago: still on in force for almost two hours.
    turn_off(&app, now_ms() - 60_000);
    let body = send(&app.router, "GET", &policies_uri(TENANT), Some(&ga()), None)
        .await
        .json();
    assert_eq!(body["autoclaimOn"], true);
    assert!(
        body["notice"]
            .as_str()
            .is_some_and(|n| n.contains("turns off")),
        "{body}"
    );
    assert_eq!(body["policies"][1]["assigningLicenses"], true);
}

#[tokio::test]
async fn settings_read_and_change_with_propagation() {
    let app = app();
    let reply = send(&app.router, "GET", &settings_uri(TENANT), Some(&ga()), None).await;
    let body = reply.json();
    assert_eq!(body["status"], "ACTIVE");
    assert_eq!(body["settings"]["autoclaimEnabled"], true);
    assert_eq!(body["inForce"]["autoclaimEnabled"], true);

    let before = now_ms();
    let reply = send(
        &app.router,
        "PUT",
        &settings_uri(TENANT),
        Some(&ga()),
        Some(&json!({"autoclaimEnabled": false})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "PROPAGATING");
    assert_eq!(body["propagatingUntil"], body["effectiveAt"]);
    assert_eq!(body["settings"]["changedBy"], OID);
    // The version in force is still the old one: autoclaim stays on until the delay has passed.
    assert_eq!(body["inForce"]["autoclaimEnabled"], true);
    let writes = app.writer.writes();
    let [TableWrite::Settings(written)] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(written.tenant_id, TENANT);
    assert!(!written.autoclaim_enabled);
    assert_eq!(written.scope, pb::Scope::AllEnvironments as i32);
    assert_eq!(written.changed_by, OID);
    let changed = autoclaim::wire::convert::timestamp("changedAt", written.changed_at).unwrap();
    assert!(changed.as_millis() >= before);
    assert_eq!(
        TableWrite::Settings(written.clone()).key(),
        "tenant-a/settings"
    );
    let effective = Timestamp::from_millis(changed.as_millis() + 2 * HOUR);
    let wire_effective: pbjson_types::Timestamp =
        serde_json::from_value(body["effectiveAt"].clone()).unwrap();
    assert_eq!(wire_effective, to_wire_timestamp(effective));
    for time in [&body["effectiveAt"], &body["propagatingUntil"]] {
        assert!(time.as_str().is_some_and(|t| t.ends_with('Z')), "{time}");
    }

    // Read your writes; and the same settings again write nothing.
    let reply = send(&app.router, "GET", &settings_uri(TENANT), Some(&ga()), None).await;
    assert_eq!(reply.json()["status"], "PROPAGATING");
    let reply = send(
        &app.router,
        "PUT",
        &settings_uri(TENANT),
        Some(&ga()),
        Some(&json!({"autoclaimEnabled": false, "scope": "ALL_ENVIRONMENTS"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.writer.writes().len(), 1);
}

#[tokio::test]
async fn a_tenant_never_configured_is_off() {
    let app = app();
    let token = hs256(&claims("tenant-new"));
    let reply = send(
        &app.router,
        "GET",
        &settings_uri("tenant-new"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["status"], "OFF");
    assert!(
        body["settings"].get("autoclaimEnabled").is_none(),
        "false is the default: {body}"
    );
    let reply = send(
        &app.router,
        "GET",
        &policies_uri("tenant-new"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(reply.json()["policies"], json!([]));
    let reply = send(
        &app.router,
        "GET",
        "/v1/tenants/tenant-new/report",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(reply.json()["total"], 0);
}

#[tokio::test]
async fn create_then_read_your_write() {
    let app = app();
    let body = json!({
        "name": "  Premium for RPA  ",
        "product": PREMIUM,
        "backupProducts": [PER_USER],
        "excludedApps": [{"product": PREMIUM, "planIds": [EXCHANGE_PLAN, EXCHANGE_PLAN]}],
        "enabled": true
    });
    let reply = send(
        &app.router,
        "POST",
        &policies_uri(TENANT),
        Some(&ga()),
        Some(&body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let created = reply.json();
    let id = created["policy"]["policyId"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers[header::LOCATION], policy_uri(TENANT, &id));
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(created["policy"]["name"], "Premium for RPA");
    assert_eq!(created["policy"]["changedBy"], OID);
    assert_eq!(
        created["policy"]["createdAt"],
        created["policy"]["changedAt"]
    );
    assert_eq!(
        created["policy"]["excludedApps"],
        json!([{"product": PREMIUM, "planIds": [EXCHANGE_PLAN]}])
    );
    assert_eq!(created["status"], "PROPAGATING");
    assert_eq!(created["propagatingUntil"], created["effectiveAt"]);
    assert_eq!(created["products"].as_array().unwrap().len(), 2);
    let writes = app.writer.writes();
    let [TableWrite::Policy(written)] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(
        TableWrite::Policy(written.clone()).key(),
        format!("{TENANT}/policy/{id}")
    );
    assert_eq!(written.tenant_id, TENANT);
    assert!(written.enabled && !written.deleted);

    let reply = send(
        &app.router,
        "GET",
        &policy_uri(TENANT, &id),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "PROPAGATING");
    let reply = send(&app.router, "GET", &policies_uri(TENANT), Some(&ga()), None).await;
    let names: Vec<Value> = reply.json()["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"]["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("RPA"), json!("Flows"), json!("Premium for RPA")]
    );
}

#[tokio::test]
async fn with_no_delay_a_change_is_in_force_at_once() {
    let app = app_with(Duration::ZERO, 50, true);
    let reply = send(
        &app.router,
        "POST",
        &policies_uri(TENANT),
        Some(&ga()),
        Some(&json!({"name": "Now", "product": PER_USER})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // enabled left out is false (proto3 JSON): the policy is OFF.
    assert_eq!(reply.json()["status"], "OFF");
    let reply = send(
        &app.router,
        "DELETE",
        &policy_uri(TENANT, "p-flows"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "the deletion is in force at once, and it succeeded: {}",
        reply.text()
    );
    assert!(reply.text().is_empty());
    let reply = send(
        &app.router,
        "GET",
        &policy_uri(TENANT, "p-flows"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_renames_edits_and_turns_off() {
    let app = app();
    let uri = policy_uri(TENANT, "p-flows");
    let reply = send(
        &app.router,
        "PATCH",
        &uri,
        Some(&ga()),
        Some(&json!({
            "name": "Flows (all)",
            "backupProducts": [PREMIUM],
            "excludedApps": [{"product": PREMIUM, "planIds": [CDS_RPA_PLAN]}],
            "enabled": false
        })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["policy"]["name"], "Flows (all)");
    assert_eq!(body["policy"]["product"], PER_USER);
    assert_eq!(body["policy"]["backupProducts"], json!([PREMIUM]));
    assert!(body["policy"].get("enabled").is_none(), "off: {body}");
    assert_eq!(body["status"], "PROPAGATING");
    assert_ne!(body["policy"]["createdAt"], body["policy"]["changedAt"]);
    let writes = app.writer.writes();
    let [TableWrite::Policy(written)] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert!(!written.enabled);
    assert_eq!(written.changed_by, OID);

    // A patch that changes nothing writes nothing; a rename to its own name in other case is fine.
    let reply = send(
        &app.router,
        "PATCH",
        &uri,
        Some(&ga()),
        Some(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.writer.writes().len(), 1);
    let reply = send(
        &app.router,
        "PATCH",
        &uri,
        Some(&ga()),
        Some(&json!({"name": "FLOWS (ALL)"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(app.writer.writes().len(), 2);

    // merge-patch+json is accepted too.
    let request = Request::patch(&uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", ga()))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body(Body::from(r#"{"enabled":true}"#))
        .unwrap();
    assert_eq!(send_raw(&app.router, request).await.status, StatusCode::OK);
}

#[tokio::test]
async fn delete_propagates_then_disappears() {
    let app = app();
    let uri = policy_uri(TENANT, "p-flows");
    let reply = send(&app.router, "DELETE", &uri, Some(&ga()), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "PROPAGATING");
    assert_eq!(body["policy"]["deleted"], true);
    // Still listed while the deletion propagates; its name is free again; a second delete is 404.
    let reply = send(&app.router, "GET", &policies_uri(TENANT), Some(&ga()), None).await;
    assert_eq!(reply.json()["policies"].as_array().unwrap().len(), 2);
    let reply = send(&app.router, "DELETE", &uri, Some(&ga()), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(
        &app.router,
        "PATCH",
        &uri,
        Some(&ga()),
        Some(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = send(
        &app.router,
        "POST",
        &policies_uri(TENANT),
        Some(&ga()),
        Some(&json!({"name": "flows", "product": PER_USER})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let writes = app.writer.writes();
    let TableWrite::Policy(deleted) = &writes[0] else {
        panic!()
    };
    assert!(
        deleted.deleted && deleted.enabled,
        "deletion keeps the rest of the policy"
    );

    // Once the deletion is in force the policy is gone.
    app.view
        .write()
        .apply_policy(pb::Policy {
            deleted: true,
            ..policy(TENANT, "p-old", "Old", PER_USER, true, now_ms() - 3 * HOUR)
        })
        .unwrap();
    let reply = send(
        &app.router,
        "GET",
        &policy_uri(TENANT, "p-old"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failed_write_changes_nothing() {
    let app = app();
    app.writer.set_failing(true);
    let reply = send(
        &app.router,
        "POST",
        &policies_uri(TENANT),
        Some(&ga()),
        Some(&json!({"name": "X", "product": PER_USER})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.is_problem());
    let reply = send(
        &app.router,
        "PUT",
        &settings_uri(TENANT),
        Some(&ga()),
        Some(&json!({"autoclaimEnabled": false})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let reply = send(&app.router, "GET", &policies_uri(TENANT), Some(&ga()), None).await;
    assert_eq!(reply.json()["policies"].as_array().unwrap().len(), 2);
    let reply = send(&app.router, "GET", &settings_uri(TENANT), Some(&ga()), None).await;
    assert_eq!(reply.json()["status"], "ACTIVE");
}

// ------------------------------------------------------------------ report

#[tokio::test]
async fn report_counts_and_rows_per_policy() {
    let app = app();
    let reply = send(
        &app.router,
        "GET",
        &format!("/v1/tenants/{TENANT}/report"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["days"], 90);
    assert_eq!(body["total"], 3);
    let counts: Vec<(String, u64)> = body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["policyName"].as_str().unwrap().to_owned(),
                p["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("RPA".to_owned(), 0),
            ("Flows".to_owned(), 2),
            ("p-gone as it was".to_owned(), 1)
        ]
    );
    let flows = &body["policies"][1];
    assert_eq!(flows["rows"][0]["userId"], "user-2");
    assert_eq!(flows["rows"][1]["userId"], "user-1");
    assert_eq!(flows["rows"][1]["product"], PER_USER);
    assert_eq!(flows["rows"][1]["trigger"], "CLOUD_FLOW_SAVED");
    assert!(flows["rows"][1]["assignedAt"].is_string());
    // Times as the proto3 JSON mapping writes them: UTC with a Z.
    for time in [&flows["rows"][1]["assignedAt"], &body["from"], &body["to"]] {
        assert!(time.as_str().is_some_and(|t| t.ends_with('Z')), "{time}");
    }
    assert!(
        !reply.text().contains("user-b"),
        "another tenant's rows leak"
    );

    let reply = send(
        &app.router,
        "GET",
        &format!("/v1/tenants/{TENANT}/report?days=1"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.json()["total"], 1);
    let reply = send(
        &app.router,
        "GET",
        &format!("/v1/tenants/{TENANT}/report?days=7"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.json()["total"], 2);

    let reply = send(
        &app.router,
        "GET",
        &format!("/v1/tenants/{TENANT}/report?days=30&format=csv"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "text/csv; charset=utf-8");
    assert!(reply.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains("autoclaim-report-tenant-a-30d.csv"));
    let csv = reply.text();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], autoclaim::admin::report::CSV_HEADER);
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].starts_with("p-flows,Flows,user-2,power_automate_per_user,"),
        "{csv}"
    );
}

// ------------------------------------------------------------------ validation

async fn post(app: &App, body: Value) -> Reply {
    send(
        &app.router,
        "POST",
        &policies_uri(TENANT),
        Some(&ga()),
        Some(&body),
    )
    .await
}

fn field_errors(reply: &Reply) -> Vec<String> {
    reply.json()["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn policy_validation() {
    let app = app();
    let long = "x".repeat(65);
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "no name",
            json!({"product": PER_USER}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "blank name",
            json!({"name": "   ", "product": PER_USER}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "name over 64",
            json!({"name": long, "product": PER_USER}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "control characters",
            json!({"name": "a\u{7}b", "product": PER_USER}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            "no product",
            json!({"name": "A"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "product",
        ),
        (
            "unknown product",
            json!({"name": "A", "product": "office_e5"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "product",
        ),
        (
            "unknown backup",
            json!({"name": "A", "product": PER_USER, "backupProducts": ["nope"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "backupProducts",
        ),
        (
            "backup is the primary",
            json!({"name": "A", "product": PER_USER, "backupProducts": [PER_USER]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "backupProducts",
        ),
        (
            "repeated backup",
            json!({"name": "A", "product": PER_USER, "backupProducts": [PREMIUM, PREMIUM]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "backupProducts",
        ),
        (
            "five backups",
            json!({"name": "A", "product": PER_USER, "backupProducts": [PREMIUM, PREMIUM, PREMIUM, PREMIUM, PREMIUM]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "backupProducts",
        ),
        (
            "plan of another product",
            json!({"name": "A", "product": PER_USER, "excludedApps": [{"product": PER_USER, "planIds": [CDS_RPA_PLAN]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "excludedApps.planIds",
        ),
        (
            "the granting plan",
            json!({"name": "A", "product": PER_USER, "excludedApps": [{"product": PER_USER, "planIds": [FLOW_PER_USER_PLAN]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "excludedApps.planIds",
        ),
        (
            "exclusion for a product not in the policy",
            json!({"name": "A", "product": PER_USER, "excludedApps": [{"product": PREMIUM, "planIds": [EXCHANGE_PLAN]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "excludedApps.product",
        ),
        (
            "server-owned policyId",
            json!({"name": "A", "product": PER_USER, "policyId": "mine"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "policyId",
        ),
        (
            "server-owned changedAt",
            json!({"name": "A", "product": PER_USER, "changedAt": "2026-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changedAt",
        ),
        (
            "server-owned changedBy",
            json!({"name": "A", "product": PER_USER, "changedBy": "me"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changedBy",
        ),
        (
            "deleted",
            json!({"name": "A", "product": PER_USER, "deleted": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "deleted",
        ),
        (
            "another tenant id",
            json!({"name": "A", "product": PER_USER, "tenantId": OTHER}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tenantId",
        ),
        (
            "unknown field",
            json!({"name": "A", "product": PER_USER, "color": "red"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "wrong type",
            json!({"name": 5, "product": PER_USER}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "unknown enum-like field type",
            json!({"name": "A", "product": PER_USER, "enabled": "yes"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "not an object",
            json!(["name"]),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            "taken name, other case",
            json!({"name": "flows", "product": PREMIUM}),
            StatusCode::CONFLICT,
            "",
        ),
        (
            "taken name of a policy that is off",
            json!({"name": "RPA", "product": PREMIUM}),
            StatusCode::CONFLICT,
            "",
        ),
    ];
    for (case, body, status, field) in cases {
        let reply = post(&app, body).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.text());
        assert!(reply.is_problem(), "{case}: {}", reply.text());
        if !field.is_empty() {
            assert!(
                field_errors(&reply).contains(&field.to_owned()),
                "{case}: {}",
                reply.text()
            );
        }
    }
    assert!(app.writer.writes().is_empty());
    // Several problems at once are all listed.
    let reply = post(
        &app,
        json!({"name": "", "product": PER_USER, "policyId": "x", "changedBy": "y"}),
    )
    .await;
    assert_eq!(field_errors(&reply), ["policyId", "changedBy", "name"]);
    // 64 characters, not bytes.
    let reply = post(&app, json!({"name": "é".repeat(64), "product": PER_USER})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    // The path's own tenant id may be repeated in the body.
    let reply = post(
        &app,
        json!({"name": "B", "product": PER_USER, "tenantId": TENANT}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
}

#[tokio::test]
async fn a_name_waiting_for_its_delay_is_taken_too() {
    let app = app();
    assert_eq!(
        post(&app, json!({"name": "Pending", "product": PER_USER}))
            .await
            .status,
        StatusCode::CREATED
    );
    let reply = post(&app, json!({"name": "PENDING", "product": PREMIUM})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.json()["type"], "urn:autoclaim:problem:name-taken");
    // Renaming another policy to it is refused as well.
    let reply = send(
        &app.router,
        "PATCH",
        &policy_uri(TENANT, "p-rpa"),
        Some(&ga()),
        Some(&json!({"name": "pending"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn policies_per_tenant_are_bounded() {
    let app = app_with(Duration::from_secs(7200), 3, true);
    assert_eq!(
        post(&app, json!({"name": "Third", "product": PER_USER}))
            .await
            .status,
        StatusCode::CREATED
    );
    let reply = post(&app, json!({"name": "Fourth", "product": PER_USER})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(
        reply.json()["type"],
        "urn:autoclaim:problem:too-many-policies"
    );
    // A deleted policy frees its place.
    let reply = send(
        &app.router,
        "DELETE",
        &policy_uri(TENANT, "p-rpa"),
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        post(&app, json!({"name": "Fourth", "product": PER_USER}))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn patch_validation() {
    let app = app();
    let uri = policy_uri(TENANT, "p-flows");
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({}), StatusCode::BAD_REQUEST, ""),
        (json!({"color": "red"}), StatusCode::BAD_REQUEST, ""),
        (json!({"name": null}), StatusCode::BAD_REQUEST, ""),
        (json!({"enabled": "no"}), StatusCode::BAD_REQUEST, ""),
        (json!([1]), StatusCode::BAD_REQUEST, ""),
        (
            json!({"deleted": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "deleted",
        ),
        (
            json!({"policyId": "other"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "policyId",
        ),
        (
            json!({"changedBy": "me", "enabled": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changedBy",
        ),
        (
            json!({"name": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (json!({"name": "RPA"}), StatusCode::CONFLICT, ""),
        (
            json!({"product": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "product",
        ),
        (
            json!({"backupProducts": [PER_USER]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "backupProducts",
        ),
        (
            json!({"excludedApps": [{"product": PER_USER, "planIds": [FLOW_PER_USER_PLAN]}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "excludedApps.planIds",
        ),
    ];
    for (body, status, field) in cases {
        let reply = send(&app.router, "PATCH", &uri, Some(&ga()), Some(&body)).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(reply.is_problem(), "{body}: {}", reply.text());
        if !field.is_empty() {
            assert!(
                field_errors(&reply).contains(&field.to_owned()),
                "{body}: {}",
                reply.text()
            );
        }
    }
    let reply = send(
        &app.router,
        "PATCH",
        &policy_uri(TENANT, "no-such"),
        Some(&ga()),
        Some(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(app.writer.writes().is_empty());
}

#[tokio::test]
async fn settings_validation() {
    let app = app();
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({"scope": "EVERYWHERE"}), StatusCode::BAD_REQUEST, ""),
        (
            json!({"autoclaimEnabled": "true"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            json!({"autoclaimEnabled": true, "extra": 1}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        // proto3 enums are open: the JSON mapping reads a number the schema does not name, and the
        // validation refuses it with the field named.
        (
            json!({"autoclaimEnabled": true, "scope": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scope",
        ),
        (
            json!({"autoclaimEnabled": true, "scope": "EVERYWHERE"}),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            json!({"autoclaimEnabled": true, "changedAt": "2026-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changedAt",
        ),
        (
            json!({"autoclaimEnabled": true, "changedBy": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "changedBy",
        ),
        (
            json!({"autoclaimEnabled": true, "tenantId": OTHER}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tenantId",
        ),
    ];
    for (body, status, field) in cases {
        let reply = send(
            &app.router,
            "PUT",
            &settings_uri(TENANT),
            Some(&ga()),
            Some(&body),
        )
        .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(reply.is_problem(), "{body}: {}", reply.text());
        if !field.is_empty() {
            assert!(
                field_errors(&reply).contains(&field.to_owned()),
                "{body}: {}",
                reply.text()
            );
        }
    }
    assert!(app.writer.writes().is_empty());
    // proto names are read too (pbjson), and a scope change is written.
    let reply = send(
        &app.router,
        "PUT",
        &settings_uri(TENANT),
        Some(&ga()),
        Some(&json!({"autoclaim_enabled": true, "scope": "MANAGED_ENVIRONMENTS_ONLY"})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["settings"]["scope"],
        "MANAGED_ENVIRONMENTS_ONLY"
    );
}

#[tokio::test]
async fn bodies_content_types_and_sizes() {
    let app = app();
    let uri = policies_uri(TENANT);
    let request = |content_type: Option<&str>, body: Vec<u8>| {
        let mut r = Request::post(&uri).header(header::AUTHORIZATION, format!("Bearer {}", ga()));
        if let Some(ct) = content_type {
            r = r.header(header::CONTENT_TYPE, ct);
        }
        r.body(Body::from(body)).unwrap()
    };
    let ok = br#"{"name":"A","product":"power_automate_per_user"}"#.to_vec();
    let reply = send_raw(&app.router, request(None, ok.clone())).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.is_problem());
    let reply = send_raw(&app.router, request(Some("text/plain"), ok.clone())).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply = send_raw(
        &app.router,
        request(Some("application/json; charset=utf-8"), ok),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    for bad in [
        &b""[..],
        b"{",
        b"null",
        b"\xff\xfe",
        b"{\"name\":\"A\",\"name\":\"B\",\"product\":\"power_automate_per_user\"}",
    ] {
        let reply = send_raw(&app.router, request(Some("application/json"), bad.to_vec())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{:?}: {}",
            String::from_utf8_lossy(bad),
            reply.text()
        );
        assert!(reply.is_problem());
    }
    let mut big = br#"{"name":"A","product":"power_automate_per_user","excludedApps":[{"product":"power_automate_per_user","planIds":["#.to_vec();
    while big.len() <= api::MAX_BODY_BYTES {
        big.extend_from_slice(br#""113feb6c-3fe4-4440-bddc-54d774bf0318","#);
    }
    big.extend_from_slice(br#""x"]}]}"#);
    let reply = send_raw(&app.router, request(Some("application/json"), big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.is_problem());
    assert_eq!(app.writer.writes().len(), 1);
}

#[tokio::test]
async fn report_query_validation() {
    let app = app();
    for query in [
        "days=2",
        "days=abc",
        "days=-1",
        "days=",
        "format=xml",
        "days=7&days=30",
        "color=red",
        "days=7&format=csv&x=1",
    ] {
        let reply = send(
            &app.router,
            "GET",
            &format!("/v1/tenants/{TENANT}/report?{query}"),
            Some(&ga()),
            None,
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text()
        );
        assert!(reply.is_problem(), "{query}");
    }
    for days in [1, 7, 30, 90] {
        let reply = send(
            &app.router,
            "GET",
            &format!("/v1/tenants/{TENANT}/report?days={days}&format=json"),
            Some(&ga()),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{days}");
        assert_eq!(reply.json()["days"], days);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_and_the_api_describes_itself() {
    let app = app();
    let reply = send(&app.router, "GET", "/v1/nope", Some(&ga()), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.is_problem());
    let reply = send(
        &app.router,
        "POST",
        &settings_uri(TENANT),
        Some(&ga()),
        Some(&json!({})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.is_problem());
    let reply = send(&app.router, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert_eq!(doc, serde_json::from_str::<Value>(api::OPENAPI).unwrap());
    // Every route and method the API serves is documented, with its errors.
    let routes = [
        ("/v1/tenants/{tenantId}/settings", vec!["get", "put"]),
        ("/v1/tenants/{tenantId}/policies", vec!["get", "post"]),
        (
            "/v1/tenants/{tenantId}/policies/{policyId}",
            vec!["get", "patch", "delete"],
        ),
        ("/v1/tenants/{tenantId}/report", vec!["get"]),
        ("/v1/tenants/{tenantId}/audit", vec!["get"]),
        ("/v1/catalog", vec!["get"]),
    ];
    for (path, methods) in routes {
        for method in methods {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not documented");
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
}

// ------------------------------------------------------------------ catalog and console

#[tokio::test]
async fn the_catalog_lists_products_and_plans_to_any_global_administrator() {
    let app = app();
    // The catalog is the same for every tenant: a Global Administrator of any tenant reads it.
    for tenant in [TENANT, OTHER] {
        let reply = send(
            &app.router,
            "GET",
            "/v1/catalog",
            Some(&hs256(&claims(tenant))),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.content_type(), "application/json");
        let products = reply.json()["products"].as_array().unwrap().clone();
        let keys: Vec<&str> = products
            .iter()
            .map(|p| p["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, [PER_USER, PREMIUM]);
        let per_user = &products[0];
        assert_eq!(per_user["displayName"], "Power Automate per user plan");
        assert_eq!(per_user["autoclaimApp"], "Power Automate per User Plan");
        assert_eq!(per_user["skuPartNumber"], "FLOW_PER_USER");
        let plan = |product: &Value, id: &str| {
            product["plans"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("no plan {id} in {product}"))
        };
        let granting = plan(per_user, FLOW_PER_USER_PLAN);
        assert_eq!(granting["name"], "FLOW_PER_USER");
        assert_eq!(granting["grants"], json!(["premium_cloud_flows"]));
        assert_eq!(plan(per_user, EXCHANGE_PLAN)["grants"], json!([]));
        assert_eq!(plan(&products[1], CDS_RPA_PLAN)["name"], "CDS_ATTENDED_RPA");
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    }
    // Refused like every other route: no token, a bad one, no role; it takes no parameters and is
    // read-only.
    let refused = [
        (None, StatusCode::UNAUTHORIZED),
        (Some("garbage".to_owned()), StatusCode::UNAUTHORIZED),
        (
            Some(hs256(&with(
                claims(TENANT),
                "wids",
                json!([HELPDESK_ADMIN]),
            ))),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (token, status) in refused {
        let reply = send(&app.router, "GET", "/v1/catalog", token.as_deref(), None).await;
        assert_eq!(reply.status, status, "{}", reply.text());
        assert!(reply.is_problem());
    }
    let reply = send(
        &app.router,
        "GET",
        "/v1/catalog?tenant=x",
        Some(&ga()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = send(
        &app.router,
        "POST",
        "/v1/catalog",
        Some(&ga()),
        Some(&json!({})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(app.writer.writes().is_empty());
}

#[tokio::test]
async fn the_console_is_static_files_with_strict_headers() {
    let router = autoclaim::admin::console::router();
    let page = send(&router, "GET", "/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.content_type(), "text/html; charset=utf-8");
    let html = page.text();
    for asset in ["/console/app.js", "/console/app.css", "/console/icon.svg"] {
        assert!(html.contains(asset), "the page links {asset}");
        let reply = send(&router, "GET", asset, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(!reply.body.is_empty());
        let expected = match asset.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            _ => "image/svg+xml",
        };
        assert_eq!(reply.content_type(), expected, "{asset}");
    }
    // Only this origin's files and no inline code; never framed; no sniffing; no referrer.
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-cache, private");
    // The page holds no data: it is the same without a token, and carries no token.
    assert!(!html.contains("eyJ"));
    let reply = send(&router, "GET", "/?token=x", None, None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.is_problem());
}

// ------------------------------------------------------------------ properties: never a 5xx

mod properties {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        })
    }

    /// One app for all cases (writes pile up in it, which explores full tenants too).
    fn shared() -> &'static (Router, String) {
        static APP: OnceLock<(Router, String)> = OnceLock::new();
        APP.get_or_init(|| (app_with(Duration::from_secs(7200), 20, true).router, ga()))
    }

    const KEYS: &[&str] = &[
        "name",
        "product",
        "backupProducts",
        "backup_products",
        "excludedApps",
        "excluded_apps",
        "planIds",
        "plan_ids",
        "enabled",
        "deleted",
        "tenantId",
        "policyId",
        "createdAt",
        "changedAt",
        "changedBy",
        "autoclaimEnabled",
        "autoclaim_enabled",
        "scope",
    ];

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(PER_USER.to_owned()),
            Just(PREMIUM.to_owned()),
            Just(EXCHANGE_PLAN.to_owned()),
            Just(FLOW_PER_USER_PLAN.to_owned()),
            Just(CDS_RPA_PLAN.to_owned()),
            Just("MANAGED_ENVIRONMENTS_ONLY".to_owned()),
            Just("2026-03-02T08:00:00Z".to_owned()),
            Just("Flows".to_owned()),
            "\\PC{0,70}",
            ".{0,20}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..8).prop_map(Value::Array),
                btree_map(key(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
            1 => "[a-zA-Z_]{0,12}",
        ]
    }

    /// Mostly objects of the schema's field names, sometimes anything.
    fn body() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => btree_map(key(), json_value(), 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json_value(),
        ]
    }

    fn check(reply: &Reply, what: &str) -> Result<(), TestCaseError> {
        prop_assert!(
            reply.status.as_u16() < 500,
            "{what}: {} {}",
            reply.status,
            reply.text()
        );
        if reply.status.as_u16() >= 400 {
            prop_assert_eq!(reply.content_type(), "application/problem+json", "{}", what);
            if what.starts_with("HEAD ") {
                // A response to HEAD has headers only.
                prop_assert!(reply.body.is_empty());
                return Ok(());
            }
            let problem: Value = serde_json::from_slice(&reply.body).unwrap();
            prop_assert_eq!(&problem["status"], &json!(reply.status.as_u16()));
        }
        Ok(())
    }

    const WRITES: [(&str, &str); 4] = [
        ("POST", "/v1/tenants/tenant-a/policies"),
        ("PATCH", "/v1/tenants/tenant-a/policies/p-flows"),
        ("PATCH", "/v1/tenants/tenant-a/policies/p-rpa"),
        ("PUT", "/v1/tenants/tenant-a/settings"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn json_bodies_never_cause_a_server_error(target in 0..WRITES.len(), body in body()) {
            let (router, token) = shared();
            let (method, uri) = WRITES[target];
            let reply = runtime().block_on(send(router, method, uri, Some(token), Some(&body)));
            check(&reply, &format!("{method} {uri} {body}"))?;
        }

        #[test]
        fn raw_bodies_never_cause_a_server_error(
            target in 0..WRITES.len(),
            bytes in vec(any::<u8>(), 0..512),
            content_type in proptest::sample::select(vec!["application/json", "application/merge-patch+json", "text/plain", ""]),
        ) {
            let (router, token) = shared();
            let (method, uri) = WRITES[target];
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            if !content_type.is_empty() {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            let reply = runtime().block_on(send_raw(router, request.body(Body::from(bytes)).unwrap()));
            check(&reply, &format!("{method} {uri} raw"))?;
        }

        #[test]
        fn paths_queries_and_tokens_never_cause_a_server_error(
            segment in "[a-zA-Z0-9%._~-]{0,40}",
            query in "[a-z0-9=&%+]{0,40}",
            token in prop_oneof![Just(None), "[ -~]{0,200}".prop_map(Some)],
            method in proptest::sample::select(vec!["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
            shape in 0..5usize,
        ) {
            let (router, good) = shared();
            let uri = match shape {
                0 => format!("/v1/tenants/{segment}/settings?{query}"),
                1 => format!("/v1/tenants/tenant-a/policies/{segment}?{query}"),
                2 => format!("/v1/tenants/tenant-a/report?{query}"),
                3 => format!("/v1/tenants/tenant-a/{segment}"),
                _ => format!("/v1/{segment}?{query}"),
            };
            let mut request = Request::builder().method(method).uri(&uri);
            let token = token.unwrap_or_else(|| good.clone());
            if let Ok(value) = axum::http::HeaderValue::from_str(&format!("Bearer {token}")) {
                request = request.header(header::AUTHORIZATION, value);
            }
            let Ok(request) = request.body(Body::empty()) else { return Ok(()) };
            let reply = runtime().block_on(send_raw(router, request));
            check(&reply, &format!("{method} {uri}"))?;
        }
    }
}

// ------------------------------------------------------------------ configuration

#[test]
fn the_hs256_secret_never_shows_in_debug_output() {
    let args = admin_args(None, Some(SECRET), Some(ISSUER), &[AUDIENCE]);
    let settings = args.auth_settings().unwrap().expect("an HS256 key");
    for shown in [format!("{args:?}"), format!("{settings:?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}

fn admin_args(
    jwks: Option<&str>,
    secret: Option<&str>,
    issuer: Option<&str>,
    audience: &[&str],
) -> autoclaim::admin::AdminArgs {
    autoclaim::admin::AdminArgs {
        jwks: jwks.map(str::to_owned),
        hs256_secret: secret.map(Secret::new),
        issuer: issuer.map(str::to_owned),
        audience: audience.iter().map(|a| (*a).to_owned()).collect(),
        max_policies: 50,
        jwks_refresh: Duration::from_secs(3600),
    }
}

#[test]
fn the_admin_api_is_on_only_with_a_key_and_never_half_configured() {
    // Nothing configured: off.
    assert!(admin_args(None, None, None, &[])
        .auth_settings()
        .unwrap()
        .is_none());
    // An issuer or audience without a key is a mistake, not a reason to run open.
    assert!(admin_args(None, None, Some(ISSUER), &[])
        .auth_settings()
        .is_err());
    assert!(admin_args(None, None, None, &[AUDIENCE])
        .auth_settings()
        .is_err());
    // A JWKS URL must be https (tests/admin_jwks_url.rs has the rest).
    let err = admin_args(
        Some("http://login.example.test/keys"),
        None,
        Some(ISSUER),
        &[AUDIENCE],
    )
    .auth_settings()
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a usable JWKS URL"), "{err}");
    // A key without issuer or audience, a short secret, an unreadable or empty JWKS: refused.
    let build = |args: autoclaim::admin::AdminArgs| {
        Authenticator::new(args.auth_settings().unwrap().unwrap())
    };
    assert!(build(admin_args(None, Some(SECRET), None, &[AUDIENCE])).is_err());
    assert!(build(admin_args(None, Some(SECRET), Some(ISSUER), &[])).is_err());
    assert!(build(admin_args(
        None,
        Some("too-short"),
        Some(ISSUER),
        &[AUDIENCE]
    ))
    .is_err());
    assert!(build(admin_args(
        Some("/nonexistent/jwks.json"),
        None,
        Some(ISSUER),
        &[AUDIENCE]
    ))
    .is_err());
    let empty =
        std::env::temp_dir().join(format!("autoclaim-empty-jwks-{}.json", std::process::id()));
    std::fs::write(&empty, r#"{"keys": []}"#).unwrap();
    assert!(build(admin_args(
        Some(empty.to_str().unwrap()),
        None,
        Some(ISSUER),
        &[AUDIENCE]
    ))
    .is_err());
    // Either key alone is enough.
    assert!(build(admin_args(None, Some(SECRET), Some(ISSUER), &[AUDIENCE])).is_ok());
    let jwks = jwks_path();
    assert!(build(admin_args(
        Some(jwks.to_str().unwrap()),
        None,
        Some(ISSUER),
        &[AUDIENCE]
    ))
    .is_ok());
}

#[test]
fn autoclaim_run_refuses_to_start_with_a_partial_admin_configuration() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args([
            "run",
            "--brokers",
            "127.0.0.1:1",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("AUTOCLAIM_ADMIN_JWKS")
        .env_remove("AUTOCLAIM_ADMIN_HS256_SECRET")
        .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
        .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no token key"), "{stderr}");
}

#[tokio::test]
async fn autoclaim_token_mints_what_the_api_accepts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args(["token", "--tenant", TENANT, "--oid", OID, "--ttl", "5m"])
        .env("AUTOCLAIM_ADMIN_HS256_SECRET", SECRET)
        .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
        .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let principal = authenticator()
        .authenticate(Some(&format!("Bearer {token}").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(principal.tenant_id, TENANT);
    assert_eq!(principal.object_id, OID);
    assert!(principal.is_global_administrator());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args(["token", "--tenant", TENANT, "--role", HELPDESK_ADMIN])
        .env("AUTOCLAIM_ADMIN_HS256_SECRET", SECRET)
        .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
        .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let principal = authenticator()
        .authenticate(Some(&format!("Bearer {token}").parse().unwrap()))
        .await
        .unwrap();
    assert!(!principal.is_global_administrator());
}

#[tokio::test]
async fn a_guid_tenant_is_the_same_in_any_letter_case() {
    const GUID_TENANT: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
    let upper = GUID_TENANT.to_uppercase();
    let app = app();
    // A token whose tid is uppercase writes through a lowercase path; the write names the tenant
    // (and the changing user) in the one canonical form.
    let shouting = hs256(&with(claims(&upper), "oid", json!(OID.to_uppercase())));
    let reply = send(
        &app.router,
        "PUT",
        &settings_uri(GUID_TENANT),
        Some(&shouting),
        Some(&json!({"autoclaimEnabled": true, "tenantId": upper})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let writes = app.writer.writes();
    let [TableWrite::Settings(written)] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(written.tenant_id, GUID_TENANT);
    assert_eq!(written.changed_by, OID);
    // A lowercase token reads it through an uppercase path.
    let quiet = hs256(&claims(GUID_TENANT));
    let reply = send(
        &app.router,
        "GET",
        &settings_uri(&upper),
        Some(&quiet),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["settings"]["autoclaimEnabled"], true);
    // Another GUID is another tenant still.
    let other = hs256(&claims("6f9619ff-8b86-d011-b42d-00c04fc964fe"));
    let reply = send(
        &app.router,
        "GET",
        &settings_uri(&upper),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

// ------------------------------------------------------------------ strict input

#[tokio::test]
async fn patch_refuses_repeated_keys_like_post_and_put() {
    let app = app();
    let uri = policy_uri(TENANT, "p-flows");
    for body in [
        &br#"{"name":"a","name":"b"}"#[..],
        br#"{"enabled":true,"enabled":false}"#,
        br#"{"backupProducts":["power_automate_premium"],"backup_products":[]}"#,
        br#"{"excludedApps":[{"product":"power_automate_per_user","product":"power_automate_premium"}]}"#,
    ] {
        let request = Request::patch(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", ga()))
            .header(header::CONTENT_TYPE, "application/merge-patch+json")
            .body(Body::from(body.to_vec()))
            .unwrap();
        let reply = send_raw(&app.router, request).await;
        let text = String::from_utf8_lossy(body);
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{text}: {}", reply.text());
        assert!(reply.is_problem(), "{text}");
        assert!(
            reply.json()["detail"].as_str().unwrap().contains("duplicate field"),
            "{text}: {}",
            reply.text()
        );
    }
    assert!(app.writer.writes().is_empty());
}

#[tokio::test]
async fn every_route_refuses_query_parameters_it_does_not_take() {
    let app = app();
    let mut routes: Vec<(&str, String, Option<Value>)> = endpoints(TENANT)
        .into_iter()
        .filter(|e| !e.uri.contains('?'))
        .map(|e| (e.method, e.uri, e.body))
        .collect();
    routes.push(("GET", "/v1/openapi.json".to_owned(), None));
    for (method, uri, body) in &routes {
        for query in ["dryRun=true", "x", "days=7", "tenantId=tenant-b&y=1"] {
            let target = format!("{uri}?{query}");
            let reply = send(&app.router, method, &target, Some(&ga()), body.as_ref()).await;
            let is_report = uri.ends_with("/report");
            if is_report && query == "days=7" {
                assert_eq!(reply.status, StatusCode::OK, "{method} {target}");
                continue;
            }
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{method} {target}: {}",
                reply.text()
            );
            assert!(reply.is_problem(), "{method} {target}");
            let name = query.split(['=', '&']).next().unwrap();
            let detail = reply.json()["detail"].as_str().unwrap().to_owned();
            assert!(
                detail.contains(&format!("{name:?}")),
                "{method} {target}: {detail}"
            );
        }
        // Refused callers are refused first, whatever the query.
        if !uri.ends_with("openapi.json") {
            let reply = send(
                &app.router,
                method,
                &format!("{uri}?dryRun=1"),
                None,
                body.as_ref(),
            )
            .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
    }
    // The report still takes its own parameters, an empty query is no parameter at all.
    for target in [
        format!("/v1/tenants/{TENANT}/report?days=7&format=csv"),
        format!("/v1/tenants/{TENANT}/policies?"),
    ] {
        let reply = send(&app.router, "GET", &target, Some(&ga()), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{target}: {}", reply.text());
    }
    assert!(app.writer.writes().is_empty(), "a refused request wrote");
}
