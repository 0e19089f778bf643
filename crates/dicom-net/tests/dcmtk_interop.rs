//! The SCU against dcmtk's `storescp`, `dcmqrscp` and `wlmscpfs`.

mod dcmtk;

use std::time::{Duration, Instant};

use dcmtk::{CT_IMAGE, Spec, TempDir, data_set_of, make_file, stored};
use dicom_net::{
    Association, DataSet, Element, Error, Options, Proposal, StatusKind, Value, dict, uids,
};

fn opts(called: &str) -> Options {
    Options {
        calling_ae: "OUTPOST".into(),
        called_ae: called.into(),
        ..Options::default()
    }
}

fn storage_proposals(files: &[&std::path::Path]) -> Vec<Proposal> {
    let metas: Vec<_> = files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            dicom_net::part10::read_meta(&b).unwrap().0
        })
        .collect();
    let mut p = Proposal::for_storage(
        metas
            .iter()
            .map(|m| (m.sop_class.as_str(), m.transfer_syntax.as_str())),
    );
    p.push(Proposal::verification());
    p
}

#[tokio::test]
async fn echo_against_storescp() {
    let dir = TempDir::new("echo");
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    let mut a = Association::connect(scp.addr(), &opts("STORESCP"), &[Proposal::verification()])
        .await
        .unwrap();
    assert!(a.contexts()[0].accepted());
    assert_eq!(a.contexts()[0].transfer_syntax, uids::IMPLICIT_VR_LE);
    // dcmtk advertises 16384 by default: fragments of 16378.
    assert_eq!(a.max_fragment(), 16_378);
    assert!(
        a.peer()
            .user
            .implementation_class_uid
            .starts_with("1.2.276.0.7230010")
    );
    let status = a.echo().await.unwrap();
    assert_eq!(status.kind(), StatusKind::Success);
    // Twice on one association.
    assert!(a.echo().await.unwrap().is_ok());
    a.release().await.unwrap();
}

