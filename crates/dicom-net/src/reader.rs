//! A streaming reader of data set elements (PS3.5 §7): bytes in, [`Token`]s out, in memory
//! bounded by one element header whatever the size of the values. No I/O: the caller hands in
//! whatever bytes it has and gets back a token and how many bytes it took, or `None` when it
//! needs more.
//!
//! It reads Implicit VR Little Endian, Explicit VR Little Endian and Explicit VR Big Endian,
//! sequences and items of defined and undefined length, encapsulated pixel data (fragments),
//! and elements of VR UN with undefined length, which are sequences whose items are in
//! Implicit VR Little Endian whatever the transfer syntax (PS3.5 §6.2.2, CP-246).
//!
//! Defined-length sequences and items end where their length says; the reader reports that
//! end with the same [`Token::ItemEnd`] and [`Token::SequenceEnd`] as a delimiter, so a writer
//! can put every container out with undefined length.

use crate::Error;
use crate::dict::vr_of;
use crate::uids::Encoding;

/// (FFFE,E000) Item.
pub const ITEM: u32 = 0xFFFE_E000;
/// (FFFE,E00D) Item Delimitation Item.
pub const ITEM_END: u32 = 0xFFFE_E00D;
/// (FFFE,E0DD) Sequence Delimitation Item.
pub const SEQ_END: u32 = 0xFFFE_E0DD;
/// (7FE0,0010) Pixel Data.
pub const PIXEL_DATA: u32 = 0x7FE0_0010;
/// A length of 0xFFFFFFFF: undefined.
pub const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Deepest sequence nesting read (a bound for hostile input).
pub const MAX_DEPTH: usize = 32;

/// VRs with a 4-byte length (after 2 reserved bytes) in explicit VR (PS3.5 §7.1.2).
pub fn long_form(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// The size of the numbers a value of this VR holds, which is what byte order swaps
/// (PS3.5 §7.3): 2 for US, SS, OW and AT (two 16-bit numbers), 4 for UL, SL, FL, OF and OL, 8
/// for FD, OD, SV, UV and OV, 1 (nothing to swap) for text, OB and UN.
pub fn swap_unit(vr: [u8; 2]) -> usize {
    match &vr {
        b"US" | b"SS" | b"OW" | b"AT" => 2,
        b"UL" | b"SL" | b"FL" | b"OF" | b"OL" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    }
}

/// The VRs of PS3.5 §6.2.
pub fn is_standard_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FD"
            | b"FL"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SQ"
            | b"SS"
            | b"ST"
            | b"SV"
            | b"TM"
            | b"UC"
            | b"UI"
            | b"UL"
            | b"UN"
            | b"UR"
            | b"US"
            | b"UT"
            | b"UV"
    )
}

/// What kind of value an element has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bytes: [`Token::Value`]s follow, `length` bytes in all.
    Primitive,
    /// A sequence: [`Token::Item`]s, each a data set ending in [`Token::ItemEnd`], then
    /// [`Token::SequenceEnd`].
    Sequence,
    /// Encapsulated pixel data: [`Token::Item`]s (the offset table and fragments), each
    /// followed by its bytes as [`Token::Value`]s, then [`Token::SequenceEnd`].
    Encapsulated,
}

/// An element's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// (group << 16) | element.
    pub tag: u32,
    /// The VR: as sent, or from the dictionary in implicit VR. Sequences read as `SQ`, except
    /// the UN sequences of CP-246 (and unknown tags of undefined length in implicit VR), which
    /// stay `UN`: their items are Implicit VR Little Endian.
    pub vr: [u8; 2],
    /// The value length; `None` for undefined.
    pub length: Option<u32>,
    /// What follows.
    pub kind: Kind,
    /// How this element was encoded.
    pub encoding: Encoding,
    /// 0 for the top level, 1 inside one item, ...
    pub depth: usize,
}

