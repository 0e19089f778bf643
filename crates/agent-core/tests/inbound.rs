//! Device → agent → relay: acknowledgements, durability across relay and agent restarts,
//! configuration reloads.

mod common;

use std::time::Duration;

use agent_core::Event;
use common::*;
use mllp::{ClientOptions, Connection};

async fn send(port: u16, msg: &str) -> mllp::Ack {
    let mut c = Connection::connect(&format!("127.0.0.1:{port}"), ClientOptions::default())
        .await
        .unwrap();
    c.send(msg.as_bytes()).await.unwrap()
}

async fn wait_for_rows(relay: &relay::Relay, n: usize) -> Vec<relay::InboundRow> {
    for _ in 0..200 {
        let rows = relay
            .registry()
            .inbound(Some(AGENT), None, 0, 1000)
            .await
            .unwrap();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay
        .registry()
        .inbound(Some(AGENT), None, 0, 1000)
        .await
        .unwrap()
}

/// Adds a channel `name` (its Endpoint has the same id) to the agent and asks it to reload.
async fn add_channel(w: &World, name: &str, address: &str) {
    let store = w.relay.registry();
    store
        .put(serde_json::json!({"resourceType": "Endpoint", "id": name, "status": "active", "address": address}))
        .await
        .unwrap();
    let mut agent = (*store.get("Agent", AGENT).await.unwrap().unwrap()).clone();
    agent["channel"].as_array_mut().unwrap().push(
        serde_json::json!({"name": name, "endpoint": {"reference": format!("Endpoint/{name}")}}),
    );
    store.put(agent).await.unwrap();
    let (status, body) = reload_config(&w.relay).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn device_message_reaches_the_relay_and_the_relay_answers_the_device() {
    let w = world().await;
    let ack = send(w.channel_port, &oru("IN-1")).await;
    let (code, id, _) = msa(ack.bytes());
    assert_eq!((code.as_str(), id.as_str()), ("AA", "IN-1"));
    // the ACK is the relay's (sender and receiver swapped)
    assert!(ack.bytes().starts_with(b"MSH|^~\\&|EHR|HOSP|LAB|HOSP|"));
    let rows = wait_for_rows(&w.relay, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].channel.as_str(), rows[0].body.as_str()),
        ("adt-in", oru("IN-1").as_str())
    );
    assert!(rows[0].callback.starts_with("Agent/agent-1-"));
    assert_eq!(w.agent.queue_depth(), 0);
}

#[tokio::test]
async fn relay_down_nothing_lost_and_delivered_once_when_it_returns() {
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    let data = tmp("relay");
    let relay = start_relay(
        "127.0.0.1:0",
        Some(data.clone()),
        &bundle,
        Duration::from_secs(3600),
    )
    .await;
    // restarted below on the same port, as a relay comes back at its address
    let listen = relay.local_addr().to_string();
    let mut cfg = agent_config(&relay.base_url(), tmp("agent"));
    cfg.inbound_reply_wait = Duration::from_millis(500);
    let agent = start_agent(cfg).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    relay.shutdown().await;
    // The device still gets an answer: the agent has the messages durably.
    for i in 0..3 {
        let ack = send(channel_port, &oru(&format!("DOWN-{i}"))).await;
        let (code, _, text) = msa(ack.bytes());
        assert_eq!(
            (code.as_str(), text.as_str()),
            ("AA", "queued at the agent for delivery")
        );
    }
    assert_eq!(agent.queue_depth(), 3);
    let relay = start_relay(&listen, Some(data), &bundle, Duration::from_secs(3600)).await;
    let rows = wait_for_rows(&relay, 3).await;
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(
        bodies,
        [oru("DOWN-0"), oru("DOWN-1"), oru("DOWN-2")],
        "all three, in order, once"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        relay.registry().inbound_count().await.unwrap(),
        3,
        "no duplicates"
    );
    for _ in 0..50 {
        if agent.queue_depth() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent.queue_depth(), 0);
}

