//! The admin API with its RS256 keys at a JWKS URL. The identity provider is an axum server on
//! 127.0.0.1, run by the test on a thread of its own, whose answer the test changes while the API
//! runs: keys fetched at start, rotated keys fetched when a token names them, an identity provider
//! down at start (503 for RS256, HS256 unaffected) that comes up later, failed refreshes that keep
//! the keys fetched before, bodies that are not a JWKS, and URLs refused by the configuration.
mod writer_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoclaim::admin::api::{self, AdminState};
use autoclaim::admin::auth::{self, AuthSettings, Authenticator, JwksSource, GLOBAL_ADMINISTRATOR};
use autoclaim::admin::jwks::{FetchStatus, JwksUrl, MAX_JWKS_BYTES};
use autoclaim::admin::view::{AdminView, SharedView};
use autoclaim::admin::writer::PolicyWriter;
use autoclaim::pipeline::security::Secret;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt;
use writer_support::MemoryWriter;

const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
const ISSUER: &str = "https://login.example.test/{tenantid}/v2.0";
const AUDIENCE: &str = "api://autoclaim-admin";
const TENANT: &str = "tenant-a";
const OID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const HOUR: Duration = Duration::from_secs(3600);
/// How long a condition may take before a test gives up (never reached when all is well).
const PATIENCE: Duration = Duration::from_secs(60);

// The two RSA keys of tests/admin_api.rs, made for these tests only, and their moduli.
const KEY_A_PEM: &str = include_str!("fixtures/admin-key-a.pem");
const KEY_B_PEM: &str = include_str!("fixtures/admin-key-b.pem");
const KEY_A_N: &str = include_str!("fixtures/admin-key-a.n");
const KEY_B_N: &str = include_str!("fixtures/admin-key-b.n");

/// A signing key as the test knows it: its `kid`, private PEM and public modulus.
#[derive(Clone, Copy)]
struct Key {
    kid: &'static str,
    pem: &'static str,
    n: &'static str,
}

const A: Key = Key {
    kid: "key-a",
    pem: KEY_A_PEM,
    n: KEY_A_N,
};
const B: Key = Key {
    kid: "key-b",
    pem: KEY_B_PEM,
    n: KEY_B_N,
};

fn jwk(key: Key) -> Value {
    json!({"kty": "RSA", "use": "sig", "kid": key.kid, "alg": "RS256", "n": key.n, "e": "AQAB"})
}

fn jwks(keys: &[Key]) -> Value {
    json!({"keys": keys.iter().map(|k| jwk(*k)).collect::<Vec<_>>()})
}

// ------------------------------------------------------------------ the identity provider

