//! `console_pages`: how long the relay's console takes to answer its pages with 1,000 Agents,
//! 100,000 stored inbound messages and 100,000 logged pushes (SQLite in a temporary
//! directory), over HTTP on loopback as a logged-in browser asks. Each page is asked 20 times
//! after 3 warm-ups, in each of 5 runs; the table gives the median of the runs' medians with
//! their range, and each run's 95th percentile at most. The target (issue: the console): every
//! page under 200 ms.
//!
//! `cargo bench -p outpost-benches --bench console_pages` (`OUTPOST_CONSOLE_RUNS`, default 5).
//! `cargo test --benches` runs a smoke pass with 20 Agents and 500 messages.

use std::time::Instant;

use relay::{MessageKeys, NewInbound, PushRecord, Relay, RelayConfig};
use serde_json::{Value, json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const OPERATOR_SECRET: &str = "operator-secret-0123456";

/// The data set: `agents` Agents, `messages` inbound messages and as many pushes.
struct Size {
    agents: usize,
    messages: usize,
    requests: usize,
}

fn bundle(agents: usize) -> Value {
    let mut entry = vec![
        json!({"resource": {"resourceType": "ClientApplication", "id": "operator", "secret": OPERATOR_SECRET}}),
        json!({"resource": {"resourceType": "Endpoint", "id": "in", "status": "active", "address": "mllp://0.0.0.0:0"}}),
        json!({"resource": {"resourceType": "Device", "id": "lis", "url": "mllp://10.0.0.5:2575"}}),
    ];
    for i in 0..agents {
        entry.push(
            json!({"resource": {"resourceType": "Agent", "id": format!("agent-{i}"),
            "name": format!("Site {i}"), "status": "active",
            "identifier": [{"system": "urn:site", "value": format!("site-{i}")}],
            "channel": [{"name": "adt-in", "endpoint": {"reference": "Endpoint/in"}}]}}),
        );
    }
    json!({"resourceType": "Bundle", "type": "collection", "entry": entry})
}

/// Message `i`: an ORU^R01 or an ADT^A01 (alternately), patient `P{i % 1000}`.
fn message(i: usize) -> String {
    let kind = if i.is_multiple_of(2) {
        "ORU^R01"
    } else {
        "ADT^A01"
    };
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||{kind}|CTRL-{i}|P|2.5\rPID|1||P{}^^^HOSP^MR||DOE^JANE\rOBX|1|NM|2345-7^Glucose^LN||{}|mg/dL\r",
        i % 1000,
        70 + i % 50
    )
}

