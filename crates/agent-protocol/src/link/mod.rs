//! [`Link`]: one agent↔relay WebSocket connection as a state machine, without the socket.
//!
//! The same machine runs on both ends ([`Role::Agent`], [`Role::Relay`]). It owns what the two
//! ends agree on: the connect handshake and its deadline, heartbeats both ways, the silence check
//! (a peer that says nothing for [`LinkOptions::silence_timeout`] is gone, whatever TCP thinks),
//! and one table of requests in flight with a deadline each. It does not read a clock, open a
//! socket or spawn anything: the driver feeds it what arrived and the time, and sends what it
//! gives back.
//!
//! ```text
//!   socket frame ──► handle_bytes(bytes, now) ─┐            ┌─► poll_send()    ──► socket frame
//!   timer fired  ──► handle_timeout(now)      ├─► Link ───┼─► poll_event()   ──► application
//!   application  ──► request / send / accept  ┘            └─► poll_timeout() ──► timer
//! ```
//!
//! ```
//! use std::time::{Duration, Instant};
//! use agent_protocol::link::{Event, Link, LinkOptions};
//! use agent_protocol::{AgentMessage, ConnectRequest, ConnectResponse};
//!
//! let now = Instant::now();
//! let hello = ConnectRequest { access_token: Some("t".into()), agent_id: Some("a1".into()), callback: None };
//! let mut agent = Link::agent(LinkOptions::default(), hello, now);
//! let mut relay = Link::relay(LinkOptions::default(), now);
//! relay.handle_message(agent.poll_send().unwrap(), now);
//! assert!(matches!(relay.poll_event(), Some(Event::ConnectRequested(_))));
//! relay.accept(now).unwrap();
//! agent.handle_message(relay.poll_send().unwrap(), now);
//! assert_eq!(agent.poll_event(), Some(Event::Connected));
//! assert_eq!(agent.poll_timeout(), Some(now + Duration::from_secs(10))); // first heartbeat
//! ```

mod callbacks;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::{
    AgentMessage, ConnectRequest, ConnectResponse, Decoded, Direction, ErrorMessage,
    HeartbeatRequest, HeartbeatResponse,
};
use crate::{DEFAULT_MAX_MESSAGE, Error};
use callbacks::{Callbacks, Lookup};

/// Which end of the connection a [`Link`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The on-premises agent: it opens the connection and sends `agent:connect:request`.
    Agent,
    /// The cloud side: it waits for the connect request and accepts or refuses it.
    Relay,
}

/// Timers and bounds of a [`Link`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOptions {
    /// How often a live link sends `agent:heartbeat:request` (Medplum: 10 s).
    pub heartbeat_interval: Duration,
    /// A peer that sends nothing at all for this long is gone: the link closes with
    /// [`CloseReason::Silent`]. Default 30 s, three heartbeat periods.
    pub silence_timeout: Duration,
    /// Agent: how long to wait for `agent:connect:response`. Relay: how long to wait for
    /// `agent:connect:request` and for the application's decision on it. Default 10 s.
    pub connect_timeout: Duration,
    /// Most of this end's requests in flight at once; [`Link::request`] refuses more
    /// ([`LinkError::TooManyInFlight`]). Default 4096.
    pub max_in_flight: usize,
    /// Largest message [`Link::handle_bytes`] decodes (default 16 MiB).
    pub max_message: usize,
    /// Sent in `agent:heartbeat:response`.
    pub version: String,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            heartbeat_interval: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_in_flight: 4096,
            max_message: DEFAULT_MAX_MESSAGE,
            version: String::new(),
        }
    }
}

/// Where a [`Link`] is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The handshake has not finished: the agent waits for `agent:connect:response`; the relay
    /// waits for `agent:connect:request`, then for the application to accept or refuse it.
    Connecting,
    /// Connected: heartbeats run, requests may be sent.
    Live,
    /// Over; see [`Link::close_reason`]. Make a new link for a new connection.
    Closed,
}

/// Why a link closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The handshake did not finish within [`LinkOptions::connect_timeout`].
    ConnectTimeout,
    /// The connect request was refused with this `agent:error` (agent: the relay's answer;
    /// relay: what [`Link::refuse`] sent).
    Refused(ErrorMessage),
    /// Nothing came from the peer for this long.
    Silent(Duration),
    /// The driver reported that the socket closed or failed.
    TransportClosed,
    /// The application closed the link.
    Local,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ConnectTimeout => f.write_str("connect handshake not finished in time"),
            CloseReason::Refused(e) => write!(f, "connect refused: {}", e.body),
            CloseReason::Silent(d) => write!(f, "peer silent for {} ms", d.as_millis()),
            CloseReason::TransportClosed => f.write_str("connection closed"),
            CloseReason::Local => f.write_str("closed by this end"),
        }
    }
}

