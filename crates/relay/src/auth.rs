//! Access tokens (HS256 JWTs) and client credentials.
//!
//! A token carries `sub` and `client_id` (the ClientApplication id), `iat`, `exp` one hour
//! ahead and a `jti`; no `login_id`, so the Medplum clients never call `auth/me`. Secrets are
//! compared through HMAC tags, in constant time.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::{Error, store::Store};

/// Default token lifetime in seconds.
pub const TOKEN_TTL_SECS: i64 = 3600;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the ClientApplication id.
    pub sub: String,
    /// The ClientApplication id (Medplum's clients check this against their client id).
    pub client_id: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Not signed with our key (or tampered with).
    #[error("invalid token signature")]
    Signature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
}

/// Issues and verifies tokens with one HMAC key.
#[derive(Clone)]
pub struct Tokens {
    key: hmac::Key,
    ttl: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { key: <redacted> }")
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl Tokens {
    /// Tokens signed with `secret`, valid for [`TOKEN_TTL_SECS`].
    pub fn new(secret: &[u8]) -> Self {
        Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ttl: TOKEN_TTL_SECS,
        }
    }

    /// The same, valid for `ttl_secs`.
    pub fn with_ttl(mut self, ttl_secs: i64) -> Self {
        self.ttl = ttl_secs.max(1);
        self
    }

