//! `hl7_parse`: parse a message, then read PID-5-1 and every OBX-5, with Outpost's `hl7v2` and
//! the peer crates `er7`, `hl7-parser` and `rust-hl7` doing the same work in the same group.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn outpost(input: &[u8]) -> usize {
    let pid51: hl7v2::Path = "PID-5-1".parse().unwrap();
    let msg = hl7v2::Message::parse(input).unwrap();
    let mut n = msg.value(&pid51).raw().len();
    for obx in msg.segments_named("OBX") {
        n += obx.field(5).raw().len();
    }
    n
}

/// Parse, then read every subcomponent of every field of every segment: the cost when nothing
/// is skipped (the peers build this whole tree in their parse).
fn outpost_every_value(input: &[u8]) -> usize {
    let msg = hl7v2::Message::parse(input).unwrap();
    let mut n = 0;
    for seg in msg.segments() {
        for field in seg.fields() {
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        n += sub.raw().len();
                    }
                }
            }
        }
    }
    n
}

fn er7(input: &str) -> usize {
    let msg = er7::parse(input).unwrap();
    let leaf =
        |c: Option<&er7::Component>| c.and_then(|c| c.subcomponent(1)).map_or(0, |s| s.raw.len());
    let mut n = leaf(msg.segment("PID").and_then(|s| s.component(5, 1)));
    for obx in msg.segments_named("OBX") {
        n += leaf(obx.component(5, 1));
    }
    n
}

fn hl7_parser(input: &str) -> usize {
    let msg = hl7_parser::Message::parse(input).unwrap();
    let mut n = msg
        .segment("PID")
        .and_then(|s| s.field(5))
        .and_then(|f| f.component(1))
        .map_or(0, |c| c.raw_value().len());
    for obx in msg.segments().filter(|s| s.name == "OBX") {
        n += obx.field(5).map_or(0, |f| f.raw_value().len());
    }
    n
}

fn rust_hl7(input: &str) -> usize {
    let msg = rusthl7::message::Message::try_from(input).unwrap();
    let mut n = 0;
    for seg in &msg.segments {
        match seg.fields[0].source {
            "PID" => n += seg.fields.get(5).map_or(0, |f| f.components[0][0].len()),
            "OBX" => n += seg.fields.get(5).map_or(0, |f| f.source.len()),
            _ => {}
        }
    }
    n
}

fn hl7_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("hl7_parse");
    for (name, msg) in [
        ("adt_a01", outpost_benches::adt_a01()),
        ("oru_r01_100obx", outpost_benches::oru_r01_100()),
    ] {
        // Every implementation must read the same values before it is timed.
        let expect = outpost(msg.as_bytes());
        assert_eq!(er7(&msg), expect, "er7 disagrees on {name}");
        assert_eq!(hl7_parser(&msg), expect, "hl7-parser disagrees on {name}");
        assert_eq!(rust_hl7(&msg), expect, "rust-hl7 disagrees on {name}");

        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_with_input(BenchmarkId::new("outpost-hl7v2", name), &msg, |b, m| {
            b.iter(|| outpost(black_box(m.as_bytes())))
        });
        group.bench_with_input(
            BenchmarkId::new("outpost-hl7v2-every-value", name),
            &msg,
            |b, m| b.iter(|| outpost_every_value(black_box(m.as_bytes()))),
        );
        group.bench_with_input(BenchmarkId::new("er7-0.1.4", name), &msg, |b, m| {
            b.iter(|| er7(black_box(m)))
        });
        group.bench_with_input(BenchmarkId::new("hl7-parser-0.3.0", name), &msg, |b, m| {
            b.iter(|| hl7_parser(black_box(m)))
        });
        group.bench_with_input(BenchmarkId::new("rust-hl7-0.5.0", name), &msg, |b, m| {
            b.iter(|| rust_hl7(black_box(m)))
        });
    }
    group.finish();
}

criterion_group!(benches, hl7_parse);
criterion_main!(benches);
