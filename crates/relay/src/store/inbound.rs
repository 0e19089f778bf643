//! The inbound log: messages devices sent through an agent, stored before they are answered and
//! de-duplicated by the agent's callback.

use super::{Registry, StoreError};

/// The columns of an [`InboundRow`], in its field order (both backends map rows by position).
pub(super) const INBOUND_SELECT: &str = "SELECT id, agent_id, channel, remote, content_type, body, callback, received_at, status_code, response FROM inbound";

/// A stored inbound message (device → agent → relay).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundRow {
    /// Sequence number, increasing in arrival order.
    pub id: i64,
    /// The agent that relayed it.
    pub agent_id: String,
    /// The agent channel it came in on.
    pub channel: String,
    /// The device's address.
    pub remote: String,
    /// Its content type.
    pub content_type: String,
    /// The message.
    pub body: String,
    /// The agent's callback id (unique per agent: a redelivery carries the same one).
    pub callback: String,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// The status code answered (absent until a final answer was given).
    pub status_code: Option<i64>,
    /// The answer sent back to the device.
    pub response: Option<String>,
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInbound {
    /// The agent that relayed it.
    pub agent_id: String,
    /// The agent channel.
    pub channel: String,
    /// The device's address.
    pub remote: String,
    /// Its content type.
    pub content_type: String,
    /// The message.
    pub body: String,
    /// The agent's callback.
    pub callback: String,
}

/// What [`Registry::record_inbound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new message, stored with this sequence number.
    New(i64),
    /// The same agent sent this callback before: the stored row.
    Duplicate(Box<InboundRow>),
}

/// Which inbound messages to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundQuery {
    /// Only this agent's.
    pub agent_id: Option<String>,
    /// Only this channel's.
    pub channel: Option<String>,
    /// Only those after this sequence number.
    pub after: i64,
    /// At most this many.
    pub limit: usize,
}

impl Registry {
    /// Stores an inbound message, unless this agent already sent this callback.
    ///
    /// # Errors
    ///
    /// The database failed (disk full, locked, unreachable): a temporary condition.
    pub async fn record_inbound(&self, msg: NewInbound) -> Result<Recorded, StoreError> {
        self.db.record_inbound(msg).await
    }

    /// Records the final answer given for an inbound message.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn set_inbound_response(
        &self,
        id: i64,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.db
            .set_inbound_response(id, status, body.to_owned())
            .await
    }

    /// Inbound messages in arrival order, optionally for one agent and channel, after a
    /// sequence number.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn inbound(
        &self,
        agent_id: Option<&str>,
        channel: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboundRow>, StoreError> {
        self.db
            .inbound(InboundQuery {
                agent_id: agent_id.map(str::to_owned),
                channel: channel.map(str::to_owned),
                after,
                limit,
            })
            .await
    }

    /// Number of stored inbound messages.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn inbound_count(&self) -> Result<i64, StoreError> {
        self.db.inbound_count().await
    }
}
