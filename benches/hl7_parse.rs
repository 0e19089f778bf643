//! HL7 v2 parsing, Outpost's `hl7v2` beside the peer crates `er7`, `hl7-parser` and `rust-hl7`,
//! each doing the same work in the same group:
//!
//! - `hl7_parse_every_value` (the headline): parse, then visit every subcomponent of every field
//!   of every segment, the work a reader of the whole message does (the peers build that whole
//!   tree in their parse). `outpost-hl7v2` walks each segment once ([`hl7v2::Segment::values`]);
//!   `outpost-hl7v2-nested` goes through the nested iterators (fields, repetitions, components,
//!   subcomponents), as this bench measured before the one-pass walk existed.
//! - `hl7_parse`: parse, then read PID-5-1 and every OBX-5 (a reader who wants a few values;
//!   `hl7v2` finds values when they are read).
//!
//! Before timing, every implementation's values are compared with Outpost's, value by value:
//! every non-empty leaf with its segment, field, repetition, component and subcomponent number
//! (MSH-1 and MSH-2, the delimiters themselves, are left out: each crate shapes them its own
//! way), and for the lookup workload the PID-5-1 and OBX-5 values themselves.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

/// segment (0-based), field, repetition, component, subcomponent (1-based).
type Coord = (usize, usize, usize, usize, usize);

/// Calls `f` for every leaf; returns the sum of the leaves' lengths (what the timed loop keeps).
fn outpost_walk(input: &[u8], mut f: impl FnMut(Coord, &[u8])) -> usize {
    let msg = hl7v2::Message::parse(input).unwrap();
    let mut n = 0;
    for (si, seg) in msg.segments().enumerate() {
        for (l, v) in seg.values() {
            n += v.raw().len();
            f(
                (si, l.field, l.repetition, l.component, l.subcomponent),
                v.raw(),
            );
        }
    }
    n
}

fn outpost_nested(input: &[u8], mut f: impl FnMut(Coord, &[u8])) -> usize {
    let msg = hl7v2::Message::parse(input).unwrap();
    let mut n = 0;
    for (si, seg) in msg.segments().enumerate() {
        for (fi, field) in seg.fields().enumerate() {
            for (ri, rep) in field.repetitions().enumerate() {
                for (ci, comp) in rep.components().enumerate() {
                    for (ki, sub) in comp.subcomponents().enumerate() {
                        n += sub.raw().len();
                        f((si, fi + 1, ri + 1, ci + 1, ki + 1), sub.raw());
                    }
                }
            }
        }
    }
    n
}

fn er7_walk(input: &str, mut f: impl FnMut(Coord, &[u8])) -> usize {
    let msg = er7::parse(input).unwrap();
    let mut n = 0;
    for (si, seg) in msg.segments.iter().enumerate() {
        for (fi, field) in seg.fields.iter().enumerate() {
            for (ri, rep) in field.repetitions.iter().enumerate() {
                for (ci, comp) in rep.components.iter().enumerate() {
                    for (ki, sub) in comp.subcomponents.iter().enumerate() {
                        n += sub.raw.len();
                        f((si, fi + 1, ri + 1, ci + 1, ki + 1), sub.raw.as_bytes());
                    }
                }
            }
        }
    }
    n
}

fn hl7_parser_walk(input: &str, mut f: impl FnMut(Coord, &[u8])) -> usize {
    let msg = hl7_parser::Message::parse(input).unwrap();
    let mut n = 0;
    for (si, seg) in msg.segments.iter().enumerate() {
        for (fi, field) in seg.fields.iter().enumerate() {
            for (ri, rep) in field.repeats.iter().enumerate() {
                for (ci, comp) in rep.components.iter().enumerate() {
                    for (ki, sub) in comp.subcomponents.iter().enumerate() {
                        n += sub.value.len();
                        f((si, fi + 1, ri + 1, ci + 1, ki + 1), sub.value.as_bytes());
                    }
                }
            }
        }
    }
    n
}

