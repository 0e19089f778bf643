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
