//! A catalog file of five products (the two built-ins and `tests/fixtures/catalog-five.json`'s
//! three), in a test binary of its own because the catalog is per process: the engine walks four
//! backups, breadth orders custom products, directory rows and outputs use them, the admin API
//! validates against them, and the binary takes `--catalog` (and refuses a bad file at once).
mod support;
mod writer_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use autoclaim::admin::api::{self, AdminState};
use autoclaim::admin::auth::{self, AuthSettings, Authenticator, GLOBAL_ADMINISTRATOR};
use autoclaim::admin::view::{AdminView, SharedView};
use autoclaim::admin::writer::PolicyWriter;
use autoclaim::domain::catalog::Catalog;
use autoclaim::pipeline::security::Secret;
use autoclaim::wire::pb;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use support::*;
use tower::ServiceExt;
use writer_support::MemoryWriter;

const FIVE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/catalog-five.json"
);
const FLOWS_BASIC: &str = "flows_basic";
const FLOWS_PLUS: &str = "flows_plus";
const RPA_SUITE: &str = "rpa_suite";
const FLOWS_BASIC_SKU: &str = "a1000000-0000-4000-8000-000000000001";
/// The SKU of each product, from the fixture (and the built-ins' from the design).
const SKUS: [(&str, &str); 5] = [
    (PER_USER, PER_USER_SKU),
    (PREMIUM, PREMIUM_SKU),
    (FLOWS_BASIC, FLOWS_BASIC_SKU),
    (FLOWS_PLUS, "a1000000-0000-4000-8000-000000000002"),
    (RPA_SUITE, "a1000000-0000-4000-8000-000000000003"),
];
/// FLOWS_BASIC: the plan of flows_basic that grants premium flows.
const FLOWS_BASIC_PLAN: &str = "b1000000-0000-4000-8000-000000000001";
/// FLOWS_PLUS_STORAGE: a plan of flows_plus that grants nothing.
const FLOWS_PLUS_STORAGE: &str = "b1000000-0000-4000-8000-000000000003";

const T: &str = "contoso";
const LIVE: i64 = T0 + 2 * HOUR;

/// Every test starts here; installing the same file again is allowed.
fn five_products() {
    assert_eq!(Catalog::install_file(Path::new(FIVE)).unwrap(), 5);
}

// ------------------------------------------------------------------------------ engine

/// Asserts an ASSIGNED decision of `product` (by key and SKU) from `policy`.
#[track_caller]
fn assigned<'a>(d: &'a pb::Decision, product: &str, policy: &str) -> &'a pb::LicenseAssignment {
    assert_outcome(d, pb::Outcome::Assigned, pb::Reason::Unspecified);
    let a = d.assignment.as_ref().expect("an assignment");
    let sku = SKUS.iter().find(|(key, _)| *key == product).unwrap().1;
    assert_eq!(
        (a.product.as_str(), a.policy_id.as_str(), a.sku_id.as_str()),
        (product, policy, sku),
        "decision {d:?}"
    );
    a
}

/// Autoclaim on, one seat of each of the five products, members u1..u9, and the policies.
fn tenant_with(policies: &[PolicySpec]) -> Run {
    five_products();
    let mut r = Run::new(delay_ms(HOUR));
    r.feed(autoclaim_on(T, T0));
    for product in [PER_USER, PREMIUM, FLOWS_BASIC, FLOWS_PLUS, RPA_SUITE] {
        r.feed(inventory(T, product, 1, 0, T0));
    }
    for i in 1..10 {
        r.feed(UserSpec::member(T, &format!("u{i}")).record());
    }
    for p in policies {
        r.feed(p.record());
    }
    r
}

#[test]
fn four_backups_are_walked_in_order_as_seats_run_out() {
    let chain = [PER_USER, FLOWS_PLUS, RPA_SUITE, FLOWS_BASIC, PREMIUM];
    let policy = chain[1..]
        .iter()
        .fold(PolicySpec::new(T, "pol", chain[0], T0), |p, b| p.backup(b));
    let mut r = tenant_with(&[policy]);
    for (i, product) in chain.iter().enumerate() {
        let user = format!("u{}", i + 1);
        let d = r.decide(Ev::saved(T, &format!("e{i}"), &user, LIVE + i as i64));
        assigned(&d, product, "pol");
    }
    let d = r.decide(Ev::saved(T, "e-last", "u9", LIVE + MIN));
    assert_no_licences(&d);
    // The failure names the narrowest product the claim was for: the primary (breadth 1, first).
    assert_eq!(d.product, PER_USER);
}

