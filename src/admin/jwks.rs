//! The RS256 verification keys of the admin API: a JWKS document read from a file, or fetched from
//! an https URL (Microsoft Entra's `…/discovery/v2.0/keys`) by a thread of its own.
//!
//! A fetched key set is published whole (an `Arc` in a `watch` channel), so request handlers only
//! ever take a short read lock and never wait on the network, except for the bounded wait of a token
//! that names a key the set does not hold (the keys may have rotated).
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::Uri;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::telemetry;

/// A token naming a key the set lacks makes the set be read again, at most this often.
pub const ON_DEMAND_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest refresh period accepted (zero would fetch in a loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// One fetch, from name resolution to the end of the body, redirects included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document accepted (Entra's is a few KiB).
pub const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// Redirects followed from an https URL (never to http); none from a plain-http loopback URL, which
/// could otherwise lead anywhere over plain http.
const MAX_REDIRECTS: u32 = 3;
/// Retries after a failed fetch: doubling from the first delay up to the last.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ the key set

/// Why a document is not a usable JWKS. Displayed after the document's name.
#[derive(Debug, Error)]
pub enum JwksError {
    #[error("is not a JWKS document ({{\"keys\": [...]}}): {0}")]
    NotJwks(serde_json::Error),
    #[error("holds no RSA signature key usable for RS256")]
    NoRsaKey,
    #[error("holds {0} keys without a \"kid\": at most one may lack it")]
    UnnamedKeys(usize),
}

/// The RSA signature keys of a JWKS document, by `kid`; other keys are skipped.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// The key to use for tokens without `kid`, when the set holds exactly one key.
    only: Option<DecodingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kids()).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document: at least one usable key, at most one without `kid`.
    pub fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet = serde_json::from_slice(document).map_err(JwksError::NotJwks)?;
        let mut keys = HashMap::new();
        let mut unnamed = 0;
        for (kid, key) in raw.keys.into_iter().filter_map(rsa_signature_key) {
            if kid.is_empty() {
                unnamed += 1;
            }
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err(JwksError::NoRsaKey);
        }
        if unnamed > 1 {
            return Err(JwksError::UnnamedKeys(unnamed));
        }
        let only = (keys.len() == 1).then(|| keys.values().next().cloned().expect("one key"));
        Ok(KeySet { keys, only })
    }

    /// The key a token's `kid` names; without `kid`, the only key of a one-key set.
    pub fn get(&self, kid: Option<&str>) -> Option<DecodingKey> {
        match kid {
            Some(kid) => self.keys.get(kid).cloned(),
            None => self.only.clone(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, sorted (for logs).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// A JWK that can verify RS256 signatures, with its `kid` ("" when it has none).
fn rsa_signature_key(value: serde_json::Value) -> Option<(String, DecodingKey)> {
    let jwk = serde_json::from_value::<Jwk>(value).ok()?;
    if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
        return None;
    }
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some((jwk.common.key_id.unwrap_or_default(), key))
}

// ------------------------------------------------------------------ a JWKS file

#[derive(Debug, Error)]
pub enum JwksFileError {
    #[error("cannot read the JWKS file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} {error}", path.display())]
    Content { path: PathBuf, error: JwksError },
}

pub fn read_jwks_file(path: &Path) -> Result<KeySet, JwksFileError> {
    let document = std::fs::read(path).map_err(|source| JwksFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    KeySet::parse(&document).map_err(|error| JwksFileError::Content {
        path: path.to_owned(),
        error,
    })
}

/// A JWKS file, read again when a token names a key it does not hold (at most every
/// [`ON_DEMAND_RELOAD_INTERVAL`]), so that a deployment can replace it without a restart.
pub struct FileJwks {
    path: PathBuf,
    set: KeySet,
    read_at: Instant,
}

impl FileJwks {
    pub fn open(path: &Path) -> Result<FileJwks, JwksFileError> {
        Ok(FileJwks {
            path: path.to_owned(),
            set: read_jwks_file(path)?,
            read_at: Instant::now(),
        })
    }

    pub fn key(&mut self, kid: Option<&str>) -> Option<DecodingKey> {
        let found = self.set.get(kid);
        if found.is_some() || self.read_at.elapsed() < ON_DEMAND_RELOAD_INTERVAL {
            return found;
        }
        // An unknown key id: the keys may have rotated since the file was read.
        self.read_at = Instant::now();
        match read_jwks_file(&self.path) {
            Ok(fresh) => {
                tracing::info!(path = %self.path.display(), keys = fresh.len(), "reloaded the admin JWKS");
                self.set = fresh;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the admin JWKS; keeping the keys read before")
            }
        }
        self.set.get(kid)
    }
}

// ------------------------------------------------------------------ a JWKS URL

/// Why a configured JWKS URL is refused.
#[derive(Debug, Error)]
pub enum JwksUrlError {
    #[error("it is not a valid URL ({0})")]
    Malformed(String),
    #[error("its scheme must be https")]
    Scheme,
    #[error("it has no host")]
    NoHost,
    #[error("it must not hold credentials (user:password@)")]
    Credentials,
    #[error("it still holds a placeholder in braces: put your tenant id there")]
    Placeholder,
    #[error(
        "http is only accepted to this machine (localhost, 127.0.0.0/8, ::1): use https for {0}"
    )]
    PlainHttp(String),
}

/// A JWKS URL fit to fetch keys from: https, or plain http to this machine (a local sidecar,
/// tests), where nothing travels over a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUrl {
    uri: Uri,
    loopback: bool,
}

