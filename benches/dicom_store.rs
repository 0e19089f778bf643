//! `dicom_store`: 100 files of ~525 KB (512×512 16-bit CT, Explicit VR LE) stored over one
//! association to dcmtk's `storescp --ignore` (started with `TCP_NODELAY=1`, so neither Nagle's
//! delay on its side nor the disk is measured), by Outpost's SCU and by dcmtk's `storescu` in
//! the same run. Throughput is data-set bytes per second.
//!
//! Each iteration is a whole session: connect, associate, 100 C-STOREs, release. dcmtk's side
//! includes starting the `storescu` process (a few ms of the ~1 s an iteration takes).
//!
//! Two reference rows: `dcmtk-storescu-startup` (storescu sending one 64-byte image: its
//! process start and association) and `loopback-floor` (the same bytes through a loopback
//! socket into a reader that drops them).
//!
//! `cargo bench -p outpost-benches --bench dicom_store` (dcmtk from `scripts/test` or
//! `apt-get install dcmtk`); `cargo test --benches` runs one short pass of both.

#[path = "../crates/dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dcmtk::{Spec, TempDir, make_file};
use dicom_net::{Association, Options, Proposal};

fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn dicom_store(c: &mut Criterion) {
    let (count, size) = if is_bench() { (100, 512) } else { (5, 64) };
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
    let bytes: u64 = files
        .iter()
        .map(|f| dcmtk::data_set_of(f).1.len() as u64)
        .sum();
    let scp = dcmtk::storescp(dir.path(), &["--ignore"], &[("TCP_NODELAY", "1")]);
    let port = scp.port.to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = Options {
        called_ae: "STORESCP".into(),
        ..Options::default()
    };
    let mut proposals = Proposal::for_storage([(dcmtk::CT_IMAGE, dicom_net::uids::EXPLICIT_VR_LE)]);
    proposals.push(Proposal::verification());

    let mut g = c.benchmark_group("dicom_store");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
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
            })
        })
    });
    g.bench_function(BenchmarkId::new("dcmtk-storescu", &input), |b| {
        b.iter(|| {
            let st = Command::new(dcmtk::bin("storescu"))
                .args(["-aet", "STORESCU", "-aec", "STORESCP", "127.0.0.1", &port])
                .args(&files)
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    // What starting storescu and one association cost by themselves (one 64-byte image).
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
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("dcmtk-storescu-startup", "1x64B"), |b| {
        b.iter(|| {
            let st = Command::new(dcmtk::bin("storescu"))
                .args(["-aet", "STORESCU", "-aec", "STORESCP", "127.0.0.1", &port])
                .arg(&tiny)
                .status()
                .unwrap();
            assert!(st.success());
        })
    });
    // The floor: the same number of bytes through a loopback socket to a reader that discards
    // them (no DICOM on either side).
    g.throughput(Throughput::Bytes(bytes));
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in sink.incoming() {
            let mut s = s.unwrap();
            let mut buf = vec![0u8; 256 << 10];
            let mut left = bytes;
            while left > 0 {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                left -= n as u64;
            }
            s.write_all(b"k").unwrap();
        }
    });
    let chunk = vec![0x5Au8; 256 << 10];
    g.bench_function(BenchmarkId::new("loopback-floor", &input), |b| {
        b.iter(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(sink_addr).unwrap();
            s.set_nodelay(true).unwrap();
            let mut left = bytes as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n]).unwrap();
                left -= n;
            }
            let mut k = [0u8; 1];
            s.read_exact(&mut k).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, dicom_store);
criterion_main!(benches);
