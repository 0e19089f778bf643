//! What the agent counts, for Prometheus (`outpost agent --metrics-listen`, text exposition
//! format): device messages per channel by outcome, pushes by outcome and their duration, the
//! queue's depth per channel, and whether the relay session is live. One registry per agent
//! (no process-wide state), names per Prometheus's conventions (`outpost_agent_` prefix,
//! `_total` counters, `_seconds`). Serving it over HTTP is the caller's job.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `channel` and `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Message {
    channel: String,
    outcome: &'static str,
}

/// `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// `channel`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Channel {
    channel: String,
}

/// The agent's metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    messages: Family<Message, Counter>,
    pushes: Family<Outcome, Counter>,
    push_seconds: Histogram,
    queue_depth: Family<Channel, Gauge>,
    relay_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("outpost_agent");
        let messages = Family::<Message, Counter>::default();
        registry.register(
            "messages",
            "Device messages per inbound channel by outcome: received (committed to the queue), sent (the relay took it), errored (the relay answered 400 or more), dead_lettered",
            messages.clone(),
        );
        let pushes = Family::<Outcome, Counter>::default();
        registry.register(
            "pushes",
            "Pushes from the relay by outcome: answered (below 400), error (the device failed or answered with an error), refused (Agent.status is off)",
            pushes.clone(),
        );
        // 1 ms to ~65 s, doubling.
        let push_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
        );
        registry.register(
            "push_duration_seconds",
            "Time from a push's arrival to its answer",
            push_seconds.clone(),
        );
        let queue_depth = Family::<Channel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Device messages in the queue not yet answered by the relay, per channel",
            queue_depth.clone(),
        );
        let relay_connected = Gauge::default();
        registry.register(
            "relay_connected",
            "1 while a session with the relay is live, else 0",
            relay_connected.clone(),
        );
        Metrics {
            registry,
            messages,
            pushes,
            push_seconds,
            queue_depth,
            relay_connected,
        }
    }
}

impl Metrics {
    /// A device message on `channel` had `outcome`.
    pub(crate) fn message(&self, channel: &str, outcome: &'static str) {
        self.messages
            .get_or_create(&Message {
                channel: channel.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A push ended with `outcome` after `took` (`None`: not attempted).
    pub(crate) fn push(&self, outcome: &'static str, took: Option<Duration>) {
        self.pushes.get_or_create(&Outcome { outcome }).inc();
        if let Some(took) = took {
            self.push_seconds.observe(took.as_secs_f64());
        }
    }

    /// The text exposition, with the gauges set to `live` and the queue's `depths` now.
    pub(crate) fn render(&self, live: bool, depths: &BTreeMap<String, i64>) -> String {
        self.relay_connected.set(i64::from(live));
        self.queue_depth.clear();
        for (channel, depth) in depths {
            self.queue_depth
                .get_or_create(&Channel {
                    channel: channel.clone(),
                })
                .set(*depth);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
