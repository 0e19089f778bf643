//! Rewriting a data set from one transfer syntax to another, streaming: bytes in as they come
//! (from a file, a socket), bytes out, memory bounded by the pieces handed in. Inflates
//! Deflated Explicit VR Little Endian (RFC 1951, PS3.5 §A.5) on the way in.

use flate2::{Decompress, FlushDecompress, Status};

use crate::Error;
use crate::dict::vr_of;
use crate::reader::{ElementReader, Header, Kind, Token, tag_text};
use crate::uids::{Encoding, Syntax};
use crate::writer::ElementWriter;

/// Inflated bytes are produced in pieces of this size.
const INFLATE_PIECE: usize = 64 << 10;

/// A raw deflate stream (or, leniently, one with a zlib header, as some writers produce),
/// inflated at most [`INFLATE_PIECE`] bytes at a time, so a small input that inflates to a lot
/// never sits whole in memory.
#[derive(Debug, Default)]
pub struct Inflater {
    z: Option<Decompress>,
    done: bool,
}

impl Inflater {
    /// A new inflater.
    pub fn new() -> Inflater {
        Inflater::default()
    }

    /// Inflates from `input`, appending at most one piece to `out`; returns how many input
    /// bytes it took (0: it needs more input). Bytes after the end of the deflate stream (a
    /// pad byte) are taken and ignored.
    ///
    /// # Errors
    /// [`Error::DataSet`] when the stream is not deflate data.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        if self.done {
            return Ok(input.len());
        }
        if self.z.is_none() {
            // Two bytes tell raw deflate from a zlib header (RFC 1950: CM 8, check bits).
            let [a, b, ..] = *input else {
                return Ok(0);
            };
            let zlib = a & 0x0F == 8 && ((u16::from(a) << 8) | u16::from(b)) % 31 == 0;
            self.z = Some(Decompress::new(zlib));
        }
        let Some(z) = self.z.as_mut() else {
            return Ok(0);
        };
        if input.is_empty() {
            return Ok(0);
        }
        out.reserve(INFLATE_PIECE);
        let (before_in, before_out) = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(input, out, FlushDecompress::None)
            .map_err(|e| Error::DataSet {
                offset: before_in as usize,
                reason: format!("deflated data set: {e}"),
            })?;
        let used = (z.total_in() - before_in) as usize;
        if status == Status::StreamEnd {
            self.done = true;
            return Ok(input.len());
        }
        if used == 0 && z.total_out() == before_out {
            return Err(Error::DataSet {
                offset: before_in as usize,
                reason: "deflated data set: the stream makes no progress".into(),
            });
        }
        Ok(used)
    }

    /// Whether the deflate stream ended.
    pub fn finished(&self) -> bool {
        self.done
    }
}

/// Reads a data set in one syntax and writes it in another, piece by piece: values padded to
/// even length, numbers in the target's byte order, sequences and items with undefined length.
///
/// ```
/// use dicom_net::{Transcoder, uids::{self, Encoding}};
///
/// // Explicit VR LE: (0010,0010) PN "Doe" (odd) -> Implicit VR LE, padded with a space.
/// let explicit = [0x10, 0x00, 0x10, 0x00, b'P', b'N', 3, 0, b'D', b'o', b'e'];
/// let mut t = Transcoder::new(uids::syntax(uids::EXPLICIT_VR_LE), Encoding::IMPLICIT_LE, None);
/// let mut out = Vec::new();
/// for byte in explicit {
///     t.push(&[byte], &mut out)?;
/// }
/// t.finish(&mut out)?;
/// assert_eq!(out, [0x10, 0x00, 0x10, 0x00, 4, 0, 0, 0, b'D', b'o', b'e', b' ']);
/// # Ok::<(), dicom_net::Error>(())
/// ```
#[derive(Debug)]
pub struct Transcoder {
    reader: ElementReader,
    writer: ElementWriter,
    inflater: Option<Inflater>,
    /// Deflated input not yet inflated.
    raw: Vec<u8>,
    /// Input (inflated) not yet taken by the reader: at most an element header.
    pending: Vec<u8>,
    /// The element being written that the target may read back differently.
    read_back: Option<ReadBack>,
}

