//! What the relay counts, for Prometheus (`GET /metrics`, text exposition format): agents
//! connected to this process, pushes by outcome and their duration, inbound messages by
//! outcome, WebSocket messages by direction. One registry per relay (no process-wide state),
//! names per Prometheus's conventions (`outpost_` prefix, `_total` counters, `_seconds`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set with one `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct Outcome {
    pub(crate) outcome: &'static str,
}

/// A label set with one `direction` (`in`: from agents, `out`: to agents).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct Direction {
    pub(crate) direction: &'static str,
}

/// The relay's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// The last day, minute by minute, for the console's charts.
    pub(crate) timeline: Timeline,
    registry: Registry,
    agents_connected: Gauge,
    pushes: Family<Outcome, Counter>,
    push_seconds: Family<Outcome, Histogram>,
    inbound: Family<Outcome, Counter>,
    ws_messages: Family<Direction, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("outpost");
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Agents with a live WebSocket session on this relay process",
            agents_connected.clone(),
        );
        let pushes = Family::<Outcome, Counter>::default();
        registry.register(
            "pushes",
            "$push requests by outcome: answered (the agent's answer), sent (no waitForResponse), device_error (the agent or device answered with an error), timeout, unavailable (agent not connected or not answering heartbeats), rejected (the caller's request)",
            pushes.clone(),
        );
        // 100 µs to ~13 s, doubling.
        let push_seconds = Family::<Outcome, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 18,
            ))
        });
        registry.register(
            "push_duration_seconds",
            "Time from a $push request's arrival to its answer, by outcome",
            push_seconds.clone(),
        );
        let inbound = Family::<Outcome, Counter>::default();
        registry.register(
            "inbound_messages",
            "Device messages from agents by outcome: stored (2xx answer), rejected (4xx), retry (429 or 5xx: the agent keeps it and sends it again)",
            inbound.clone(),
        );
        let ws_messages = Family::<Direction, Counter>::default();
        registry.register(
            "websocket_messages",
            "Agent WebSocket messages by direction (in: from agents, out: to agents)",
            ws_messages.clone(),
        );
        Metrics {
            timeline: Timeline::default(),
            registry,
            agents_connected,
            pushes,
            push_seconds,
            inbound,
            ws_messages,
        }
    }
}