fn rust_hl7_walk(input: &str, mut f: impl FnMut(Coord, &[u8])) -> usize {
    let msg = rusthl7::message::Message::try_from(input).unwrap();
    let mut n = 0;
    for (si, seg) in msg.segments.iter().enumerate() {
        // fields[0] is the segment ID; in MSH fields[1] is MSH-2 (MSH-1 has no entry).
        let shift = usize::from(seg.fields[0].source == "MSH");
        for (fi, field) in seg.fields.iter().enumerate().skip(1) {
            for (ri, comps) in field.subcomponents.iter().enumerate() {
                for (ci, subs) in comps.iter().enumerate() {
                    for (ki, sub) in subs.iter().enumerate() {
                        n += sub.len();
                        f((si, fi + shift, ri + 1, ci + 1, ki + 1), sub.as_bytes());
                    }
                }
            }
        }
    }
    n
}

/// The non-empty leaves, MSH-1 and MSH-2 left out, in order.
fn leaves(walk: impl FnOnce(&mut dyn FnMut(Coord, &[u8]))) -> Vec<(Coord, Vec<u8>)> {
    let mut out = Vec::new();
    walk(&mut |c: Coord, v: &[u8]| {
        let delimiters = c.0 == 0 && c.1 <= 2;
        if !v.is_empty() && !delimiters {
            out.push((c, v.to_vec()));
        }
    });
    out
}

fn outpost_lookups(input: &[u8], mut f: impl FnMut(&[u8])) -> usize {
    let pid51: hl7v2::Path = "PID-5-1".parse().unwrap();
    let msg = hl7v2::Message::parse(input).unwrap();
    let pid = msg.value(&pid51).raw();
    f(pid);
    let mut n = pid.len();
    for obx in msg.segments_named("OBX") {
        let v = obx.field(5).raw();
        f(v);
        n += v.len();
    }
    n
}

fn er7_lookups(input: &str, mut f: impl FnMut(&[u8])) -> usize {
    let msg = er7::parse(input).unwrap();
    fn leaf(c: Option<&er7::Component>) -> &str {
        c.and_then(|c| c.subcomponent(1))
            .map_or("", |s| s.raw.as_str())
    }
    let pid = leaf(msg.segment("PID").and_then(|s| s.component(5, 1)));
    f(pid.as_bytes());
    let mut n = pid.len();
    for obx in msg.segments_named("OBX") {
        let v = leaf(obx.component(5, 1));
        f(v.as_bytes());
        n += v.len();
    }
    n
}

fn hl7_parser_lookups(input: &str, mut f: impl FnMut(&[u8])) -> usize {
    let msg = hl7_parser::Message::parse(input).unwrap();
    let pid = msg
        .segment("PID")
        .and_then(|s| s.field(5))
        .and_then(|f| f.component(1))
        .map_or("", |c| c.raw_value());
    f(pid.as_bytes());
    let mut n = pid.len();
    for obx in msg.segments().filter(|s| s.name == "OBX") {
        let v = obx.field(5).map_or("", |f| f.raw_value());
        f(v.as_bytes());
        n += v.len();
    }
    n
}

fn rust_hl7_lookups(input: &str, mut f: impl FnMut(&[u8])) -> usize {
    let msg = rusthl7::message::Message::try_from(input).unwrap();
    let mut n = 0;
    for seg in &msg.segments {
        let v = match seg.fields[0].source {
            "PID" => seg.fields.get(5).map_or("", |f| f.components[0][0]),
            "OBX" => seg.fields.get(5).map_or("", |f| f.source),
            _ => continue,
        };
        f(v.as_bytes());
        n += v.len();
    }
    n
}

fn looked_up(walk: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    walk(&mut |v: &[u8]| out.push(v.to_vec()));
    out
}

