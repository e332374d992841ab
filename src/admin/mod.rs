//! The admin API of `autoclaim run`: what a tenant's Global Administrator does in the admin center
//! (turn autoclaim on or off, manage policies, read the report), over authenticated HTTP.
//!
//! - [`auth`]: bearer JWTs in the Microsoft Entra style (RS256 with keys from a JWKS file or URL,
//!   see [`jwks`]; HS256 for development), 401 for a bad token and 403 for another tenant or role;
//! - [`view`]: the API's own view of the policies, inventory and assignments topics, fed by
//!   [`feed`] on a thread of its own;
//! - [`writer`]: changes go to the policies topic and take effect after the propagation delay, like
//!   every other change; each with its [`audit`] entry on the audit topic, in one transaction;
//! - [`api`]: routes, validation and problem details ([`problem`]); [`feature`] says whether the
//!   tenant's autoclaim setting lets its policies assign licences;
//! - [`claims`]: the view's tables of claims and failures, and [`claim_rows`], what the API shows
//!   of them (the claims listing, a user's history);
//! - [`report`] and [`cli`]: the report (with [`report_claims`], its failures and pending claims),
//!   and the `autoclaim report` (read by [`report_source`]) and `autoclaim token` commands; [`csv`]
//!   is how both write CSV;
//! - [`catalog`]: the products and service plans a policy may name (`GET /v1/catalog`);
//! - [`console`]: the admin console, a web page at `/` built only on this API.
//!
//! The API is on when a token key is configured and off otherwise: it never runs open.
pub mod api;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod claim_rows;
pub mod claims;
pub mod cli;
pub mod console;
pub mod csv;
pub mod feature;
pub mod feed;
pub mod jwks;
pub mod problem;
pub mod report;
pub mod report_claims;
pub mod report_source;
pub mod view;
pub mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clap::Args;

use crate::pipeline::config::{KafkaArgs, Topics};
use crate::pipeline::security::Secret;
use auth::{AuthConfigError, AuthSettings, Authenticator, JwksSource};
use jwks::JwksUrl;

/// Configuration of the admin API, from flags and `AUTOCLAIM_ADMIN_*` environment variables.
#[derive(Args, Clone, Debug)]
pub struct AdminArgs {
    /// Admin API: JWKS file or https URL whose RSA keys verify RS256 tokens (for Microsoft Entra
    /// ID, https://login.microsoftonline.com/<tenant id>/discovery/v2.0/keys). A URL is fetched in
    /// the background, at start and every --admin-jwks-refresh; RS256 tokens get 503 until it has
    /// been fetched once. http is accepted only to localhost, 127.0.0.0/8 or ::1. Both are read
    /// again when a token names a key they do not hold, at most every 30 s.
    #[arg(long = "admin-jwks", env = "AUTOCLAIM_ADMIN_JWKS")]
    pub jwks: Option<String>,
    /// Admin API: how often a JWKS URL is fetched again (e.g. 1h, 15m; at least 1s). A failed fetch
    /// keeps the keys fetched before and is retried sooner, with backoff.
    #[arg(
        long = "admin-jwks-refresh",
        env = "AUTOCLAIM_ADMIN_JWKS_REFRESH",
        value_parser = humantime::parse_duration,
        default_value = "1h"
    )]
    pub jwks_refresh: Duration,
    /// Admin API: HS256 secret of development tokens (`autoclaim token`), at least 32 bytes. Prefer
    /// the environment variable: command lines are visible to other users of the machine.
    #[arg(
        long = "admin-hs256-secret",
        env = "AUTOCLAIM_ADMIN_HS256_SECRET",
        hide_env_values = true
    )]
    pub hs256_secret: Option<Secret>,
    /// Admin API: the tokens' expected issuer (`iss`); `{tenantid}` stands for the token's tenant,
    /// e.g. https://login.microsoftonline.com/{tenantid}/v2.0.
    #[arg(long = "admin-issuer", env = "AUTOCLAIM_ADMIN_ISSUER")]
    pub issuer: Option<String>,
    /// Admin API: accepted audiences (`aud`), comma-separated.
    #[arg(
        long = "admin-audience",
        env = "AUTOCLAIM_ADMIN_AUDIENCE",
        value_delimiter = ','
    )]
    pub audience: Vec<String>,
    /// Admin API: policies a tenant may have (deleted ones not counted).
    #[arg(
        long = "admin-max-policies",
        env = "AUTOCLAIM_ADMIN_MAX_POLICIES",
        default_value_t = api::DEFAULT_MAX_POLICIES
    )]
    pub max_policies: usize,
}