/// Something the application is to act on, from [`Link::poll_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Agent: the relay accepted the connect request; the link is live.
    Connected,
    /// Relay: the agent asks to connect (possibly again on a live link). Check it, then call
    /// [`Link::accept`] or [`Link::refuse`] before [`LinkOptions::connect_timeout`].
    ConnectRequested(ConnectRequest),
    /// A request or notice from the peer for the application: a transmit request (a push to
    /// the agent, a device message to the relay), or a reload-config, logs, stats or upgrade
    /// request. Answer it with [`Link::send`], copying its callback.
    Request(AgentMessage),
    /// The answer to one of this end's requests.
    Answer {
        /// The request's callback.
        callback: String,
        /// The answer (`agent:transmit:response`, another `*:response`, or `agent:error`).
        message: AgentMessage,
        /// How long it took.
        elapsed: Duration,
    },
    /// A request's deadline passed without an answer. The link has forgotten it; an answer
    /// that still comes is [`Event::LateAnswer`].
    Expired {
        /// The request's callback.
        callback: String,
    },
    /// An answer to a request that had expired or been cancelled: log it; the application has
    /// moved on.
    LateAnswer {
        /// The request's callback.
        callback: String,
        /// The answer.
        message: AgentMessage,
    },
    /// An answer whose callback this link did not send (or forgot long ago). A relay with
    /// several processes routes it to the one that waits.
    Unmatched(AgentMessage),
    /// `agent:error` without a callback on a live link. Medplum's server answers a failing
    /// inbound transmit this way; when the application knows which request it concerns (one in
    /// flight on that channel), [`Link::resolve`] makes it that request's answer.
    UncorrelatedError {
        /// The error.
        error: ErrorMessage,
        /// Requests in flight when it came.
        in_flight: usize,
    },
    /// The peer's `agent:heartbeat:response`.
    Heartbeat {
        /// The peer's version.
        version: String,
    },
    /// A frame from the peer that is not a message (it still counts as a sign of life).
    Undecodable(Error),
    /// A request was in flight when the link closed; it has no answer on this link.
    Failed {
        /// The request's callback.
        callback: String,
    },
    /// The link closed; nothing follows.
    Closed(CloseReason),
}

/// The application asked for something the link cannot do (the caller's fault, not the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The handshake has not finished.
    #[error("the link is not connected yet")]
    NotLive,
    /// The link is closed.
    #[error("the link is closed")]
    Closed,
    /// A request must carry a callback to be answered.
    #[error("a request needs a callback")]
    NoCallback,
    /// A request with this callback is already in flight.
    #[error("a request with this callback is already in flight")]
    DuplicateCallback,
    /// [`LinkOptions::max_in_flight`] requests are in flight.
    #[error("too many requests in flight")]
    TooManyInFlight,
    /// Only a relay accepts or refuses a connect request, and only while one is waiting.
    #[error("no connect request to accept or refuse")]
    NoConnectRequest,
}

/// Counters of a link's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages handed to [`Link::poll_send`].
    pub sent: u64,
    /// Messages and frames handled.
    pub received: u64,
    /// Heartbeat requests sent.
    pub heartbeats: u64,
    /// Requests answered in time.
    pub answered: u64,
    /// Requests whose deadline passed.
    pub expired: u64,
    /// Answers that came after their request expired.
    pub late: u64,
    /// Heartbeat requests sent since the peer last sent a heartbeat request or answered one
    /// (Medplum's `outstandingHeartbeats`).
    pub outstanding_heartbeats: u32,
    /// The round trip of the last heartbeat answered: from sending the request to the peer's
    /// response (Medplum's `ping`, in ms there). `None` before the first answer.
    pub ping: Option<Duration>,
}

/// One agent↔relay connection, sans I/O. See the [module docs](self).
#[derive(Debug)]
pub struct Link {
    role: Role,
    opts: LinkOptions,
    state: State,
    close_reason: Option<CloseReason>,
    /// Relay: a connect request was surfaced and awaits accept or refuse.
    deciding: bool,
    /// While connecting: when the handshake must be done.
    connect_deadline: Instant,
    last_heard: Instant,
    next_heartbeat: Option<Instant>,
    /// When the last heartbeat request went out.
    heartbeat_sent: Option<Instant>,
    callbacks: Callbacks,
    outgoing: VecDeque<AgentMessage>,
    events: VecDeque<Event>,
    stats: LinkStats,
}

