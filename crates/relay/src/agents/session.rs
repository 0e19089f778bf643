//! `GET /ws/agent`: one agent's WebSocket session.
//!
//! The first message must be `agent:connect:request` with a valid token whose client may act
//! as that agent, within the connect timeout; any failure is answered with `agent:error` and the
//! socket is closed (a Medplum 5.0.10 agent never recovers from an open socket that is not
//! live). Then: heartbeats both ways, answers routed to waiting requests by `callback`, inbound
//! messages stored and answered. A newer connection for the same agent replaces the older one.
//!
//! The protocol — the connect handshake and its deadline, heartbeats both ways, the silence
//! check, and the one table of requests in flight with their deadlines — is the sans-IO
//! [`Link`] from `agent-protocol`; this module drives it over the socket and applies the
//! relay's decisions (who may connect, inbound messages, caps).
//!
//! The link and the table of who waits on each request are a [`SharedLink`]: a caller (a
//! push) registers its request and queues its frame itself, under a short lock, so a push
//! costs no hop through the session task; the session is woken only when the request's
//! deadline comes before the timer it has armed.
//!
//! Nothing in the session loop, and nothing a caller does, waits on the socket: frames go to
//! the [`Outbox`](super::outbox) (bounded in bytes, each write with a deadline). So the
//! heartbeat, the silence check and the write deadline always run:
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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agent_protocol::link::{CloseReason, Event, Link, LinkError, LinkOptions};
use agent_protocol::{
    AgentMessage, CONTENT_TYPE_TEXT, ConnectRequest, TransmitRequest, TransmitResponse,
};
use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::AskError;
use super::cluster::Cluster;
use super::local::{Health, LocalAgents, Reply, SessionHandle};
use super::outbox::{self, Outbox, Refused};
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

/// Requests in flight on one link (pushes, operations); past it a caller is told the agent is
/// backlogged.
const MAX_IN_FLIGHT: usize = 4096;

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
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// One session's link, shared by its task and its callers (see the module docs).
#[derive(Debug)]
pub(crate) struct SharedLink {
    state: Mutex<LinkState>,
    outbox: Outbox,
    /// Wakes the session to re-arm its timer for a deadline before the one it armed.
    rearm: Notify,
    metrics: Arc<crate::metrics::Metrics>,
}

#[derive(Debug)]
struct LinkState {
    link: Link,
    /// Who waits for the answer to each request in flight on the link.
    replies: HashMap<String, oneshot::Sender<Reply>>,
    /// What the session's timer is armed for.
    armed: Option<std::time::Instant>,
    /// The session has ended: its agent is not connected here any more.
    ended: bool,
}