impl AdminArgs {
    /// The authenticator's settings; `None` when no key is configured (the API is then off).
    /// Partial configuration is an error, so that a typo does not silently turn the API off.
    pub fn auth_settings(&self) -> Result<Option<AuthSettings>, AuthConfigError> {
        let nonempty = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).cloned();
        let jwks = nonempty(&self.jwks);
        let secret = self
            .hs256_secret
            .clone()
            .filter(|s| !s.expose().trim().is_empty());
        let issuer = nonempty(&self.issuer);
        let audiences: Vec<String> = self
            .audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if jwks.is_none() && secret.is_none() {
            if issuer.is_some() || !audiences.is_empty() {
                return Err(AuthConfigError::Invalid(
                    "an issuer or audience is set but no token key is: set \
                     AUTOCLAIM_ADMIN_JWKS or AUTOCLAIM_ADMIN_HS256_SECRET (the API never runs open)"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let jwks = jwks.map(|j| self.jwks_source(&j)).transpose()?;
        Ok(Some(AuthSettings {
            jwks,
            hs256_secret: secret,
            issuer: issuer.unwrap_or_default(),
            audiences,
        }))
    }

    /// A value with a scheme (`…://`) is a URL, checked here; anything else is a file.
    fn jwks_source(&self, value: &str) -> Result<JwksSource, AuthConfigError> {
        if !JwksUrl::looks_like_url(value) {
            return Ok(JwksSource::File(PathBuf::from(value)));
        }
        let url = JwksUrl::parse(value).map_err(|reason| AuthConfigError::JwksUrl {
            // Never echo credentials (user:password@) into logs.
            value: if value.contains('@') {
                "<the URL given>".to_owned()
            } else {
                value.to_owned()
            },
            reason,
        })?;
        Ok(JwksSource::Url {
            url,
            refresh: self.jwks_refresh,
        })
    }
}

/// The running admin API: its routes and the feed thread behind them.
pub struct AdminService {
    router: Router,
    stop: Arc<AtomicBool>,
    feed: Option<JoinHandle<()>>,
}

impl AdminService {
    /// Starts the admin API if a token key is configured (`None` otherwise); fails on a partial or
    /// invalid configuration rather than run open. Its writer's transactional id is derived from
    /// the service's `transactional_id`.
    pub fn start(
        args: &AdminArgs,
        kafka: &KafkaArgs,
        topics: &Topics,
        propagation_delay: Duration,
        transactional_id: &str,
    ) -> anyhow::Result<Option<AdminService>> {
        let Some(settings) = args.auth_settings().context("admin API")? else {
            tracing::warn!(
                "admin API off: no token key configured (AUTOCLAIM_ADMIN_JWKS or AUTOCLAIM_ADMIN_HS256_SECRET)"
            );
            return Ok(None);
        };
        let issuer = settings.issuer.clone();
        let audiences = settings.audiences.clone();
        let auth = Authenticator::new(settings).context("admin API")?;
        // A JWKS URL is fetched once before the API is on, but an identity provider that cannot be
        // reached must not stop the stream processor: the fetch goes on in the background.
        if auth.jwks_fetch_status().is_some() && !auth.wait_for_rs256_keys(jwks::FETCH_TIMEOUT) {
            tracing::warn!(
                "admin API: the JWKS URL could not be fetched at start; RS256 tokens are refused \
                 (503) until it is, HS256 tokens are accepted if configured"
            );
        }
        let writer = writer::KafkaPolicyWriter::new(kafka, topics, transactional_id)
            .context("admin API: cannot create the policies producer")?;
        let view = view::SharedView::new(view::AdminView::new(propagation_delay));
        let stop = Arc::new(AtomicBool::new(false));
        let feed = feed::spawn(
            kafka.clone(),
            topics.clone(),
            view.clone(),
            Arc::clone(&stop),
        )
        .context("admin API: cannot start the feed thread")?;
        tracing::info!(
            issuer,
            ?audiences,
            rs256 = auth.accepts_rs256(),
            hs256 = auth.accepts_hs256(),
            "admin API on"
        );
        let state = api::AdminState::new(view, Arc::new(writer), auth, args.max_policies);
        Ok(Some(AdminService {
            // The console is served wherever the API is, and only there: it is a client of it.
            router: api::router(state).merge(console::router()),
            stop,
            feed: Some(feed),
        }))
    }

    /// The routes, to merge into the service's router.
    pub fn router(&self) -> Router {
        self.router.clone()
    }
}

impl Drop for AdminService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(feed) = self.feed.take() {
            let _ = feed.join();
        }
    }
}
