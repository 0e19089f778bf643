//! C-STORE of every kind of file the field sends, to dcmtk's `storescp` configured to accept
//! only one transfer syntax: what arrives is compared element by element with the original
//! (pydicom, and dcmdump's values where both sides keep VRs). Both paths: from a file on disk
//! (`outpost dicom store`) and from bytes in memory (the agent's push).

mod dcmtk;

use std::path::{Path, PathBuf};
use std::process::Command;

use dcmtk::{TempDir, data_set_of, stored};
use dicom_net::{Association, DataSet, Error, Options, Proposal, StoreResult, Value, uids};

const SC: &str = "1.2.840.10008.5.1.4.1.1.7";

fn opts() -> Options {
    Options {
        called_ae: "STORESCP".into(),
        ..Options::default()
    }
}

/// Proposals for these files, read as `store` reads them.
async fn proposals(files: &[&Path]) -> Vec<Proposal> {
    let mut objs = Vec::new();
    for f in files {
        objs.push(dicom_net::inspect_file(f).await.unwrap());
    }
    let mut p = Proposal::for_storage(
        objs.iter()
            .map(|o| (o.sop_class.as_str(), o.transfer_syntax.as_str())),
    );
    p.push(Proposal::verification());
    p
}

/// Every VR whose byte order matters, in nested sequences of defined length (as dump2dcm
/// writes them), and 16-bit pixels.
fn zoo(dir: &Path, name: &str, write: &str, instance: &str) -> PathBuf {
    let dump = format!(
        "(0008,0016) UI [{SC}]\n(0008,0018) UI [{instance}]\n(0009,0010) LO [OUTPOST ZOO]\n\
         (0009,1001) SS -5\\7\n(0009,1002) US 513\\65535\n(0009,1003) SL -70000\\3\n\
         (0009,1004) UL 4000000000\\1\n(0009,1005) FL 1.5\\-2.25\n\
         (0009,1006) FD 3.14159265358979\\-1e-300\n(0009,1007) AT (0028,0010)\\(7fe0,0010)\n\
         (0009,1008) OF 1.5\\2.5\n(0009,1009) OD 0.125\n(0009,100a) OL 16909060\\84281096\n\
         (0009,100b) OW 0102\\0304\\0506\n\
         (0009,1010) SQ (Sequence with undefined length)\n(fffe,e000) na (Item with undefined length)\n\
         (0009,0010) LO [OUTPOST ZOO]\n(0009,1002) US 7\n\
         (0009,1010) SQ (Sequence with undefined length)\n(fffe,e000) na (Item with undefined length)\n\
         (0009,0010) LO [OUTPOST ZOO]\n(0009,1006) FD 2.5\n(0009,100b) OW abcd\n\
         (fffe,e00d) na (ItemDelimitationItem)\n(fffe,e0dd) na (SequenceDelimitationItem)\n\
         (fffe,e00d) na (ItemDelimitationItem)\n(fffe,e0dd) na (SequenceDelimitationItem)\n\
         (0010,0010) PN [Zoo^Big]\n(0028,0002) US 1\n(0028,0004) CS [MONOCHROME2]\n\
         (0028,0010) US 2\n(0028,0011) US 2\n(0028,0100) US 16\n(0028,0101) US 16\n\
         (0028,0102) US 15\n(0028,0103) US 0\n(7fe0,0010) OW 0102\\0304\\0506\\0708\n"
    );
    let dump_path = dir.join(format!("{name}.dump"));
    std::fs::write(&dump_path, dump).unwrap();
    let out = dir.join(name);
    let st = Command::new(dcmtk::bin("dump2dcm"))
        .arg(write)
        .arg(&dump_path)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "dump2dcm {write} {name}");
    out
}

