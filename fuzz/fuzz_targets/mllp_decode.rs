//! Any bytes, split into reads of any size: the framer never panics, never returns a frame over
//! its maximum, accounts for every byte, and frames built by `encode_frame` come back intact.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knobs & 0x3f) + 1;
    let max = usize::from(knobs >> 6) * 64 + 16;
    let mut framer = mllp::Framer::new(max);
    let mut buf = BytesMut::new();
    let mut content = 0usize;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= max);
                    content += f.len();
                }
                Ok(None) => break,
                Err(mllp::Error::FrameTooLarge { size, max: m }) => assert!(size > m && m == max),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(
            buf.len() <= max + chunk + 2,
            "framer holds {} bytes",
            buf.len()
        );
    }
    let _ = framer.finish(&mut buf);
    let stats = framer.stats();
    // every input byte is framing, content or junk
    assert_eq!(
        content as u64 + stats.frames * 3 + stats.junk_bytes,
        input.len() as u64 + 0,
        "{stats:?}"
    );

    // Round trip: the input's pieces (minus framing bytes) framed back to back decode exactly.
    let pieces: Vec<Vec<u8>> = input
        .split(|&b| b == b'|')
        .map(|p| {
            p.iter()
                .copied()
                .filter(|&b| b != 0x0b && b != 0x1c)
                .collect()
        })
        .collect();
    let mut wire = BytesMut::new();
    for p in &pieces {
        mllp::encode_frame(p, &mut wire).unwrap();
    }
    let mut framer = mllp::Framer::new(usize::MAX);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(f) = framer.decode(&mut buf).unwrap() {
            got.push(f.to_vec());
        }
    }
    assert_eq!(got, pieces);
});
