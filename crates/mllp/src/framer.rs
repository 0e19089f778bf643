//! [`Framer`]: finds `0x0B message 0x1C 0x0D` frames in a byte stream (sans-IO).

use bytes::{Buf, BufMut, BytesMut};

use crate::Error;

/// Start block, `<VT>`.
pub const START_BLOCK: u8 = 0x0B;
/// End block, `<FS>`.
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return, the byte after the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Default largest frame content: 16 MiB. Large enough for a base64 PDF in OBX-5, small enough
/// to bound what one connection can make us hold.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Counters a framer keeps; useful in logs and to check its cost in tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Frames returned.
    pub frames: u64,
    /// Bytes skipped outside frames (before a start block, after an over-long frame, or an
    /// unfinished frame cut short by a new start block).
    pub junk_bytes: u64,
    /// Frames given up for being over the maximum.
    pub oversized: u64,
    /// Bytes examined by the end-block search. Each byte is examined about once however the
    /// input is split, so this stays close to the input size (a framer that rescans would grow
    /// it quadratically).
    pub scanned_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a start block; everything before it is junk.
    Between,
    /// `buf[0]` is a start block and `buf[1..scanned]` holds no end of frame.
    InFrame { scanned: usize },
}

/// Finds MLLP frames in bytes as they arrive.
///
/// The caller owns the buffer: append what was read to it and call [`Framer::decode`] until it
/// returns `Ok(None)`. The framer remembers how far it has searched, so a frame arriving in many
/// small reads costs O(n) in total, and it searches with `memchr`.
///
/// - Bytes before a start block are skipped and counted as junk; so is an unfinished frame
///   when a new start block arrives before its end.
/// - An end block not followed by a carriage return is taken as content (lenient).
/// - Content over the maximum is an [`Error::FrameTooLarge`]; the framer drops it, skips to
///   the next start block and carries on. It never holds more than the maximum plus one read.
/// - Several frames in one read come out one by one.
#[derive(Debug, Clone)]
pub struct Framer {
    max: usize,
    state: State,
    stats: FramerStats,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new(DEFAULT_MAX_FRAME)
    }
}

impl Framer {
    /// A framer accepting frames whose content is at most `max_frame` bytes (0 is taken as 1).
    pub fn new(max_frame: usize) -> Self {
        Framer {
            max: max_frame.max(1),
            state: State::Between,
            stats: FramerStats::default(),
        }
    }

    /// The largest frame content accepted.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Counters since creation.
    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Whether part of a frame is buffered (a frame has started and not ended).
    pub fn in_frame(&self) -> bool {
        matches!(self.state, State::InFrame { .. })
    }

