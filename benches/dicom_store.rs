//! `dicom_store`: 100 files of ~525 KB (512×512 16-bit CT, Explicit VR LE) stored over one
//! association to dcmtk's `storescp --ignore`, started with `TCP_NODELAY=1` (so neither Nagle's
//! delay on its side nor the disk is measured). Throughput is data-set bytes per second.
//!
//! Rows, all against the same `storescp` in the same run:
//! - `outpost`: the library's `Association::store_file`, in this process (connect, associate,
//!   100 C-STOREs, release).
//! - `dcmtk-storescu`: dcmtk's `storescu` with `TCP_NODELAY=1` (Debian's dcmtk 3.6.7 turns
//!   Nagle's algorithm off only when that variable is set), one process per iteration;
//!   `dcmtk-storescu-startup` is the same command with one 4×4 image: its start-up and
//!   association, measured on their own.
//! - `pynetdicom-storescu` / `pynetdicom-storescu-startup`: pynetdicom 3.0.4's `storescu` app
//!   (`python -m pynetdicom storescu`), likewise. pynetdicom has no TCP_NODELAY setting; it runs
//!   as shipped.
//! - `loopback-floor`: the same bytes Outpost sends (A-ASSOCIATE-RQ, each C-STORE-RQ and its
//!   data set in PDVs of the SCP's maximum, A-RELEASE-RQ), built beforehand and written through
//!   a raw socket to the same `storescp`, reading its answers: what any SCU costs at least
//!   against this SCP.
//!
//! Every object is checked to have arrived: each row counts what it sent, and at the end
//! `storescp -v`'s log must hold exactly that many "Received Store Request" lines.
//!
//! `cargo bench -p outpost-benches --bench dicom_store` (dcmtk and pynetdicom from
//! `scripts/peers.sh`); `scripts/bench-dicom-store` runs it five times and prints medians with
//! ranges; `cargo test --benches` runs one short pass.

#[path = "../crates/dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;

use std::cell::Cell;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dcmtk::{Spec, TempDir, make_file};
use dicom_net::dimse::{self, Command as Dimse, Reassembler};
use dicom_net::pdu::{self, Associate, Pdu, PresentationContext, UserInfo};
use dicom_net::{Association, Options, Proposal, uids};

fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The bytes Outpost puts on the wire for this session: the A-ASSOCIATE-RQ, then (after the
/// A-ASSOCIATE-AC, which fixes the fragment size) the C-STOREs and the A-RELEASE-RQ.
fn session_bytes(files: &[PathBuf], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let (_, data) = dcmtk::data_set_of(f);
        let obj = dicom_net::inspect(&std::fs::read(f).unwrap()).unwrap();
        let cmd = Dimse {
            affected_sop_class: Some(obj.sop_class),
            command_field: dimse::C_STORE_RQ,
            message_id: Some(i as u16 + 1),
            priority: Some(0),
            data_set_type: 1,
            affected_sop_instance: Some(obj.sop_instance),
            ..Dimse::default()
        };
        pdu::encode_pdata(1, true, true, &cmd.encode(), &mut out);
        let mut chunks = data.chunks(fragment).peekable();
        while let Some(c) = chunks.next() {
            pdu::encode_pdata(1, false, chunks.peek().is_none(), c, &mut out);
        }
    }
    pdu::encode(&Pdu::ReleaseRq, &mut out);
    out
}

fn associate_rq() -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode(
        &Pdu::AssociateRq(Associate {
            called_ae: "STORESCP".into(),
            calling_ae: "FLOOR".into(),
            application_context: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![PresentationContext {
                id: 1,
                abstract_syntax: dcmtk::CT_IMAGE.into(),
                transfer_syntaxes: vec![uids::EXPLICIT_VR_LE.into()],
                result: 0,
            }],
            user: UserInfo {
                max_length: Some(256 << 10),
                implementation_class_uid: uids::IMPLEMENTATION_CLASS_UID.into(),
                ..UserInfo::default()
            },
        }),
        &mut out,
    );
    out
}

