//! `outpost hl7 send|print`: output and exit codes against in-process receivers.

mod support;

use std::time::Duration;

use hl7v2::{AckCode, AckError, build_ack};
use mllp::{Request, Server, ServerOptions, ack_options, acks_for};
use support::{ClosedPort, outpost, run};

const WAIT: Duration = Duration::from_secs(20);

/// Runs a receiver on its own runtime thread; returns its port.
fn receiver<F, Fut>(handler: F) -> u16
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0", ServerOptions::default(), handler)
                .await
                .unwrap();
            tx.send(server.local_addr().port()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn send(port: u16, extra: &[&str]) -> (i32, String, String) {
    let mut cmd = outpost();
    cmd.args(["hl7", "send", "127.0.0.1", &port.to_string()])
        .args(extra);
    run("outpost hl7 send", cmd, WAIT)
}

#[test]
fn aa_exits_zero_and_prints_one_segment_per_line() {
    let port = receiver(|req: Request| async move {
        for ack in acks_for(&req.message().unwrap(), false) {
            req.reply(&ack).await.unwrap();
        }
    });
    // CRLF in the body: it goes on the wire with CR, the receiver parses three segments.
    let (code, out, err) = send(
        port,
        &["MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5\r\nEVN|A01\r\nPID|1"],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("MSH|^~\\&|C|D|A|B|"));
    assert_eq!(lines[1], "MSA|AA|X1|OK");
}

#[test]
fn nak_exits_one_with_the_reason() {
    let port = receiver(|req: Request| async move {
        let m = req.message().unwrap();
        let mut o = ack_options(Some("Unknown patient".into()));
        o.error = Some(AckError::new(204, "MRN 123 not on file"));
        req.reply(&build_ack(&m, AckCode::AE, &o)).await.unwrap();
    });
    let (code, out, err) = send(port, &["--generate-example"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("MSA|AE|"), "the ACK is printed: {out}");
    assert!(
        err.contains("AE: Unknown patient: MRN 123 not on file"),
        "{err}"
    );
}

#[test]
fn refused_exits_three() {
    let nobody = ClosedPort::new();
    let port = nobody.port();
    let (code, _, err) = send(port, &["--generate-example"]);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn silent_receiver_times_out_and_exits_three() {
    let port = receiver(|_req: Request| async {});
    let t = std::time::Instant::now();
    let (code, _, err) = send(port, &["--generate-example", "--timeout-ms", "300"]);
    assert_eq!(code, 3);
    assert!(err.contains("within 300 ms"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_input_exits_two() {
    let nobody = ClosedPort::new();
    let (code, _, err) = send(nobody.port(), &["this is not hl7"]);
    assert_eq!(code, 2);
    assert!(err.contains("not HL7 v2"), "{err}");
}

#[test]
fn print_shows_paths() {
    let file = support::repo().join("corpus/hl7v2/fhir-converter/LAB-ORU-1.hl7");
    let mut cmd = outpost();
    cmd.arg("hl7").arg("print").arg(&file);
    let (code, out, err) = run("outpost hl7 print", cmd, WAIT);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("# ORU^R01 "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["PID-5-1", "DUCK"]),
        "{out}"
    );
}
