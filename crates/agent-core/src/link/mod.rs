//! The relay link: one WebSocket to the relay at a time, driven through the sans-IO
//! [`agent_protocol::link::Link`] (handshake, heartbeats, silence check, requests in flight
//! with deadlines), and reconnected with backoff and jitter whatever state it failed in.
//!
//! The rest of the agent talks to it through a [`RelayLink`] handle: send a request and await
//! its answer (or why there is none), answer one of the relay's requests on the session it came
//! on, wait until a session is live. The relay's requests reach the agent through [`Handler`].
//!
//! Medplum's server answers a failing inbound transmit (`Channel not found`, `Invalid access
//! token`, a Bot that throws) with an `agent:error` that carries no callback
//! (`packages/server/src/agent/websockets.ts`). Such an error is taken as the answer to the
//! device message sent most recently of those in flight: those errors come from checks the
//! server makes before any Bot runs, so they come back at once, while an older message in
//! flight is most likely waiting on a slow Bot. A wrong guess costs one error counted against
//! the other message, which is sent again; Outpost's relay always echoes the callback, so
//! against it no guess is ever made.

pub(crate) mod socket;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agent_protocol::link::{
    CloseReason, Event as LinkEvent, Link, LinkError, LinkOptions, LinkStats,
};
use agent_protocol::{AgentMessage, ConnectRequest, ErrorKind};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::backoff::Backoff;
use crate::error::chain;
use crate::event::Events;
use crate::{AgentConfig, Error, Event, RelayClient, VERSION};

/// A session that lasted this long resets the reconnect backoff.
const STABLE: Duration = Duration::from_secs(60);
/// Requests and answers waiting for the driver.
const COMMANDS: usize = 1024;

/// One connection to the relay, numbered from 1. An answer belongs to the session its request
/// came on: on a later one the relay no longer waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session(u64);

/// Why a request to the relay has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// No session is live.
    #[error("not connected to the relay")]
    NotLive,
    /// The relay did not answer before the deadline.
    #[error("the relay did not answer in time")]
    Expired,
    /// The session ended first.
    #[error("the connection to the relay ended before its answer")]
    Lost,
    /// The link refused the request (too many in flight, a callback already in flight).
    #[error("{0}")]
    Refused(LinkError),
}

type Reply = oneshot::Sender<Result<AgentMessage, RequestError>>;

enum Command {
    Request {
        msg: AgentMessage,
        deadline: Instant,
        reply: Reply,
    },
    Answer {
        session: Session,
        msg: AgentMessage,
    },
}

/// What the relay asks of the agent.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Before each connection: bring what the relay configures up to date.
    fn prepare(&self) -> impl Future<Output = Result<(), Error>> + Send;
    /// A request from the relay on `session` (a push, reload-config, logs, stats, upgrade):
    /// handle it without blocking and answer through [`RelayLink::answer`].
    fn request(&self, session: Session, msg: AgentMessage);
}

/// The handle the rest of the agent uses.
#[derive(Debug, Clone)]
pub(crate) struct RelayLink {
    commands: mpsc::Sender<Command>,
    live: watch::Receiver<Option<Session>>,
    stop: watch::Receiver<bool>,
    health: Arc<Health>,
}

/// What the driver last saw of the link's heartbeats, for `$stats`.
#[derive(Debug)]
struct Health {
    /// The last heartbeat round trip in µs; -1 before the first.
    ping_us: AtomicI64,
    /// Heartbeats sent and not answered.
    outstanding: AtomicU32,
}

impl Health {
    fn record(&self, stats: &LinkStats) {
        let ping = stats
            .ping
            .map_or(-1, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.ping_us.store(ping, Ordering::Relaxed);
        self.outstanding
            .store(stats.outstanding_heartbeats, Ordering::Relaxed);
    }
}

/// The link's side of `$stats`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LinkHealth {
    /// The last heartbeat round trip, in ms (Medplum's `ping`).
    pub(crate) ping_ms: Option<f64>,
    /// Heartbeats sent and not answered (Medplum's `outstandingHeartbeats`).
    pub(crate) outstanding_heartbeats: u32,
    /// Requests and answers waiting for the driver to write them to the WebSocket (Medplum's
    /// `webSocketQueueDepth`).
    pub(crate) queued: usize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Request { msg, .. } => write!(f, "Request({})", msg.kind()),
            Command::Answer { msg, .. } => write!(f, "Answer({})", msg.kind()),
        }
    }
}

