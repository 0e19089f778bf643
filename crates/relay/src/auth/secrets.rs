//! Client secrets at rest: salted and hashed, compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::Tokens;

/// How a hashed client secret starts: `sha256:SALT:HASH` (base64), HASH = SHA-256(SALT ‖ secret).
pub(crate) const HASHED_PREFIX: &str = "sha256:";

/// A client secret as stored: salted and hashed. Client secrets are random strings, not
/// passwords, so one SHA-256 round suffices; the point is that the registry file does not hold
/// anything that logs in.
pub(crate) fn hash_secret(secret: &str) -> String {
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

/// Whether `secret` logs in as the ClientApplication `app` (`None`: no such client; the
/// comparison still costs the same time).
pub(crate) fn check_secret(tokens: &Tokens, app: Option<&Value>, secret: &str) -> bool {
    let Some(app) = app else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_secrets() {
        let t = Tokens::new(b"0123456789abcdef0123456789abcdef");
        let stored = hash_secret("s3cret");
        assert!(stored.starts_with(HASHED_PREFIX) && !stored.contains("s3cret"));
        assert_ne!(stored, hash_secret("s3cret"), "salted");
        assert!(t.secrets_equal(&hash_secret_with("s3cret", &stored), &stored));
        assert!(!t.secrets_equal(&hash_secret_with("s3creT", &stored), &stored));
        let app = serde_json::json!({"secret": stored});
        assert!(check_secret(&t, Some(&app), "s3cret"));
        assert!(!check_secret(&t, Some(&app), "s3creT"));
        assert!(!check_secret(&t, None, "s3cret"));
    }
}
