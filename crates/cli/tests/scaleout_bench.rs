//! Benchmark (run by `scripts/bench-scaleout`, release build only): pushes/s with three relay
//! processes sharing Redis and PostgreSQL against one embedded relay, on the same machine, and the
//! latency the Redis hop adds (a push arriving on a process that does not hold the agent's
//! socket). Every push must come back AA; the figures are printed as `FIGURE` lines.
#![cfg(not(debug_assertions))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::services::{Postgres, Redis};
use support::{Proc, ack_device, outpost, token};

const AGENTS: usize = 3;

fn bundle(dir: &std::path::Path, devices: &[String]) -> std::path::PathBuf {
    let allowed: Vec<Value> = (0..AGENTS)
        .map(|i| json!({"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent", "valueReference": {"reference": format!("Agent/agent-{i}")}}))
        .collect();
    let mut entries = vec![
        json!({"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}}),
        json!({"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456", "extension": allowed}}),
    ];
    for (i, d) in devices.iter().enumerate() {
        entries.push(json!({"resource": {"resourceType": "Agent", "id": format!("agent-{i}"), "name": "a", "status": "active"}}));
        entries.push(json!({"resource": {"resourceType": "Device", "id": format!("dev-{i}"), "url": format!("mllp://{d}")}}));
    }
    let path = dir.join("bundle.json");
    std::fs::write(
        &path,
        json!({"resourceType": "Bundle", "type": "collection", "entry": entries}).to_string(),
    )
    .unwrap();
    path
}

/// `outpost server` on a port of its choosing, with its data under `dir/relay-NAME`; returns
/// it with its base URL.
fn relay(name: &str, dir: &std::path::Path, extra: &[String]) -> (Proc, String) {
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join(format!("relay-{name}")))
        .args(extra);
    let mut p = Proc::spawn("outpost server", cmd);
    let base = p.listening_url(Duration::from_secs(60));
    (p, base)
}

