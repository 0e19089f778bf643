//! What must outlive a request: FHIR resources, inbound device messages, the lab-order queue,
//! and (with several relay processes) shared settings.
//!
//! [`Store`] is the one trait a backend implements: SQL and row mapping, nothing else.
//! [`Registry`] holds the operations, written once against it: resource versions, the
//! in-memory cache of the registry proper ([`cache`]), searches ([`search`]), the inbound log
//! ([`inbound`]) and the order queue ([`orders`]).
//!
//! ```text
//!            Registry (versions, cache, search, secrets kept hashed)
//!                │  dyn Store
//!        ┌───────┴────────┐
//!   sqlite.rs         postgres/
//!   rusqlite on       tokio-postgres, a deadpool pool,
//!   spawn_blocking    LISTEN/NOTIFY keeps every process's cache in step
//! ```

mod cache;
mod error;
mod inbound;
mod index;
mod journal;
mod orders;
mod postgres;
mod registry;
mod search;
mod sqlite;

use std::sync::Arc;

use serde_json::Value;

pub(crate) use cache::is_cached;
pub use error::StoreError;
pub(crate) use error::chain;
pub use inbound::{InboundQuery, InboundRow, NewInbound, Recorded};
pub(crate) use index::{Cond, IndexRow};
pub use journal::{ChannelCounts, JournalQuery, MessageKeys, PushLogLimits, PushRecord, PushRow};
pub(crate) use journal::{MAX_KEY, MAX_LOGGED_BODY, PushLog, truncated};
pub(crate) use orders::{Delivery, DeliveryOutcome};
pub(crate) use postgres::pool_for;
pub use registry::{InvalidResource, PutError, Registry};
pub(crate) use search::matches;

/// Keeps a row of a search: the search parameters, evaluated by the registry.
pub(crate) type Filter = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// A backend: where rows live and how they map to the relay's types. Every method is one
/// statement or one transaction; the logic above them lives in [`Registry`].
#[async_trait::async_trait]
pub(crate) trait Store: Send + Sync + std::fmt::Debug {
    /// Every stored resource of the cached types: (type, id, JSON).
    async fn registry_rows(&self) -> Result<Vec<(String, String, String)>, StoreError>;
    /// A resource's stored JSON.
    async fn get(&self, ty: &str, id: &str) -> Result<Option<String>, StoreError>;
    /// Inserts or replaces a resource and its search index rows, in one transaction (telling
    /// other processes, where there are any).
    async fn upsert(
        &self,
        ty: &str,
        id: &str,
        version: i64,
        content: String,
        index: Vec<IndexRow>,
    ) -> Result<(), StoreError>;
    /// Deletes a resource and its index rows; whether it existed.
    async fn delete(&self, ty: &str, id: &str) -> Result<bool, StoreError>;
    /// Up to `limit` resources of `ty` that meet every indexed condition (found through the
    /// search index) and that `keep`, in id order, read row by row.
    async fn select(
        &self,
        ty: &str,
        conds: Vec<Cond>,
        limit: usize,
        keep: Filter,
    ) -> Result<Vec<Arc<Value>>, StoreError>;
    /// Stores an inbound message unless this agent sent this callback before.
    async fn record_inbound(&self, msg: NewInbound) -> Result<Recorded, StoreError>;
    /// Records the final answer given for an inbound message.
    async fn set_inbound_response(
        &self,
        id: i64,
        status: u16,
        body: String,
    ) -> Result<(), StoreError>;
    /// Inbound messages in arrival order.
    async fn inbound(&self, q: InboundQuery) -> Result<Vec<InboundRow>, StoreError>;
    /// Number of stored inbound messages.
    async fn inbound_count(&self) -> Result<i64, StoreError>;
    /// Queues an order message, due at `now_ms`.
    async fn enqueue_delivery(&self, d: Delivery, now_ms: i64) -> Result<i64, StoreError>;
    /// Claims due deliveries for `lease_ms` (no other process takes them meanwhile), oldest
    /// first; and when the next one falls due.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), StoreError>;
    /// Records an attempt.
    async fn update_delivery(&self, id: i64, outcome: DeliveryOutcome) -> Result<(), StoreError>;
    /// Deliveries in a state.
    async fn delivery_count(&self, state: &str) -> Result<i64, StoreError>;
    /// A value every process sharing the database agrees on: the stored one, or `init` stored
    /// now. `None` when the database is not shared (SQLite).
    async fn shared_setting(&self, name: &str, init: String) -> Result<Option<String>, StoreError>;
    /// Appends pushes to the push log, in one transaction.
    async fn record_pushes(&self, pushes: Vec<PushRecord>) -> Result<(), StoreError>;
    /// Logged pushes, newest first.
    async fn pushes(&self, q: JournalQuery) -> Result<Vec<PushRow>, StoreError>;
    /// Stored inbound messages, newest first, searched by their keys.
    async fn inbound_search(&self, q: JournalQuery) -> Result<Vec<InboundRow>, StoreError>;
    /// Per `(agent, channel)`: messages stored, answered, errored, and the last one's time.
    async fn inbound_channel_counts(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), ChannelCounts>, StoreError>;
    /// Deletes logged pushes older than `older_than_ms` or beyond the newest `max_rows`.
    async fn prune_pushes(&self, max_rows: i64, older_than_ms: i64) -> Result<u64, StoreError>;
}