impl JwksUrl {
    /// Whether a configured JWKS value means a URL rather than a file (so that a mistyped URL is
    /// reported as such, not as a file that cannot be read).
    pub fn looks_like_url(value: &str) -> bool {
        let lower = value.trim_start().to_ascii_lowercase();
        value.contains("://") || lower.starts_with("http:") || lower.starts_with("https:")
    }

    pub fn parse(text: &str) -> Result<JwksUrl, JwksUrlError> {
        let text = text.trim();
        if text.contains(['{', '}']) {
            return Err(JwksUrlError::Placeholder);
        }
        let uri: Uri = text
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| JwksUrlError::Malformed(e.to_string()))?;
        let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(JwksUrlError::Scheme),
        };
        let authority = uri.authority().ok_or(JwksUrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(JwksUrlError::Credentials);
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(JwksUrlError::NoHost);
        }
        let loopback = is_loopback(host);
        if !https && !loopback {
            return Err(JwksUrlError::PlainHttp(host.to_owned()));
        }
        Ok(JwksUrl { uri, loopback })
    }
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.uri.fmt(f)
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a fetch of the JWKS failed. The keys fetched before, if any, stay in use.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Request(ureq::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered a body over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("answered a body that {0}")]
    Content(JwksError),
}

fn http_agent(url: &JwksUrl) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        // The status is checked here, to tell it apart from a transport error.
        .http_status_as_error(false)
        // An https URL may not be redirected to plain http.
        .https_only(!url.loopback)
        .max_redirects(if url.loopback { 0 } else { MAX_REDIRECTS })
        .user_agent(concat!("autoclaim/", env!("CARGO_PKG_VERSION")))
        .accept("application/json, application/jwk-set+json")
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .build(),
        );
    // A proxy (HTTPS_PROXY and the like) cannot reach this machine's loopback.
    let config = if url.loopback {
        config.proxy(None)
    } else {
        config
    };
    config.build().into()
}

fn fetch(agent: &ureq::Agent, url: &JwksUrl) -> Result<KeySet, FetchError> {
    let mut response = agent
        .get(url.uri.clone())
        .call()
        .map_err(FetchError::Request)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    let document = response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge,
            e => FetchError::Request(e),
        })?;
    KeySet::parse(&document).map_err(FetchError::Content)
}

/// What a token's key id finds in a fetched key set.
pub enum Lookup {
    Found(DecodingKey),
    /// The set is loaded and does not hold the key, even after a refresh.
    Unknown,
    /// No key set has been fetched yet.
    NotLoaded,
}

/// What the fetch thread has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchStatus {
    /// Keys in the set in use (0 before the first successful fetch).
    pub keys: usize,
    /// Fetches finished, successful or not.
    pub fetches: u64,
    pub failures: u64,
    /// Why the newest fetch failed; `None` once one succeeds.
    pub last_error: Option<String>,
}

/// What the fetch thread publishes after each fetch.
#[derive(Clone, Default)]
struct Published {
    keys: Option<Arc<KeySet>>,
    status: FetchStatus,
    /// The newest on-demand refresh that a finished fetch has answered.
    answered: u64,
}

/// Refreshes asked for by tokens naming an unknown key, and the stop signal.
#[derive(Default)]
struct Demand {
    /// The newest refresh asked for (a serial number).
    requested: u64,
    requested_at: Option<Instant>,
    stop: bool,
}

struct Shared {
    url: JwksUrl,
    published: watch::Sender<Published>,
    demand: Mutex<Demand>,
    /// Wakes the fetch thread (a refresh is asked for, or stop) and those waiting for a fetch.
    wake: Condvar,
}

