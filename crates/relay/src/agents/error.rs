//! Why a message did not reach an agent, or got no answer.

/// Why a message did not reach an agent, or got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum AskError {
    /// No live socket for the agent anywhere.
    #[error("Agent/{0} is not connected: the message was not delivered")]
    NotConnected(String),
    /// The agent has not answered a heartbeat for a while: its socket is open but it is not
    /// reading (stopped, hung, or a network that drops packets). Refused rather than queued.
    #[error(
        "Agent/{agent} has not answered a heartbeat for {silent_ms} ms: the message was not delivered"
    )]
    Unresponsive {
        /// The agent.
        agent: String,
        /// Since the unanswered heartbeat was sent.
        silent_ms: u64,
    },
    /// The agent's session has too much queued already (it is not draining its socket).
    #[error("Agent/{0} is not keeping up (too much queued for it): the message was not delivered")]
    Backlogged(String),
    /// The message could not be written to the agent's socket in time.
    #[error("Agent/{agent}: the message could not be handed to the agent within {ms} ms")]
    NotHandedOver {
        /// The agent.
        agent: String,
        /// The time allowed.
        ms: u64,
    },
    /// The socket closed before the answer.
    #[error("Agent/{0} disconnected before answering")]
    Disconnected(String),
    /// No answer in time.
    #[error("Timeout: no answer from Agent/{agent} within {ms} ms")]
    Timeout {
        /// The agent.
        agent: String,
        /// The time allowed, from the request's arrival.
        ms: u64,
    },
    /// The relay process holding the agent's socket went away before it answered.
    #[error("the relay process holding Agent/{0}'s connection went away before it answered")]
    OwnerGone(String),
}

impl AskError {
    /// Whether the message may have reached the agent (a retry could deliver it twice).
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            AskError::Disconnected(_) | AskError::Timeout { .. } | AskError::OwnerGone(_)
        )
    }
}
