//! `outpost astm listen|send` against third-party ASTM implementations from PyPI, both ways:
//! labmcp-astm-lis (a strict receiver, and an analyzer simulator that corrupts a frame on
//! purpose) and python-astm 0.5.0.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Proc, outpost, port_for_peer, repo, run};

const WAIT: Duration = Duration::from_secs(60);

fn venv(var: &str, default: &str) -> PathBuf {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/python").join(default));
    assert!(
        dir.join("bin/python").exists(),
        "{} is missing: run scripts/test, which installs the ASTM peers",
        dir.display()
    );
    dir
}

fn python(var: &str, default: &str) -> Command {
    let mut c = Command::new(venv(var, default).join("bin/python"));
    let shim = std::env::var_os("OUTPOST_PYSHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("scripts/peers/pyshim"));
    c.env("PYTHONPATH", shim).env("PYTHONUNBUFFERED", "1");
    c
}

fn script(name: &str) -> PathBuf {
    repo().join("scripts/peers").join(name)
}

fn listener() -> (Proc, u16) {
    let mut cmd = outpost();
    cmd.args(["astm", "listen", "0", "--bind", "127.0.0.1"]);
    let mut p = Proc::spawn("outpost astm listen", cmd);
    let port = p
        .wait_for("Listening on ", WAIT)
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (p, port)
}

#[test]
fn labmcp_simulator_to_outpost_listen_corrupted_frame_is_naked_and_resent() {
    let (mut l, port) = listener();
    let mut sim = python("OUTPOST_LABMCP", "labmcp");
    sim.arg(script("astm_labmcp_sim.py")).arg(port.to_string());
    let (code, out, err) = run("labmcp simulator", sim, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    // our receiver refused the damaged frame exactly once, and the simulator resent it
    assert!(out.starts_with("messages_sent=2 naks_received=1"), "{out}");
    assert!(out.contains("(retransmission)"), "{out}");
    l.wait_for("L|1|N", WAIT);
    let text = l.output(Duration::from_millis(500));
    assert_eq!(
        text.lines().filter(|r| r.starts_with("H|")).count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|r| r.starts_with("L|")).count(),
        2,
        "{text}"
    );
    assert!(
        text.lines().filter(|r| r.starts_with("R|")).count() >= 20,
        "{text}"
    );
}

#[test]
fn python_astm_sender_to_outpost_listen_etb_frames_joined() {
    let (mut l, port) = listener();
    let mut send = python("OUTPOST_PYASTM", "astm050");
    send.arg(script("astm_pyastm_send.py"))
        .args([port.to_string(), "247".into()]);
    let (code, out, err) = run("python-astm sender", send, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    l.wait_for("L|1|N", WAIT);
    l.wait_for("R|1|^^^GLU|5.4|mmol/L|3.9-6.1|N||F", WAIT);
    // the 300-character comment came in two frames (python-astm cuts at 247 bytes)
    l.wait_for(&format!("C|1|I|{}|G", "Z".repeat(300)), WAIT);
}

#[test]
fn outpost_send_to_python_astm_receiver() {
    let port = port_for_peer();
    let mut recv = python("OUTPOST_PYASTM", "astm050");
    recv.arg(script("astm_pyastm_recv.py"))
        .arg(port.to_string());
    let mut r = Proc::spawn("python-astm receiver", recv);
    r.wait_for("listening", WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = outpost();
    cmd.args([
        "astm",
        "send",
        "127.0.0.1",
        &port.to_string(),
        "--generate-example",
    ]);
    let (code, out, err) = run("outpost astm send", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Sent 4 records in 4 frames, all acknowledged"),
        "{out}"
    );
    r.wait_for(
        "RECORD ['H', [[None], [None, '&']], None, None, ['OUTPOST', '1.0']",
        WAIT,
    );
    r.wait_for(
        "RECORD ['P', '1', 'PID12345', None, None, ['DOE', 'JOHN']",
        WAIT,
    );
    r.wait_for("[None, None, None, 'PLT']", WAIT);
    r.wait_for("RECORD ['L', '1', 'N']", WAIT);
}

#[test]
fn outpost_send_to_labmcp_strict_receiver_long_record() {
    let port = port_for_peer();
    let dir = std::env::temp_dir().join(format!("outpost-labmcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("lis.jsonl");
    // labmcp is an MCP stdio server: it runs while its stdin stays open.
    let mut lis = Command::new(venv("OUTPOST_LABMCP", "labmcp").join("bin/labmcp-astm-lis"));
    lis.args([
        "--option",
        &format!("listen_port={port}"),
        "--option",
        "listen_host=127.0.0.1",
        "--option",
    ])
    .arg(format!("store_path={}", store.display()))
    .args(["--option", "redact_patient_info=false"])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = lis.spawn().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "labmcp did not start listening"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let long = "Y".repeat(600);
    let file = dir.join("msg.astm");
    std::fs::write(&file, format!("H|\\^&|||OUTPOST^1.0|||||LIS||P|LIS2-A2|20240101120000\nP|1|PID9||||Test^Pat\nO|1|S9||^^^GLU|R\nR|1|^^^GLU|5.4|mmol/L|3.9-6.1|N||F\nC|1|I|{long}|G\nL|1|N\n")).unwrap();
    let mut cmd = outpost();
    cmd.args(["astm", "send", "127.0.0.1", &port.to_string(), "--file"])
        .arg(&file);
    let (code, out, err) = run("outpost astm send", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    // 5 one-frame records and a 607-byte comment in 3 frames
    assert!(
        out.contains("Sent 6 records in 8 frames, all acknowledged (0 retransmitted)"),
        "{out}"
    );
    let mut stored = String::new();
    for _ in 0..50 {
        stored = std::fs::read_to_string(&store).unwrap_or_default();
        if stored.contains("\"complete\": true") || stored.contains("\"complete\":true") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let row: serde_json::Value =
        serde_json::from_str(stored.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(row["complete"], true, "{stored}");
    let records: Vec<&str> = row["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    assert_eq!(records[4], format!("C|1|I|{long}|G"));
}