/// Keys fetched from a JWKS URL by a background thread: at start, every `refresh`, after a failure
/// (with backoff), and when a token names a key the set does not hold (at most every
/// [`ON_DEMAND_RELOAD_INTERVAL`]).
pub struct RemoteJwks {
    shared: Arc<Shared>,
}

impl RemoteJwks {
    /// Starts the fetch thread; the first fetch begins at once. Returns without waiting for it.
    pub fn start(url: JwksUrl, refresh: Duration) -> std::io::Result<RemoteJwks> {
        let shared = Arc::new(Shared {
            url,
            published: watch::Sender::new(Published::default()),
            demand: Mutex::new(Demand::default()),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("autoclaim-jwks".into())
            .spawn(move || fetch_loop(&thread_shared, refresh))?;
        Ok(RemoteJwks { shared })
    }

    pub fn status(&self) -> FetchStatus {
        self.shared.published.borrow().status.clone()
    }

    /// Blocks until the first fetch has finished (or `timeout`); whether keys are loaded. For the
    /// start of the service, never for a request handler.
    pub fn wait_first_fetch(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut demand = self.shared.lock_demand();
        loop {
            let published = self.shared.published.borrow().clone();
            let now = Instant::now();
            if published.status.fetches > 0 || now >= deadline {
                return published.keys.is_some();
            }
            demand = self
                .shared
                .wake
                .wait_timeout(demand, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The key a token names. An unknown key id asks for a refresh (the IdP may have rotated its
    /// keys) and waits for it, at most [`FETCH_TIMEOUT`].
    pub async fn key(&self, kid: Option<&str>) -> Lookup {
        let mut published = self.shared.published.subscribe();
        // Cloned in a statement of its own: the read lock is never held with the demand lock.
        let keys = published.borrow().keys.clone();
        let Some(keys) = keys else {
            // The fetch thread retries with backoff; a request may make it try sooner.
            self.ask_for_refresh();
            return Lookup::NotLoaded;
        };
        if let Some(key) = keys.get(kid) {
            return Lookup::Found(key);
        }
        let ticket = self.ask_for_refresh();
        let answered = published.wait_for(|p| p.answered >= ticket);
        let _ = tokio::time::timeout(FETCH_TIMEOUT, answered).await;
        let keys = published.borrow().keys.clone();
        match keys.and_then(|keys| keys.get(kid)) {
            Some(key) => Lookup::Found(key),
            None => Lookup::Unknown,
        }
    }

    /// Asks the fetch thread for a refresh, unless one was asked for less than
    /// [`ON_DEMAND_RELOAD_INTERVAL`] ago; returns the refresh to wait for.
    fn ask_for_refresh(&self) -> u64 {
        let mut demand = self.shared.lock_demand();
        let recent = demand
            .requested_at
            .is_some_and(|at| at.elapsed() < ON_DEMAND_RELOAD_INTERVAL);
        if !recent {
            demand.requested += 1;
            demand.requested_at = Some(Instant::now());
            self.shared.wake.notify_all();
        }
        demand.requested
    }
}

impl Drop for RemoteJwks {
    /// Stops the fetch thread at its next wake-up; not joined, as it may be in a fetch.
    fn drop(&mut self) {
        self.shared.lock_demand().stop = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock_demand(&self) -> MutexGuard<'_, Demand> {
        self.demand.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the outcome of a fetch that answered the refreshes asked for up to `answered`,
    /// keeping the keys fetched before when it failed.
    fn publish(&self, outcome: Result<KeySet, FetchError>, answered: u64, retry_in: Duration) {
        // Only this thread publishes: what it read stays current until it publishes.
        let before = self.published.borrow().keys.clone();
        let result = match &outcome {
            Ok(fresh) => {
                log_fetched(&self.url, before.as_deref(), fresh);
                "ok"
            }
            Err(e) => {
                log_failure(&self.url, before.is_some(), e, retry_in);
                "failed"
            }
        };
        metrics::counter!(telemetry::ADMIN_JWKS_FETCHES, "result" => result).increment(1);
        let outcome = outcome.map(Arc::new).map_err(|e| e.to_string());
        // Under the demand lock, so that `wait_first_fetch` cannot miss the wake-up.
        let _demand = self.lock_demand();
        self.published.send_modify(|p| {
            p.status.fetches += 1;
            p.answered = answered;
            match outcome {
                Ok(fresh) => {
                    p.status.keys = fresh.len();
                    p.status.last_error = None;
                    p.keys = Some(fresh);
                }
                Err(e) => {
                    p.status.failures += 1;
                    p.status.last_error = Some(e);
                }
            }
        });
        self.wake.notify_all();
    }

    /// Sleeps `delay`, or less if a refresh newer than `answered` is asked for; false on stop.
    fn sleep(&self, delay: Duration, answered: u64) -> bool {
        let deadline = Instant::now() + delay;
        let mut demand = self.lock_demand();
        loop {
            if demand.stop {
                return false;
            }
            let now = Instant::now();
            if demand.requested > answered || now >= deadline {
                return true;
            }
            demand = self
                .wake
                .wait_timeout(demand, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn fetch_loop(shared: &Shared, refresh: Duration) {
    let agent = http_agent(&shared.url);
    let mut failures_in_a_row = 0;
    loop {
        // Refreshes asked for until now are answered by this fetch.
        let answering = shared.lock_demand().requested;
        let outcome = fetch(&agent, &shared.url);
        failures_in_a_row = if outcome.is_ok() {
            0
        } else {
            failures_in_a_row + 1
        };
        let delay = next_fetch_in(failures_in_a_row, refresh);
        shared.publish(outcome, answering, delay);
        if !shared.sleep(delay, answering) {
            return;
        }
    }
}

/// After a success, the refresh period; after failures, a doubling backoff, never past the period.
fn next_fetch_in(failures_in_a_row: u32, refresh: Duration) -> Duration {
    if failures_in_a_row == 0 {
        return refresh;
    }
    let backoff = FIRST_RETRY.saturating_mul(1 << (failures_in_a_row - 1).min(16));
    backoff.min(LAST_RETRY).min(refresh)
}

fn log_fetched(url: &JwksUrl, before: Option<&KeySet>, fresh: &KeySet) {
    match before {
        None => tracing::info!(%url, kids = ?fresh.kids(), "fetched the admin JWKS"),
        Some(before) if before.kids() != fresh.kids() => {
            tracing::info!(%url, kids = ?fresh.kids(), before = ?before.kids(), "the admin JWKS changed")
        }
        Some(_) => tracing::debug!(%url, "refreshed the admin JWKS (unchanged)"),
    }
}

fn log_failure(url: &JwksUrl, have_keys: bool, error: &FetchError, retry_in: Duration) {
    let retry_in = humantime::format_duration(retry_in).to_string();
    if have_keys {
        tracing::warn!(%url, %error, retry_in, "cannot refresh the admin JWKS; keeping the keys fetched before");
    } else {
        tracing::warn!(
            %url, %error, retry_in,
            "cannot fetch the admin JWKS; RS256 tokens are refused (503) until it is fetched"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS client has its crypto (rustls with aws-lc-rs) and gets as far as the handshake: a
    /// server that answers a ClientHello with plain HTTP is a TLS error, not a panic for want of
    /// a crypto provider.
    #[test]
    fn an_https_fetch_runs_a_tls_handshake() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut hello = [0u8; 5];
            socket.read_exact(&mut hello).unwrap();
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            hello
        });
        let url = JwksUrl::parse(&format!("https://127.0.0.1:{port}/keys")).unwrap();
        let result = fetch(&http_agent(&url), &url);
        let hello = server.join().unwrap();
        assert_eq!(
            hello[0], 0x16,
            "a TLS handshake record opens the connection"
        );
        match result {
            // rustls's own words for a record that is not TLS.
            Err(FetchError::Request(e)) => assert!(
                e.to_string()
                    .contains("received corrupt message of type InvalidContentType"),
                "{e}"
            ),
            other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn urls_https_or_loopback_http_only() {
        for ok in [
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/discovery/v2.0/keys",
            "HTTPS://login.example.test/keys",
            "http://127.0.0.1:8080/keys",
            "http://127.1.2.3/keys",
            "http://localhost:9000/jwks.json",
            "http://[::1]:9000/jwks.json",
        ] {
            assert!(JwksUrl::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://example.com/keys", "http is only accepted"),
            ("http://10.0.0.1/keys", "http is only accepted"),
            ("ftp://example.com/keys", "scheme"),
            ("https://", "not a valid URL"),
            ("https://exa mple.com/keys", "not a valid URL"),
            ("https:/login.example.test/keys", "not a valid URL"),
            ("https://user:pw@example.com/keys", "credentials"),
            (
                "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys",
                "placeholder",
            ),
        ] {
            let err = JwksUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_never_past_the_refresh_period() {
        let hour = Duration::from_secs(3600);
        assert_eq!(next_fetch_in(0, hour), hour);
        assert_eq!(next_fetch_in(1, hour), FIRST_RETRY);
        assert_eq!(next_fetch_in(2, hour), FIRST_RETRY * 2);
        assert_eq!(next_fetch_in(40, hour), LAST_RETRY);
        assert_eq!(
            next_fetch_in(40, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
