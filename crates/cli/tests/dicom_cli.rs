//! `outpost dicom echo|store|find` against dcmtk's servers.

#[path = "../../dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;
mod support;

use std::time::Duration;

use dcmtk::{Spec, TempDir, make_file};
use support::{agent_process, outpost, relay_process, run};

const LIMIT: Duration = Duration::from_secs(60);

fn dicom(args: &[&str]) -> (i32, String, String) {
    let mut c = outpost();
    c.arg("dicom").args(args);
    run("outpost dicom", c, LIMIT)
}

#[test]
fn echo_ok_and_refused() {
    let dir = TempDir::new("cli-echo");
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    let port = scp.port.to_string();
    let (code, out, err) = dicom(&["echo", "127.0.0.1", &port, "--called-aet", "STORESCP"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("C-ECHO STORESCP") && out.contains("Success"),
        "{out}"
    );

    let nobody = support::ClosedPort::new();
    let closed = nobody.port().to_string();
    let (code, _, err) = dicom(&["echo", "127.0.0.1", &closed]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn store_a_directory_reports_each_file() {
    let dir = TempDir::new("cli-store");
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    make_file(
        &files,
        "a.dcm",
        true,
        &Spec {
            sop_instance: "2.25.301",
            ..Spec::default()
        },
    );
    make_file(
        &files.join("sub"),
        "b.dcm",
        false,
        &Spec {
            sop_instance: "2.25.302",
            ..Spec::default()
        },
    );
    make_file(
        &files,
        "c.dcm",
        true,
        &Spec {
            sop_instance: "2.25.303",
            sop_class: "1.2.826.0.1.3680043.9.9999.1",
            ..Spec::default()
        },
    );
    for f in std::fs::read_dir(&files)
        .unwrap()
        .chain(std::fs::read_dir(files.join("sub")).unwrap())
    {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e != "dcm") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    let port = scp.port.to_string();
    let files_s = files.display().to_string();
    let (code, out, err) = dicom(&[
        "store",
        "127.0.0.1",
        &port,
        &files_s,
        "--called-aet",
        "STORESCP",
    ]);
    // One file could not go: the exit code says so, the other two went.
    assert_eq!(code, 1, "{out}{err}");
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{out}"))
            .to_owned()
    };
    assert!(line("a.dcm").starts_with("OK"), "{out}");
    assert!(line("b.dcm").starts_with("OK"), "{out}");
    let c = line("c.dcm");
    assert!(
        c.starts_with("FAILED") && c.contains("abstract syntax (SOP class) not supported"),
        "{c}"
    );
    assert!(out.contains("Stored 2 of 3 files"), "{out}");
    assert!(dir.path().join("in/CT.2.25.301").exists());
    assert!(dir.path().join("in/CT.2.25.302").exists());

    // Not a terminal here: no progress bar in the output.
    assert!(!err.contains('\r'), "{err:?}");
}

#[test]
fn store_then_find_through_dcmqrscp() {
    let dir = TempDir::new("cli-qr");
    let qr = dcmtk::dcmqrscp(dir.path());
    let port = qr.port.to_string();
    let a = make_file(
        dir.path(),
        "a.dcm",
        true,
        &Spec {
            sop_instance: "2.25.401",
            study_uid: "2.25.400",
            ..Spec::default()
        },
    );
    let b = make_file(
        dir.path(),
        "b.dcm",
        true,
        &Spec {
            sop_instance: "2.25.411",
            study_uid: "2.25.410",
            patient_name: "Roe^Jane",
            patient_id: "PID002",
            ..Spec::default()
        },
    );
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let (code, out, err) = dicom(&[
        "store",
        "127.0.0.1",
        &port,
        &a_s,
        &b_s,
        "--called-aet",
        "QRSCP",
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // Study root, JSON.
    let (code, out, err) = dicom(&[
        "find",
        "127.0.0.1",
        &port,
        "--called-aet",
        "QRSCP",
        "--model",
        "study",
        "-k",
        "PatientName=Doe*",
        "-k",
        "StudyInstanceUID",
        "-k",
        "0010,0020",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let matches = v.as_array().unwrap();
    assert_eq!(matches.len(), 1, "{out}");
    assert_eq!(matches[0]["0020000D"]["Value"][0], "2.25.400");
    assert_eq!(matches[0]["00100020"]["Value"][0], "PID001");
    assert!(err.contains("1 match"), "{err}");

    // Patient root, human output.
    let (code, out, err) = dicom(&[
        "find",
        "127.0.0.1",
        &port,
        "--called-aet",
        "QRSCP",
        "--model",
        "patient",
        "-k",
        "PatientName",
        "-k",
        "PatientID",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("(0010,0010) PN PatientName")
            && out.contains("Doe^John")
            && out.contains("Roe^Jane"),
        "{out}"
    );
    assert!(out.contains("2 matches (0x0000 Success)"), "{out}");

    // --limit 1 cancels after the first match.
    let (code, out, err) = dicom(&[
        "find",
        "127.0.0.1",
        &port,
        "--called-aet",
        "QRSCP",
        "--model",
        "patient",
        "-k",
        "PatientName",
        "--limit",
        "1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Match 1"), "{out}");
    // At most N: matches the SCP sent before it read the C-CANCEL are not printed.
    assert!(!out.contains("Match 2"), "{out}");
    assert!(out.contains("1 match ("), "{out}");
    let (code, out, err) = dicom(&[
        "find",
        "127.0.0.1",
        &port,
        "--called-aet",
        "QRSCP",
        "--model",
        "patient",
        "-k",
        "PatientName",
        "--limit",
        "1",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{out}");

    // No match.
    let (code, out, _) = dicom(&[
        "find",
        "127.0.0.1",
        &port,
        "--called-aet",
        "QRSCP",
        "-k",
        "PatientName=Nobody",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("0 matches"), "{out}");

    // A wrong called AE title: rejected, with the reason.
    let (code, _, err) = dicom(&["echo", "127.0.0.1", &port, "--called-aet", "WRONG"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("called AE title not recognized"), "{err}");

    // The same with store: each file's FAILED line says why it was not sent (reason and
    // source of the rejection), not only stderr.
    let (code, out, err) = dicom(&["store", "127.0.0.1", &port, &a_s, "--called-aet", "WRONG"]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("a.dcm"))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAILED")
            && line.contains("not sent")
            && line.contains("called AE title not recognized")
            && line.contains("service user"),
        "{out}"
    );
    // A refused connection, likewise.
    let nobody = support::ClosedPort::new();
    let closed = nobody.port().to_string();
    let (code, out, err) = dicom(&["store", "127.0.0.1", &closed, &a_s]);
    assert_eq!(code, 3, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("a.dcm"))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAILED") && line.to_lowercase().contains("refused"),
        "{out}"
    );

    // A bad key is a usage error.
    let (code, _, err) = dicom(&["find", "127.0.0.1", &port, "-k", "NotAKeyword=1"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn worklist_find_with_a_sequence_key() {
    let dir = TempDir::new("cli-wl");
    let wl = dcmtk::wlmscpfs(dir.path());
    let port = wl.port.to_string();
    let (code, out, err) = dicom(&[
        "find",
        "127.0.0.1",
        &port,
        "--called-aet",
        "WLSCP",
        "--model",
        "worklist",
        "-k",
        "ScheduledProcedureStepSequence[0].Modality=CT",
        "-k",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
        "-k",
        "PatientName",
        "-k",
        "AccessionNumber",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v[0]["00100010"]["Value"][0]["Alphabetic"],
        "Worklist^Patient"
    );
    assert_eq!(v[0]["00080050"]["Value"][0], "ACC100");
    assert_eq!(
        v[0]["00400100"]["Value"][0]["00400001"]["Value"][0],
        "CTSCANNER"
    );
}

/// Relay and agent as processes, storescp as the PACS: `outpost push --file` and the real
/// Medplum CLI both store a file through the agent.
#[test]
fn push_a_dicom_file_through_relay_and_agent() {
    use base64::Engine;
    let dir = TempDir::new("cli-push");
    let file = make_file(
        dir.path(),
        "ct.dcm",
        true,
        &Spec {
            sop_instance: "2.25.601",
            size: 64,
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    // A PACS that takes Implicit VR Little Endian only: what the field sends must be converted.
    let xi_dir = TempDir::new("cli-push-xi");
    let scp_xi = dcmtk::storescp(xi_dir.path(), &["+xi"], &[]);
    let agent_id = "dicom-agent";
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
                "valueReference": {"reference": format!("Agent/{agent_id}")}}]}},
        {"resource": {"resourceType": "Agent", "id": agent_id, "name": "DICOM agent", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "pacs",
            "url": format!("dicom://127.0.0.1:{}?calledAet=STORESCP&callingAet=OUTPOST", scp.port)}},
        {"resource": {"resourceType": "Device", "id": "pacs-xi",
            "url": format!("dicom://127.0.0.1:{}?calledAet=STORESCP&callingAet=OUTPOST", scp_xi.port)}},
    ]});
    let (_relay, base) = relay_process(dir.path(), &bundle, &[]);
    let _agent = agent_process(
        &base,
        ("agent", "agent-secret-0123456"),
        agent_id,
        &dir.path().join("agent"),
        LIMIT,
    );

    let mut cmd = outpost();
    cmd.args([
        "push",
        agent_id,
        "--destination",
        "Device/pacs",
        "--content-type",
        "application/dicom",
        "--wait",
        "--file",
    ])
    .arg(&file)
    .args([
        "--base-url",
        &base,
        "--client-id",
        "caller",
        "--client-secret",
        "caller-secret-0123456",
    ]);
    let (code, out, err) = run("outpost push", cmd, LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "0x0000");
    assert_eq!(v["sopInstanceUid"], "2.25.601");

    // Files as the field has them, pushed to the Implicit-only PACS: odd Pixel Data (case 08),
    // a private UN sequence (case 10), no meta header and Big Endian, Deflate.
    let corpus = dcmtk::pydicom_test_files();
    let field = [
        dcmtk::case_file("08-odd-pixel.dcm"),
        dcmtk::case_file("10-un-undefined.dcm"),
        corpus.join("ExplVR_BigEndNoMeta.dcm"),
        corpus.join("image_dfl.dcm"),
        corpus.join("MR_small_bigendian.dcm"),
    ];
    let mut pairs = Vec::new();
    for f in &field {
        let mut cmd = outpost();
        cmd.args([
            "push",
            agent_id,
            "--destination",
            "Device/pacs-xi",
            "--content-type",
            "application/dicom",
            "--wait",
            "--file",
        ])
        .arg(f)
        .args([
            "--base-url",
            &base,
            "--client-id",
            "caller",
            "--client-secret",
            "caller-secret-0123456",
        ]);
        let (code, out, err) = run("outpost push", cmd, LIMIT);
        assert_eq!(code, 0, "{}: {out}{err}", f.display());
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["status"], "0x0000", "{v}");
        assert_eq!(v["transferSyntaxUid"], "1.2.840.10008.1.2", "{v}");
        let inst = v["sopInstanceUid"].as_str().unwrap();
        let got = dcmtk::stored(xi_dir.path(), inst);
        let keep = xi_dir.path().join(f.file_name().unwrap());
        std::fs::rename(got, &keep).unwrap();
        pairs.push((f.clone(), keep));
    }
    let diffs = dcmtk::pydicom_differences(&pairs);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let stored = dir.path().join("in/CT.2.25.601");
    assert_eq!(dcmtk::data_set_of(&stored).1, dcmtk::data_set_of(&file).1);
    std::fs::remove_file(&stored).unwrap();

    // The same push from the real Medplum CLI: the file base64 in the $push body.
    let body = serde_json::json!({
        "destination": "Device/pacs",
        "contentType": "application/dicom",
        "body": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&file).unwrap()),
        "waitForResponse": true,
    });
    let mut cmd = support::medplum();
    cmd.args([
        "post",
        &format!("Agent/{agent_id}/$push"),
        &body.to_string(),
    ])
    .args([
        "--base-url",
        &base,
        "--client-id",
        "caller",
        "--client-secret",
        "caller-secret-0123456",
    ]);
    let (code, out, err) = run("medplum post", cmd, LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0x0000") && out.contains("2.25.601"), "{out}");
    assert!(stored.exists());
}

/// `outpost dicom listen` as a PACS: dcmtk's storescu sends two files on one association,
/// echoscu is answered, `outpost dicom store` sends case 08 (odd Pixel Data, padded), and
/// pynetdicom's storescu a third file; each arrives as a Part 10 file with the sent data set.
#[test]
fn listen_stores_what_storescu_pynetdicom_and_outpost_send() {
    let dir = TempDir::new("cli-listen");
    let out_dir = dir.path().join("received");
    let a = make_file(
        dir.path(),
        "a.dcm",
        true,
        &Spec {
            sop_instance: "2.25.701",
            ..Spec::default()
        },
    );
    let b = make_file(
        dir.path(),
        "b.dcm",
        false,
        &Spec {
            sop_instance: "2.25.702",
            ..Spec::default()
        },
    );
    let mut cmd = outpost();
    cmd.args([
        "dicom",
        "listen",
        "0",
        "--bind",
        "127.0.0.1",
        "--ae-title",
        "OUTPOST",
    ])
    .arg("--output-dir")
    .arg(&out_dir);
    let mut scp = support::Proc::spawn("outpost dicom listen", cmd);
    let line = scp.wait_for("Listening on ", LIMIT);
    let addr = line.split_whitespace().nth(2).unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();

    let mut c = std::process::Command::new(dcmtk::bin("echoscu"));
    c.args(["-aec", "OUTPOST", "127.0.0.1", &port]);
    let (code, out, err) = run("echoscu", c, LIMIT);
    assert_eq!(code, 0, "{out}{err}");

    let mut c = std::process::Command::new(dcmtk::bin("storescu"));
    c.args(["-aec", "OUTPOST", "127.0.0.1", &port])
        .arg(&a)
        .arg(&b);
    let (code, out, err) = run("storescu", c, LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    for (f, inst) in [(&a, "2.25.701"), (&b, "2.25.702")] {
        let l = scp.wait_for(
            &format!("STORED 1.2.840.10008.5.1.4.1.1.2 {inst} from STORESCU"),
            LIMIT,
        );
        let path = std::path::PathBuf::from(l.rsplit(" -> ").next().unwrap());
        assert_eq!(dcmtk::data_set_of(&path), dcmtk::data_set_of(f), "{l}");
    }

    let case = dcmtk::case_file("08-odd-pixel.dcm");
    let (code, out, err) = dicom(
        &["store", "127.0.0.1", &port, "--called-aet", "OUTPOST"]
            .into_iter()
            .chain([case.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let inst = dicom_net::inspect(&std::fs::read(&case).unwrap())
        .unwrap()
        .sop_instance;
    let l = scp.wait_for(&format!("{inst} from OUTPOST"), LIMIT);
    let path = std::path::PathBuf::from(l.rsplit(" -> ").next().unwrap());
    let diffs = dcmtk::pydicom_differences(&[(case.clone(), path)]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    let c_file = make_file(
        dir.path(),
        "c.dcm",
        true,
        &Spec {
            sop_instance: "2.25.703",
            ..Spec::default()
        },
    );
    let mut c = std::process::Command::new(dcmtk::pydicom_python());
    c.args([
        "-m",
        "pynetdicom",
        "storescu",
        "-aec",
        "OUTPOST",
        "127.0.0.1",
        &port,
    ])
    .arg(&c_file);
    let (code, out, err) = run("pynetdicom storescu", c, LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    let l = scp.wait_for("2.25.703 from", LIMIT);
    let path = std::path::PathBuf::from(l.rsplit(" -> ").next().unwrap());
    let diffs = dcmtk::pydicom_differences(&[(c_file.clone(), path)]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
