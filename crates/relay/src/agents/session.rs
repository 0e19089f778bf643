//! `GET /ws/agent`: one agent's WebSocket session.
//!
//! The first message must be `agent:connect:request` with a valid token whose client may act
//! as that agent, within the connect timeout; any failure is answered with `agent:error` and the
//! socket is closed (a Medplum 5.0.10 agent never recovers from an open socket that is not
//! live). Then: heartbeats both ways, answers routed to waiting requests by `callback`, inbound
//! messages stored and answered. A newer connection for the same agent replaces the older one.
//!
//! Nothing in the session loop waits on the socket or on a queue: frames go to the
//! [`Outbox`](super::outbox) (bounded in bytes, each write with a deadline), commands arrive
//! through a bounded queue that callers fill with `try_send`. So the heartbeat, the silence
//! check and the write deadline always run:
//!
//! - an agent silent for the agent timeout is disconnected, so `$status` tells the truth;
//! - a heartbeat request unanswered past the grace period marks the agent unresponsive, and
//!   pushes to it are refused (not queued) until it answers again;
//! - a socket that does not drain within the write deadline, or whose unsent data passes the
//!   bound, is closed whatever else is queued, and every request waiting on it fails at once;
//! - inbound messages are capped per socket and per agent (count and bytes, across
//!   reconnects); past the caps they are answered 429 at once, and nothing is held for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_TEXT, ConnectRequest, ConnectResponse, Decoded, Direction,
    HeartbeatRequest, HeartbeatResponse, TransmitRequest, TransmitResponse,
};
use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::local::{Command, Health, LocalAgents, Reply, SessionHandle};
use super::outbox::{self, Outbox};
use crate::auth::{Tokens, may_act_as};
use crate::fhir::{now_ms, now_secs};
use crate::inbound::Inbound;
use crate::store::Registry;

/// The relay's version, sent in heartbeat responses.
pub const VERSION: &str = concat!("outpost-", env!("CARGO_PKG_VERSION"));

/// The limits and timers of every session.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// How often each agent gets a heartbeat request.
    pub(crate) heartbeat_interval: Duration,
    /// A heartbeat request unanswered this long marks the agent unresponsive.
    pub(crate) heartbeat_grace: Duration,
    /// An agent silent this long is disconnected.
    pub(crate) agent_timeout: Duration,
    /// A new socket must send `agent:connect:request` within this time.
    pub(crate) connect_timeout: Duration,
    /// Largest WebSocket message.
    pub(crate) max_message: usize,
    /// Most bytes waiting to be written to one socket.
    pub(crate) max_unsent: usize,
    /// Each write must complete within this time.
    pub(crate) write_timeout: Duration,
    /// Inbound messages handled at once for one socket.
    pub(crate) max_inbound_per_socket: usize,
}

/// Commands waiting for one session (pushes, operations): callers never wait for room.
const COMMAND_QUEUE: usize = 1024;

/// What every session needs.
#[derive(Debug)]
pub(crate) struct Sessions {
    pub(crate) config: SessionConfig,
    pub(crate) tokens: Tokens,
    pub(crate) registry: Registry,
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) local: Arc<LocalAgents>,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) stopping: watch::Receiver<bool>,
}

