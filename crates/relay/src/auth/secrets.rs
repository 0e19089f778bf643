//! Client secrets at rest: PBKDF2-HMAC-SHA256 with a random salt, compared in constant time;
//! new secrets generated; the minimum length a chosen secret must have.
//!
//! PBKDF2 comes from `ring`, already in the build for TLS (Argon2id would add a crate for the
//! same job). The iteration count is stored with each hash, so raising [`PBKDF2_ITERATIONS`]
//! later leaves existing entries valid. Entries from before (`sha256:SALT:HASH`, one salted
//! SHA-256 round, or a plain secret) still log in; the caller rewrites them with PBKDF2 on the
//! next successful login ([`Verdict::upgrade`]).

use std::num::NonZeroU32;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

use super::Tokens;

/// How a PBKDF2 hash starts: `pbkdf2-sha256:ITERATIONS:SALT:HASH` (base64).
pub(crate) const PBKDF2_PREFIX: &str = "pbkdf2-sha256:";
/// How a hash of the first releases starts: `sha256:SALT:HASH`, HASH = SHA-256(SALT ‖ secret).
pub(crate) const LEGACY_PREFIX: &str = "sha256:";
/// PBKDF2-HMAC-SHA256 iterations for new hashes: OWASP's figure for this PRF (2023).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Shortest client secret a caller may choose (characters). Generated secrets are 43.
pub const MIN_SECRET_LEN: usize = 16;
/// Most iterations a stored hash may ask for: a hash written by hand with a huge count must
/// not stall a login thread for minutes.
const MAX_ITERATIONS: u32 = 10_000_000;

/// Whether a stored secret is already hashed (either form); such a value is stored as it is.
pub(crate) fn is_hashed(stored: &str) -> bool {
    stored.starts_with(PBKDF2_PREFIX) || stored.starts_with(LEGACY_PREFIX)
}

/// A client secret as stored: PBKDF2-HMAC-SHA256, [`PBKDF2_ITERATIONS`], a 16-byte salt.
pub(crate) fn hash_secret(secret: &str) -> String {
    hash_secret_with_iterations(secret, PBKDF2_ITERATIONS)
}

/// The same with a chosen count (tests use a small one).
pub(crate) fn hash_secret_with_iterations(secret: &str, iterations: u32) -> String {
    let mut salt = [0u8; 16];
    // Without system randomness a fixed salt still keeps the secret out of the file.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    let iterations =
        NonZeroU32::new(iterations.clamp(1, MAX_ITERATIONS)).unwrap_or(NonZeroU32::MIN);
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        secret.as_bytes(),
        &mut out,
    );
    format!(
        "{PBKDF2_PREFIX}{iterations}:{}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// A fresh client secret: 32 random bytes (256 bits), base64url without padding (43
/// characters). `None` when the system has no randomness.
pub(crate) fn generate_secret() -> Option<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The result of checking a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The secret logs in.
    pub(crate) ok: bool,
    /// It does, and the stored form is older than PBKDF2 (or PBKDF2 with fewer iterations
    /// than [`PBKDF2_ITERATIONS`]): store [`hash_secret`] of it.
    pub(crate) upgrade: bool,
}

const NO: Verdict = Verdict {
    ok: false,
    upgrade: false,
};

/// Whether `secret` logs in as the ClientApplication `app` (`None`: no such client; the
/// comparison still costs a PBKDF2 run, so a missing client is not told apart by time).
/// Slow by design: call it off the async runtime.
pub(crate) fn check_secret(tokens: &Tokens, app: Option<&Value>, secret: &str) -> Verdict {
    let Some(app) = app else {
        let _ = pbkdf2_matches(secret, DUMMY);
        return NO;
    };
    if app["status"].as_str() == Some("off") {
        return NO;
    }
    match app["secret"].as_str() {
        Some(stored) if stored.starts_with(PBKDF2_PREFIX) => match pbkdf2_matches(secret, stored) {
            Some((true, iterations)) => Verdict {
                ok: true,
                upgrade: iterations < PBKDF2_ITERATIONS,
            },
            _ => NO,
        },
        Some(stored) if stored.starts_with(LEGACY_PREFIX) => Verdict {
            ok: tokens.secrets_equal(&legacy_hash_with(secret, stored), stored),
            upgrade: true,
        },
        // Stored before secrets were hashed at rest.
        Some(expected) if !expected.is_empty() => Verdict {
            ok: tokens.secrets_equal(secret, expected),
            upgrade: true,
        },
        _ => NO,
    }
    .and_ok()
}

