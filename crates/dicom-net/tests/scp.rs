//! The SCP against real senders: dcmtk's `storescu` and `echoscu`, pynetdicom's `storescu`.
//! What arrives is compared with what was sent: the data set bytes when the syntax is the
//! same, element by element (pydicom) when the sender converted.

mod dcmtk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dcmtk::{Spec, TempDir, data_set_of, make_file};
use dicom_net::dimse::Status;
use dicom_net::scp::{Received, ReceivedObject, ScpOptions, serve};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// An SCP on a free port answering every object with `status`; returns its port and the
/// objects it received (their answers already given).
async fn scp(
    dir: &Path,
    ae_title: Option<&str>,
    status: Status,
) -> (u16, mpsc::UnboundedReceiver<ReceivedObject>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = mpsc::channel::<Received>(4);
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let opts = ScpOptions {
        ae_title: ae_title.map(str::to_owned),
        output_dir: dir.join("received"),
        max_pdu: 32 << 10,
        ..ScpOptions::default()
    };
    tokio::spawn(async move { serve(listener, opts, tx).await });
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            let _ = seen_tx.send(r.answer(status));
        }
    });
    (port, seen_rx)
}

async fn run(mut cmd: Command) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ReceivedObject>) -> ReceivedObject {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an object within 20 s")
        .expect("the SCP runs")
}

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    let ex = make_file(
        dir,
        "ex.dcm",
        true,
        &Spec {
            sop_instance: "2.25.8001",
            size: 128,
            ..Spec::default()
        },
    );
    let im = make_file(
        dir,
        "im.dcm",
        false,
        &Spec {
            sop_instance: "2.25.8002",
            ..Spec::default()
        },
    );
    (ex, im)
}

#[tokio::test]
async fn storescu_sends_several_files_on_one_association_and_echoscu_is_answered() {
    let dir = TempDir::new("scp-storescu");
    let (ex, im) = files(dir.path());
    let jpeg = dcmtk::pydicom_test_files().join("JPEG-lossy.dcm");
    let (port, mut rx) = scp(dir.path(), Some("OUTPOST"), Status(0)).await;
    let port_s = port.to_string();

    let mut echo = Command::new(dcmtk::bin("echoscu"));
    echo.args(["-aec", "OUTPOST", "127.0.0.1", &port_s]);
    let (ok, text) = run(echo).await;
    assert!(ok, "{text}");

    let mut c = Command::new(dcmtk::bin("storescu"));
    c.args(["-R", "-aec", "OUTPOST", "127.0.0.1", &port_s])
        .arg(&ex)
        .arg(&im);
    let (ok, text) = run(c).await;
    assert!(ok, "{text}");
    // A compressed file, proposed in its own syntax (JPEG Extended: -xx).
    let mut c = Command::new(dcmtk::bin("storescu"));
    c.args(["-xx", "-aec", "OUTPOST", "127.0.0.1", &port_s])
        .arg(&jpeg);
    let (ok, text) = run(c).await;
    assert!(ok, "{text}");
    for original in [&ex, &im, &jpeg] {
        let r = next(&mut rx).await;
        let (ts, sent) = data_set_of(original);
        assert_eq!(r.transfer_syntax, ts, "{}", original.display());
        let (got_ts, got) = data_set_of(&r.path);
        assert_eq!(got_ts, ts);
        if original == &jpeg {
            // storescu re-encodes what it reads (not bit-preserving): compare element-wise.
            let diffs = dcmtk::pydicom_differences(&[(jpeg.clone(), r.path.clone())]);
            assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        } else {
            assert!(got == sent, "{}: data set bytes differ", original.display());
        }
        assert_eq!(r.calling_ae, "STORESCU");
        assert_eq!(r.called_ae, "OUTPOST");
        // DICOM JSON without the pixel data
        assert_eq!(r.dataset["00080018"]["Value"][0], r.sop_instance.as_str());
        assert!(r.dataset.get("7FE00010").is_none(), "{}", r.dataset);
    }

    // A wrong called AE title is rejected.
    let mut echo = Command::new(dcmtk::bin("echoscu"));
    echo.args(["-aec", "SOMEONE", "127.0.0.1", &port_s]);
    let (ok, text) = run(echo).await;
    assert!(
        !ok && text.contains("Called AE Title Not Recognized"),
        "{text}"
    );
}

