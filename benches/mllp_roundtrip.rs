//! `mllp_roundtrip`: sequential send-and-wait on one connection over loopback, messages/s and
//! p50/p99 latency, beside the same loop through Medplum's own stack (`@medplum/hl7` Hl7Client
//! → Hl7Server) in the same run.
//!
//! Both run client and server in one process on one thread (Node's event loop; a tokio
//! current-thread runtime), so the comparison is like for like. A third row is the floor: the
//! same ping-pong of the same bytes on raw sockets, no framing or HL7; ours and the floor take
//! turns in five rounds. The process uses mimalloc, the allocator the `outpost` binary ships with.
//!
//! `cargo bench -p outpost-benches --bench mllp_roundtrip` (needs `scripts/test` to have installed
//! the Medplum packages under `.tools/node`); `cargo test --benches` runs a short smoke pass of
//! the Rust side only.

use std::time::{Duration, Instant};

// The allocator the `outpost` binary ships with (as in `push_roundtrip`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use mllp::{ClientOptions, Connection, Request, Server, ServerOptions, acks_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Figures {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

fn figures(mut lat: Vec<Duration>) -> Figures {
    let total: Duration = lat.iter().sum();
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64) * q) as usize].as_secs_f64() * 1e6;
    Figures {
        per_second: lat.len() as f64 / total.as_secs_f64(),
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}

fn template() -> String {
    // The example ADT^A01 with a placeholder control ID.
    let adt = outpost_benches::adt_a01();
    let id = hl7v2::Message::parse(adt.as_bytes())
        .unwrap()
        .control_id()
        .text()
        .into_owned();
    adt.replace(&format!("|{id}|"), "|{ID}|")
}

async fn outpost(n: usize, warmup: usize) -> Vec<Duration> {
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        |req: Request| async move {
            for ack in acks_for(&req.message().unwrap(), false) {
                req.reply(&ack).await.unwrap();
            }
        },
    )
    .await
    .unwrap();
    let mut conn = Connection::connect(&server.local_addr().to_string(), ClientOptions::default())
        .await
        .unwrap();
    let template = template();
    let mut lat = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let msg = template.replace("{ID}", &i.to_string());
        let ack = conn.send(msg.as_bytes()).await.unwrap();
        let dt = t0.elapsed();
        assert_eq!(ack.code(), hl7v2::AckCode::AA);
        if i >= warmup {
            lat.push(dt);
        }
    }
    server.shutdown(Duration::from_secs(1)).await;
    lat
}

/// The same bytes bounced on raw sockets: what loopback TCP and the runtime cost by themselves.
async fn floor(n: usize, warmup: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let msg = template().replace("{ID}", "1").into_bytes();
    let reply = vec![b'A'; 120];
    let (mlen, rlen) = (msg.len(), reply.len());
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; mlen];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&reply).await.unwrap();
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; rlen];
    let mut lat = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        c.write_all(&msg).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        if i >= warmup {
            lat.push(t0.elapsed());
        }
    }
    lat
}

fn medplum(n: usize, warmup: usize) -> Result<Figures, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = std::env::var("OUTPOST_NODE_MODULES")
        .unwrap_or_else(|_| root.join(".tools/node/node_modules").display().to_string());
    let mut child = std::process::Command::new("node")
        .arg(root.join("benches/medplum_mllp_roundtrip.mjs"))
        .args([n.to_string(), warmup.to_string()])
        .env("OUTPOST_NODE_MODULES", modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run node: {e}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(template().as_bytes())
        .unwrap();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("node exited with {}", out.status));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| -> f64 {
        let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        line[at..]
            .split([',', '}'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Ok(Figures {
        per_second: num("per_second"),
        p50_us: num("p50_us"),
        p99_us: num("p99_us"),
    })
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if !bench {
        // `cargo test --benches`: a smoke pass that the loop works.
        let f = figures(rt.block_on(outpost(200, 20)));
        assert!(f.per_second > 0.0 && f.p50_us > 0.0);
        println!("mllp_roundtrip smoke: {:.0} msg/s", f.per_second);
        return;
    }
    let (n, warmup) = (20_000, 2_000);
    // Ours and the floor take turns in five rounds, so a change in the machine's load during
    // the run weighs on both alike.
    let rounds = 5;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours.extend(rt.block_on(outpost(n / rounds, warmup / rounds)));
        raw.extend(rt.block_on(floor(n / rounds, warmup / rounds)));
    }
    let (ours, raw) = (figures(ours), figures(raw));
    let theirs = medplum(n, warmup);
    println!(
        "mllp_roundtrip: {n} sequential messages (example ADT^A01, {} bytes) after {warmup} warm-up, one connection, one thread",
        template().len() - 4 + 13
    );
    println!("| implementation | messages/s | p50 | p99 | ours ÷ this (msg/s) |");
    println!("|---|---:|---:|---:|---:|");
    let row = |name: &str, f: &Figures| {
        println!(
            "| {name} | {:.0} | {:.0} µs | {:.0} µs | {:.1}× |",
            f.per_second,
            f.p50_us,
            f.p99_us,
            ours.per_second / f.per_second
        )
    };
    row("outpost-mllp (Connection → Server)", &ours);
    match &theirs {
        Ok(t) => row("@medplum/hl7 5.0.10 (Hl7Client → Hl7Server, Node 20)", t),
        Err(e) => println!("| @medplum/hl7 | not run: {e} | | | |"),
    }
    row("floor: raw tokio sockets, same bytes", &raw);
    println!();
    println!(
        "floor ÷ ours (time per message): {:.2}×",
        raw.per_second / ours.per_second
    );
}
