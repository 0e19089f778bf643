//! Live agent connections, their presence, and requests waiting for an agent's answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use agent_protocol::AgentMessage;
use tokio::sync::{mpsc, oneshot};

use crate::store::now_rfc3339;

/// What a connection's writer task sends.
#[derive(Debug)]
pub enum Outgoing {
    /// A JSON text frame.
    Text(String),
    /// Close the socket with this reason.
    Close(String),
}

/// The answer to a request sent to an agent.
#[derive(Debug)]
pub enum Reply {
    /// The agent answered (a response or `agent:error` carrying the callback).
    Message(AgentMessage),
    /// The agent's connection closed before it answered.
    Disconnected,
}

/// `connected`, `disconnected` or `unknown` (never seen), as `$status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// `connected`, `disconnected` or `unknown`.
    pub status: &'static str,
    /// The agent's version from its last heartbeat, or `unknown`.
    pub version: String,
    /// When the status last changed or a heartbeat arrived (RFC 3339).
    pub last_updated: Option<String>,
}

#[derive(Debug)]
struct Live {
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
}

/// The `conn` of a request waiting on another relay process.
const REMOTE: u64 = u64::MAX;

#[derive(Debug)]
struct Pending {
    conn: u64,
    tx: oneshot::Sender<Reply>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<String, Live>,
    presence: HashMap<String, Presence>,
    pending: HashMap<String, Pending>,
}

/// The agents connected to this relay process.
#[derive(Debug, Default)]
pub struct Agents {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
}

/// The agent has no live connection here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotConnected;

impl Agents {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `tx` the agent's live connection. A previous connection of the same agent is
    /// returned so the caller can close it (the newer connection wins).
    pub fn register(
        &self,
        agent_id: &str,
        tx: mpsc::Sender<Outgoing>,
    ) -> (u64, Option<mpsc::Sender<Outgoing>>) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.lock();
        let old = inner.live.insert(agent_id.to_owned(), Live { conn, tx });
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
        if let Some(old) = &old {
            fail_pending(&mut inner, old.conn);
        }
        (conn, old.map(|l| l.tx))
    }

    /// Forgets connection `conn` of `agent_id` (if it is still the live one) and fails every
    /// request waiting on it.
    pub fn unregister(&self, agent_id: &str, conn: u64) {
        let mut inner = self.lock();
        if inner.live.get(agent_id).is_some_and(|l| l.conn == conn) {
            inner.live.remove(agent_id);
            if let Some(p) = inner.presence.get_mut(agent_id) {
                p.status = "disconnected";
                p.last_updated = Some(now_rfc3339());
            }
        }
        fail_pending(&mut inner, conn);
    }

    /// Records a heartbeat (and the agent's version).
    pub fn heartbeat(&self, agent_id: &str, version: &str) {
        let mut inner = self.lock();
        if let Some(p) = inner.presence.get_mut(agent_id) {
            if !version.is_empty() {
                p.version = version.to_owned();
            }
            p.last_updated = Some(now_rfc3339());
        }
    }

    /// The agent's presence.
    pub fn presence(&self, agent_id: &str) -> Presence {
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

    /// Whether the agent has a live connection here.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.lock().live.contains_key(agent_id)
    }

    /// Number of live connections.
    pub fn connected_count(&self) -> usize {
        self.lock().live.len()
    }

    /// Sends a message to the agent without waiting for an answer.
    pub async fn send(&self, agent_id: &str, msg: &AgentMessage) -> Result<(), NotConnected> {
        let tx = self
            .lock()
            .live
            .get(agent_id)
            .map(|l| l.tx.clone())
            .ok_or(NotConnected)?;
        tx.send(Outgoing::Text(msg.to_json()))
            .await
            .map_err(|_| NotConnected)
    }

    /// Sends a message that carries `callback` and returns where its answer will arrive.
    pub async fn request(
        &self,
        agent_id: &str,
        callback: &str,
        msg: &AgentMessage,
    ) -> Result<oneshot::Receiver<Reply>, NotConnected> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = {
            let mut inner = self.lock();
            let live = inner.live.get(agent_id).ok_or(NotConnected)?;
            let (conn, tx) = (live.conn, live.tx.clone());
            inner
                .pending
                .insert(callback.to_owned(), Pending { conn, tx: reply_tx });
            tx
        };
        if tx.send(Outgoing::Text(msg.to_json())).await.is_err() {
            self.cancel(callback);
            return Err(NotConnected);
        }
        Ok(reply_rx)
    }

    /// Delivers an agent's answer to whoever waits on its callback; whether anyone did.
    pub fn resolve(&self, callback: &str, msg: AgentMessage) -> bool {
        let pending = self.lock().pending.remove(callback);
        match pending {
            Some(p) => p.tx.send(Reply::Message(msg)).is_ok(),
            None => false,
        }
    }

    /// Stops waiting on a callback (after a timeout).
    pub fn cancel(&self, callback: &str) {
        self.lock().pending.remove(callback);
    }

    /// Waits on a callback for an agent connected to another relay process (the answer comes
    /// through [`Agents::resolve`] or [`Agents::fail`]).
    pub fn await_remote(&self, callback: &str) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.lock()
            .pending
            .insert(callback.to_owned(), Pending { conn: REMOTE, tx });
        rx
    }

    /// Fails whoever waits on `callback`: the agent went away.
    pub fn fail(&self, callback: &str) {
        if let Some(p) = self.lock().pending.remove(callback) {
            let _ = p.tx.send(Reply::Disconnected);
        }
    }

    /// Whether someone still waits on `callback`.
    pub fn is_waiting(&self, callback: &str) -> bool {
        self.lock().pending.contains_key(callback)
    }

    /// Closes the agent's socket here (it connected to another relay process).
    pub fn evict(&self, agent_id: &str, reason: &str) {
        let live = self.lock().live.get(agent_id).map(|l| l.tx.clone());
        if let Some(tx) = live {
            let _ = tx.try_send(Outgoing::Close(reason.to_owned()));
        }
    }

    /// Number of requests waiting for an answer.
    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }
}