#[tokio::test]
async fn storescu_proposing_implicit_only() {
    let dir = TempDir::new("scp-xi");
    let (ex, _) = files(dir.path());
    let (port, mut rx) = scp(dir.path(), None, Status(0)).await;
    let mut c = Command::new(dcmtk::bin("storescu"));
    c.args(["-xi", "-aec", "ANY", "127.0.0.1", &port.to_string()])
        .arg(&ex);
    let (ok, text) = run(c).await;
    assert!(ok, "{text}");
    let r = next(&mut rx).await;
    assert_eq!(r.transfer_syntax, dicom_net::uids::IMPLICIT_VR_LE);
    let diffs = dcmtk::pydicom_differences(&[(ex.clone(), r.path.clone())]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[tokio::test]
async fn pynetdicom_storescu_is_stored_byte_for_byte() {
    let dir = TempDir::new("scp-pynetdicom");
    let (ex, im) = files(dir.path());
    let (port, mut rx) = scp(dir.path(), Some("OUTPOST"), Status(0)).await;
    let mut c = Command::new(dcmtk::pydicom_python());
    c.args([
        "-m",
        "pynetdicom",
        "storescu",
        "-aec",
        "OUTPOST",
        "127.0.0.1",
    ])
    .arg(port.to_string())
    .arg(&ex)
    .arg(&im);
    let (ok, text) = run(c).await;
    assert!(ok, "{text}");
    for original in [&ex, &im] {
        let r = next(&mut rx).await;
        let (ts, sent) = data_set_of(original);
        let (got_ts, got) = data_set_of(&r.path);
        if got_ts == ts {
            assert!(got == sent, "{}: data set bytes differ", original.display());
        } else {
            let diffs = dcmtk::pydicom_differences(&[(original.clone(), r.path.clone())]);
            assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        }
    }
}

#[tokio::test]
async fn the_application_decides_the_status() {
    let dir = TempDir::new("scp-a700");
    let (ex, _) = files(dir.path());
    let (port, mut rx) = scp(dir.path(), None, Status(0xA700)).await;
    let mut c = Command::new(dcmtk::bin("storescu"));
    c.args(["-aec", "ANY", "127.0.0.1", &port.to_string()])
        .arg(&ex);
    c.arg("-v");
    let (_, text) = run(c).await;
    assert!(text.to_lowercase().contains("a700"), "{text}");
    next(&mut rx).await;
}

#[tokio::test]
async fn over_the_association_limit_echoscu_hears_a_transient_rejection() {
    let dir = TempDir::new("scp-limit");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, _rx) = mpsc::channel::<Received>(1);
    let opts = ScpOptions {
        output_dir: dir.path().join("received"),
        max_associations: 1,
        ..ScpOptions::default()
    };
    tokio::spawn(async move { serve(listener, opts, tx).await });
    // A connection that says nothing holds the one slot (accepted first: the server accepts in
    // order).
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut echo = Command::new(dcmtk::bin("echoscu"));
    echo.args(["127.0.0.1", &port.to_string()]);
    let (ok, text) = run(echo).await;
    assert!(!ok, "{text}");
    assert!(text.contains("Rejected Transient"), "{text}");
    assert!(text.contains("Local Limit Exceeded"), "{text}");
}

/// The same SOP Instance sent twice (two senders, or a resend) keeps both copies: the second is
/// written beside the first, never over it, so each object handed to the application is the one
/// its sender was answered for.
#[tokio::test]
async fn the_same_instance_twice_keeps_both_copies() {
    let dir = TempDir::new("scp-twice");
    let spec = |patient_id| Spec {
        sop_instance: "2.25.8003",
        patient_id,
        size: 64,
        ..Spec::default()
    };
    let first = make_file(dir.path(), "first.dcm", true, &spec("FIRST"));
    let second = make_file(dir.path(), "second.dcm", true, &spec("SECOND"));
    let (port, mut rx) = scp(dir.path(), None, Status(0)).await;
    let mut got = Vec::new();
    for file in [&first, &second] {
        let mut c = Command::new(dcmtk::bin("storescu"));
        c.args(["-aec", "ANY", "127.0.0.1", &port.to_string()])
            .arg(file);
        let (ok, text) = run(c).await;
        assert!(ok, "{text}");
        got.push(next(&mut rx).await);
    }
    assert_eq!(got[0].path.file_name().unwrap(), "2.25.8003.dcm");
    assert_eq!(got[1].path.file_name().unwrap(), "2.25.8003.1.dcm");
    for (r, (original, patient)) in got.iter().zip([(&first, "FIRST"), (&second, "SECOND")]) {
        assert_eq!(r.dataset["00100020"]["Value"][0], patient);
        assert_eq!(
            data_set_of(&r.path),
            data_set_of(original),
            "{}",
            r.path.display()
        );
    }
}
