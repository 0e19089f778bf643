//! `astm`: E1381 frame encode/decode throughput, and the link's round trip per frame over
//! loopback (stop-and-wait: one frame, one ACK): this crate's sender to this crate's receiver,
//! to the Python receivers the interop tests run (labmcp-astm-lis, python-astm 0.5.0; each in
//! its own process, every message counted there), and to this crate's receiver with each frame
//! written in two calls and Nagle's algorithm on.
//!
//! `cargo bench -p outpost-benches --bench astm` (the Python peers from `scripts/install-peers`);
//! `cargo test --benches` runs each once.

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use astm::frame::{decode_frame, frames};
use astm::{Connection, LinkOptions, Role};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

fn results_message(n: usize) -> Vec<u8> {
    let mut m = b"H|\\^&|||Analyzer^1.0|||||LIS||P|LIS2-A2|20240101120000\rP|1||PID1||Doe^John||19800101|M\rO|1|S1||^^^CBC|R\r".to_vec();
    for i in 0..n {
        m.extend_from_slice(format!("R|{}|^^^T{i}^Test number {i}|{i}.5|g/dL|1.0-9.9|N||F||OPERATOR||20240101120000|ANALYZER-1\r", i + 1).as_bytes());
    }
    m.extend_from_slice(b"L|1|N\r");
    m
}

fn frame_codec(c: &mut Criterion) {
    let msg = results_message(50);
    let encoded = frames(&msg);
    let wire: usize = encoded.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("astm_frame");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function(BenchmarkId::new("encode", "50_results"), |b| {
        b.iter(|| frames(black_box(&msg)))
    });
    g.throughput(Throughput::Bytes(wire as u64));
    g.bench_function(BenchmarkId::new("decode", "50_results"), |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|f| decode_frame(black_box(f)).map_or(0, |f| f.text.len()))
                .sum::<usize>()
        })
    });
    g.finish();
}

/// A Python ASTM receiver in its own process (`scripts/peers/astm_*_count.py`): prints
/// `listening PORT`, then `MESSAGE <records> …` for each message it has taken; stopped when
/// dropped.
struct PythonPeer {
    name: &'static str,
    child: Child,
    port: u16,
    /// Whole messages taken with the expected number of records.
    whole: Arc<AtomicUsize>,
    /// Anything else the peer reported (a message cut short or flagged incomplete).
    other: Arc<AtomicUsize>,
}

