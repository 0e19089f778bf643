//! Any bytes, any delimiters, split into reads of any size: the byte-stream framer never
//! panics, never returns a frame over its maximum or not ending with the end byte, holds at most
//! the maximum plus one read, and accounts for every byte.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [knobs, start, end, input @ ..] = data else {
        return;
    };
    let (start, end) = (*start, *end);
    let chunk = usize::from(knobs & 0x3f) + 1;
    let max = usize::from(knobs >> 6) * 64 + 16;
    let mut framer = byte_stream::DelimitedFramer::new(start, end, max);
    let mut buf = BytesMut::new();
    let mut content = 0u64;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= max);
                    assert_eq!(f.last(), Some(&end));
                    content += f.len() as u64;
                }
                Ok(None) => break,
                Err(byte_stream::Error::FrameTooLarge { size, max: m }) => assert!(size > m && m == max),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(buf.len() <= max + chunk, "framer holds {} bytes", buf.len());
    }
    let _ = framer.finish(&mut buf);
    assert_eq!(
        content + framer.frames() + framer.junk_bytes(),
        input.len() as u64
    );
});
