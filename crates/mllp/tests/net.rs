//! Client, pool and server over loopback sockets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hl7v2::{AckCode, AckError, Message, build_ack};
use mllp::{
    ClientOptions, Connection, Error, Framer, Pool, PoolOptions, Request, ReturnAck, SendOptions,
    Server, ServerOptions, ack_options, acks_for, encode_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

const MSG: &[u8] = b"MSH|^~\\&|SND|FAC|RCV|FAC|20240101120000||ADT^A01|CTRL-1|P|2.5\rPID|1||123^^^H^MR||DOE^JOHN\r";

fn msg(id: &str) -> Vec<u8> {
    String::from_utf8_lossy(MSG)
        .replace("CTRL-1", id)
        .into_bytes()
}

async fn ack_server(enhanced: bool) -> Server {
    Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        move |req: Request| async move {
            for ack in acks_for(&req.message().unwrap(), enhanced) {
                req.reply(&ack).await.unwrap();
            }
        },
    )
    .await
    .unwrap()
}

fn addr(s: &Server) -> String {
    s.local_addr().to_string()
}

fn quick() -> ClientOptions {
    ClientOptions {
        ack_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

/// Reads MLLP frames from a raw socket until `n` have arrived.
async fn read_frames(stream: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut framer = Framer::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(f) = framer.decode(&mut buf).unwrap() {
            out.push(f.to_vec());
        }
        if out.len() >= n {
            break;
        }
        let mut chunk = [0u8; 4096];
        let k = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0, "connection closed after {} frames", out.len());
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

fn framed(content: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode_frame(content, &mut b).unwrap();
    b.to_vec()
}

fn msa(frame: &[u8]) -> (String, String, String) {
    let m = Message::parse(frame).unwrap();
    let get = |p: &str| m.get(p).unwrap().text().into_owned();
    (get("MSA-1"), get("MSA-2"), get("MSA-3"))
}

#[tokio::test]
async fn send_and_receive_aa() {
    let server = ack_server(false).await;
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    for i in 0..3 {
        let ack = conn.send(&msg(&format!("ID{i}"))).await.unwrap();
        assert_eq!(ack.code(), AckCode::AA);
        let m = ack.message().unwrap();
        assert_eq!(m.get("MSA-2").unwrap().raw(), format!("ID{i}").as_bytes());
        assert_eq!(m.get("MSH-3").unwrap().raw(), b"RCV"); // sender and receiver swapped
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn lf_terminated_message_goes_out_with_cr() {
    let (server, seen) = common::capturing_receiver().await;
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    let lf = String::from_utf8_lossy(MSG).replace('\r', "\n");
    conn.send(lf.as_bytes()).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0], MSG);
}

#[tokio::test]
async fn ack_is_matched_by_msa2() {
    // A receiver that first acknowledges some other message.
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        |req: Request| async move {
            let m = req.message().unwrap();
            let other = String::from_utf8_lossy(req.bytes()).replace("|CTRL-1|", "|OTHER|");
            let other = Message::parse(other.as_bytes()).unwrap().into_owned();
            req.reply(&build_ack(&other, AckCode::AE, &ack_options(None)))
                .await
                .unwrap();
            req.reply(&build_ack(&m, AckCode::AA, &ack_options(None)))
                .await
                .unwrap();
        },
    )
    .await
    .unwrap();
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    let ack = conn.send(MSG).await.unwrap();
    assert_eq!(ack.code(), AckCode::AA);
}

#[tokio::test]
async fn negative_ack_carries_text_and_err() {
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        |req: Request| async move {
            let m = req.message().unwrap();
            let mut o = ack_options(Some("Unknown patient".into()));
            o.error = Some(AckError::new(204, "PID-3 123 not on file"));
            req.reply(&build_ack(&m, AckCode::AE, &o)).await.unwrap();
        },
    )
    .await
    .unwrap();
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    match conn.send(MSG).await {
        Err(Error::Negative {
            code,
            description,
            ack,
            ..
        }) => {
            assert_eq!(code, AckCode::AE);
            assert_eq!(description, "AE: Unknown patient: PID-3 123 not on file");
            assert!(ack.starts_with(b"MSH|"));
        }
        other => panic!("expected a negative ack, got {other:?}"),
    }
    // the connection stays usable after a NAK
    assert!(conn.is_reusable());
}

