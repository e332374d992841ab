//! The admin API's audit log in process, with the in-memory writer (no broker): every change is
//! written with its audit entry, who made it and the versions before and after; the log answers
//! "who changed this policy", newest first and a page at a time; refused and failed changes leave
//! no entry; bad query parameters are 400 problems (checked by property tests too).
mod writer_support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use autoclaim::admin::api::{self, AdminState};
use autoclaim::admin::auth::{self, AuthSettings, Authenticator, GLOBAL_ADMINISTRATOR};
use autoclaim::admin::view::{AdminView, SharedView};
use autoclaim::admin::writer::{PolicyWriter, TableWrite};
use autoclaim::domain::time::Timestamp;
use autoclaim::pipeline::security::Secret;
use autoclaim::wire::convert::{timestamp, to_wire_timestamp};
use autoclaim::wire::pb;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use writer_support::{MemoryWriter, FIRST_AUDIT_OFFSET};

const SECRET: &str = "audit-test-secret-0123456789-abcdefghijk";
const ISSUER: &str = "https://login.example.test/{tenantid}/v2.0";
const AUDIENCE: &str = "api://autoclaim-admin";
const TENANT: &str = "tenant-a";
const OTHER: &str = "tenant-b";
const OID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const OTHER_OID: &str = "7d3e1f2a-0000-4000-8000-000000000002";
const PER_USER: &str = "power_automate_per_user";
const DELAY: Duration = Duration::from_secs(2 * 3600);

// ------------------------------------------------------------------ fixture

struct App {
    router: Router,
    writer: Arc<MemoryWriter>,
    view: SharedView,
}

fn authenticator() -> Authenticator {
    Authenticator::new(AuthSettings {
        jwks: None,
        hs256_secret: Some(Secret::new(SECRET)),
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
    })
    .unwrap()
}

fn app() -> App {
    let mut view = AdminView::new(DELAY);
    view.mark_loaded();
    let view = SharedView::new(view);
    let writer = Arc::new(MemoryWriter::new());
    let state = AdminState::new(
        view.clone(),
        Arc::clone(&writer) as Arc<dyn PolicyWriter>,
        authenticator(),
        50,
    );
    App {
        router: api::router(state),
        writer,
        view,
    }
}

fn claims(tid: &str, oid: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "iss": ISSUER.replace("{tenantid}", tid),
        "aud": AUDIENCE,
        "tid": tid,
        "oid": oid,
        "wids": [GLOBAL_ADMINISTRATOR],
        "iat": now,
        "nbf": now - 10,
        "exp": now + 3600,
    })
}

fn token(claims: &Value) -> String {
    auth::mint_hs256(SECRET.as_bytes(), claims).unwrap()
}

/// The Global Administrator of tenant A, with a display name.
fn megan() -> String {
    let mut c = claims(TENANT, OID);
    c["name"] = json!("Megan Bowen");
    token(&c)
}

/// Another Global Administrator of tenant A, whose token has no name.
fn alex() -> String {
    token(&claims(TENANT, OTHER_OID))
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn is_problem(&self) -> bool {
        self.content_type == "application/problem+json"
            && self.json()["status"] == self.status.as_u16()
    }
}

async fn send(
    app: &App,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
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
    let response = app
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        content_type,
        body,
    }
}

fn audit_uri(query: &str) -> String {
    format!("/v1/tenants/{TENANT}/audit{query}")
}