#[tokio::test]
async fn store_explicit_and_implicit_files_byte_for_byte() {
    let dir = TempDir::new("store");
    let ex = make_file(
        dir.path(),
        "ex.dcm",
        true,
        &Spec {
            sop_instance: "2.25.11",
            size: 256,
            ..Spec::default()
        },
    );
    let im = make_file(
        dir.path(),
        "im.dcm",
        false,
        &Spec {
            sop_instance: "2.25.12",
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    let proposals = storage_proposals(&[&ex, &im]);
    let mut a = Association::connect(scp.addr(), &opts("STORESCP"), &proposals)
        .await
        .unwrap();
    for (path, ts, inst) in [
        (&ex, uids::EXPLICIT_VR_LE, "2.25.11"),
        (&im, uids::IMPLICIT_VR_LE, "2.25.12"),
    ] {
        let r = a.store_file(path).await.unwrap();
        assert_eq!(r.status.kind(), StatusKind::Success, "{r:?}");
        assert_eq!(r.sop_instance, inst);
        assert_eq!(r.transfer_syntax, ts);
        assert!(
            !r.transcoded,
            "the file's own syntax was accepted: sent as is"
        );
        let (sent_ts, sent) = data_set_of(path);
        let (got_ts, got) = data_set_of(&stored(dir.path(), inst));
        assert_eq!(got_ts, sent_ts);
        assert_eq!(r.bytes, sent.len() as u64);
        assert!(
            got == sent,
            "{inst}: storescp received different data set bytes"
        );
    }
    // The in-memory path gives the same result.
    let bytes = std::fs::read(&ex).unwrap();
    std::fs::remove_file(stored(dir.path(), "2.25.11")).unwrap();
    let r = a.store_bytes(&bytes).await.unwrap();
    assert!(r.status.is_ok());
    assert_eq!(
        data_set_of(&stored(dir.path(), "2.25.11")).1,
        data_set_of(&ex).1
    );
    a.release().await.unwrap();
}

#[tokio::test]
async fn a_rejected_context_fails_its_file_only() {
    let dir = TempDir::new("reject-pc");
    let good = make_file(
        dir.path(),
        "good.dcm",
        true,
        &Spec {
            sop_instance: "2.25.21",
            ..Spec::default()
        },
    );
    // A SOP class storescp does not know: its contexts come back "abstract syntax not supported".
    let odd = make_file(
        dir.path(),
        "odd.dcm",
        true,
        &Spec {
            sop_class: "1.2.826.0.1.3680043.9.9999.1",
            sop_instance: "2.25.22",
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    let proposals = storage_proposals(&[&odd, &good]);
    let mut a = Association::connect(scp.addr(), &opts("STORESCP"), &proposals)
        .await
        .unwrap();
    let err = a.store_file(&odd).await.unwrap_err();
    match &err {
        Error::NoContext(why) => {
            assert!(why.contains("1.2.826.0.1.3680043.9.9999.1"), "{why}");
            assert!(
                why.contains("abstract syntax (SOP class) not supported"),
                "{why}"
            );
        }
        other => panic!("expected NoContext, got {other:?}"),
    }
    // The association carries on with the next file.
    let r = a.store_file(&good).await.unwrap();
    assert!(r.status.is_ok());
    a.release().await.unwrap();
}

#[tokio::test]
async fn small_server_pdu_fragments_every_pdv() {
    let dir = TempDir::new("pdu4096");
    let big = make_file(
        dir.path(),
        "big.dcm",
        true,
        &Spec {
            sop_instance: "2.25.31",
            size: 300,
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &["-pdu", "4096"], &[]);
    let mut a = Association::connect(scp.addr(), &opts("STORESCP"), &storage_proposals(&[&big]))
        .await
        .unwrap();
    assert_eq!(a.max_fragment(), 4090);
    let r = a.store_file(&big).await.unwrap();
    assert!(r.status.is_ok(), "{r:?}");
    assert_eq!(
        data_set_of(&stored(dir.path(), "2.25.31")).1,
        data_set_of(&big).1
    );
    a.release().await.unwrap();
}

#[tokio::test]
async fn implicit_only_server_gets_a_transcoded_data_set() {
    let dir = TempDir::new("transcode");
    let ex = make_file(
        dir.path(),
        "ex.dcm",
        true,
        &Spec {
            sop_instance: "2.25.41",
            size: 32,
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &["+xi"], &[]);
    let mut a = Association::connect(scp.addr(), &opts("STORESCP"), &storage_proposals(&[&ex]))
        .await
        .unwrap();
    let explicit_pc = a
        .contexts()
        .iter()
        .find(|c| c.proposed == [uids::EXPLICIT_VR_LE])
        .unwrap();
    assert!(!explicit_pc.accepted(), "+xi refuses Explicit VR LE");
    let r = a.store_file(&ex).await.unwrap();
    assert!(r.status.is_ok(), "{r:?}");
    assert!(r.transcoded);
    assert_eq!(r.transfer_syntax, uids::IMPLICIT_VR_LE);
    a.release().await.unwrap();
    // What arrived equals dcmtk's own conversion of the file to Implicit VR LE.
    let reference = dir.path().join("ref.dcm");
    let st = std::process::Command::new(dcmtk::bin("dcmconv"))
        .args(["+ti"])
        .arg(&ex)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(st.success());
    let (got_ts, got) = data_set_of(&stored(dir.path(), "2.25.41"));
    assert_eq!(got_ts, uids::IMPLICIT_VR_LE);
    let want = DataSet::parse(&data_set_of(&reference).1, false).unwrap();
    assert_eq!(DataSet::parse(&got, false).unwrap(), want);
}

#[tokio::test]
async fn wrong_called_ae_is_rejected_with_its_reason() {
    let dir = TempDir::new("reject-ae");
    let qr = dcmtk::dcmqrscp(dir.path());
    let started = Instant::now();
    let err = Association::connect(qr.addr(), &opts("NOSUCHAE"), &[Proposal::verification()])
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    match err {
        Error::Rejected {
            source_name,
            reason,
            ..
        } => {
            assert_eq!(source_name, "service user");
            assert_eq!(reason, "called AE title not recognized");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn abort_during_store_is_an_error_not_a_hang() {
    let dir = TempDir::new("abort");
    let f = make_file(
        dir.path(),
        "f.dcm",
        true,
        &Spec {
            sop_instance: "2.25.51",
            size: 256,
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &["--abort-during"], &[]);
    let mut a = Association::connect(scp.addr(), &opts("STORESCP"), &storage_proposals(&[&f]))
        .await
        .unwrap();
    let started = Instant::now();
    let err = a.store_file(&f).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(
        matches!(err, Error::Aborted { .. })
            || text.contains("reset")
            || text.contains("closed")
            || text.contains("Broken pipe"),
        "{text}"
    );
    // The association is spent, and says so.
    let again = a.echo().await.unwrap_err().to_string();
    assert!(again.contains("no longer usable"), "{again}");
}

#[tokio::test]
async fn acse_and_dimse_timeouts() {
    // A peer that accepts TCP and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_s, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let o = Options {
        acse_timeout: Duration::from_millis(300),
        ..opts("ANY")
    };
    let err = Association::connect(addr, &o, &[Proposal::verification()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                what: "A-ASSOCIATE-AC",
                ..
            }
        ),
        "{err:?}"
    );
    hold.abort();

    // storescp sleeping in the middle of a C-STORE: the DIMSE timeout fires.
    let dir = TempDir::new("dimse-timeout");
    let f = make_file(
        dir.path(),
        "f.dcm",
        true,
        &Spec {
            sop_instance: "2.25.61",
            ..Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &["--sleep-during", "5"], &[]);
    let o = Options {
        dimse_timeout: Duration::from_millis(800),
        ..opts("STORESCP")
    };
    let mut a = Association::connect(scp.addr(), &o, &storage_proposals(&[&f]))
        .await
        .unwrap();
    let started = Instant::now();
    let err = a.store_file(&f).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                what: "C-STORE-RSP",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// dcmqrscp loaded with three images: two patients, two studies of Doe.
async fn loaded_qrscp(dir: &std::path::Path) -> dcmtk::Server {
    let qr = dcmtk::dcmqrscp(dir);
    let files = [
        make_file(
            dir,
            "a.dcm",
            true,
            &Spec {
                sop_instance: "2.25.101",
                study_uid: "2.25.100",
                ..Spec::default()
            },
        ),
        make_file(
            dir,
            "b.dcm",
            true,
            &Spec {
                sop_instance: "2.25.111",
                study_uid: "2.25.110",
                study_date: "20240301",
                modality: "MR",
                sop_class: dcmtk::MR_IMAGE,
                ..Spec::default()
            },
        ),
        make_file(
            dir,
            "c.dcm",
            false,
            &Spec {
                sop_instance: "2.25.121",
                study_uid: "2.25.120",
                patient_name: "Roe^Jane",
                patient_id: "PID002",
                ..Spec::default()
            },
        ),
    ];
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let mut a = Association::connect(qr.addr(), &opts("QRSCP"), &storage_proposals(&refs))
        .await
        .unwrap();
    for f in &files {
        let r = a.store_file(f).await.unwrap();
        assert!(r.status.is_ok(), "loading {}: {r:?}", f.display());
    }
    a.release().await.unwrap();
    qr
}

fn key(ds: &mut DataSet, keyword: &str, value: &str) {
    ds.set_text(dict::tag_of(keyword).unwrap(), value);
}

fn strings(matches: &[DataSet], keyword: &str) -> Vec<String> {
    let tag = dict::tag_of(keyword).unwrap();
    let mut v: Vec<String> = matches.iter().filter_map(|m| m.string(tag)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn find_patient_and_study_root_against_dcmqrscp() {
    let dir = TempDir::new("qr");
    let qr = loaded_qrscp(dir.path()).await;
    let proposals = [
        Proposal::find(uids::PATIENT_ROOT_FIND),
        Proposal::find(uids::STUDY_ROOT_FIND),
    ];
    let mut a = Association::connect(qr.addr(), &opts("QRSCP"), &proposals)
        .await
        .unwrap();

    // Patient Root, PATIENT level, universal matching.
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "PATIENT");
    key(&mut q, "PatientName", "");
    key(&mut q, "PatientID", "");
    let (matches, end) = a
        .find(uids::PATIENT_ROOT_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(end.status.kind(), StatusKind::Success);
    assert_eq!(strings(&matches, "PatientName"), ["Doe^John", "Roe^Jane"]);
    assert_eq!(strings(&matches, "PatientID"), ["PID001", "PID002"]);

    // Study Root, STUDY level, wildcard.
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "STUDY");
    key(&mut q, "PatientName", "Do*");
    key(&mut q, "StudyInstanceUID", "");
    key(&mut q, "StudyDate", "");
    let (matches, end) = a
        .find(uids::STUDY_ROOT_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(end.status.is_ok());
    assert_eq!(
        strings(&matches, "StudyInstanceUID"),
        ["2.25.100", "2.25.110"]
    );
    assert_eq!(strings(&matches, "StudyDate"), ["20240101", "20240301"]);

    // A SERIES query under one study.
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "SERIES");
    key(&mut q, "StudyInstanceUID", "2.25.110");
    key(&mut q, "SeriesInstanceUID", "");
    key(&mut q, "Modality", "");
    let (matches, _) = a
        .find(uids::STUDY_ROOT_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(strings(&matches, "Modality"), ["MR"]);

    // No match: success with nothing.
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "PATIENT");
    key(&mut q, "PatientName", "Nobody*");
    let (matches, end) = a
        .find(uids::PATIENT_ROOT_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(matches.is_empty());
    assert_eq!(end.status.kind(), StatusKind::Success);
    a.release().await.unwrap();
}

#[tokio::test]
async fn find_cancel_against_dcmqrscp() {
    let dir = TempDir::new("qr-cancel");
    let qr = loaded_qrscp(dir.path()).await;
    let mut a = Association::connect(
        qr.addr(),
        &opts("QRSCP"),
        &[Proposal::find(uids::STUDY_ROOT_FIND)],
    )
    .await
    .unwrap();
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "STUDY");
    key(&mut q, "StudyInstanceUID", "");
    let mut find = a.find(uids::STUDY_ROOT_FIND, &q).await.unwrap();
    let first = find.next().await.unwrap();
    assert!(first.is_some());
    find.cancel().await.unwrap();
    let mut rest = 0;
    while find.next().await.unwrap().is_some() {
        rest += 1;
    }
    // The SCP may have queued every match already: Cancel, or Success after the last.
    let end = find.end().unwrap().status;
    assert!(
        matches!(end.kind(), StatusKind::Cancel | StatusKind::Success),
        "{end}"
    );
    assert!(rest <= 2);
    // The association is still good.
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "STUDY");
    key(&mut q, "StudyInstanceUID", "2.25.120");
    let (matches, _) = a
        .find(uids::STUDY_ROOT_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(matches.len(), 1);
    a.release().await.unwrap();
}

#[tokio::test]
async fn worklist_query_with_a_sequence_against_wlmscpfs() {
    let dir = TempDir::new("wl");
    let wl = dcmtk::wlmscpfs(dir.path());
    let mut a = Association::connect(
        wl.addr(),
        &opts("WLSCP"),
        &[Proposal::find(uids::MODALITY_WORKLIST_FIND)],
    )
    .await
    .unwrap();
    let mut item = DataSet::default();
    key(&mut item, "Modality", "CT");
    key(&mut item, "ScheduledStationAETitle", "");
    key(&mut item, "ScheduledProcedureStepStartDate", "");
    let mut q = DataSet::default();
    key(&mut q, "PatientName", "");
    key(&mut q, "AccessionNumber", "");
    q.set(Element {
        tag: dict::tag_of("ScheduledProcedureStepSequence").unwrap(),
        vr: *b"SQ",
        value: Value::Sequence(vec![item.clone()]),
    });
    let (matches, end) = a
        .find(uids::MODALITY_WORKLIST_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(end.status.is_ok(), "{}", wl.log_text());
    assert_eq!(matches.len(), 1);
    let m = &matches[0];
    assert_eq!(
        m.string(dict::tag_of("PatientName").unwrap()).as_deref(),
        Some("Worklist^Patient")
    );
    assert_eq!(
        m.string(dict::tag_of("AccessionNumber").unwrap())
            .as_deref(),
        Some("ACC100")
    );
    let Some(Element {
        value: Value::Sequence(items),
        ..
    }) = m.get(dict::tag_of("ScheduledProcedureStepSequence").unwrap())
    else {
        panic!("no sequence in {m:?}");
    };
    assert_eq!(
        items[0]
            .string(dict::tag_of("ScheduledStationAETitle").unwrap())
            .as_deref(),
        Some("CTSCANNER")
    );
    assert_eq!(
        items[0]
            .string(dict::tag_of("ScheduledProcedureStepStartDate").unwrap())
            .as_deref(),
        Some("20240102")
    );

    // An MR worklist has nothing.
    key(&mut item, "Modality", "MR");
    q.set(Element {
        tag: dict::tag_of("ScheduledProcedureStepSequence").unwrap(),
        vr: *b"SQ",
        value: Value::Sequence(vec![item]),
    });
    let (matches, end) = a
        .find(uids::MODALITY_WORKLIST_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(end.status.is_ok());
    assert!(matches.is_empty());
    a.release().await.unwrap();
}

#[tokio::test]
async fn a_ct_store_to_dcmqrscp_is_found_again() {
    // Store and find on one association: C-STORE and C-FIND contexts side by side.
    let dir = TempDir::new("qr-mixed");
    let qr = dcmtk::dcmqrscp(dir.path());
    let f = make_file(
        dir.path(),
        "f.dcm",
        false,
        &Spec {
            sop_instance: "2.25.201",
            study_uid: "2.25.200",
            ..Spec::default()
        },
    );
    let mut proposals = storage_proposals(&[&f]);
    proposals.push(Proposal::find(uids::STUDY_ROOT_FIND));
    let mut a = Association::connect(qr.addr(), &opts("QRSCP"), &proposals)
        .await
        .unwrap();
    assert!(a.store_file(&f).await.unwrap().status.is_ok());
    let mut q = DataSet::default();
    key(&mut q, "QueryRetrieveLevel", "IMAGE");
    key(&mut q, "StudyInstanceUID", "2.25.200");
    key(&mut q, "SeriesInstanceUID", "2.25.200.1");
    key(&mut q, "SOPInstanceUID", "");
    let (matches, _) = a
        .find(uids::STUDY_ROOT_FIND, &q)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(strings(&matches, "SOPInstanceUID"), ["2.25.201"]);
    assert_eq!(
        matches[0]
            .string(dict::tag_of("SOPInstanceUID").unwrap())
            .unwrap(),
        "2.25.201"
    );
    a.release().await.unwrap();
    let _ = CT_IMAGE;
}
