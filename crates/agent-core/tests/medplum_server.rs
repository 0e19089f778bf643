//! The agent against a server that answers as Medplum's does
//! (`packages/server/src/agent/websockets.ts`, 5.0.x; see `scripted.rs`): a failing inbound
//! transmit is an `agent:error` without callback ("Channel not found", "Invalid access token",
//! a Bot that throws), the Bot runs for every request it gets (no de-duplication) and answers
//! slowly. Time is scaled down: the Bot takes 2 s where the real one in the issue took 40 s,
//! and the agent waits 3 s for an answer where it waits 60 s by default.
//!
//! What must hold: every device gets an answer that says what happened; a message that keeps
//! failing goes to the dead letters and its channel moves on; an expired token costs nothing;
//! the Bot never runs twice for one message.

mod common;
#[path = "common/scripted.rs"]
mod scripted;

use std::collections::HashSet;
use std::time::Duration;

use agent_core::Event;
use common::*;
use scripted::ScriptedRelay;

const BOT: Duration = Duration::from_secs(2);

/// A device sends `body` on its own connection; the acknowledgement it gets, AA or AE.
async fn send(port: u16, body: String) -> Vec<u8> {
    let mut conn =
        mllp::Connection::connect(&format!("127.0.0.1:{port}"), mllp::ClientOptions::default())
            .await
            .unwrap();
    match conn.send(body.as_bytes()).await {
        Ok(ack) => ack.bytes().to_vec(),
        Err(mllp::Error::Negative { ack, .. }) => ack.to_vec(),
        Err(e) => panic!("no acknowledgement: {e}"),
    }
}