impl RelayLink {
    /// Heartbeat round trip, unanswered heartbeats and the write queue.
    pub(crate) fn health(&self) -> LinkHealth {
        let ping_us = self.health.ping_us.load(Ordering::Relaxed);
        LinkHealth {
            #[allow(clippy::cast_precision_loss)] // µs below 2^53
            ping_ms: (ping_us >= 0).then(|| ping_us as f64 / 1000.0),
            outstanding_heartbeats: self.health.outstanding.load(Ordering::Relaxed),
            queued: self.commands.max_capacity() - self.commands.capacity(),
        }
    }

    /// Whether a session is live.
    pub(crate) fn is_live(&self) -> bool {
        self.live.borrow().is_some()
    }

    /// Waits until a session is live; `false` if the agent stops first.
    pub(crate) async fn wait_live(&self) -> bool {
        let mut live = self.live.clone();
        let mut stop = self.stop.clone();
        loop {
            if live.borrow_and_update().is_some() {
                return true;
            }
            if *stop.borrow() {
                return false;
            }
            tokio::select! {
                r = live.changed() => if r.is_err() { return false },
                r = stop.changed() => if r.is_err() { return false },
            }
        }
    }

    /// Sends a request carrying its callback and waits for the relay's answer until
    /// `deadline`.
    pub(crate) async fn request(
        &self,
        msg: AgentMessage,
        deadline: Instant,
    ) -> Result<AgentMessage, RequestError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Request {
            msg,
            deadline,
            reply,
        };
        if self.commands.send(cmd).await.is_err() {
            return Err(RequestError::NotLive);
        }
        answer.await.unwrap_or(Err(RequestError::Lost))
    }

    /// The live session, if any.
    pub(crate) fn session(&self) -> Option<Session> {
        *self.live.borrow()
    }

    /// Answers a request the relay sent on `session`; `false` when that session is over (the
    /// relay has given up on it).
    pub(crate) async fn answer(&self, session: Session, msg: AgentMessage) -> bool {
        if *self.live.borrow() != Some(session) {
            return false;
        }
        self.commands
            .send(Command::Answer { session, msg })
            .await
            .is_ok()
    }
}

/// The task that owns the socket and the link.
pub(crate) struct Driver {
    config: Arc<AgentConfig>,
    client: RelayClient,
    tls: Arc<rustls::ClientConfig>,
    events: Events,
    stop: watch::Receiver<bool>,
    commands: mpsc::Receiver<Command>,
    live: watch::Sender<Option<Session>>,
    health: Arc<Health>,
}

/// A handle and the driver behind it; run the driver with [`Driver::run`].
pub(crate) fn new(
    config: Arc<AgentConfig>,
    client: RelayClient,
    tls: Arc<rustls::ClientConfig>,
    events: Events,
    stop: watch::Receiver<bool>,
) -> (RelayLink, Driver) {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let (live, live_rx) = watch::channel(None);
    let health = Arc::new(Health {
        ping_us: AtomicI64::new(-1),
        outstanding: AtomicU32::new(0),
    });
    let handle = RelayLink {
        commands: tx,
        live: live_rx,
        stop: stop.clone(),
        health: health.clone(),
    };
    let driver = Driver {
        config,
        client,
        tls,
        events,
        stop,
        commands: rx,
        live,
        health,
    };
    (handle, driver)
}