async fn seed(relay: &Relay, size: &Size) {
    relay
        .registry()
        .bootstrap(&bundle(size.agents))
        .await
        .unwrap();
    for i in 0..size.messages {
        relay
            .registry()
            .record_inbound(NewInbound {
                agent_id: format!("agent-{}", i % size.agents),
                channel: "adt-in".into(),
                remote: "10.0.0.9:50000".into(),
                content_type: "x-application/hl7-v2+er7".into(),
                body: message(i),
                callback: format!("cb-{i}"),
            })
            .await
            .unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut batch = Vec::new();
    for i in 0..size.messages {
        let body = message(i);
        batch.push(PushRecord {
            at_ms: now - (size.messages - i) as i64,
            caller: "operator".into(),
            agent_id: format!("agent-{}", i % size.agents),
            destination: "Device/lis".into(),
            content_type: "x-application/hl7-v2+er7".into(),
            outcome: if i.is_multiple_of(50) {
                "timeout"
            } else {
                "answered"
            }
            .into(),
            status: if i.is_multiple_of(50) { 400 } else { 200 },
            latency_us: 300 + (i % 700) as i64,
            keys: MessageKeys::of(&body),
            request_bytes: body.len() as i64,
            request: body,
            answer: format!(
                "MSH|^~\\&|EHR|HOSP|LAB|HOSP|20240101120000||ACK|A{i}|P|2.5\rMSA|AA|CTRL-{i}\r"
            ),
        });
        if batch.len() == 1000 {
            relay
                .registry()
                .record_pushes(std::mem::take(&mut batch))
                .await
                .unwrap();
        }
    }
    if !batch.is_empty() {
        relay.registry().record_pushes(batch).await.unwrap();
    }
}

/// Logs in as the operator; the session cookie.
async fn login(client: &reqwest::Client, base: &str) -> String {
    let page = client
        .get(format!("{base}console/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("outpost_console_login="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf: String = html[at..].chars().take_while(|c| *c != '"').collect();
    let resp = client
        .post(format!("{base}console/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("client_id", "operator"),
            ("client_secret", OPERATOR_SECRET),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("outpost_console="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned()
}

/// The pages measured: (label, path, text the answer must hold).
fn pages(size: &Size) -> Vec<(String, String, String)> {
    let last = size.messages;
    vec![
        (
            format!("fleet ({} agents)", size.agents),
            "console".into(),
            format!("agent-{}", size.agents - 1),
        ),
        (
            "agent page".into(),
            "console/agents/agent-7".into(),
            "adt-in".into(),
        ),
        (
            "inbound, newest 100".into(),
            "console/messages".into(),
            format!("message-{last}"),
        ),
        (
            "inbound by control id".into(),
            format!("console/messages?control_id=CTRL-{}", last / 2),
            format!("message-{}", last / 2 + 1),
        ),
        (
            "inbound by patient id".into(),
            "console/messages?patient_id=P42".into(),
            "P42".into(),
        ),
        (
            "inbound by type (half of all)".into(),
            "console/messages?message_type=ORU%5ER01".into(),
            "ORU^R01".into(),
        ),
        (
            "inbound by agent".into(),
            "console/messages?agent=agent-3".into(),
            "agent-3".into(),
        ),
        (
            "one inbound message".into(),
            format!("console/messages/{}", last / 3),
            "PID-3".into(),
        ),
        (
            "pushes, newest 100".into(),
            "console/pushes".into(),
            "push-".into(),
        ),
        (
            "pushes by outcome".into(),
            "console/pushes?outcome=timeout".into(),
            "timeout (400)".into(),
        ),
        (
            "pushes by type".into(),
            "console/pushes?message_type=ADT".into(),
            "ADT^A01".into(),
        ),
        (
            "one push".into(),
            "console/pushes/5".into(),
            "CTRL-4".into(),
        ),
        (
            "chart data, one day".into(),
            "console/charts/data?range=day".into(),
            "\"p99\"".into(),
        ),
    ]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let size = if bench {
        Size {
            agents: 1000,
            messages: 100_000,
            requests: 20,
        }
    } else {
        Size {
            agents: 20,
            messages: 500,
            requests: 2,
        }
    };
    let runs: usize = if bench {
        std::env::var("OUTPOST_CONSOLE_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    } else {
        1
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("outpost-console-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::start_on(
            listener,
            RelayConfig {
                data_dir: Some(dir.clone()),
                ..RelayConfig::default()
            },
        )
        .await
        .unwrap();
        let started = Instant::now();
        seed(&relay, &size).await;
        eprintln!(
            "console_pages: stored {} agents, {} inbound messages and {} pushes in {:.1} s",
            size.agents,
            size.messages,
            size.messages,
            started.elapsed().as_secs_f64()
        );
        let base = relay.base_url();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let cookie = login(&client, &base).await;
        let pages = pages(&size);
        // Per page: each run's median and 95th percentile, ms.
        let mut medians = vec![Vec::new(); pages.len()];
        let mut p95s = vec![Vec::new(); pages.len()];
        for _ in 0..runs {
            for (i, (label, path, expect)) in pages.iter().enumerate() {
                let mut times = Vec::new();
                for n in 0..size.requests + 3 {
                    let t = Instant::now();
                    let resp = client
                        .get(format!("{base}{path}"))
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    let text = resp.text().await.unwrap();
                    let took = t.elapsed();
                    assert_eq!(status, 200, "{label}: {text}");
                    assert!(text.contains(expect.as_str()), "{label}: no {expect:?} in the answer");
                    if n >= 3 {
                        times.push(took.as_secs_f64() * 1000.0);
                    }
                }
                times.sort_by(f64::total_cmp);
                p95s[i].push(times[(times.len() * 95 / 100).min(times.len() - 1)]);
                medians[i].push(median(&mut times));
            }
        }
        println!(
            "console_pages: {} Agents, {} inbound messages, {} logged pushes (SQLite); each page asked {} times after 3 warm-ups, {} runs; ms, median of the runs' medians [range], and the highest run's 95th percentile.",
            size.agents, size.messages, size.messages, size.requests, runs
        );
        println!();
        println!("| page | median ms [range] | p95 ms (worst run) | under 200 ms |");
        println!("|---|---:|---:|---|");
        for (i, (label, _, _)) in pages.iter().enumerate() {
            let lo = medians[i].iter().copied().fold(f64::INFINITY, f64::min);
            let hi = medians[i].iter().copied().fold(0.0, f64::max);
            let m = median(&mut medians[i].clone());
            let p95 = p95s[i].iter().copied().fold(0.0, f64::max);
            println!(
                "| {label} | {m:.1} [{lo:.1}–{hi:.1}] | {p95:.1} | {} |",
                if p95 < 200.0 { "yes" } else { "**no**" }
            );
        }
        relay.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
