//! The corpus: the test files pydicom's wheel ships (real files written by GDCM, dcmtk and
//! vendor software: no meta header, Big Endian, Deflate, odd lengths, private sequences,
//! compressed pixel data, truncated files), each stored by `outpost dicom store` and by dcmtk's
//! `storescu -R` to `storescp +xa` and to `storescp +xi`. Every file storescu stores, Outpost
//! stores; what Outpost stored is compared element by element with the original (pydicom); a
//! file it does not store has its reason on its FAILED line.

#[path = "../../dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dcmtk::TempDir;
use support::{outpost, run};

const LIMIT: Duration = Duration::from_secs(60);

/// Moves what storescp wrote into `got/` under `name`; whether anything arrived.
fn collect(dir: &Path, name: &str) -> Option<PathBuf> {
    let arrived: Vec<PathBuf> = std::fs::read_dir(dir.join("in"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let first = arrived.first()?;
    let keep = dir.join("got").join(name);
    std::fs::create_dir_all(dir.join("got")).unwrap();
    std::fs::rename(first, &keep).unwrap();
    for rest in &arrived[1..] {
        std::fs::remove_file(rest).unwrap();
    }
    Some(keep)
}

#[test]
fn every_file_storescu_stores_outpost_stores_and_it_arrives_unchanged() {
    let corpus = dcmtk::pydicom_test_files();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "{} files in {}",
        files.len(),
        corpus.display()
    );
    let mut report = String::new();
    for mode in ["+xa", "+xi"] {
        let dir = TempDir::new("corpus");
        let scp = dcmtk::storescp(dir.path(), &[mode], &[("TCP_NODELAY", "1")]);
        let port = scp.port.to_string();
        let (mut by_dcmtk, mut by_outpost) = (BTreeSet::new(), BTreeSet::new());
        let mut pairs = Vec::new();
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let mut c = std::process::Command::new(dcmtk::bin("storescu"));
            c.env("TCP_NODELAY", "1")
                .args(["-R", "-aec", "STORESCP", "127.0.0.1", &port])
                .arg(f);
            let (code, _, _) = run("storescu", c, LIMIT);
            if collect(dir.path(), &format!("dcmtk-{name}")).is_some() && code == 0 {
                by_dcmtk.insert(name.clone());
            }
            let mut c = outpost();
            c.args([
                "dicom",
                "store",
                "127.0.0.1",
                &port,
                "--called-aet",
                "STORESCP",
            ])
            .arg(f);
            let (code, out, err) = run("outpost dicom store", c, LIMIT);
            let line = out
                .lines()
                .find(|l| l.contains(&name))
                .unwrap_or_else(|| panic!("{name}: no line in\n{out}{err}"))
                .to_owned();
            let got = collect(dir.path(), &format!("outpost-{name}"));
            if line.starts_with("OK") {
                assert_eq!(code, 0, "{line}");
                let got = got.unwrap_or_else(|| panic!("{name}: OK but nothing arrived"));
                by_outpost.insert(name.clone());
                pairs.push((f.clone(), got));
            } else {
                assert!(line.starts_with("FAILED"), "{line}");
                let reason = line.rsplit_once(": ").map_or("", |(_, r)| r);
                assert!(reason.len() > 10, "no reason given: {line}");
                report += &format!("{mode} {line}\n");
            }
        }
        let missing: Vec<_> = by_dcmtk.difference(&by_outpost).collect();
        assert!(
            missing.is_empty(),
            "{mode}: storescu stored these, Outpost did not: {missing:?}\n{report}"
        );
        let diffs = dcmtk::pydicom_differences(&pairs);
        assert!(diffs.is_empty(), "{mode}:\n{}", diffs.join("\n"));
        eprintln!(
            "{mode}: storescu -R stored {} of {} files, outpost {} (all compared equal)",
            by_dcmtk.len(),
            files.len(),
            by_outpost.len()
        );
        // The kinds of issue 24, by name: stored in both modes.
        for kind in [
            "ExplVR_BigEndNoMeta.dcm",
            "ExplVR_LitEndNoMeta.dcm",
            "rtstruct.dcm",
            "image_dfl.dcm",
            "MR_small_bigendian.dcm",
            "SC_rgb_small_odd_big_endian.dcm",
        ] {
            assert!(
                by_outpost.contains(kind),
                "{mode}: {kind} not stored\n{report}"
            );
        }
        // Compressed files go as they are where accepted, and are refused with the syntaxes
        // named where not.
        if mode == "+xa" {
            assert!(by_outpost.contains("JPEG-lossy.dcm"), "{report}");
        } else {
            assert!(
                report.contains("JPEG-lossy.dcm: no accepted presentation context")
                    && report.contains("compressed pixel data is not converted"),
                "{report}"
            );
        }
    }
    eprint!("{report}");
}
