//! The HL7 field cases of `corpus/hl7v2/cases/` through the `outpost` binary: `hl7 print`,
//! `hl7 listen`, `hl7 send`, and a `$push` through `outpost server` and `outpost agent` to a
//! device that keeps the bytes it receives.
//!
//! - case 01: MSH-2 with three encoding characters (`^~\`, `^~&`) parses, and the ACK echoes it.
//! - case 05: a CR-terminated ORU whose OBX-5 report holds line feeds, one before a line `CXR`:
//!   four segments, OBX-5 whole, and every path puts the message on the wire unchanged.

#[path = "../../mllp/tests/common/mod.rs"]
mod capture;
mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use capture::{Seen, capturing_receiver};
use support::{Proc, agent_process, outpost, repo, run};

const WAIT: Duration = Duration::from_secs(30);
/// The report in OBX-5 of `report-with-lf.hl7`.
const REPORT: [&str; 7] = [
    "EXAM: XR CHEST 2 VIEWS",
    "FINDINGS:",
    "Heart size normal.",
    "CXR",
    "Compared with prior study.",
    "IMPRESSION:",
    "No acute disease.",
];

fn case(name: &str) -> PathBuf {
    repo().join("corpus/hl7v2/cases").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("outpost-hl7-cases-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn print(file: &PathBuf) -> (i32, String, String) {
    let mut cmd = outpost();
    cmd.args(["hl7", "print"]).arg(file);
    run("outpost hl7 print", cmd, WAIT)
}

/// `PATH  value` lines of `hl7 print`, as (path, value).
fn value_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
        .filter_map(|l| l.split_once(' '))
        .map(|(p, v)| (p.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn print_reads_three_encoding_characters() {
    for (file, msh2, control_id) in [
        ("no-subcomponent.hl7", "^~\\", "CTRL0001"),
        ("no-escape-char.hl7", "^~&", "CTRL0002"),
    ] {
        let (code, out, err) = print(&case(file));
        assert_eq!(code, 0, "{file}: {err}");
        assert!(
            out.starts_with(&format!(
                "# ORU^R01 20240105093000 control id {control_id} version 2.3 (3 segments,"
            )),
            "{file}: {out}"
        );
        let values = value_lines(&out);
        for (path, value) in [
            ("MSH-2", msh2),
            ("PID-5-1", "TESTPATIENT"),
            ("PID-3-4", "NORTHLAB"),
            ("OBX-5", "5.4"),
            ("OBX-11", "F"),
        ] {
            assert!(
                values.contains(&(path.into(), value.into())),
                "{file}: no {path} {value} in\n{out}"
            );
        }
    }
}

#[test]
fn print_keeps_line_feeds_inside_the_report() {
    let (code, out, err) = print(&case("report-with-lf.hl7"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(4 segments,"), "{out}");
    // OBX-5 is the whole report: its first line after the path, the others indented under it.
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("OBX-5 "))
        .unwrap_or_else(|| panic!("no OBX-5 in\n{out}"));
    let report: Vec<&str> = lines[at..at + REPORT.len()]
        .iter()
        .map(|l| l[14..].trim())
        .collect();
    assert_eq!(report, REPORT, "{out}");
    assert!(
        lines[at + 1..at + REPORT.len()]
            .iter()
            .all(|l| l.starts_with("               "))
    );
    assert_eq!(
        lines[at + REPORT.len()]
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["OBX-11", "F"]
    );
    assert!(
        !out.lines().any(|l| l.starts_with("CXR")),
        "no segment CXR: {out}"
    );
}

/// `outpost hl7 listen` on a free port; returns the process and the port.
fn listener() -> (Proc, u16) {
    let mut cmd = outpost();
    cmd.args(["hl7", "listen", "0", "--bind", "127.0.0.1"]);
    let mut p = Proc::spawn("outpost hl7 listen", cmd);
    let line = p.wait_for("Listening on ", WAIT);
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (p, port)
}

/// Writes `bytes` and reads one MLLP frame back (content without the framing bytes).
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"\x1c\r") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got[0], 0x0B);
    got[1..got.len() - 2].to_vec()
}

#[test]
fn listen_acknowledges_the_framed_case_01_message() {
    let (mut p, port) = listener();
    let framed = std::fs::read(case("no-subcomponent.mllp")).unwrap();
    let ack = String::from_utf8(exchange(port, &framed)).unwrap();
    let segs: Vec<&str> = ack.split('\r').filter(|s| !s.is_empty()).collect();
    assert!(
        segs[0].starts_with("MSH|^~\\|EHR|CLINIC|LABSYS|NORTHLAB|"),
        "the ACK echoes MSH-2: {ack:?}"
    );
    assert!(segs[1].starts_with("MSA|AA|CTRL0001"), "{ack:?}");
    p.wait_for(
        "PID|1||MRN4455^^^NORTHLAB^MR||TESTPATIENT^ALEX||19700101|U",
        WAIT,
    );
}

#[test]
fn listen_rejects_a_bad_header_naming_its_control_id() {
    let (_p, port) = listener();
    let body = b"MSH|^~|LAB|NORTH|EHR|CLINIC|20240105||ORU^R01|CTRL0042|P|2.5\rPID|1\r";
    let mut framed = vec![0x0B];
    framed.extend_from_slice(body);
    framed.extend_from_slice(b"\x1c\r");
    let ack = String::from_utf8(exchange(port, &framed)).unwrap();
    let segs: Vec<&str> = ack.split('\r').filter(|s| !s.is_empty()).collect();
    assert!(
        segs[1].starts_with(
            "MSA|AR|CTRL0042|invalid encoding characters at byte 4: MSH-2 must have 3 to 5"
        ),
        "{ack:?}"
    );
    assert!(
        segs[2].starts_with("ERR||MSH^1^2|102^Data type error^HL70357|E|"),
        "{ack:?}"
    );
}

/// A device on 127.0.0.1:0 (own thread and runtime) that keeps every message's bytes and
/// acknowledges it.
fn device() -> (u16, Seen) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (server, seen) = capturing_receiver().await;
            tx.send((server.local_addr().port(), seen)).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// The case-05 message with CRLF terminators; the line feeds of the report stay bare.
fn crlf_report() -> Vec<u8> {
    let cr = std::fs::read(case("report-with-lf.hl7")).unwrap();
    cr.iter()
        .flat_map(|&b| {
            if b == b'\r' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect()
}

#[test]
fn send_puts_the_case_files_on_the_wire_unchanged() {
    let (port, seen) = device();
    let dir = tmp("send");
    let crlf = dir.join("report-crlf.hl7");
    std::fs::write(&crlf, crlf_report()).unwrap();
    let report = std::fs::read(case("report-with-lf.hl7")).unwrap();
    for (file, control_id, wire) in [
        (case("report-with-lf.hl7"), "CTRL0501", report.clone()),
        (
            case("no-subcomponent.hl7"),
            "CTRL0001",
            std::fs::read(case("no-subcomponent.hl7")).unwrap(),
        ),
        (
            case("no-escape-char.hl7"),
            "CTRL0002",
            std::fs::read(case("no-escape-char.hl7")).unwrap(),
        ),
        // CRLF terminators become CR; nothing else changes.
        (crlf, "CTRL0501", report.clone()),
    ] {
        let mut cmd = outpost();
        cmd.args(["hl7", "send", "127.0.0.1", &port.to_string(), "--file"])
            .arg(&file);
        let (code, out, err) = run("outpost hl7 send", cmd, WAIT);
        assert_eq!(code, 0, "{}: {out}\n{err}", file.display());
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("MSA|AA|{control_id}|"))),
            "{out}"
        );
        let got = seen.lock().unwrap().pop().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&wire),
            "{}",
            file.display()
        );
    }
}