impl Verdict {
    /// No upgrade without a login.
    fn and_ok(self) -> Verdict {
        Verdict {
            ok: self.ok,
            upgrade: self.ok && self.upgrade,
        }
    }
}

/// A well-formed hash of nothing anyone knows, for the time of a missing client.
const DUMMY: &str =
    "pbkdf2-sha256:600000:AAAAAAAAAAAAAAAAAAAAAA==:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Whether `secret` matches the PBKDF2 hash `stored`, and the hash's iteration count; `None`
/// for a malformed hash.
fn pbkdf2_matches(secret: &str, stored: &str) -> Option<(bool, u32)> {
    let mut parts = stored.strip_prefix(PBKDF2_PREFIX)?.split(':');
    let iterations: u32 = parts.next()?.parse().ok()?;
    if iterations > MAX_ITERATIONS {
        return None;
    }
    let salt = STANDARD.decode(parts.next()?).ok()?;
    let hash = STANDARD.decode(parts.next()?).ok()?;
    let ok = ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations)?,
        &salt,
        secret.as_bytes(),
        &hash,
    )
    .is_ok();
    Some((ok, iterations))
}

/// `secret` hashed as the first releases did, with the salt of `stored` (for comparing).
fn legacy_hash_with(secret: &str, stored: &str) -> String {
    let salt = stored
        .strip_prefix(LEGACY_PREFIX)
        .and_then(|rest| rest.split(':').next())
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_default();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&salt);
    ctx.update(secret.as_bytes());
    format!(
        "{LEGACY_PREFIX}{}:{}",
        STANDARD.encode(&salt),
        STANDARD.encode(ctx.finish().as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn pbkdf2_round_trip() {
        let t = tokens();
        let stored = hash_secret_with_iterations("s3cret-s3cret-s3cret", 1000);
        assert!(stored.starts_with("pbkdf2-sha256:1000:") && !stored.contains("s3cret"));
        assert_ne!(
            stored,
            hash_secret_with_iterations("s3cret-s3cret-s3cret", 1000),
            "salted"
        );
        let app = serde_json::json!({"secret": stored});
        let v = check_secret(&t, Some(&app), "s3cret-s3cret-s3cret");
        assert!(v.ok);
        assert!(v.upgrade, "1000 < {PBKDF2_ITERATIONS} iterations");
        assert_eq!(check_secret(&t, Some(&app), "s3cret-s3cret-s3creT"), NO);
        assert_eq!(check_secret(&t, None, "s3cret-s3cret-s3cret"), NO);
        let off = serde_json::json!({"secret": app["secret"], "status": "off"});
        assert_eq!(check_secret(&t, Some(&off), "s3cret-s3cret-s3cret"), NO);
    }

    #[test]
    fn legacy_and_plain_entries_log_in_and_ask_for_an_upgrade() {
        let t = tokens();
        let legacy = legacy_hash_with("old-secret", "sha256:c2FsdHNhbHRzYWx0c2FsdA==:x");
        let app = serde_json::json!({"secret": legacy});
        let ok = Verdict {
            ok: true,
            upgrade: true,
        };
        assert_eq!(check_secret(&t, Some(&app), "old-secret"), ok);
        assert_eq!(check_secret(&t, Some(&app), "old-secreT"), NO);
        let plain = serde_json::json!({"secret": "plain-secret"});
        assert_eq!(check_secret(&t, Some(&plain), "plain-secret"), ok);
        assert_eq!(check_secret(&t, Some(&plain), "plain-secreT"), NO);
    }

    #[test]
    fn malformed_hashes_never_log_in_and_never_panic() {
        let t = tokens();
        for stored in [
            "pbkdf2-sha256:",
            "pbkdf2-sha256:0:AAAA:AAAA",
            "pbkdf2-sha256:99999999999:AAAA:AAAA",
            "pbkdf2-sha256:10:!!:AAAA",
            "pbkdf2-sha256:10:AAAA",
            "sha256:",
            "",
        ] {
            let app = serde_json::json!({"secret": stored});
            assert_eq!(check_secret(&t, Some(&app), ""), NO, "{stored}");
            assert_eq!(check_secret(&t, Some(&app), "x"), NO, "{stored}");
        }
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a.len() >= MIN_SECRET_LEN);
        assert_ne!(a, b);
    }
}