#[tokio::test]
async fn return_ack_first_or_application() {
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        |req: Request| async move {
            let m = req.message().unwrap();
            req.reply(&build_ack(&m, AckCode::CA, &ack_options(None)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            req.reply(&build_ack(&m, AckCode::AA, &ack_options(None)))
                .await
                .unwrap();
        },
    )
    .await
    .unwrap();
    let mut opts = quick();
    let mut conn = Connection::connect(&addr(&server), opts.clone())
        .await
        .unwrap();
    let first = conn.send(MSG).await.unwrap();
    assert_eq!(first.code(), AckCode::CA);
    drop(conn); // the AA is still coming on that connection
    opts.return_ack = ReturnAck::Application;
    let mut conn = Connection::connect(&addr(&server), opts).await.unwrap();
    let app = conn.send(MSG).await.unwrap();
    assert_eq!(app.code(), AckCode::AA);
    assert!(app.commit().is_some());
}

#[tokio::test]
async fn silent_receiver_times_out() {
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        |_req: Request| async {},
    )
    .await
    .unwrap();
    let opts = ClientOptions {
        ack_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let mut conn = Connection::connect(&addr(&server), opts).await.unwrap();
    let t = Instant::now();
    let err = conn.send(MSG).await.unwrap_err();
    assert!(matches!(err, Error::AckTimeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no acknowledgement for message CTRL-1 within 200 ms"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn refused_connection_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Connection::connect(&format!("127.0.0.1:{port}"), quick())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn message_without_control_id_is_refused_before_sending() {
    let server = ack_server(false).await;
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    let err = conn
        .send(b"MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingControlId));
    assert!(matches!(
        conn.send(b"not hl7").await.unwrap_err(),
        Error::Hl7(_)
    ));
}

#[tokio::test]
async fn garbage_gets_ar_and_the_connection_goes_on() {
    let server = ack_server(false).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut bytes = framed(b"this is not hl7");
    bytes.extend(framed(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X9|P|2.5\rpid|bad\r"));
    bytes.extend(framed(MSG));
    s.write_all(&bytes).await.unwrap();
    let replies = read_frames(&mut s, 3).await;
    let (code, _, text) = msa(&replies[0]);
    assert_eq!(
        (code.as_str(), text.as_str()),
        (
            "AR",
            "no MSH segment at byte 0: message must start with \"MSH\""
        )
    );
    let (code, id, text) = msa(&replies[1]);
    assert_eq!(
        (code.as_str(), id.as_str()),
        ("AR", "X9"),
        "header still answered: {text}"
    );
    assert!(text.starts_with("invalid segment name"), "{text}");
    assert_eq!(msa(&replies[2]).0, "AA");
}

/// ERR-3-1 (table 0357 code) and ERR-8 of a reject.
fn err(frame: &[u8]) -> (String, String) {
    let m = Message::parse(frame).unwrap();
    let get = |p: &str| m.get(p).unwrap().text().into_owned();
    (get("ERR-3-1"), get("ERR-8"))
}

#[tokio::test]
async fn rejects_name_the_message_and_the_fault() {
    let server = ack_server(false).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut bytes = Vec::new();
    // MSH-2 of two characters: the header does not parse, its control ID can still be read.
    bytes.extend(framed(
        b"MSH|^~|LAB|NORTH|EHR|CLINIC|20240105||ORU^R01|CTRL0009|P|2.5\rPID|1\r",
    ));
    // MSH-1 and MSH-2 missing
    bytes.extend(framed(b"MSH"));
    // not HL7 at all
    bytes.extend(framed(b"this is not hl7"));
    // a segment ID that is not one, after a good header
    bytes.extend(framed(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X9|P|2.5\rpid|bad\r"));
    // three encoding characters are fine
    bytes.extend(framed(b"MSH|^~\\|A|B|C|D|1||ADT^A01|X3|P|2.3\rPID|1\r"));
    s.write_all(&bytes).await.unwrap();
    let r = read_frames(&mut s, 5).await;

    let (code, id, text) = msa(&r[0]);
    assert_eq!((code.as_str(), id.as_str()), ("AR", "CTRL0009"));
    assert!(
        text.contains("MSH-2 must have 3 to 5 encoding characters"),
        "{text}"
    );
    let (code, detail) = err(&r[0]);
    assert_eq!(code, "102", "data type error");
    assert_eq!(detail, text);
    assert!(r[0].starts_with(b"MSH|^~\\&|EHR|CLINIC|LAB|NORTH|"));

    assert_eq!(err(&r[1]).0, "101", "required field missing");
    assert_eq!(msa(&r[1]).1, "");

    let (code, detail) = err(&r[2]);
    assert_eq!(code, "100");
    assert_eq!(
        detail,
        "no MSH segment at byte 0: message must start with \"MSH\""
    );

    assert_eq!(msa(&r[3]).1, "X9");
    assert_eq!(err(&r[3]).0, "100");

    let (code, id, _) = msa(&r[4]);
    assert_eq!((code.as_str(), id.as_str()), ("AA", "X3"));
    assert!(
        r[4].starts_with(b"MSH|^~\\|C|D|A|B|"),
        "the ACK echoes MSH-2"
    );
}

#[tokio::test]
async fn oversized_frame_gets_ar_then_recovery() {
    let opts = ServerOptions {
        max_frame: 1024,
        ..ServerOptions::default()
    };
    let server = Server::bind("127.0.0.1:0", opts, |req: Request| async move {
        for ack in acks_for(&req.message().unwrap(), false) {
            req.reply(&ack).await.unwrap();
        }
    })
    .await
    .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut big = MSG.to_vec();
    big.extend(vec![b'X'; 4096]);
    let mut bytes = framed(&big);
    bytes.extend(framed(MSG));
    s.write_all(&bytes).await.unwrap();
    let replies = read_frames(&mut s, 2).await;
    let (code, _, text) = msa(&replies[0]);
    assert_eq!(code, "AR");
    assert!(text.starts_with("frame too large: "), "{text}");
    assert_eq!(err(&replies[0]).0, "207", "the receiver's limit");
    assert_eq!(msa(&replies[1]).0, "AA");
}

#[tokio::test]
async fn pipelined_messages_are_answered_in_order() {
    let server = ack_server(false).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.extend(framed(&msg(&format!("P{i}"))));
    }
    s.write_all(&bytes).await.unwrap();
    let replies = read_frames(&mut s, 5).await;
    let ids: Vec<String> = replies.iter().map(|r| msa(r).1).collect();
    assert_eq!(ids, ["P0", "P1", "P2", "P3", "P4"]);
}

#[tokio::test]
async fn enhanced_mode_acks() {
    let server = ack_server(true).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&framed(MSG)).await.unwrap();
    assert_eq!(msa(&read_frames(&mut s, 1).await[0]).0, "CA");
    // MSH-15 AL, MSH-16 AL: commit then application ack, whatever the server flag says
    let both = String::from_utf8_lossy(MSG).replace("|P|2.5", "|P|2.5|||AL|AL");
    let plain = ack_server(false).await;
    let mut s = TcpStream::connect(plain.local_addr()).await.unwrap();
    s.write_all(&framed(both.as_bytes())).await.unwrap();
    let r = read_frames(&mut s, 2).await;
    assert_eq!((msa(&r[0]).0, msa(&r[1]).0), ("CA".into(), "AA".into()));
}

#[test]
fn acks_for_never_means_no_answer() {
    let ne = String::from_utf8_lossy(MSG).replace("|P|2.5", "|P|2.5|||NE|NE");
    let m = Message::parse(ne.as_bytes()).unwrap();
    assert!(acks_for(&m, false).is_empty());
    assert!(acks_for(&m, true).is_empty());
    let er = String::from_utf8_lossy(MSG).replace("|P|2.5", "|P|2.5|||AL|ER");
    let m = Message::parse(er.as_bytes()).unwrap();
    let acks = acks_for(&m, false);
    assert_eq!(acks.len(), 1);
    assert_eq!(msa(&acks[0]).0, "CA");
}

#[tokio::test]
async fn latin1_bytes_pass_through() {
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s2 = seen.clone();
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        move |req: Request| {
            let seen = s2.clone();
            async move {
                let m = req.message().unwrap();
                *seen.lock().unwrap() = m
                    .get("PID-5-1")
                    .unwrap()
                    .text_as(hl7v2::Charset::Latin1)
                    .into_owned();
                for ack in acks_for(&m, false) {
                    req.reply(&ack).await.unwrap();
                }
            }
        },
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(MSG).replace("DOE", "MÜLLER");
    let wire = hl7v2::Charset::Latin1.encode(&text).into_owned();
    assert!(wire.contains(&0xDC));
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    conn.send(&wire).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), "MÜLLER");
}

#[tokio::test]
async fn pool_reuses_caps_and_reconnects() {
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (o2, p2) = (open.clone(), peak.clone());
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        move |req: Request| {
            let (open, peak) = (o2.clone(), p2.clone());
            async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                for ack in acks_for(&req.message().unwrap(), false) {
                    req.reply(&ack).await.unwrap();
                }
            }
        },
    )
    .await
    .unwrap();
    let pool = Pool::new(PoolOptions {
        max_per_destination: 2,
        keep_alive: true,
        ..PoolOptions::default()
    });
    let a = addr(&server);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (pool, a) = (pool.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            pool.send(&a, &msg(&format!("C{i}")), SendOptions::default())
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().code(), AckCode::AA);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "at most two messages in flight to one destination"
    );
    assert_eq!(pool.idle_connections(&a), 2);
    assert_eq!(pool.connections(), 2, "two idle, none held by a send");

    // The peer restarts: idle connections are dead, and the next send reconnects.
    let port = server.local_addr().port();
    server.shutdown(Duration::from_secs(1)).await;
    let again = Server::bind(
        &format!("127.0.0.1:{port}"),
        ServerOptions::default(),
        |req: Request| async move {
            for ack in acks_for(&req.message().unwrap(), false) {
                req.reply(&ack).await.unwrap();
            }
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ack = pool
        .send(&a, &msg("AFTER"), SendOptions::default())
        .await
        .unwrap();
    assert_eq!(ack.code(), AckCode::AA);
    again.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_clients() {
    let server = ack_server(false).await;
    let mut idle = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut conn = Connection::connect(&addr(&server), quick()).await.unwrap();
    conn.send(MSG).await.unwrap();
    let t = Instant::now();
    server.shutdown(Duration::from_secs(30)).await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t.elapsed()
    );
    let mut b = [0u8; 1];
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), idle.read(&mut b))
            .await
            .unwrap()
            .unwrap(),
        0
    );
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn trickling_sender_is_cut_off() {
    let opts = ServerOptions {
        frame_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = Server::bind("127.0.0.1:0", opts, |_req: Request| async {})
        .await
        .unwrap();
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&[0x0B]).await.unwrap();
    let t = Instant::now();
    // One byte every 50 ms keeps the socket busy, but the frame never ends.
    let closed = loop {
        if s.write_all(b"x").await.is_err() {
            break true;
        }
        let mut b = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            break true;
        }
        if t.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(closed, "server kept a connection whose frame never ended");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let opts = ServerOptions {
        max_connections: 1,
        ..ServerOptions::default()
    };
    let server = Server::bind("127.0.0.1:0", opts, |req: Request| async move {
        for ack in acks_for(&req.message().unwrap(), false) {
            req.reply(&ack).await.unwrap();
        }
    })
    .await
    .unwrap();
    let mut first = Connection::connect(&addr(&server), quick()).await.unwrap();
    first.send(MSG).await.unwrap();
    let mut second = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the second connection should be closed");
    // the first one still works
    first.send(&msg("STILL")).await.unwrap();
}

#[tokio::test]
async fn a_send_deadline_covers_waiting_for_a_pooled_connection() {
    // A device that takes 600 ms per message, one connection allowed.
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        move |req: Request| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(600)).await;
                for ack in acks_for(&req.message().unwrap(), false) {
                    let _ = req.reply(&ack).await;
                }
            }
        },
    )
    .await
    .unwrap();
    let pool = Pool::new(PoolOptions {
        client: quick(),
        max_per_destination: 1,
        ..PoolOptions::default()
    });
    let a = addr(&server);
    let first = {
        let (pool, a) = (pool.clone(), a.clone());
        tokio::spawn(async move { pool.send(&a, &msg("FIRST"), SendOptions::default()).await })
    };
    while seen.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The second waits for the only connection and gives up at its deadline, unsent.
    let t = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    let err = pool
        .send_by(&a, &msg("SECOND"), deadline, SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotSent { .. }), "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(first.await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the expired message was not sent"
    );
    // On the wire, the deadline bounds the wait for the ACK too.
    let t = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let err = pool
        .send_by(&a, &msg("THIRD"), deadline, SendOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AckTimeout { .. }), "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}
