//! `mllp_decode`: MLLP framing throughput. Outpost's `mllp::Framer` beside `hl7-mllp-codec` 0.4
//! (the tokio-util codec most Rust HL7 code uses) where both do the same work.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tokio_util::codec::Decoder;

fn frame(content: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    mllp::encode_frame(content, &mut b).unwrap();
    b.to_vec()
}

/// Feeds `input` in `chunk`-byte reads, as a socket would, and counts the content bytes framed.
fn outpost(input: &[u8], chunk: usize) -> usize {
    let mut framer = mllp::Framer::default();
    let mut buf = BytesMut::with_capacity(chunk.min(input.len()));
    let mut n = 0;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(f) = framer.decode(&mut buf).unwrap() {
            n += f.len();
        }
    }
    n
}

fn peer(input: &[u8], chunk: usize) -> usize {
    let mut codec = hl7_mllp_codec::MllpCodec::new();
    let mut buf = BytesMut::with_capacity(chunk.min(input.len()));
    let mut n = 0;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            n += f.len();
        }
    }
    n
}

fn mllp_decode(c: &mut Criterion) {
    let oru = outpost_benches::oru_r01_100();
    let adt = outpost_benches::adt_a01();
    let mut pipelined = Vec::new();
    for _ in 0..100 {
        pipelined.extend(frame(adt.as_bytes()));
    }
    let one_mb = frame(&vec![b'A'; 1 << 20]);
    let four_mb = frame(&vec![b'A'; 4 << 20]);

    let mut group = c.benchmark_group("mllp_decode");
    // (name, input, read size, run the peer too?)
    let cases: [(&str, &[u8], usize, bool); 4] = [
        (
            "oru_frame_one_read",
            &frame(oru.as_bytes()),
            usize::MAX,
            true,
        ),
        ("adt_x100_pipelined_one_read", &pipelined, usize::MAX, false),
        ("1mb_frame_1460b_reads", &one_mb, 1460, true),
        ("4mb_frame_1460b_reads", &four_mb, 1460, false),
    ];
    for (name, input, chunk, with_peer) in cases {
        let expect = outpost(input, chunk);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("outpost-mllp", name), input, |b, i| {
            b.iter(|| outpost(black_box(i), chunk))
        });
        if with_peer {
            assert_eq!(
                peer(input, chunk),
                expect,
                "hl7-mllp-codec disagrees on {name}"
            );
            group.sample_size(10);
            group.bench_with_input(
                BenchmarkId::new("hl7-mllp-codec-0.4.0", name),
                input,
                |b, i| b.iter(|| peer(black_box(i), chunk)),
            );
            group.sample_size(100);
        }
    }
    group.finish();
}

criterion_group!(benches, mllp_decode);
criterion_main!(benches);
