//! The agent link, both ends in memory with a fake clock: handshake, refusal, heartbeats and
//! their loss, request deadlines and late answers, link death with requests in flight, and a
//! reconnect from every state. No sockets, no sleeps.

mod pair;

use std::time::Duration;

use agent_protocol::link::{CloseReason, Event, LinkError, LinkOptions, State};
use agent_protocol::{AgentMessage, ErrorKind, ErrorMessage, TransmitRequest, TransmitResponse};
use pair::{Admission, Pair, options};

fn push(callback: &str) -> AgentMessage {
    AgentMessage::TransmitRequest(TransmitRequest {
        remote: "mllp://10.0.0.5:2575".into(),
        content_type: "x-application/hl7-v2+er7".into(),
        body: "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5".into(),
        callback: Some(callback.into()),
        deadline_ms: Some(5000),
        ..TransmitRequest::default()
    })
}

fn inbound(callback: &str) -> AgentMessage {
    AgentMessage::TransmitRequest(TransmitRequest {
        access_token: Some("token".into()),
        channel: Some("adt-in".into()),
        remote: "10.0.0.9:51234".into(),
        content_type: "x-application/hl7-v2+er7".into(),
        body: "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|7|P|2.5".into(),
        callback: Some(callback.into()),
        ..TransmitRequest::default()
    })
}

fn response(callback: &str, status: u16) -> AgentMessage {
    AgentMessage::TransmitResponse(TransmitResponse {
        remote: "mllp://10.0.0.5:2575".into(),
        callback: Some(callback.into()),
        content_type: "x-application/hl7-v2+er7".into(),
        status_code: Some(status),
        body: "MSH|^~\\&|B|A|||20240101||ACK|9|P|2.5\rMSA|AA|1".into(),
        ..TransmitResponse::default()
    })
}

