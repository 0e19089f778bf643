//! Checking a configuration before it bites, and answers scripts can read: `server --check`,
//! `agent --check`, `--json` on `push`, `hl7 send`, `dicom echo` and `dicom store`, the exit
//! code for refused credentials, dcmtk's option spellings. Each test runs the binary.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{ClosedPort, Proc, ack_device, outpost, run, scratch};

const WAIT: Duration = Duration::from_secs(60);
const ALLOWED: &str = "https://outpost.health/fhir/StructureDefinition/allowed-agent";
const ADT: &str =
    "MSH|^~\\&|EHR|HOSP|LIS|LAB|20240101120000||ADT^A01|CJ-1|P|2.5\rPID|1||PID-1||Doe^Jane\r";

fn bundle(device: &str, channels: &[(&str, &str)]) -> Value {
    let mut entries = vec![
        json!({"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}}),
        json!({"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": ALLOWED, "valueReference": {"reference": "Agent/site"}}]}}),
        json!({"resource": {"resourceType": "Device", "id": "lis", "url": format!("mllp://{device}")}}),
    ];
    let mut refs = Vec::new();
    for (name, address) in channels {
        refs.push(json!({"name": name, "endpoint": {"reference": format!("Endpoint/{name}")}}));
        entries.push(json!({"resource": {"resourceType": "Endpoint", "id": name, "status": "active", "address": address}}));
    }
    entries.push(json!({"resource": {"resourceType": "Agent", "id": "site", "name": "Site", "status": "active", "channel": refs}}));
    json!({"resourceType": "Bundle", "type": "collection", "entry": entries})
}

/// A relay on a port of its choosing with `bundle`; returns it and its base URL.
fn relay(dir: &std::path::Path, bundle: &Value) -> (Proc, String) {
    support::relay_process(dir, bundle, &[])
}

/// `outpost agent --check` against `base` as client `agent` with `secret`.
fn agent_check(base: &str, secret: &str) -> (i32, String, String) {
    let mut cmd = outpost();
    cmd.args([
        "agent",
        "--check",
        "--base-url",
        base,
        "--client-id",
        "agent",
    ])
    .args(["--client-secret", secret, "--agent-id", "site"]);
    run("outpost agent --check", cmd, WAIT)
}

#[test]
fn server_check_names_every_problem_and_starts_nothing() {
    let dir = scratch("server-check");
    std::fs::write(
        dir.join("good.json"),
        bundle("127.0.0.1:2575", &[("adt", "mllp://0.0.0.0:2575")]).to_string(),
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--check", "--listen", "127.0.0.1:1", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("good.json"));
    let (code, out, err) = run("outpost server --check", cmd, WAIT);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "OK: the relay would start with these settings\n");
    assert!(!dir.join("relay").exists(), "--check stores nothing");

    let mut bad = bundle(
        "127.0.0.1:2575",
        &[
            ("adt", "mllp://0.0.0.0:2575"),
            ("images", "dicom://0.0.0.0:11112?cert=/c.pem&key=/k.pem"),
        ],
    );
    bad["entry"][2]["resource"]["url"] = "mlp://127.0.0.1:2575".into();
    bad["entry"].as_array_mut().unwrap().push(
        json!({"resource": {"resourceType": "Agent", "id": "site", "channel": [{"name": "x", "endpoint": {"reference": "Endpoint/none"}}]}}),
    );
    std::fs::write(dir.join("bad.json"), bad.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--check", "--listen", "nowhere", "--data"])
        .arg(dir.join("relay"))
        .args(["--inbound-webhook", "ftp://x/"])
        .arg("--bootstrap")
        .arg(dir.join("bad.json"));
    let (code, out, err) = run("outpost server --check", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines.iter().all(|l| l.starts_with("problem: ")), "{out}");
    assert!(
        lines[0].contains("--listen nowhere: expected HOST:PORT"),
        "{out}"
    );
    assert!(
        lines[1].contains("--inbound-webhook: expected a http:// or https:// URL"),
        "{out}"
    );
    assert!(
        lines[2].contains("Device/lis: url \"mlp://127.0.0.1:2575\": unknown scheme mlp://"),
        "{out}"
    );
    assert!(
        lines[3].contains("Endpoint/images: address")
            && lines[3].contains("cert= is for TLS channels: add tls=true"),
        "{out}"
    );
    assert!(lines[4].contains("Agent/site again"), "{out}");
    assert!(
        lines[5].contains("Agent/site channel x: Endpoint/none is not an Endpoint in the bundle"),
        "{out}"
    );
}

#[test]
fn agent_check_reads_the_relay_and_names_what_would_stop_a_channel() {
    let dir = scratch("agent-check");
    // Two channels on one port, which the agent cannot open both of.
    let (_relay, base) = relay(
        &dir,
        &bundle(
            "127.0.0.1:2575",
            &[
                ("adt", "mllp://0.0.0.0:41000"),
                ("lab", "astm://0.0.0.0:41000"),
            ],
        ),
    );
    let props = dir.join("agent.properties");
    std::fs::write(
        &props,
        format!("baseUrl={base}\nclientId=agent\nclientSecret=agent-secret-0123456\nagentId=site\nlogger.logDir=/var/log\n"),
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.args(["agent", "--check", "--config"]).arg(&props);
    let (code, out, err) = run("outpost agent --check", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("line 5: logger.logDir is not a key Outpost reads"),
        "{out}"
    );
    assert!(
        out.contains("problem: channels adt and lab share port 41000"),
        "{out}"
    );
    assert!(!dir.join("agent-queue.sqlite").exists());

    // The same from flags: each channel listed, the clash again.
    let (code, out, err) = agent_check(&base, "agent-secret-0123456");
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("channel adt: mllp://0.0.0.0:41000"), "{out}");

    // Refused credentials: exit 4; nobody there: exit 3.
    let (code, out, err) = agent_check(&base, "wrong");
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("problem: relay: login failed"), "{out}");
    let nobody = ClosedPort::new();
    let (code, out, err) = agent_check(
        &format!("http://{}/", nobody.addr()),
        "agent-secret-0123456",
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("problem: cannot reach the relay"), "{out}");
}

