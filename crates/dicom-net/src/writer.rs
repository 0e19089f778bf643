//! Writes the [`Token`]s of an [`ElementReader`](crate::reader::ElementReader) back out in a
//! target encoding, appending to the caller's buffer:
//!
//! - every value has even length (PS3.5 §7.1): an odd one gets one pad byte, a space for text
//!   VRs, NUL for UI and binary VRs (§6.2), so no PDV fragment is ever odd (PS3.8 Annex E);
//! - numbers change byte order when the source's differs from the target's (§7.3);
//! - sequences and items are written with undefined length and delimiters, since converting
//!   and padding change the lengths of what they hold;
//! - a UN sequence (CP-246) keeps VR UN and its items stay in Implicit VR Little Endian, in any
//!   target (§6.2.2);
//! - encapsulated pixel data keeps its fragments, each padded to even length.

use crate::reader::{Header, ITEM, ITEM_END, Kind, SEQ_END, Token, long_form, swap_unit};
use crate::uids::Encoding;

/// The byte that pads an odd value of this VR to even length (PS3.5 §6.2): NUL for UI and the
/// binary VRs, a space for text.
pub fn pad_byte(vr: [u8; 2]) -> u8 {
    match &vr {
        b"AE" | b"AS" | b"CS" | b"DA" | b"DS" | b"DT" | b"IS" | b"LO" | b"LT" | b"PN" | b"SH"
        | b"ST" | b"TM" | b"UC" | b"UR" | b"UT" => b' ',
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    Sequence { content: Encoding },
    Item { encoding: Encoding },
    Fragments { encoding: Encoding },
}

/// The writer. See the module documentation.
#[derive(Debug, Clone)]
pub struct ElementWriter {
    target: Encoding,
    stack: Vec<Frame>,
    left: u64,
    pad: Option<u8>,
    swap: usize,
    padded: u32,
}

fn put_u16(out: &mut Vec<u8>, enc: Encoding, v: u16) {
    if enc.big_endian {
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_u32(out: &mut Vec<u8>, enc: Encoding, v: u32) {
    if enc.big_endian {
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_tag(out: &mut Vec<u8>, enc: Encoding, tag: u32) {
    put_u16(out, enc, (tag >> 16) as u16);
    put_u16(out, enc, tag as u16);
}

impl ElementWriter {
    /// A writer of a data set in `target`.
    pub fn new(target: Encoding) -> ElementWriter {
        ElementWriter {
            target,
            stack: Vec::new(),
            left: 0,
            pad: None,
            swap: 1,
            padded: 0,
        }
    }

    /// How many odd values (and fragments) were padded so far.
    pub fn padded(&self) -> u32 {
        self.padded
    }

    /// The encoding the next element is written in: the target's, or Implicit VR Little
    /// Endian inside a CP-246 UN sequence.
    pub fn encoding(&self) -> Encoding {
        match self.stack.last() {
            Some(Frame::Sequence { content }) => *content,
            Some(Frame::Item { encoding } | Frame::Fragments { encoding }) => *encoding,
            None => self.target,
        }
    }

    /// Appends `token` in the target encoding.
    pub fn write(&mut self, token: &Token<'_>, out: &mut Vec<u8>) {
        match token {
            Token::Element(h) => self.element(h, out),
            Token::Value(v) => self.value(v, out),
            Token::Item { length } => {
                let enc = self.encoding();
                put_tag(out, enc, ITEM);
                match self.stack.last() {
                    Some(Frame::Fragments { .. }) => {
                        let len = length.unwrap_or(0);
                        put_u32(out, enc, len + (len & 1));
                        self.start_value(u64::from(len), 0, 1);
                    }
                    _ => {
                        put_u32(out, enc, u32::MAX);
                        self.stack.push(Frame::Item { encoding: enc });
                    }
                }
            }
            Token::ItemEnd => {
                let enc = self.encoding();
                self.stack.pop();
                put_tag(out, enc, ITEM_END);
                put_u32(out, enc, 0);
            }
            Token::SequenceEnd => {
                // The delimiter is encoded as the sequence's items are (Implicit VR LE in a UN
                // sequence, whatever the target).
                let enc = match self.stack.pop() {
                    Some(Frame::Fragments { encoding } | Frame::Item { encoding }) => encoding,
                    Some(Frame::Sequence { content }) => content,
                    None => self.target,
                };
                put_tag(out, enc, SEQ_END);
                put_u32(out, enc, 0);
            }
        }
    }

    fn start_value(&mut self, len: u64, pad: u8, swap: usize) {
        self.left = len;
        self.swap = swap;
        self.pad = (len % 2 == 1).then_some(pad);
        if self.pad.is_some() {
            self.padded += 1;
        }
    }

    fn element(&mut self, h: &Header, out: &mut Vec<u8>) {
        let enc = self.encoding();
        put_tag(out, enc, h.tag);
        match h.kind {
            Kind::Primitive => {
                let len = h.length.unwrap_or(0);
                let padded = len + (len & 1);
                if enc.explicit {
                    // A value too long for a 16-bit length goes as UN (PS3.5 §6.2.2).
                    let vr = if !long_form(h.vr) && padded > 0xFFFF {
                        *b"UN"
                    } else {
                        h.vr
                    };
                    out.extend_from_slice(&vr);
                    if long_form(vr) {
                        out.extend_from_slice(&[0, 0]);
                        put_u32(out, enc, padded);
                    } else {
                        put_u16(out, enc, padded as u16);
                    }
                } else {
                    put_u32(out, enc, padded);
                }
                let swap = if h.encoding.big_endian == enc.big_endian {
                    1
                } else {
                    swap_unit(h.vr)
                };
                self.start_value(u64::from(len), pad_byte(h.vr), swap);
            }
            Kind::Sequence => {
                let cp246 = &h.vr == b"UN";
                if enc.explicit {
                    out.extend_from_slice(if cp246 { b"UN" } else { b"SQ" });
                    out.extend_from_slice(&[0, 0]);
                }
                put_u32(out, enc, u32::MAX);
                let content = if cp246 { Encoding::IMPLICIT_LE } else { enc };
                self.stack.push(Frame::Sequence { content });
            }
            Kind::Encapsulated => {
                if enc.explicit {
                    out.extend_from_slice(if &h.vr == b"OW" { b"OW" } else { b"OB" });
                    out.extend_from_slice(&[0, 0]);
                }
                put_u32(out, enc, u32::MAX);
                self.stack.push(Frame::Fragments { encoding: enc });
            }
        }
    }

    fn value(&mut self, v: &[u8], out: &mut Vec<u8>) {
        if self.swap > 1 {
            let whole = v.len() - v.len() % self.swap;
            for n in v[..whole].chunks_exact(self.swap) {
                out.extend(n.iter().rev());
            }
            out.extend_from_slice(&v[whole..]);
        } else {
            out.extend_from_slice(v);
        }
        self.left = self.left.saturating_sub(v.len() as u64);
        if self.left == 0
            && let Some(p) = self.pad.take()
        {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::ElementReader;

    fn rewrite(bytes: &[u8], from: Encoding, to: Encoding) -> (Vec<u8>, u32) {
        let mut r = ElementReader::new(from, Some(bytes.len() as u64));
        let mut w = ElementWriter::new(to);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((t, n)) = r.next(&bytes[at..]).unwrap() {
            w.write(&t, &mut out);
            at += n;
        }
        r.finish(bytes.len() - at).unwrap();
        (out, w.padded())
    }

    #[test]
    fn odd_values_are_padded_for_their_vr() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x08, 0x00, 0x18, 0x00, b'U', b'I', 3, 0, b'1', b'.', b'2']);
        b.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 3, 0, b'D', b'o', b'e']);
        b.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 3, 0, 0, 0, 7, 8, 9,
        ]);
        let (out, padded) = rewrite(&b, Encoding::EXPLICIT_LE, Encoding::EXPLICIT_LE);
        assert_eq!(padded, 3);
        let mut want = Vec::new();
        want.extend_from_slice(&[
            0x08, 0x00, 0x18, 0x00, b'U', b'I', 4, 0, b'1', b'.', b'2', 0,
        ]);
        want.extend_from_slice(&[
            0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'D', b'o', b'e', b' ',
        ]);
        want.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 4, 0, 0, 0, 7, 8, 9, 0,
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn big_endian_numbers_are_swapped_by_their_size() {
        let mut b = Vec::new();
        // US 0x0102, UL 0x01020304, FD 1.5, AT (0028,0010), OW two words
        b.extend_from_slice(&[0x00, 0x28, 0x00, 0x10, b'U', b'S', 0, 2, 1, 2]);
        b.extend_from_slice(&[0x00, 0x28, 0x00, 0x20, b'U', b'L', 0, 4, 1, 2, 3, 4]);
        b.extend_from_slice(&[0x00, 0x28, 0x00, 0x30, b'F', b'D', 0, 8]);
        b.extend_from_slice(&1.5f64.to_be_bytes());
        b.extend_from_slice(&[
            0x00, 0x28, 0x00, 0x40, b'A', b'T', 0, 4, 0x00, 0x28, 0x00, 0x10,
        ]);
        b.extend_from_slice(&[0x00, 0x28, 0x00, 0x50, b'L', b'O', 0, 2, b'a', b'b']);
        b.extend_from_slice(&[
            0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0, 0, 0, 4, 1, 2, 3, 4,
        ]);
        let (out, _) = rewrite(&b, Encoding::EXPLICIT_BE, Encoding::EXPLICIT_LE);
        let ds = crate::DataSet::parse(&out, true).unwrap();
        let bytes = |t| match &ds.get(t).unwrap().value {
            crate::Value::Bytes(b) => b.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(bytes(0x0028_0010), 0x0102u16.to_le_bytes());
        assert_eq!(bytes(0x0028_0020), 0x0102_0304u32.to_le_bytes());
        assert_eq!(bytes(0x0028_0030), 1.5f64.to_le_bytes());
        assert_eq!(bytes(0x0028_0040), [0x28, 0x00, 0x10, 0x00]);
        assert_eq!(bytes(0x0028_0050), *b"ab");
        assert_eq!(bytes(0x7FE0_0010), [2, 1, 4, 3]);
        // and back again
        let (back, _) = rewrite(&out, Encoding::EXPLICIT_LE, Encoding::EXPLICIT_BE);
        assert_eq!(back, b);
    }

    #[test]
    fn un_sequences_stay_implicit_inside_in_every_target() {
        let mut b = Vec::new();
        b.extend_from_slice(&[
            0x01, 0x20, 0x00, 0x90, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x01, 0x20, 0x01, 0x90, 3, 0, 0, 0, b'a', b'b', b'c']);
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let (implicit, _) = rewrite(&b, Encoding::EXPLICIT_LE, Encoding::IMPLICIT_LE);
        let mut want = vec![0x01, 0x20, 0x00, 0x90, 0xFF, 0xFF, 0xFF, 0xFF];
        want.extend_from_slice(&b[12..28]);
        want.extend_from_slice(&[b'a', b'b', b'c', 0, 0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        want[20] = 4;
        assert_eq!(implicit, want);
        // to Explicit: still UN, the item still implicit (only the odd value padded)
        let (explicit, _) = rewrite(&b, Encoding::EXPLICIT_LE, Encoding::EXPLICIT_LE);
        assert_eq!(&explicit[..12], &b[..12]);
        assert_eq!(&explicit[12..], &want[8..]);
    }
}