/// The requests the application was handed, by callback.
fn requests(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Request(m) => m.callback().map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_then_heartbeats_keep_both_ends_up() {
    let mut p = Pair::new(options());
    let t0 = p.now;
    p.drive();
    assert_eq!(p.agent.state(), State::Live);
    assert_eq!(p.relay.state(), State::Live);
    assert_eq!(p.take_agent_events(), [Event::Connected]);
    // The relay asks for a heartbeat as it accepts: the agent's version is known at once.
    assert!(matches!(
        p.take_relay_events().as_slice(),
        [Event::ConnectRequested(r), Event::Heartbeat { version }]
            if r.agent_id.as_deref() == Some("agent-1") && version == "test"
    ));
    // Ten minutes: twenty silence periods. Heartbeats every 10 s each way keep it up.
    p.run_for(Duration::from_secs(600));
    assert_eq!(p.agent_closed(), None);
    assert_eq!(p.relay_closed(), None);
    assert_eq!(p.heartbeats_sent(), (60, 61));
    let first = p
        .agent_sent
        .iter()
        .find(|(_, m)| matches!(m, AgentMessage::HeartbeatRequest(_)))
        .map(|(t, _)| *t - t0);
    assert_eq!(first, Some(Duration::from_secs(10)));
    // Each side saw the other's version in the answers to its heartbeats.
    assert!(p.agent_events.iter().any(|(_, e)| *e
        == Event::Heartbeat {
            version: "test".into()
        }));
    assert_eq!(p.agent.stats().heartbeats, 60);
}

#[test]
fn heartbeats_unanswered_are_counted_and_an_answer_gives_the_ping() {
    use agent_protocol::link::Link;
    use agent_protocol::{ConnectResponse, HeartbeatRequest, HeartbeatResponse};
    let t0 = std::time::Instant::now();
    let mut agent = Link::agent(options(), pair::hello(), t0);
    agent.handle_message(
        AgentMessage::ConnectResponse(ConnectResponse::default()),
        t0,
    );
    assert_eq!(agent.state(), State::Live);
    assert_eq!(
        (agent.stats().outstanding_heartbeats, agent.stats().ping),
        (0, None)
    );
    let heartbeat = |agent: &mut Link, at| {
        agent.handle_timeout(at);
        while agent.poll_send().is_some() {}
    };
    heartbeat(&mut agent, t0 + Duration::from_secs(10));
    heartbeat(&mut agent, t0 + Duration::from_secs(20));
    assert_eq!(agent.stats().outstanding_heartbeats, 2);
    // The answer to the second, 250 ms after it went out.
    let answer = AgentMessage::HeartbeatResponse(HeartbeatResponse {
        version: "relay".into(),
        callback: None,
    });
    agent.handle_message(answer, t0 + Duration::from_millis(20_250));
    assert_eq!(
        (agent.stats().outstanding_heartbeats, agent.stats().ping),
        (0, Some(Duration::from_millis(250)))
    );
    // A heartbeat request of the peer's own also shows it is there (Medplum resets on both).
    heartbeat(&mut agent, t0 + Duration::from_secs(30));
    assert_eq!(agent.stats().outstanding_heartbeats, 1);
    agent.handle_message(
        AgentMessage::HeartbeatRequest(HeartbeatRequest::default()),
        t0 + Duration::from_secs(31),
    );
    assert_eq!(agent.stats().outstanding_heartbeats, 0);
    assert_eq!(agent.stats().ping, Some(Duration::from_millis(250)));
}

#[test]
fn relay_silence_closes_the_agent_link_at_the_silence_timeout() {
    let mut p = Pair::connected();
    let t0 = p.now;
    p.run_for(Duration::from_secs(25));
    // The relay keeps sending; nothing reaches the agent any more.
    p.relay_to_agent = false;
    let cut = p.now;
    p.run_for(Duration::from_secs(120));
    let (at, why) = p
        .agent_closed()
        .expect("agent link still up after the relay went silent");
    // Last heard: the relay's heartbeat at 20 s (5 s before the cut).
    assert_eq!(why, CloseReason::Silent(Duration::from_secs(30)));
    assert_eq!(at - t0, Duration::from_secs(50));
    assert!(at - cut <= Duration::from_secs(30));
    assert_eq!(p.agent.state(), State::Closed);
    assert_eq!(p.agent.poll_timeout(), None);
}

#[test]
fn agent_silence_closes_the_relay_link() {
    let mut p = Pair::connected();
    let t0 = p.now;
    p.agent_to_relay = false;
    p.run_for(Duration::from_secs(120));
    let (at, why) = p
        .relay_closed()
        .expect("relay link still up after the agent went silent");
    assert_eq!(why, CloseReason::Silent(Duration::from_secs(30)));
    assert_eq!(at - t0, Duration::from_secs(30));
}

#[test]
fn a_peer_that_only_answers_heartbeats_is_alive() {
    // The relay never sends a heartbeat request of its own (a Medplum server that only
    // answers): the agent's requests and the answers keep the link up.
    let mut opts = options();
    opts.heartbeat_interval = Duration::from_secs(10);
    let mut p = Pair::new(opts);
    p.relay = agent_protocol::link::Link::relay(
        LinkOptions {
            heartbeat_interval: Duration::from_secs(3600),
            silence_timeout: Duration::from_secs(7200),
            ..options()
        },
        p.now,
    );
    p.drive();
    p.run_for(Duration::from_secs(300));
    assert_eq!(p.agent_closed(), None);
    // Only the one it sends as it accepts.
    assert_eq!(p.heartbeats_sent().1, 1);
}

#[test]
fn refused_connect_closes_both_ends_with_the_reason() {
    let mut p = Pair::new(options());
    p.admission = Admission::Refuse("Invalid access token: expired".into());
    p.drive();
    let (_, why) = p.agent_closed().expect("agent link not closed");
    let CloseReason::Refused(e) = why else {
        panic!("{why:?}")
    };
    assert_eq!(e.kind(), ErrorKind::InvalidAccessToken);
    assert!(matches!(
        p.relay_closed(),
        Some((_, CloseReason::Refused(_)))
    ));
    assert_eq!(
        p.agent.request(push("x"), p.now, p.now),
        Err(LinkError::Closed)
    );
    // No heartbeats ever.
    p.run_for(Duration::from_secs(60));
    assert_eq!(p.heartbeats_sent(), (0, 0));
}

#[test]
fn unanswered_connect_times_out_on_both_ends() {
    // The relay's answers are lost: the agent gives up at its connect deadline.
    let mut p = Pair::new(options());
    let t0 = p.now;
    p.relay_to_agent = false;
    p.run_for(Duration::from_secs(60));
    assert_eq!(
        p.agent_closed(),
        Some((t0 + Duration::from_secs(10), CloseReason::ConnectTimeout))
    );
    // A relay whose application never decides, and one that never hears a connect request.
    for admission in [Admission::Ignore, Admission::Accept] {
        let mut p = Pair::new(options());
        let t0 = p.now;
        p.agent_to_relay = admission == Admission::Ignore;
        p.admission = admission.clone();
        p.run_for(Duration::from_secs(60));
        assert_eq!(
            p.relay_closed(),
            Some((t0 + Duration::from_secs(10), CloseReason::ConnectTimeout)),
            "{admission:?}"
        );
    }
}

#[test]
fn an_answered_request_reports_its_answer_and_time() {
    let mut p = Pair::connected();
    let sent = p.now;
    p.relay
        .request(push("cb-1"), sent + Duration::from_secs(5), sent)
        .unwrap();
    p.drive();
    assert_eq!(requests(&p.take_agent_events()), ["cb-1"]);
    p.run_for(Duration::from_millis(1500));
    p.agent.send(response("cb-1", 200)).unwrap();
    p.drive();
    let events = p.take_relay_events();
    assert!(
        matches!(events.as_slice(), [Event::Answer { callback, elapsed, message: AgentMessage::TransmitResponse(r) }]
            if callback == "cb-1" && *elapsed == Duration::from_millis(1500) && r.status_code == Some(200)),
        "{events:?}"
    );
    assert_eq!(p.relay.in_flight_count(), 0);
    assert_eq!(p.relay.stats().answered, 1);
}

#[test]
fn a_request_expires_at_its_deadline_and_a_late_answer_is_reported_as_late() {
    let mut p = Pair::connected();
    let sent = p.now;
    p.relay
        .request(push("cb-slow"), sent + Duration::from_secs(2), sent)
        .unwrap();
    p.run_for(Duration::from_secs(3));
    let expired: Vec<_> = p
        .relay_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Expired { .. }))
        .cloned()
        .collect();
    assert_eq!(
        expired,
        [(
            sent + Duration::from_secs(2),
            Event::Expired {
                callback: "cb-slow".into()
            }
        )]
    );
    assert_eq!(p.relay.in_flight_count(), 0);
    p.relay_events.clear();
    // The device answers after all.
    p.agent.send(response("cb-slow", 200)).unwrap();
    p.drive();
    let events = p.take_relay_events();
    assert!(
        matches!(events.as_slice(), [Event::LateAnswer { callback, .. }] if callback == "cb-slow"),
        "{events:?}"
    );
    // An answer to something never sent is neither.
    p.agent.send(response("cb-never", 200)).unwrap();
    p.drive();
    assert!(matches!(
        p.take_relay_events().as_slice(),
        [Event::Unmatched(_)]
    ));
    assert_eq!(p.relay.stats().expired, 1);
    assert_eq!(p.relay.stats().late, 1);
    // The link itself is unaffected.
    assert!(p.relay.is_live() && p.agent.is_live());
}