impl Link {
    /// The agent's end of a new connection: `hello` is sent first, and the relay has
    /// [`LinkOptions::connect_timeout`] from `now` to accept it.
    pub fn agent(opts: LinkOptions, hello: ConnectRequest, now: Instant) -> Link {
        let mut link = Link::new(Role::Agent, opts, now);
        link.queue(AgentMessage::ConnectRequest(hello));
        link
    }

    /// The relay's end of a new connection: the agent has [`LinkOptions::connect_timeout`]
    /// from `now` to send its connect request and be accepted.
    pub fn relay(opts: LinkOptions, now: Instant) -> Link {
        Link::new(Role::Relay, opts, now)
    }

    fn new(role: Role, opts: LinkOptions, now: Instant) -> Link {
        Link {
            role,
            connect_deadline: now + opts.connect_timeout,
            opts,
            state: State::Connecting,
            close_reason: None,
            deciding: false,
            last_heard: now,
            next_heartbeat: None,
            heartbeat_sent: None,
            callbacks: Callbacks::default(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the link is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the link is live.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Why the link closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The options it runs with.
    pub fn options(&self) -> &LinkOptions {
        &self.opts
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Requests in flight.
    pub fn in_flight_count(&self) -> usize {
        self.callbacks.len()
    }

    /// The callbacks of the requests in flight, oldest first.
    pub fn in_flight(&self) -> Vec<&str> {
        self.callbacks.in_flight()
    }

    /// Whether a request with `callback` is in flight.
    pub fn is_in_flight(&self, callback: &str) -> bool {
        self.callbacks.contains(callback)
    }

    /// Decodes a frame from the peer and handles it. An unknown message type is answered with
    /// `agent:error` ("Unknown message type: …", with its callback); a frame that does not
    /// decode is [`Event::Undecodable`]. Either way the peer is alive.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let direction = match self.role {
            Role::Agent => Direction::ToAgent,
            Role::Relay => Direction::ToServer,
        };
        match AgentMessage::decode(bytes, direction, self.opts.max_message) {
            Ok(Decoded::Message(msg)) => self.handle_message(msg, now),
            Ok(Decoded::Unknown { kind, callback }) => {
                self.heard(now);
                self.queue(AgentMessage::error(
                    format!("Unknown message type: {kind}"),
                    callback,
                ));
            }
            Err(e) => {
                self.heard(now);
                self.events.push_back(Event::Undecodable(e));
            }
        }
    }

    /// Handles a message from the peer.
    pub fn handle_message(&mut self, msg: AgentMessage, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.heard(now);
        match msg {
            AgentMessage::HeartbeatRequest(_) => {
                self.stats.outstanding_heartbeats = 0;
                self.queue(AgentMessage::HeartbeatResponse(HeartbeatResponse {
                    version: self.opts.version.clone(),
                    callback: None,
                }));
            }
            AgentMessage::HeartbeatResponse(r) => {
                self.stats.outstanding_heartbeats = 0;
                if let Some(sent) = self.heartbeat_sent.take() {
                    self.stats.ping = Some(now.saturating_duration_since(sent));
                }
                self.events
                    .push_back(Event::Heartbeat { version: r.version });
            }
            AgentMessage::ConnectResponse(_) if self.role == Role::Agent => {
                if self.state == State::Connecting {
                    self.go_live(now);
                    self.events.push_back(Event::Connected);
                }
            }
            AgentMessage::ConnectRequest(req) if self.role == Role::Relay => {
                self.deciding = true;
                self.events.push_back(Event::ConnectRequested(req));
            }
            // No request can be in flight before the link is live: an error now is the
            // relay's answer to the connect request.
            AgentMessage::Error(e)
                if self.role == Role::Agent && self.state == State::Connecting =>
            {
                self.close(CloseReason::Refused(e));
            }
            AgentMessage::Error(e) if e.callback.is_none() => {
                self.events.push_back(Event::UncorrelatedError {
                    error: e,
                    in_flight: self.callbacks.len(),
                });
            }
            AgentMessage::TransmitRequest(req)
                if self.role == Role::Relay && self.state != State::Live =>
            {
                self.queue(AgentMessage::error("Not connected", req.callback));
            }
            msg if self.is_answer(&msg) => self.answer(msg, now),
            msg if self.is_request(&msg) => self.events.push_back(Event::Request(msg)),
            other => {
                let callback = other.callback().map(str::to_owned);
                self.queue(AgentMessage::error(
                    format!("Unexpected message type: {}", other.kind()),
                    callback,
                ));
            }
        }
    }

    /// Fires the timers due at `now`: the handshake deadline, the silence check, the next
    /// heartbeat, and request deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Connecting && now >= self.connect_deadline {
            self.close(CloseReason::ConnectTimeout);
            return;
        }
        if self.state == State::Live {
            let silent = now.saturating_duration_since(self.last_heard);
            if silent >= self.opts.silence_timeout {
                self.close(CloseReason::Silent(silent));
                return;
            }
            if let Some(at) = self.next_heartbeat
                && now >= at
            {
                self.send_heartbeat(now);
                let next = at + self.opts.heartbeat_interval;
                // A driver that woke late does not send a burst to catch up.
                self.next_heartbeat = Some(if next <= now {
                    now + self.opts.heartbeat_interval
                } else {
                    next
                });
            }
        }
        while let Some(callback) = self.callbacks.pop_expired(now) {
            self.stats.expired += 1;
            self.events.push_back(Event::Expired { callback });
        }
    }

