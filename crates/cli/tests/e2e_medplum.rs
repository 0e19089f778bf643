//! The canonical push example, as written: `outpost server --bootstrap` + `outpost agent`, the
//! real `medplum hl7 listen 56000` as the device, and the real `medplum post` as the caller with
//! the documented body (segments separated by `\n`). Also `outpost push` and `outpost demo`.

mod support;

use std::time::Duration;

use support::{Proc, agent_process, medplum, outpost, repo, run};

const AGENT: &str = "1080ee82-e4fc-4312-946f-322fbecf9bb9";
const DEVICE: &str = "52c9a9de-1081-4fb2-a40a-e62efe1b73b2";
const WAIT: Duration = Duration::from_secs(60);

/// The body from the push documentation, byte for byte (JSON `\n` between segments).
const CANONICAL: &str = r#"{"destination":"Device/52c9a9de-1081-4fb2-a40a-e62efe1b73b2","contentType":"x-application/hl7-v2+er7","body":"MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305.516||ADT^A01|1698105185516|P|2.5|\nEVN|A01|20231023235305.516||\nPID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M|||123 STREET^APT 4B^CITY^ST^12345-6789||555-555-5555||S|\nPV1|1|I|2000^2012^01||||12345^DOCTOR^DOC||||||||||1234567^DOCTOR^DOC||AMB|||||||||||||||||||||||||202309280900|"}"#;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(
        format!(
            "outpost-e2e-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Flow {
    _relay: Proc,
    _agent: Proc,
    listener: Proc,
    base: String,
}

fn flow() -> Flow {
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp("relay"))
        .arg("--bootstrap")
        .arg(repo().join("examples/bootstrap/push-example.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = relay
        .wait_for("Relay listening on ", WAIT)
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();

    let mut cmd = medplum();
    cmd.args(["hl7", "listen", "56000"]);
    let mut listener = Proc::spawn("medplum hl7 listen", cmd);
    listener.wait_for("Listening on port 56000", WAIT);

    let agent = agent_process(
        &base,
        ("outpost-agent", "agent-secret-change-me"),
        AGENT,
        &tmp("agent"),
        WAIT,
    );
    Flow {
        _relay: relay,
        _agent: agent,
        listener,
        base,
    }
}

fn medplum_post(base: &str, body: &str) -> (i32, String, String) {
    let mut cmd = medplum();
    cmd.args(["post", &format!("Agent/{AGENT}/$push"), body])
        .args([
            "--base-url",
            base,
            "--client-id",
            "outpost-caller",
            "--client-secret",
            "caller-secret-change-me",
        ]);
    run("medplum post", cmd, WAIT)
}

// One test: the device port (56000) is the canonical one, so these steps share it.
#[test]
fn canonical_push_example_with_the_medplum_cli() {
    let mut f = flow();

    // As written in the documentation: no waitForResponse.
    let (code, out, err) = medplum_post(&f.base, CANONICAL);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("All OK"), "{out}");
    // The device got it, segments now separated by \r (printed one per line).
    f.listener.wait_for(
        "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305.516||ADT^A01|1698105185516|P|2.5|",
        WAIT,
    );
    f.listener.wait_for(
        "PID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M|",
        WAIT,
    );
    f.listener
        .wait_for("PV1|1|I|2000^2012^01||||12345^DOCTOR^DOC|", WAIT);

    // With waitForResponse, the caller gets the device's ACK.
    let waiting = CANONICAL.replacen(
        "{\"destination\"",
        "{\"waitForResponse\":true,\"destination\"",
        1,
    );
    let (code, out, err) = medplum_post(&f.base, &waiting);
    assert_eq!(code, 0, "{out}\n{err}");
    let ack: String = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        ack.starts_with("MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|"),
        "{ack}"
    );
    assert!(ack.contains("MSA|AA|1698105185516"), "{ack}");

    // `outpost push` does the same from our side.
    let mut cmd = outpost();
    cmd.args([
        "push",
        AGENT,
        "--destination",
        &format!("Device/{DEVICE}"),
        "--wait",
        "--body",
    ])
    .arg("MSH|^~\\&|A|B|C|D|20240101||ADT^A08|OUTPOST-PUSH-1|P|2.5\nPID|1||99")
    .env("MEDPLUM_BASE_URL", &f.base)
    .env("MEDPLUM_CLIENT_ID", "outpost-caller")
    .env("MEDPLUM_CLIENT_SECRET", "caller-secret-change-me");
    let (code, out, err) = run("outpost push", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines().any(|l| l.starts_with("MSA|AA|OUTPOST-PUSH-1")),
        "{out}"
    );
    f.listener.wait_for("|ADT^A08|OUTPOST-PUSH-1|", WAIT);
}

#[test]
fn outpost_push_reports_failures_with_exit_codes() {
    // No relay at all: exit 3.
    let nobody = support::ClosedPort::new();
    let port = nobody.port();
    let mut cmd = outpost();
    cmd.args([
        "push",
        AGENT,
        "--destination",
        "Device/x",
        "--body",
        "MSH|^~\\&|A",
        "--base-url",
        &format!("http://127.0.0.1:{port}/"),
        "--client-id",
        "c",
        "--client-secret",
        "s",
    ]);
    let (code, _, err) = run("outpost push", cmd, WAIT);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the relay"), "{err}");
}

#[test]
fn demo_prints_each_hop_and_the_ack() {
    let mut cmd = outpost();
    cmd.arg("demo");
    let (code, out, err) = run("outpost demo", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    let hops: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| l.split(']').next().unwrap())
        .collect();
    assert_eq!(
        hops,
        [
            "[relay ", "[device", "[agent ", "[caller", "[agent ", "[device", "[device", "[agent ",
            "[caller"
        ],
        "{out}"
    );
    assert!(out.contains("[device] received ADT^A01 "), "{out}");
    assert!(out.contains("MSA|AA|"), "{out}");
}

#[test]
fn agent_starts_from_medplum_agent_properties() {
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp("relay-props"))
        .arg("--bootstrap")
        .arg(repo().join("examples/bootstrap/push-example.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = relay
        .wait_for("Relay listening on ", WAIT)
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let dir = tmp("props");
    // As Medplum's Windows installer writes it: CRLF, Medplum's keys only.
    std::fs::write(
        dir.join("agent.properties"),
        format!("baseUrl={base}\r\nclientId=outpost-agent\r\nclientSecret=agent-secret-change-me\r\nagentId={AGENT}\r\nlogLevel=INFO\r\n"),
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info").current_dir(&dir).arg("agent");
    let mut agent = Proc::spawn("outpost agent", cmd);
    agent.wait_for("connected to the relay", WAIT);
    // a wrong secret is refused at login, with the relay's reason, and retried
    std::fs::write(
        dir.join("bad.properties"),
        format!("baseUrl={base}\nclientId=outpost-agent\nclientSecret=wrong\nagentId={AGENT}\n"),
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info")
        .arg("agent")
        .arg("--config")
        .arg(dir.join("bad.properties"))
        .arg("--data-dir")
        .arg(dir.join("bad-data"));
    let mut bad = Proc::spawn("outpost agent (bad secret)", cmd);
    bad.wait_for("login failed (HTTP 401): Invalid client credentials", WAIT);
}