#[test]
fn a_cancelled_request_is_late_when_answered_and_may_be_sent_again() {
    let mut p = Pair::connected();
    let now = p.now;
    p.agent
        .request(inbound("q-1"), now + Duration::from_secs(30), now)
        .unwrap();
    p.drive();
    assert!(p.agent.cancel("q-1"));
    assert!(!p.agent.cancel("q-1"));
    p.relay.send(response("q-1", 200)).unwrap();
    p.drive();
    assert!(matches!(
        p.take_agent_events().as_slice(),
        [Event::LateAnswer { .. }]
    ));
    // The same callback again (a resend): in flight, and its answer is an answer.
    p.agent
        .request(inbound("q-1"), now + Duration::from_secs(30), now)
        .unwrap();
    p.drive();
    p.relay.send(response("q-1", 200)).unwrap();
    p.drive();
    assert!(matches!(
        p.take_agent_events().as_slice(),
        [Event::Answer { .. }]
    ));
}

#[test]
fn deadlines_fire_in_order_whatever_the_order_of_sending() {
    let mut p = Pair::connected();
    let now = p.now;
    for (cb, secs) in [("c", 3), ("a", 1), ("b", 2), ("a2", 1)] {
        p.relay
            .request(push(cb), now + Duration::from_secs(secs), now)
            .unwrap();
    }
    assert_eq!(p.relay.in_flight(), ["c", "a", "b", "a2"]);
    p.run_for(Duration::from_secs(5));
    let order: Vec<String> = p
        .relay_events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Expired { callback } => Some(callback.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["a", "a2", "b", "c"]);
}

