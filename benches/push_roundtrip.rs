//! `push_roundtrip`: `POST /Agent/{id}/$push` with `waitForResponse`, through the relay, over
//! the agent's WebSocket, to an MLLP device and back, on loopback; 1 and 64 concurrent callers;
//! pushes/s and p50/p99.
//!
//! Relay, agent, device and callers share one process and the machine's two cores (a tokio
//! multi-thread runtime), so the callers' HTTP client is counted against us.
//!
//! `cargo bench -p outpost-benches --bench push_roundtrip`; `cargo test --benches` runs a short
//! smoke pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::{Agent, AgentConfig, LogBuffer};
use mllp::{Request, Server, ServerOptions, acks_for};
use relay::{Relay, RelayConfig};
use serde_json::json;

// The allocator the `outpost` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENT: &str = "bench-agent";

struct Setup {
    relay: Relay,
    _agent: Agent,
    _device: Server,
    token: String,
}

async fn setup() -> Setup {
    let device = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        |req: Request| async move {
            for ack in acks_for(&req.message().unwrap(), false) {
                let _ = req.reply(&ack).await;
            }
        },
    )
    .await
    .unwrap();
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".into(),
        ..RelayConfig::default()
    })
    .await
    .unwrap();
    relay
        .registry()
        .bootstrap(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "s1"}},
            {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "s2",
                "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
            {"resource": {"resourceType": "Agent", "id": AGENT, "status": "active"}},
            {"resource": {"resourceType": "Device", "id": "dev", "url": format!("mllp://{}", device.local_addr())}},
        ]})).await
        .unwrap();
    let data = std::env::temp_dir().join(format!("outpost-bench-{}", std::process::id()));
    let agent = Agent::start(
        AgentConfig {
            base_url: relay.base_url(),
            client_id: "agent".into(),
            client_secret: "s2".into(),
            agent_id: AGENT.into(),
            data_dir: data,
            ..AgentConfig::default()
        },
        LogBuffer::new(),
    )
    .await
    .unwrap();
    assert!(agent.wait_live(Duration::from_secs(10)).await);
    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{}oauth2/token", relay.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "caller"),
            ("client_secret", "s1"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Setup {
        relay,
        _agent: agent,
        _device: device,
        token: token["access_token"].as_str().unwrap().to_owned(),
    }
}

/// `callers` tasks push back to back for `duration` (after a warm-up); every answer is checked.
async fn run(s: &Setup, callers: usize, duration: Duration) -> (f64, Duration, Duration, usize) {
    let url = format!("{}fhir/R4/Agent/{AGENT}/$push", s.relay.base_url());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(callers)
        .build()
        .unwrap();
    let template = outpost_benches::adt_a01();
    let start = Arc::new(tokio::sync::Barrier::new(callers));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let (client, url, token, template, start) = (
            client.clone(),
            url.clone(),
            s.token.clone(),
            template.clone(),
            start.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let push = |i: usize| {
                let body = json!({
                    "destination": "Device/dev",
                    "contentType": "x-application/hl7-v2+er7",
                    "body": template.replace("|1698105185516|", &format!("|C{c}N{i}|")),
                    "waitForResponse": true,
                })
                .to_string();
                let req = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/fhir+json")
                    .body(body);
                async move {
                    let resp = req.send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let text = resp.text().await.unwrap();
                    assert!(text.contains(&format!("MSA|AA|C{c}N{i}")), "{text}");
                }
            };
            for i in 0..20 {
                push(i).await;
            }
            start.wait().await;
            let t0 = Instant::now();
            let mut lat = Vec::new();
            let mut i = 1000;
            while t0.elapsed() < duration {
                let t = Instant::now();
                push(i).await;
                lat.push(t.elapsed());
                i += 1;
            }
            (lat, t0.elapsed())
        }));
    }
    let mut all = Vec::new();
    let mut wall = Duration::ZERO;
    for t in tasks {
        let (lat, elapsed) = t.await.unwrap();
        wall = wall.max(elapsed);
        all.extend(lat);
    }
    all.sort();
    let n = all.len();
    (
        n as f64 / wall.as_secs_f64(),
        all[n / 2],
        all[(n * 99) / 100],
        n,
    )
}

/// Medplum's MLLP hop alone (Hl7Client → Hl7Server, sequential): p50 in µs, from the script the
/// `mllp_roundtrip` bench runs.
fn medplum_mllp_p50() -> Result<f64, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = std::env::var("OUTPOST_NODE_MODULES")
        .unwrap_or_else(|_| root.join(".tools/node/node_modules").display().to_string());
    let mut child = std::process::Command::new("node")
        .arg(root.join("benches/medplum_mllp_roundtrip.mjs"))
        .args(["5000", "500"])
        .env("OUTPOST_NODE_MODULES", modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let adt = outpost_benches::adt_a01().replace("|1698105185516|", "|{ID}|");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), adt.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout);
    let at = line
        .find("\"p50_us\":")
        .ok_or(format!("unexpected output: {line}"))?
        + 9;
    line[at..]
        .split([',', '}'])
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("{e}"))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let single = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    if !bench {
        multi().block_on(async {
            let s = setup().await;
            let (rate, p50, _, n) = run(&s, 2, Duration::from_millis(300)).await;
            println!("push_roundtrip smoke: {n} pushes, {rate:.0}/s, p50 {p50:?}");
        });
        return;
    }
    println!(
        "push_roundtrip: $push with waitForResponse, relay → agent (WebSocket) → MLLP device → back, one process"
    );
    println!("| runtime | callers | pushes | pushes/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, rt) in [
        ("tokio, 2 worker threads", multi()),
        ("tokio, 1 thread", single()),
    ] {
        rt.block_on(async {
            let s = setup().await;
            for callers in [1, 64] {
                let (rate, p50, p99, n) = run(&s, callers, Duration::from_secs(10)).await;
                println!(
                    "| {label} | {callers} | {n} | {rate:.0} | {:.0} µs | {:.0} µs |",
                    p50.as_secs_f64() * 1e6,
                    p99.as_secs_f64() * 1e6
                );
            }
        });
    }
    match medplum_mllp_p50() {
        Ok(p50) => println!(
            "reference, same run: Medplum's MLLP hop alone (@medplum/hl7 Hl7Client → Hl7Server) p50 {p50:.0} µs"
        ),
        Err(e) => println!("reference not run: {e}"),
    }
}
