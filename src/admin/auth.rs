//! Bearer tokens in the Microsoft Entra style. A token is accepted when its signature checks out
//! (RS256 with a key of the configured JWKS, or HS256 with the configured development secret), it is
//! within `nbf`..`exp`, and its issuer and audience are the configured ones. It then authorizes a
//! request when its `tid` is the tenant in the path and its `wids` hold the Global Administrator role
//! template id. Its `oid` is recorded as who made a change, and its `name` (when it has one) in the
//! audit log beside it.
//!
//! The RS256 keys come from a JWKS file or URL ([`super::jwks`]). Until a JWKS URL has been fetched
//! once, RS256 tokens are answered 503 (HS256 ones still work).
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::jwks::{
    FetchStatus, FileJwks, JwksFileError, JwksUrl, JwksUrlError, Lookup, RemoteJwks, MIN_REFRESH,
};
use super::problem::Problem;
use crate::domain::ids;
use crate::pipeline::security::Secret;

/// Role template id of the Global Administrator in Microsoft Entra ID.
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Placeholder in a configured issuer that stands for the token's `tid` (multi-tenant apps, whose
/// issuer is https://login.microsoftonline.com/{tenantid}/v2.0).
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";
/// Shortest HS256 secret accepted: 256 bits, as RFC 7518 requires for HS256 keys.
pub const MIN_SECRET_BYTES: usize = 32;
/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 60;
/// `Retry-After` of an RS256 token refused because the JWKS has not been fetched yet.
const KEYS_RETRY_AFTER_SECONDS: u32 = 5;
/// A display name longer than this is cut: it is recorded, not checked, and must stay small.
const MAX_DISPLAY_NAME_CHARS: usize = 256;

#[derive(Debug, Error)]
pub enum AuthConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    JwksFile(#[from] JwksFileError),
    #[error("AUTOCLAIM_ADMIN_JWKS={value}: not a usable JWKS URL: {reason}")]
    JwksUrl { value: String, reason: JwksUrlError },
    #[error("cannot start the JWKS fetch thread: {0}")]
    JwksThread(std::io::Error),
}

/// Where the RS256 verification keys come from.
#[derive(Clone, Debug)]
pub enum JwksSource {
    /// A JWKS file, read at start and again when a token names a key it does not hold.
    File(PathBuf),
    /// A JWKS URL, fetched in the background at start, every `refresh`, and when a token names a
    /// key the set does not hold.
    Url { url: JwksUrl, refresh: Duration },
}

/// What the authenticator is configured with.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// The RS256 verification keys.
    pub jwks: Option<JwksSource>,
    /// HS256 secret (development); its `Debug` hides it.
    pub hs256_secret: Option<Secret>,
    /// Expected `iss`; may contain `{tenantid}`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
}

/// The caller, as its token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub object_id: String,
    /// The token's `name` claim (Entra's display name of the user), when it has one.
    pub display_name: Option<String>,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn is_global_administrator(&self) -> bool {
        self.roles
            .iter()
            .any(|r| r.eq_ignore_ascii_case(GLOBAL_ADMINISTRATOR))
    }
}

/// The claims read from a token (the registered ones are checked by `jsonwebtoken`).
#[derive(Debug, Deserialize)]
struct TokenClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    wids: Option<Vec<String>>,
}

