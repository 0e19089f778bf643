//! Retry delays: exponential, capped, with jitter, so that a fleet of agents (or a channel's
//! retries) never moves in step and never spins.

use std::time::Duration;

/// `min × 2^(failures-1)`, capped at `max`, then a random part of it (up to half) dropped.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before the next attempt, counting one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.min.saturating_mul(1u32 << (self.failures - 1).min(16));
        let capped = exp.min(self.max).max(self.min);
        capped.mul_f64(1.0 - 0.5 * random_fraction())
    }

    /// Failures counted since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next delay starts from `min` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A number in [0, 1] from the system's random source.
fn random_fraction() -> f64 {
    let mut r = [0u8; 4];
    // Without randomness the delay is the full one: still bounded, only not jittered.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(500 * (1 << i)).min(Duration::from_secs(30));
            assert!(*d <= full && *d >= full / 2, "{i}: {d:?}");
        }
        assert_eq!(b.failures(), 10);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
