//! What a new user hit in the first hour (issue 23): flags silently ignored, answers that said
//! less than they seemed to, errors that hid their cause. Each test runs the binary and checks
//! stdout, stderr and the exit code.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{ClosedPort, Proc, ack_device, medplum, outpost, run, scratch};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn agent_flag_disagreeing_with_an_implicit_properties_file_is_refused() {
    let dir = scratch("implicit-props");
    std::fs::write(
        dir.join("agent.properties"),
        "baseUrl=http://127.0.0.1:9/\nclientId=agent\nclientSecret=file-secret\nagentId=file-agent\n",
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.current_dir(&dir)
        .args(["agent", "--agent-id", "flag-agent"]);
    let (code, out, err) = run("outpost agent", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--agent-id flag-agent disagrees with agentId=file-agent")
            && err.contains("agent.properties"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    // A secret is never echoed, even when it disagrees.
    let mut cmd = outpost();
    cmd.current_dir(&dir)
        .args(["agent", "--client-secret", "flag-secret"]);
    let (code, out, err) = run("outpost agent", cmd, WAIT);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--client-secret differs from clientSecret"),
        "{err}"
    );
    assert!(
        !err.contains("file-secret") && !err.contains("flag-secret"),
        "{err}"
    );
}

#[test]
fn a_bootstrap_device_with_an_unknown_scheme_stops_the_relay_naming_it() {
    let dir = scratch("bootstrap-scheme");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Agent", "id": "a", "name": "A", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "lis", "url": "mlp://127.0.0.1:56000"}},
    ]});
    std::fs::write(dir.join("bundle.json"), bundle.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"));
    let (code, out, err) = run("outpost server", cmd, WAIT);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("bundle.json")
            && err.contains("Device/lis: url \"mlp://127.0.0.1:56000\": unknown scheme mlp://"),
        "{err}"
    );
    assert!(!out.contains("Relay listening"), "{out}");
}

const ADT: &str =
    "MSH|^~\\&|EHR|HOSP|LIS|LAB|20240101120000||ADT^A01|FH-1|P|2.5\rPID|1||PID-1||Doe^Jane\r";

/// A relay and an agent `site-a` (identifier `urn:site|lab-1`) with three devices: `lis`, an
/// acknowledging MLLP device, `down`, a closed port, and `silent`, which accepts connections and
/// never answers.
struct Site {
    /// The agent's PATH: empty unless a test puts a program there.
    bin: std::path::PathBuf,
    _rt: tokio::runtime::Runtime,
    _device: mllp::Server,
    _nak: mllp::Server,
    _down: ClosedPort,
    relay: Proc,
    agent: Proc,
    base: String,
}

fn site(label: &str) -> Site {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let device = rt.block_on(ack_device("127.0.0.1:0", Arc::new(Mutex::new(Vec::new()))));
    let nak = rt.block_on(nak_device());
    let dir = scratch(label);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    // A device that is down: its port refuses connections for as long as the site lives.
    let down = ClosedPort::new();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent", "valueReference": {"reference": "Agent/site-a"}}]}},
        {"resource": {"resourceType": "Agent", "id": "site-a", "name": "Site A", "status": "active",
            "identifier": [{"system": "urn:site", "value": "lab-1"}]}},
        {"resource": {"resourceType": "Device", "id": "lis", "url": format!("mllp://{}", device.local_addr())}},
        {"resource": {"resourceType": "Device", "id": "down", "url": format!("mllp://{}", down.addr())}},
        {"resource": {"resourceType": "Device", "id": "nak", "url": format!("mllp://{}", nak.local_addr())}},
        {"resource": {"resourceType": "Device", "id": "silent", "url": format!("mllp://{silent_addr}")}},
    ]});
    let (relay, base) = support::relay_process(&dir, &bundle, &[]);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut cmd = outpost();
    cmd.env_remove("RUST_LOG")
        .env("PATH", &bin)
        .current_dir(&dir)
        .args(["agent", "--base-url", &base, "--client-id", "agent"])
        .args([
            "--client-secret",
            "agent-secret-0123456",
            "--agent-id",
            "site-a",
            "--data-dir",
        ])
        .arg(dir.join("agent"));
    let mut agent = Proc::spawn("outpost agent", cmd);
    agent.wait_for("connected to the relay", WAIT);
    Site {
        bin,
        _rt: rt,
        _device: device,
        _nak: nak,
        _down: down,
        relay,
        agent,
        base,
    }
}