#[tokio::test]
async fn queued_messages_survive_an_agent_restart() {
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    let relay_data = tmp("relay");
    let relay = start_relay(
        "127.0.0.1:0",
        Some(relay_data.clone()),
        &bundle,
        Duration::from_secs(3600),
    )
    .await;
    let listen = relay.local_addr().to_string();
    let agent_data = tmp("agent");
    let mut cfg = agent_config(&relay.base_url(), agent_data.clone());
    cfg.inbound_reply_wait = Duration::from_millis(300);
    let agent = start_agent(cfg.clone()).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    relay.shutdown().await;
    for i in 0..2 {
        send(channel_port, &oru(&format!("KEEP-{i}"))).await;
    }
    agent.shutdown().await;
    let relay = start_relay(
        &listen,
        Some(relay_data),
        &bundle,
        Duration::from_secs(3600),
    )
    .await;
    let agent = start_agent(cfg).await;
    let rows = wait_for_rows(&relay, 2).await;
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(bodies, [oru("KEEP-0"), oru("KEEP-1")]);
    drop(agent);
}

#[tokio::test]
async fn enhanced_channel_commits_first_then_forwards() {
    let device = Device::start(0).await;
    let mut bundle = bundle(device.port, 0);
    bundle["entry"][3]["resource"]["address"] = "mllp://127.0.0.1:0?enhanced=true".into();
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    let mut c = Connection::connect(
        &format!("127.0.0.1:{channel_port}"),
        ClientOptions {
            return_ack: mllp::ReturnAck::Application,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    let ack = c.send(oru("ENH-1").as_bytes()).await.unwrap();
    assert!(ack.commit().is_some(), "a CA came first");
    assert_eq!(msa(ack.commit().unwrap()).0, "CA");
    assert_eq!(msa(ack.bytes()).0, "AA", "then the relay's application ACK");
    drop(agent);
}

#[tokio::test]
async fn reload_config_opens_a_new_channel() {
    let w = world().await;
    let mut events = w.agent.events();
    add_channel(&w, "lab-in", "mllp://127.0.0.1:0").await;
    let new_port = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::ChannelStarted { name, bound, .. }) = events.recv().await
                && name == "lab-in"
            {
                return bound.port();
            }
        }
    })
    .await
    .expect("the new channel started");
    let ack = send(new_port, &oru("NEW-CH")).await;
    assert_eq!(msa(ack.bytes()).0, "AA");
    let rows = wait_for_rows(&w.relay, 1).await;
    assert_eq!(rows[0].channel, "lab-in");
}

#[tokio::test]
async fn analyzer_results_over_astm_reach_the_relay() {
    let device = Device::start(0).await;
    let mut bundle = bundle(device.port, 0);
    bundle["entry"][3]["resource"]["address"] = "astm://127.0.0.1:0".into();
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", channel_port))
        .await
        .unwrap();
    let mut analyzer = astm::Connection::new(
        stream,
        astm::LinkOptions {
            role: astm::Role::Instrument,
            ..Default::default()
        },
    );
    let results = b"H|\\^&|||Analyzer^1\rP|1||PID1\rO|1|S1||^^^GLU\rR|1|^^^GLU|5.4|mmol/L\rL|1|N\r";
    analyzer.send(results).await.unwrap();
    let rows = wait_for_rows(&relay, 1).await;
    assert_eq!(rows[0].content_type, "x-application/astm");
    assert_eq!(rows[0].body.as_bytes(), results);
    drop(agent);
}