async fn push(client: &reqwest::Client, base: &str, token: &str, agent: usize, id: &str) {
    let body = format!("MSH|^~\\&|EHR|H|LIS|L|20240101120000||ADT^A08|{id}|P|2.5\rPID|1||{id}\r");
    let text = client
        .post(format!("{base}fhir/R4/Agent/agent-{agent}/$push"))
        .bearer_auth(token)
        .json(&json!({"destination": format!("Device/dev-{agent}"), "contentType": "x-application/hl7-v2+er7",
            "body": body, "waitForResponse": true, "waitTimeout": 10000}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(&format!("MSA|AA|{id}")), "{text}");
}

/// Pushes/s with `callers` concurrent callers for `secs`, each push to a rotating agent. With
/// `owner` false the push goes through a rotating relay (two in three cross the Redis hop); with
/// `owner` true through the relay holding the agent's socket (agent i is on relay i).
async fn throughput(
    bases: &[String],
    tokens: &[String],
    callers: usize,
    secs: u64,
    owner: bool,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..callers {
        let (stop, count, bases, tokens) =
            (stop.clone(), count.clone(), bases.to_vec(), tokens.to_vec());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let a = (c * 7 + n) % AGENTS;
                let r = if owner {
                    a % bases.len()
                } else {
                    (c + n) % bases.len()
                };
                push(&client, &bases[r], &tokens[r], a, &format!("T{c}-{n}")).await;
                count.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let start_count = count.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let done = count.load(Ordering::Relaxed) - start_count;
    let rate = done as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    rate
}

/// p50 and p99 of sequential pushes to `agent` through `base`, in µs.
async fn latency(base: &str, token: &str, agent: usize, n: usize) -> (f64, f64) {
    let client = reqwest::Client::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let t0 = Instant::now();
        push(&client, base, token, agent, &format!("L{i}")).await;
        if i >= 200 {
            lat.push(t0.elapsed());
        }
    }
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64) * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

#[test]
fn push_scaleout_figures() {
    let secs = std::env::var("OUTPOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("outpost-scaleout-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    rt.block_on(async {
        let mut devices = Vec::new();
        for _ in 0..AGENTS {
            devices.push(ack_device("127.0.0.1:0", Default::default()).await);
        }
        let addrs: Vec<String> = devices.iter().map(|d| d.local_addr().to_string()).collect();
        let bundle = bundle(&dir, &addrs);
        let start_agents = |bases: Vec<String>, tag: &'static str| {
            let dir = dir.clone();
            async move {
                let mut agents = Vec::new();
                for i in 0..AGENTS {
                    let a = agent_core::Agent::start(
                        agent_core::AgentConfig {
                            base_url: bases[i % bases.len()].clone(),
                            client_id: "agent".into(),
                            client_secret: "agent-secret-0123456".into(),
                            agent_id: format!("agent-{i}"),
                            data_dir: dir.join(format!("{tag}-agent-{i}")),
                            ..agent_core::AgentConfig::default()
                        },
                        agent_core::LogBuffer::new(),
                    )
                    .await
                    .unwrap();
                    assert!(a.wait_live(Duration::from_secs(20)).await);
                    agents.push(a);
                }
                agents
            }
        };

        // One embedded relay (SQLite, no Redis).
        let (one, base1) = relay("one", &dir, &["--bootstrap".into(), bundle.display().to_string()]);
        let agents = start_agents(vec![base1.clone()], "one").await;
        let t1 = token(&base1, "caller", "caller-secret-0123456").await;
        let rate1 = throughput(std::slice::from_ref(&base1), std::slice::from_ref(&t1), 64, secs, false).await;
        let (p50_1, p99_1) = latency(&base1, &t1, 0, 2000).await;
        for a in agents {
            a.shutdown().await;
        }
        drop(one);

        // Three relays on Redis and PostgreSQL; agent i on relay i.
        let redis = Redis::start();
        let pg = Postgres::start();
        let shared = vec!["--redis-url".to_owned(), redis.url(), "--database-url".to_owned(), pg.url()];
        // One relay on Redis and PostgreSQL: what the shared engines cost a single process.
        let (single, base_single) = relay("single", &dir, &[shared.clone(), vec!["--bootstrap".to_owned(), bundle.display().to_string()]].concat());
        let agents = start_agents(vec![base_single.clone()], "single").await;
        let t_single = token(&base_single, "caller", "caller-secret-0123456").await;
        let rate1_shared = throughput(std::slice::from_ref(&base_single), std::slice::from_ref(&t_single), 64, secs, false).await;
        for a in agents {
            a.shutdown().await;
        }
        drop(single);

        let mut relays = Vec::new();
        let mut bases = Vec::new();
        for name in ["three-0", "three-1", "three-2"] {
            let (p, base) = relay(name, &dir, &shared);
            relays.push(p);
            bases.push(base);
        }
        let agents = start_agents(bases.clone(), "three").await;
        let mut tokens = Vec::new();
        for b in &bases {
            tokens.push(token(b, "caller", "caller-secret-0123456").await);
        }
        let rate3 = throughput(&bases, &tokens, 64, secs, false).await;
        let rate3_owner = throughput(&bases, &tokens, 64, secs, true).await;
        // Agent 0 is on relay 0: through relay 0 no hop, through relay 1 the Redis hop.
        let (p50_local, p99_local) = latency(&bases[0], &tokens[0], 0, 2000).await;
        let (p50_hop, p99_hop) = latency(&bases[1], &tokens[1], 0, 2000).await;
        for a in agents {
            a.shutdown().await;
        }
        drop(relays);

        println!("FIGURE: pushes/s, 64 callers: 1 embedded relay {rate1:.0}; 3 relays on Redis+PostgreSQL {rate3:.0} ({:.2}x)", rate3 / rate1);
        println!("FIGURE: pushes/s, 64 callers, 1 relay on Redis+PostgreSQL: {rate1_shared:.0} ({:.2}x)", rate1_shared / rate1);
        println!("FIGURE: pushes/s, 64 callers, 3 relays, each push sent to the process holding the agent (no Redis hop): {rate3_owner:.0} ({:.2}x)", rate3_owner / rate1);
        println!("FIGURE: 1 caller, 1 embedded relay: p50 {p50_1:.0} us, p99 {p99_1:.0} us");
        println!("FIGURE: 1 caller, 3 relays, push to the process holding the agent: p50 {p50_local:.0} us, p99 {p99_local:.0} us");
        println!(
            "FIGURE: 1 caller, 3 relays, push through another process (Redis hop): p50 {p50_hop:.0} us, p99 {p99_hop:.0} us; the hop adds {:.0} us at p50, {:.0} us at p99",
            p50_hop - p50_local,
            p99_hop - p99_local
        );
        for d in devices {
            d.shutdown(Duration::from_millis(100)).await;
        }
    });
    // The relays' databases and the agents' queues: about 40 MB a run.
    let _ = std::fs::remove_dir_all(&dir);
}