    /// Takes the next complete frame's content out of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed. `Err`: a frame was too large and has been skipped;
    /// call again to go on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
        loop {
            match self.state {
                State::Between => {
                    let found = memchr::memchr(START_BLOCK, buf);
                    self.stats.scanned_bytes += found.map_or(buf.len(), |p| p + 1) as u64;
                    match found {
                        None => {
                            self.stats.junk_bytes += buf.len() as u64;
                            buf.clear();
                            return Ok(None);
                        }
                        Some(p) => {
                            self.stats.junk_bytes += p as u64;
                            buf.advance(p);
                            self.state = State::InFrame { scanned: 1 };
                        }
                    }
                }
                State::InFrame { scanned } => {
                    let hay = &buf[scanned..];
                    let Some(i) = memchr::memchr2(END_BLOCK, START_BLOCK, hay) else {
                        self.stats.scanned_bytes += hay.len() as u64;
                        let content = buf.len() - 1;
                        if content > self.max {
                            return Err(self.give_up(buf, buf.len(), content));
                        }
                        self.state = State::InFrame { scanned: buf.len() };
                        return Ok(None);
                    };
                    self.stats.scanned_bytes += i as u64 + 1;
                    let at = scanned + i;
                    if buf[at] == START_BLOCK {
                        // A new frame starts before this one ended: what we had is junk.
                        self.stats.junk_bytes += at as u64;
                        buf.advance(at);
                        self.state = State::InFrame { scanned: 1 };
                        continue;
                    }
                    let Some(&next) = buf.get(at + 1) else {
                        // The end block is the last byte so far: wait for the one after it,
                        // unless the content before it is already too long.
                        if at - 1 > self.max {
                            return Err(self.give_up(buf, at, at - 1));
                        }
                        self.state = State::InFrame { scanned: at };
                        return Ok(None);
                    };
                    if next != CARRIAGE_RETURN {
                        self.state = State::InFrame { scanned: at + 1 };
                        continue;
                    }
                    let content = at - 1;
                    if content > self.max {
                        return Err(self.give_up(buf, at + 2, content));
                    }
                    let mut frame = buf.split_to(at + 2);
                    frame.truncate(at);
                    frame.advance(1);
                    self.stats.frames += 1;
                    self.state = State::Between;
                    return Ok(Some(frame));
                }
            }
        }
    }

    /// Drops `consumed` bytes of an over-long frame and goes back to looking for a start block.
    fn give_up(&mut self, buf: &mut BytesMut, consumed: usize, size: usize) -> Error {
        self.stats.oversized += 1;
        self.stats.junk_bytes += consumed as u64;
        buf.advance(consumed);
        self.state = State::Between;
        Error::FrameTooLarge {
            size,
            max: self.max,
        }
    }

    /// At end of stream: the length of an unfinished frame still buffered, if any (then dropped).
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<usize> {
        let partial = match self.state {
            State::InFrame { .. } => Some(buf.len().saturating_sub(1)),
            State::Between => None,
        };
        self.stats.junk_bytes += buf.len() as u64;
        buf.clear();
        self.state = State::Between;
        partial
    }
}

