//! Access tokens: HS256 JWTs.
//!
//! A token carries `sub` and `client_id` (the ClientApplication id), `iat`, `exp` one hour
//! ahead and a `jti`; no `login_id`, so the Medplum clients never call `auth/me`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

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
#[non_exhaustive]
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
    ///
    /// # Errors
    ///
    /// [`TokenError`]: malformed, not signed with our key, or expired at `now`.
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

    /// A keyed tag of `secret` (HMAC-SHA256 with the signing key), to remember a verified
    /// secret without keeping it.
    pub(crate) fn tag(&self, secret: &str) -> Vec<u8> {
        hmac::sign(&self.key, secret.as_bytes()).as_ref().to_vec()
    }

    /// Whether `secret` has the tag `tag`, in constant time.
    pub(crate) fn tag_matches(&self, secret: &str, tag: &[u8]) -> bool {
        hmac::verify(&self.key, secret.as_bytes(), tag).is_ok()
    }

    /// Whether `given` equals `expected`, in time independent of where they differ.
    pub(crate) fn secrets_equal(&self, given: &str, expected: &str) -> bool {
        let tag = hmac::sign(&self.key, expected.as_bytes());
        hmac::verify(&self.key, given.as_bytes(), tag.as_ref()).is_ok()
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
    fn secrets() {
        let t = Tokens::new(b"k");
        assert!(t.secrets_equal("abc", "abc"));
        assert!(!t.secrets_equal("abd", "abc"));
        assert!(!t.secrets_equal("", "abc"));
    }
}
