//! Store and forward against a relay that does not answer or cannot take messages yet (a
//! scripted relay): devices are answered within their protocol's timers whatever the WAN does,
//! and temporary answers (503) are retried until the relay stores each message exactly once.

mod common;
#[path = "common/scripted.rs"]
mod scripted;

use std::time::{Duration, Instant};

use common::*;
use scripted::{Mode, ScriptedRelay};

async fn relay_with(channels: &[(&str, &str)]) -> ScriptedRelay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (agent, endpoints) = scripted::agent_with(AGENT, channels);
    ScriptedRelay::start(listener, agent, &endpoints)
}

#[tokio::test]
async fn devices_are_answered_in_time_while_the_relay_does_not_answer() {
    let relay = relay_with(&[
        ("lab", "astm://127.0.0.1:0"),
        ("adt", "mllp://127.0.0.1:0?enhanced=true"),
    ])
    .await;
    relay.set_mode(Mode::Silent);
    let mut config = agent_config(&relay.base_url, tmp("agent"));
    // Far longer than E1381's 15 s: a receiver that waited on the relay would miss its timers.
    config.inbound_reply_wait = Duration::from_secs(30);
    let agent = start_agent(config).await;
    let (astm_port, mllp_port) = (
        channel_port(&agent, "lab").await,
        channel_port(&agent, "adt").await,
    );

    // An analyzer sends three messages back to back; each ENQ and frame is answered at once.
    let opts = astm::LinkOptions {
        role: astm::Role::Instrument,
        ..astm::LinkOptions::default()
    };
    let mut analyzer = astm::connect(&format!("127.0.0.1:{astm_port}"), opts)
        .await
        .unwrap();
    for i in 0..3 {
        let t = Instant::now();
        let msg = format!("H|\\^&|||Analyzer\rP|1||PID{i}\rR|1|^^^GLU|5.{i}|mmol/L\rL|1|N\r");
        tokio::time::timeout(Duration::from_secs(10), analyzer.send(msg.as_bytes()))
            .await
            .expect("the analyzer's message was not taken in time")
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "message {i} took {:?}",
            t.elapsed()
        );
    }

    // An MLLP device in enhanced mode gets each commit ACK at once, on one connection.
    let mut conn = mllp::Connection::connect(
        &format!("127.0.0.1:{mllp_port}"),
        mllp::ClientOptions::default(),
    )
    .await
    .unwrap();
    for i in 0..3 {
        let t = Instant::now();
        let ack = conn.send(oru(&format!("ENH{i}")).as_bytes()).await.unwrap();
        assert_eq!(ack.code(), hl7v2::AckCode::CA);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "CA {i} took {:?}",
            t.elapsed()
        );
    }
    // All six were sent to the relay (the first of each channel at least once; the relay has
    // not answered, so each channel waits on its first).
    assert_eq!(agent.queue_depth(), 6);
    let attempted: std::collections::HashSet<String> =
        relay.attempts().into_iter().map(|a| a.channel).collect();
    assert_eq!(attempted.len(), 2, "both channels forward");
    drop(agent);
}

#[tokio::test]
async fn temporary_answers_are_retried_with_backoff_until_each_message_is_stored_once() {
    let relay = relay_with(&[("adt", "mllp://127.0.0.1:0?enhanced=aa")]).await;
    // The relay's store fails for the next four messages it sees, then recovers.
    relay.set_mode(Mode::Unavailable(4));
    let agent = start_agent(agent_config(&relay.base_url, tmp("agent"))).await;
    let mllp_port = channel_port(&agent, "adt").await;
    let mut conn = mllp::Connection::connect(
        &format!("127.0.0.1:{mllp_port}"),
        mllp::ClientOptions::default(),
    )
    .await
    .unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        let body = oru(&format!("TMP{i}"));
        let ack = conn.send(body.as_bytes()).await.unwrap();
        assert_eq!(ack.code(), hl7v2::AckCode::AA);
        sent.push(body);
    }
    let stored = relay.wait_stored(5, Duration::from_secs(30)).await;
    let bodies: Vec<&str> = stored.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        bodies,
        sent.iter().map(String::as_str).collect::<Vec<_>>(),
        "all stored, once, in order"
    );
    let attempts = relay.attempts();
    // Four 503s, then each message once more: the first message was retried, the channel did
    // not move past it, and the retries backed off (0.5 s doubling: at least 3.75 s with the
    // most jitter).
    assert_eq!(attempts.len(), 4 + 5, "{attempts:?}");
    assert!(attempts[..5].iter().all(|a| a.body == sent[0]));
    let span = attempts[4].at - attempts[0].at;
    assert!(
        span > Duration::from_millis(3700),
        "four retries took only {span:?}"
    );
    let callbacks: std::collections::HashSet<&str> =
        attempts[..5].iter().map(|a| a.callback.as_str()).collect();
    assert_eq!(callbacks.len(), 1, "every retry carries the same callback");
    let until = Instant::now() + Duration::from_secs(5);
    while agent.queue_depth() != 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent.queue_depth(), 0);
    drop(agent);
}
