//! [`DelimitedFramer`]: frames that start with one byte and end with another, in a byte stream
//! (sans-IO). This is the framing of the Medplum agent's `tcp://…?startChar=&endChar=` byte-stream
//! channels, used by devices that are not MLLP (serial converters, simple analyzers). MLLP
//! (`0x0B … 0x1C 0x0D`, a two-byte end) has its own framer in the `mllp` crate.

use bytes::{Buf, BytesMut};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a start byte; everything before it is junk.
    Between,
    /// The start byte has been consumed and `buf[..scanned]` holds no end byte.
    InFrame { scanned: usize },
}

/// Finds `start … end` frames in bytes as they arrive.
///
/// A frame is what follows the start byte, up to **and including** the end byte (the start byte
/// is dropped, the end byte kept, as Medplum's byte-stream channel does). The caller appends what
/// it read to a buffer and calls [`DelimitedFramer::decode`] until it returns `Ok(None)`.
///
/// - The framer remembers how far it searched (`memchr`), so input split into many reads costs
///   O(n) in total.
/// - Bytes outside frames are skipped and counted; a start byte inside a frame (when start and end
///   differ) drops the unfinished frame as junk and starts a new one.
/// - A frame longer than the maximum is an [`Error::FrameTooLarge`]: the framer drops it, looks
///   for the next start byte and carries on. It never holds more than the maximum plus one read.
#[derive(Debug, Clone)]
pub struct DelimitedFramer {
    start: u8,
    end: u8,
    max: usize,
    state: State,
    frames: u64,
    junk_bytes: u64,
}

impl DelimitedFramer {
    /// A framer for frames opened by `start` and closed by `end` (they may be the same byte),
    /// at most `max_frame` bytes long including the end byte (0 is taken as 1).
    pub fn new(start: u8, end: u8, max_frame: usize) -> Self {
        DelimitedFramer {
            start,
            end,
            max: max_frame.max(1),
            state: State::Between,
            frames: 0,
            junk_bytes: 0,
        }
    }

    /// Frames returned so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes that were not part of a returned frame or its start byte (junk between frames, and
    /// dropped frames with their start bytes). Returned frames' lengths, plus one start byte per
    /// frame, plus this, is every byte seen.
    pub fn junk_bytes(&self) -> u64 {
        self.junk_bytes
    }

    /// Whether part of a frame is buffered.
    pub fn in_frame(&self) -> bool {
        matches!(self.state, State::InFrame { .. })
    }