impl Metrics {
    /// One `$push` answered with `outcome` after `took`.
    pub(crate) fn push(&self, outcome: &'static str, took: Duration) {
        self.timeline.push(outcome, took);
        let labels = Outcome { outcome };
        self.pushes.get_or_create(&labels).inc();
        self.push_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One inbound message answered with HTTP-like `status`.
    pub(crate) fn inbound(&self, status: u16) {
        let outcome = match status {
            429 | 500.. => "retry",
            400..=499 => "rejected",
            _ => "stored",
        };
        self.timeline.inbound();
        self.inbound.get_or_create(&Outcome { outcome }).inc();
    }

    /// One WebSocket message to (`out`) or from (`in`) an agent.
    pub(crate) fn ws_message(&self, direction: &'static str) {
        self.ws_messages
            .get_or_create(&Direction { direction })
            .inc();
    }

    /// The text exposition, with `agents_connected` as of now.
    pub(crate) fn render(&self, agents_connected: usize) -> String {
        self.agents_connected
            .set(i64::try_from(agents_connected).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::default();
        m.push("answered", Duration::from_micros(300));
        m.push("timeout", Duration::from_secs(10));
        m.inbound(200);
        m.inbound(503);
        m.ws_message("in");
        let text = m.render(3);
        assert!(text.contains("outpost_agents_connected 3"), "{text}");
        assert!(
            text.contains("outpost_pushes_total{outcome=\"answered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outpost_pushes_total{outcome=\"timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outpost_push_duration_seconds_count{outcome=\"answered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outpost_inbound_messages_total{outcome=\"retry\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("outpost_websocket_messages_total{direction=\"in\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

/// Minutes kept: one day.
const MINUTES: usize = 24 * 60;
/// Latency buckets: bucket `i` holds pushes answered in under `50 µs × 2^(i+1)` (the last
/// everything slower), up to about 7 minutes.
const BUCKETS: usize = 24;

/// One minute of this process's pushes and inbound messages.
#[derive(Debug, Clone, Default)]
struct Minute {
    /// Minutes since the epoch.
    at: i64,
    pushes: u32,
    inbound: u32,
    latency: [u32; BUCKETS],
    /// Pushes by outcome other than `answered` and `sent`.
    errors: std::collections::BTreeMap<&'static str, u32>,
}

/// This process's pushes and inbound messages per minute over the last day, in memory, for
/// the console's charts: counts, latency percentiles (from doubling buckets, so each is an
/// upper bound within a factor of two), errors by outcome.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    minutes: std::sync::Mutex<std::collections::VecDeque<Minute>>,
}

/// The series of [`Timeline::series`], one value per minute, oldest first.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Series {
    /// Each minute's start, seconds since the epoch.
    pub(crate) t: Vec<i64>,
    pub(crate) pushes: Vec<u32>,
    pub(crate) inbound: Vec<u32>,
    /// Latency percentiles in ms (`null` in a minute without pushes).
    pub(crate) p50: Vec<Option<f64>>,
    pub(crate) p95: Vec<Option<f64>>,
    pub(crate) p99: Vec<Option<f64>>,
    /// Pushes per minute by error outcome.
    pub(crate) errors: std::collections::BTreeMap<&'static str, Vec<u32>>,
}

impl Timeline {
    fn with_minute(&self, f: impl FnOnce(&mut Minute)) {
        let at = chrono::Utc::now().timestamp().div_euclid(60);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.back().is_none_or(|m| m.at != at) {
            if minutes.len() == MINUTES {
                minutes.pop_front();
            }
            minutes.push_back(Minute {
                at,
                ..Minute::default()
            });
        }
        if let Some(m) = minutes.back_mut() {
            f(m);
        }
    }

    fn push(&self, outcome: &'static str, took: Duration) {
        let units = took.as_micros() / 50;
        let bucket = (u128::BITS - units.leading_zeros()).saturating_sub(1) as usize;
        self.with_minute(|m| {
            m.pushes += 1;
            m.latency[bucket.min(BUCKETS - 1)] += 1;
            if !matches!(outcome, "answered" | "sent") {
                *m.errors.entry(outcome).or_default() += 1;
            }
        });
    }

    fn inbound(&self) {
        self.with_minute(|m| m.inbound += 1);
    }

    /// The last `minutes` minutes up to now (at most a day), one entry per minute, zeros where
    /// nothing happened.
    pub(crate) fn series(&self, minutes: usize) -> Series {
        let minutes = minutes.clamp(1, MINUTES);
        let now = chrono::Utc::now().timestamp().div_euclid(60);
        let first = now - minutes as i64 + 1;
        let kept = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let by_minute: std::collections::HashMap<i64, &Minute> = kept
            .iter()
            .filter(|m| m.at >= first)
            .map(|m| (m.at, m))
            .collect();
        let mut s = Series::default();
        let reasons: std::collections::BTreeSet<&'static str> = by_minute
            .values()
            .flat_map(|m| m.errors.keys().copied())
            .collect();
        for r in &reasons {
            s.errors.insert(r, Vec::with_capacity(minutes));
        }
        for at in first..=now {
            s.t.push(at * 60);
            let m = by_minute.get(&at);
            s.pushes.push(m.map_or(0, |m| m.pushes));
            s.inbound.push(m.map_or(0, |m| m.inbound));
            s.p50.push(m.and_then(|m| percentile(m, 0.50)));
            s.p95.push(m.and_then(|m| percentile(m, 0.95)));
            s.p99.push(m.and_then(|m| percentile(m, 0.99)));
            for (r, v) in &mut s.errors {
                v.push(m.and_then(|m| m.errors.get(r).copied()).unwrap_or(0));
            }
        }
        s
    }
}

/// The upper bound, in ms, of the bucket holding the `q` quantile of a minute's pushes.
fn percentile(m: &Minute, q: f64) -> Option<f64> {
    if m.pushes == 0 {
        return None;
    }
    let rank = (f64::from(m.pushes) * q).ceil().max(1.0);
    let mut seen = 0.0;
    for (i, n) in m.latency.iter().enumerate() {
        seen += f64::from(*n);
        if seen >= rank {
            return Some(0.05 * f64::from(1u32 << (i + 1)));
        }
    }
    None
}

#[cfg(test)]
mod timeline_tests {
    use super::*;

    #[test]
    fn minutes_count_pushes_latency_and_errors() {
        let t = Timeline::default();
        for _ in 0..98 {
            t.push("answered", Duration::from_micros(300));
        }
        t.push("timeout", Duration::from_secs(10));
        t.push("unavailable", Duration::from_micros(80));
        t.inbound();
        let s = t.series(60);
        assert_eq!(s.t.len(), 60);
        assert_eq!((s.pushes[59], s.inbound[59]), (100, 1));
        assert_eq!(s.pushes[..59].iter().sum::<u32>(), 0);
        // 300 µs is in [200, 400) µs: the bucket's bound is 0.4 ms.
        assert_eq!(s.p50[59], Some(0.4));
        // The 99th of 100 is still a 300 µs one; the slowest is the 10 s one.
        assert_eq!(s.p99[59], Some(0.4));
        assert_eq!(s.p50[0], None);
        assert_eq!(s.errors["timeout"][59], 1);
        assert_eq!(s.errors["unavailable"][59], 1);
        assert!(!s.errors.contains_key("answered"));
    }
}