/// What the identity provider answers at /keys.
#[derive(Clone)]
enum Answer {
    Json(Value),
    Status(StatusCode),
    Raw(&'static str, Vec<u8>),
    Redirect(String),
}

#[derive(Clone)]
struct IdpState {
    answer: Arc<Mutex<Answer>>,
    hits: Arc<AtomicU64>,
}

/// A JWKS endpoint on 127.0.0.1, on a runtime of its own (so that it answers while a test blocks).
struct Idp {
    addr: SocketAddr,
    state: IdpState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn serve_keys(State(state): State<IdpState>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let answer = state.answer.lock().unwrap().clone();
    match answer {
        Answer::Json(value) => axum::Json(value).into_response(),
        Answer::Status(status) => status.into_response(),
        Answer::Raw(content_type, body) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Answer::Redirect(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
    }
}

impl Idp {
    fn start(answer: Answer) -> Idp {
        let state = IdpState {
            answer: Arc::new(Mutex::new(answer)),
            hits: Arc::new(AtomicU64::new(0)),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/keys", get(serve_keys))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Idp {
            addr,
            state,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    fn answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A URL of 127.0.0.1 where nothing listens (the port was just free).
fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/keys")
}

// ------------------------------------------------------------------ the API

fn authenticator(url: &str, refresh: Duration) -> Authenticator {
    Authenticator::new(AuthSettings {
        jwks: Some(JwksSource::Url {
            url: JwksUrl::parse(url).unwrap(),
            refresh,
        }),
        hs256_secret: Some(Secret::new(SECRET)),
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
    })
    .unwrap()
}

/// The admin API on a loaded, empty view.
struct Api {
    router: Router,
    state: AdminState,
}

impl Api {
    fn new(url: &str, refresh: Duration) -> Api {
        let mut view = AdminView::new(HOUR);
        view.mark_loaded();
        let writer: Arc<dyn PolicyWriter> = Arc::new(MemoryWriter::new());
        let state = AdminState::new(
            SharedView::new(view),
            writer,
            authenticator(url, refresh),
            50,
        );
        Api {
            router: api::router(state.clone()),
            state,
        }
    }

    fn status(&self) -> FetchStatus {
        self.state.authenticator().jwks_fetch_status().unwrap()
    }

    /// Waits (bounded) until the fetch status satisfies `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&FetchStatus) -> bool) -> FetchStatus {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {what}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, token: &str) -> Reply {
        get_settings(&self.router, token).await
    }
}

fn claims() -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "iss": ISSUER.replace("{tenantid}", TENANT),
        "aud": AUDIENCE,
        "tid": TENANT,
        "oid": OID,
        "wids": [GLOBAL_ADMINISTRATOR],
        "iat": now,
        "nbf": now - 10,
        "exp": now + 3600,
    })
}

fn rs256(signer: Key, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_rsa_pem(signer.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn hs256() -> String {
    auth::mint_hs256(SECRET.as_bytes(), &claims()).unwrap()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn get_settings(router: &Router, token: &str) -> Reply {
    let request = Request::get(format!("/v1/tenants/{TENANT}/settings"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn assert_invalid_token(reply: &Reply, detail: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert_eq!(reply.body["type"], "urn:autoclaim:problem:invalid-token");
    assert!(
        reply.body["detail"].as_str().unwrap().contains(detail),
        "{}",
        reply.body
    );
}

fn assert_keys_unavailable(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(reply.body["type"], "urn:autoclaim:problem:unavailable");
    assert_eq!(reply.body["status"], 503);
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("signing keys not available yet"),
        "{}",
        reply.body
    );
}

// ------------------------------------------------------------------ keys fetched and rotated

#[tokio::test]
async fn a_token_signed_by_a_served_key_is_accepted_and_an_unknown_key_refused() {
    let idp = Idp::start(Answer::Json(jwks(&[A])));
    let api = Api::new(&idp.url(), HOUR);
    // What `autoclaim run` does at start, before the API is on.
    assert!(api
        .state
        .authenticator()
        .wait_for_rs256_keys(Duration::from_secs(30)));
    assert_eq!(api.status().keys, 1);
    assert_eq!(idp.hits(), 1);

    assert_eq!(
        api.get(&rs256(A, Some("key-a"))).await.status,
        StatusCode::OK
    );
    // The set holds one key: a token without kid is checked with it.
    assert_eq!(api.get(&rs256(A, None)).await.status, StatusCode::OK);
    // The right kid, the wrong signer.
    assert_invalid_token(&api.get(&rs256(B, Some("key-a"))).await, "signature");
    assert_eq!(idp.hits(), 1, "known keys need no fetch");

    // An unknown kid: the keys are fetched again (they may have rotated), then 401.
    assert_invalid_token(&api.get(&rs256(B, Some("key-x"))).await, "unknown key");
    assert_eq!(idp.hits(), 2);
    // Another one within 30 s: refused at once, without a fetch.
    assert_invalid_token(&api.get(&rs256(B, Some("key-y"))).await, "unknown key");
    assert_eq!(idp.hits(), 2);
    // HS256 works next to RS256.
    assert_eq!(api.get(&hs256()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn rotated_keys_are_fetched_when_a_token_names_the_new_one() {
    let idp = Idp::start(Answer::Json(jwks(&[A])));
    let api = Api::new(&idp.url(), HOUR);
    api.wait_for("the first fetch", |s| s.keys == 1).await;
    assert_eq!(
        api.get(&rs256(A, Some("key-a"))).await.status,
        StatusCode::OK
    );

    // The identity provider rotates: B replaces A. A token of B is accepted at once (the request
    // waits for the fetch its kid asks for); A is gone.
    idp.answer(Answer::Json(jwks(&[B])));
    assert_eq!(
        api.get(&rs256(B, Some("key-b"))).await.status,
        StatusCode::OK
    );
    assert_eq!(idp.hits(), 2);
    assert_eq!(api.status().keys, 1);
    assert_invalid_token(&api.get(&rs256(A, Some("key-a"))).await, "unknown key");
    assert_eq!(idp.hits(), 2, "at most one fetch on demand every 30 s");
}

#[tokio::test]
async fn the_keys_are_refreshed_periodically() {
    let idp = Idp::start(Answer::Json(jwks(&[A])));
    let api = Api::new(&idp.url(), Duration::from_secs(1));
    api.wait_for("the first fetch", |s| s.keys == 1).await;
    idp.answer(Answer::Json(jwks(&[A, B])));
    // No token asks for it: the periodic refresh brings B.
    api.wait_for("a refresh with two keys", |s| s.keys == 2)
        .await;
    assert_eq!(
        api.get(&rs256(B, Some("key-b"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get(&rs256(A, Some("key-a"))).await.status,
        StatusCode::OK
    );
}

// ------------------------------------------------------------------ the identity provider down

#[tokio::test]
async fn an_idp_down_at_start_gets_rs256_a_503_and_hs256_works_until_it_is_up() {
    let idp = Idp::start(Answer::Status(StatusCode::SERVICE_UNAVAILABLE));
    let api = Api::new(&idp.url(), HOUR);
    assert!(!api
        .state
        .authenticator()
        .wait_for_rs256_keys(Duration::from_secs(30)));
    let status = api.wait_for("a failed fetch", |s| s.failures >= 1).await;
    assert_eq!(status.keys, 0);
    assert!(
        status.last_error.as_deref().unwrap().contains("HTTP 503"),
        "{status:?}"
    );

    assert_keys_unavailable(&api.get(&rs256(A, Some("key-a"))).await);
    assert_eq!(api.get(&hs256()).await.status, StatusCode::OK);
    // Bad tokens are still 401, whatever the keys.
    assert_eq!(api.get("not-a-jwt").await.status, StatusCode::UNAUTHORIZED);

    // The identity provider comes up: the retries fetch the keys, no restart needed.
    idp.answer(Answer::Json(jwks(&[A])));
    let status = api.wait_for("the keys", |s| s.keys == 1).await;
    assert_eq!(status.last_error, None);
    assert_eq!(
        api.get(&rs256(A, Some("key-a"))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unreachable_idp_gets_rs256_a_503_and_hs256_works() {
    let api = Api::new(&unreachable_url(), HOUR);
    let status = api.wait_for("a failed fetch", |s| s.failures >= 1).await;
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("request failed"),
        "{status:?}"
    );
    assert_keys_unavailable(&api.get(&rs256(A, Some("key-a"))).await);
    assert_eq!(api.get(&hs256()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_keys_fetched_before() {
    let idp = Idp::start(Answer::Json(jwks(&[A])));
    let api = Api::new(&idp.url(), Duration::from_secs(1));
    api.wait_for("the first fetch", |s| s.keys == 1).await;

    let bad_answers = [
        (
            Answer::Status(StatusCode::INTERNAL_SERVER_ERROR),
            "HTTP 500",
        ),
        (
            Answer::Raw("text/html", b"<html>maintenance</html>".to_vec()),
            "not a JWKS document",
        ),
        (Answer::Json(json!({"keys": []})), "no RSA signature key"),
    ];
    for (answer, why) in bad_answers {
        idp.answer(answer);
        // (A fetch under way may still report the answer before.)
        let status = api
            .wait_for(why, |s| {
                s.last_error.as_deref().is_some_and(|e| e.contains(why))
            })
            .await;
        assert_eq!(status.keys, 1, "the keys fetched before stay");
        assert_eq!(
            api.get(&rs256(A, Some("key-a"))).await.status,
            StatusCode::OK
        );
    }
    // A failure on demand too: a token of a key not served is refused, A still works.
    assert_invalid_token(&api.get(&rs256(B, Some("key-b"))).await, "unknown key");
    assert_eq!(
        api.get(&rs256(A, Some("key-a"))).await.status,
        StatusCode::OK
    );
}

// ------------------------------------------------------------------ bodies that are not a JWKS

#[tokio::test]
async fn answers_that_are_not_a_usable_jwks_are_refused() {
    // A document that would be a good JWKS but for its size: the limit is what refuses it.
    let mut oversized = jwks(&[A]);
    oversized["padding"] = Value::String("x".repeat(MAX_JWKS_BYTES as usize));
    let ec_only = json!({"keys": [{"kty": "EC", "use": "sig", "kid": "ec", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
    let unnamed_twice = json!({"keys": [
        {"kty": "RSA", "use": "sig", "n": KEY_A_N, "e": "AQAB"},
        {"kty": "RSA", "use": "sig", "n": KEY_B_N, "e": "AQAB"}
    ]});
    let cases = [
        (Answer::Json(oversized), "over 1048576 bytes"),
        (
            Answer::Raw("application/json", b"{\"keys\": [".to_vec()),
            "not a JWKS document",
        ),
        (
            Answer::Json(json!({"error": "invalid_tenant"})),
            "not a JWKS document",
        ),
        (Answer::Json(ec_only), "no RSA signature key"),
        (Answer::Json(unnamed_twice), "without a \"kid\""),
        (Answer::Status(StatusCode::NOT_FOUND), "HTTP 404"),
        // Plain http to this machine may not lead elsewhere over plain http.
        (
            Answer::Redirect("http://example.com/keys".into()),
            "HTTP 307",
        ),
    ];
    for (answer, why) in cases {
        let idp = Idp::start(answer);
        let api = Api::new(&idp.url(), HOUR);
        let status = api.wait_for(why, |s| s.failures >= 1).await;
        assert!(
            status.last_error.as_deref().unwrap().contains(why),
            "{why}: {status:?}"
        );
        assert_eq!(status.keys, 0, "{why}");
        assert_keys_unavailable(&api.get(&rs256(A, Some("key-a"))).await);
    }
}

// ------------------------------------------------------------------ configuration

fn admin_args(jwks: &str, refresh: Duration) -> autoclaim::admin::AdminArgs {
    autoclaim::admin::AdminArgs {
        jwks: Some(jwks.to_owned()),
        jwks_refresh: refresh,
        hs256_secret: None,
        issuer: Some(ISSUER.to_owned()),
        audience: vec![AUDIENCE.to_owned()],
        max_policies: 50,
    }
}

#[test]
fn jwks_urls_are_checked_when_the_configuration_is_read() {
    for (value, why) in [
        ("http://example.com/keys", "http is only accepted"),
        ("http://10.1.2.3/keys", "http is only accepted"),
        ("https://", "not a valid URL"),
        ("https://exa mple.com/keys", "not a valid URL"),
        ("https:/login.example.test/keys", "not a valid URL"),
        ("ftp://login.example.test/keys", "scheme must be https"),
        (
            "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys",
            "placeholder",
        ),
    ] {
        let err = admin_args(value, HOUR)
            .auth_settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a usable JWKS URL"), "{value}: {err}");
        assert!(err.contains(why), "{value}: {err}");
    }
    // Credentials in the URL are refused and never repeated.
    let err = admin_args("https://user:s3cret@login.example.test/keys", HOUR)
        .auth_settings()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("credentials") && !err.contains("s3cret"),
        "{err}"
    );

    for value in [
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/discovery/v2.0/keys",
        "http://127.0.0.1:1/keys",
        "http://localhost:1/keys",
        "http://[::1]:1/keys",
    ] {
        let settings = admin_args(value, HOUR).auth_settings().unwrap().unwrap();
        assert!(
            matches!(settings.jwks, Some(JwksSource::Url { refresh, .. }) if refresh == HOUR),
            "{value}"
        );
    }
    // A path is still a file.
    let settings = admin_args("/etc/autoclaim/jwks.json", HOUR)
        .auth_settings()
        .unwrap()
        .unwrap();
    assert!(matches!(settings.jwks, Some(JwksSource::File(_))));
    // A refresh period of zero would fetch in a loop.
    let settings = admin_args("http://127.0.0.1:1/keys", Duration::ZERO)
        .auth_settings()
        .unwrap()
        .unwrap();
    let err = Authenticator::new(settings).unwrap_err().to_string();
    assert!(err.contains("refresh period"), "{err}");
}

#[test]
fn autoclaim_run_refuses_to_start_with_a_plain_http_jwks_url() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args([
            "run",
            "--brokers",
            "127.0.0.1:1",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("AUTOCLAIM_ADMIN_JWKS", "http://example.com/keys")
        .env("AUTOCLAIM_ADMIN_JWKS_REFRESH", "15m")
        .env_remove("AUTOCLAIM_ADMIN_HS256_SECRET")
        .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
        .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("http is only accepted to this machine"),
        "{stderr}"
    );
}