/// Appends `content` framed as `0x0B content 0x1C 0x0D` to `dst`.
///
/// Fails, writing nothing, if the content holds a start or end block byte: the receiver would
/// cut the message there.
pub fn encode_frame(content: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
    if let Some(offset) = memchr::memchr2(START_BLOCK, END_BLOCK, content) {
        return Err(Error::FramingByteInContent {
            byte: content[offset],
            offset,
        });
    }
    dst.reserve(content.len() + 3);
    dst.put_u8(START_BLOCK);
    dst.put_slice(content);
    dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(content: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_frame(content, &mut b).unwrap();
        b.to_vec()
    }

    /// Feeds `input` in pieces of `chunk` bytes and collects every result.
    fn run(framer: &mut Framer, input: &[u8], chunk: usize) -> Vec<Result<Vec<u8>, String>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match framer.decode(&mut buf) {
                    Ok(Some(f)) => out.push(Ok(f.to_vec())),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e.to_string())),
                }
            }
        }
        out
    }

    #[test]
    fn one_frame_any_split() {
        let input = frame(b"MSH|^~\\&|A\rPID|1\r");
        for chunk in [1, 2, 3, 5, 7, input.len()] {
            let mut f = Framer::default();
            assert_eq!(
                run(&mut f, &input, chunk),
                [Ok(b"MSH|^~\\&|A\rPID|1\r".to_vec())],
                "chunk {chunk}"
            );
            assert_eq!(f.stats().frames, 1);
        }
    }

    #[test]
    fn pipelined_frames_in_one_read() {
        let mut input = frame(b"ONE");
        input.extend(frame(b"TWO"));
        input.extend(frame(b"THREE"));
        let mut f = Framer::default();
        let got = run(&mut f, &input, input.len());
        assert_eq!(
            got,
            [
                Ok(b"ONE".to_vec()),
                Ok(b"TWO".to_vec()),
                Ok(b"THREE".to_vec())
            ]
        );
    }

    #[test]
    fn junk_is_skipped_and_counted() {
        let mut input = b"garbage\r\n".to_vec();
        input.extend(frame(b"A"));
        input.extend(b"\n"); // <FS><CR><LF> trailers
        input.extend(frame(b"B"));
        let mut f = Framer::default();
        assert_eq!(
            run(&mut f, &input, 4),
            [Ok(b"A".to_vec()), Ok(b"B".to_vec())]
        );
        assert_eq!(f.stats().junk_bytes, 10);
    }

    #[test]
    fn new_start_block_abandons_unfinished_frame() {
        let mut input = vec![START_BLOCK];
        input.extend(b"lost half");
        input.extend(frame(b"whole"));
        let mut f = Framer::default();
        assert_eq!(run(&mut f, &input, 3), [Ok(b"whole".to_vec())]);
        assert_eq!(f.stats().junk_bytes, 10);
    }

    #[test]
    fn end_block_without_cr_is_content() {
        let input = [
            START_BLOCK,
            b'a',
            END_BLOCK,
            b'b',
            END_BLOCK,
            CARRIAGE_RETURN,
        ];
        let mut f = Framer::default();
        assert_eq!(run(&mut f, &input, 1), [Ok(vec![b'a', END_BLOCK, b'b'])]);
    }

    #[test]
    fn over_long_frame_then_recovery() {
        for chunk in [1, 4, 64] {
            let mut input = frame(&[b'x'; 40]);
            input.extend(frame(b"fits"));
            let mut f = Framer::new(16);
            let got = run(&mut f, &input, chunk);
            assert_eq!(got.len(), 2, "chunk {chunk}: {got:?}");
            assert!(
                got[0]
                    .as_ref()
                    .unwrap_err()
                    .starts_with("frame too large: "),
                "{got:?}"
            );
            assert_eq!(got[1], Ok(b"fits".to_vec()));
            assert_eq!(f.stats().oversized, 1);
        }
    }

    #[test]
    fn end_blocks_without_cr_at_each_read_end_stay_bounded() {
        // Found by fuzzing: every read ending in an end block used to skip the size check.
        let mut f = Framer::new(16);
        let mut buf = BytesMut::from(&[START_BLOCK][..]);
        let mut errors = 0;
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x', END_BLOCK]);
            loop {
                match f.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(frame)) => panic!("unexpected frame {frame:?}"),
                    Err(_) => errors += 1,
                }
            }
            assert!(buf.len() <= 16 + 3, "framer holds {} bytes", buf.len());
        }
        assert!(errors >= 1);
        // the regression input from the fuzzer
        let crash = b"\x0bk\x0bMSH||\x11^\rSH|\x1c\x1c\x1c\x1c\x1c\x1c\x1c\x1c\x1c\x1c\x1c\x1c|\r";
        let mut f = Framer::new(16);
        let mut buf = BytesMut::new();
        for piece in crash.chunks(2) {
            buf.extend_from_slice(piece);
            while let Ok(Some(_)) | Err(_) = f.decode(&mut buf) {}
            assert!(buf.len() <= 16 + 2 + 2);
        }
    }

    #[test]
    fn exactly_max_fits() {
        let mut f = Framer::new(4);
        assert_eq!(run(&mut f, &frame(b"1234"), 1), [Ok(b"1234".to_vec())]);
        let mut f = Framer::new(4);
        assert!(run(&mut f, &frame(b"12345"), 100)[0].is_err());
    }

    #[test]
    fn large_frame_in_small_pieces_is_linear() {
        // 4 MB in 1,460-byte TCP segments: the peer codecs rescan and take seconds.
        let content = vec![b'A'; 4 * 1024 * 1024];
        let input = frame(&content);
        let mut f = Framer::default();
        let got = run(&mut f, &input, 1460);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().len(), content.len());
        let scanned = f.stats().scanned_bytes;
        assert!(
            scanned <= input.len() as u64 + 4,
            "scanned {scanned} bytes for {} bytes of input",
            input.len()
        );
    }

    #[test]
    fn finish_reports_unfinished_frame() {
        let mut f = Framer::default();
        let mut buf = BytesMut::from(&[START_BLOCK, b'a', b'b'][..]);
        assert_eq!(f.decode(&mut buf).unwrap(), None);
        assert_eq!(f.finish(&mut buf), Some(2));
        assert!(!f.in_frame());
    }

    #[test]
    fn encode_refuses_framing_bytes() {
        let mut b = BytesMut::new();
        assert!(matches!(
            encode_frame(b"a\x1cb", &mut b),
            Err(Error::FramingByteInContent {
                byte: 0x1c,
                offset: 1
            })
        ));
        assert!(b.is_empty());
    }
}
