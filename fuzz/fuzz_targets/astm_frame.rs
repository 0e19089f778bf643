//! Any bytes to a receiving link (in any split, with or without confirmed delivery) and to the
//! frame decoder: never a panic, replies are only ACK/NAK/EOT bytes, and a message framed by this
//! crate always decodes back.
#![no_main]

use std::time::{Duration, Instant};

use astm::frame::{ACK, EOT, NAK, decode_frame, frames};
use astm::{Link, LinkEvent, LinkOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_frame(data);
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 32) + 1;
    // Half the runs hold the last ACK of each message until it is confirmed (or refused).
    let confirm = split & 0x80 != 0;
    let mut link = Link::new(LinkOptions {
        max_message: 4096,
        confirm_before_ack: confirm,
        ..LinkOptions::default()
    });
    let mut now = Instant::now();
    for piece in input.chunks(chunk) {
        link.handle_bytes(piece, now);
        now += Duration::from_millis(u64::from(split));
        link.handle_timeout(now);
        while let Some(out) = link.poll_transmit() {
            // a receiver only ever answers with one control byte; ENQ only if it had sent
            assert!(
                out.len() == 1 && [ACK, NAK, EOT, 0x05].contains(&out[0]),
                "{out:?}"
            );
        }
        while let Some(ev) = link.poll_event() {
            if let LinkEvent::Received(m) = ev {
                assert!(m.len() <= 4096);
                if confirm {
                    link.confirm(m.len() % 2 == 0, now);
                }
            }
        }
    }
    // Round trip: the input as record text, framed and decoded.
    let records: Vec<u8> = input
        .iter()
        .map(|&b| if b < 0x20 || b == 0x7f { b'\r' } else { b })
        .collect();
    for f in frames(&records) {
        let d = decode_frame(&f).expect("our frames decode");
        assert!(f.len() <= astm::frame::MAX_FRAME && !d.text.is_empty());
    }
});