#[test]
fn link_death_fails_every_request_in_flight_then_closes() {
    let mut p = Pair::connected();
    let now = p.now;
    for cb in ["in-1", "in-2", "in-3"] {
        p.agent
            .request(inbound(cb), now + Duration::from_secs(300), now)
            .unwrap();
    }
    p.relay_to_agent = false;
    p.run_for(Duration::from_secs(100));
    let tail: Vec<Event> = p
        .take_agent_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Failed { .. } | Event::Closed(_)))
        .collect();
    assert_eq!(
        tail,
        [
            Event::Failed {
                callback: "in-1".into()
            },
            Event::Failed {
                callback: "in-2".into()
            },
            Event::Failed {
                callback: "in-3".into()
            },
            Event::Closed(CloseReason::Silent(Duration::from_secs(30))),
        ]
    );
    assert_eq!(p.agent.in_flight_count(), 0);
}

/// Where a connection can be when it is lost.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// The agent's connect request is on its way.
    ConnectSent,
    /// The relay has the request and has not decided.
    RelayDeciding,
    /// Live, nothing in flight.
    LiveIdle,
    /// Live, a push and an inbound message in flight.
    LiveWithRequests,
    /// Live, a push expired, its answer not yet come.
    AfterExpiry,
    /// The relay refused the agent.
    Refused,
}

#[test]
fn reconnect_from_every_state_loses_no_request() {
    for moment in [
        Moment::ConnectSent,
        Moment::RelayDeciding,
        Moment::LiveIdle,
        Moment::LiveWithRequests,
        Moment::AfterExpiry,
        Moment::Refused,
    ] {
        let mut p = Pair::new(options());
        let now = p.now;
        match moment {
            Moment::ConnectSent => {
                p.agent_to_relay = false;
                p.drive();
            }
            Moment::RelayDeciding => {
                p.admission = Admission::Ignore;
                p.drive();
                assert_eq!(p.relay.state(), State::Connecting);
            }
            Moment::LiveIdle => p.drive(),
            Moment::LiveWithRequests => {
                p.drive();
                p.relay
                    .request(push("push-1"), now + Duration::from_secs(30), now)
                    .unwrap();
                p.agent
                    .request(inbound("in-1"), now + Duration::from_secs(30), now)
                    .unwrap();
                p.drive();
            }
            Moment::AfterExpiry => {
                p.drive();
                p.relay
                    .request(push("push-1"), now + Duration::from_secs(1), now)
                    .unwrap();
                p.run_for(Duration::from_secs(2));
            }
            Moment::Refused => {
                p.admission = Admission::Refuse("Invalid access token".into());
                p.drive();
            }
        }
        p.cut();
        let agent_events = p.take_agent_events();
        let relay_events = p.take_relay_events();
        assert!(
            matches!(agent_events.last(), Some(Event::Closed(_))),
            "{moment:?}: {agent_events:?}"
        );
        assert!(
            matches!(relay_events.last(), Some(Event::Closed(_))),
            "{moment:?}: {relay_events:?}"
        );
        if let Moment::LiveWithRequests = moment {
            assert!(agent_events.contains(&Event::Failed {
                callback: "in-1".into()
            }));
            assert!(relay_events.contains(&Event::Failed {
                callback: "push-1".into()
            }));
        }
        // Nothing more comes from dead links, however long we wait.
        p.run_for(Duration::from_secs(120));
        assert!(p.agent_events.is_empty() && p.relay_events.is_empty());
        assert_eq!(p.agent.send(response("x", 200)), Err(LinkError::Closed));

        // A new connection: the application sends again what had no answer, same callbacks.
        p.admission = Admission::Accept;
        p.reconnect();
        assert!(p.agent.is_live() && p.relay.is_live(), "{moment:?}");
        p.take_agent_events();
        p.take_relay_events();
        let now = p.now;
        p.agent
            .request(inbound("in-1"), now + Duration::from_secs(30), now)
            .unwrap();
        p.relay
            .request(push("push-1"), now + Duration::from_secs(30), now)
            .unwrap();
        p.drive();
        assert_eq!(requests(&p.take_relay_events()), ["in-1"], "{moment:?}");
        assert_eq!(requests(&p.take_agent_events()), ["push-1"], "{moment:?}");
        p.relay.send(response("in-1", 200)).unwrap();
        p.agent.send(response("push-1", 200)).unwrap();
        p.drive();
        assert!(
            matches!(p.take_agent_events().as_slice(), [Event::Answer { callback, .. }] if callback == "in-1"),
            "{moment:?}"
        );
        assert!(
            matches!(p.take_relay_events().as_slice(), [Event::Answer { callback, .. }] if callback == "push-1"),
            "{moment:?}"
        );
    }
}