/// An MLLP device that answers every message AE "Unknown patient".
async fn nak_device() -> mllp::Server {
    mllp::Server::bind(
        "127.0.0.1:0",
        mllp::ServerOptions::default(),
        |req: mllp::Request| async move {
            let msg = req.message().unwrap();
            let o = mllp::ack_options(Some("Unknown patient".into()));
            let _ = req
                .reply(&hl7v2::build_ack(&msg, hl7v2::AckCode::AE, &o))
                .await;
        },
    )
    .await
    .unwrap()
}

fn push(base: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = outpost();
    cmd.arg("push").args(args).args([
        "--base-url",
        base,
        "--client-id",
        "caller",
        "--client-secret",
        "caller-secret-0123456",
    ]);
    run("outpost push", cmd, WAIT)
}

#[test]
fn push_without_wait_says_what_was_confirmed_and_the_agent_logs_why_it_was_not_delivered() {
    let mut site = site("push-nowait");
    let (code, out, err) = push(
        &site.base,
        &["site-a", "--destination", "Device/down", "--body", ADT],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        "accepted by the agent; delivery not confirmed (use --wait)\n"
    );
    // The agent says why, at the default level, without the message.
    let line = site.agent.wait_for("push not delivered", WAIT);
    assert!(
        line.contains("cannot connect to 127.0.0.1:") && line.contains("refused"),
        "{line}"
    );
    let logs = site.agent.output(Duration::from_millis(200));
    assert!(!logs.contains("Doe^Jane"), "{logs}");
    let _ = &site.relay;
}