/// An element whose bytes as written are read back before the transcode may succeed.
///
/// Implicit VR carries no VR: a reader takes it from the data dictionary (PS3.5 §7.1.3), and a
/// tag the dictionary calls SQ whose value begins with an item is read as a sequence. A
/// source in Explicit VR may label such a tag with another VR (`UN`, or a wrong one) and give
/// it any bytes; written as they are, they must still read back as a sequence (CP-246's UN
/// sequences do), or the output would not be the data set it claims to be.
#[derive(Debug)]
struct ReadBack {
    tag: u32,
    vr: [u8; 2],
    /// Where the element begins in the source.
    offset: u64,
    reader: ElementReader,
    /// Written bytes the reader has not taken yet: at most an element header.
    held: Vec<u8>,
    /// Written bytes still to come: the header and the padded value.
    left: u64,
}

impl ReadBack {
    /// For `h` about to be written in `target`, when the target may misread it.
    fn for_element(h: &Header, target: Encoding, offset: u64) -> Option<ReadBack> {
        let len = u64::from(h.length.unwrap_or(0));
        let risky =
            h.kind == Kind::Primitive && !target.explicit && len > 0 && &vr_of(h.tag) == b"SQ";
        let whole = 8 + len + (len & 1);
        risky.then(|| ReadBack {
            tag: h.tag,
            vr: h.vr,
            offset,
            reader: ElementReader::new(target, Some(whole)),
            held: Vec::new(),
            left: whole,
        })
    }

    /// Reads `written` back; `true` once the whole element was read.
    fn feed(&mut self, written: &[u8]) -> Result<bool, Error> {
        self.held.extend_from_slice(written);
        self.left = self.left.saturating_sub(written.len() as u64);
        let mut at = 0;
        let result = loop {
            match self.reader.next(&self.held[at..]) {
                Ok(Some((_, n))) => at += n,
                Ok(None) if self.left == 0 => break self.reader.finish(self.held.len() - at),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.held.drain(..at);
        result.map_err(|e| Error::NeedsExplicitVr {
            offset: self.offset as usize,
            tag: tag_text(self.tag),
            vr: String::from_utf8_lossy(&self.vr).into_owned(),
            reason: e.to_string(),
        })?;
        Ok(self.left == 0)
    }
}

impl Transcoder {
    /// A transcoder from a data set in `from` to `to`. `length` is the data set's length when
    /// known (not for deflated data).
    pub fn new(from: Syntax, to: Encoding, length: Option<u64>) -> Transcoder {
        Transcoder {
            reader: ElementReader::new(from.encoding, if from.deflated { None } else { length }),
            writer: ElementWriter::new(to),
            inflater: from.deflated.then(Inflater::new),
            raw: Vec::new(),
            pending: Vec::new(),
            read_back: None,
        }
    }

    /// How many odd values were padded so far.
    pub fn padded(&self) -> u32 {
        self.writer.padded()
    }

    /// Takes the next bytes of the source data set, appends what they become to `out`.
    ///
    /// # Errors
    /// [`Error::DataSet`] when the source is not a data set in its syntax;
    /// [`Error::NeedsExplicitVr`] for an element Implicit VR cannot carry.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let Some(mut inf) = self.inflater.take() else {
            if self.pending.is_empty() {
                let used = self.run(input, out)?;
                self.pending.extend_from_slice(&input[used..]);
            } else {
                self.pending.extend_from_slice(input);
                self.run_pending(out)?;
            }
            return Ok(());
        };
        self.raw.extend_from_slice(input);
        let mut at = 0;
        let result = loop {
            let used = match inf.push(&self.raw[at..], &mut self.pending) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            at += used;
            if let Err(e) = self.run_pending(out) {
                break Err(e);
            }
            if used == 0 || at == self.raw.len() {
                break Ok(());
            }
        };
        self.inflater = Some(inf);
        self.raw.drain(..at);
        result
    }

