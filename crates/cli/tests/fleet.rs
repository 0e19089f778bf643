//! `outpost fleet status|stats|logs|reload|ping|upgrade` against a real relay (`outpost
//! server`) and a real agent (`outpost agent --metrics-listen`), each command as a table and as
//! `--json`; the relay's `$stats` and `$fetch-logs` (with `limit`, in the query or a POST
//! body) with that agent connected; and the agent's Prometheus endpoint, scraped before and
//! after a device message.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Proc, ack_device, outpost, relay_process, scratch};

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "fleet-a";
const ASLEEP: &str = "fleet-b";
const CALLER_SECRET: &str = "caller-secret-0123456";

fn bundle(device_port: u16) -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": CALLER_SECRET}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Lab", "status": "active",
            "channel": [{"name": "in", "endpoint": {"reference": "Endpoint/in"}}]}},
        {"resource": {"resourceType": "Agent", "id": ASLEEP, "name": "Ward", "status": "active"}},
        {"resource": {"resourceType": "Endpoint", "id": "in", "status": "active", "address": "mllp://127.0.0.1:0"}},
        {"resource": {"resourceType": "Device", "id": "dev", "url": format!("mllp://127.0.0.1:{device_port}")}},
    ]})
}

/// `outpost fleet ARGS` against `base`: (exit code, stdout, stderr).
fn fleet(base: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = outpost();
    cmd.arg("fleet")
        .args(args)
        .args(["--base-url", base, "--client-id", "caller"])
        .env("MEDPLUM_CLIENT_SECRET", CALLER_SECRET);
    support::run("outpost fleet", cmd, WAIT)
}

/// `outpost fleet ARGS --json`, parsed.
fn fleet_json(base: &str, args: &[&str]) -> (i32, Vec<Value>) {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = fleet(base, &all);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v.as_array().cloned().unwrap_or_default())
}

/// A plain HTTP GET or POST on `addr` (`host:port`): (status, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("caller:{CALLER_SECRET}"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // A chunked body: drop the chunk sizes (the bodies here are single JSON or text values).
    let body = if out
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, c)| c)
            .collect()
    } else {
        body.to_owned()
    };
    (status, body)
}

/// Sends one HL7 message over MLLP to `port` and returns the ACK.
fn mllp_send(port: u16, control_id: &str) -> String {
    let msg = format!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{control_id}|P|2.5\rPID|1||42\r"
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&[0x0b]).unwrap();
    s.write_all(msg.as_bytes()).unwrap();
    s.write_all(&[0x1c, 0x0d]).unwrap();
    let mut ack = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != 0x1c {
        ack.push(b[0]);
    }
    String::from_utf8_lossy(&ack)
        .trim_start_matches('\x0b')
        .to_owned()
}

