//! `outpost hl7 listen|send` against the real Medplum CLI (`@medplum/cli` from npm), both ways.

mod support;

use std::time::Duration;

use support::{Proc, medplum, outpost, port_for_peer, run};

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
    let port = port_for_peer();
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

/// Case 01 (`corpus/hl7v2/cases/`): MSH-2 with three encoding characters. Medplum's
/// `Hl7Message.parse` (`@medplum/core` 5.0.10, as installed) reads the delimiters as bytes 3 to 7
/// of the message, so with three characters its subcomponent separator is the field separator
/// after MSH-2, which never occurs inside a field: it parses, keeps MSH-2 as text and writes it
/// back as received. The message reaches us with `^~\` or `^~&`, and our ACK echoes it.
#[test]
fn medplum_sends_three_encoding_characters_to_outpost_listen() {
    let (mut listener, port) = outpost_listener(&[]);
    for (file, msh2, control_id) in [
        ("no-subcomponent.hl7", "^~\\", "CTRL0001"),
        ("no-escape-char.hl7", "^~&", "CTRL0002"),
    ] {
        let mut cmd = medplum();
        cmd.args(["hl7", "send", "127.0.0.1", &port.to_string(), "--file"])
            .arg(support::repo().join("corpus/hl7v2/cases").join(file));
        let (code, out, err) = run("medplum hl7 send", cmd, WAIT);
        assert_eq!(code, 0, "{file}: {out}\n{err}");
        assert!(
            out.contains(&format!("MSH|{msh2}|EHR|CLINIC|LABSYS|NORTHLAB|")),
            "{file}: the ACK echoes MSH-2: {out}"
        );
        assert!(out.contains(&format!("MSA|AA|{control_id}|")), "{out}");
        listener.wait_for(
            &format!("MSH|{msh2}|LABSYS|NORTHLAB|EHR|CLINIC|20240105093000||ORU^R01|{control_id}|"),
            WAIT,
        );
    }
    listener.wait_for(
        "PID|1||MRN4455^^^NORTHLAB^MR||TESTPATIENT^ALEX||19700101|U",
        WAIT,
    );
}

/// Case 05 the other way round: Medplum's parser splits segments on `/[\r\n]+/`
/// (`Hl7Message.parse`, `@medplum/core` 5.0.10), so it sends the report's lines as segments
/// (`FINDINGS:` ...). `outpost hl7 listen` does not take that for a message: it answers AR with
/// the control ID, table 0357 code 100 and where it went wrong.
#[test]
fn medplum_splitting_a_report_at_line_feeds_gets_a_reject() {
    let (_listener, port) = outpost_listener(&[]);
    let mut cmd = medplum();
    cmd.args(["hl7", "send", "127.0.0.1", &port.to_string(), "--file"])
        .arg(support::repo().join("corpus/hl7v2/cases/report-with-lf.hl7"));
    let (_, out, err) = run("medplum hl7 send", cmd, WAIT);
    let msa = out
        .lines()
        .find(|l| l.starts_with("MSA|"))
        .unwrap_or_else(|| panic!("no MSA in {out}\n{err}"));
    assert!(
        msa.starts_with("MSA|AR|CTRL0501|invalid segment name at byte "),
        "{msa}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("ERR|^^^100&")),
        "v2.3 ERR-1 with code 100: {out}"
    );
}