/// Waits until the server has seen an attempt carrying `body`.
async fn attempted(relay: &ScriptedRelay, body: &str) {
    let seen = async {
        while !relay.attempts().iter().any(|a| a.body == body) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the agent did not send the message");
}

#[tokio::test]
async fn errors_without_callbacks_slow_bots_and_expired_tokens_block_nothing_and_duplicate_nothing()
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (agent_res, endpoints) = scripted::agent_with(
        AGENT,
        &[("adt", "mllp://0.0.0.0:0"), ("ghost", "mllp://0.0.0.0:0")],
    );
    let relay = ScriptedRelay::start(listener, agent_res, &endpoints);
    // The server's Agent has no channel "ghost" (edited since the agent read it).
    relay.behave_as_medplum(&["adt"], BOT);
    let mut config = agent_config(&relay.base_url, tmp("agent"));
    config.inbound_answer_wait = Duration::from_secs(3);
    config.inbound_reply_wait = Duration::from_secs(20);
    config.inbound_max_attempts = 3;
    let agent = start_agent(config).await;
    let mut events = agent.events();
    let (adt, ghost) = (
        channel_port(&agent, "adt").await,
        channel_port(&agent, "ghost").await,
    );

    // A slow Bot is working on A1 when G1's error (no callback) comes: it is G1's answer.
    let a1 = tokio::spawn(send(adt, oru("A1")));
    attempted(&relay, &oru("A1")).await;
    let g1 = send(ghost, oru("G1")).await;
    let (code, ctrl, text) = msa(&g1);
    assert_eq!((code.as_str(), ctrl.as_str()), ("AE", "G1"));
    assert!(
        text.contains("refused 3 times") && text.contains("Channel not found"),
        "{text}"
    );
    let a1 = a1.await.unwrap();
    assert_eq!(msa(&a1).0, "AA", "the Bot's answer after {BOT:?}");

    // The channel moved on: the next message on it is sent (and refused) too.
    let g2 = send(ghost, oru("G2")).await;
    assert_eq!(msa(&g2).0, "AE");

    // A Bot that throws (agent:error, no callback) is that message's answer; the channel
    // moves on to the next one.
    relay.medplum(|m| {
        m.bot_throws_on = Some("THROW".into());
        m.bot_delay = Duration::from_millis(100);
    });
    let t1 = send(adt, oru("THROW1")).await;
    let (code, _, text) = msa(&t1);
    assert_eq!(code, "AE");
    assert!(text.contains("Bot error"), "{text}");
    assert_eq!(msa(&send(adt, oru("A2")).await).0, "AA");

    // The token expires: refused once ("Invalid access token", no callback), a new token is
    // fetched and the message goes through; nothing is dead-lettered for it.
    let before = relay
        .script
        .tokens_issued
        .load(std::sync::atomic::Ordering::SeqCst);
    relay.expire_tokens();
    assert_eq!(msa(&send(adt, oru("A3")).await).0, "AA");
    assert!(
        relay
            .script
            .tokens_issued
            .load(std::sync::atomic::Ordering::SeqCst)
            > before
    );

    // The dead letters say what happened; after the server learns the channel, one is sent
    // again and goes through, with its callback.
    let dead = agent.dead_letters().unwrap();
    let dead_bodies: Vec<&str> = dead.iter().map(|d| d.message.body.as_str()).collect();
    assert_eq!(dead_bodies, [oru("G1"), oru("G2"), oru("THROW1")]);
    assert!(dead.iter().all(|d| d.failures == 3), "{dead:?}");
    relay.medplum(|m| {
        m.channels.insert("ghost".into());
    });
    assert!(agent.retry_dead_letter(dead[0].message.id).await.unwrap());
    assert!(!agent.retry_dead_letter(dead[0].message.id).await.unwrap());
    let stored = relay.wait_stored(4, Duration::from_secs(10)).await;
    assert_eq!(agent.dead_letters().unwrap().len(), 2);

    // The Bot ran once per message: no callback and no body stored twice.
    let bodies: Vec<&str> = stored.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, [oru("A1"), oru("A2"), oru("A3"), oru("G1")]);
    let callbacks: HashSet<&str> = stored.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(callbacks.len(), stored.len(), "{stored:?}");
    assert_eq!(stored[3].0, dead[0].message.callback);
    // A1 was sent once although its Bot took 2 s: the agent did not give up and resend.
    let a1_sends = relay
        .attempts()
        .iter()
        .filter(|a| a.body == oru("A1"))
        .count();
    assert_eq!(a1_sends, 1);

    let mut dead_events = 0;
    while let Ok(e) = events.try_recv() {
        if let Event::InboundDeadLettered { reason, .. } = e {
            assert!(reason.starts_with("refused 3 times"), "{reason}");
            dead_events += 1;
        }
    }
    assert_eq!(dead_events, 3);
    agent.shutdown().await;
}

/// Endpoints written for Medplum name any host: Medplum listens on every interface at the
/// port (`packages/agent/src/hl7.ts`). A host name, or an address this machine does not have,
/// does the same here; the devices reach the channel on loopback.
#[tokio::test]
async fn medplum_endpoint_addresses_listen_on_every_interface_at_their_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (agent_res, endpoints) = scripted::agent_with(
        AGENT,
        &[
            ("named", "mllp://lab-gateway.example.org:0"),
            // TEST-NET-1: an address no machine here has.
            ("foreign", "mllp://192.0.2.10:0?encoding=utf-8"),
            ("local", "mllp://127.0.0.1:0"),
        ],
    );
    let relay = ScriptedRelay::start(listener, agent_res, &endpoints);
    let agent = start_agent(agent_config(&relay.base_url, tmp("agent"))).await;
    for name in ["named", "foreign"] {
        let bound = agent
            .wait_channel(name, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("channel {name} did not start"));
        assert!(bound.ip().is_unspecified(), "{name}: {bound}");
        let ack = send(bound.port(), oru(name)).await;
        assert_eq!(msa(&ack).0, "AA", "{name}");
    }
    // An address of this machine is honoured: loopback stays loopback.
    let local = agent
        .wait_channel("local", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(local.ip().is_loopback(), "{local}");
    agent.shutdown().await;
}