    /// When [`Link::handle_timeout`] is next due; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = match self.state {
            State::Closed => return None,
            State::Connecting => Some(self.connect_deadline),
            State::Live => {
                let silence = self.last_heard + self.opts.silence_timeout;
                Some(self.next_heartbeat.map_or(silence, |h| h.min(silence)))
            }
        };
        [link, self.callbacks.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next message to write to the socket.
    pub fn poll_send(&mut self) -> Option<AgentMessage> {
        let msg = self.outgoing.pop_front()?;
        self.stats.sent += 1;
        Some(msg)
    }

    /// The next thing for the application to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sends a request and waits for its answer until `deadline`: [`Event::Answer`], else
    /// [`Event::Expired`] at the deadline, else [`Event::Failed`] if the link closes first.
    /// The request must carry its callback. A callback that expired may be sent again.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotLive`] or [`LinkError::Closed`] when the link cannot carry it,
    /// [`LinkError::NoCallback`], [`LinkError::DuplicateCallback`] when that callback is in
    /// flight, [`LinkError::TooManyInFlight`].
    pub fn request(
        &mut self,
        msg: AgentMessage,
        deadline: Instant,
        now: Instant,
    ) -> Result<(), LinkError> {
        self.check_live()?;
        let Some(callback) = msg.callback() else {
            return Err(LinkError::NoCallback);
        };
        if self.callbacks.contains(callback) {
            return Err(LinkError::DuplicateCallback);
        }
        if self.callbacks.len() >= self.opts.max_in_flight {
            return Err(LinkError::TooManyInFlight);
        }
        self.callbacks.insert(callback, deadline, now);
        self.queue(msg);
        Ok(())
    }

    /// Sends a message that expects no answer on this link: an answer to one of the peer's
    /// requests, or a notice.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotLive`] or [`LinkError::Closed`].
    pub fn send(&mut self, msg: AgentMessage) -> Result<(), LinkError> {
        self.check_live()?;
        self.queue(msg);
        Ok(())
    }

    /// Stops waiting for a request (its caller gave up). An answer that still comes is
    /// [`Event::LateAnswer`]. `false` if it was not in flight.
    pub fn cancel(&mut self, callback: &str) -> bool {
        self.callbacks.cancel(callback)
    }

    /// Makes `message` the answer to the request in flight with `callback`, as if it had
    /// carried that callback: for an [`Event::UncorrelatedError`] the application can
    /// attribute. Queues [`Event::Answer`]; `false` if that request is not in flight.
    pub fn resolve(&mut self, callback: &str, message: AgentMessage, now: Instant) -> bool {
        match self.callbacks.answer(callback, now) {
            Lookup::Answered(elapsed) => {
                self.stats.answered += 1;
                self.events.push_back(Event::Answer {
                    callback: callback.to_owned(),
                    message,
                    elapsed,
                });
                true
            }
            Lookup::Late | Lookup::Unknown => false,
        }
    }

    /// Relay: accepts the connect request the application was given; the link is live.
    ///
    /// # Errors
    ///
    /// [`LinkError::NoConnectRequest`] on an agent, or when no connect request waits;
    /// [`LinkError::Closed`].
    pub fn accept(&mut self, now: Instant) -> Result<(), LinkError> {
        if self.state == State::Closed {
            return Err(LinkError::Closed);
        }
        if self.role != Role::Relay || !self.deciding {
            return Err(LinkError::NoConnectRequest);
        }
        self.deciding = false;
        self.queue(AgentMessage::ConnectResponse(ConnectResponse::default()));
        if self.state == State::Connecting {
            self.go_live(now);
            // The agent says its version only in answer to a heartbeat: ask at once rather
            // than a heartbeat period later, so `$status` knows it from the start.
            self.send_heartbeat(now);
        }
        Ok(())
    }

    /// Relay: refuses the connect request with `agent:error` `body` and closes the link
    /// ([`CloseReason::Refused`]). The driver writes the error, then closes the socket.
    ///
    /// # Errors
    ///
    /// As [`Link::accept`].
    pub fn refuse(&mut self, body: impl Into<String>) -> Result<(), LinkError> {
        if self.state == State::Closed {
            return Err(LinkError::Closed);
        }
        if self.role != Role::Relay || !self.deciding {
            return Err(LinkError::NoConnectRequest);
        }
        self.deciding = false;
        let error = ErrorMessage {
            body: body.into(),
            callback: None,
        };
        self.queue(AgentMessage::Error(error.clone()));
        self.close(CloseReason::Refused(error));
        Ok(())
    }

    /// Closes the link: every request in flight fails ([`Event::Failed`]), then
    /// [`Event::Closed`]. Messages already queued can still be taken with
    /// [`Link::poll_send`]. Closing a closed link does nothing.
    pub fn close(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.next_heartbeat = None;
        for callback in self.callbacks.drain() {
            self.events.push_back(Event::Failed { callback });
        }
        self.close_reason = Some(reason.clone());
        self.events.push_back(Event::Closed(reason));
    }

    fn send_heartbeat(&mut self, now: Instant) {
        self.queue(AgentMessage::HeartbeatRequest(HeartbeatRequest::default()));
        self.stats.heartbeats += 1;
        self.stats.outstanding_heartbeats += 1;
        self.heartbeat_sent = Some(now);
    }

    fn go_live(&mut self, now: Instant) {
        self.state = State::Live;
        self.next_heartbeat = Some(now + self.opts.heartbeat_interval);
    }

    fn heard(&mut self, now: Instant) {
        self.stats.received += 1;
        if now > self.last_heard {
            self.last_heard = now;
        }
    }

    fn check_live(&self) -> Result<(), LinkError> {
        match self.state {
            State::Live => Ok(()),
            State::Connecting => Err(LinkError::NotLive),
            State::Closed => Err(LinkError::Closed),
        }
    }

    /// Queues a message whatever the state (protocol answers the link gives itself).
    fn queue(&mut self, msg: AgentMessage) {
        self.outgoing.push_back(msg);
    }

    /// Whether the peer may send `msg` as the answer to one of this end's requests.
    fn is_answer(&self, msg: &AgentMessage) -> bool {
        match self.role {
            Role::Agent => matches!(
                msg,
                AgentMessage::TransmitResponse(_) | AgentMessage::Error(_)
            ),
            Role::Relay => matches!(
                msg,
                AgentMessage::TransmitResponse(_)
                    | AgentMessage::ReloadConfigResponse(_)
                    | AgentMessage::UpgradeResponse(_)
                    | AgentMessage::LogsResponse(_)
                    | AgentMessage::StatsResponse(_)
                    | AgentMessage::DeadLettersResponse(_)
                    | AgentMessage::Error(_)
            ),
        }
    }

    /// Whether the peer may send `msg` as a request or notice for this end's application.
    fn is_request(&self, msg: &AgentMessage) -> bool {
        match self.role {
            Role::Agent => matches!(
                msg,
                AgentMessage::TransmitRequest(_)
                    | AgentMessage::ReloadConfigRequest(_)
                    | AgentMessage::UpgradeRequest(_)
                    | AgentMessage::LogsRequest(_)
                    | AgentMessage::StatsRequest(_)
                    | AgentMessage::DeadLettersRequest(_)
            ),
            Role::Relay => matches!(msg, AgentMessage::TransmitRequest(_)),
        }
    }

    fn answer(&mut self, message: AgentMessage, now: Instant) {
        let Some(callback) = message.callback().map(str::to_owned) else {
            // A response without a callback answers nothing this end can name.
            self.events.push_back(Event::Unmatched(message));
            return;
        };
        match self.callbacks.answer(&callback, now) {
            Lookup::Answered(elapsed) => {
                self.stats.answered += 1;
                self.events.push_back(Event::Answer {
                    callback,
                    message,
                    elapsed,
                });
            }
            Lookup::Late => {
                self.stats.late += 1;
                self.events
                    .push_back(Event::LateAnswer { callback, message });
            }
            Lookup::Unknown => self.events.push_back(Event::Unmatched(message)),
        }
    }
}
