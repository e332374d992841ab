//! The RS256 verification keys of the admin API: a JWKS document read from a file.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use thiserror::Error;

/// A token naming a key the set lacks makes the set be read again, at most this often.
pub const ON_DEMAND_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

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
