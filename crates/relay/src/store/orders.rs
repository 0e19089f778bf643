//! The lab-order queue: converted order messages waiting to be pushed, with their attempts.

use super::{Registry, StoreError};

/// An order message waiting to be pushed, or pushed (see the `orders` module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Sequence number.
    pub(crate) id: i64,
    /// `Subscription/<id>` that asked for it.
    pub(crate) subscription: String,
    /// `ServiceRequest/<id>/_history/<version>` it was made from.
    pub(crate) request: String,
    /// The Agent to push through.
    pub(crate) agent_id: String,
    /// `Device/<id>`.
    pub(crate) device: String,
    /// `hl7-orm`, `hl7-oml` or `astm`.
    pub(crate) format: String,
    /// The push's content type.
    pub(crate) content_type: String,
    /// The message.
    pub(crate) body: String,
    /// Attempts so far.
    pub(crate) attempts: i64,
}

/// The result of an attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryOutcome {
    /// `pending` (retry at `next_at_ms`), `done` or `failed`.
    pub(crate) state: &'static str,
    /// Attempts so far.
    pub(crate) attempts: i64,
    /// When to try again (ms since the epoch), for `pending`.
    pub(crate) next_at_ms: i64,
    /// Why the last attempt failed.
    pub(crate) error: Option<String>,
    /// The device's answer.
    pub(crate) response: Option<String>,
}

impl Registry {
    /// Queues an order message for pushing now.
    pub(crate) async fn enqueue_delivery(
        &self,
        d: Delivery,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        self.db.enqueue_delivery(d, now_ms).await
    }

    /// Claims the deliveries due at `now_ms` for `lease_ms`, oldest first; and when the next
    /// one falls due. With PostgreSQL no two processes claim the same one.
    pub(crate) async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), StoreError> {
        self.db.claim_deliveries(now_ms, lease_ms, limit).await
    }

    /// Records an attempt.
    pub(crate) async fn update_delivery(
        &self,
        id: i64,
        outcome: DeliveryOutcome,
    ) -> Result<(), StoreError> {
        self.db.update_delivery(id, outcome).await
    }

    /// Order messages in a state (`pending`, `sending`, `done`, `failed`).
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn delivery_count(&self, state: &str) -> Result<i64, StoreError> {
        self.db.delivery_count(state).await
    }
}