#[test]
fn agent_check_names_a_missing_endpoint_and_checks_the_other_channels() {
    let dir = scratch("agent-check-missing-endpoint");
    let mut b = bundle(
        "127.0.0.1:2575",
        &[("adt", "mllp://0.0.0.0:0"), ("raw", "tcp://0.0.0.0:0")],
    );
    // A channel whose Endpoint the relay does not have, before the others.
    let agent = b["entry"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["resource"]["resourceType"] == "Agent")
        .unwrap();
    agent["resource"]["channel"].as_array_mut().unwrap().insert(
        0,
        json!({"name": "ghost", "endpoint": {"reference": "Endpoint/nope"}}),
    );
    let (_relay, base) = relay(&dir, &b);
    let (code, out, err) = agent_check(&base, "agent-secret-0123456");
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("problem: channel ghost: cannot read Endpoint/nope: HTTP 404"),
        "{out}"
    );
    // ...and went on: the other channels listed, the next one's problem named.
    assert!(out.contains("channel adt: mllp://0.0.0.0:0"), "{out}");
    assert!(
        out.contains("problem: channel raw: tcp:// channels need startChar"),
        "{out}"
    );
}

#[test]
fn server_check_names_two_channels_of_one_agent_on_one_port_or_with_one_name() {
    let dir = scratch("server-check-clash");
    let mut b = bundle(
        "127.0.0.1:2575",
        &[
            ("adt", "mllp://0.0.0.0:57002"),
            ("lab", "astm://0.0.0.0:57002"),
        ],
    );
    let agent = b["entry"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["resource"]["resourceType"] == "Agent")
        .unwrap();
    agent["resource"]["channel"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "adt", "endpoint": {"reference": "Endpoint/adt"}}));
    std::fs::write(dir.join("clash.json"), b.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--check", "--listen", "127.0.0.1:1", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("clash.json"));
    let (code, out, err) = run("outpost server --check", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("problem: ")
            && out.contains("Agent/site: channels adt and lab share port 57002"),
        "{out}"
    );
    assert!(
        out.contains("Agent/site: two channels are named adt"),
        "{out}"
    );
}

#[test]
fn agent_check_passes_a_clean_configuration() {
    let dir = scratch("agent-check-ok");
    let (_relay, base) = relay(
        &dir,
        &bundle("127.0.0.1:2575", &[("adt", "mllp://0.0.0.0:0")]),
    );
    let (code, out, err) = agent_check(&base, "agent-secret-0123456");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("channel adt: mllp://0.0.0.0:0"), "{out}");
    assert!(
        out.contains("OK: logged in, 1 channel(s) would start"),
        "{out}"
    );
}