/// A file as scanners write them: odd values, one inside a sequence of defined length, and
/// odd Pixel Data last (case 08's shape), Explicit VR LE with no padding anywhere.
fn odd_file(dir: &Path, instance: &str) -> PathBuf {
    fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], v: &[u8]) {
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"SQ") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(v);
    }
    let mut item = Vec::new();
    el(&mut item, 0x0008_1150, b"UI", SC.as_bytes()); // 25 characters
    el(&mut item, 0x0008_1155, b"UI", b"2.25.999");
    let mut seq = vec![0xFE, 0xFF, 0x00, 0xE0];
    seq.extend_from_slice(&(item.len() as u32).to_le_bytes());
    seq.extend_from_slice(&item);
    let mut ds = Vec::new();
    el(&mut ds, 0x0008_0016, b"UI", SC.as_bytes());
    el(&mut ds, 0x0008_0018, b"UI", instance.as_bytes());
    el(&mut ds, 0x0008_1140, b"SQ", &seq);
    el(&mut ds, 0x0010_0010, b"PN", b"Odd^Pat");
    el(&mut ds, 0x0028_0002, b"US", &1u16.to_le_bytes());
    el(&mut ds, 0x0028_0004, b"CS", b"MONOCHROME2 ");
    el(&mut ds, 0x0028_0010, b"US", &1u16.to_le_bytes());
    el(&mut ds, 0x0028_0011, b"US", &3u16.to_le_bytes());
    el(&mut ds, 0x0028_0100, b"US", &8u16.to_le_bytes());
    el(&mut ds, 0x0028_0101, b"US", &8u16.to_le_bytes());
    el(&mut ds, 0x0028_0102, b"US", &7u16.to_le_bytes());
    el(&mut ds, 0x0028_0103, b"US", &0u16.to_le_bytes());
    el(&mut ds, 0x7FE0_0010, b"OB", &[10, 20, 30]);
    let mut f = Vec::new();
    dicom_net::part10::FileMeta {
        sop_class: SC.into(),
        sop_instance: instance.into(),
        transfer_syntax: uids::EXPLICIT_VR_LE.into(),
    }
    .encode(None, &mut f);
    f.extend_from_slice(&ds);
    let path = dir.join(format!("odd-{instance}.dcm"));
    std::fs::write(&path, f).unwrap();
    path
}