/// Reads PDUs until `until` says stop; returns the C-STORE-RSPs with status Success.
fn read_until(
    s: &mut std::net::TcpStream,
    buf: &mut BytesMut,
    mut until: impl FnMut(&Pdu) -> bool,
) -> usize {
    let mut ok = 0;
    let mut r = Reassembler::new(1 << 20);
    let mut chunk = [0u8; 64 << 10];
    loop {
        while let Some(p) = pdu::decode(buf, 0).unwrap() {
            if let Pdu::PData(pdvs) = &p {
                for pdv in pdvs.clone() {
                    if let Some(m) = r.push(pdv).unwrap()
                        && m.command.status == Some(0)
                    {
                        ok += 1;
                    }
                }
            }
            if until(&p) {
                return ok;
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "storescp closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn dicom_store(c: &mut Criterion) {
    let (count, size) = if is_bench() { (100, 512) } else { (3, 64) };
    let dir = TempDir::new("bench-store");
    let files_dir = dir.path().join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let files: Vec<PathBuf> = (0..count)
        .map(|i| {
            let uid = format!("2.25.7{i:04}");
            make_file(
                &files_dir,
                &format!("f{i:03}.dcm"),
                true,
                &Spec {
                    sop_instance: &uid,
                    size,
                    ..Spec::default()
                },
            )
        })
        .collect();
    for f in std::fs::read_dir(&files_dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e != "dcm") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let tiny = make_file(
        dir.path(),
        "tiny.dcm",
        true,
        &Spec {
            sop_instance: "2.25.79999",
            size: 4,
            with_sequence: false,
            ..Spec::default()
        },
    );
    let bytes: u64 = files
        .iter()
        .map(|f| dcmtk::data_set_of(f).1.len() as u64)
        .sum();
    let scp = dcmtk::storescp(dir.path(), &["-v", "--ignore"], &[("TCP_NODELAY", "1")]);
    let port = scp.port.to_string();
    let sent = Cell::new(0u64);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = Options {
        called_ae: "STORESCP".into(),
        ..Options::default()
    };
    let mut proposals = Proposal::for_storage([(dcmtk::CT_IMAGE, uids::EXPLICIT_VR_LE)]);
    proposals.push(Proposal::verification());

    let mut g = c.benchmark_group("dicom_store");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if is_bench() { 8 } else { 1 }));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(bytes));
    let input = format!("{count}x{}KB", bytes / count as u64 / 1000);
    g.bench_function(BenchmarkId::new("outpost", &input), |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut a = Association::connect(scp.addr(), &opts, &proposals)
                    .await
                    .unwrap();
                for f in &files {
                    let r = a.store_file(f).await.unwrap();
                    assert!(r.status.is_ok() && !r.transcoded);
                }
                a.release().await.unwrap();
            });
            sent.set(sent.get() + count as u64);
        })
    });

    let storescu = |paths: &[PathBuf]| {
        let st = Command::new(dcmtk::bin("storescu"))
            .env("TCP_NODELAY", "1")
            .args(["-aet", "STORESCU", "-aec", "STORESCP", "127.0.0.1", &port])
            .args(paths)
            .status()
            .unwrap();
        assert!(st.success());
        sent.set(sent.get() + paths.len() as u64);
    };
    g.bench_function(BenchmarkId::new("dcmtk-storescu", &input), |b| {
        b.iter(|| storescu(&files))
    });

    let python = dcmtk::pydicom_python();
    let pynetdicom = |paths: &[PathBuf]| {
        let st = Command::new(&python)
            .args(["-m", "pynetdicom", "storescu", "-aet", "PYNETDICOM", "-aec"])
            .args(["STORESCP", "127.0.0.1", &port])
            .args(paths)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        sent.set(sent.get() + paths.len() as u64);
    };
    g.bench_function(BenchmarkId::new("pynetdicom-storescu", &input), |b| {
        b.iter(|| pynetdicom(&files))
    });

    // The floor: Outpost's bytes, replayed raw.
    let rq = associate_rq();
    let mut probe = std::net::TcpStream::connect(scp.addr()).unwrap();
    probe.write_all(&rq).unwrap();
    let mut buf = BytesMut::new();
    let mut peer_max = 0;
    read_until(&mut probe, &mut buf, |p| {
        if let Pdu::AssociateAc(ac) = p {
            peer_max = ac.user.max_length.unwrap_or(16384);
        }
        true
    });
    let mut abort = Vec::new();
    pdu::encode(
        &Pdu::Abort {
            source: 0,
            reason: 0,
        },
        &mut abort,
    );
    probe.write_all(&abort).unwrap();
    drop(probe);
    let session = session_bytes(&files, (peer_max as usize - 6) & !1);
    g.bench_function(BenchmarkId::new("loopback-floor", &input), |b| {
        b.iter(|| {
            let mut s = std::net::TcpStream::connect(scp.addr()).unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&rq).unwrap();
            let mut buf = BytesMut::new();
            read_until(&mut s, &mut buf, |p| matches!(p, Pdu::AssociateAc(_)));
            for piece in session.chunks(256 << 10) {
                s.write_all(piece).unwrap();
            }
            let ok = read_until(&mut s, &mut buf, |p| matches!(p, Pdu::ReleaseRp));
            assert_eq!(ok, count);
            sent.set(sent.get() + count as u64);
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("dcmtk-storescu-startup", "1x4x4"), |b| {
        b.iter(|| storescu(std::slice::from_ref(&tiny)))
    });
    g.bench_function(
        BenchmarkId::new("pynetdicom-storescu-startup", "1x4x4"),
        |b| b.iter(|| pynetdicom(std::slice::from_ref(&tiny))),
    );
    g.finish();

    // Every object arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = scp.log_text().matches("Received Store Request").count() as u64;
        if got == sent.get() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "storescp received {got} objects, {} were sent",
            sent.get()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "dicom_store: all {} objects arrived at storescp",
        sent.get()
    );
}

criterion_group!(benches, dicom_store);
criterion_main!(benches);