/// A webhook that records the bytes it gets and answers `0x06` followed by them.
async fn echo_webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                tx.send(body.to_vec()).unwrap();
                (
                    [("content-type", "application/octet-stream")],
                    [&[0x06u8][..], &body].concat(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn byte_stream_frames_reach_the_relay_and_its_answers_come_back_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (hook, mut seen) = echo_webhook().await;
    let mut bundle = bundle(0, 0);
    bundle["entry"][3]["resource"]["address"] =
        "tcp://127.0.0.1:0?startChar=%02&endChar=%03".into();
    let relay = relay::Relay::start(relay::RelayConfig {
        listen: "127.0.0.1:0".into(),
        inbound_webhook: Some(hook),
        ..relay::RelayConfig::default()
    })
    .await
    .unwrap();
    relay.registry().bootstrap(&bundle).await.unwrap();
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;

    let mut device = tokio::net::TcpStream::connect(("127.0.0.1", channel_port))
        .await
        .unwrap();
    // Junk before the first frame, two frames in one write, one frame split over two writes,
    // a byte that is not UTF-8.
    device
        .write_all(b"noise\x02first\x03\r\n\x02sec")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    device.write_all(b"ond\x03\x02\xff3\x03").await.unwrap();
    let want = b"\x06first\x03\x06second\x03\x06\xff3\x03";
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(Duration::from_secs(10), device.read_exact(&mut got))
        .await
        .expect("the device got the answers within 10 s")
        .unwrap();
    assert_eq!(
        got, want,
        "answers in order, the webhook's bytes as they were"
    );

    let mut hooked = Vec::new();
    for _ in 0..3 {
        hooked.push(seen.recv().await.unwrap());
    }
    assert_eq!(
        hooked,
        vec![
            b"first\x03".to_vec(),
            b"second\x03".to_vec(),
            b"\xff3\x03".to_vec()
        ]
    );
    let rows = wait_for_rows(&relay, 3).await;
    let bodies: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.content_type.as_str(), r.body.as_str()))
        .collect();
    assert_eq!(
        bodies,
        vec![
            ("application/octet-stream", "666972737403"),
            ("application/octet-stream", "7365636f6e6403"),
            ("application/octet-stream", "ff3303"),
        ],
        "stored hex-encoded, as on the agent's socket"
    );
    drop(agent);
}

#[tokio::test]
async fn byte_stream_without_a_webhook_is_stored_and_the_device_gets_nothing_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bundle = bundle(0, 0);
    bundle["entry"][3]["resource"]["address"] =
        "tcp://127.0.0.1:0?startChar=%0B&endChar=%1C".into();
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    let mut device = tokio::net::TcpStream::connect(("127.0.0.1", channel_port))
        .await
        .unwrap();
    device.write_all(b"\x0bABC\x1c").await.unwrap();
    let rows = wait_for_rows(&relay, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body, "4142431c");
    // The relay's own answer is text ("OK"), which is not for the device.
    let mut one = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), device.read(&mut one)).await;
    assert!(read.is_err(), "the device got {read:?}");
    drop(agent);
}

#[tokio::test]
async fn byte_stream_channel_without_end_char_fails_saying_so() {
    let w = world().await;
    let mut events = w.agent.events();
    add_channel(&w, "raw", "tcp://127.0.0.1:0?startChar=%02").await;
    let failed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::ChannelFailed { name, error }) = events.recv().await
                && name == "raw"
            {
                return error;
            }
        }
    })
    .await
    .expect("the channel failed");
    assert!(failed.contains("endChar"), "{failed}");
}

#[tokio::test]
async fn a_dicom_tls_channel_that_cannot_use_its_settings_fails_at_start_naming_the_problem() {
    let w = world().await;
    let pki = test_support::Pki::new(&tmp("pki-dicom-bad"), "Agent CA");
    let cert = pki.cert.display().to_string();
    let cases = [
        (
            "no-key",
            format!("dicom://127.0.0.1:0?tls=true&cert={cert}&key=/nonexistent/key.pem"),
            "TLS: /nonexistent/key.pem: ".to_owned(),
        ),
        (
            "no-cert",
            format!("dicom://127.0.0.1:0?tls=true&key={}", pki.key.display()),
            "dicom:// channels over TLS need cert=FILE and key=FILE (PEM)".to_owned(),
        ),
        (
            "not-tls",
            format!("dicom://127.0.0.1:0?cert={cert}&key={}", pki.key.display()),
            "cert= is for TLS channels: add tls=true".to_owned(),
        ),
        (
            "tls-yes",
            format!("dicom://127.0.0.1:0?tls=yes&cert={cert}"),
            "tls=\"yes\": true or false".to_owned(),
        ),
    ];
    for (name, address, expected) in cases {
        let mut events = w.agent.events();
        add_channel(&w, name, &address).await;
        let failed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(Event::ChannelFailed { name: n, error }) = events.recv().await
                    && n == name
                {
                    return error;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("channel {name} did not fail"));
        assert!(failed.contains(&expected), "{name}: {failed}");
    }
    // The agent runs on: its MLLP channel still answers.
    let ack = send(w.channel_port, &oru("AFTER")).await;
    assert_eq!(msa(ack.bytes()).0, "AA");
}

