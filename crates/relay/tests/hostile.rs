//! Hostile and broken clients: slow-loris heads and bodies, idle connections, oversized bodies and
//! WebSocket messages. Each is cut off within its limit, with bounded memory, and the relay keeps
//! serving everyone else meanwhile.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use relay::RelayConfig;
use test_support::relay::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn tight() -> relay::Relay {
    start_with(RelayConfig {
        header_timeout: Duration::from_millis(800),
        body_timeout: Duration::from_millis(800),
        connect_timeout: Duration::from_millis(800),
        max_body: 64 * 1024,
        max_ws_message: 64 * 1024,
        heartbeat_interval: Duration::from_millis(200),
        agent_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    })
    .await
}

/// Reads until the server closes; returns what it sent and how long it took. Fails after `max`.
async fn until_closed(s: &mut TcpStream, max: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(max.saturating_sub(started.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    started.elapsed(),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the relay kept the connection open for {max:?}; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Meanwhile, a well-behaved client gets its answers.
async fn healthy(relay: &relay::Relay) {
    let r = call(client().get(format!("{}healthz", relay.base_url()))).await;
    assert_eq!(r.text, "ok");
}

#[tokio::test]
async fn slow_loris_heads_are_cut_off() {
    let relay = tight().await;
    let addr = relay.local_addr();
    // A head trickled a byte at a time, never finished.
    let mut loris = TcpStream::connect(addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if loris.write_all(&[*b]).await.is_err() {
                return loris;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loris
    });
    // Many connections that send nothing at all.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    healthy(&relay).await;
    for s in &mut silent {
        let (_, took) = until_closed(s, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let mut loris = trickle.await.unwrap();
    let _ = until_closed(&mut loris, Duration::from_secs(5)).await;
    healthy(&relay).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let relay = tight().await;
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the connection goes after the head timeout.
    let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn slow_bodies_get_408_and_oversized_ones_413() {
    let relay = tight().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    let head = format!(
        "POST /fhir/R4/Device HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n{{\"resourceType\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request body not received within"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(3));

    // A declared 4 GB body is refused at once, without waiting for it.
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    let head = format!(
        "POST /fhir/R4/Device HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Length: 4294967296\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A chunked body that keeps coming is stopped at the limit.
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    let head = format!(
        "POST /fhir/R4/Device HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    for _ in 0..8 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let (answer, _) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    healthy(&relay).await;
}

#[tokio::test]
async fn oversized_websocket_messages_close_that_socket_only() {
    let relay = tight().await;
    let good = ScriptedAgent::connect(&relay).await;
    let mut bad = ScriptedAgent::connect_as(&relay, AGENT2).await;
    bad.ws
        .send(Message::Text("x".repeat(1 << 20).into()))
        .await
        .ok();
    // The bad socket is closed...
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match bad.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the relay kept a socket that sent 1 MB over its 64 KB limit"
    );
    // ...and the good agent is still live.
    let r = call(
        client()
            .get(format!("{}fhir/R4/Agent/{AGENT}/$status", relay.base_url()))
            .bearer_auth(token(&relay, CALLER, CALLER_SECRET).await),
    )
    .await;
    assert!(r.text.contains("connected"), "{}", r.text);
    drop(good);
}

#[tokio::test]
async fn a_websocket_that_never_connects_is_dropped() {
    let relay = tight().await;
    let url = format!("ws://127.0.0.1:{}/ws/agent", relay.local_addr().port());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    assert!(started.elapsed() < Duration::from_secs(3));
    healthy(&relay).await;
}