impl Driver {
    /// Keeps a session up until the agent stops.
    pub(crate) async fn run<H: Handler>(mut self, handler: Arc<H>) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        let mut number = 0;
        while !*self.stop.borrow() {
            number += 1;
            let started = Instant::now();
            let reason = match self.session(Session(number), &*handler).await {
                Ok(reason) => reason,
                Err(e) => chain(&e),
            };
            self.live.send_replace(None);
            if *self.stop.borrow() {
                break;
            }
            tracing::warn!(reason, "relay session ended; reconnecting");
            self.events.emit(Event::Disconnected {
                reason: reason.clone(),
            });
            if started.elapsed() > STABLE {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "waiting before reconnecting"
            );
            self.idle(delay).await;
        }
    }

    /// Between sessions: requests fail at once rather than wait for a connection.
    async fn idle(&mut self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                _ = stop.changed() => return,
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(RequestError::NotLive));
                    }
                    Some(Command::Answer { msg, .. }) => dropped_answer(&msg),
                    None => return,
                },
            }
        }
    }

    fn link_options(&self) -> LinkOptions {
        let period = self.config.heartbeat_interval;
        LinkOptions {
            heartbeat_interval: period,
            silence_timeout: period * 3,
            connect_timeout: socket::STEP_TIMEOUT,
            version: VERSION.to_owned(),
            ..LinkOptions::default()
        }
    }

    /// One session: log in, bring the configuration up to date, connect, serve until it
    /// ends. Why it ended, or why it could not start.
    async fn session<H: Handler>(
        &mut self,
        session: Session,
        handler: &H,
    ) -> Result<String, Error> {
        let token = self.client.token().await?;
        handler.prepare().await?;
        let mut ws = socket::open(&self.config, &self.tls).await?;
        let hello = ConnectRequest {
            access_token: Some(token),
            agent_id: Some(self.config.agent_id.clone()),
            callback: None,
        };
        let mut link = Link::agent(self.link_options(), hello, Instant::now());
        // Who waits for each request in flight; the link says when each ends.
        let mut waiters: HashMap<String, Reply> = HashMap::new();
        // Callbacks of the device messages sent, oldest first (for errors without a callback).
        let mut transmits: Vec<String> = Vec::new();
        let mut transport: Option<String> = None;
        let mut stop = self.stop.clone();
        // A write the relay does not take within the silence timeout ends the session, so a
        // stalled relay cannot hold the agent (or its heartbeats) forever.
        let write_limit = link.options().silence_timeout;
        loop {
            if let Err(why) = write(&mut ws, &mut link, write_limit).await {
                link.close(CloseReason::TransportClosed);
                transport.get_or_insert(why);
            }
            self.health.record(&link.stats());
            while let Some(event) = link.poll_event() {
                if let LinkEvent::UncorrelatedError { error, in_flight } = &event {
                    transmits.retain(|cb| waiters.contains_key(cb));
                    if let Some(cb) = transmits.last() {
                        tracing::warn!(
                            error = error.body,
                            in_flight,
                            callback = cb.as_str(),
                            "error from the relay without a callback; taken as the answer to the device message sent last"
                        );
                        let answer = AgentMessage::Error(agent_protocol::ErrorMessage {
                            body: error.body.clone(),
                            callback: Some(cb.clone()),
                        });
                        if error.kind() == ErrorKind::InvalidAccessToken {
                            self.client.invalidate();
                        }
                        link.resolve(&cb.clone(), answer, Instant::now());
                        continue;
                    }
                }
                if let Some(end) = self.on_event(event, session, &mut waiters, handler) {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return match end {
                        CloseReason::Refused(e) => Err(Error::Refused(e)),
                        CloseReason::TransportClosed => Ok(transport
                            .take()
                            .unwrap_or_else(|| "connection closed".into())),
                        CloseReason::Silent(_) => {
                            Ok(format!("relay stopped answering heartbeats ({end})"))
                        }
                        CloseReason::Local => Ok("agent stopping".into()),
                        other => Ok(other.to_string()),
                    };
                }
            }
            let wake = link
                .poll_timeout()
                .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) => link.handle_bytes(t.as_bytes(), Instant::now()),
                    Some(Ok(Message::Binary(b))) => link.handle_bytes(&b, Instant::now()),
                    Some(Ok(Message::Close(c))) => {
                        let why = c.as_ref().map_or("", |c| c.reason.as_str()).to_owned();
                        transport = Some(format!("relay closed the connection: {why}"));
                        link.close(CloseReason::TransportClosed);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        transport = Some(format!("connection to the relay failed: {e}"));
                        link.close(CloseReason::TransportClosed);
                    }
                    None => {
                        transport = Some("connection closed by the relay".into());
                        link.close(CloseReason::TransportClosed);
                    }
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Request { msg, deadline, reply }) => {
                        let callback = msg.callback().map(str::to_owned);
                        let transmit = matches!(msg, AgentMessage::TransmitRequest(_));
                        match link.request(msg, deadline, Instant::now()) {
                            Ok(()) => {
                                if let Some(cb) = callback {
                                    if transmit {
                                        transmits.retain(|c| waiters.contains_key(c));
                                        transmits.push(cb.clone());
                                    }
                                    waiters.insert(cb, reply);
                                }
                            }
                            Err(LinkError::NotLive | LinkError::Closed) => {
                                let _ = reply.send(Err(RequestError::NotLive));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(RequestError::Refused(e)));
                            }
                        }
                    }
                    Some(Command::Answer { session: s, msg }) => {
                        if s != session || link.send(msg.clone()).is_err() {
                            dropped_answer(&msg);
                        }
                    }
                    None => link.close(CloseReason::Local),
                },
                () = tokio::time::sleep_until(wake) => link.handle_timeout(Instant::now()),
                _ = stop.changed() => link.close(CloseReason::Local),
            }
        }
    }

    /// Acts on one event of the link; the reason when the link closed.
    fn on_event<H: Handler>(
        &self,
        event: LinkEvent,
        session: Session,
        waiters: &mut HashMap<String, Reply>,
        handler: &H,
    ) -> Option<CloseReason> {
        let mut settle = |callback: &str, outcome| {
            if let Some(w) = waiters.remove(callback) {
                let _ = w.send(outcome);
            }
        };
        match event {
            LinkEvent::Connected => {
                self.live.send_replace(Some(session));
                tracing::info!(
                    agent = self.config.agent_id,
                    relay = self.config.base(),
                    "connected to the relay"
                );
                self.events.emit(Event::Connected);
            }
            LinkEvent::Request(msg) => handler.request(session, msg),
            LinkEvent::Answer {
                callback, message, ..
            } => settle(&callback, Ok(message)),
            LinkEvent::Expired { callback } => settle(&callback, Err(RequestError::Expired)),
            LinkEvent::Failed { callback } => settle(&callback, Err(RequestError::Lost)),
            LinkEvent::LateAnswer { callback, message } => {
                tracing::warn!(
                    callback,
                    kind = message.kind(),
                    "the relay answered after the agent stopped waiting; it is sent again"
                );
            }
            LinkEvent::Unmatched(message) => {
                tracing::debug!(
                    kind = message.kind(),
                    "answer for a request nobody waits on"
                );
            }
            LinkEvent::UncorrelatedError { error, in_flight } => {
                if error.kind() == ErrorKind::InvalidAccessToken {
                    self.client.invalidate();
                }
                tracing::warn!(error = error.body, in_flight, "error from the relay");
            }
            LinkEvent::Undecodable(e) => {
                tracing::warn!(error = %e, "undecodable message from the relay");
            }
            LinkEvent::Closed(reason) => {
                if let CloseReason::Refused(e) = &reason
                    && e.kind() == ErrorKind::InvalidAccessToken
                {
                    self.client.invalidate();
                }
                return Some(reason);
            }
            // Heartbeat answers, and events later protocol versions may add.
            _ => {}
        }
        None
    }
}

/// Writes what the link has to send, within `limit`; why it could not.
async fn write(ws: &mut socket::Ws, link: &mut Link, limit: Duration) -> Result<(), String> {
    let mut any = false;
    let work = async {
        while let Some(msg) = link.poll_send() {
            any = true;
            ws.feed(Message::Text(msg.to_json().into())).await?;
        }
        if any { ws.flush().await } else { Ok(()) }
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("writing to the relay failed: {e}")),
        Err(_) => Err(format!(
            "the relay did not take the agent's messages within {} ms",
            limit.as_millis()
        )),
    }
}

fn dropped_answer(msg: &AgentMessage) {
    tracing::warn!(
        kind = msg.kind(),
        callback = msg.callback(),
        "answered after the session ended; the relay has failed that request already"
    );
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