impl PythonPeer {
    /// `venv_var` (or `.tools/python/<default_venv>`) is the peer's virtualenv; each message
    /// sent has `records` records.
    fn start(
        name: &'static str,
        (venv_var, default_venv, script): (&str, &str, &str),
        records: usize,
    ) -> PythonPeer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let venv = std::env::var_os(venv_var)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".tools/python").join(default_venv));
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/install-peers (the ASTM peers)",
            python.display()
        );
        let shim = std::env::var_os("OUTPOST_PYSHIM")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("scripts/peers/pyshim"));
        let mut child = Command::new(python)
            .arg(root.join("scripts/peers").join(script))
            .env("PYTHONPATH", shim)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.strip_prefix("listening ")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} did not start listening"));
        let (whole, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (w, o) = (whole.clone(), other.clone());
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut words = line.split_whitespace();
                if words.next() != Some("MESSAGE") {
                    continue;
                }
                let n: Option<usize> = words.next().and_then(|n| n.parse().ok());
                if n == Some(records) && words.next() != Some("incomplete") {
                    w.fetch_add(1, Ordering::SeqCst);
                } else {
                    o.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        PythonPeer {
            name,
            child,
            port,
            whole,
            other,
        }
    }

    /// Checks that the peer took `sent` whole messages and nothing else (waiting up to 30 s
    /// for the last).
    fn check_received(&self, sent: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.whole.load(Ordering::SeqCst) < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            (
                self.whole.load(Ordering::SeqCst),
                self.other.load(Ordering::SeqCst)
            ),
            (sent, 0),
            "{}: whole messages taken, other reports",
            self.name
        );
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream that writes each buffer in two calls, its first half and then the rest, as a
/// sender that writes a frame's head and tail separately would.
struct TwoWrites<S> {
    io: S,
    split_next: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for TwoWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TwoWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = if self.split_next && buf.len() > 1 {
            buf.len() / 2
        } else {
            buf.len()
        };
        let r = Pin::new(&mut self.io).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(_)) = r {
            self.split_next = n == buf.len();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn sender_options() -> LinkOptions {
    LinkOptions {
        role: Role::Instrument,
        ..LinkOptions::default()
    }
}

/// A connected loopback pair: (sender side, receiver side), the receiver with `TCP_NODELAY`.
async fn loopback_pair(sender_nodelay: bool) -> (TcpStream, TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    a.set_nodelay(sender_nodelay).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// Sends `msg` to our own receiver `iters` times; each message must arrive whole.
async fn to_our_receiver<S: AsyncRead + AsyncWrite + Unpin>(
    sender: &mut Connection<S>,
    receiver: &mut Connection<TcpStream>,
    msg: &[u8],
    iters: u64,
) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        let (sent, got) = tokio::join!(sender.send(msg), receiver.next_message());
        sent.unwrap();
        assert_eq!(got.unwrap().unwrap().len(), msg.len());
    }
    t.elapsed()
}

fn link_roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let msg = results_message(20);
    let n_frames = frames(&msg).len() as u64;
    let input = format!("{n_frames}_frames");
    let mut g = c.benchmark_group("astm_link_roundtrip");
    g.throughput(Throughput::Elements(n_frames));

    // This crate's link to this crate's receiver, each frame in one write, TCP_NODELAY.
    let (mut sender, mut receiver) = rt.block_on(async {
        let (a, b) = loopback_pair(true).await;
        (
            Connection::new(a, sender_options()),
            Connection::new(
                b,
                LinkOptions {
                    role: Role::Computer,
                    ..LinkOptions::default()
                },
            ),
        )
    });
    g.bench_function(BenchmarkId::new("outpost-receiver", &input), |b| {
        b.iter_custom(|iters| rt.block_on(to_our_receiver(&mut sender, &mut receiver, &msg, iters)))
    });

    // The Python receivers, each in its own process, fed by this crate's link.
    g.sample_size(20);
    let records = msg.split(|&b| b == b'\r').filter(|r| !r.is_empty()).count();
    for (id, peer) in [
        (
            "labmcp-astm-lis-receiver",
            ("OUTPOST_LABMCP", "labmcp", "astm_labmcp_count.py"),
        ),
        (
            "python-astm-0.5.0-receiver",
            ("OUTPOST_PYASTM", "astm050", "astm_pyastm_count.py"),
        ),
    ] {
        let peer = PythonPeer::start(id, peer, records);
        let mut sender = rt.block_on(async {
            let s = TcpStream::connect(("127.0.0.1", peer.port)).await.unwrap();
            s.set_nodelay(true).unwrap();
            Connection::new(s, sender_options())
        });
        let mut sent = 0usize;
        g.bench_function(BenchmarkId::new(id, &input), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        sender.send(&msg).await.unwrap();
                    }
                    sent += iters as usize;
                    t.elapsed()
                })
            })
        });
        peer.check_received(sent);
    }

    // What writing a frame in two calls costs without TCP_NODELAY: Nagle's algorithm holds the
    // second write until the receiver acknowledges the first, which it delays.
    let (mut sender, mut receiver) = rt.block_on(async {
        let (a, b) = loopback_pair(false).await;
        (
            Connection::new(
                TwoWrites {
                    io: a,
                    split_next: true,
                },
                sender_options(),
            ),
            Connection::new(
                b,
                LinkOptions {
                    role: Role::Computer,
                    ..LinkOptions::default()
                },
            ),
        )
    });
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(12));
    g.bench_function(
        BenchmarkId::new("outpost-receiver-two-writes-nagle", &input),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(to_our_receiver(&mut sender, &mut receiver, &msg, iters))
            })
        },
    );
    g.finish();
}

criterion_group!(benches, frame_codec, link_roundtrip);
criterion_main!(benches);
