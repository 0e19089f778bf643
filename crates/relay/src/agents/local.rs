//! The agents whose sockets live in this process: which session serves each, their presence as
//! `$status` reports it, and the per-agent budgets that outlive a reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent_protocol::AgentMessage;
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::AskError;
use super::session::SharedLink;
use crate::fhir::{now_ms, now_rfc3339};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An unresponsive agent is refused before anything is queued for it.
fn check_responsive(agent: &str, session: &SessionHandle) -> Result<(), AskError> {
    let h = &session.health;
    if h.unresponsive.load(Ordering::Acquire) {
        let since = h.silent_since_ms.load(Ordering::Acquire) as i64;
        return Err(AskError::Unresponsive {
            agent: agent.to_owned(),
            silent_ms: u64::try_from(now_ms() - since).unwrap_or(0),
        });
    }
    Ok(())
}

/// `connected`, `disconnected` or `unknown` (never seen), as `$status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Presence {
    /// `connected`, `disconnected` or `unknown`.
    pub(crate) status: &'static str,
    /// The agent's version from its last heartbeat, or `unknown`.
    pub(crate) version: String,
    /// When the status last changed or a heartbeat arrived (RFC 3339).
    pub(crate) last_updated: Option<String>,
}

/// The answer to a request sent to an agent.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The agent answered (a response or `agent:error` carrying the callback).
    Message(AgentMessage),
    /// The agent's connection closed before it answered.
    Disconnected,
    /// The request's deadline passed on the link before an answer came (its caller's wait
    /// ends at the same time: a timeout, not a disconnection).
    Expired,
}

/// What every holder of a session handle can see of it, or ask of it, besides its link.
#[derive(Debug)]
pub(crate) struct Health {
    /// A heartbeat request has been outstanding past the grace period: the agent is not
    /// reading its socket (stopped, hung, or its network drops packets).
    pub(crate) unresponsive: AtomicBool,
    /// Since when (ms since the epoch), while `unresponsive`.
    pub(crate) silent_since_ms: AtomicU64,
    /// Set to a reason to close the session (a newer connection, another process took it).
    pub(crate) close: tokio::sync::watch::Sender<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            unresponsive: AtomicBool::new(false),
            silent_since_ms: AtomicU64::new(0),
            close: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl Health {
    /// Asks the session to close its socket.
    pub(crate) fn close(&self, reason: &str) {
        self.close.send_replace(Some(reason.to_owned()));
    }
}

/// A way to reach one live session. Sending never waits: too many requests in flight is an
/// error.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    pub(crate) link: Arc<SharedLink>,
    pub(crate) health: Arc<Health>,
}

#[derive(Debug)]
struct Live {
    conn: u64,
    handle: SessionHandle,
}

/// Limits on what one agent may have the relay work on at once, across its reconnects.
#[derive(Debug)]
pub(crate) struct AgentBudget {
    /// Inbound messages being handled.
    pub(crate) inbound: Arc<Semaphore>,
    /// Bytes of inbound messages being handled.
    pub(crate) inbound_bytes: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<String, Live>,
    presence: HashMap<String, Presence>,
    budgets: HashMap<String, Arc<AgentBudget>>,
    /// Answers awaited whatever session brings them, by callback (an upgrade is answered by
    /// the agent's next process, on a new connection).
    awaited: HashMap<String, oneshot::Sender<AgentMessage>>,
}

/// The agents connected to this relay process.
#[derive(Debug)]
pub(crate) struct LocalAgents {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    max_inbound: usize,
    max_inbound_bytes: usize,
}

