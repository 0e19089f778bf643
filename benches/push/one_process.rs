//! The one-process shape: relay, agent, MLLP device and reqwest callers on one tokio runtime
//! (two worker threads, or one thread), so the callers' HTTP client is counted against us. CPU
//! per push is the whole process's (`/proc/self/stat`) over the measured window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::{Agent, AgentConfig, LogBuffer};
use mllp::{Request, Server, ServerOptions, acks_for};
use relay::{Relay, RelayConfig};

use super::loadgen::acknowledges;
use super::stats::{Spread, count, cpu, cpu_micros, micros};
use super::{AGENT, WARMUP, bootstrap_bundle, push_body_template};

/// Relay, agent and device running in this process.
pub struct Setup {
    relay: Relay,
    agent: Agent,
    device: Server,
    token: String,
    dir: std::path::PathBuf,
}

impl Setup {
    /// Starts the device, the relay (bootstrapped from a Bundle file) and the agent; waits until
    /// the agent is connected; takes the caller's token.
    pub async fn start(tag: &str) -> Setup {
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
        let dir =
            std::env::temp_dir().join(format!("outpost-push-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("bundle.json");
        let device_addr = device.local_addr().to_string();
        std::fs::write(&bundle, bootstrap_bundle(&device_addr).to_string()).unwrap();
        let relay = Relay::start(RelayConfig {
            listen: "127.0.0.1:0".into(),
            bootstrap: Some(bundle),
            ..RelayConfig::default()
        })
        .await
        .unwrap();
        let agent = Agent::start(
            AgentConfig {
                base_url: relay.base_url(),
                client_id: "agent".into(),
                client_secret: "agent-secret-0123456".into(),
                agent_id: AGENT.into(),
                data_dir: dir.join("agent"),
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
                ("client_secret", "caller-secret-0123456"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Setup {
            relay,
            agent,
            device,
            token: token["access_token"].as_str().unwrap().to_owned(),
            dir,
        }
    }

    /// Stops everything and removes the agent's data.
    pub async fn stop(self) {
        self.agent.shutdown().await;
        self.relay.shutdown().await;
        self.device.shutdown(Duration::from_secs(1)).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The figures of one measured window.
#[derive(Clone, Debug)]
pub struct Figures {
    pub pushes: usize,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU µs of the whole process per push.
    pub cpu_us: f64,
}

/// `callers` tasks push back to back for `window` after [`WARMUP`] pushes each; every answer
/// is checked for the device's AA to that push's control ID.
pub async fn run(s: &Setup, callers: usize, window: Duration) -> Figures {
    let url = format!("{}fhir/R4/Agent/{AGENT}/$push", s.relay.base_url());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(callers)
        .build()
        .unwrap();
    let template = Arc::new(push_body_template());
    let start = Arc::new(tokio::sync::Barrier::new(callers + 1));
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
            let push = |id: String| {
                let req = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/fhir+json")
                    .body(template.replace("{ID}", &id));
                async move {
                    let resp = req.send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let text = resp.text().await.unwrap();
                    assert!(acknowledges(&text, &id), "{text}");
                }
            };
            for i in 0..WARMUP {
                push(format!("W{c}N{i}")).await;
            }
            start.wait().await;
            let t0 = Instant::now();
            let mut lat = Vec::new();
            let mut i = 0;
            while t0.elapsed() < window {
                let t = Instant::now();
                push(format!("C{c}N{i}")).await;
                lat.push(t.elapsed());
                i += 1;
            }
            (lat, Instant::now())
        }));
    }
    start.wait().await;
    let (t0, cpu0) = (Instant::now(), cpu_micros(std::process::id()));
    let mut all = Vec::new();
    let mut end = t0;
    for t in tasks {
        let (lat, finished) = t.await.unwrap();
        end = end.max(finished);
        all.extend(lat);
    }
    let cpu1 = cpu_micros(std::process::id());
    all.sort();
    let n = all.len();
    let at = |q: f64| all[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e6;
    Figures {
        pushes: n,
        per_second: n as f64 / (end - t0).as_secs_f64(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        cpu_us: (cpu1 - cpu0) / n as f64,
    }
}

/// Prints the table: one row per (runtime, callers), medians over the runs with their range.
pub fn report(rows: &[(String, usize, Vec<Figures>)]) {
    println!("| runtime | callers | pushes/s | p50 | p99 | process CPU/push |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (runtime, callers, runs) in rows {
        let of = |f: fn(&Figures) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
        println!(
            "| {runtime} | {callers} | {} | {} | {} | {} |",
            of(|f| f.per_second).show(count),
            of(|f| f.p50_us).show(micros),
            of(|f| f.p99_us).show(micros),
            of(|f| f.cpu_us).show(cpu),
        );
    }
}
