//! One login with client credentials (the token endpoint, HTTP Basic): throttled, checked off
//! the async runtime (PBKDF2 is slow on purpose), remembered once verified so that a client
//! using HTTP Basic on every request pays the hash once, and upgraded when stored in an old form.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::Tokens;
use super::secrets::{check_secret, hash_secret};
use super::throttle::{LoginLimits, LoginThrottle};

/// Verified secrets remembered at most (a tag each, not the secret).
const MAX_VERIFIED: usize = 10_000;

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoginError {
    /// Too many failed attempts for this client id or from this address; retry after the
    /// duration.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Wrong secret, unknown or disabled client.
    #[error("invalid client credentials")]
    Invalid,
}

/// Logins: the throttle and the verified-secret memory.
#[derive(Debug)]
pub(crate) struct Logins {
    tokens: Tokens,
    throttle: LoginThrottle,
    /// Client id → (the stored hash the secret was checked against, the secret's tag).
    verified: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl Logins {
    pub(crate) fn new(tokens: Tokens, limits: LoginLimits) -> Logins {
        Logins {
            tokens,
            throttle: LoginThrottle::new(limits),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `secret` logs in as client `id` (its ClientApplication `app`, if any) from
    /// `addr`. `Ok(Some(hash))`: it does, and the stored secret should be replaced by `hash`
    /// (PBKDF2; it was stored in an older form). A failure is counted and logged with the
    /// client id and address, never the secret.
    pub(crate) async fn check(
        &self,
        app: Option<Arc<Value>>,
        id: &str,
        secret: &str,
        addr: Option<IpAddr>,
    ) -> Result<Option<String>, LoginError> {
        if let Some(wait) = self.throttle.blocked(id, addr) {
            tracing::warn!(client = id, addr = ?addr, "login refused: too many failed attempts");
            return Err(LoginError::Throttled(wait));
        }
        let stored = app
            .as_ref()
            .filter(|a| a["status"].as_str() != Some("off"))
            .and_then(|a| a["secret"].as_str())
            .map(str::to_owned);
        if let Some(stored) = &stored
            && self.remembered(id, stored, secret)
        {
            return Ok(None);
        }
        let tokens = self.tokens.clone();
        let given = secret.to_owned();
        let verdict = tokio::task::spawn_blocking(move || {
            let v = check_secret(&tokens, app.as_deref(), &given);
            let upgrade = v.upgrade.then(|| hash_secret(&given));
            (v.ok, upgrade)
        })
        .await;
        match verdict {
            Ok((true, upgrade)) => {
                if let Some(stored) = upgrade.as_ref().or(stored.as_ref()) {
                    self.remember(id, stored, secret);
                }
                Ok(upgrade)
            }
            _ => {
                self.throttle.failed(id, addr);
                tracing::warn!(client = id, addr = ?addr, "login with invalid client credentials");
                Err(LoginError::Invalid)
            }
        }
    }

    fn remembered(&self, id: &str, stored: &str, secret: &str) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(id)
            .is_some_and(|(s, tag)| s == stored && self.tokens.tag_matches(secret, tag))
    }

    fn remember(&self, id: &str, stored: &str, secret: &str) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(id.to_owned(), (stored.to_owned(), self.tokens.tag(secret)));
    }
}