    /// Seconds a token is valid for.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// A token for `client_id`, valid for the lifetime from `now` (seconds since epoch).
    pub fn issue(&self, client_id: &str, now: i64) -> String {
        let claims = Claims {
            sub: client_id.to_owned(),
            client_id: client_id.to_owned(),
            iat: now,
            exp: now + self.ttl,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let payload = serde_json::to_string(&claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The claims of a valid, unexpired token signed with our key.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.splitn(3, '.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        hmac::verify(&self.key, signing_input.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| TokenError::Malformed)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        if header["alg"] != "HS256" {
            return Err(TokenError::Malformed);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Whether `given` equals `expected`, in time independent of where they differ.
    pub fn secrets_equal(&self, given: &str, expected: &str) -> bool {
        let tag = hmac::sign(&self.key, expected.as_bytes());
        hmac::verify(&self.key, given.as_bytes(), tag.as_ref()).is_ok()
    }
}

/// The token signing key: `OUTPOST_TOKEN_KEY` (base64) if set; with a shared (PostgreSQL)
/// registry, the key stored there, so that every relay process accepts every other's tokens;
/// else `<data>/token.key`.
pub fn signing_key(data_dir: Option<&Path>, store: &Store) -> Result<Vec<u8>, Error> {
    if std::env::var_os("OUTPOST_TOKEN_KEY").is_none() && store.is_shared() {
        let mut fresh = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
            .map_err(|_| Error::Store("no system randomness".into()))?;
        if let Some(b64) = store.shared_setting("token_key", STANDARD.encode(&fresh))? {
            return STANDARD
                .decode(b64.trim())
                .map_err(|e| Error::Store(format!("stored token key is not base64: {e}")));
        }
    }
    load_or_create_key(data_dir)
}

/// The signing key in `<data>/token.key`, created (32 random bytes) on first start so that
/// tokens outlive a restart. `OUTPOST_TOKEN_KEY` (base64) overrides it, for relays that must
/// share a key.
pub fn load_or_create_key(data_dir: Option<&Path>) -> Result<Vec<u8>, Error> {
    if let Ok(b64) = std::env::var("OUTPOST_TOKEN_KEY") {
        return STANDARD
            .decode(b64.trim())
            .map_err(|e| Error::Invalid(format!("OUTPOST_TOKEN_KEY is not base64: {e}")));
    }
    let random = || {
        let mut key = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| Error::Store("no system randomness".into()))?;
        Ok::<_, Error>(key)
    };
    let Some(dir) = data_dir else {
        return random();
    };
    let path = dir.join("token.key");
    if let Ok(key) = std::fs::read(&path)
        && key.len() >= 32
    {
        return Ok(key);
    }
    let key = random()?;
    write_private(&path, &key).map_err(|e| Error::Store(format!("{}: {e}", path.display())))?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

/// `Authorization: Basic base64(id:secret)` → `(id, secret)`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Checks client credentials against the stored ClientApplication.
pub fn check_client(store: &Store, tokens: &Tokens, id: &str, secret: &str) -> bool {
    let Some(app) = store.get("ClientApplication", id) else {
        // Compare anyway, so an unknown id costs the same time as a wrong secret.
        let _ = tokens.secrets_equal(secret, "no-such-client");
        return false;
    };
    if app["status"].as_str() == Some("off") {
        return false;
    }
    match app["secret"].as_str() {
        Some(stored) if stored.starts_with(HASHED_PREFIX) => {
            tokens.secrets_equal(&hash_secret_with(secret, stored), stored)
        }
        // Stored before secrets were hashed at rest.
        Some(expected) if !expected.is_empty() => tokens.secrets_equal(secret, expected),
        _ => false,
    }
}

/// How a hashed client secret starts: `sha256:SALT:HASH` (base64), HASH = SHA-256(SALT ‖ secret).
pub const HASHED_PREFIX: &str = "sha256:";

/// A client secret as stored: salted and hashed. Client secrets are random strings, not
/// passwords, so one SHA-256 round suffices; the point is that the registry file does not hold
/// anything that logs in.
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    // Without system randomness a fixed salt still keeps the secret out of the file.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    hash_with_salt(secret, &salt)
}

fn hash_with_salt(secret: &str, salt: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(secret.as_bytes());
    format!(
        "{HASHED_PREFIX}{}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(ctx.finish().as_ref())
    )
}

/// `secret` hashed with the salt of `stored` (for comparing).
fn hash_secret_with(secret: &str, stored: &str) -> String {
    let salt = stored
        .strip_prefix(HASHED_PREFIX)
        .and_then(|rest| rest.split(':').next())
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_default();
    hash_with_salt(secret, &salt)
}

/// Extension on ClientApplication naming an Agent this client may connect as (repeatable,
/// `valueReference: {"reference": "Agent/<id>"}`).
pub const ALLOWED_AGENT_EXTENSION: &str =
    "https://outpost.health/fhir/StructureDefinition/allowed-agent";

/// Whether `client_id` may connect as agent `agent_id`: its ClientApplication must list the
/// agent with the [`ALLOWED_AGENT_EXTENSION`].
pub fn may_act_as(store: &Store, client_id: &str, agent_id: &str) -> bool {
    let Some(app) = store.get("ClientApplication", client_id) else {
        return false;
    };
    let wanted = format!("Agent/{agent_id}");
    app["extension"].as_array().into_iter().flatten().any(|e| {
        e["url"] == ALLOWED_AGENT_EXTENSION
            && e["valueReference"]["reference"].as_str() == Some(&wanted)
    })
}

/// The Agents a client is bound to (its allowed-agent extensions); empty for a caller.
pub fn bound_agents(store: &Store, client_id: &str) -> Vec<String> {
    let Some(app) = store.get("ClientApplication", client_id) else {
        return Vec::new();
    };
    app["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == ALLOWED_AGENT_EXTENSION)
        .filter_map(|e| {
            e["valueReference"]["reference"]
                .as_str()?
                .strip_prefix("Agent/")
        })
        .map(str::to_owned)
        .collect()
}

/// Whether an agent's credentials may make this REST request: an agent only reads its own
/// Agent resources and the Endpoints their channels name. Callers (clients bound to no Agent)
/// may make any request.
pub fn agent_may(store: &Store, client_id: &str, read: bool, ty: &str, id: Option<&str>) -> bool {
    let agents = bound_agents(store, client_id);
    if agents.is_empty() {
        return true;
    }
    let Some(id) = id.filter(|_| read) else {
        return false;
    };
    match ty {
        "Agent" => agents.iter().any(|a| a == id),
        "Endpoint" => {
            let wanted = format!("Endpoint/{id}");
            agents
                .iter()
                .filter_map(|a| store.get("Agent", a))
                .any(|agent| {
                    agent["channel"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["endpoint"]["reference"].as_str() == Some(&wanted))
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_verify() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let tok = t.issue("client-1", 1_000);
        let c = t.verify(&tok, 1_001).unwrap();
        assert_eq!((c.client_id.as_str(), c.exp), ("client-1", 1_000 + 3600));
        assert_eq!(t.verify(&tok, 1_000 + 3600), Err(TokenError::Expired));
        let other = Tokens::new(b"another key, another key, 123456");
        assert_eq!(other.verify(&tok, 1_001), Err(TokenError::Signature));
        // tamper with the payload
        let mut parts: Vec<String> = tok.split('.').map(str::to_owned).collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.replace("client-1", "client-2"));
        assert_eq!(
            t.verify(&parts.join("."), 1_001),
            Err(TokenError::Signature)
        );
        assert_eq!(t.verify("abc", 0), Err(TokenError::Malformed));
        assert_eq!(t.verify("a.b.c", 0), Err(TokenError::Malformed));
        assert_eq!(t.verify("a.b.AAAA", 0), Err(TokenError::Signature));
    }

    #[test]
    fn no_login_id_claim() {
        let t = Tokens::new(b"k");
        let tok = t.issue("c", 0);
        let payload = URL_SAFE_NO_PAD
            .decode(tok.split('.').nth(1).unwrap())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert!(v.get("login_id").is_none());
        assert_eq!(v["client_id"], "c");
    }

    #[test]
    fn basic_header() {
        let h = format!("Basic {}", STANDARD.encode("id:se:cret"));
        assert_eq!(parse_basic(&h), Some(("id".into(), "se:cret".into())));
        assert_eq!(parse_basic("Bearer x"), None);
    }

    #[test]
    fn hashed_secrets() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let stored = hash_secret("s3cret");
        assert!(stored.starts_with(HASHED_PREFIX) && !stored.contains("s3cret"));
        assert_ne!(stored, hash_secret("s3cret"), "salted");
        assert!(t.secrets_equal(&hash_secret_with("s3cret", &stored), &stored));
        assert!(!t.secrets_equal(&hash_secret_with("s3creT", &stored), &stored));
    }

    #[test]
    fn secrets() {
        let t = Tokens::new(b"k");
        assert!(t.secrets_equal("abc", "abc"));
        assert!(!t.secrets_equal("abd", "abc"));
        assert!(!t.secrets_equal("", "abc"));
    }
}
