//! `outpost hl7 listen|send` against the real Medplum CLI (`@medplum/cli` from npm), both ways.

mod support;

use std::time::Duration;

use support::{Proc, free_port, medplum, outpost, run};

const WAIT: Duration = Duration::from_secs(30);

fn outpost_listener(extra: &[&str]) -> (Proc, u16) {
    let mut cmd = outpost();
    cmd.args(["hl7", "listen", "0", "--bind", "127.0.0.1"])
        .args(extra);
    let mut p = Proc::spawn("outpost hl7 listen", cmd);
    let line = p.wait_for("Listening on ", WAIT);
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    (p, port)
}

fn medplum_listener(extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = medplum();
    cmd.args(["hl7", "listen", &port.to_string()]).args(extra);
    let mut p = Proc::spawn("medplum hl7 listen", cmd);
    p.wait_for("Listening on port", WAIT);
    (p, port)
}

#[test]
fn medplum_send_to_outpost_listen() {
    let (mut listener, port) = outpost_listener(&[]);
    let mut cmd = medplum();
    cmd.args([
        "hl7",
        "send",
        "127.0.0.1",
        &port.to_string(),
        "--generate-example",
    ]);
    let (code, out, err) = run("medplum hl7 send", cmd, WAIT);
    assert_eq!(code, 0, "medplum hl7 send failed:\n{out}\n{err}");
    // Medplum prints our ACK: sender/receiver swapped, AA for its control ID.
    assert!(
        out.contains("MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|"),
        "{out}"
    );
    let msa = out
        .lines()
        .find(|l| l.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA in {out}"));
    assert!(msa.starts_with("MSA|AA|"), "{msa}");
    // and we printed its message, one segment per line
    listener.wait_for(
        "PID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|",
        WAIT,
    );
    let text = listener.output(Duration::from_millis(200));
    let control_id = msa.split('|').nth(2).unwrap();
    assert!(
        text.contains(&format!("|ADT^A01|{control_id}|P|2.5|")),
        "{text}"
    );
    for seg in ["MSH|", "EVN|A01|", "PV1|1|I|"] {
        assert!(
            text.lines().any(|l| l.starts_with(seg)),
            "no {seg} line in:\n{text}"
        );
    }
}

#[test]
fn outpost_send_to_medplum_listen() {
    let (mut listener, port) = medplum_listener(&[]);
    let mut cmd = outpost();
    cmd.args([
        "hl7",
        "send",
        "127.0.0.1",
        &port.to_string(),
        "--generate-example",
    ]);
    let (code, out, err) = run("outpost hl7 send", cmd, WAIT);
    assert_eq!(code, 0, "outpost hl7 send failed:\n{out}\n{err}");
    let msa = out
        .lines()
        .find(|l| l.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA in {out}"));
    assert!(msa.starts_with("MSA|AA|"), "{msa}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|"),
        "{out}"
    );
    // Medplum printed our message
    listener.wait_for("EVN|A01|", WAIT);
    listener.wait_for(
        "PID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|",
        WAIT,
    );
}

const LATIN1_BODY: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A08|L1|P|2.5|||||DE|8859/1\nPID|1||4711^^^HOSP^MR||MÜLLER^JÖRG^ß||19700101|M\n";

#[test]
fn latin1_from_medplum_to_outpost() {
    let (mut listener, port) = outpost_listener(&["--encoding", "latin1"]);
    let mut cmd = medplum();
    cmd.args([
        "hl7",
        "send",
        "127.0.0.1",
        &port.to_string(),
        LATIN1_BODY,
        "--encoding",
        "latin1",
    ]);
    let (code, out, err) = run("medplum hl7 send", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("MSA|AA|L1"), "{out}");
    // Decoded as Latin-1 this reads right only if the bytes on the wire were Latin-1.
    listener.wait_for("PID|1||4711^^^HOSP^MR||MÜLLER^JÖRG^ß||19700101|M", WAIT);
}

#[test]
fn latin1_from_outpost_to_medplum() {
    let (mut listener, port) = medplum_listener(&["--encoding", "latin1"]);
    let mut cmd = outpost();
    cmd.args([
        "hl7",
        "send",
        "127.0.0.1",
        &port.to_string(),
        LATIN1_BODY,
        "--encoding",
        "latin1",
    ]);
    let (code, out, err) = run("outpost hl7 send", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("MSA|AA|L1"), "{out}");
    listener.wait_for("PID|1||4711^^^HOSP^MR||MÜLLER^JÖRG^ß||19700101|M", WAIT);
}
