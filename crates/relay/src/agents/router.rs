//! [`AgentRouter`]: hands a message to an agent wherever its socket lives — in this process
//! (its session) or in another relay process (through Redis) — and waits for the answer
//! within a deadline. Callers never see which.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_protocol::AgentMessage;
use tokio::time::Instant;

use super::AskError;
use super::cluster::Cluster;
use super::local::{LocalAgents, Presence};

/// Routes requests to agents, local or remote.
#[derive(Debug)]
pub(crate) struct AgentRouter {
    local: Arc<LocalAgents>,
    cluster: Option<Cluster>,
    waiting: AtomicUsize,
}

/// Counts a caller waiting on an agent for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AgentRouter {
    /// Routes through `local`, and through `cluster` for agents connected elsewhere.
    pub(crate) fn new(local: Arc<LocalAgents>, cluster: Option<Cluster>) -> AgentRouter {
        AgentRouter {
            local,
            cluster,
            waiting: AtomicUsize::new(0),
        }
    }

    /// The agents connected to this process.
    pub(crate) fn local(&self) -> &Arc<LocalAgents> {
        &self.local
    }

    /// The other relay processes, when there are any.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Callers waiting on an agent's answer now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Sends a request carrying `callback` and waits for the answer until `deadline` (counted
    /// by the caller from the request's arrival; `allowed` is the whole wait, for messages).
    pub(crate) async fn ask(
        &self,
        agent: &str,
        callback: &str,
        msg: AgentMessage,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<AgentMessage, AskError> {
        let _waiting = Waiting::new(&self.waiting);
        match (self.local.session(agent), &self.cluster) {
            (Some(session), _) => {
                self.local
                    .ask(agent, &session, callback, msg, deadline, allowed)
                    .await
            }
            (None, Some(cluster)) => cluster.ask(agent, callback, &msg, deadline, allowed).await,
            (None, None) => Err(AskError::NotConnected(agent.to_owned())),
        }
    }

    /// Sends a message without waiting for an answer; returns once it is written to the
    /// agent's socket (here, or by the owning process), or fails if that does not happen by
    /// `deadline`.
    pub(crate) async fn send(
        &self,
        agent: &str,
        msg: AgentMessage,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<(), AskError> {
        match (self.local.session(agent), &self.cluster) {
            (Some(session), _) => {
                self.local
                    .send(agent, &session, msg, deadline, allowed)
                    .await
            }
            (None, Some(cluster)) => cluster.send(agent, &msg, deadline, allowed).await,
            (None, None) => Err(AskError::NotConnected(agent.to_owned())),
        }
    }

    /// The agent's presence: here, or as the cluster sees it.
    pub(crate) async fn presence(&self, agent: &str) -> Presence {
        let p = self.local.presence(agent);
        // Connected to another relay process, or gone from this one: the cluster knows.
        if p.status != "connected"
            && let Some(c) = &self.cluster
            && let Some(shared) = c.presence(agent).await
        {
            return shared;
        }
        p
    }
}
