//! The load generator of the four-process shape (`push_roundtrip --role loadgen`): `callers`
//! tasks, each on its own kept-alive HTTP/1.1 connection, push the example ADT^A01 with
//! `waitForResponse` back to back and check that each answer is 200 with the device's AA for
//! that push's own control ID.
//!
//! It talks to the bench on stdin/stdout, one line each way, so the bench can read every
//! process's CPU time exactly around the measured window:
//! `READY` (token taken, agent connected, warm-up done) ← `GO` → measured window → `DONE` ←
//! `REPORT` → one JSON line of figures. Runs on one thread (a tokio current-thread runtime).

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::sync::{mpsc, watch};

use super::http::{self, Http};
use super::{AGENT, WARMUP, push_body_template};

/// What the bench asks of one load generator.
pub struct Options {
    /// The relay's base URL (`http://127.0.0.1:PORT/`).
    pub base_url: String,
    /// Concurrent callers.
    pub callers: usize,
    /// Length of the measured window.
    pub window: Duration,
    /// Prefix of the control IDs, unique per load generator.
    pub tag: String,
}

impl Options {
    /// Reads `--base-url U --callers N --window-ms MS --tag T` from the arguments.
    pub fn from_args(args: &[String]) -> Options {
        let get = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .unwrap_or_else(|| panic!("loadgen: {name} is missing"))
                .clone()
        };
        Options {
            base_url: get("--base-url"),
            callers: get("--callers").parse().expect("--callers"),
            window: Duration::from_millis(get("--window-ms").parse().expect("--window-ms")),
            tag: get("--tag"),
        }
    }

    /// The arguments [`Options::from_args`] reads.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--base-url".into(),
            self.base_url.clone(),
            "--callers".into(),
            self.callers.to_string(),
            "--window-ms".into(),
            self.window.as_millis().to_string(),
            "--tag".into(),
            self.tag.clone(),
        ]
    }
}

fn read_stdin_line() -> String {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .expect("loadgen: stdin");
    line.trim().to_owned()
}

/// Runs the load generator; figures go to stdout as described in the module docs.
pub fn main(opts: Options) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(opts));
}

struct Push {
    http: Http,
    auth: String,
    path: String,
    template: Arc<String>,
}

impl Push {
    /// One push with `id` as its control ID; checks the answer.
    async fn once(&mut self, id: &str) -> Result<(), String> {
        let body = self.template.replace("{ID}", id);
        let answer = self
            .http
            .request(
                Method::POST,
                &self.path,
                &[
                    ("authorization", &self.auth),
                    ("content-type", "application/fhir+json"),
                ],
                body,
            )
            .await?;
        let text = answer.text();
        if answer.status != 200 || !acknowledges(&text, id) {
            return Err(format!("push {id}: {} {text}", answer.status));
        }
        Ok(())
    }
}

/// Whether `ack` holds `MSA|AA|<id>` with nothing more to the control ID.
pub fn acknowledges(ack: &str, id: &str) -> bool {
    let needle = format!("MSA|AA|{id}");
    ack.match_indices(&needle)
        .any(|(at, _)| !ack[at + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric()))
}

async fn wait_connected(base_url: &str, auth: &str) -> Result<(), String> {
    let mut http = Http::connect(base_url).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = format!("/fhir/R4/Agent/{AGENT}/$status");
    loop {
        let answer = http
            .request(
                Method::GET,
                &path,
                &[("authorization", auth)],
                String::new(),
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        if v["parameter"][0]["valueCode"] == "connected" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the agent did not connect within 30 s: {v}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(opts: Options) {
    let token = http::token(&opts.base_url, "caller", "caller-secret-0123456")
        .await
        .expect("loadgen: token");
    let auth = format!("Bearer {token}");
    wait_connected(&opts.base_url, &auth)
        .await
        .expect("loadgen: agent");
    let template = Arc::new(push_body_template());
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(opts.callers);
    let (go_tx, go_rx) = watch::channel::<Option<Instant>>(None);
    let mut callers = Vec::new();
    for c in 0..opts.callers {
        let mut push = Push {
            http: Http::connect(&opts.base_url)
                .await
                .expect("loadgen: connect"),
            auth: auth.clone(),
            path: format!("/fhir/R4/Agent/{AGENT}/$push"),
            template: template.clone(),
        };
        let (ready, mut go, tag) = (ready_tx.clone(), go_rx.clone(), opts.tag.clone());
        callers.push(tokio::spawn(async move {
            for i in 0..WARMUP {
                push.once(&format!("{tag}W{c}N{i}")).await?;
            }
            let _ = ready.send(()).await;
            let deadline = loop {
                if let Some(at) = *go.borrow_and_update() {
                    break at;
                }
                go.changed().await.map_err(|e| e.to_string())?;
            };
            let mut lat = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                push.once(&format!("{tag}C{c}N{i}")).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            Ok::<_, String>((lat, Instant::now()))
        }));
    }
    drop(ready_tx);
    for _ in 0..opts.callers {
        ready_rx.recv().await.expect("loadgen: a caller failed");
    }
    println!("READY");
    let go = tokio::task::spawn_blocking(read_stdin_line).await.unwrap();
    assert_eq!(go, "GO", "loadgen: expected GO");
    let t0 = Instant::now();
    let _ = go_tx.send(Some(t0 + opts.window));
    let mut all = Vec::new();
    let mut end = t0;
    for c in callers {
        let (lat, finished) = c.await.expect("loadgen: caller").expect("loadgen");
        all.extend(lat);
        end = end.max(finished);
    }
    let secs = (end - t0).as_secs_f64();
    println!("DONE {}", all.len());
    let report = tokio::task::spawn_blocking(read_stdin_line).await.unwrap();
    assert_eq!(report, "REPORT", "loadgen: expected REPORT");
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "{}",
        serde_json::json!({
            "pushes": all.len(),
            "secs": secs,
            "p50_us": at(0.5).as_secs_f64() * 1e6,
            "p99_us": at(0.99).as_secs_f64() * 1e6,
            "sent_total": all.len() + opts.callers * WARMUP,
        })
    );
}
