//! Several relay processes, one fleet of agents: presence and push routing through Redis.
//!
//! An agent's WebSocket lives on one process; a `$push` may arrive on any. Each process has an
//! id and a channel `outpost:to:<id>`, and says it is alive by refreshing `outpost:proc:<id>`
//! (2 s expiry) every half second. An agent's presence is the hash `outpost:agent:<id>` (owning
//! process, status, version, last heartbeat). A request for an agent whose socket is elsewhere
//! is published to the owner's channel; the owner hands it to the agent and publishes the answer
//! back to the asking process's channel, which completes the waiting request. If the owner dies
//! meanwhile, the asker notices within a second and fails the request (a 400, never a hang).
//!
//! ```text
//!  caller ─$push─▶ process B ──PUBLISH outpost:to:A {req}──▶ process A ──WS──▶ agent
//!  caller ◀─────── process B ◀─PUBLISH outpost:to:B {rep}─── process A ◀─WS── agent
//! ```

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{AgentMessage, Decoded, Direction};
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::Error;
use crate::agents::{Agents, NotConnected, Presence, Reply};
use crate::state::RelayState;
use crate::store::now_rfc3339;

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

/// This process's handle on the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    id: String,
    client: redis::Client,
    conn: redis::aio::MultiplexedConnection,
    /// An agent silent this long counts as gone (the relay's agent timeout).
    agent_timeout: Duration,
}

fn redis_err(e: redis::RedisError) -> Error {
    Error::Io(format!("Redis: {e}"))
}

fn agent_key(agent_id: &str) -> String {
    format!("outpost:agent:{agent_id}")
}

fn proc_key(id: &str) -> String {
    format!("outpost:proc:{id}")
}

fn channel(id: &str) -> String {
    format!("outpost:to:{id}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Cluster {
    /// Connects to Redis.
    /// With a `rediss://` URL the connection is TLS, the server's certificate checked against
    /// `ca_pem` (PEM), or the system's roots without it.
    pub async fn connect(
        url: &str,
        ca_pem: Option<&[u8]>,
        agent_timeout: Duration,
    ) -> Result<Cluster, Error> {
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
        }
        .map_err(redis_err)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(redis_err)?;
        Ok(Cluster {
            id: uuid::Uuid::new_v4().simple().to_string(),
            client,
            conn,
            agent_timeout,
        })
    }

    /// This process's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    async fn publish(&self, to: &str, msg: &Value) -> Result<(), Error> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .publish(channel(to), msg.to_string())
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    /// Whether a relay process is alive.
    pub async fn alive(&self, proc: &str) -> bool {
        let mut c = self.conn.clone();
        c.exists::<_, bool>(proc_key(proc)).await.unwrap_or(false)
    }

    /// The agent is connected here: record it, and tell a previous owner to let go of its
    /// socket (the newer connection wins, across processes too).
    pub async fn announce(&self, agent_id: &str, version: &str) {
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
    pub async fn seen(&self, agent_id: &str, version: &str) {
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
    pub async fn withdraw(&self, agent_id: &str) {
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
        let h: std::collections::HashMap<String, String> =
            c.hgetall(agent_key(agent_id)).await.ok()?;
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
    pub async fn presence(&self, agent_id: &str) -> Option<Presence> {
        let mut c = self.conn.clone();
        let h: std::collections::HashMap<String, String> =
            c.hgetall(agent_key(agent_id)).await.ok()?;
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

    /// Sends a request carrying `callback` to an agent connected to another process; its answer
    /// arrives on the receiver. Returns the owning process too: the caller checks
    /// [`Cluster::alive`] while it waits, and fails the request if the owner went away.
    pub async fn request(
        &self,
        agents: &Agents,
        agent_id: &str,
        callback: &str,
        msg: &AgentMessage,
        timeout: Duration,
    ) -> Result<(oneshot::Receiver<Reply>, String), NotConnected> {
        let owner = self.owner(agent_id).await.ok_or(NotConnected)?;
        let rx = agents.await_remote(callback);
        let req = json!({"t": "req", "agent": agent_id, "cb": callback, "from": self.id,
            "timeout_ms": timeout.as_millis() as u64, "msg": msg.to_json()});
        if self.publish(&owner, &req).await.is_err() {
            agents.cancel(callback);
            return Err(NotConnected);
        }
        Ok((rx, owner))
    }

    /// Sends a message to an agent connected to another process, without waiting.
    pub async fn send(&self, agent_id: &str, msg: &AgentMessage) -> Result<(), NotConnected> {
        let owner = self.owner(agent_id).await.ok_or(NotConnected)?;
        self.publish(
            &owner,
            &json!({"t": "send", "agent": agent_id, "msg": msg.to_json()}),
        )
        .await
        .map_err(|_| NotConnected)
    }
}

/// Keeps this process alive in Redis and serves its channel, until the relay stops.
pub async fn run(state: Arc<RelayState>, cluster: Cluster) {
    let mut stopping = state.stopping.clone();
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
        let (state, cluster) = (state.clone(), cluster.clone());
        async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match subscribe(&state, &cluster).await {
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

async fn subscribe(state: &Arc<RelayState>, cluster: &Cluster) -> Result<(), Error> {
    let mut pubsub = cluster.client.get_async_pubsub().await.map_err(redis_err)?;
    pubsub
        .subscribe(channel(&cluster.id))
        .await
        .map_err(redis_err)?;
    let mut messages = pubsub.on_message();
    while let Some(m) = messages.next().await {
        let Ok(text) = m.get_payload::<String>() else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let agent = v["agent"].as_str().unwrap_or("").to_owned();
        match v["t"].as_str() {
            Some("req") => {
                let (Some(msg), Some(cb), Some(from)) = (
                    v["msg"].as_str().and_then(decode),
                    v["cb"].as_str().map(str::to_owned),
                    v["from"].as_str().map(str::to_owned),
                ) else {
                    continue;
                };
                let timeout = Duration::from_millis(v["timeout_ms"].as_u64().unwrap_or(60_000));
                let (state, cluster) = (state.clone(), cluster.clone());
                tokio::spawn(async move {
                    let answer = match state.agents.request(&agent, &cb, &msg).await {
                        Ok(rx) => match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(Reply::Message(m))) => Some(m.to_json()),
                            Ok(_) => None,
                            Err(_) => {
                                state.agents.cancel(&cb);
                                return;
                            }
                        },
                        Err(NotConnected) => None,
                    };
                    let _ = cluster
                        .publish(&from, &json!({"t": "rep", "cb": cb, "msg": answer}))
                        .await;
                });
            }
            Some("send") => {
                if let Some(msg) = v["msg"].as_str().and_then(decode) {
                    let _ = state.agents.send(&agent, &msg).await;
                }
            }
            Some("rep") => {
                let Some(cb) = v["cb"].as_str() else { continue };
                match v["msg"].as_str().and_then(decode) {
                    Some(msg) => {
                        state.agents.resolve(cb, msg);
                    }
                    None => state.agents.fail(cb),
                }
            }
            Some("evict") => state
                .agents
                .evict(&agent, "connected to another relay process"),
            _ => {}
        }
    }
    Err(Error::Io("Redis subscription ended".into()))
}