/// A request sent to the agent, waiting for its answer.
#[derive(Debug)]
struct Pending {
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

struct Session {
    ctx: Arc<Sessions>,
    outbox: Outbox,
    handle: SessionHandle,
    /// The agent id and connection number, once connected.
    live: Option<(String, u64)>,
    peer: SocketAddr,
    pending: HashMap<String, Pending>,
    /// Inbound messages of this socket being handled.
    inbound: Arc<Semaphore>,
}

/// Serves one agent socket until it closes.
pub(crate) async fn serve(ctx: Arc<Sessions>, socket: WebSocket, peer: SocketAddr) {
    let cfg = ctx.config.clone();
    let (sink, mut stream) = socket.split();
    let (outbox, mut failure, writer) = outbox::start(sink, cfg.max_unsent, cfg.write_timeout);
    let (commands_tx, mut commands) = mpsc::channel(COMMAND_QUEUE);
    let health = Arc::new(Health::default());
    let mut close_asked = health.close.subscribe();
    let mut s = Session {
        ctx: ctx.clone(),
        outbox: outbox.clone(),
        handle: SessionHandle {
            commands: commands_tx,
            health: health.clone(),
        },
        live: None,
        peer,
        pending: HashMap::new(),
        inbound: Arc::new(Semaphore::new(cfg.max_inbound_per_socket)),
    };
    let mut stopping = ctx.stopping.clone();
    let connect_by = Instant::now() + cfg.connect_timeout;
    let mut last_heard = Instant::now();
    // When the oldest unanswered heartbeat request was sent.
    let mut heartbeat_sent: Option<Instant> = None;
    let mut ticker = tokio::time::interval_at(
        Instant::now() + cfg.heartbeat_interval,
        cfg.heartbeat_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        let next_expiry = s.pending.values().map(|p| p.deadline).min();
        let grace_end = heartbeat_sent
            .filter(|_| !health.unresponsive.load(Ordering::Relaxed))
            .map(|t| t + cfg.heartbeat_grace);
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else {
                    // Closed, broken, or a message over the limit: close our side too.
                    s.outbox.close("");
                    break;
                };
                let bytes = match frame {
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Binary(b) => b.to_vec(),
                    Message::Close(_) => {
                        s.outbox.close("");
                        break;
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                last_heard = Instant::now();
                match s.on_message(&bytes) {
                    Heard::Continue => {}
                    Heard::Heartbeat => {
                        heartbeat_sent = None;
                        health.unresponsive.store(false, Ordering::Release);
                    }
                    Heard::End => break,
                }
            }
            Some(cmd) = commands.recv() => s.on_command(cmd),
            _ = ticker.tick() => {
                if s.live.is_none() {
                    continue;
                }
                if last_heard.elapsed() >= cfg.agent_timeout {
                    tracing::warn!(agent = s.agent_id(), %peer, "agent silent too long; disconnecting");
                    s.outbox.close("no heartbeat");
                    break;
                }
                let hb = AgentMessage::HeartbeatRequest(HeartbeatRequest::default());
                if s.outbox.push(hb.to_json(), None).is_err() {
                    continue; // the failure branch closes the socket
                }
                heartbeat_sent.get_or_insert_with(Instant::now);
            }
            () = sleep_until_some(grace_end) => {
                health.silent_since_ms.store(
                    (now_ms() - cfg.heartbeat_grace.as_millis() as i64) as u64,
                    Ordering::Release,
                );
                health.unresponsive.store(true, Ordering::Release);
                tracing::warn!(
                    agent = s.agent_id(), %peer, grace_ms = cfg.heartbeat_grace.as_millis() as u64,
                    "agent has not answered a heartbeat; refusing pushes until it does"
                );
            }
            () = sleep_until_some(next_expiry) => s.expire(Instant::now()),
            () = tokio::time::sleep_until(connect_by), if s.live.is_none() => {
                s.outbox.close("no agent:connect:request in time");
                break;
            }
            why = failure.wait() => {
                tracing::warn!(agent = s.agent_id(), %peer, reason = %why, "closing the agent's socket");
                stalled = true;
                break;
            }
            Ok(()) = close_asked.changed() => {
                let reason = close_asked.borrow().clone().unwrap_or_default();
                if let Some((agent, _)) = &s.live {
                    tracing::info!(agent, %peer, reason, "closing the agent's socket");
                }
                s.outbox.close(&reason);
                break;
            }
            _ = stopping.changed() => {
                s.outbox.close("relay shutting down");
                break;
            }
        }
    }
    if let Some((agent_id, conn)) = s.live.take() {
        ctx.local.unregister(&agent_id, conn);
        if let Some(c) = &ctx.cluster {
            let c = c.clone();
            let agent = agent_id.clone();
            tokio::spawn(async move { c.withdraw(&agent).await });
        }
        tracing::info!(agent = agent_id, %peer, "agent disconnected");
    }
    for (_, p) in s.pending.drain() {
        let _ = p.reply.send(Reply::Disconnected);
    }
    drop(s);
    drop(outbox);
    if stalled {
        // The socket does not drain: drop it with whatever is queued.
        writer.abort();
    } else if tokio::time::timeout(cfg.write_timeout, writer)
        .await
        .is_err()
    {
        tracing::debug!(%peer, "the agent's socket did not take the close in time");
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a message from the agent means for the loop.
enum Heard {
    Continue,
    /// A heartbeat response: the agent reads its socket.
    Heartbeat,
    End,
}

impl Session {
    fn agent_id(&self) -> &str {
        self.live.as_ref().map_or("", |(a, _)| a.as_str())
    }

    /// Queues a message; a full outbox closes the socket (through the failure branch).
    fn send(&self, msg: &AgentMessage) {
        let _ = self.outbox.push(msg.to_json(), None);
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                msg,
                callback,
                deadline,
                reply,
            } => {
                if deadline <= Instant::now() || reply.is_closed() {
                    return;
                }
                if self.outbox.push(msg.to_json(), None).is_ok() {
                    self.pending.insert(callback, Pending { deadline, reply });
                } else {
                    let _ = reply.send(Reply::Disconnected);
                }
            }
            Command::Send { msg, written } => {
                let _ = self.outbox.push(msg.to_json(), Some(written));
            }
        }
    }

    /// Forgets requests whose caller has stopped waiting.
    fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.deadline > now);
    }

    /// Handles one message.
    fn on_message(&mut self, bytes: &[u8]) -> Heard {
        let decoded = AgentMessage::decode(bytes, Direction::ToServer, self.ctx.config.max_message);
        let msg = match decoded {
            Ok(Decoded::Message(m)) => m,
            Ok(Decoded::Unknown { kind, callback }) => {
                self.send(&AgentMessage::error(
                    format!("Unknown message type: {kind}"),
                    callback,
                ));
                return Heard::Continue;
            }
            Err(e) => {
                self.send(&AgentMessage::error(e.to_string(), None));
                return Heard::Continue;
            }
        };
        match msg {
            AgentMessage::ConnectRequest(req) => {
                if self.connect(req) {
                    Heard::Continue
                } else {
                    Heard::End
                }
            }
            AgentMessage::HeartbeatRequest(_) => {
                self.send(&AgentMessage::HeartbeatResponse(HeartbeatResponse {
                    version: VERSION.into(),
                    callback: None,
                }));
                Heard::Continue
            }
            AgentMessage::HeartbeatResponse(r) => {
                if let Some((agent, _)) = &self.live {
                    self.ctx.local.heartbeat(agent, &r.version);
                    if let Some(c) = &self.ctx.cluster {
                        let (c, agent, version) = (c.clone(), agent.clone(), r.version.clone());
                        tokio::spawn(async move { c.seen(&agent, &version).await });
                    }
                }
                Heard::Heartbeat
            }
            AgentMessage::TransmitRequest(req) => {
                self.inbound(req, bytes.len());
                Heard::Continue
            }
            msg @ (AgentMessage::TransmitResponse(_)
            | AgentMessage::ReloadConfigResponse(_)
            | AgentMessage::UpgradeResponse(_)
            | AgentMessage::LogsResponse(_)
            | AgentMessage::StatsResponse(_)
            | AgentMessage::Error(_)) => {
                if let AgentMessage::Error(e) = &msg {
                    tracing::warn!(
                        agent = self.agent_id(),
                        error = e.body,
                        "agent reported an error"
                    );
                }
                if let Some(cb) = msg.callback().map(str::to_owned) {
                    match self.pending.remove(&cb) {
                        Some(p) => {
                            let _ = p.reply.send(Reply::Message(msg));
                        }
                        None => tracing::debug!(
                            agent = self.agent_id(),
                            callback = cb,
                            "answer for a request nobody waits on (late, or unknown)"
                        ),
                    }
                }
                Heard::Continue
            }
            other => {
                let callback = other.callback().map(str::to_owned);
                self.send(&AgentMessage::error(
                    format!("Unexpected message type: {}", other.kind()),
                    callback,
                ));
                Heard::Continue
            }
        }
    }

    /// An inbound message: handled in its own task (stored, then answered when the webhook, if
    /// any, replies) within the socket's and the agent's caps; past them, a 429 at once.
    fn inbound(&mut self, req: TransmitRequest, size: usize) {
        let Some((agent, _)) = self.live.clone() else {
            self.send(&AgentMessage::error("Not connected", req.callback));
            return;
        };
        let permits = match self.inbound_permits(&agent, size) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(agent, peer = %self.peer, "inbound message shed: {why}");
                self.send(&AgentMessage::TransmitResponse(TransmitResponse {
                    channel: req.channel.clone(),
                    remote: req.remote.clone(),
                    callback: req.callback.clone(),
                    content_type: CONTENT_TYPE_TEXT.into(),
                    status_code: Some(429),
                    status: None,
                    body: format!("relay is busy: {why}; retry"),
                }));
                return;
            }
        };
        let (inbound, outbox) = (self.ctx.inbound.clone(), self.outbox.clone());
        tokio::spawn(async move {
            let answer = inbound.handle(&agent, req).await;
            let _ = outbox.push(answer.to_json(), None);
            drop(permits);
        });
    }

    /// The permits for one more inbound message of `size` bytes, or why there are none.
    fn inbound_permits(
        &self,
        agent: &str,
        size: usize,
    ) -> Result<[OwnedSemaphorePermit; 3], String> {
        let budget = self.ctx.local.budget(agent);
        let socket = self.inbound.clone().try_acquire_owned().map_err(|_| {
            format!(
                "{} inbound messages of this connection are being handled",
                self.ctx.config.max_inbound_per_socket
            )
        })?;
        let count =
            budget.inbound.clone().try_acquire_owned().map_err(|_| {
                format!("too many inbound messages of Agent/{agent} are being handled")
            })?;
        let bytes = u32::try_from(size)
            .ok()
            .and_then(|n| budget.inbound_bytes.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                format!("too many bytes of inbound messages of Agent/{agent} are being handled")
            })?;
        Ok([socket, count, bytes])
    }

    /// Answers a refused connect with `agent:error`, then closes; returns `false`.
    fn refuse(&self, text: String) -> bool {
        tracing::warn!(peer = %self.peer, reason = text, "agent connection refused");
        self.send(&AgentMessage::error(text, None));
        self.outbox.close("connect refused");
        false
    }

    /// `agent:connect:request`: check it, register the agent, answer. `false` closes.
    fn connect(&mut self, req: ConnectRequest) -> bool {
        let Some(token) = req.access_token.filter(|t| !t.is_empty()) else {
            return self.refuse("Missing access token".into());
        };
        let Some(agent_id) = req.agent_id.filter(|a| !a.is_empty()) else {
            return self.refuse("Missing agent ID".into());
        };
        let claims = match self.ctx.tokens.verify(&token, now_secs()) {
            Ok(c) => c,
            Err(e) => return self.refuse(format!("Invalid access token: {e}")),
        };
        let registry = &self.ctx.registry;
        let Some(agent) = registry.cached("Agent", &agent_id) else {
            return self.refuse(format!("Agent/{agent_id} not found"));
        };
        let app = registry.cached("ClientApplication", &claims.client_id);
        if !may_act_as(app.as_deref(), &agent_id) {
            return self.refuse(format!(
                "ClientApplication/{} may not act as Agent/{agent_id}",
                claims.client_id
            ));
        }
        if agent["status"].as_str() == Some("off") {
            tracing::info!(
                agent = agent_id,
                "agent connected while Agent.status is off"
            );
        }
        if let Some((old_agent, old_conn)) = self.live.take() {
            self.ctx.local.unregister(&old_agent, old_conn);
        }
        let (conn, replaced) = self.ctx.local.register(&agent_id, self.handle.clone());
        if let Some(old) = replaced {
            tracing::info!(
                agent = agent_id,
                "a newer connection replaces the previous one"
            );
            old.health.close("replaced by a newer connection");
        }
        if let Some(c) = &self.ctx.cluster {
            let version = self.ctx.local.presence(&agent_id).version;
            let (c, agent) = (c.clone(), agent_id.clone());
            tokio::spawn(async move { c.announce(&agent, &version).await });
        }
        tracing::info!(agent = agent_id, peer = %self.peer, client = claims.client_id, "agent connected");
        self.live = Some((agent_id, conn));
        self.send(&AgentMessage::ConnectResponse(ConnectResponse::default()));
        true
    }
}