    /// Takes the next complete frame (without its start byte, with its end byte) out of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed. `Err`: a frame was too large and has been dropped;
    /// call again to go on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
        loop {
            match self.state {
                State::Between => match memchr::memchr(self.start, buf) {
                    None => {
                        self.junk_bytes += buf.len() as u64;
                        buf.clear();
                        return Ok(None);
                    }
                    Some(p) => {
                        self.junk_bytes += p as u64;
                        buf.advance(p + 1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                },
                State::InFrame { scanned } => {
                    let hay = &buf[scanned..];
                    let found = if self.start == self.end {
                        memchr::memchr(self.end, hay)
                    } else {
                        memchr::memchr2(self.end, self.start, hay)
                    };
                    let Some(i) = found else {
                        if buf.len() > self.max {
                            return Err(self.give_up(buf, buf.len()));
                        }
                        self.state = State::InFrame { scanned: buf.len() };
                        return Ok(None);
                    };
                    let at = scanned + i;
                    if buf[at] != self.end {
                        // A new frame starts before this one ended: what we had (with its
                        // start byte) is junk.
                        self.junk_bytes += at as u64 + 1;
                        buf.advance(at + 1);
                        self.state = State::InFrame { scanned: 0 };
                        continue;
                    }
                    if at + 1 > self.max {
                        return Err(self.give_up(buf, at + 1));
                    }
                    self.state = State::Between;
                    self.frames += 1;
                    return Ok(Some(buf.split_to(at + 1)));
                }
            }
        }
    }

    fn give_up(&mut self, buf: &mut BytesMut, consumed: usize) -> Error {
        self.junk_bytes += consumed as u64 + 1;
        buf.advance(consumed);
        self.state = State::Between;
        Error::FrameTooLarge {
            size: consumed,
            max: self.max,
        }
    }

    /// At end of stream: the length of an unfinished frame still buffered, if any (then dropped).
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<usize> {
        let partial = self.in_frame().then_some(buf.len());
        self.junk_bytes += buf.len() as u64 + u64::from(partial.is_some());
        buf.clear();
        self.state = State::Between;
        partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(f: &mut DelimitedFramer, buf: &mut BytesMut) -> Vec<Result<Vec<u8>, usize>> {
        let mut out = Vec::new();
        loop {
            match f.decode(buf) {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) => return out,
                Err(Error::FrameTooLarge { size, .. }) => out.push(Err(size)),
                Err(e @ Error::Io(_)) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn frames_keep_the_end_byte_and_drop_junk_and_the_start_byte() {
        let mut f = DelimitedFramer::new(0x02, 0x03, 100);
        let mut buf = BytesMut::from(&b"noise\x02first\x03\r\n\x02second\x03tail"[..]);
        assert_eq!(
            all(&mut f, &mut buf),
            vec![Ok(b"first\x03".to_vec()), Ok(b"second\x03".to_vec())]
        );
        assert!(buf.is_empty());
        assert_eq!(f.frames(), 2);
        assert_eq!(
            f.junk_bytes(),
            (b"noise".len() + b"\r\n".len() + b"tail".len()) as u64
        );
        assert!(!f.in_frame());
    }

    #[test]
    fn a_frame_in_single_bytes_comes_out_whole_once() {
        let mut f = DelimitedFramer::new(b'<', b'>', 100);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in b"<hello world>" {
            buf.extend_from_slice(&[*b]);
            got.extend(all(&mut f, &mut buf));
        }
        assert_eq!(got, vec![Ok(b"hello world>".to_vec())]);
    }

    #[test]
    fn a_new_start_drops_the_unfinished_frame() {
        let mut f = DelimitedFramer::new(0x02, 0x03, 100);
        let mut buf = BytesMut::from(&b"\x02lost\x02kept\x03"[..]);
        assert_eq!(all(&mut f, &mut buf), vec![Ok(b"kept\x03".to_vec())]);
        assert_eq!(f.junk_bytes(), 5);
    }

    #[test]
    fn same_start_and_end_byte() {
        let mut f = DelimitedFramer::new(b'~', b'~', 100);
        let mut buf = BytesMut::from(&b"~a~~b~"[..]);
        assert_eq!(
            all(&mut f, &mut buf),
            vec![Ok(b"a~".to_vec()), Ok(b"b~".to_vec())]
        );
    }

    #[test]
    fn an_oversized_frame_is_dropped_and_the_next_one_read() {
        let mut f = DelimitedFramer::new(0x02, 0x03, 8);
        let mut buf = BytesMut::from(&b"\x020123456789\x03\x02ok\x03"[..]);
        assert_eq!(all(&mut f, &mut buf), vec![Err(11), Ok(b"ok\x03".to_vec())]);
        // Without its end in sight, it is dropped as soon as it passes the maximum.
        let mut f = DelimitedFramer::new(0x02, 0x03, 8);
        let mut buf = BytesMut::from(&b"\x02012345678"[..]);
        assert_eq!(all(&mut f, &mut buf), vec![Err(9)]);
        assert!(buf.is_empty());
        assert!(!f.in_frame());
    }

    #[test]
    fn finish_reports_an_unfinished_frame() {
        let mut f = DelimitedFramer::new(0x02, 0x03, 100);
        let mut buf = BytesMut::from(&b"\x02half"[..]);
        assert!(all(&mut f, &mut buf).is_empty());
        assert_eq!(f.finish(&mut buf), Some(4));
        assert_eq!(f.finish(&mut buf), None);
    }

    proptest! {
        /// However the stream is cut into reads, the same frames come out.
        #[test]
        fn splitting_does_not_change_the_frames(
            frames in proptest::collection::vec(proptest::collection::vec(0x20u8..0x7f, 0..40), 0..8),
            cuts in proptest::collection::vec(1usize..16, 0..64),
        ) {
            let mut stream = Vec::new();
            for f in &frames {
                stream.extend_from_slice(b"junk\x02");
                stream.extend_from_slice(f);
                stream.push(0x03);
            }
            let mut f = DelimitedFramer::new(0x02, 0x03, 64);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                got.extend(all(&mut f, &mut buf));
            }
            let want: Vec<Result<Vec<u8>, usize>> = frames
                .iter()
                .map(|f| Ok([f.as_slice(), b"\x03"].concat()))
                .collect();
            let _ = f.finish(&mut buf);
            let content: usize = want.iter().flatten().map(Vec::len).sum();
            prop_assert_eq!(content as u64 + f.frames() + f.junk_bytes(), stream.len() as u64);
            prop_assert_eq!(got, want);
        }
    }
}