/// Issue 18: the device's AE reaches the caller as an answer (200 at the relay); `outpost push`
/// prints the ACK and exits 1. Wait options without `--wait` are a usage error.
#[test]
fn push_prints_a_negative_ack_and_exits_1_and_wait_options_need_wait() {
    let site = site("push-nak");
    let (code, out, err) = push(
        &site.base,
        &[
            "site-a",
            "--destination",
            "Device/nak",
            "--wait",
            "--body",
            ADT,
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().any(|l| l == "MSA|AE|FH-1|Unknown patient"),
        "the ACK is printed: {out}"
    );
    assert!(err.contains("Device/nak answered AE"), "{err}");
    let (code, out, err) = push(
        &site.base,
        &[
            "site-a",
            "--destination",
            "Device/nak",
            "--wait",
            "--json",
            "--body",
            ADT,
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let o: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(o["outcome"], "negative", "{o}");
    assert!(o["body"].as_str().unwrap().contains("MSA|AE|FH-1"), "{o}");
    for extra in [
        ["--wait-timeout-ms", "500"],
        ["--return-ack", "application"],
    ] {
        let mut args = vec!["site-a", "--destination", "Device/lis", "--body", ADT];
        args.extend(extra);
        let (code, out, err) = push(&site.base, &args);
        assert_eq!(code, 2, "{extra:?}: {out}{err}");
        assert!(err.contains("--wait"), "{err}");
        assert!(out.is_empty(), "{out}");
    }
}

#[test]
fn push_names_the_agent_by_identifier_and_explains_what_it_cannot_use() {
    let site = site("push-names");
    // Agent?identifier= goes to the relay's Agent/$push?identifier=.
    let (code, out, err) = push(
        &site.base,
        &[
            "Agent?identifier=urn:site|lab-1",
            "--destination",
            "Device/lis",
            "--wait",
            "--body",
            ADT,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("MSA|AA|FH-1"), "{out}");
    let (code, out, err) = push(
        &site.base,
        &[
            "Agent?identifier=urn:site|nowhere",
            "--destination",
            "Device/lis",
            "--body",
            ADT,
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no Agent with identifier urn:site|nowhere"),
        "{err}"
    );
    // Anything else that is not an agent is a usage error saying how to name one.
    let (code, out, err) = push(
        &site.base,
        &[
            "Agent?name=Site A",
            "--destination",
            "Device/lis",
            "--body",
            ADT,
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("names no agent: give its id, Agent/<id> or Agent?identifier=[system|]value"),
        "{err}"
    );

    // A base URL with the FHIR path: said so, with the root to use.
    let doubled = format!("{}fhir/R4/", site.base);
    let (code, out, err) = push(
        &doubled,
        &["site-a", "--destination", "Device/lis", "--body", ADT],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "ends with fhir/R4/: give the server's root ({})",
            site.base
        )),
        "{err}"
    );
    assert!(!err.contains("401"), "{err}");
}

#[test]
fn pushing_a_dicom_file_as_text_gets_the_content_type_hint() {
    let dir = scratch("push-dcm");
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM\x02\x00\x00\x00UL\x04\x00\xc8\x00\x00\x00");
    std::fs::write(dir.join("a.dcm"), &file).unwrap();
    let f = dir.join("a.dcm").display().to_string();
    // Refused before any connection: the relay's address does not matter.
    let (code, out, err) = push(
        "http://127.0.0.1:9/",
        &["site-a", "--destination", "Device/pacs", "--file", &f],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("is a DICOM file") && err.contains("add --content-type application/dicom"),
        "{err}"
    );
    // Other binary files are told what the content type needs.
    std::fs::write(dir.join("b.bin"), [0xffu8, 0xfe, 0x00]).unwrap();
    let f = dir.join("b.bin").display().to_string();
    let (code, out, err) = push(
        "http://127.0.0.1:9/",
        &["site-a", "--destination", "Device/pacs", "--file", &f],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("is not UTF-8 text (invalid byte at offset 0)"),
        "{err}"
    );
}

#[test]
fn astm_send_to_a_peer_that_never_answers_enq_stops_at_the_timeout_and_says_so() {
    // A peer that reads and never answers, as a web server waiting for a request line does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let mut cmd = outpost();
    cmd.args(["astm", "send", "127.0.0.1", &port, "--generate-example"])
        .args(["--timeout-ms", "400", "-v"]);
    let (code, out, err) = run("outpost astm send", cmd, WAIT);
    let took = started.elapsed();
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("connecting to 127.0.0.1:{port}"))
            && err.contains("-> ENQ; waiting up to 400 ms for ACK (go) or NAK (busy)")
            && err.contains("-> EOT")
            && err.contains(&format!(
                "error: 127.0.0.1:{port} did not answer ENQ within 400 ms: is it an ASTM E1381 receiver?"
            )),
        "{err}"
    );
    // One ENQ, not six: no retry after silence.
    assert_eq!(err.matches("-> ENQ").count(), 1, "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn astm_send_verbose_shows_each_step_against_a_receiver() {
    let mut cmd = outpost();
    cmd.args(["astm", "listen", "0", "--bind", "127.0.0.1"]);
    let mut listener = Proc::spawn("outpost astm listen", cmd);
    let line = listener.wait_for("Listening on ", WAIT);
    let port = line.rsplit(':').next().unwrap().trim().to_owned();
    let mut cmd = outpost();
    cmd.args([
        "astm",
        "send",
        "127.0.0.1",
        &port,
        "--generate-example",
        "-v",
    ]);
    let (code, out, err) = run("outpost astm send", cmd, WAIT);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Sent 4 records in 4 frames"), "{out}");
    // ENQ answered, then each frame and its ACK (a record a frame), then EOT.
    let steps: Vec<&str> = err.lines().skip(1).collect();
    assert_eq!(steps.len(), 2 + 2 * 4 + 1, "{err}");
    assert_eq!(
        steps[0], "-> ENQ; waiting up to 15000 ms for ACK (go) or NAK (busy)",
        "{err}"
    );
    assert_eq!(steps[1], "<- ACK", "{err}");
    for (i, pair) in steps[2..10].chunks(2).enumerate() {
        let fn_digit = (i + 1) % 8;
        assert!(
            pair[0].starts_with(&format!("-> frame {fn_digit} ("))
                && pair[0].ends_with("bytes); waiting up to 15000 ms for ACK"),
            "{err}"
        );
        assert_eq!(pair[1], "<- ACK", "{err}");
    }
    assert_eq!(steps[10], "-> EOT", "{err}");
    listener.wait_for("L|1", WAIT);
}

#[test]
fn a_push_waiting_on_a_terminal_says_what_it_waits_for() {
    let site = site("push-progress");
    // `script` gives the command a terminal; its output (stdout and stderr) is what the user sees.
    let line = format!(
        "{} push site-a --destination Device/silent --wait --wait-timeout-ms 2500 --body '{}' \
         --base-url {} --client-id caller --client-secret caller-secret-0123456",
        env!("CARGO_BIN_EXE_outpost"),
        ADT.replace('\r', "\n"),
        site.base
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    let (code, out, err) = run("script outpost push", cmd, WAIT);
    // The relay's timeout (3) or the agent's own answer at the same deadline, "no
    // acknowledgement" from the device (1): whichever arrives first.
    assert!(code == 3 || code == 1, "{out}{err}");
    assert!(
        out.contains("waiting for the answer of Device/silent through Agent/site-a: 1 s (the relay waits up to 2 s)"),
        "{out:?}"
    );
    // The line is cleared before the answer is printed.
    let tail = out.rsplit("\x1b[2K").next().unwrap_or_default();
    assert!(
        tail.contains("error:") && !tail.contains("waiting for"),
        "{out:?}"
    );

    // Not a terminal: nothing but the answer.
    let (code, out, err) = push(
        &site.base,
        &[
            "site-a",
            "--destination",
            "Device/silent",
            "--wait",
            "--wait-timeout-ms",
            "1500",
            "--body",
            ADT,
        ],
    );
    // The relay's timeout (3) or the agent's own answer at the same deadline (1).
    assert!(code == 3 || code == 1, "{out}{err}");
    assert!(
        !err.contains("waiting for") && !out.contains("waiting for"),
        "{out}{err}"
    );
}

#[test]
fn the_agent_says_when_it_cannot_reach_the_relay_yet_and_when_it_does() {
    // A relay address nobody listens on yet (held, refusing); the relay starts there later.
    let nobody = ClosedPort::new();
    let port = nobody.port();
    let base = format!("http://127.0.0.1:{port}/");
    let dir = scratch("agent-waits");
    let mut cmd = outpost();
    cmd.current_dir(&dir)
        .args(["agent", "--base-url", &base, "--client-id", "agent"])
        .args([
            "--client-secret",
            "agent-secret-0123456",
            "--agent-id",
            "site-a",
        ]);
    let mut agent = Proc::spawn("outpost agent", cmd);
    let line = agent.wait_for("Not connected to", WAIT);
    assert_eq!(
        line,
        format!(
            "Not connected to {base} yet; still trying, with backoff (the log on stderr says why). Device messages are queued meanwhile."
        )
    );
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent", "valueReference": {"reference": "Agent/site-a"}}]}},
        {"resource": {"resourceType": "Agent", "id": "site-a", "name": "Site A", "status": "active"}},
    ]});
    std::fs::write(dir.join("bundle.json"), bundle.to_string()).unwrap();
    drop(nobody);
    let mut cmd = outpost();
    cmd.args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    relay.wait_for("Relay listening on ", WAIT);
    agent.wait_for("Connected to the relay.", WAIT);
}

#[test]
fn medplum_agent_ping_prints_why_when_ping_is_missing_on_the_agent_host() {
    let mut site = site("ping");
    let ping = |count: &str| {
        let mut cmd = medplum();
        cmd.args(["--base-url", &site.base, "--client-id", "caller"])
            .args([
                "--client-secret",
                "caller-secret-0123456",
                "agent",
                "ping",
                "127.0.0.1",
                "site-a",
            ])
            .args(["--count", count]);
        run("medplum agent ping", cmd, WAIT)
    };
    // No ping on the agent's PATH: Medplum's CLI prints the reason, in ping's shape.
    let (code, out, err) = ping("1");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("PING 127.0.0.1: not sent: ping is not installed on the agent's host")
            && out.contains("0 packets transmitted, 0 received, 100% packet loss"),
        "{out}{err}"
    );
    let line = site.agent.wait_for("ping not run", WAIT);
    assert!(line.contains("ping is not installed"), "{line}");

    // With a ping, the platform's flags go to it and its output comes back as it is.
    let fake = site.bin.join("ping");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake ping $*\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = ping("2");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fake ping -c 2 -W 2 127.0.0.1"), "{out}{err}");
}