#[test]
fn breadth_orders_custom_products_too() {
    // rpa_suite grants two capabilities, flows_basic one: a premium-flow need takes the narrower
    // policy although the broader one is older.
    let mut r = tenant_with(&[
        PolicySpec::new(T, "broad", RPA_SUITE, T0 - HOUR),
        PolicySpec::new(T, "narrow", FLOWS_BASIC, T0),
    ]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assigned(&d, FLOWS_BASIC, "narrow");
    // An attended RPA need: only rpa_suite grants it.
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE).rpa());
    assigned(&d, RPA_SUITE, "broad");
}

#[test]
fn a_custom_licence_in_the_directory_entitles_unless_its_granting_plan_is_disabled() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", FLOWS_PLUS, T0)]);
    r.feed(
        UserSpec::member(T, "u1")
            .licence(FLOWS_BASIC_SKU, &[])
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    assert_outcome(&d, pb::Outcome::AlreadyEntitled, pb::Reason::Unspecified);
    r.feed(
        UserSpec::member(T, "u2")
            .licence(&FLOWS_BASIC_SKU.to_uppercase(), &[FLOWS_BASIC_PLAN])
            .record(),
    );
    let d = r.decide(Ev::saved(T, "e2", "u2", LIVE));
    assigned(&d, FLOWS_PLUS, "pol");
}

#[test]
fn an_excluded_app_of_a_custom_product_is_a_disabled_plan_of_the_assignment() {
    let mut r = tenant_with(&[PolicySpec::new(T, "pol", FLOWS_PLUS, T0)
        .exclude(FLOWS_PLUS, &[&FLOWS_PLUS_STORAGE.to_uppercase()])]);
    let d = r.decide(Ev::saved(T, "e1", "u1", LIVE));
    let a = assigned(&d, FLOWS_PLUS, "pol");
    assert_eq!(a.disabled_plan_ids, vec![FLOWS_PLUS_STORAGE.to_owned()]);
}

// ------------------------------------------------------------------------------ admin API

const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
const ISSUER: &str = "https://login.example.test/{tenantid}/v2.0";
const AUDIENCE: &str = "api://autoclaim-admin";

fn admin_router() -> axum::Router {
    five_products();
    let authenticator = Authenticator::new(AuthSettings {
        jwks: None,
        hs256_secret: Some(Secret::new(SECRET)),
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
    })
    .unwrap();
    let mut view = AdminView::new(Duration::from_secs(3600));
    view.mark_loaded();
    let writer = Arc::new(MemoryWriter::new()) as Arc<dyn PolicyWriter>;
    api::router(AdminState::new(
        SharedView::new(view),
        writer,
        authenticator,
        50,
    ))
}

fn token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": ISSUER.replace("{tenantid}", T),
        "aud": AUDIENCE,
        "tid": T,
        "oid": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "wids": [GLOBAL_ADMINISTRATOR],
        "iat": now,
        "nbf": now - 10,
        "exp": now + 3600,
    });
    auth::mint_hs256(SECRET.as_bytes(), &claims).unwrap()
}