fn inputs() -> [(&'static str, String); 2] {
    [
        ("adt_a01", outpost_benches::adt_a01()),
        ("oru_r01_100obx", outpost_benches::oru_r01_100()),
    ]
}

fn every_value(c: &mut Criterion) {
    let mut group = c.benchmark_group("hl7_parse_every_value");
    for (name, msg) in inputs() {
        let expect = leaves(|f| {
            outpost_walk(msg.as_bytes(), f);
        });
        assert!(expect.len() > 20, "{name}: {} leaves", expect.len());
        let agree = |who: &str, got: Vec<(Coord, Vec<u8>)>| {
            assert_eq!(got, expect, "{who} disagrees with hl7v2 on {name}");
        };
        agree(
            "hl7v2 nested iterators",
            leaves(|f| {
                outpost_nested(msg.as_bytes(), f);
            }),
        );
        agree(
            "er7",
            leaves(|f| {
                er7_walk(&msg, f);
            }),
        );
        agree(
            "hl7-parser",
            leaves(|f| {
                hl7_parser_walk(&msg, f);
            }),
        );
        agree(
            "rust-hl7",
            leaves(|f| {
                rust_hl7_walk(&msg, f);
            }),
        );

        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_with_input(BenchmarkId::new("outpost-hl7v2", name), &msg, |b, m| {
            b.iter(|| outpost_walk(black_box(m.as_bytes()), |_, _| {}))
        });
        group.bench_with_input(
            BenchmarkId::new("outpost-hl7v2-nested", name),
            &msg,
            |b, m| b.iter(|| outpost_nested(black_box(m.as_bytes()), |_, _| {})),
        );
        group.bench_with_input(BenchmarkId::new("er7-0.1.4", name), &msg, |b, m| {
            b.iter(|| er7_walk(black_box(m), |_, _| {}))
        });
        group.bench_with_input(BenchmarkId::new("hl7-parser-0.3.0", name), &msg, |b, m| {
            b.iter(|| hl7_parser_walk(black_box(m), |_, _| {}))
        });
        group.bench_with_input(BenchmarkId::new("rust-hl7-0.5.0", name), &msg, |b, m| {
            b.iter(|| rust_hl7_walk(black_box(m), |_, _| {}))
        });
    }
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("hl7_parse");
    for (name, msg) in inputs() {
        let expect = looked_up(|f| {
            outpost_lookups(msg.as_bytes(), f);
        });
        assert_eq!(expect.len(), 1 + msg.matches("\rOBX|").count(), "{name}");
        assert!(expect.iter().all(|v| !v.is_empty()), "{name}");
        let agree = |who: &str, got: Vec<Vec<u8>>| {
            assert_eq!(got, expect, "{who} disagrees with hl7v2 on {name}");
        };
        agree(
            "er7",
            looked_up(|f| {
                er7_lookups(&msg, f);
            }),
        );
        agree(
            "hl7-parser",
            looked_up(|f| {
                hl7_parser_lookups(&msg, f);
            }),
        );
        agree(
            "rust-hl7",
            looked_up(|f| {
                rust_hl7_lookups(&msg, f);
            }),
        );

        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_with_input(BenchmarkId::new("outpost-hl7v2", name), &msg, |b, m| {
            b.iter(|| outpost_lookups(black_box(m.as_bytes()), |_| {}))
        });
        group.bench_with_input(BenchmarkId::new("er7-0.1.4", name), &msg, |b, m| {
            b.iter(|| er7_lookups(black_box(m), |_| {}))
        });
        group.bench_with_input(BenchmarkId::new("hl7-parser-0.3.0", name), &msg, |b, m| {
            b.iter(|| hl7_parser_lookups(black_box(m), |_| {}))
        });
        group.bench_with_input(BenchmarkId::new("rust-hl7-0.5.0", name), &msg, |b, m| {
            b.iter(|| rust_hl7_lookups(black_box(m), |_| {}))
        });
    }
    group.finish();
}

criterion_group!(benches, every_value, lookups);
criterion_main!(benches);