#[tokio::test]
async fn analyzer_message_is_stored_before_its_last_frame_is_acknowledged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bundle = bundle(0, 0);
    bundle["entry"][3]["resource"]["address"] = "astm://127.0.0.1:0".into();
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    let mut events = agent.events();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", channel_port))
        .await
        .unwrap();
    let mut b = [0u8; 1];
    s.write_all(&[astm::frame::ENQ]).await.unwrap();
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], astm::frame::ACK);
    let message = b"H|\\^&|||Analyzer\rP|1||PID7\rR|1|^^^GLU|5.4|mmol/L\rL|1|N\r";
    let frames = astm::frame::frames(message);
    for (i, f) in frames.iter().enumerate() {
        s.write_all(f).await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(b[0], astm::frame::ACK, "frame {}", i + 1);
        let queued =
            events.try_recv().ok().into_iter().any(
                |e| matches!(e, Event::InboundQueued { ref channel, .. } if channel == "adt-in"),
            );
        // Before the last frame's ACK nothing is stored; by the time it comes, the message is.
        assert_eq!(queued, i + 1 == frames.len(), "frame {}", i + 1);
    }
    s.write_all(&[astm::frame::EOT]).await.unwrap();
    let rows = wait_for_rows(&relay, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body.as_bytes(), message);
    drop(agent);
}

/// Adds a channel whose Endpoint is `address` and whose `targetReference` is `target`.
async fn add_channel_to(w: &World, name: &str, address: &str, target: Option<&str>) {
    add_channel(w, name, address).await;
    if let Some(target) = target {
        let store = w.relay.registry();
        let mut agent = (*store.get("Agent", AGENT).await.unwrap().unwrap()).clone();
        for ch in agent["channel"].as_array_mut().unwrap() {
            if ch["name"] == name {
                ch["targetReference"] = serde_json::json!({ "reference": target });
            }
        }
        store.put(agent).await.unwrap();
    }
    let (status, body) = reload_config(&w.relay).await;
    assert_eq!(status, 200, "{body}");
}

/// A connection that waits for the application acknowledgement (past a CA), at most `wait`.
async fn application_ack(port: u16, msg: &str, wait: Duration) -> Result<mllp::Ack, mllp::Error> {
    let opts = ClientOptions {
        return_ack: mllp::ReturnAck::Application,
        ack_timeout: wait,
        ..ClientOptions::default()
    };
    let mut c = Connection::connect(&format!("127.0.0.1:{port}"), opts)
        .await
        .unwrap();
    c.send(msg.as_bytes()).await
}