#[test]
fn agent_check_reads_a_tls_channels_certificate_files() {
    let dir = scratch("agent-check-tls");
    let missing = dir.join("no-such-cert.pem");
    let missing = missing.display();
    let dicom = format!("dicom://0.0.0.0:0?tls=true&cert={missing}&key={missing}");
    let mllps = format!("mllps://0.0.0.0:0?cert={missing}&key={missing}");
    let (_relay, base) = relay(
        &dir,
        &bundle(
            "127.0.0.1:2575",
            &[("images", dicom.as_str()), ("results", mllps.as_str())],
        ),
    );
    let (code, out, err) = agent_check(&base, "agent-secret-0123456");
    assert_eq!(code, 2, "{out}{err}");
    for channel in ["images", "results"] {
        assert!(
            out.lines().any(|l| l.starts_with("problem: ")
                && l.contains(channel)
                && l.contains("no-such-cert.pem")),
            "{channel}: {out}"
        );
    }
    assert!(!out.contains("would start"), "{out}");
}

#[test]
fn push_and_hl7_send_answer_scripts_in_json() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let device = rt.block_on(ack_device("127.0.0.1:0", Arc::new(Mutex::new(Vec::new()))));
    let addr = device.local_addr().to_string();
    let dir = scratch("push-json");
    let (_relay, base) = relay(&dir, &bundle(&addr, &[]));
    let mut cmd = outpost();
    cmd.args(["agent", "--base-url", &base, "--client-id", "agent"])
        .args([
            "--client-secret",
            "agent-secret-0123456",
            "--agent-id",
            "site",
            "--data-dir",
        ])
        .arg(dir.join("agent"));
    let mut agent = Proc::spawn("outpost agent", cmd);
    agent.wait_for("Connected to the relay.", WAIT);
    let push = |secret: &str| {
        let mut cmd = outpost();
        cmd.args([
            "push",
            "site",
            "--destination",
            "Device/lis",
            "--body",
            ADT,
            "--wait",
            "--json",
        ])
        .args([
            "--base-url",
            &base,
            "--client-id",
            "caller",
            "--client-secret",
            secret,
        ]);
        run("outpost push --json", cmd, WAIT)
    };
    let (code, out, err) = push("caller-secret-0123456");
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "answered", "{v}");
    assert_eq!(v["destination"], "Device/lis");
    assert!(v["body"].as_str().unwrap().contains("MSA|AA|CJ-1"), "{v}");
    let (code, out, err) = push("wrong-secret");
    assert_eq!(
        code, 4,
        "refused credentials have their own exit code: {out}{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"], "unauthorized", "{v}");
    assert!(v["error"].as_str().unwrap().contains("login failed"), "{v}");

    // hl7 send --json, to the device and to nobody.
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = outpost();
    cmd.args(["hl7", "send", host, port, ADT, "--json"]);
    let (code, out, err) = run("outpost hl7 send --json", cmd, WAIT);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["ok"].clone(),
            v["ackCode"].clone(),
            v["controlId"].clone()
        ),
        (json!(true), json!("AA"), json!("CJ-1")),
        "{v}"
    );
    assert!(v["ack"].as_str().unwrap().starts_with("MSH|"), "{v}");
    let nobody = ClosedPort::new();
    let mut cmd = outpost();
    cmd.args([
        "hl7",
        "send",
        "127.0.0.1",
        &nobody.port().to_string(),
        ADT,
        "--json",
    ]);
    let (code, out, err) = run("outpost hl7 send --json", cmd, WAIT);
    assert_eq!(code, 3, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1"), "{v}");
}