impl SharedLink {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues what the link has to send (the caller holds the lock, so frames keep their
    /// order). The request carrying `own` is offered, not pushed: `false` when it did not fit
    /// beside what is queued (and was not queued).
    fn flush(&self, st: &mut LinkState, own: &str) -> bool {
        let mut taken = true;
        while let Some(msg) = st.link.poll_send() {
            let text = msg.to_json();
            if msg.callback() == Some(own) {
                if let Err(Refused::Full(_)) = self.outbox.offer(text, None) {
                    taken = false;
                    continue;
                }
            } else {
                let _ = self.outbox.push(text, None);
            }
            self.metrics.ws_message("out");
        }
        taken
    }

    /// Sends `msg` (carrying `callback`) on the link; `reply` hears its answer, or why none
    /// came (the link closed, or `deadline` passed on the link).
    ///
    /// # Errors
    /// [`AskError::NotConnected`] once the session has ended, [`AskError::Backlogged`] with
    /// too many requests in flight (or that callback in flight already) or too much queued
    /// for the agent's socket,
    /// [`AskError::Disconnected`] when the link is closing.
    pub(crate) fn request(
        &self,
        agent: &str,
        msg: AgentMessage,
        callback: String,
        deadline: Instant,
        reply: oneshot::Sender<Reply>,
    ) -> Result<(), AskError> {
        let mut st = self.lock();
        if st.ended {
            return Err(AskError::NotConnected(agent.to_owned()));
        }
        let now = Instant::now().into_std();
        match st.link.request(msg, deadline.into_std(), now) {
            Ok(()) => {}
            Err(LinkError::TooManyInFlight | LinkError::DuplicateCallback) => {
                return Err(AskError::Backlogged(agent.to_owned()));
            }
            Err(_) => return Err(AskError::Disconnected(agent.to_owned())),
        }
        if !self.flush(&mut st, &callback) {
            // Too much queued for this agent already (large pushes at once): this one is
            // refused and the socket stays open, rather than dropping a healthy agent.
            st.link.cancel(&callback);
            return Err(AskError::Backlogged(agent.to_owned()));
        }
        st.replies.insert(callback, reply);
        let due = st.link.poll_timeout();
        if due.is_some() && (st.armed.is_none() || due < st.armed) {
            self.rearm.notify_one();
        }
        Ok(())
    }

    /// Sends `msg` outside the link's table; `written` hears when it is on the socket.
    ///
    /// # Errors
    /// [`AskError::NotConnected`] once the session has ended, [`AskError::Disconnected`]
    /// when the link is closing.
    pub(crate) fn send(
        &self,
        agent: &str,
        msg: AgentMessage,
        written: oneshot::Sender<()>,
    ) -> Result<(), AskError> {
        let st = self.lock();
        if st.ended {
            return Err(AskError::NotConnected(agent.to_owned()));
        }
        if !st.link.is_live() {
            return Err(AskError::Disconnected(agent.to_owned()));
        }
        match self.outbox.offer(msg.to_json(), Some(written)) {
            Err(Refused::Full(_)) => Err(AskError::Backlogged(agent.to_owned())),
            // A failed outbox: the session is closing the socket and tells the caller.
            Ok(()) | Err(Refused::Stalled(_)) => {
                self.metrics.ws_message("out");
                Ok(())
            }
        }
    }
}

struct Session {
    ctx: Arc<Sessions>,
    shared: Arc<SharedLink>,
    handle: SessionHandle,
    /// The agent id and connection number, once connected.
    live: Option<(String, u64)>,
    peer: SocketAddr,
    /// Inbound messages of this socket being handled.
    inbound: Arc<Semaphore>,
    /// Answers of inbound messages, from their tasks (as many as `inbound` allows).
    answers: mpsc::UnboundedSender<AgentMessage>,
    /// When the oldest unanswered heartbeat request went out.
    heartbeat_sent: Option<Instant>,
    /// The reason the socket closes, once the link has closed.
    closing: Option<String>,
}

/// Serves one agent socket until it closes.
pub(crate) async fn serve(ctx: Arc<Sessions>, socket: WebSocket, peer: SocketAddr) {
    let cfg = ctx.config.clone();
    let (sink, mut stream) = socket.split();
    let (outbox, mut failure, writer) = outbox::start(sink, cfg.max_unsent, cfg.write_timeout);
    let (answers, mut answered) = mpsc::unbounded_channel();
    let health = Arc::new(Health::default());
    let mut close_asked = health.close.subscribe();
    let options = LinkOptions {
        heartbeat_interval: cfg.heartbeat_interval,
        silence_timeout: cfg.agent_timeout,
        connect_timeout: cfg.connect_timeout,
        max_in_flight: MAX_IN_FLIGHT,
        max_message: cfg.max_message,
        version: VERSION.into(),
    };
    let shared = Arc::new(SharedLink {
        state: Mutex::new(LinkState {
            link: Link::relay(options, Instant::now().into_std()),
            replies: HashMap::new(),
            armed: None,
            ended: false,
        }),
        outbox: outbox.clone(),
        rearm: Notify::new(),
        metrics: ctx.metrics.clone(),
    });
    let mut s = Session {
        ctx: ctx.clone(),
        shared: shared.clone(),
        handle: SessionHandle {
            link: shared.clone(),
            health: health.clone(),
        },
        live: None,
        peer,
        inbound: Arc::new(Semaphore::new(cfg.max_inbound_per_socket)),
        answers,
        heartbeat_sent: None,
        closing: None,
    };
    let mut stopping = ctx.stopping.clone();
    let mut stalled = false;
    while s.closing.is_none() {
        let timer = {
            let mut st = shared.lock();
            st.armed = st.link.poll_timeout();
            st.armed.map(Instant::from_std)
        };
        let grace_end = s
            .heartbeat_sent
            .filter(|_| !health.unresponsive.load(Ordering::Relaxed))
            .map(|t| t + cfg.heartbeat_grace);
        tokio::select! {
            frame = stream.next() => {
                let now = Instant::now().into_std();
                match frame {
                    Some(Ok(Message::Text(t))) => {
                        ctx.metrics.ws_message("in");
                        shared.lock().link.handle_bytes(t.as_bytes(), now);
                    }
                    Some(Ok(Message::Binary(b))) => {
                        ctx.metrics.ws_message("in");
                        shared.lock().link.handle_bytes(&b, now);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Closed, broken, or a message over the limit: close our side too.
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        shared.lock().link.close(CloseReason::TransportClosed);
                    }
                }
            }
            () = shared.rearm.notified() => {}
            Some(answer) = answered.recv() => {
                if shared.lock().link.send(answer).is_err() {
                    tracing::debug!(agent = s.agent_id(), "inbound answer after the link closed");
                }
            }
            () = sleep_until_some(timer) => {
                shared.lock().link.handle_timeout(Instant::now().into_std());
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
            why = failure.wait() => {
                tracing::warn!(agent = s.agent_id(), %peer, reason = %why, "closing the agent's socket");
                stalled = true;
                shared.lock().link.close(CloseReason::Local);
            }
            Ok(()) = close_asked.changed() => {
                let reason = close_asked.borrow().clone().unwrap_or_default();
                if let Some((agent, _)) = &s.live {
                    tracing::info!(agent, %peer, reason, "closing the agent's socket");
                }
                shared.lock().link.close(CloseReason::Local);
                s.closing = Some(reason);
            }
            _ = stopping.changed() => {
                shared.lock().link.close(CloseReason::Local);
                s.closing = Some("relay shutting down".into());
            }
        }
        s.drive();
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
    {
        // Whoever still waits hears the disconnection; later callers, that it is gone.
        let mut st = shared.lock();
        st.ended = true;
        st.replies.clear();
    }
    shared.outbox.close(s.closing.as_deref().unwrap_or(""));
    drop(s);
    drop(shared);
    drop(outbox);
    if stalled {
        // The socket does not drain: drop it with whatever is queued.
        writer.abort();
    } else {
        // Inbound tasks still running hold the outbox; the close frame ends the writer first.
        let abort = writer.abort_handle();
        if tokio::time::timeout(cfg.write_timeout, writer)
            .await
            .is_err()
        {
            tracing::debug!(%peer, "the agent's socket did not take the close in time");
            abort.abort();
        }
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn agent_id(&self) -> &str {
        self.live.as_ref().map_or("", |(a, _)| a.as_str())
    }

    /// Queues a message outside the link (an answer the link does not know to give); a failed
    /// outbox closes the socket (through the failure branch).
    fn send(&self, msg: &AgentMessage) {
        self.ctx.metrics.ws_message("out");
        let _ = self.shared.outbox.push(msg.to_json(), None);
    }

    /// After anything happened: writes what the link has to send, and acts on its events.
    fn drive(&mut self) {
        loop {
            let event = {
                let mut st = self.shared.lock();
                while let Some(msg) = st.link.poll_send() {
                    if matches!(msg, AgentMessage::HeartbeatRequest(_)) {
                        self.heartbeat_sent.get_or_insert_with(Instant::now);
                    }
                    self.send(&msg);
                }
                st.link.poll_event()
            };
            let Some(event) = event else {
                return;
            };
            self.on_event(event);
        }
    }

    /// The waiter for `callback`, taken from the table.
    fn take_reply(&self, callback: &str) -> Option<oneshot::Sender<Reply>> {
        self.shared.lock().replies.remove(callback)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ConnectRequested(req) => self.connect(req),
            Event::Request(AgentMessage::TransmitRequest(req)) => {
                let size = req.body.len();
                self.inbound(req, size);
            }
            Event::Request(other) => {
                tracing::debug!(
                    agent = self.agent_id(),
                    kind = other.kind(),
                    "ignored request"
                );
            }
            Event::Answer {
                callback, message, ..
            } => {
                if let AgentMessage::Error(e) = &message {
                    tracing::warn!(
                        agent = self.agent_id(),
                        error = e.body,
                        "agent reported an error"
                    );
                }
                if let Some(reply) = self.take_reply(&callback) {
                    let _ = reply.send(Reply::Message(message));
                }
            }
            Event::Expired { callback } => {
                // Its caller times out too (same deadline): say so, in case this comes first.
                if let Some(reply) = self.take_reply(&callback) {
                    let _ = reply.send(Reply::Expired);
                }
            }
            Event::LateAnswer { callback, .. } => tracing::debug!(
                agent = self.agent_id(),
                callback,
                "answer after its caller stopped waiting"
            ),
            Event::Unmatched(msg) => {
                // Awaited here, or by another process (an upgraded agent's answer).
                match (self.ctx.local.unmatched(msg), &self.ctx.cluster) {
                    (None, _) => {}
                    (Some(msg), Some(c)) if msg.callback().is_some() => {
                        let c = c.clone();
                        tokio::spawn(async move { c.forward_answer(&msg).await });
                    }
                    (Some(msg), _) => tracing::debug!(
                        agent = self.agent_id(),
                        kind = msg.kind(),
                        "answer for a request nobody waits on"
                    ),
                }
            }
            Event::UncorrelatedError { error, .. } => {
                tracing::warn!(
                    agent = self.agent_id(),
                    error = error.body,
                    "agent reported an error"
                );
            }
            Event::Heartbeat { version } => {
                self.heartbeat_sent = None;
                self.handle
                    .health
                    .unresponsive
                    .store(false, Ordering::Release);
                if let Some((agent, _)) = &self.live {
                    self.ctx.local.heartbeat(agent, &version);
                    if let Some(c) = &self.ctx.cluster {
                        let (c, agent) = (c.clone(), agent.clone());
                        tokio::spawn(async move { c.seen(&agent, &version).await });
                    }
                }
            }
            Event::Undecodable(e) => self.send(&AgentMessage::error(e.to_string(), None)),
            Event::Failed { callback } => {
                if let Some(reply) = self.take_reply(&callback) {
                    let _ = reply.send(Reply::Disconnected);
                }
            }
            Event::Closed(reason) => {
                let why = match &reason {
                    CloseReason::ConnectTimeout => "no agent:connect:request in time",
                    CloseReason::Refused(_) => "connect refused",
                    CloseReason::Silent(_) => {
                        tracing::warn!(agent = self.agent_id(), peer = %self.peer, "agent silent too long; disconnecting");
                        "no heartbeat"
                    }
                    CloseReason::TransportClosed => "",
                    _ => "closed by the relay",
                };
                self.closing.get_or_insert_with(|| why.to_owned());
            }
            _ => {}
        }
    }

    /// An inbound message: handled in its own task (stored, then answered when the webhook, if
    /// any, replies) within the socket's and the agent's caps; past them, a 429 at once.
    fn inbound(&mut self, req: TransmitRequest, size: usize) {
        let Some((agent, _)) = self.live.clone() else {
            return; // the link answers "Not connected" before the handshake
        };
        let permits = match self.inbound_permits(&agent, size) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(agent, peer = %self.peer, "inbound message shed: {why}");
                let _ = self.shared.lock().link.send(AgentMessage::TransmitResponse(
                    TransmitResponse {
                        channel: req.channel.clone(),
                        remote: req.remote.clone(),
                        callback: req.callback.clone(),
                        content_type: CONTENT_TYPE_TEXT.into(),
                        status_code: Some(429),
                        status: None,
                        body: format!("relay is busy: {why}; retry"),
                        device_us: None,
                    },
                ));
                return;
            }
        };
        let (inbound, answers) = (self.ctx.inbound.clone(), self.answers.clone());
        let metrics = self.ctx.metrics.clone();
        tokio::spawn(async move {
            let (channel, remote) = (req.channel.clone(), req.remote.clone());
            let answer = inbound.handle(&agent, req).await;
            let status = match &answer {
                AgentMessage::TransmitResponse(r) => {
                    r.status_code
                        .unwrap_or(if r.is_error() { 400 } else { 200 })
                }
                _ => 400,
            };
            metrics.inbound(status);
            tracing::info!(agent, channel, remote, status, "inbound message");
            let _ = answers.send(answer);
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

    /// Refuses the connect request: `agent:error`, then the socket closes.
    fn refuse(&mut self, text: String) {
        tracing::warn!(peer = %self.peer, reason = text, "agent connection refused");
        let _ = self.shared.lock().link.refuse(text);
    }

    /// `agent:connect:request`: check it, register the agent, accept.
    fn connect(&mut self, req: ConnectRequest) {
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
            tracing::warn!(
                agent = agent_id,
                peer = %self.peer,
                "a newer connection replaces the previous one (if this repeats, two agents run with the same agentId)"
            );
            old.health.close("replaced by a newer connection");
        }
        if let Some(c) = &self.ctx.cluster {
            let version = self.ctx.local.presence(&agent_id).version;
            let (c, agent) = (c.clone(), agent_id.clone());
            tokio::spawn(async move { c.announce(&agent, &version).await });
        }
        tracing::info!(agent = agent_id, peer = %self.peer, client = claims.client_id, "agent connected");
        self.ctx.inbound.check_targets(&agent_id);
        self.live = Some((agent_id, conn));
        let _ = self.shared.lock().link.accept(Instant::now().into_std());
    }
}