    fn run_pending(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.run(&pending, out)?;
        self.pending = pending;
        self.pending.drain(..used);
        Ok(())
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        let mut at = 0;
        while let Some((token, n)) = self.reader.next(&input[at..])? {
            if let Token::Element(h) = &token {
                let offset = self.reader.position() - n as u64;
                self.read_back = ReadBack::for_element(h, self.writer.encoding(), offset);
            }
            let start = out.len();
            self.writer.write(&token, out);
            if let Some(check) = &mut self.read_back
                && check.feed(&out[start..])?
            {
                self.read_back = None;
            }
            at += n;
        }
        Ok(at)
    }

    /// Ends the data set: checks that it ended on an element boundary with every sequence
    /// closed.
    ///
    /// # Errors
    /// [`Error::DataSet`] for a truncated data set; [`Error::NeedsExplicitVr`] as for
    /// [`Transcoder::push`].
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.run(&pending, out)?;
        if let Some(inf) = &self.inflater
            && !inf.finished()
        {
            return Err(Error::DataSet {
                offset: self.reader.position() as usize,
                reason: "deflated data set: the deflate stream is cut short".into(),
            });
        }
        self.reader.finish(pending.len() - used)
    }
}

/// Rewrites a whole data set held in memory (see [`Transcoder`]).
///
/// # Errors
/// [`Error::DataSet`] when `bytes` is not a data set in `from`; [`Error::NeedsExplicitVr`] for
/// an element `to` cannot carry.
pub fn transcode_syntax(bytes: &[u8], from: Syntax, to: Encoding) -> Result<Vec<u8>, Error> {
    let mut t = Transcoder::new(from, to, Some(bytes.len() as u64));
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    t.push(bytes, &mut out)?;
    t.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uids;
    use flate2::{Compression, write::DeflateEncoder};
    use std::io::Write;

    #[test]
    fn deflated_in_any_split_inflates_to_the_same_data_set() {
        let mut ds = Vec::new();
        ds.extend_from_slice(&[
            0x08, 0x00, 0x18, 0x00, b'U', b'I', 4, 0, b'1', b'.', b'2', 0,
        ]);
        ds.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 3, 0, 0, 0, 7, 8, 9,
        ]);
        let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&ds).unwrap();
        let mut deflated = enc.finish().unwrap();
        deflated.push(0); // a pad byte after the stream is ignored
        let want = transcode_syntax(
            &ds,
            uids::syntax(uids::EXPLICIT_VR_LE),
            Encoding::IMPLICIT_LE,
        )
        .unwrap();
        for step in [1, 2, 7, deflated.len()] {
            let mut t = Transcoder::new(
                uids::syntax(uids::DEFLATED_EXPLICIT_VR_LE),
                Encoding::IMPLICIT_LE,
                None,
            );
            let mut out = Vec::new();
            for piece in deflated.chunks(step) {
                t.push(piece, &mut out).unwrap();
            }
            t.finish(&mut out).unwrap();
            assert_eq!(out, want, "step {step}");
            assert_eq!(t.padded(), 1);
        }
        // cut short: an error, not a hang or a panic
        let mut t = Transcoder::new(
            uids::syntax(uids::DEFLATED_EXPLICIT_VR_LE),
            Encoding::IMPLICIT_LE,
            None,
        );
        let mut out = Vec::new();
        t.push(&deflated[..deflated.len() / 2], &mut out).unwrap();
        assert!(t.finish(&mut out).is_err());
        // not deflate at all
        let mut t = Transcoder::new(
            uids::syntax(uids::DEFLATED_EXPLICIT_VR_LE),
            Encoding::IMPLICIT_LE,
            None,
        );
        let r = t
            .push(&[0xFF; 64], &mut out)
            .and_then(|()| t.finish(&mut out));
        assert!(r.is_err());
    }

    /// (0040,0100) Scheduled Procedure Step Sequence is SQ in the data dictionary. Explicit VR
    /// `value` under `vr`, then (0040,0001) so that something follows it.
    fn sps_labelled(vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut b = vec![0x40, 0x00, 0x00, 0x01, vr[0], vr[1], 0, 0];
        b.extend_from_slice(&(value.len() as u32).to_le_bytes());
        b.extend_from_slice(value);
        b.extend_from_slice(&[0x40, 0x00, 0x01, 0x00, b'A', b'E', 2, 0, b'C', b'T']);
        b
    }

    /// An item of defined length holding (0008,0060) CS "CT", encoded in `explicit` or not.
    fn item(explicit: bool) -> Vec<u8> {
        let element: &[u8] = if explicit {
            &[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T']
        } else {
            &[0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, b'C', b'T']
        };
        let mut b = vec![0xFE, 0xFF, 0x00, 0xE0];
        b.extend_from_slice(&(element.len() as u32).to_le_bytes());
        b.extend_from_slice(element);
        b
    }

    fn to_implicit(bytes: &[u8]) -> Result<Vec<u8>, Error> {
        transcode_syntax(
            bytes,
            uids::syntax(uids::EXPLICIT_VR_LE),
            Encoding::IMPLICIT_LE,
        )
    }

    /// Found by the `dicom_dataset` fuzz target: a sequence tag labelled `SV` holding an item
    /// in Explicit VR went out in Implicit VR, where the dictionary makes it a sequence whose
    /// item no longer parses. Whatever the transcoder writes must read back.
    #[test]
    fn a_sequence_tag_under_another_vr_goes_to_implicit_only_if_it_reads_back() {
        let misread = [
            sps_labelled(b"SV", &item(true)),
            sps_labelled(b"UN", &item(true)),
            sps_labelled(b"OB", &item(true)),
        ];
        for bytes in misread {
            crate::DataSet::parse(&bytes, true).expect("fine in Explicit VR");
            let e = to_implicit(&bytes).expect_err("would be misread in Implicit VR");
            let Error::NeedsExplicitVr { offset, tag, .. } = &e else {
                panic!("{e:?}");
            };
            assert_eq!((*offset, tag.as_str()), (0, "(0040,0100)"));
            assert!(e.to_string().contains("send it in Explicit VR"), "{e}");
        }
        // What does read back goes through, and parses: a CP-246 UN sequence (items in
        // Implicit VR), and bytes that are not an item at all (read back as UN).
        for bytes in [
            sps_labelled(b"UN", &item(false)),
            sps_labelled(b"OB", b"\x01\x02\x03\x04\x05"),
            sps_labelled(b"SV", b"12345678"),
        ] {
            let out = to_implicit(&bytes).expect("reads back");
            let back = crate::DataSet::parse(&out, false).expect("parses");
            let mut again = Vec::new();
            back.write(true, &mut again);
            crate::DataSet::parse(&again, true).expect("and goes back to explicit");
        }
        // Streaming, any split: the same answer.
        let bad = sps_labelled(b"SV", &item(true));
        for step in [1, 3, 8, 13] {
            let mut t = Transcoder::new(
                uids::syntax(uids::EXPLICIT_VR_LE),
                Encoding::IMPLICIT_LE,
                Some(bad.len() as u64),
            );
            let mut out = Vec::new();
            let r = bad
                .chunks(step)
                .try_for_each(|p| t.push(p, &mut out))
                .and_then(|()| t.finish(&mut out));
            assert!(r.is_err(), "step {step}");
        }
    }

    /// The fuzzer's input itself.
    #[test]
    fn the_fuzzers_worklist_input_is_refused_for_implicit() {
        let data = include_bytes!("../../../fuzz/corpus/dicom_dataset/seed-sq-tag-labelled-sv");
        crate::DataSet::parse(data, true).expect("fine in Explicit VR");
        if let Ok(out) = crate::transcode(data, true, false) {
            crate::DataSet::parse(&out, false).expect("what transcodes parses");
        }
        assert!(matches!(
            crate::transcode(data, true, false),
            Err(Error::NeedsExplicitVr { .. })
        ));
    }
}