/// `appLevelAck` (Medplum's hl7.ts): in `enhanced=true` mode, `SU` sends the relay's AA after
/// the CA, `ER` does not, and `ER` does send an AE.
#[tokio::test]
async fn app_level_ack_chooses_which_application_answers_an_enhanced_channel_sends() {
    let w = world().await;
    add_channel_to(
        &w,
        "su",
        "mllp://127.0.0.1:0?enhanced=true&appLevelAck=SU",
        None,
    )
    .await;
    add_channel_to(
        &w,
        "er",
        "mllp://127.0.0.1:0?enhanced=true&appLevelAck=ER",
        None,
    )
    .await;
    add_channel_to(
        &w,
        "er-bot",
        "mllp://127.0.0.1:0?enhanced=true&appLevelAck=er",
        Some("Bot/123"),
    )
    .await;
    let port = |n| {
        let a = &w.agent;
        async move {
            a.wait_channel(n, Duration::from_secs(10))
                .await
                .unwrap()
                .port()
        }
    };
    let (su, er, er_bot) = (port("su").await, port("er").await, port("er-bot").await);

    let ack = application_ack(su, &oru("SU-1"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(msa(ack.bytes()).0, "AA", "SU: the AA is sent");

    match application_ack(er_bot, &oru("ER-2"), Duration::from_secs(10)).await {
        Err(mllp::Error::Negative { code, .. }) => assert_eq!(code.as_str(), "AE"),
        other => panic!("ER: the AE is sent: {other:?}"),
    }

    // ER and an AA: the device gets its CA, and then nothing, though the relay answered.
    let mut events = w.agent.events();
    let answered = async {
        loop {
            match events.recv().await {
                Ok(Event::InboundAnswered {
                    channel, status, ..
                }) if channel == "er" => return status,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    let msg = oru("ER-1");
    let (got, status) = tokio::join!(application_ack(er, &msg, Duration::from_secs(2)), answered);
    assert_eq!(status, 200, "the relay answered");
    assert!(
        matches!(got, Err(mllp::Error::AckTimeout { .. })),
        "ER: no AA after the CA: {got:?}"
    );
}

/// `assignSeqNo=true` (Medplum's hl7.ts): MSH-13 of each message the channel forwards is the
/// channel's counter, 0 first.
#[tokio::test]
async fn assign_seq_no_sets_msh_13_of_forwarded_messages() {
    let w = world().await;
    add_channel_to(&w, "seq", "mllp://127.0.0.1:0?assignSeqNo=true", None).await;
    let port = w
        .agent
        .wait_channel("seq", Duration::from_secs(10))
        .await
        .unwrap()
        .port();
    for id in ["S-1", "S-2", "S-3"] {
        assert_eq!(msa(send(port, &oru(id)).await.bytes()).0, "AA");
    }
    let rows = wait_for_rows(&w.relay, 3).await;
    let mut seq: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let m = hl7v2::Message::parse(r.body.as_bytes()).unwrap();
            let g = |p: &str| m.get(p).unwrap().text().into_owned();
            (g("MSH-10"), g("MSH-13"))
        })
        .collect();
    seq.sort();
    assert_eq!(
        seq,
        [("S-1", "0"), ("S-2", "1"), ("S-3", "2")].map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // The default channel leaves MSH-13 alone.
    send(w.channel_port, &oru("plain")).await;
    let rows = wait_for_rows(&w.relay, 4).await;
    let plain = rows.iter().find(|r| r.channel == "adt-in").unwrap();
    assert_eq!(plain.body, oru("plain"));
}

/// `messagesPerMin=N` (Medplum's packages/hl7/src/connection.ts): a connection's messages are
/// spaced a minute / N apart; those over the rate are delayed, none dropped.
#[tokio::test]
async fn messages_per_min_delays_a_connections_messages_and_drops_none() {
    let w = world().await;
    add_channel_to(&w, "slow", "mllp://127.0.0.1:0?messagesPerMin=150", None).await;
    let port = w
        .agent
        .wait_channel("slow", Duration::from_secs(10))
        .await
        .unwrap()
        .port();
    let mut c = Connection::connect(&format!("127.0.0.1:{port}"), ClientOptions::default())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut at = Vec::new();
    for i in 0..4 {
        let ack = c.send(oru(&format!("T-{i}")).as_bytes()).await.unwrap();
        assert_eq!(msa(ack.bytes()).0, "AA");
        at.push(started.elapsed());
    }
    // 150 a minute: 400 ms apart; the first goes at once.
    assert!(at[0] < Duration::from_millis(400), "{at:?}");
    assert!(at[3] >= Duration::from_millis(1150), "{at:?}");
    let rows = wait_for_rows(&w.relay, 4).await;
    assert_eq!(rows.iter().filter(|r| r.channel == "slow").count(), 4);
}