/// Stores `path` from the file and again from its bytes; returns both results and copies of
/// what storescp wrote each time.
async fn store_both_ways(
    a: &mut Association,
    dir: &Path,
    path: &Path,
    instance: &str,
) -> Vec<(StoreResult, PathBuf)> {
    let mut out = Vec::new();
    for from_memory in [false, true] {
        let r = if from_memory {
            a.store_bytes(&std::fs::read(path).unwrap()).await
        } else {
            a.store_file(path).await
        };
        let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(r.status.is_ok(), "{}: {r:?}", path.display());
        let got = stored(dir, instance);
        let keep = dir.join(format!(
            "got-{}-{}",
            if from_memory { "bytes" } else { "file" },
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::rename(&got, &keep).unwrap();
        out.push((r, keep));
    }
    out
}

#[tokio::test]
async fn every_conversion_against_an_scp_that_accepts_only_its_target() {
    let dir = TempDir::new("conv");
    let sources = [
        ("+te", uids::EXPLICIT_VR_LE),
        ("+ti", uids::IMPLICIT_VR_LE),
        ("+tb", uids::EXPLICIT_VR_BE),
        ("+td", uids::DEFLATED_EXPLICIT_VR_LE),
    ];
    let files: Vec<(PathBuf, &str, String)> = sources
        .iter()
        .enumerate()
        .map(|(i, (flag, ts))| {
            let inst = format!("2.25.900{i}");
            (
                zoo(dir.path(), &format!("zoo{i}.dcm"), flag, &inst),
                *ts,
                inst,
            )
        })
        .collect();
    for (f, ts, _) in &files {
        assert_eq!(data_set_of(f).0, *ts, "dump2dcm wrote {}", f.display());
    }
    let refs: Vec<&Path> = files.iter().map(|f| f.0.as_path()).collect();
    let props = proposals(&refs).await;

    for target in [
        uids::IMPLICIT_VR_LE,
        uids::EXPLICIT_VR_LE,
        uids::EXPLICIT_VR_BE,
        uids::DEFLATED_EXPLICIT_VR_LE,
    ] {
        let sub = TempDir::new("conv-target");
        let scp = dcmtk::storescp_only(sub.path(), &[target], &[SC]);
        let mut a = Association::connect(scp.addr(), &opts(), &props)
            .await
            .unwrap();
        let mut pairs = Vec::new();
        for (f, ts, inst) in &files {
            let convertible_to_target =
                *ts == target || matches!(target, uids::IMPLICIT_VR_LE | uids::EXPLICIT_VR_LE);
            if !convertible_to_target {
                let err = a.store_file(f).await.unwrap_err();
                let text = err.to_string();
                assert!(
                    matches!(err, Error::NoContext(_))
                        && text.contains(&uids::transfer_syntax_name(ts))
                        && text.contains(&uids::transfer_syntax_name(target)),
                    "{ts} to {target}: {text}"
                );
                continue;
            }
            for (r, got) in store_both_ways(&mut a, sub.path(), f, inst).await {
                assert_eq!(r.transfer_syntax, target, "{ts} to {target}");
                assert_eq!(r.transcoded, *ts != target);
                assert_eq!(data_set_of(&got).0, target);
                // dcmtk's own reading, value by value, where VRs survive (explicit both sides)
                if target == uids::EXPLICIT_VR_LE && *ts != uids::IMPLICIT_VR_LE {
                    assert_eq!(
                        dcmtk::dcmdump_elements(&got),
                        dcmtk::dcmdump_elements(f),
                        "{ts} -> {target}"
                    );
                }
                pairs.push((f.clone(), got));
            }
        }
        a.release().await.unwrap();
        let diffs = dcmtk::pydicom_differences(&pairs);
        assert!(diffs.is_empty(), "to {target}:\n{}", diffs.join("\n"));
    }
}

#[tokio::test]
async fn odd_values_arrive_padded_in_every_path() {
    let dir = TempDir::new("odd");
    let case = dcmtk::case_file("08-odd-pixel.dcm");
    let case_copy = dir.path().join("odd-pixel.dcm");
    std::fs::copy(&case, &case_copy).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    let case_inst = dicom_net::inspect(&std::fs::read(&case_copy).unwrap())
        .unwrap()
        .sop_instance;
    let ours = odd_file(dir.path(), "2.25.31415");
    for target in [uids::EXPLICIT_VR_LE, uids::IMPLICIT_VR_LE] {
        let sub = TempDir::new("odd-target");
        let scp = dcmtk::storescp_only(sub.path(), &[target], &[SC]);
        let props = proposals(&[&case_copy, &ours]).await;
        let mut a = Association::connect(scp.addr(), &opts(), &props)
            .await
            .unwrap();
        let mut pairs = Vec::new();
        for (f, inst) in [(&case_copy, case_inst.as_str()), (&ours, "2.25.31415")] {
            for (r, got) in store_both_ways(&mut a, sub.path(), f, inst).await {
                assert!(
                    r.notes.iter().any(|n| n.contains("odd length")),
                    "{:?}",
                    r.notes
                );
                let (ts, data) = data_set_of(&got);
                let enc = uids::syntax(&ts).encoding;
                let ds = DataSet::parse_encoded(&data, enc).unwrap();
                let Some(Value::Bytes(px)) = ds.get(0x7FE0_0010).map(|e| e.value.clone()) else {
                    panic!("no pixel data in {}", got.display());
                };
                assert_eq!(px.len() % 2, 0, "pixel data padded");
                assert_eq!(px.last(), Some(&0));
                pairs.push((f.to_path_buf(), got));
            }
        }
        a.release().await.unwrap();
        let diffs = dcmtk::pydicom_differences(&pairs);
        assert!(diffs.is_empty(), "to {target}:\n{}", diffs.join("\n"));
        assert!(
            !scp.log_text().contains("Odd Fragment"),
            "{}",
            scp.log_text()
        );
    }
}

#[tokio::test]
async fn case_10_un_sequence_keeps_its_private_item_through_implicit() {
    let dir = TempDir::new("un-seq");
    let case = dcmtk::case_file("10-un-undefined.dcm");
    let f = dir.path().join("un-undefined.dcm");
    std::fs::copy(&case, &f).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    let obj = dicom_net::inspect(&std::fs::read(&f).unwrap()).unwrap();
    let scp = dcmtk::storescp(dir.path(), &["+xi"], &[]);
    let mut a = Association::connect(scp.addr(), &opts(), &proposals(&[&f]).await)
        .await
        .unwrap();
    let mut pairs = Vec::new();
    for (r, got) in store_both_ways(&mut a, dir.path(), &f, &obj.sop_instance).await {
        assert!(r.transcoded);
        let (ts, data) = data_set_of(&got);
        assert_eq!(ts, uids::IMPLICIT_VR_LE);
        let ds = DataSet::parse(&data, false).unwrap();
        let Some(Value::Sequence(items)) = ds.get(0x2001_9000).map(|e| e.value.clone()) else {
            panic!("(2001,9000) is not a sequence in {ds:?}");
        };
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].string(0x0008_0016).as_deref(),
            Some("1.3.46.670589.2.2.1.1")
        );
        assert_eq!(items[0].string(0x0020_000E).as_deref(), Some("2.25.5005"));
        pairs.push((f.clone(), got));
    }
    a.release().await.unwrap();
    let diffs = dcmtk::pydicom_differences(&pairs);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[tokio::test]
async fn compressed_pixel_data_the_scp_refuses_is_refused_before_sending() {
    let dir = TempDir::new("jpeg-refused");
    let jpeg = dcmtk::pydicom_test_files().join("JPEG-lossy.dcm");
    let plain = zoo(dir.path(), "zoo.dcm", "+te", "2.25.9100");
    let scp = dcmtk::storescp(dir.path(), &["+xi"], &[]);
    let mut a = Association::connect(scp.addr(), &opts(), &proposals(&[&jpeg, &plain]).await)
        .await
        .unwrap();
    for from_memory in [false, true] {
        let err = if from_memory {
            a.store_bytes(&std::fs::read(&jpeg).unwrap()).await
        } else {
            a.store_file(&jpeg).await
        }
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::NoContext(_)), "{err:?}");
        assert!(
            text.contains("JPEG Extended (Process 2 & 4) (1.2.840.10008.1.2.4.51)")
                && text.contains("accepted only Implicit VR Little Endian (1.2.840.10008.1.2)")
                && text.contains("compressed pixel data is not converted"),
            "{text}"
        );
    }
    // Nothing was sent: the association carries on, and only the next file arrives.
    let r = a.store_file(&plain).await.unwrap();
    assert!(r.status.is_ok() && r.transcoded);
    a.release().await.unwrap();
    let arrived: Vec<_> = std::fs::read_dir(dir.path().join("in"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(arrived.len(), 1, "{arrived:?}");
}

#[tokio::test]
async fn the_data_set_names_the_instance_when_the_meta_header_disagrees() {
    let dir = TempDir::new("meta-disagrees");
    let src = zoo(dir.path(), "zoo.dcm", "+te", "2.25.9200");
    let (_, data) = data_set_of(&src);
    let mut f = Vec::new();
    dicom_net::part10::FileMeta {
        sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
        sop_instance: "2.25.666".into(),
        transfer_syntax: uids::EXPLICIT_VR_LE.into(),
    }
    .encode(None, &mut f);
    f.extend_from_slice(&data);
    let path = dir.path().join("disagrees.dcm");
    std::fs::write(&path, &f).unwrap();
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    let mut a = Association::connect(scp.addr(), &opts(), &proposals(&[&path]).await)
        .await
        .unwrap();
    for (r, got) in store_both_ways(&mut a, dir.path(), &path, "2.25.9200").await {
        assert_eq!(r.sop_class, SC);
        assert_eq!(r.sop_instance, "2.25.9200");
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("1.2.840.10008.5.1.4.1.1.2"));
        assert_eq!(data_set_of(&got).1, data);
    }
    a.release().await.unwrap();
}

