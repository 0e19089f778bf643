//! Sender and receiver of this crate over real sockets: whole writes, and bytes trickled one at
//! a time through a relay in between.

use std::time::Duration;

use astm::{Connection, LinkOptions, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn opts(role: Role) -> LinkOptions {
    LinkOptions {
        role,
        ..LinkOptions::default()
    }
}

fn message(n: usize) -> Vec<u8> {
    let mut m = b"H|\\^&|||Analyzer^1.0\r".to_vec();
    m.extend_from_slice(b"P|1||PID1||Doe^John\rO|1|S1||^^^CBC|R\r");
    for i in 0..n {
        m.extend_from_slice(format!("R|{i}|^^^T{i}|{i}.5|g/dL|1-9|N||F\r").as_bytes());
    }
    m.extend_from_slice(format!("C|1|I|{}|G\r", "W".repeat(500)).as_bytes());
    m.extend_from_slice(b"L|1|N\r");
    m
}

/// Copies bytes from one socket to the other, one byte per write, both ways.
async fn trickle(a: TcpStream, b: TcpStream) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let one_way = |mut r: tokio::net::tcp::OwnedReadHalf,
                   mut w: tokio::net::tcp::OwnedWriteHalf| async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            for byte in &buf[..n] {
                if w.write_all(std::slice::from_ref(byte)).await.is_err() {
                    return;
                }
                w.flush().await.ok();
            }
        }
    };
    tokio::join!(one_way(ar, bw), one_way(br, aw));
}

async fn pair(trickled: bool) -> (Connection<TcpStream>, Connection<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    if !trickled {
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        return (
            Connection::new(a.unwrap(), opts(Role::Instrument)),
            Connection::new(b.unwrap().0, opts(Role::Computer)),
        );
    }
    // instrument ⇄ [trickling relay] ⇄ computer
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr2 = l2.local_addr().unwrap();
    let (a, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (relay_out, computer) = tokio::join!(TcpStream::connect(addr2), l2.accept());
    tokio::spawn(trickle(accepted.unwrap().0, relay_out.unwrap()));
    (
        Connection::new(a.unwrap(), opts(Role::Instrument)),
        Connection::new(computer.unwrap().0, opts(Role::Computer)),
    )
}

#[tokio::test]
async fn messages_cross_a_socket_whole_and_trickled() {
    for trickled in [false, true] {
        let (mut instrument, mut computer) = pair(trickled).await;
        let msgs = [message(3), message(12), message(0)];
        let expected = msgs.clone();
        let sender = tokio::spawn(async move {
            for m in &msgs {
                instrument.send(m).await.unwrap();
            }
            instrument
        });
        for want in &expected {
            let got = tokio::time::timeout(Duration::from_secs(20), computer.next_message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(&got, want, "trickled: {trickled}");
        }
        let instrument = sender.await.unwrap();
        assert_eq!(instrument.link().stats().retransmissions, 0);
        assert_eq!(computer.link().stats().frames_refused, 0);
    }
}

#[tokio::test]
async fn both_directions_on_one_connection() {
    let (mut instrument, mut computer) = pair(false).await;
    let results = message(2);
    let order = astm::example_cbc_order("20240101120000");
    let r2 = results.clone();
    let t = tokio::spawn(async move {
        instrument.send(&r2).await.unwrap();
        let got = instrument.next_message().await.unwrap().unwrap();
        (instrument, got)
    });
    assert_eq!(computer.next_message().await.unwrap().unwrap(), results);
    computer.send(&order).await.unwrap();
    let (_, got) = t.await.unwrap();
    assert_eq!(got, order);
}

#[tokio::test]
async fn peer_that_never_answers_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, silent) = tokio::join!(TcpStream::connect(addr), l.accept());
    let mut conn = Connection::new(
        a.unwrap(),
        LinkOptions {
            establish_timeout: Duration::from_millis(100),
            busy_backoff: Duration::from_millis(50),
            max_establish_attempts: 2,
            ..opts(Role::Computer)
        },
    );
    let err = conn.send(&message(1)).await.unwrap_err();
    assert_eq!(err.to_string(), "no answer from the receiver within 100 ms");
    drop(silent);
}

#[tokio::test]
async fn peer_that_closes_is_reported() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    drop(b);
    let mut conn = Connection::new(a.unwrap(), opts(Role::Computer));
    assert!(matches!(
        conn.send(&message(1)).await,
        Err(astm::Error::Closed | astm::Error::Io(_))
    ));
}