impl LocalAgents {
    /// No agents yet; each agent may have `max_inbound` messages of at most
    /// `max_inbound_bytes` in all handled at once.
    pub(crate) fn new(max_inbound: usize, max_inbound_bytes: usize) -> LocalAgents {
        LocalAgents {
            inner: Mutex::default(),
            next_conn: AtomicU64::new(0),
            max_inbound,
            max_inbound_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `handle` the agent's live session. A previous session of the same agent is
    /// returned so the caller can close it (the newer connection wins).
    pub(crate) fn register(
        &self,
        agent_id: &str,
        handle: SessionHandle,
    ) -> (u64, Option<SessionHandle>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.lock();
        let old = inner
            .live
            .insert(agent_id.to_owned(), Live { conn, handle });
        let version = inner
            .presence
            .get(agent_id)
            .map_or_else(|| "unknown".to_owned(), |p| p.version.clone());
        inner.presence.insert(
            agent_id.to_owned(),
            Presence {
                status: "connected",
                version,
                last_updated: Some(now_rfc3339()),
            },
        );
        (conn, old.map(|l| l.handle))
    }

    /// Forgets connection `conn` of `agent_id`, if it is still the live one.
    pub(crate) fn unregister(&self, agent_id: &str, conn: u64) {
        let mut inner = self.lock();
        if inner.live.get(agent_id).is_some_and(|l| l.conn == conn) {
            inner.live.remove(agent_id);
            if let Some(p) = inner.presence.get_mut(agent_id) {
                p.status = "disconnected";
                p.last_updated = Some(now_rfc3339());
            }
        }
    }

    /// Records a heartbeat (and the agent's version).
    pub(crate) fn heartbeat(&self, agent_id: &str, version: &str) {
        let mut inner = self.lock();
        if let Some(p) = inner.presence.get_mut(agent_id) {
            if !version.is_empty() {
                p.version = version.to_owned();
            }
            p.last_updated = Some(now_rfc3339());
        }
    }

    /// Waits for the answer carrying `callback` from any session of this process, for as long
    /// as the returned [`Awaited`] lives.
    pub(crate) fn await_answer(self: &Arc<Self>, callback: &str) -> Awaited {
        let (tx, rx) = oneshot::channel();
        self.lock().awaited.insert(callback.to_owned(), tx);
        Awaited {
            local: self.clone(),
            callback: callback.to_owned(),
            answer: Some(rx),
        }
    }

    /// An answer no session waits on: given to whoever awaits its callback here, or given back
    /// when nobody does.
    pub(crate) fn unmatched(&self, msg: AgentMessage) -> Option<AgentMessage> {
        let Some(cb) = msg.callback() else {
            return Some(msg);
        };
        let Some(tx) = self.lock().awaited.remove(cb) else {
            return Some(msg);
        };
        // A waiter that has just given up drops the answer with it.
        let _ = tx.send(msg);
        None
    }

    /// The agent's presence here.
    pub(crate) fn presence(&self, agent_id: &str) -> Presence {
        self.lock()
            .presence
            .get(agent_id)
            .cloned()
            .unwrap_or(Presence {
                status: "unknown",
                version: "unknown".into(),
                last_updated: None,
            })
    }

    /// The agent's live session here.
    pub(crate) fn session(&self, agent_id: &str) -> Option<SessionHandle> {
        self.lock().live.get(agent_id).map(|l| l.handle.clone())
    }

    /// Whether the agent has a live connection here.
    pub(crate) fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().live.contains_key(agent_id)
    }

    /// Number of live connections.
    pub(crate) fn connected_count(&self) -> usize {
        self.lock().live.len()
    }

    /// The agent's budget for inbound work (one per agent, kept across reconnects).
    pub(crate) fn budget(&self, agent_id: &str) -> Arc<AgentBudget> {
        let (max, bytes) = (self.max_inbound, self.max_inbound_bytes);
        self.lock()
            .budgets
            .entry(agent_id.to_owned())
            .or_insert_with(|| {
                Arc::new(AgentBudget {
                    inbound: Arc::new(Semaphore::new(max)),
                    inbound_bytes: Arc::new(Semaphore::new(bytes)),
                })
            })
            .clone()
    }

    /// Sends a request through `session` and waits for the answer until `deadline`.
    pub(crate) async fn ask(
        &self,
        agent: &str,
        session: &SessionHandle,
        callback: &str,
        msg: AgentMessage,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<AgentMessage, AskError> {
        let (reply, answer) = oneshot::channel();
        check_responsive(agent, session)?;
        if deadline <= Instant::now() {
            return Err(AskError::Timeout {
                agent: agent.to_owned(),
                ms: ms(allowed),
            });
        }
        session
            .link
            .request(agent, msg, callback.to_owned(), deadline, reply)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Reply::Message(m))) => Ok(m),
            Ok(Ok(Reply::Disconnected)) => Err(AskError::Disconnected(agent.to_owned())),
            // The session gone without a word: a disconnection, unless the deadline had come.
            Ok(Err(_)) if Instant::now() < deadline => {
                Err(AskError::Disconnected(agent.to_owned()))
            }
            Ok(Ok(Reply::Expired) | Err(_)) | Err(_) => Err(AskError::Timeout {
                agent: agent.to_owned(),
                ms: ms(allowed),
            }),
        }
    }

    /// Sends a message through `session`; returns once it is on the socket, or fails if that
    /// does not happen by `deadline`.
    pub(crate) async fn send(
        &self,
        agent: &str,
        session: &SessionHandle,
        msg: AgentMessage,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<(), AskError> {
        let (written, on_socket) = oneshot::channel();
        check_responsive(agent, session)?;
        session.link.send(agent, msg, written)?;
        match tokio::time::timeout_at(deadline, on_socket).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(AskError::Disconnected(agent.to_owned())),
            Err(_) => Err(AskError::NotHandedOver {
                agent: agent.to_owned(),
                ms: ms(allowed),
            }),
        }
    }

    /// Closes the agent's socket here (it connected to another relay process).
    pub(crate) fn evict(&self, agent_id: &str, reason: &str) {
        if let Some(h) = self.session(agent_id) {
            h.health.close(reason);
        }
    }
}

/// An answer awaited across reconnects ([`LocalAgents::await_answer`]); forgotten when dropped.
#[derive(Debug)]
pub(crate) struct Awaited {
    local: Arc<LocalAgents>,
    callback: String,
    answer: Option<oneshot::Receiver<AgentMessage>>,
}

impl Awaited {
    /// The answer, or `None` when `deadline` comes first.
    pub(crate) async fn until(mut self, deadline: Instant) -> Option<AgentMessage> {
        let rx = self.answer.take()?;
        tokio::time::timeout_at(deadline, rx).await.ok()?.ok()
    }
}

impl Drop for Awaited {
    fn drop(&mut self) {
        self.local.lock().awaited.remove(&self.callback);
    }
}