/// One step through a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An element's header.
    Element(Header),
    /// Part of the current value or fragment, as encoded (byte order included). In big
    /// endian, pieces hold whole numbers of the VR's size.
    Value(&'a [u8]),
    /// An item of a sequence (a data set follows), or a fragment of encapsulated pixel data
    /// (its bytes follow); `None` for undefined length.
    Item {
        /// The item's length.
        length: Option<u32>,
    },
    /// The end of an item of a sequence (its delimiter, or its defined length reached).
    ItemEnd,
    /// The end of a sequence or of encapsulated pixel data.
    SequenceEnd,
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    Sequence {
        end: Option<u64>,
        content: Encoding,
    },
    Item {
        end: Option<u64>,
        encoding: Encoding,
    },
    Fragments {
        encoding: Encoding,
    },
}

impl Frame {
    fn end(&self) -> Option<u64> {
        match self {
            Frame::Sequence { end, .. } | Frame::Item { end, .. } => *end,
            Frame::Fragments { .. } => None,
        }
    }
}

/// The streaming reader. See the module documentation.
#[derive(Debug, Clone)]
pub struct ElementReader {
    top: Encoding,
    pos: u64,
    limit: Option<u64>,
    stack: Vec<Frame>,
    /// Bytes of the current value not yet handed out.
    left: u64,
    /// Pieces of the current value hold whole numbers of this many bytes.
    unit: usize,
}

fn u16_in(enc: Encoding, b: &[u8]) -> u16 {
    if enc.big_endian {
        u16::from_be_bytes([b[0], b[1]])
    } else {
        u16::from_le_bytes([b[0], b[1]])
    }
}

