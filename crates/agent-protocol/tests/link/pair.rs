//! An agent link and a relay link wired together in memory, with a fake clock: quinn's `Pair`
//! for the agent protocol. Every message crosses as JSON text, as on the socket. No sockets, no
//! sleeping; time moves only when a test says so, straight to the next timer.

use std::time::{Duration, Instant};

use agent_protocol::link::{CloseReason, Event, Link, LinkOptions};
use agent_protocol::{AgentMessage, ConnectRequest};

/// What the relay's application does with a connect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Accept,
    Refuse(String),
    /// Leaves it undecided (a relay stuck checking the token).
    Ignore,
}

pub struct Pair {
    pub agent: Link,
    pub relay: Link,
    pub now: Instant,
    /// When the pair was made.
    pub start: Instant,
    /// Messages cross agent → relay.
    pub agent_to_relay: bool,
    /// Messages cross relay → agent.
    pub relay_to_agent: bool,
    pub admission: Admission,
    pub agent_events: Vec<(Instant, Event)>,
    pub relay_events: Vec<(Instant, Event)>,
    /// Every message each side wrote, with when.
    pub agent_sent: Vec<(Instant, AgentMessage)>,
    pub relay_sent: Vec<(Instant, AgentMessage)>,
    pub opts: LinkOptions,
}

pub fn hello() -> ConnectRequest {
    ConnectRequest {
        access_token: Some("token".into()),
        agent_id: Some("agent-1".into()),
        callback: None,
    }
}

pub fn options() -> LinkOptions {
    LinkOptions {
        heartbeat_interval: Duration::from_secs(10),
        silence_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        version: "test".into(),
        ..LinkOptions::default()
    }
}

impl Pair {
    /// Two fresh links; nothing has crossed yet.
    pub fn new(opts: LinkOptions) -> Pair {
        let now = Instant::now();
        Pair {
            agent: Link::agent(opts.clone(), hello(), now),
            relay: Link::relay(opts.clone(), now),
            now,
            start: now,
            agent_to_relay: true,
            relay_to_agent: true,
            admission: Admission::Accept,
            agent_events: Vec::new(),
            relay_events: Vec::new(),
            agent_sent: Vec::new(),
            relay_sent: Vec::new(),
            opts,
        }
    }

    /// A pair that has done its handshake (its events taken).
    pub fn connected() -> Pair {
        let mut p = Pair::new(options());
        p.drive();
        assert!(p.agent.is_live() && p.relay.is_live(), "handshake failed");
        p.agent_events.clear();
        p.relay_events.clear();
        p
    }

    /// What a driver does after a connection is lost: new links on both ends, now.
    pub fn reconnect(&mut self) {
        self.agent = Link::agent(self.opts.clone(), hello(), self.now);
        self.relay = Link::relay(self.opts.clone(), self.now);
        self.agent_to_relay = true;
        self.relay_to_agent = true;
        self.drive();
    }

    /// Moves messages both ways until neither side has anything to send.
    pub fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(msg) = self.agent.poll_send() {
                moved = true;
                self.agent_sent.push((self.now, msg.clone()));
                if self.agent_to_relay {
                    self.relay.handle_bytes(msg.to_json().as_bytes(), self.now);
                }
            }
            while let Some(msg) = self.relay.poll_send() {
                moved = true;
                self.relay_sent.push((self.now, msg.clone()));
                if self.relay_to_agent {
                    self.agent.handle_bytes(msg.to_json().as_bytes(), self.now);
                }
            }
            while let Some(e) = self.agent.poll_event() {
                moved = true;
                self.agent_events.push((self.now, e));
            }
            while let Some(e) = self.relay.poll_event() {
                moved = true;
                if let Event::ConnectRequested(_) = &e {
                    match &self.admission {
                        Admission::Accept => self.relay.accept(self.now).unwrap(),
                        Admission::Refuse(why) => self.relay.refuse(why.clone()).unwrap(),
                        Admission::Ignore => {}
                    }
                }
                self.relay_events.push((self.now, e));
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock timer by timer until `until`, driving the wire after each.
    pub fn run_until(&mut self, until: Instant) {
        let mut fired_at = None;
        loop {
            self.drive();
            let next = [self.agent.poll_timeout(), self.relay.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    // A timer that fires and is still due is a link that would spin.
                    assert!(
                        t > self.now || fired_at != Some(t),
                        "a timer at {:?} fired and did not move",
                        t - self.start
                    );
                    fired_at = Some(t);
                    self.now = self.now.max(t);
                    self.agent.handle_timeout(self.now);
                    self.relay.handle_timeout(self.now);
                }
                _ => {
                    self.now = until;
                    self.drive();
                    return;
                }
            }
        }
    }

    /// Advances the clock by `d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Both sides' transport closed (a TCP reset, a relay restart).
    pub fn cut(&mut self) {
        self.agent.close(CloseReason::TransportClosed);
        self.relay.close(CloseReason::TransportClosed);
        self.drive();
    }

    /// When and why the agent's link closed.
    pub fn agent_closed(&self) -> Option<(Instant, CloseReason)> {
        closed(&self.agent_events)
    }

    /// When and why the relay's link closed.
    pub fn relay_closed(&self) -> Option<(Instant, CloseReason)> {
        closed(&self.relay_events)
    }

    /// Takes the agent's events so far.
    pub fn take_agent_events(&mut self) -> Vec<Event> {
        self.agent_events.drain(..).map(|(_, e)| e).collect()
    }

    /// Takes the relay's events so far.
    pub fn take_relay_events(&mut self) -> Vec<Event> {
        self.relay_events.drain(..).map(|(_, e)| e).collect()
    }

    /// Heartbeat requests written by (agent, relay).
    pub fn heartbeats_sent(&self) -> (usize, usize) {
        let count = |v: &[(Instant, AgentMessage)]| {
            v.iter()
                .filter(|(_, m)| matches!(m, AgentMessage::HeartbeatRequest(_)))
                .count()
        };
        (count(&self.agent_sent), count(&self.relay_sent))
    }
}

fn closed(events: &[(Instant, Event)]) -> Option<(Instant, CloseReason)> {
    events.iter().find_map(|(t, e)| match e {
        Event::Closed(r) => Some((*t, r.clone())),
        _ => None,
    })
}