#[tokio::test]
async fn data_sets_without_a_meta_header_are_read_as_dcmtk_reads_them() {
    let dir = TempDir::new("no-meta");
    let mut bare = Vec::new();
    for (i, (flag, name)) in [
        ("+te", "Explicit VR Little Endian"),
        ("+ti", "Implicit VR Little Endian"),
        ("+tb", "Explicit VR Big Endian"),
    ]
    .into_iter()
    .enumerate()
    {
        let inst = format!("2.25.930{i}");
        let f = zoo(dir.path(), &format!("zoo{i}.dcm"), flag, &inst);
        let path = dir.path().join(format!("bare{i}.raw"));
        std::fs::write(&path, data_set_of(&f).1).unwrap();
        bare.push((f, path, inst, name));
    }
    let scp = dcmtk::storescp(dir.path(), &["+xi"], &[]);
    let refs: Vec<&Path> = bare.iter().map(|b| b.1.as_path()).collect();
    let mut a = Association::connect(scp.addr(), &opts(), &proposals(&refs).await)
        .await
        .unwrap();
    let mut pairs = Vec::new();
    for (original, path, inst, name) in &bare {
        for (r, got) in store_both_ways(&mut a, dir.path(), path, inst).await {
            assert!(
                r.notes
                    .iter()
                    .any(|n| n.starts_with("no meta header; read as") && n.contains(name)),
                "{:?}",
                r.notes
            );
            pairs.push((original.clone(), got));
        }
    }
    a.release().await.unwrap();
    let diffs = dcmtk::pydicom_differences(&pairs);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