#[test]
fn an_error_without_callback_is_surfaced_and_can_answer_the_message_in_flight() {
    let mut p = Pair::connected();
    let now = p.now;
    p.agent
        .request(inbound("in-1"), now + Duration::from_secs(30), now)
        .unwrap();
    p.drive();
    p.take_relay_events();
    // Medplum's server: a failing inbound transmit gets agent:error with no callback.
    p.relay
        .send(AgentMessage::error("Channel not found", None))
        .unwrap();
    p.drive();
    let events = p.take_agent_events();
    let [Event::UncorrelatedError { error, in_flight }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(*in_flight, 1);
    assert_eq!(error.kind(), ErrorKind::ChannelNotFound);
    // The application knows it is the one in flight on that channel.
    assert_eq!(p.agent.in_flight(), ["in-1"]);
    assert!(
        p.agent
            .resolve("in-1", AgentMessage::Error(error.clone()), p.now)
    );
    assert!(
        !p.agent
            .resolve("in-1", AgentMessage::Error(error.clone()), p.now)
    );
    p.drive();
    assert!(matches!(
        p.take_agent_events().as_slice(),
        [Event::Answer { callback, message: AgentMessage::Error(ErrorMessage { .. }), .. }] if callback == "in-1"
    ));
}

#[test]
fn caller_misuse_is_refused_with_a_typed_error() {
    let mut p = Pair::new(options());
    let now = p.now;
    assert_eq!(
        p.agent.request(inbound("a"), now, now),
        Err(LinkError::NotLive)
    );
    assert_eq!(p.agent.accept(now), Err(LinkError::NoConnectRequest));
    p.drive();
    let mut no_callback = inbound("a");
    if let AgentMessage::TransmitRequest(t) = &mut no_callback {
        t.callback = None;
    }
    assert_eq!(
        p.agent.request(no_callback, now, now),
        Err(LinkError::NoCallback)
    );
    p.agent
        .request(inbound("a"), now + Duration::from_secs(1), now)
        .unwrap();
    assert_eq!(
        p.agent.request(inbound("a"), now, now),
        Err(LinkError::DuplicateCallback)
    );
    assert_eq!(p.relay.accept(now), Err(LinkError::NoConnectRequest));

    let mut small = Pair::new(LinkOptions {
        max_in_flight: 2,
        ..options()
    });
    small.drive();
    let later = now + Duration::from_secs(60);
    small.relay.request(push("1"), later, now).unwrap();
    small.relay.request(push("2"), later, now).unwrap();
    assert_eq!(
        small.relay.request(push("3"), later, now),
        Err(LinkError::TooManyInFlight)
    );
}

#[test]
fn unknown_and_unexpected_messages_are_answered_and_garbage_is_reported() {
    let mut p = Pair::connected();
    let now = p.now;
    p.agent.handle_bytes(
        br#"{"type":"agent:teleport:request","callback":"t-1"}"#,
        now,
    );
    p.agent.handle_bytes(b"{not json", now);
    // A relay-only message sent to the agent.
    p.agent
        .handle_message(AgentMessage::ConnectRequest(pair::hello()), now);
    let sent: Vec<AgentMessage> = std::iter::from_fn(|| p.agent.poll_send()).collect();
    assert_eq!(
        sent,
        [
            AgentMessage::error(
                "Unknown message type: agent:teleport:request",
                Some("t-1".into())
            ),
            AgentMessage::error("Unexpected message type: agent:connect:request", None),
        ]
    );
    assert!(matches!(
        p.agent.poll_event(),
        Some(Event::Undecodable(agent_protocol::Error::Json(_)))
    ));
    // The relay answers a device message sent before the handshake "Not connected".
    let mut q = Pair::new(options());
    q.agent_to_relay = false;
    q.drive();
    q.relay.handle_message(inbound("early"), q.now);
    assert_eq!(
        q.relay.poll_send(),
        Some(AgentMessage::error("Not connected", Some("early".into())))
    );
}

#[test]
fn the_deadline_extension_is_on_the_wire_only_when_set() {
    let json = push("cb").to_json();
    assert!(
        json.ends_with(r#""callback":"cb","deadlineMs":5000}"#),
        "{json}"
    );
    assert!(!inbound("cb").to_json().contains("deadlineMs"));
    let retry = |code| TransmitResponse {
        status_code: Some(code),
        ..TransmitResponse::default()
    };
    assert!(retry(503).is_retryable() && retry(429).is_retryable() && retry(500).is_retryable());
    assert!(!retry(200).is_retryable() && !retry(400).is_retryable());
    assert!(!TransmitResponse::default().is_retryable());
}
