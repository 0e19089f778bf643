//! [`Event`]: what the agent did, for demos, tests and monitoring.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::stats::RttStats;

/// Something the agent did, for demos, tests and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The relay accepted the connect request.
    Connected,
    /// The session ended; the agent reconnects.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A push arrived from the relay.
    PushReceived {
        /// Where to.
        remote: String,
        /// What.
        content_type: String,
    },
    /// A push was answered.
    PushAnswered {
        /// Where to.
        remote: String,
        /// 200, or 400 with the reason in the body.
        status: u16,
        /// The answer (the device's answer, or the error text).
        body: String,
    },
    /// An inbound channel is listening.
    ChannelStarted {
        /// `Agent.channel.name`.
        name: String,
        /// The Endpoint address.
        address: String,
        /// The socket address it listens on (the port the system chose when the Endpoint's is
        /// 0).
        bound: std::net::SocketAddr,
    },
    /// An inbound channel could not start.
    ChannelFailed {
        /// `Agent.channel.name`.
        name: String,
        /// Why.
        error: String,
    },
    /// A device message was committed to the queue.
    InboundQueued {
        /// The channel.
        channel: String,
        /// Queue sequence number.
        id: i64,
    },
    /// The relay answered a queued message.
    InboundAnswered {
        /// The channel.
        channel: String,
        /// Queue sequence number.
        id: i64,
        /// The relay's status code.
        status: u16,
    },
    /// A queued message got too many errors and was moved to the dead letters; its channel
    /// moves on.
    InboundDeadLettered {
        /// The channel.
        channel: String,
        /// Queue sequence number.
        id: i64,
        /// The last error.
        reason: String,
    },
}

/// What one inbound channel did since the agent started (`logStatsFreqSecs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChannelCounts {
    /// Device messages committed to the queue.
    pub(crate) received: u64,
    /// Messages the relay took (an answer below 400).
    pub(crate) sent: u64,
    /// Answers of 400 or more, and messages moved to the dead letters.
    pub(crate) errored: u64,
}

/// Where events go: any number of subscribers, none needed. A subscriber that falls behind
/// loses the oldest events, never slows the agent. Inbound events are also counted per
/// channel (the stats line, `$stats`) and in the [`Metrics`]; the round-trip times for
/// `$stats` are kept beside them.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<Event>,
    counts: Arc<Mutex<BTreeMap<String, ChannelCounts>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) rtt: RttStats,
}

impl Events {
    pub(crate) fn new() -> Events {
        Events {
            tx: broadcast::channel(1024).0,
            counts: Arc::default(),
            metrics: Arc::default(),
            rtt: RttStats::default(),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        let counted = match &event {
            Event::InboundQueued { channel, .. } => Some((channel, 1, 0, 0, "received")),
            Event::InboundAnswered {
                channel, status, ..
            } if *status < 400 => Some((channel, 0, 1, 0, "sent")),
            Event::InboundAnswered { channel, .. } => Some((channel, 0, 0, 1, "errored")),
            Event::InboundDeadLettered { channel, .. } => Some((channel, 0, 0, 1, "dead_lettered")),
            _ => None,
        };
        if let Some((channel, .., outcome)) = counted {
            self.metrics.message(channel, outcome);
        }
        if let Some((channel, received, sent, errored, _)) = counted {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let c = counts.entry(channel.clone()).or_default();
            c.received += received;
            c.sent += sent;
            c.errored += errored;
        }
        let _ = self.tx.send(event);
    }

    /// The inbound counts per channel, by name.
    pub(crate) fn counts(&self) -> BTreeMap<String, ChannelCounts> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