async fn create_policy(router: &axum::Router, body: Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method("POST")
        .uri(format!("/v1/tenants/{T}/policies"))
        .header(header::AUTHORIZATION, format!("Bearer {}", token()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn problem_fields(body: &Value) -> Vec<&str> {
    body["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_admin_api_accepts_four_backups_from_the_catalog() {
    let router = admin_router();
    let (status, body) = create_policy(
        &router,
        json!({"name": "Four backups", "product": FLOWS_BASIC,
               "backupProducts": [PER_USER, FLOWS_PLUS, PREMIUM, RPA_SUITE], "enabled": true}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let keys: Vec<&str> = body["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [FLOWS_BASIC, PER_USER, FLOWS_PLUS, PREMIUM, RPA_SUITE]
    );
    assert_eq!(body["assignedProduct"], "Flows Basic");
    assert_eq!(body["autoclaimApp"], "Flows Basic");
}

#[tokio::test]
async fn the_admin_api_refuses_five_backups() {
    let router = admin_router();
    let (status, body) = create_policy(
        &router,
        json!({"name": "Five backups", "product": FLOWS_BASIC,
               "backupProducts": [PER_USER, FLOWS_PLUS, PREMIUM, RPA_SUITE, "power_automate_per_user"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(problem_fields(&body).contains(&"backupProducts"), "{body}");
    // Refused for the count (five products cannot make five distinct backups and a primary).
    assert!(body.to_string().contains("at most 4 backup"), "{body}");
}

#[tokio::test]
async fn the_admin_api_refuses_a_product_outside_the_catalog() {
    let router = admin_router();
    for body in [
        json!({"name": "A", "product": "office_e5"}),
        json!({"name": "B", "product": FLOWS_BASIC, "backupProducts": ["office_e5"]}),
    ] {
        let (status, reply) = create_policy(&router, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert!(
            reply.to_string().contains(RPA_SUITE),
            "the problem lists the catalog's keys: {reply}"
        );
    }
}

// ------------------------------------------------------------------------------ the binary

#[test]
fn the_shipped_example_catalog_is_valid() {
    // Read at run time (not include_str!): the Docker build leaves deploy/ out.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/catalog.example.json");
    autoclaim::domain::catalog::CatalogFile::read(&example).unwrap();
    // The binary takes it too (installing it in this process would be refused: another catalog).
    let out = autoclaim(&["replay", "--catalog", example.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn autoclaim(args: &[&str], input: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoclaim"));
    cmd.args(args)
        .env_remove("AUTOCLAIM_PROPAGATION_DELAY")
        .env_remove("AUTOCLAIM_CATALOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = input {
        cmd.arg("--input").arg(path);
    }
    cmd.output().expect("the binary runs")
}

/// A file of its own for each call: tests run in parallel, and one rewriting a file another reads
/// (truncated first) would hand that one an empty input.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("catalog-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn jsonl(records: &[pb::ReplayRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend(serde_json::to_vec(r).unwrap());
        out.push(b'\n');
    }
    out
}

/// Autoclaim on, a policy of a custom product backed by premium, one seat of each, two claims.
fn custom_product_input() -> PathBuf {
    let records = [
        autoclaim_on(T, T0),
        inventory(T, FLOWS_PLUS, 1, 0, T0),
        inventory(T, PREMIUM, 1, 0, T0),
        UserSpec::member(T, "u1").record(),
        UserSpec::member(T, "u2").record(),
        PolicySpec::new(T, "pol", FLOWS_PLUS, T0)
            .backup(PREMIUM)
            .record(),
        Ev::saved(T, "e1", "u1", LIVE).record(),
        Ev::saved(T, "e2", "u2", LIVE + 1).record(),
    ];
    temp_file("custom.jsonl", &jsonl(&records))
}

#[test]
fn replay_with_a_catalog_file_assigns_a_custom_product() {
    let input = custom_product_input();
    let out = autoclaim(&["replay", "--catalog", FIVE], Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let decisions: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let assigned: Vec<&str> = decisions
        .iter()
        .map(|d| d["assignment"]["product"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(assigned, [FLOWS_PLUS, PREMIUM], "{decisions:?}");
}

#[test]
fn replay_without_the_catalog_file_rejects_the_custom_product() {
    let input = custom_product_input();
    let out = autoclaim(&["replay"], Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("flows_plus"), "{stderr}");
}

#[test]
fn the_catalog_comes_from_the_environment_too() {
    let input = custom_product_input();
    let out = Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args(["replay", "--input"])
        .arg(&input)
        .env("AUTOCLAIM_CATALOG", FIVE)
        .env_remove("AUTOCLAIM_PROPAGATION_DELAY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_with_a_bad_catalog_stops_at_once_with_the_error() {
    let bad = temp_file(
        "bad.json",
        br#"{"products": [{"key": "broken", "displayName": "Broken", "skuId": "a1000000-0000-4000-8000-000000000009",
            "skuPartNumber": "BROKEN", "autoclaimApp": "Broken",
            "servicePlans": [{"name": "BROKEN", "id": "b1000000-0000-4000-8000-000000000009", "grants": ["unattended_rpa"]}]}]}"#,
    );
    let started = std::time::Instant::now();
    // A broker address that answers nothing: the command must not get as far as trying it.
    let out = autoclaim(
        &[
            "run",
            "--catalog",
            bad.to_str().unwrap(),
            "--brokers",
            "192.0.2.1:9092",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("product broken") && stderr.contains("unattended_rpa"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
}