/// `outpost server` with a bundle whose Device points at `device_port`, and `outpost agent`.
struct Deployment {
    _relay: Proc,
    _agent: Proc,
    base: String,
}

const AGENT: &str = "case-agent";

fn deployment(device_port: u16) -> Deployment {
    let dir = tmp("push");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent-client", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
                "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Case agent", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "ris", "url": format!("mllp://127.0.0.1:{device_port}")}},
    ]});
    let bundle_file = dir.join("bundle.json");
    std::fs::write(&bundle_file, bundle.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(&bundle_file);
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = relay
        .wait_for("Relay listening on ", WAIT)
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let agent = agent_process(
        &base,
        ("agent-client", "agent-secret-0123456"),
        AGENT,
        &dir.join("agent"),
        WAIT,
    );
    Deployment {
        _relay: relay,
        _agent: agent,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_through_relay_and_agent_delivers_the_body_unchanged() {
    let (port, seen) = device();
    let d = tokio::task::spawn_blocking(move || deployment(port))
        .await
        .unwrap();
    let token = support::token(&d.base, "caller", "caller-secret-0123456").await;
    let http = reqwest::Client::new();
    let report = String::from_utf8(std::fs::read(case("report-with-lf.hl7")).unwrap()).unwrap();
    let crlf = String::from_utf8(crlf_report()).unwrap();
    for (body, wire) in [(&report, &report), (&crlf, &report)] {
        let resp = http
            .post(format!("{}fhir/R4/Agent/{AGENT}/$push", d.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "destination": "Device/ris",
                "contentType": "x-application/hl7-v2+er7",
                "body": body,
                "waitForResponse": true,
            }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        // The device's ACK, as the relay answers it: raw, in its content type.
        let ack = resp.text().await.unwrap();
        assert!(status.is_success(), "{status}: {ack}");
        assert!(ack.contains("MSA|AA|CTRL0501"), "{ack}");
        // The device got the pushed body byte for byte (CRLF terminators as CR).
        let got = seen.lock().unwrap().pop().unwrap();
        assert_eq!(String::from_utf8_lossy(&got), wire.as_str());
        let msg = hl7v2::Message::parse(&got).unwrap();
        assert_eq!(msg.segment_count(), 4);
        assert_eq!(msg.get("OBX-5").unwrap().text(), REPORT.join("\n"));
        assert_eq!(msg.get("OBX-11").unwrap().raw(), b"F");
    }
}
