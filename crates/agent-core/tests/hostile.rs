//! Hostile senders on the agent's listeners: an MLLP frame that never ends, a flood of
//! connections, garbage and endless frames on an ASTM channel, an endless byte-stream frame. Each is refused or cut off; a
//! well-behaved device on the same channel is served meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mllp::{ClientOptions, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn good_device_still_served(port: u16, id: &str) {
    let mut c = Connection::connect(&format!("127.0.0.1:{port}"), ClientOptions::default())
        .await
        .unwrap();
    let ack = c.send(oru(id).as_bytes()).await.unwrap();
    assert_eq!(msa(ack.bytes()).0, "AA");
}

/// Reads until the peer closes or `max` passes; returns the bytes.
async fn read_until_closed(s: &mut TcpStream, max: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + max;
    loop {
        match tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            s.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn an_endless_mllp_frame_gets_ar_and_the_channel_serves_others() {
    let w = world().await;
    let mut hostile = TcpStream::connect(("127.0.0.1", w.channel_port))
        .await
        .unwrap();
    // A start block, then 12 MB with no end block: over the channel's 8 MB frame limit.
    hostile.write_all(&[0x0B]).await.unwrap();
    let junk = vec![b'A'; 1 << 20];
    let writer = tokio::spawn(async move {
        for _ in 0..12 {
            if hostile.write_all(&junk).await.is_err() {
                break;
            }
        }
        hostile
    });
    good_device_still_served(w.channel_port, "GOOD-1").await;
    let mut hostile = writer.await.unwrap();
    hostile.write_all(&[0x1C, 0x0D]).await.ok();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), hostile.read(&mut buf))
        .await
        .expect("an answer to the oversized frame")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.contains("MSA|AR"), "{text}");
    // Nothing of it reached the queue or the relay.
    assert_eq!(w.agent.queue_depth(), 0);
    good_device_still_served(w.channel_port, "GOOD-2").await;
}

#[tokio::test]
async fn a_connection_flood_is_capped_and_the_channel_recovers() {
    let w = world().await;
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(
            TcpStream::connect(("127.0.0.1", w.channel_port))
                .await
                .unwrap(),
        );
    }
    // Past the cap (32), connections are closed on arrival.
    let mut closed = 0;
    for s in &mut flood[40..] {
        if read_until_closed(s, Duration::from_millis(500))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 55,
        "only {closed} of 60 connections over the cap were closed"
    );
    drop(flood);
    tokio::time::sleep(Duration::from_millis(200)).await;
    good_device_still_served(w.channel_port, "AFTER-FLOOD").await;
}

#[tokio::test]
async fn astm_garbage_and_endless_frames_are_refused() {
    let device = Device::start(0).await;
    let mut bundle = bundle(device.port, 0);
    let agent = bundle["entry"][2]["resource"]["channel"]
        .as_array_mut()
        .unwrap();
    agent.push(
        serde_json::json!({"name": "astm-in", "endpoint": {"reference": "Endpoint/astm-in"}}),
    );
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"resource": {
        "resourceType": "Endpoint", "id": "astm-in", "status": "active",
        "address": "astm://127.0.0.1:0"}}));
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let astm_port = channel_port(&agent, "astm-in").await;

    // ENQ, then a frame that never ends: the receiver NAKs it and stays usable.
    let mut s = TcpStream::connect(("127.0.0.1", astm_port)).await.unwrap();
    s.write_all(&[0x05]).await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], 0x06, "ACK to ENQ");
    let mut endless = vec![0x02, b'1'];
    endless.extend(std::iter::repeat_n(b'X', 100_000));
    s.write_all(&endless).await.unwrap();
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], 0x15, "NAK to a frame over 247 bytes");

    // Meanwhile another analyzer sends a real message and it reaches the relay.
    let mut conn = astm::connect(
        &format!("127.0.0.1:{astm_port}"),
        astm::LinkOptions::default(),
    )
    .await
    .unwrap();
    conn.send(b"H|\\^&|||Analyzer\rP|1||PID9\rR|1|^^^GLU|5.4|mmol/L\rL|1|N\r")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = relay
            .registry()
            .inbound(Some(AGENT), Some("astm-in"), 0, 10)
            .await
            .unwrap();
        if rows.iter().any(|r| r.body.contains("PID9")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the good analyzer's message did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(agent);
}

#[tokio::test]
async fn an_endless_byte_stream_frame_is_dropped_and_the_next_one_delivered() {
    let mut bundle = bundle(0, 0);
    bundle["entry"][3]["resource"]["address"] =
        "tcp://127.0.0.1:0?startChar=%02&endChar=%03".into();
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    let mut s = TcpStream::connect(("127.0.0.1", channel_port))
        .await
        .unwrap();
    // A start byte, then 12 MB with no end byte (the limit is 8 MB), then a good frame.
    s.write_all(&[0x02]).await.unwrap();
    let junk = vec![b'A'; 1 << 20];
    for _ in 0..12 {
        s.write_all(&junk).await.unwrap();
    }
    s.write_all(b"\x03\x02good\x03").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = relay
            .registry()
            .inbound(Some(AGENT), None, 0, 10)
            .await
            .unwrap();
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(
        bodies,
        vec!["676f6f6403"],
        "only the good frame (\"good\\x03\" in hex)"
    );
    drop(agent);
}
