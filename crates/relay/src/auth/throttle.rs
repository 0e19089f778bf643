//! Login throttling: failed client-credential attempts are counted per client id and per
//! source address (GCRA from `governor`); past the allowance, every attempt for that client
//! id or from that address — right secret or not — is refused with the wait until the next
//! one is allowed, without checking the secret.
//!
//! Only failures count, so a client that logs in correctly however often (every `outpost push`
//! logs in) is never slowed, and a guesser gets [`LoginLimits`]' rate whatever it tries.
//! Behind a reverse proxy every request comes from the proxy's address: the per-address limit
//! then applies to all callers together (the per-client limit still applies to each).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// How many failed logins are allowed: each of `per_client` and `per_address` failures at
/// once, refilled evenly over `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failed attempts for one client id (whatever the address).
    pub per_client: u32,
    /// Failed attempts from one source address (whatever the client id).
    pub per_address: u32,
    /// The time over which each allowance refills.
    pub period: Duration,
}

impl Default for LoginLimits {
    /// 10 failures per client id and 30 per address, per minute.
    fn default() -> Self {
        LoginLimits {
            per_client: 10,
            per_address: 30,
            period: Duration::from_secs(60),
        }
    }
}

/// Keys tracked before idle ones are dropped; blocked keys remembered at most.
const MAX_KEYS: usize = 100_000;
/// A client id is at most 64 characters (a FHIR id); longer names are cut, so an attacker's
/// names cannot make the table large.
const MAX_CLIENT_KEY: usize = 64;

/// Failed logins per client id and per address.
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    by_client: Keyed<String>,
    by_addr: Keyed<IpAddr>,
}

impl LoginThrottle {
    pub(crate) fn new(limits: LoginLimits) -> LoginThrottle {
        LoginThrottle {
            by_client: Keyed::new(limits.per_client, limits.period),
            by_addr: Keyed::new(limits.per_address, limits.period),
        }
    }

    /// `Some(wait)` when attempts for `client_id` or from `addr` are refused now.
    pub(crate) fn blocked(&self, client_id: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let c = self.by_client.blocked(&client_key(client_id), now);
        let a = addr.and_then(|a| self.by_addr.blocked(&a, now));
        c.max(a)
    }

    /// Counts a failed attempt.
    pub(crate) fn failed(&self, client_id: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        self.by_client.failed(client_key(client_id), now);
        if let Some(a) = addr {
            self.by_addr.failed(a, now);
        }
    }
}

fn client_key(id: &str) -> String {
    id.chars().take(MAX_CLIENT_KEY).collect()
}

struct Keyed<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, HashMapStateStore<K>, DefaultClock>,
    /// Keys over their allowance, and until when. governor answers "not until" only for an
    /// attempt it counts; this remembers the answer so that the next attempt can be refused
    /// before its secret is checked.
    blocked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for Keyed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyed { .. }")
    }
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(burst: u32, period: Duration) -> Keyed<K> {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let every = (period / burst.get()).max(Duration::from_millis(1));
        let quota = Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Keyed {
            limiter: RateLimiter::hashmap(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                blocked.remove(key);
                None
            }
            None => None,
        }
    }

    fn failed(&self, key: K, now: Instant) {
        if self.limiter.len() >= MAX_KEYS {
            self.limiter.retain_recent();
        }
        if let Err(not_until) = self.limiter.check_key(&key) {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            if blocked.len() >= MAX_KEYS {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < MAX_KEYS {
                blocked.insert(key, now + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_allowance_block_that_client_and_that_address_only() {
        let t = LoginThrottle::new(LoginLimits {
            per_client: 3,
            per_address: 5,
            period: Duration::from_secs(60),
        });
        let a1: IpAddr = "10.0.0.1".parse().unwrap();
        let a2: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.blocked("c1", Some(a1)), None);
            t.failed("c1", Some(a1));
        }
        // The fourth failure is over c1's allowance.
        t.failed("c1", Some(a1));
        let wait = t
            .blocked("c1", Some(a2))
            .expect("c1 blocked from any address");
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(20));
        assert_eq!(
            t.blocked("c2", Some(a1)),
            None,
            "a1 has failed 4 times of 5"
        );
        t.failed("c2", Some(a1));
        t.failed("c3", Some(a1));
        assert!(t.blocked("c4", Some(a1)).is_some(), "a1 over its allowance");
        assert_eq!(t.blocked("c4", Some(a2)), None);
    }

    #[test]
    fn long_client_ids_share_one_key() {
        let t = LoginThrottle::new(LoginLimits {
            per_client: 1,
            per_address: 100,
            period: Duration::from_secs(60),
        });
        let long = "x".repeat(10_000);
        t.failed(&long, None);
        t.failed(&format!("{long}y"), None);
        assert!(t.blocked(&"x".repeat(64), None).is_some());
    }
}