fn u32_in(enc: Encoding, b: &[u8]) -> u32 {
    if enc.big_endian {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    } else {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

fn tag_in(enc: Encoding, b: &[u8]) -> u32 {
    (u32::from(u16_in(enc, b)) << 16) | u32::from(u16_in(enc, &b[2..]))
}

/// `(gggg,eeee)`
pub fn tag_text(tag: u32) -> String {
    format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)
}

impl ElementReader {
    /// A reader of a data set in `encoding`. `length`, when known (a file), is where the data
    /// set ends: a value said to run past it is an error as soon as its header is read.
    pub fn new(encoding: Encoding, length: Option<u64>) -> ElementReader {
        ElementReader {
            top: encoding,
            pos: 0,
            limit: length,
            stack: Vec::new(),
            left: 0,
            unit: 1,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn err(&self, at: u64, reason: String) -> Error {
        Error::DataSet {
            offset: at as usize,
            reason,
        }
    }

    /// Skips the rest of the current value: returns how many input bytes the caller must
    /// pass over (instead of handing them to [`ElementReader::next`]).
    pub fn skip_value(&mut self) -> u64 {
        let n = self.left;
        self.pos += n;
        self.left = 0;
        n
    }

    /// Checks that the data ended where a data set may end: after a whole element, with every
    /// sequence and item closed. `unread` is how many bytes the caller still holds that
    /// [`ElementReader::next`] did not take.
    ///
    /// # Errors
    /// [`Error::DataSet`] naming what the data ended inside.
    pub fn finish(&self, unread: usize) -> Result<(), Error> {
        if self.left > 0 {
            return Err(self.err(
                self.pos,
                format!(
                    "the data ends {} bytes before the end of a value",
                    self.left
                ),
            ));
        }
        if unread > 0 {
            return Err(self.err(
                self.pos,
                format!("the data ends inside an element header ({unread} bytes left over)"),
            ));
        }
        if !self.stack.is_empty() {
            return Err(self.err(
                self.pos,
                "the data ends inside a sequence (no delimiter)".into(),
            ));
        }
        Ok(())
    }

    /// The next token from `input` (the bytes after those already taken) and how many bytes
    /// it took; `Ok(None)` when `input` does not hold enough for one.
    ///
    /// # Errors
    /// [`Error::DataSet`] for data that is not a data set: a bad VR, a length past its item or
    /// the end of the data, delimiters out of place, nesting deeper than [`MAX_DEPTH`].
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<Option<(Token<'a>, usize)>, Error> {
        if self.left > 0 {
            let mut n = self.left.min(input.len() as u64) as usize;
            if (n as u64) < self.left {
                n -= n % self.unit;
            }
            if n == 0 {
                return Ok(None);
            }
            self.pos += n as u64;
            self.left -= n as u64;
            return Ok(Some((Token::Value(&input[..n]), n)));
        }
        if let Some(frame) = self.stack.last().copied()
            && frame.end() == Some(self.pos)
        {
            self.stack.pop();
            let token = match frame {
                Frame::Item { .. } => Token::ItemEnd,
                _ => Token::SequenceEnd,
            };
            return Ok(Some((token, 0)));
        }
        match self.stack.last().copied() {
            Some(Frame::Sequence { content, end }) => self.item(input, content, end.is_some()),
            Some(Frame::Fragments { encoding }) => self.fragment(input, encoding),
            Some(Frame::Item { encoding, .. }) => self.element(input, encoding),
            None => self.element(input, self.top),
        }
    }

    /// Inside a sequence: an item or the sequence delimiter.
    fn item<'a>(
        &mut self,
        input: &'a [u8],
        content: Encoding,
        defined: bool,
    ) -> Result<Option<(Token<'a>, usize)>, Error> {
        let Some(h) = input.get(..8) else {
            return Ok(None);
        };
        let tag = tag_in(content, h);
        let len = u32_in(content, &h[4..]);
        match tag {
            ITEM => {
                if self.depth() >= MAX_DEPTH {
                    return Err(self.err(self.pos, "sequences nested too deep".into()));
                }
                let end = if len == UNDEFINED {
                    None
                } else {
                    Some(self.fits(self.pos + 8, len, "item")?)
                };
                self.stack.push(Frame::Item {
                    end,
                    encoding: content,
                });
                self.pos += 8;
                let length = (len != UNDEFINED).then_some(len);
                Ok(Some((Token::Item { length }, 8)))
            }
            SEQ_END if !defined => {
                self.stack.pop();
                self.pos += 8;
                Ok(Some((Token::SequenceEnd, 8)))
            }
            _ => Err(self.err(
                self.pos,
                format!(
                    "expected an item (FFFE,E000) in a sequence, found {}",
                    tag_text(tag)
                ),
            )),
        }
    }

    /// Inside encapsulated pixel data: a fragment or the delimiter.
    fn fragment<'a>(
        &mut self,
        input: &'a [u8],
        encoding: Encoding,
    ) -> Result<Option<(Token<'a>, usize)>, Error> {
        let Some(h) = input.get(..8) else {
            return Ok(None);
        };
        let tag = tag_in(encoding, h);
        let len = u32_in(encoding, &h[4..]);
        match tag {
            ITEM if len != UNDEFINED => {
                self.fits(self.pos + 8, len, "fragment")?;
                self.pos += 8;
                self.left = u64::from(len);
                self.unit = 1;
                Ok(Some((Token::Item { length: Some(len) }, 8)))
            }
            SEQ_END => {
                self.stack.pop();
                self.pos += 8;
                Ok(Some((Token::SequenceEnd, 8)))
            }
            _ => Err(self.err(
                self.pos,
                format!(
                    "bad fragment in encapsulated pixel data: {} with length {len:#X}",
                    tag_text(tag)
                ),
            )),
        }
    }

    fn depth(&self) -> usize {
        self.stack
            .iter()
            .filter(|f| matches!(f, Frame::Item { .. }))
            .count()
    }

    /// Checks that `len` bytes from `from` end within every enclosing container and the data.
    fn fits(&self, from: u64, len: u32, what: &str) -> Result<u64, Error> {
        let end = from + u64::from(len);
        let outer = self.stack.iter().rev().find_map(Frame::end).or(self.limit);
        match outer {
            Some(limit) if end > limit => Err(self.err(
                self.pos,
                format!(
                    "{what} of {len} bytes runs {} bytes past the end of its {}",
                    end - limit,
                    if self.stack.iter().any(|f| f.end().is_some()) {
                        "item"
                    } else {
                        "data"
                    }
                ),
            )),
            _ => Ok(end),
        }
    }

    /// At the top level or inside an item: an element, or the item's delimiter.
    fn element<'a>(
        &mut self,
        input: &'a [u8],
        enc: Encoding,
    ) -> Result<Option<(Token<'a>, usize)>, Error> {
        let Some(h) = input.get(..8) else {
            return Ok(None);
        };
        let tag = tag_in(enc, h);
        if tag == ITEM_END {
            if matches!(self.stack.last(), Some(Frame::Item { end: None, .. })) {
                self.stack.pop();
                self.pos += 8;
                return Ok(Some((Token::ItemEnd, 8)));
            }
            return Err(self.err(
                self.pos,
                "item delimiter outside an item of undefined length".into(),
            ));
        }
        if tag == ITEM || tag == SEQ_END {
            return Err(self.err(
                self.pos,
                format!("{} out of place among elements", tag_text(tag)),
            ));
        }
        let (vr, len, head) = if enc.explicit {
            let vr = [h[4], h[5]];
            if !vr.iter().all(u8::is_ascii_uppercase) {
                return Err(self.err(
                    self.pos + 4,
                    format!(
                        "invalid VR {:?} for {}",
                        String::from_utf8_lossy(&vr),
                        tag_text(tag)
                    ),
                ));
            }
            if long_form(vr) {
                let Some(l) = input.get(8..12) else {
                    return Ok(None);
                };
                (vr, u32_in(enc, l), 12)
            } else {
                (vr, u32::from(u16_in(enc, &h[6..])), 8)
            }
        } else {
            (vr_of(tag), u32_in(enc, &h[4..]), 8)
        };
        let after = self.pos + head as u64;
        let kind;
        let mut vr = vr;
        let mut content = enc;
        if len == UNDEFINED {
            if enc.explicit {
                match &vr {
                    b"SQ" => kind = Kind::Sequence,
                    b"UN" => {
                        // CP-246: a sequence whose items are Implicit VR Little Endian.
                        kind = Kind::Sequence;
                        content = Encoding::IMPLICIT_LE;
                    }
                    b"OB" | b"OW" => kind = Kind::Encapsulated,
                    _ => {
                        return Err(self.err(
                            self.pos,
                            format!(
                                "undefined length on {} of VR {}",
                                tag_text(tag),
                                String::from_utf8_lossy(&vr)
                            ),
                        ));
                    }
                }
            } else {
                // Implicit VR: encapsulated pixel data begins with an item of defined length
                // (the offset table); anything else of undefined length is a sequence.
                let pixel = matches!(&vr, b"OB" | b"OW") || tag == PIXEL_DATA;
                let first = if pixel {
                    let Some(f) = input.get(head..head + 8) else {
                        return Ok(None);
                    };
                    Some((tag_in(enc, f), u32_in(enc, &f[4..])))
                } else {
                    None
                };
                kind = match first {
                    Some((ITEM, l)) if l != UNDEFINED => Kind::Encapsulated,
                    _ => Kind::Sequence,
                };
                if kind == Kind::Encapsulated {
                    vr = *b"OB";
                } else if &vr != b"UN" {
                    vr = *b"SQ";
                }
            }
        } else if &vr == b"SQ" {
            if enc.explicit || len == 0 {
                kind = Kind::Sequence;
            } else {
                // Implicit VR: the dictionary says SQ, but a sender may have meant otherwise.
                // A value that does not start with an item is kept as UN bytes.
                let Some(f) = input.get(head..head + 4.min(len as usize)) else {
                    return Ok(None);
                };
                if f.len() == 4 && tag_in(enc, f) == ITEM {
                    kind = Kind::Sequence;
                } else {
                    kind = Kind::Primitive;
                    vr = *b"UN";
                }
            }
        } else {
            kind = Kind::Primitive;
        }
        let depth = self.depth();
        let length = (len != UNDEFINED).then_some(len);
        match kind {
            Kind::Primitive => {
                self.fits(after, len, &format!("the value of {}", tag_text(tag)))?;
                self.left = u64::from(len);
                self.unit = if enc.big_endian { swap_unit(vr) } else { 1 };
            }
            Kind::Sequence | Kind::Encapsulated => {
                if self.stack.len() > 2 * MAX_DEPTH {
                    return Err(self.err(self.pos, "sequences nested too deep".into()));
                }
                let end = match length {
                    Some(l) => Some(self.fits(after, l, &format!("sequence {}", tag_text(tag)))?),
                    None => None,
                };
                self.stack.push(if kind == Kind::Sequence {
                    Frame::Sequence { end, content }
                } else {
                    Frame::Fragments { encoding: enc }
                });
            }
        }
        self.pos = after;
        Ok(Some((
            Token::Element(Header {
                tag,
                vr,
                length,
                kind,
                encoding: enc,
                depth,
            }),
            head,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token of `bytes`, fed `step` bytes at a time.
    fn tokens(bytes: &[u8], enc: Encoding, step: usize) -> Result<Vec<String>, Error> {
        let mut r = ElementReader::new(enc, Some(bytes.len() as u64));
        let mut out = Vec::new();
        let mut have = 0;
        let mut at = 0;
        loop {
            match r.next(&bytes[at..have])? {
                Some((t, n)) => {
                    at += n;
                    out.push(match t {
                        Token::Element(h) => format!(
                            "{} {} {:?}",
                            tag_text(h.tag),
                            String::from_utf8_lossy(&h.vr),
                            h.kind
                        ),
                        Token::Value(v) => format!("={}", v.len()),
                        other => format!("{other:?}"),
                    });
                }
                None if have < bytes.len() => have = (have + step).min(bytes.len()),
                None => break,
            }
        }
        r.finish(have - at)?;
        // merge value pieces so splits compare equal
        let mut merged: Vec<String> = Vec::new();
        for t in out {
            if let (Some(last), Some(n)) = (merged.last_mut(), t.strip_prefix('='))
                && let Some(m) = last.strip_prefix('=')
            {
                *last = format!(
                    "={}",
                    m.parse::<usize>().unwrap() + n.parse::<usize>().unwrap()
                );
                continue;
            }
            merged.push(t);
        }
        Ok(merged)
    }

    /// Case 10's shape: a private UN element of undefined length holding an implicit item.
    fn un_sequence() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x01, 0x20, 0x10, 0x00, b'L', b'O', 8, 0]);
        b.extend_from_slice(b"PRIVATE ");
        b.extend_from_slice(&[
            0x01, 0x20, 0x00, 0x90, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 4, 0, 0, 0]);
        b.extend_from_slice(b"1.2\0");
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 3, 0, 0, 0, 1, 2, 3,
        ]);
        b
    }

    #[test]
    fn un_of_undefined_length_is_an_implicit_sequence_at_any_split() {
        let want = vec![
            "(2001,0010) LO Primitive",
            "=8",
            "(2001,9000) UN Sequence",
            "Item { length: None }",
            "(0008,0016) UI Primitive",
            "=4",
            "ItemEnd",
            "SequenceEnd",
            "(7FE0,0010) OB Primitive",
            "=3",
        ];
        let b = un_sequence();
        for step in 1..b.len() {
            assert_eq!(
                tokens(&b, Encoding::EXPLICIT_LE, step).unwrap(),
                want,
                "{step}"
            );
        }
    }

    #[test]
    fn defined_lengths_end_by_themselves_and_big_endian_pieces_are_whole_numbers() {
        // Explicit BE: (0028,0010) US 2 = 512, a defined-length SQ with one defined item.
        let mut b = vec![0x00, 0x28, 0x00, 0x10, b'U', b'S', 0, 2, 0x02, 0x00];
        b.extend_from_slice(&[0x00, 0x08, 0x11, 0x40, b'S', b'Q', 0, 0, 0, 0, 0, 18]);
        b.extend_from_slice(&[0xFF, 0xFE, 0xE0, 0x00, 0, 0, 0, 10]);
        b.extend_from_slice(&[0x00, 0x08, 0x00, 0x60, b'C', b'S', 0, 2, b'C', b'T']);
        b.extend_from_slice(&[
            0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0, 0, 0, 6, 1, 2, 3, 4, 5, 6,
        ]);
        let mut r = ElementReader::new(Encoding::EXPLICIT_BE, Some(b.len() as u64));
        let mut at = 0;
        let mut pieces = Vec::new();
        // Hand the reader 3 bytes more each time it asks: OW pieces still hold whole words.
        let mut have = 0;
        while at < b.len() || have < b.len() {
            match r.next(&b[at..have]).unwrap() {
                Some((Token::Value(v), n)) => {
                    pieces.push(v.len());
                    at += n;
                }
                Some((_, n)) => at += n,
                None => have = (have + 3).min(b.len()),
            }
        }
        assert_eq!(r.next(&[]).unwrap(), None);
        r.finish(0).unwrap();
        assert!(
            pieces.iter().rev().take(3).all(|n| n % 2 == 0),
            "{pieces:?}"
        );
        let t = tokens(&b, Encoding::EXPLICIT_BE, 1).unwrap();
        assert_eq!(
            t,
            [
                "(0028,0010) US Primitive",
                "=2",
                "(0008,1140) SQ Sequence",
                "Item { length: Some(10) }",
                "(0008,0060) CS Primitive",
                "=2",
                "ItemEnd",
                "SequenceEnd",
                "(7FE0,0010) OW Primitive",
                "=6"
            ]
        );
    }

    #[test]
    fn implicit_pixel_data_of_undefined_length_is_encapsulated() {
        let mut b = vec![0xE0, 0x7F, 0x10, 0x00, 0xFF, 0xFF, 0xFF, 0xFF];
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 3, 0, 0, 0, 9, 9, 9]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let t = tokens(&b, Encoding::IMPLICIT_LE, 2).unwrap();
        assert_eq!(
            t,
            [
                "(7FE0,0010) OB Encapsulated",
                "Item { length: Some(0) }",
                "Item { length: Some(3) }",
                "=3",
                "SequenceEnd"
            ]
        );
    }

    #[test]
    fn truncation_and_hostile_input_are_errors() {
        let b = un_sequence();
        // cut anywhere inside: an error at finish or before, never a panic
        for cut in 1..b.len() - 3 {
            let r = tokens(&b[..cut], Encoding::EXPLICIT_LE, 5);
            assert!(r.is_err() || cut == 16 || cut == 64, "cut {cut}: {r:?}");
        }
        // a value longer than the data is refused at its header
        let big = [0x10, 0x00, 0x10, 0x00, b'P', b'N', 0xff, 0x00];
        let mut r = ElementReader::new(Encoding::EXPLICIT_LE, Some(8));
        assert!(r.next(&big).is_err());
        // nesting beyond the limit
        let mut deep = Vec::new();
        for _ in 0..40 {
            deep.extend_from_slice(&[
                0x40, 0x00, 0x00, 0x01, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
            ]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xff, 0xff, 0xff, 0xff]);
        }
        assert!(tokens(&deep, Encoding::EXPLICIT_LE, 64).is_err());
    }
}