#[test]
fn dicom_echo_and_store_in_json_with_dcmtk_spellings() {
    let dir = scratch("dicom-json");
    let mut cmd = outpost();
    cmd.args([
        "dicom",
        "listen",
        "0",
        "--bind",
        "127.0.0.1",
        "--ae-title",
        "PACS",
        "--output-dir",
    ])
    .arg(dir.join("in"));
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut scp = Proc::spawn("outpost dicom listen", cmd);
    let line = scp.wait_for("Listening on ", WAIT);
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .unwrap()
        .to_owned();
    // dcmtk's -aec / -aet, as echoscu takes them.
    let echo = |called: &str| {
        let mut cmd = outpost();
        cmd.args([
            "dicom",
            "echo",
            "-aet",
            "ME",
            "-aec",
            called,
            "127.0.0.1",
            &port,
            "--json",
        ]);
        run("outpost dicom echo --json", cmd, WAIT)
    };
    let (code, out, err) = echo("PACS");
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["ok"].clone(),
            v["status"].clone(),
            v["calledAeTitle"].clone()
        ),
        (json!(true), json!("0x0000"), json!("PACS")),
        "{v}"
    );
    let (code, out, err) = echo("WRONG");
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("called AE title not recognized"),
        "{v}"
    );

    // store --json: one object, a result per file.
    let file = support::repo().join("crates/dicom-net/tests/cases/08-odd-pixel.dcm");
    let missing = dir.join("missing.dcm");
    std::fs::write(&missing, b"not dicom").unwrap();
    let mut cmd = outpost();
    cmd.args([
        "dicom",
        "store",
        "-aec",
        "PACS",
        "127.0.0.1",
        &port,
        "--json",
    ])
    .arg(&file)
    .arg(&missing);
    let (code, out, err) = run("outpost dicom store --json", cmd, WAIT);
    assert_eq!(code, 1, "one file is not DICOM: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["stored"].clone(), v["failed"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );
    let of = |name: &str| {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"].as_str().unwrap().ends_with(name))
            .cloned()
            .unwrap_or_else(|| panic!("no result for {name}: {v}"))
    };
    let stored = of("08-odd-pixel.dcm");
    assert_eq!(stored["outcome"], "stored", "{v}");
    assert_eq!(stored["status"], "0x0000", "{v}");
    assert_eq!(
        stored["sopInstanceUid"], "2.25.3141592653589793238462643383279",
        "{v}"
    );
    let failed = of("missing.dcm");
    assert_eq!(failed["outcome"], "failed", "{v}");
    assert!(failed["error"].as_str().is_some(), "{v}");
}

#[test]
fn the_relay_logs_each_push_as_json_and_counts_it_in_metrics() {
    let dir = scratch("log-json");
    std::fs::write(
        dir.join("bundle.json"),
        bundle("127.0.0.1:2575", &[]).to_string(),
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info")
        .args([
            "--log-format",
            "json",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = relay.listening_url(WAIT);
    // No agent is connected: the relay refuses the push at once (a 400 saying so).
    let mut cmd = outpost();
    cmd.args([
        "push",
        "site",
        "--destination",
        "Device/lis",
        "--body",
        ADT,
        "--wait",
    ])
    .args([
        "--base-url",
        &base,
        "--client-id",
        "caller",
        "--client-secret",
        "caller-secret-0123456",
    ]);
    let (code, out, err) = run("outpost push", cmd, WAIT);
    assert_eq!(code, 3, "nobody answered: {out}{err}");
    assert!(err.contains("Agent/site is not connected"), "{err}");
    let line = relay.wait_for("\"outcome\":\"unavailable\"", WAIT);
    let json_text = line.split_once("] ").map_or(line.as_str(), |(_, j)| j);
    let v: Value = serde_json::from_str(json_text).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "push", "{v}");
    assert_eq!(v["fields"]["agent"], "site", "{v}");
    assert_eq!(v["fields"]["client"], "caller", "{v}");
    assert!(
        v["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("not connected"),
        "{v}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async {
        reqwest::get(format!("{base}metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        text.contains("outpost_pushes_total{outcome=\"unavailable\"} 1"),
        "{text}"
    );
}

#[test]
fn bad_input_to_hl7_print_and_send_exits_two() {
    let dir = scratch("hl7-input");
    let two = dir.join("two.hl7");
    std::fs::write(&two, "MSH|^|A\r").unwrap();
    for args in [
        vec![
            "hl7".to_owned(),
            "print".into(),
            dir.join("missing.hl7").display().to_string(),
        ],
        vec!["hl7".to_owned(), "print".into(), two.display().to_string()],
        vec![
            "hl7".to_owned(),
            "send".into(),
            "127.0.0.1".into(),
            "9".into(),
            ADT.into(),
            "--encoding".into(),
            "bogus".into(),
        ],
        vec![
            "hl7".to_owned(),
            "send".into(),
            "127.0.0.1".into(),
            "9".into(),
            "--file".into(),
            dir.join("missing.hl7").display().to_string(),
        ],
    ] {
        let mut cmd = outpost();
        cmd.args(&args);
        let (code, out, err) = run("outpost hl7", cmd, WAIT);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}
