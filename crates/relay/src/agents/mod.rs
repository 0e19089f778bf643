//! The agents: their WebSocket sessions, the registry of those connected to this process, and
//! the [`AgentRouter`] that reaches an agent wherever its socket lives.
//!
//! ```text
//!   http ($push, operations)      orders (lab-order pushes)
//!              \                   /
//!               AgentRouter ── ask / send, with a deadline
//!              /            \
//!     LocalAgents            Cluster (Redis: presence, pub/sub to the owning process)
//!   agent id → session           │
//!          │                     ▼
//!   session (one task per socket) ── Outbox ── writer task ── WebSocket
//! ```

mod cluster;
mod error;
mod local;
mod outbox;
mod router;
mod session;

pub(crate) use cluster::Cluster;
pub use cluster::ClusterError;
pub use error::AskError;
pub(crate) use local::LocalAgents;
pub(crate) use router::AgentRouter;
pub use session::VERSION;
pub(crate) use session::{SessionConfig, Sessions, serve};

/// Keeps this process alive in the cluster and serves requests other processes route here.
pub(crate) use cluster::run as run_cluster;
