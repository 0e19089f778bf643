//! `astm`: E1381 frame encode/decode throughput, and the link's round trip per frame over
//! loopback (sender and receiver of this crate, stop-and-wait: one frame, one ACK).

use std::hint::black_box;
use std::time::Instant;

use astm::frame::{decode_frame, frames};
use astm::{Connection, LinkOptions, Role};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn results_message(n: usize) -> Vec<u8> {
    let mut m = b"H|\\^&|||Analyzer^1.0|||||LIS||P|LIS2-A2|20240101120000\rP|1||PID1||Doe^John||19800101|M\rO|1|S1||^^^CBC|R\r".to_vec();
    for i in 0..n {
        m.extend_from_slice(format!("R|{}|^^^T{i}^Test number {i}|{i}.5|g/dL|1.0-9.9|N||F||OPERATOR||20240101120000|ANALYZER-1\r", i + 1).as_bytes());
    }
    m.extend_from_slice(b"L|1|N\r");
    m
}

fn frame_codec(c: &mut Criterion) {
    let msg = results_message(50);
    let encoded = frames(&msg);
    let wire: usize = encoded.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("astm_frame");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function(BenchmarkId::new("encode", "50_results"), |b| {
        b.iter(|| frames(black_box(&msg)))
    });
    g.throughput(Throughput::Bytes(wire as u64));
    g.bench_function(BenchmarkId::new("decode", "50_results"), |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|f| decode_frame(black_box(f)).map_or(0, |f| f.text.len()))
                .sum::<usize>()
        })
    });
    g.finish();
}

fn link_roundtrip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let msg = results_message(20);
    let n_frames = frames(&msg).len() as u64;
    let (mut sender, mut receiver) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        a.set_nodelay(true).unwrap();
        b.set_nodelay(true).unwrap();
        (
            Connection::new(
                a,
                LinkOptions {
                    role: Role::Instrument,
                    ..LinkOptions::default()
                },
            ),
            Connection::new(
                b,
                LinkOptions {
                    role: Role::Computer,
                    ..LinkOptions::default()
                },
            ),
        )
    });
    let mut g = c.benchmark_group("astm_link_roundtrip");
    g.throughput(Throughput::Elements(n_frames));
    g.bench_function(
        BenchmarkId::new("loopback", format!("{n_frames}_frames")),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        let (sent, got) = tokio::join!(sender.send(&msg), receiver.next_message());
                        sent.unwrap();
                        assert_eq!(got.unwrap().unwrap().len(), msg.len());
                    }
                    t.elapsed()
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, frame_codec, link_roundtrip);
criterion_main!(benches);
