//! Several relay processes, one fleet of agents: presence and push routing through Redis.
//!
//! An agent's WebSocket lives on one process; a `$push` may arrive on any. Each process has an
//! id and a channel `outpost:to:<id>`, and says it is alive by refreshing `outpost:proc:<id>`
//! (2 s expiry) every half second. An agent's presence is the hash `outpost:agent:<id>` (owning
//! process, status, version, last heartbeat). A request for an agent whose socket is elsewhere
//! is published to the owner's channel; the owner hands it to the agent's session and publishes
//! the outcome back to the asking process's channel, which completes the waiting caller. If
//! the owner dies meanwhile, the asker notices within a second and fails the request (a 400,
//! never a hang).
//!
//! ```text
//!  caller ─$push─▶ process B ──PUBLISH outpost:to:A {req}──▶ process A ──WS──▶ agent
//!  caller ◀─────── process B ◀─PUBLISH outpost:to:B {rep}─── process A ◀─WS── agent
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_protocol::{AgentMessage, Decoded, Direction};
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::AskError;
use super::local::{LocalAgents, Presence};
use crate::fhir::{now_ms, now_rfc3339};

/// How long a process counts as alive after its last refresh.
const PROC_TTL: Duration = Duration::from_secs(2);

/// Sets fields of an agent's record (`ARGV[3..]`, name value pairs) only if process `ARGV[1]`
/// owns it, or nobody does and `ARGV[2]` is `1`: checked and written in one step, so a process
/// never overwrites a record another process has just taken.
const SET_IF_OWNER: &str = r"
local owner = redis.call('HGET', KEYS[1], 'proc')
if owner and owner ~= ARGV[1] then return 0 end
if not owner and ARGV[2] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
";

/// What the owning process reports back.
#[derive(Debug)]
enum Outcome {
    /// The agent's answer to a request.
    Answer(AgentMessage),
    /// A message without an answer is on the agent's socket.
    Written,
    /// It did not get there, or got no answer.
    Failed(AskError),
}

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
#[error("Redis")]
pub struct ClusterError(#[from] redis::RedisError);

/// This process's handle on the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    id: String,
    client: redis::Client,
    conn: redis::aio::MultiplexedConnection,
    /// An agent silent this long counts as gone (the relay's agent timeout).
    agent_timeout: Duration,
    /// Callers here waiting on another process's outcome, by callback.
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
}

fn agent_key(agent_id: &str) -> String {
    format!("outpost:agent:{agent_id}")
}

fn proc_key(id: &str) -> String {
    format!("outpost:proc:{id}")
}

fn awaited_key(callback: &str) -> String {
    format!("outpost:await:{callback}")
}