/// The value of the sample `name` (with its labels exactly as written) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn fleet_commands_read_the_relay_and_the_agent_serves_metrics() {
    let dir = scratch("fleet");
    // The device pushes go to.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let device = rt.block_on(ack_device("127.0.0.1:0", seen.clone()));
    let device_port = device.local_addr().port();
    let (_relay, base) = relay_process(&dir, &bundle(device_port), &[]);
    let relay_addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();

    // Before the agent connects: status says so (exit 1), stats gets no answer (exit 3).
    let (code, rows) = fleet_json(&base, &["status", AGENT]);
    assert_eq!(code, 1, "{rows:?}");
    assert_eq!(rows[0]["connectionStatus"], "unknown", "never connected");

    let mut cmd = outpost();
    cmd.args([
        "agent",
        "--base-url",
        &base,
        "--client-id",
        "agent",
        "--agent-id",
        AGENT,
    ])
    .arg("--data-dir")
    .arg(dir.join("agent"))
    .args(["--metrics-listen", "127.0.0.1:0"])
    .env("MEDPLUM_CLIENT_SECRET", "agent-secret-0123456")
    .env("RUST_LOG", "info");
    let mut agent = Proc::spawn("outpost agent", cmd);
    let line = agent.wait_for("Metrics listening on ", WAIT);
    let metrics_url = line.rsplit(' ').next().unwrap().trim().to_owned();
    let metrics_addr = metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let port = agent.channel_port("in", WAIT);
    agent.wait_for("Connected to the relay.", WAIT);

    // The agent's metrics: names per Prometheus's conventions, connected, nothing counted yet.
    let (status, before) = http(&metrics_addr, "GET", "/metrics", None);
    assert_eq!(status, 200, "{before}");
    assert_eq!(sample(&before, "outpost_agent_relay_connected"), Some(1.0));
    let received = r#"outpost_agent_messages_total{channel="in",outcome="received"}"#;
    assert_eq!(sample(&before, received), None, "{before}");

    // A device message, and a push to the device: both counted, and timed.
    let ack = mllp_send(port, "FLEET1");
    assert!(
        ack.contains("MSA|AA|FLEET1") || ack.contains("MSA|CA|FLEET1"),
        "{ack}"
    );
    let mut push = outpost();
    push.args([
        "push",
        AGENT,
        "--destination",
        "Device/dev",
        "--wait",
        "--base-url",
        &base,
    ])
    .args(["--client-id", "caller", "--client-secret", CALLER_SECRET])
    .args([
        "--body",
        "MSH|^~\\&|EHR|HOSP|LAB|HOSP|20240101120000||ORM^O01|PUSH1|P|2.5\rPID|1||42\r",
    ]);
    let (code, out, err) = support::run("outpost push", push, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    let after = rt.block_on(support::wait_until(
        "the message counted as sent",
        WAIT,
        || {
            let (_, text) = http(&metrics_addr, "GET", "/metrics", None);
            let sent = r#"outpost_agent_messages_total{channel="in",outcome="sent"}"#;
            async move { (sample(&text, sent) == Some(1.0)).then_some(text) }
        },
    ));
    // Names per Prometheus's conventions (a family shows once it has a sample).
    for name in [
        "# TYPE outpost_agent_messages counter",
        "# TYPE outpost_agent_pushes counter",
        "# TYPE outpost_agent_push_duration_seconds histogram",
        "# TYPE outpost_agent_queue_depth gauge",
        "# TYPE outpost_agent_relay_connected gauge",
    ] {
        assert!(after.contains(name), "{name} missing:\n{after}");
    }
    assert_eq!(
        sample(&after, r#"outpost_agent_queue_depth{channel="in"}"#),
        Some(0.0),
        "{after}"
    );
    assert_eq!(sample(&after, received), Some(1.0), "{after}");
    assert_eq!(
        sample(&after, r#"outpost_agent_pushes_total{outcome="answered"}"#),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "outpost_agent_push_duration_seconds_count"),
        Some(1.0),
        "{after}"
    );

    // The relay's $stats: Medplum's shape, the channel's and the device's round trips.
    let (status, body) = http(
        &relay_addr,
        "GET",
        &format!("/fhir/R4/Agent/{AGENT}/$stats"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["parameter"][0]["name"], "stats");
    let stats: Value =
        serde_json::from_str(v["parameter"][0]["valueString"].as_str().unwrap()).unwrap();
    assert_eq!(stats["live"], true);
    // Medplum's link fields: nothing waits to be written, at most the heartbeat of this
    // period unanswered, a round trip once a heartbeat was answered; the push's device
    // connection counted while the pool holds it.
    assert_eq!(stats["webSocketQueueDepth"], 0, "{stats}");
    assert!(
        stats["outstandingHeartbeats"]
            .as_u64()
            .is_some_and(|n| n <= 1),
        "{stats}"
    );
    assert!(
        stats["ping"].is_null() || stats["ping"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{stats}"
    );
    assert!(
        stats["hl7ClientCount"].as_u64().is_some_and(|n| n <= 1),
        "{stats}"
    );
    assert_eq!(stats["channelStats"]["in"]["received"], 1);
    assert_eq!(stats["channelStats"]["in"]["sent"], 1);
    assert_eq!(stats["channelStats"]["in"]["rtt"]["count"], 1);
    let remote = format!("mllp://127.0.0.1:{device_port}");
    assert_eq!(stats["clientStats"][&remote]["rtt"]["count"], 1, "{stats}");
    assert!(
        stats["clientStats"][&remote]["rtt"]["p99"]
            .as_f64()
            .unwrap()
            >= 0.0
    );

    // $fetch-logs pages with `limit`, in the query or in a POST body.
    let (status, body) = http(
        &relay_addr,
        "GET",
        &format!("/fhir/R4/Agent/{AGENT}/$fetch-logs?limit=2"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .lines()
            .count(),
        2
    );
    let params = r#"{"resourceType":"Parameters","parameter":[{"name":"limit","valueInteger":3}]}"#;
    let (status, body) = http(
        &relay_addr,
        "POST",
        &format!("/fhir/R4/Agent/{AGENT}/$fetch-logs"),
        Some(params),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .lines()
            .count(),
        3
    );
    let (status, body) = http(
        &relay_addr,
        "GET",
        &format!("/fhir/R4/Agent/{AGENT}/$fetch-logs?limit=many"),
        None,
    );
    assert_eq!(status, 400, "{body}");

    // status: table and JSON; every Agent when none is named.
    let (code, out, err) = fleet(&base, &["status"]);
    assert_eq!(code, 1, "the second agent never connected: {out}\n{err}");
    assert!(out.starts_with("AGENT"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(AGENT) && l.contains("connected")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(ASLEEP) && l.contains("unknown")),
        "{out}"
    );
    let (code, rows) = fleet_json(&base, &["status", "Agent?name=Lab"]);
    assert_eq!(code, 0, "{rows:?}");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], AGENT);
    assert_eq!(rows[0]["connectionStatus"], "connected");
    assert_eq!(rows[0]["outcome"], "ok");

    // stats
    let (code, out, err) = fleet(&base, &["stats", AGENT]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("CHANNEL") && out.contains("REMOTE") && out.contains(&remote),
        "{out}"
    );
    let (code, rows) = fleet_json(&base, &["stats", &format!("Agent/{AGENT}")]);
    assert_eq!(code, 0, "{rows:?}");
    assert_eq!(rows[0]["stats"]["channelStats"]["in"]["sent"], 1);
    // An agent that is not connected gives no answer.
    let (code, rows) = fleet_json(&base, &["stats", ASLEEP]);
    assert_eq!(code, 3, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "no-answer");

    // logs
    let (code, out, err) = fleet(&base, &["logs", AGENT, "--limit", "3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.starts_with(AGENT)), "{out}");
    let (code, rows) = fleet_json(&base, &["logs", AGENT, "--limit", "2"]);
    assert_eq!(code, 0);
    assert_eq!(rows[0]["logs"].as_array().unwrap().len(), 2);
    assert!(rows[0]["logs"][0]["msg"].is_string());

    // reload
    let (code, out, err) = fleet(&base, &["reload", AGENT]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(AGENT) && l.ends_with("ok")),
        "{out}"
    );
    let (code, rows) = fleet_json(&base, &["reload", AGENT, ASLEEP]);
    assert_eq!(code, 3, "{rows:?}");
    assert_eq!(rows.len(), 2);
    let by = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by(AGENT)["outcome"], "ok");
    assert_eq!(by(ASLEEP)["outcome"], "no-answer");

    // ping: the agent answers with the system ping's output, or says why it could not run it;
    // either way the answer came from the agent. An agent that is not connected: exit 3.
    let (code, out, err) = fleet(&base, &["ping", AGENT]);
    assert!(code == 0 || code == 1, "{out}\n{err}");
    assert!(
        out.starts_with(&format!("{AGENT} (Lab): ping 127.0.0.1")),
        "{out}"
    );
    let (code, rows) = fleet_json(&base, &["ping", AGENT]);
    assert!(code == 0 || code == 1, "{rows:?}");
    assert_eq!(rows[0]["host"], "127.0.0.1");
    assert!(
        rows[0]["output"].is_string()
            || rows[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("ping")),
        "{rows:?}"
    );
    let (code, rows) = fleet_json(&base, &["ping", ASLEEP]);
    assert_eq!(code, 3, "{rows:?}");

    // upgrade without a release registered on the relay: refused, and the command says so
    // (exit 1). tests/upgrade.rs upgrades for real.
    let (code, out, err) = fleet(&base, &["upgrade", AGENT]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("no agent release registered"), "{out}");
    let (code, rows) = fleet_json(&base, &["upgrade", AGENT]);
    assert_eq!(code, 1);
    assert_eq!(rows[0]["outcome"], "negative");

    // Usage, unknown agents and credentials.
    let (code, _, err) = fleet(&base, &["status", "Device/x"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = fleet(&base, &["status", "no-such-agent"]);
    assert_eq!(code, 2, "{err}");
    let mut cmd = outpost();
    cmd.args([
        "fleet",
        "status",
        "--base-url",
        &base,
        "--client-id",
        "caller",
        "--client-secret",
        "wrong-secret-0123456",
    ]);
    let (code, _, err) = support::run("outpost fleet", cmd, WAIT);
    assert_eq!(code, 4, "{err}");
    drop(device);
}