/// A display name as it may be recorded: without control characters, trimmed, bounded; `None`
/// when nothing is left. A name is only ever shown, so it is tidied rather than refused.
fn display_name(name: Option<String>) -> Option<String> {
    let name: String = name?
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Where RS256 keys are looked up.
enum Rs256Keys {
    File(Mutex<FileJwks>),
    Url(RemoteJwks),
}

pub struct Authenticator {
    hs256: Option<DecodingKey>,
    jwks: Option<Rs256Keys>,
    issuer: String,
    audiences: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks.is_some())
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// Opens a JWKS file, or starts fetching a JWKS URL in the background.
fn rs256_keys(source: JwksSource) -> Result<Rs256Keys, AuthConfigError> {
    match source {
        JwksSource::File(path) => Ok(Rs256Keys::File(Mutex::new(FileJwks::open(&path)?))),
        JwksSource::Url { refresh, .. } if refresh < MIN_REFRESH => {
            Err(AuthConfigError::Invalid(format!(
                "the JWKS refresh period must be at least {}",
                humantime::format_duration(MIN_REFRESH)
            )))
        }
        JwksSource::Url { url, refresh } => RemoteJwks::start(url, refresh)
            .map(Rs256Keys::Url)
            .map_err(AuthConfigError::JwksThread),
    }
}

impl Authenticator {
    pub fn new(settings: AuthSettings) -> Result<Self, AuthConfigError> {
        if settings.jwks.is_none() && settings.hs256_secret.is_none() {
            return Err(AuthConfigError::Invalid(
                "no token key is configured (a JWKS file or URL, or an HS256 secret)".into(),
            ));
        }
        if settings.issuer.trim().is_empty() {
            return Err(AuthConfigError::Invalid(
                "the token issuer (AUTOCLAIM_ADMIN_ISSUER) is required".into(),
            ));
        }
        let audiences: Vec<String> = settings
            .audiences
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(AuthConfigError::Invalid(
                "the token audience (AUTOCLAIM_ADMIN_AUDIENCE) is required".into(),
            ));
        }
        let hs256 = match settings.hs256_secret {
            Some(secret) if secret.expose().len() < MIN_SECRET_BYTES => {
                return Err(AuthConfigError::Invalid(format!(
                    "the HS256 secret is {} bytes; it must be at least {MIN_SECRET_BYTES}",
                    secret.expose().len()
                )))
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.expose().as_bytes())),
            None => None,
        };
        let jwks = settings.jwks.map(rs256_keys).transpose()?;
        Ok(Authenticator {
            hs256,
            jwks,
            issuer: settings.issuer,
            audiences,
        })
    }

    pub fn accepts_hs256(&self) -> bool {
        self.hs256.is_some()
    }

    pub fn accepts_rs256(&self) -> bool {
        self.jwks.is_some()
    }

    /// What the fetches of a JWKS URL have done so far (`None` without a JWKS URL).
    pub fn jwks_fetch_status(&self) -> Option<FetchStatus> {
        match &self.jwks {
            Some(Rs256Keys::Url(remote)) => Some(remote.status()),
            _ => None,
        }
    }

    /// Blocks until a JWKS URL has been fetched once, at most `timeout`; whether RS256 keys are
    /// available. For the start of the service, not for async code.
    pub fn wait_for_rs256_keys(&self, timeout: Duration) -> bool {
        match &self.jwks {
            Some(Rs256Keys::Url(remote)) => remote.wait_first_fetch(timeout),
            Some(Rs256Keys::File(_)) => true,
            None => false,
        }
    }

    /// Checks the `Authorization` header: who is calling, or why the call is refused (401; 503
    /// for an RS256 token while the JWKS URL has not been fetched yet). A token that names a key
    /// the JWKS does not hold may wait for the JWKS to be fetched again (at most
    /// [`super::jwks::FETCH_TIMEOUT`]).
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Principal, Problem> {
        let Some(value) = authorization else {
            return Err(Problem::missing_token());
        };
        let value = value
            .to_str()
            .map_err(|_| Problem::invalid_token("the Authorization header is not ASCII"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(Problem::invalid_token(
                    "the Authorization header must be: Bearer <JWT>",
                ))
            }
        };
        if token.is_empty() {
            return Err(Problem::missing_token());
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Problem::invalid_token("the token is too long"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Problem::invalid_token("the token is not a well-formed JWT"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or_else(|| {
                Problem::invalid_token("HS256 tokens are not accepted by this server")
            })?,
            Algorithm::RS256 => self.rs256_key(header.kid.as_deref()).await?,
            other => {
                return Err(Problem::invalid_token(format!(
                    "tokens signed with {other:?} are not accepted (RS256 or HS256)"
                )))
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<TokenClaims>(token, &key, &validation).map_err(|e| {
            Problem::invalid_token(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
                ErrorKind::InvalidAudience => "the token is for another audience".to_owned(),
                ErrorKind::InvalidIssuer => "the token is from another issuer".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
                ErrorKind::InvalidClaimFormat(c) => format!("the token's {c} claim is malformed"),
                ErrorKind::InvalidAlgorithm => {
                    "the token's algorithm does not match its key".into()
                }
                _ => "the token is malformed".to_owned(),
            })
        })?;
        let claims = data.claims;
        let tid = claims
            .tid
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Problem::invalid_token("the token has no tid claim"))?;
        let expected_issuer = self.issuer.replace(TENANT_PLACEHOLDER, &tid);
        if claims.iss.as_deref() != Some(expected_issuer.as_str()) {
            return Err(Problem::invalid_token("the token is from another issuer"));
        }
        let oid = claims
            .oid
            .filter(|o| !o.is_empty())
            .ok_or_else(|| Problem::invalid_token("the token has no oid claim"))?;
        // Entra's GUIDs in any letter case name the same tenant and user.
        Ok(Principal {
            tenant_id: ids::canonical(tid),
            object_id: ids::canonical(oid),
            display_name: display_name(claims.name),
            roles: claims.wids.unwrap_or_default(),
        })
    }

    /// The key of an RS256 token: 401 if unknown, 503 while a JWKS URL has never been fetched.
    async fn rs256_key(&self, kid: Option<&str>) -> Result<DecodingKey, Problem> {
        let unknown = || Problem::invalid_token("the token is signed with an unknown key");
        match &self.jwks {
            None => Err(Problem::invalid_token(
                "RS256 tokens are not accepted by this server",
            )),
            Some(Rs256Keys::File(file)) => {
                let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                file.key(kid).ok_or_else(unknown)
            }
            Some(Rs256Keys::Url(remote)) => match remote.key(kid).await {
                Lookup::Found(key) => Ok(key),
                Lookup::Unknown => Err(unknown()),
                Lookup::NotLoaded => Err(Problem::unavailable(
                    "signing keys not available yet: the JWKS has not been fetched from the \
                     identity provider; RS256 tokens are accepted once it is",
                    KEYS_RETRY_AFTER_SECONDS,
                )),
            },
        }
    }
}

/// May this caller manage `tenant`? Another tenant or a missing role is a 403 that says nothing about
/// the tenant asked for.
pub fn authorize(principal: &Principal, tenant: &str) -> Result<(), Problem> {
    if principal.tenant_id != tenant {
        return Err(Problem::forbidden(
            "the token is not for the tenant in the path",
        ));
    }
    if !principal.is_global_administrator() {
        return Err(Problem::forbidden(
            "only a Global Administrator of the tenant may do this",
        ));
    }
    Ok(())
}

/// The claims of a development token minted by `autoclaim token`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevClaims {
    pub iss: String,
    pub aud: String,
    pub tid: String,
    pub oid: String,
    /// The user's display name, as Entra puts it in `name`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub wids: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

impl DevClaims {
    /// Claims valid from now for `ttl`.
    pub fn new(
        issuer: &str,
        audience: &str,
        tenant: &str,
        object_id: &str,
        roles: Vec<String>,
        ttl: Duration,
    ) -> Self {
        let now = jsonwebtoken::get_current_timestamp();
        DevClaims {
            iss: issuer.replace(TENANT_PLACEHOLDER, tenant),
            aud: audience.to_owned(),
            tid: tenant.to_owned(),
            oid: object_id.to_owned(),
            name: None,
            wids: roles,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs()),
        }
    }
}

/// Signs claims with an HS256 secret.
pub fn mint_hs256<C: Serialize>(secret: &[u8], claims: &C) -> Result<String, AuthConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthConfigError::Invalid(format!(
            "the HS256 secret is {} bytes; it must be at least {MIN_SECRET_BYTES}",
            secret.len()
        )));
    }
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthConfigError::Invalid(format!("cannot sign the token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::{display_name, MAX_DISPLAY_NAME_CHARS};

    #[test]
    fn a_display_name_is_tidied_for_the_record_never_refused() {
        assert_eq!(display_name(None), None);
        assert_eq!(display_name(Some("  \t ".into())), None);
        assert_eq!(
            display_name(Some(" Megan\u{0} Bowen\n".into())).as_deref(),
            Some("Megan Bowen")
        );
        let long = display_name(Some("é".repeat(1000))).unwrap();
        assert_eq!(long.chars().count(), MAX_DISPLAY_NAME_CHARS);
    }
}
