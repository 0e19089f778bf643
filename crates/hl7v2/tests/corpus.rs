//! Every real-world sample in `corpus/hl7v2/` parses and round-trips.

use std::path::PathBuf;

use hl7v2::{Message, Segment};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../corpus/hl7v2/fhir-converter");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Every field, repetition, component and subcomponent of a segment, as raw bytes.
fn structure(seg: Segment<'_>) -> Vec<Vec<Vec<Vec<Vec<u8>>>>> {
    seg.fields()
        .map(|f| {
            f.repetitions()
                .map(|r| {
                    r.components()
                        .map(|c| c.subcomponents().map(|s| s.raw().to_vec()).collect())
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn every_sample_parses_and_round_trips() {
    let files = corpus();
    assert!(files.len() >= 139, "corpus has {} files", files.len());
    for (name, bytes) in &files {
        let msg = Message::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            msg.segment_count() >= 2,
            "{name}: {} segments",
            msg.segment_count()
        );
        // Nothing is silently dropped: every non-blank line of the file is a segment (or, for
        // bare line feeds inside text, part of one).
        let lines = bytes
            .split(|&b| b == b'\r' || b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .count();
        assert!(msg.segment_count() <= lines, "{name}");
        let total: usize = msg.segments().map(|s| s.raw().len()).sum();
        let payload = bytes.iter().filter(|&&b| b != b'\r' && b != b'\n').count();
        let bom = if bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        assert_eq!(
            total + bom,
            payload - embedded_lf(&msg),
            "{name}: bytes lost"
        );

        let out = msg.to_bytes();
        let again = Message::parse(&out).unwrap_or_else(|e| panic!("{name} (re-parse): {e}"));
        assert_eq!(again.segment_count(), msg.segment_count(), "{name}");
        for (a, b) in msg.segments().zip(again.segments()) {
            assert_eq!(a.name(), b.name(), "{name}");
            assert_eq!(structure(a), structure(b), "{name}: {}", a.name());
        }
        assert_eq!(again.to_bytes(), out, "{name}: serialization is not stable");
    }
}

/// Bare line feeds kept inside values (not counted as payload bytes above).
fn embedded_lf(msg: &Message<'_>) -> usize {
    msg.segments()
        .map(|s| {
            s.raw()
                .iter()
                .filter(|&&b| b == b'\n' || b == b'\r')
                .count()
        })
        .sum()
}

#[test]
fn oru_samples_read_results() {
    for (name, bytes) in corpus()
        .iter()
        .filter(|(n, _)| n.starts_with("ORU") || n.starts_with("LAB-ORU"))
    {
        let msg = Message::parse(bytes).unwrap();
        assert_eq!(msg.get("MSH-9-1").unwrap().raw(), b"ORU", "{name}");
        let obx: Vec<_> = msg.segments_named("OBX").collect();
        assert!(!obx.is_empty(), "{name}");
        for o in obx {
            // OBX-2 (value type) is present in every sample result.
            assert!(!o.field(2).is_empty(), "{name}: {:?}", o);
        }
    }
}