fn channel(id: &str) -> String {
    format!("outpost:to:{id}")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Connects to Redis. With a `rediss://` URL the connection is TLS, the server's
    /// certificate checked against `ca_pem` (PEM), or the system's roots without it.
    pub(crate) async fn connect(
        url: &str,
        ca_pem: Option<&[u8]>,
        agent_timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        let tls = url.starts_with("rediss://");
        if tls {
            // The redis client builds its TLS settings with the process's default provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match ca_pem {
            Some(pem) if tls => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            _ => redis::Client::open(url),
        }?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Cluster {
            id: uuid::Uuid::new_v4().simple().to_string(),
            client,
            conn,
            agent_timeout,
            waiting: Arc::default(),
        })
    }

    /// This process's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    async fn publish(&self, to: &str, msg: &Value) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let _: i64 = c.publish(channel(to), msg.to_string()).await?;
        Ok(())
    }

    /// Says that this process awaits the answer carrying `callback` for `ttl`, whichever
    /// process the agent's next session reaches (an upgrading agent answers from its new
    /// connection).
    pub(crate) async fn await_answer(&self, callback: &str, ttl: Duration) {
        let mut c = self.conn.clone();
        let set: Result<(), _> = c
            .pset_ex(awaited_key(callback), &self.id, ms(ttl).max(1))
            .await;
        if let Err(e) = set {
            tracing::warn!(error = %e, callback, "cannot record an awaited answer in Redis");
        }
    }

    /// Hands an answer that no session of this process waits on to the process that awaits
    /// its callback ([`Cluster::await_answer`]), if there is one.
    pub(crate) async fn forward_answer(&self, msg: &AgentMessage) {
        let Some(cb) = msg.callback() else { return };
        let mut c = self.conn.clone();
        let owner: Result<Option<String>, _> = c.get(awaited_key(cb)).await;
        match owner {
            Ok(Some(owner)) if owner != self.id => {
                let fwd = json!({"t": "answer", "msg": msg.to_json()});
                if let Err(e) = self.publish(&owner, &fwd).await {
                    tracing::warn!(error = %e, callback = cb, "cannot forward an answer");
                }
            }
            Ok(_) => tracing::debug!(callback = cb, "answer for a request nobody waits on"),
            Err(e) => {
                tracing::warn!(error = %e, callback = cb, "cannot look up who awaits an answer")
            }
        }
    }

    /// Whether a relay process is alive.
    pub(crate) async fn alive(&self, proc: &str) -> bool {
        let mut c = self.conn.clone();
        c.exists::<_, bool>(proc_key(proc)).await.unwrap_or(false)
    }

    /// The agent is connected here: record it, and tell a previous owner to let go of its
    /// socket (the newer connection wins, across processes too).
    pub(crate) async fn announce(&self, agent_id: &str, version: &str) {
        let mut c = self.conn.clone();
        let key = agent_key(agent_id);
        let previous: Option<String> = c.hget(&key, "proc").await.unwrap_or(None);
        let fields = [
            ("proc", self.id.clone()),
            ("status", "connected".to_owned()),
            ("version", version.to_owned()),
            ("last_updated", now_rfc3339()),
            ("seen_ms", now_ms().to_string()),
        ];
        if let Err(e) = c.hset_multiple::<_, _, _, ()>(&key, &fields).await {
            tracing::warn!(agent = agent_id, error = %e, "cannot record agent presence in Redis");
        }
        if let Some(old) = previous.filter(|p| *p != self.id) {
            let _ = self
                .publish(&old, &json!({"t": "evict", "agent": agent_id}))
                .await;
        }
    }

    /// A heartbeat from an agent connected here. Also restores the record if Redis lost it
    /// (restarted without persistence); leaves it alone if another process has taken the agent
    /// (this socket is about to be evicted).
    pub(crate) async fn seen(&self, agent_id: &str, version: &str) {
        let mut fields = vec![
            ("proc", self.id.clone()),
            ("status", "connected".to_owned()),
            ("seen_ms", now_ms().to_string()),
            ("last_updated", now_rfc3339()),
        ];
        if !version.is_empty() {
            fields.push(("version", version.to_owned()));
        }
        self.set_if_owner(agent_id, true, &fields).await;
    }

    /// The agent's socket here closed: it is disconnected, unless another process has it now.
    pub(crate) async fn withdraw(&self, agent_id: &str) {
        let fields = [
            ("status", "disconnected".to_owned()),
            ("last_updated", now_rfc3339()),
        ];
        self.set_if_owner(agent_id, false, &fields).await;
    }

    /// [`SET_IF_OWNER`]: writes `fields` if this process owns the agent's record (or, with
    /// `claim`, nobody does).
    async fn set_if_owner(&self, agent_id: &str, claim: bool, fields: &[(&str, String)]) {
        let mut c = self.conn.clone();
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(SET_IF_OWNER));
        let mut call = SCRIPT.key(agent_key(agent_id));
        call.arg(&self.id).arg(if claim { "1" } else { "0" });
        for (name, value) in fields {
            call.arg(*name).arg(value);
        }
        if let Err(e) = call.invoke_async::<i64>(&mut c).await {
            tracing::warn!(agent = agent_id, error = %e, "cannot update agent presence in Redis");
        }
    }

    /// Where the agent is connected: its owning process, if that process is alive and the agent
    /// was heard from within the agent timeout.
    async fn owner(&self, agent_id: &str) -> Option<String> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(agent_key(agent_id)).await.ok()?;
        let fresh = h
            .get("seen_ms")
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|t| now_ms() - t < self.agent_timeout.as_millis() as i64);
        let proc = h.get("proc")?;
        (h.get("status").map(String::as_str) == Some("connected")
            && fresh
            && self.alive(proc).await)
            .then(|| proc.clone())
    }

    /// The agent's presence as every process sees it.
    pub(crate) async fn presence(&self, agent_id: &str) -> Option<Presence> {
        let mut c = self.conn.clone();
        let h: HashMap<String, String> = c.hgetall(agent_key(agent_id)).await.ok()?;
        if h.is_empty() {
            return None;
        }
        let connected = self.owner(agent_id).await.is_some();
        Some(Presence {
            status: if connected {
                "connected"
            } else {
                "disconnected"
            },
            version: h
                .get("version")
                .cloned()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unknown".into()),
            last_updated: h.get("last_updated").cloned(),
        })
    }

    /// Publishes `what` (`req` or `send`) for the agent's owner and waits for its outcome until
    /// `deadline`, looking every second whether the owner is still alive.
    async fn remote(
        &self,
        what: &str,
        agent: &str,
        callback: &str,
        msg: &AgentMessage,
        deadline: Instant,
    ) -> Result<Outcome, AskError> {
        let owner = self
            .owner(agent)
            .await
            .ok_or_else(|| AskError::NotConnected(agent.to_owned()))?;
        let (tx, mut rx) = oneshot::channel();
        self.lock_waiting().insert(callback.to_owned(), tx);
        let forget = || {
            self.lock_waiting().remove(callback);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let req = json!({"t": what, "agent": agent, "cb": callback, "from": self.id,
            "timeout_ms": ms(left), "msg": msg.to_json()});
        if self.publish(&owner, &req).await.is_err() {
            forget();
            return Err(AskError::NotConnected(agent.to_owned()));
        }
        loop {
            // Look at the owner every second, so that its death fails the request at once
            // rather than at the deadline.
            let until = (Instant::now() + Duration::from_secs(1)).min(deadline);
            match tokio::time::timeout_at(until, &mut rx).await {
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(_)) => return Err(AskError::Disconnected(agent.to_owned())),
                Err(_) if until >= deadline => {
                    forget();
                    return Ok(Outcome::Failed(AskError::Timeout {
                        agent: agent.to_owned(),
                        ms: 0,
                    }));
                }
                Err(_) => {
                    if !self.alive(&owner).await {
                        forget();
                        return Err(AskError::OwnerGone(agent.to_owned()));
                    }
                }
            }
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Outcome>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request to an agent connected to another process; its answer.
    pub(crate) async fn ask(
        &self,
        agent: &str,
        callback: &str,
        msg: &AgentMessage,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<AgentMessage, AskError> {
        match self.remote("req", agent, callback, msg, deadline).await? {
            Outcome::Answer(m) => Ok(m),
            Outcome::Written => Err(AskError::Disconnected(agent.to_owned())),
            Outcome::Failed(AskError::Timeout { agent, .. }) => Err(AskError::Timeout {
                agent,
                ms: ms(allowed),
            }),
            Outcome::Failed(e) => Err(e),
        }
    }

    /// A message without an answer to an agent connected to another process; `Ok` once the
    /// owner has written it to the agent's socket.
    pub(crate) async fn send(
        &self,
        agent: &str,
        msg: &AgentMessage,
        deadline: Instant,
        allowed: Duration,
    ) -> Result<(), AskError> {
        let cb = format!("send-{}", uuid::Uuid::new_v4());
        match self.remote("send", agent, &cb, msg, deadline).await? {
            Outcome::Written | Outcome::Answer(_) => Ok(()),
            Outcome::Failed(AskError::Timeout { agent, .. }) => Err(AskError::NotHandedOver {
                agent,
                ms: ms(allowed),
            }),
            Outcome::Failed(e) => Err(e),
        }
    }
}

/// Keeps this process alive in Redis and serves its channel, until `stopping`.
pub(crate) async fn run(
    local: Arc<LocalAgents>,
    cluster: Cluster,
    mut stopping: watch::Receiver<bool>,
) {
    let beat = {
        let cluster = cluster.clone();
        async move {
            let mut c = cluster.conn.clone();
            loop {
                let _: Result<(), _> = c
                    .pset_ex(proc_key(&cluster.id), "1", PROC_TTL.as_millis() as u64)
                    .await;
                tokio::time::sleep(PROC_TTL / 4).await;
            }
        }
    };
    let serve = {
        let (local, cluster) = (local.clone(), cluster.clone());
        async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match subscribe(&local, &cluster).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis subscription lost; retrying");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    tokio::select! {
        () = beat => {}
        () = serve => {}
        () = async { let _ = stopping.wait_for(|s| *s).await; } => {
            let mut c = cluster.conn.clone();
            let _: Result<(), _> = c.del(proc_key(&cluster.id)).await;
        }
    }
}

fn decode(text: &str) -> Option<AgentMessage> {
    match AgentMessage::decode(text.as_bytes(), Direction::ToAgent, usize::MAX) {
        Ok(Decoded::Message(m)) => Some(m),
        _ => match AgentMessage::decode(text.as_bytes(), Direction::ToServer, usize::MAX) {
            Ok(Decoded::Message(m)) => Some(m),
            _ => None,
        },
    }
}

/// Serves a request published by another process for an agent connected here.
async fn serve_remote(local: &LocalAgents, cluster: &Cluster, v: &Value) {
    let agent = v["agent"].as_str().unwrap_or("");
    let (Some(msg), Some(cb), Some(from)) = (
        v["msg"].as_str().and_then(decode),
        v["cb"].as_str(),
        v["from"].as_str(),
    ) else {
        return;
    };
    let allowed = Duration::from_millis(v["timeout_ms"].as_u64().unwrap_or(60_000));
    let deadline = Instant::now() + allowed;
    let outcome = match local.session(agent) {
        None => Err(AskError::NotConnected(agent.to_owned())),
        Some(session) if v["t"] == "send" => local
            .send(agent, &session, msg, deadline, allowed)
            .await
            .map(|()| json!({"written": true})),
        Some(session) => local
            .ask(agent, &session, cb, msg, deadline, allowed)
            .await
            .map(|m| json!({"msg": m.to_json()})),
    };
    let mut rep = match outcome {
        Ok(v) => v,
        // The asker times out on its own.
        Err(AskError::Timeout { .. } | AskError::NotHandedOver { .. }) => return,
        Err(e) => json!({"err": e}),
    };
    rep["t"] = json!("rep");
    rep["cb"] = json!(cb);
    let _ = cluster.publish(from, &rep).await;
}

async fn subscribe(local: &Arc<LocalAgents>, cluster: &Cluster) -> Result<(), ClusterError> {
    let mut pubsub = cluster.client.get_async_pubsub().await?;
    pubsub.subscribe(channel(&cluster.id)).await?;
    let mut messages = pubsub.on_message();
    while let Some(m) = messages.next().await {
        let Ok(text) = m.get_payload::<String>() else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v["t"].as_str() {
            Some("req" | "send") => {
                let (local, cluster) = (local.clone(), cluster.clone());
                tokio::spawn(async move { serve_remote(&local, &cluster, &v).await });
            }
            Some("rep") => {
                let Some(cb) = v["cb"].as_str() else { continue };
                let outcome = if let Some(m) = v["msg"].as_str().and_then(decode) {
                    Outcome::Answer(m)
                } else if v["written"] == true {
                    Outcome::Written
                } else {
                    let e =
                        serde_json::from_value::<AskError>(v["err"].clone()).unwrap_or_else(|_| {
                            AskError::Disconnected(v["agent"].as_str().unwrap_or("").to_owned())
                        });
                    Outcome::Failed(e)
                };
                if let Some(tx) = cluster.lock_waiting().remove(cb) {
                    let _ = tx.send(outcome);
                }
            }
            Some("answer") => {
                if let Some(m) = v["msg"].as_str().and_then(decode) {
                    let _ = local.unmatched(m);
                }
            }
            Some("evict") => local.evict(
                v["agent"].as_str().unwrap_or(""),
                "connected to another relay process",
            ),
            _ => {}
        }
    }
    Err(ClusterError(redis::RedisError::from((
        redis::ErrorKind::Io,
        "Redis subscription ended",
    ))))
}
