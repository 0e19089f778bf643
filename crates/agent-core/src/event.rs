//! [`Event`]: what the agent did, for demos, tests and monitoring.

use tokio::sync::broadcast;

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
}

/// Where events go: any number of subscribers, none needed. A subscriber that falls behind
/// loses the oldest events, never slows the agent.
#[derive(Debug, Clone)]
pub(crate) struct Events(broadcast::Sender<Event>);

impl Events {
    pub(crate) fn new() -> Events {
        Events(broadcast::channel(1024).0)
    }

    pub(crate) fn emit(&self, event: Event) {
        let _ = self.0.send(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
