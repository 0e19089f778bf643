//! The frame server and the listener on loopback: answers in frame order however long each
//! takes, the connection cap and a shared budget closing excess connections at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use byte_stream::{Answer, Budget, Handler, Listener, ListenerOptions, Server, ServerOptions};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers each frame with `<frame>` after a delay that shrinks with each frame, so later
/// answers are ready first.
struct Reverse;

impl Handler for Reverse {
    fn frame(&self, _peer: SocketAddr, frame: BytesMut) -> Answer {
        let delay = Duration::from_millis(u64::from(b'9' - frame[0]) * 20);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let mut out = b"<".to_vec();
            out.extend_from_slice(&frame);
            Some(out)
        })
    }
}

async fn bound() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn answers_come_back_in_frame_order() {
    let server = Server::serve(bound().await, ServerOptions::new(b'[', b']'), Reverse).unwrap();
    let mut c = TcpStream::connect(server.local_addr()).await.unwrap();
    // Junk, five frames in two writes, the last split.
    c.write_all(b"xx[1][2][3").await.unwrap();
    c.write_all(b"][4][5]").await.unwrap();
    let mut got = vec![0u8; b"<1]<2]<3]<4]<5]".len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"<1]<2]<3]<4]<5]");
    server.shutdown(Duration::from_secs(1)).await;
}

/// Connects and tells whether the server closed the connection at once (within 1 s) without
/// a byte.
async fn closed_at_once(addr: SocketAddr) -> bool {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), c.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A listener whose connections stay open until the client closes them.
fn holding(listener: TcpListener, opts: ListenerOptions) -> Listener {
    Listener::serve(listener, opts, |mut s: TcpStream, _, _| async move {
        let mut b = [0u8; 64];
        while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
    })
    .unwrap()
}

#[tokio::test]
async fn past_the_cap_connections_are_closed_at_once_and_the_listener_recovers() {
    let l = holding(
        bound().await,
        ListenerOptions {
            max_connections: 2,
            budget: None,
        },
    );
    let addr = l.local_addr();
    let a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    for _ in 0..5 {
        assert!(closed_at_once(addr).await);
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(l.stats().closed_at_cap(), 5);
    drop(a);
    // Once a slot frees, new clients are served again.
    let mut served = false;
    for _ in 0..50 {
        if !closed_at_once(addr).await {
            served = true;
            break;
        }
    }
    assert!(served);
    assert_eq!(l.stats().accepted(), 3);
    l.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_budget_caps_several_listeners_together() {
    let budget = Budget::new(3);
    let opts = ListenerOptions {
        max_connections: 100,
        budget: Some(budget.clone()),
    };
    let one = holding(bound().await, opts.clone());
    let two = holding(bound().await, opts);
    let _c1 = TcpStream::connect(one.local_addr()).await.unwrap();
    let _c2 = TcpStream::connect(two.local_addr()).await.unwrap();
    let _c3 = TcpStream::connect(two.local_addr()).await.unwrap();
    assert!(closed_at_once(one.local_addr()).await);
    assert!(closed_at_once(two.local_addr()).await);
    assert_eq!(budget.available(), 0);
    assert_eq!(one.stats().closed_at_cap() + two.stats().closed_at_cap(), 2);
}