async fn audit(app: &App, query: &str) -> Value {
    let reply = send(app, "GET", &audit_uri(query), Some(&megan()), None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

fn entry_ids(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entryId"].as_str().unwrap().to_owned())
        .collect()
}

fn actions(page: &Value) -> Vec<&str> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

fn millis(value: &Value) -> i64 {
    let wire: pbjson_types::Timestamp = serde_json::from_value(value.clone()).unwrap();
    timestamp("t", Some(wire)).unwrap().as_millis()
}

async fn create_policy(app: &App, token: &str, name: &str) -> String {
    let reply = send(
        app,
        "POST",
        &format!("/v1/tenants/{TENANT}/policies"),
        Some(token),
        Some(json!({"name": name, "product": PER_USER, "enabled": true})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    reply.json()["policy"]["policyId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn patch_policy(app: &App, token: &str, id: &str, body: Value) {
    let uri = format!("/v1/tenants/{TENANT}/policies/{id}");
    let reply = send(app, "PATCH", &uri, Some(token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

async fn put_settings(app: &App, token: &str, enabled: bool) -> Reply {
    let uri = format!("/v1/tenants/{TENANT}/settings");
    send(
        app,
        "PUT",
        &uri,
        Some(token),
        Some(json!({"autoclaimEnabled": enabled})),
    )
    .await
}

// ------------------------------------------------------------------ who changed this policy

#[tokio::test]
async fn who_changed_a_policy_is_answered_newest_first_with_the_versions_before_and_after() {
    let app = app();
    let id = create_policy(&app, &megan(), "Flows").await;
    patch_policy(&app, &alex(), &id, json!({"name": "Premium flows"})).await;
    patch_policy(&app, &megan(), &id, json!({"enabled": false})).await;
    let other = create_policy(&app, &alex(), "Other").await;
    assert_eq!(
        put_settings(&app, &megan(), true).await.status,
        StatusCode::OK
    );
    let uri = format!("/v1/tenants/{TENANT}/policies/{id}");
    assert_eq!(
        send(&app, "DELETE", &uri, Some(&alex()), None).await.status,
        StatusCode::OK
    );

    let page = audit(&app, &format!("?policyId={id}")).await;
    assert_eq!(page["tenantId"], TENANT);
    assert_eq!(
        actions(&page),
        [
            "POLICY_DELETED",
            "POLICY_DISABLED",
            "POLICY_UPDATED",
            "POLICY_CREATED"
        ]
    );
    assert!(
        page.get("next").is_none(),
        "one page holds them all: {page}"
    );
    let entries = page["entries"].as_array().unwrap();
    let who: Vec<(&str, Option<&str>)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"]["objectId"].as_str().unwrap(),
                e["actor"]["displayName"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            (OTHER_OID, None),
            (OID, Some("Megan Bowen")),
            (OTHER_OID, None),
            (OID, Some("Megan Bowen")),
        ]
    );
    let [deleted, disabled, renamed, created] = entries.as_slice() else {
        unreachable!()
    };
    assert!(
        created.get("before").is_none(),
        "nothing before a create: {created}"
    );
    assert_eq!(created["after"]["policy"]["name"], "Flows");
    assert_eq!(renamed["before"]["policy"]["name"], "Flows");
    assert_eq!(renamed["after"]["policy"]["name"], "Premium flows");
    assert_eq!(disabled["before"]["policy"]["enabled"], true);
    assert!(
        disabled["after"]["policy"].get("enabled").is_none(),
        "false is left out"
    );
    assert_eq!(deleted["before"]["policy"]["name"], "Premium flows");
    assert_eq!(deleted["after"]["policy"]["deleted"], true);
    for e in entries {
        assert_eq!(e["policyId"], id.as_str());
        let made = millis(&e["madeAt"]);
        assert_eq!(made, millis(&e["after"]["policy"]["changedAt"]));
        assert_eq!(millis(&e["inForceAt"]), made + DELAY.as_millis() as i64);
    }

    // Unfiltered: every change of the tenant, the settings and the other policy too.
    let all = audit(&app, "").await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 6);
    assert_eq!(actions(&all)[1], "SETTINGS_CHANGED");
    assert!(all["entries"][1].get("policyId").is_none());
    assert_eq!(all["entries"][2]["policyId"], other.as_str());

    // Each version was written together with the entry that records it, in the same order.
    let written = app.writer.writes();
    let recorded = app.writer.audit_entries();
    assert_eq!(written.len(), recorded.len());
    for (version, entry) in written.iter().zip(&recorded) {
        let after = entry.after.clone().and_then(|v| v.version);
        match (version, after) {
            (TableWrite::Policy(p), Some(pb::audited_version::Version::Policy(a))) => {
                assert_eq!(p, &a)
            }
            (TableWrite::Settings(s), Some(pb::audited_version::Version::Settings(a))) => {
                assert_eq!(s, &a)
            }
            other => panic!("the entry does not record its version: {other:?}"),
        }
    }
    let mut listed = entry_ids(&all);
    listed.reverse();
    let ids: Vec<String> = recorded.iter().map(|e| e.entry_id.clone()).collect();
    assert_eq!(listed, ids, "the API lists what it wrote, newest first");
}

#[tokio::test]
async fn pages_follow_the_cursor_and_stay_put_while_new_entries_arrive() {
    let app = app();
    let id = create_policy(&app, &megan(), "Flows").await;
    for i in 0..6 {
        patch_policy(&app, &megan(), &id, json!({"name": format!("Flows {i}")})).await;
    }
    let everything = entry_ids(&audit(&app, "?limit=500").await);
    assert_eq!(everything.len(), 7);

    let first = audit(&app, "?limit=3").await;
    assert_eq!(entry_ids(&first), everything[..3]);
    // A change made between two pages comes first on the next fresh read, not on the next page.
    patch_policy(&app, &megan(), &id, json!({"name": "Newest"})).await;
    let cursor = first["next"].as_str().unwrap().to_owned();
    let second = audit(&app, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(entry_ids(&second), everything[3..6]);
    let cursor = second["next"].as_str().unwrap().to_owned();
    let last = audit(&app, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(entry_ids(&last), everything[6..]);
    assert!(last.get("next").is_none());
    assert_eq!(
        audit(&app, "?limit=1").await["entries"][0]["after"]["policy"]["name"],
        "Newest"
    );
    // The default page is 50.
    assert_eq!(
        audit(&app, "").await["entries"].as_array().unwrap().len(),
        8
    );
}

#[tokio::test]
async fn since_leaves_out_older_entries() {
    let app = app();
    let old = pb::AuditEntry {
        entry_id: "from-last-year".into(),
        tenant_id: TENANT.into(),
        action: pb::AuditAction::SettingsChanged as i32,
        made_at: Some(to_wire_timestamp(Timestamp::from_millis(
            Timestamp::now().as_millis() - 400 * 24 * 3_600_000,
        ))),
        ..Default::default()
    };
    app.view.write().apply_audit(old, 0).unwrap();
    create_policy(&app, &megan(), "Flows").await;
    assert_eq!(
        audit(&app, "").await["entries"].as_array().unwrap().len(),
        2
    );
    let day_ago = to_wire_timestamp(Timestamp::from_millis(
        Timestamp::now().as_millis() - 24 * 3_600_000,
    ));
    let day_ago = autoclaim::wire::timestamp::to_rfc3339(&day_ago).unwrap();
    let recent = audit(&app, &format!("?since={day_ago}")).await;
    assert_eq!(actions(&recent), ["POLICY_CREATED"]);
    for early in ["2000-01-01t02:00:00%2B02:00", "0426-10-27T22:53:39%2B20:50"] {
        let all = audit(&app, &format!("?since={early}")).await;
        assert_eq!(all["entries"].as_array().unwrap().len(), 2, "{early}");
    }
}

#[tokio::test]
async fn entries_read_from_the_topic_are_listed_once_beside_the_apis_own() {
    let app = app();
    create_policy(&app, &megan(), "Flows").await;
    // The feed reads the API's own entry back from the topic, and another instance's.
    let own = app.writer.audit_entries()[0].clone();
    let theirs = pb::AuditEntry {
        entry_id: "another-instance".into(),
        made_at: Some(to_wire_timestamp(Timestamp::now())),
        ..own.clone()
    };
    {
        let mut view = app.view.write();
        view.apply_audit(own.clone(), FIRST_AUDIT_OFFSET).unwrap();
        // Written by the other instance before this one's: the topic's order, not arrival's.
        view.apply_audit(theirs, FIRST_AUDIT_OFFSET - 1).unwrap();
    }
    let ids = entry_ids(&audit(&app, "").await);
    assert_eq!(ids, [own.entry_id.clone(), "another-instance".to_owned()]);
}

// ------------------------------------------------------------------ nothing without a change

#[tokio::test]
async fn refused_and_failed_changes_and_changes_of_nothing_leave_no_entry() {
    let app = app();
    let id = create_policy(&app, &megan(), "Flows").await;
    let policy = format!("/v1/tenants/{TENANT}/policies/{id}");
    let mut no_role = claims(TENANT, OID);
    no_role.as_object_mut().unwrap().remove("wids");
    let refused = [
        None,
        Some("not-a-jwt".to_owned()),
        Some(token(&claims(OTHER, OID))),
        Some(token(&no_role)),
    ];
    for token in &refused {
        let t = token.as_deref();
        let changes = [
            (
                "PUT",
                format!("/v1/tenants/{TENANT}/settings"),
                Some(json!({"autoclaimEnabled": true})),
            ),
            (
                "POST",
                format!("/v1/tenants/{TENANT}/policies"),
                Some(json!({"name": "X", "product": PER_USER})),
            ),
            ("PATCH", policy.clone(), Some(json!({"enabled": false}))),
            ("DELETE", policy.clone(), None),
        ];
        for (method, uri, body) in changes {
            let reply = send(&app, method, &uri, t, body).await;
            assert!(
                reply.status.is_client_error() && reply.is_problem(),
                "{method} {uri}"
            );
        }
        // Nor may a refused caller read the log.
        let reply = send(&app, "GET", &audit_uri(""), t, None).await;
        assert!(
            matches!(reply.status.as_u16(), 401 | 403),
            "{}",
            reply.status
        );
    }
    // A change that changes nothing writes nothing.
    patch_policy(&app, &megan(), &id, json!({"name": "Flows"})).await;
    assert_eq!(
        put_settings(&app, &megan(), true).await.status,
        StatusCode::OK
    );
    assert_eq!(
        put_settings(&app, &megan(), true).await.status,
        StatusCode::OK
    );
    // A write the topics did not take leaves no entry either.
    app.writer.set_failing(true);
    assert_eq!(
        put_settings(&app, &megan(), false).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.writer.set_failing(false);

    assert_eq!(
        actions(&audit(&app, "").await),
        ["SETTINGS_CHANGED", "POLICY_CREATED"]
    );
    assert_eq!(app.writer.audit_entries().len(), 2);
    // A token of another tenant sees nothing of this one's log.
    let reply = send(
        &app,
        "GET",
        &format!("/v1/tenants/{OTHER}/audit"),
        Some(&megan()),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(!String::from_utf8_lossy(&reply.body).contains("Flows"));
}

// ------------------------------------------------------------------ the query

#[tokio::test]
async fn bad_query_parameters_are_400_problems_naming_what_is_wrong() {
    let app = app();
    create_policy(&app, &megan(), "Flows").await;
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let cases = [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=1e2", "limit"),
        ("limit=99999999999999999999999", "limit"),
        ("limit=5&limit=6", "limit"),
        ("cursor=", "cursor"),
        ("cursor=not-hex", "cursor"),
        (&*format!("cursor={}", hex("2.5.someone-else")), "cursor"),
        (&*format!("cursor={}", hex("1.five.id")), "cursor"),
        ("policyId=", "policyId"),
        (&*format!("policyId={}", "p".repeat(257)), "policyId"),
        ("since=yesterday", "since"),
        ("since=2026-02-30T00:00:00Z", "since"),
        ("days=7", "days"),
        ("tenantId=tenant-b", "tenantId"),
    ];
    for (query, named) in cases {
        let reply = send(
            &app,
            "GET",
            &audit_uri(&format!("?{query}")),
            Some(&megan()),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "?{query}");
        assert!(reply.is_problem(), "?{query}");
        let detail = reply.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(named), "?{query}: {detail}");
    }
    // The bounds themselves are fine, and a policy nobody changed has an empty log.
    for query in ["?limit=1", "?limit=500", "?policyId=never-changed"] {
        let reply = send(&app, "GET", &audit_uri(query), Some(&megan()), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
    }
    assert!(audit(&app, "?policyId=never-changed").await["entries"]
        .as_array()
        .unwrap()
        .is_empty());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        })
    }

    /// One app with twelve changes of one policy, and a token for it.
    fn shared() -> &'static (App, String) {
        static APP: OnceLock<(App, String)> = OnceLock::new();
        APP.get_or_init(|| {
            let app = app();
            runtime().block_on(async {
                let id = create_policy(&app, &megan(), "Flows").await;
                for i in 0..11 {
                    patch_policy(&app, &megan(), &id, json!({"name": format!("Flows {i}")})).await;
                }
            });
            (app, megan())
        })
    }

    fn limit() -> impl Strategy<Value = String> {
        prop_oneof![
            (1usize..=500).prop_map(|n| n.to_string()),
            (0usize..2000).prop_map(|n| n.to_string()),
            "-?[0-9]{1,25}",
            "[ -~]{0,6}",
        ]
    }

    fn valid_limit(text: &str) -> bool {
        text.parse::<usize>().is_ok_and(|n| (1..=500).contains(&n))
    }

    fn encoded(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// A limit is taken exactly when it is 1 to 500; a page never holds more, is newest first,
        /// and its cursor leads to the entries right after it.
        #[test]
        fn a_limit_is_taken_only_from_1_to_500_and_pages_hold_at_most_that(limit in limit()) {
            let (app, token) = shared();
            let uri = audit_uri(&format!("?limit={}", encoded(&limit)));
            let reply = runtime().block_on(send(app, "GET", &uri, Some(token), None));
            if !valid_limit(&limit) {
                prop_assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", limit);
                prop_assert!(reply.is_problem());
                return Ok(());
            }
            prop_assert_eq!(reply.status, StatusCode::OK);
            let page = reply.json();
            let n: usize = limit.parse().unwrap();
            let made: Vec<i64> = page["entries"].as_array().unwrap().iter().map(|e| millis(&e["madeAt"])).collect();
            prop_assert_eq!(made.len(), n.min(12));
            prop_assert!(made.windows(2).all(|w| w[0] >= w[1]), "newest first: {:?}", made);
            prop_assert_eq!(page.get("next").is_some(), n < 12);
            if let Some(next) = page["next"].as_str() {
                let uri = audit_uri(&format!("?limit=500&cursor={next}"));
                let rest = runtime().block_on(send(app, "GET", &uri, Some(token), None)).json();
                prop_assert_eq!(rest["entries"].as_array().unwrap().len(), 12 - n);
            }
        }

        /// Whatever the query, the answer is a page or a 400 problem, never a server error.
        #[test]
        fn any_query_is_a_page_or_a_400(
            cursor in prop_oneof![Just(None), "[0-9a-f]{0,80}".prop_map(Some), "[ -~]{0,40}".prop_map(Some)],
            policy in prop_oneof![Just(None), "[ -~]{0,40}".prop_map(Some)],
            since in prop_oneof![Just(None), Just(Some("2026-03-02T08:00:00Z".to_owned())), "[ -~]{0,30}".prop_map(Some)],
        ) {
            let (app, token) = shared();
            let mut query = vec!["limit=5".to_owned()];
            for (name, value) in [("cursor", &cursor), ("policyId", &policy), ("since", &since)] {
                if let Some(v) = value {
                    query.push(format!("{name}={}", encoded(v)));
                }
            }
            let uri = audit_uri(&format!("?{}", query.join("&")));
            let reply = runtime().block_on(send(app, "GET", &uri, Some(token), None));
            prop_assert!(
                reply.status == StatusCode::OK || (reply.status == StatusCode::BAD_REQUEST && reply.is_problem()),
                "{} {}", uri, reply.status
            );
            if reply.status == StatusCode::OK {
                prop_assert!(reply.json()["entries"].as_array().unwrap().len() <= 5);
            }
        }
    }
}