fn fail_pending(inner: &mut Inner, conn: u64) {
    let dead: Vec<String> = inner
        .pending
        .iter()
        .filter(|(_, p)| p.conn == conn)
        .map(|(k, _)| k.clone())
        .collect();
    for k in dead {
        if let Some(p) = inner.pending.remove(&k) {
            let _ = p.tx.send(Reply::Disconnected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_protocol::{HeartbeatRequest, StatusResponse};

    #[tokio::test]
    async fn request_resolve_and_disconnect() {
        let agents = Agents::default();
        let (tx, mut rx) = mpsc::channel(8);
        let (conn, old) = agents.register("a1", tx);
        assert!(old.is_none());
        assert_eq!(agents.presence("a1").status, "connected");
        let msg = AgentMessage::HeartbeatRequest(HeartbeatRequest::default());
        let reply = agents.request("a1", "cb1", &msg).await.unwrap();
        assert!(matches!(rx.recv().await, Some(Outgoing::Text(_))));
        assert!(agents.resolve(
            "cb1",
            AgentMessage::ReloadConfigResponse(StatusResponse::default())
        ));
        assert!(matches!(reply.await.unwrap(), Reply::Message(_)));
        // a request in flight when the agent goes away fails at once
        let reply = agents.request("a1", "cb2", &msg).await.unwrap();
        agents.unregister("a1", conn);
        assert!(matches!(reply.await.unwrap(), Reply::Disconnected));
        assert_eq!(agents.presence("a1").status, "disconnected");
        assert_eq!(
            agents.request("a1", "cb3", &msg).await.unwrap_err(),
            NotConnected
        );
        assert_eq!(agents.presence("zz").status, "unknown");
    }

    #[tokio::test]
    async fn newer_connection_replaces_older() {
        let agents = Agents::default();
        let (tx1, _rx1) = mpsc::channel(8);
        let (tx2, _rx2) = mpsc::channel(8);
        let (c1, _) = agents.register("a1", tx1);
        let msg = AgentMessage::HeartbeatRequest(HeartbeatRequest::default());
        let waiting = agents.request("a1", "cb", &msg).await.unwrap();
        let (_c2, old) = agents.register("a1", tx2);
        assert!(old.is_some());
        assert!(matches!(waiting.await.unwrap(), Reply::Disconnected));
        // the old connection closing does not unregister the new one
        agents.unregister("a1", c1);
        assert!(agents.is_connected("a1"));
    }
}
