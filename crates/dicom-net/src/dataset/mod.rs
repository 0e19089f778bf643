//! Data sets held in memory: elements with sequences of defined or undefined length, read from
//! any uncompressed encoding (through [`crate::reader`]) and written in Explicit or Implicit VR
//! LE. For C-FIND identifiers and matches, DICOM JSON, and small data sets; whole objects are
//! streamed instead (see [`crate::Transcoder`]).

use crate::Error;
use crate::dict::vr_of;
use crate::reader::{ElementReader, Kind, Token, long_form, swap_unit};
use crate::transcode::transcode_syntax;
use crate::uids::{Encoding, Syntax};
use crate::writer::pad_byte;

mod key;

/// A value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The value bytes, little endian, padding included.
    Bytes(Vec<u8>),
    /// The items of a sequence.
    Sequence(Vec<DataSet>),
    /// Encapsulated pixel data (undefined length, items of fragments): the bytes after the
    /// header through the sequence delimiter.
    Encapsulated(Vec<u8>),
}

/// One element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// (group << 16) | element
    pub tag: u32,
    /// Value representation (from the data, or the dictionary when implicit). A sequence read
    /// as VR UN (CP-246) keeps `UN` and is written back that way, its items in Implicit VR LE.
    pub vr: [u8; 2],
    /// The value.
    pub value: Value,
}

/// A data set: elements in ascending tag order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSet {
    /// The elements.
    pub elements: Vec<Element>,
}

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// What is being built while reading.
enum Open {
    Sequence {
        tag: u32,
        vr: [u8; 2],
        items: Vec<DataSet>,
    },
    Item(DataSet),
    Fragments {
        tag: u32,
        vr: [u8; 2],
        bytes: Vec<u8>,
    },
}

/// A primitive element being read: tag, VR, swap unit, length, bytes so far.
type Reading = (u32, [u8; 2], usize, u32, Vec<u8>);

/// Builds a [`DataSet`] from tokens.
#[derive(Default)]
struct Builder {
    root: DataSet,
    stack: Vec<Open>,
    /// The primitive element being read.
    value: Option<Reading>,
}

impl Builder {
    fn add(&mut self, e: Element) {
        let ds = match self.stack.last_mut() {
            Some(Open::Item(ds)) => ds,
            _ => &mut self.root,
        };
        ds.elements.push(e);
    }

    fn token(&mut self, token: &Token<'_>) {
        match token {
            Token::Element(h) => match h.kind {
                Kind::Primitive => {
                    let len = h.length.unwrap_or(0);
                    let swap = if h.encoding.big_endian {
                        swap_unit(h.vr)
                    } else {
                        1
                    };
                    let v = Vec::with_capacity(len.min(1 << 20) as usize);
                    self.value = Some((h.tag, h.vr, swap, len, v));
                    if len == 0 {
                        self.end_value();
                    }
                }
                Kind::Sequence => self.stack.push(Open::Sequence {
                    tag: h.tag,
                    vr: h.vr,
                    items: Vec::new(),
                }),
                Kind::Encapsulated => self.stack.push(Open::Fragments {
                    tag: h.tag,
                    vr: h.vr,
                    bytes: Vec::new(),
                }),
            },
            Token::Value(piece) => {
                if let Some(Open::Fragments { bytes, .. }) = self.stack.last_mut()
                    && self.value.is_none()
                {
                    bytes.extend_from_slice(piece);
                    return;
                }
                if let Some((_, _, swap, len, v)) = self.value.as_mut() {
                    if *swap > 1 {
                        let whole = piece.len() - piece.len() % *swap;
                        for n in piece[..whole].chunks_exact(*swap) {
                            v.extend(n.iter().rev());
                        }
                        v.extend_from_slice(&piece[whole..]);
                    } else {
                        v.extend_from_slice(piece);
                    }
                    if v.len() as u64 >= u64::from(*len) {
                        self.end_value();
                    }
                }
            }
            Token::Item { length } => match self.stack.last_mut() {
                Some(Open::Fragments { bytes, .. }) => {
                    bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
                    bytes.extend_from_slice(&length.unwrap_or(0).to_le_bytes());
                }
                _ => self.stack.push(Open::Item(DataSet::default())),
            },
            Token::ItemEnd => {
                if let Some(Open::Item(ds)) = self.stack.pop()
                    && let Some(Open::Sequence { items, .. }) = self.stack.last_mut()
                {
                    items.push(ds);
                }
            }
            Token::SequenceEnd => match self.stack.pop() {
                Some(Open::Sequence { tag, vr, items }) => self.add(Element {
                    tag,
                    vr,
                    value: Value::Sequence(items),
                }),
                Some(Open::Fragments { tag, vr, mut bytes }) => {
                    bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
                    self.add(Element {
                        tag,
                        vr,
                        value: Value::Encapsulated(bytes),
                    });
                }
                _ => {}
            },
        }
    }

    fn end_value(&mut self) {
        if let Some((tag, vr, _, _, v)) = self.value.take() {
            self.add(Element {
                tag,
                vr,
                value: Value::Bytes(v),
            });
        }
    }
}

impl DataSet {
    /// Reads a data set in Explicit (`explicit`) or Implicit VR Little Endian.
    ///
    /// # Errors
    /// [`Error::DataSet`] for bytes that are not a data set in that syntax.
    pub fn parse(bytes: &[u8], explicit: bool) -> Result<DataSet, Error> {
        let enc = if explicit {
            Encoding::EXPLICIT_LE
        } else {
            Encoding::IMPLICIT_LE
        };
        DataSet::parse_encoded(bytes, enc)
    }

    /// Reads a data set in any uncompressed encoding (values of big-endian data come out
    /// little endian).
    ///
    /// # Errors
    /// [`Error::DataSet`] for bytes that are not a data set in that encoding.
    pub fn parse_encoded(bytes: &[u8], enc: Encoding) -> Result<DataSet, Error> {
        let mut builder = Builder::default();
        let mut r = ElementReader::new(enc, Some(bytes.len() as u64));
        let mut at = 0;
        while let Some((token, n)) = r.next(&bytes[at..])? {
            at += n;
            builder.token(&token);
        }
        r.finish(bytes.len() - at)?;
        Ok(builder.root)
    }

    /// Appends the data set in Explicit or Implicit VR Little Endian. Sequences and items are
    /// written with undefined length; odd values are padded to even length.
    pub fn write(&self, explicit: bool, out: &mut Vec<u8>) {
        let enc = if explicit {
            Encoding::EXPLICIT_LE
        } else {
            Encoding::IMPLICIT_LE
        };
        self.write_le(enc, out);
    }

    /// Appends the data set in `enc` (big endian included).
    pub fn write_encoded(&self, enc: Encoding, out: &mut Vec<u8>) {
        if !enc.big_endian {
            return self.write_le(enc, out);
        }
        let mut le = Vec::new();
        self.write_le(Encoding::EXPLICIT_LE, &mut le);
        let plain = Syntax {
            encoding: Encoding::EXPLICIT_LE,
            deflated: false,
            encapsulated: false,
        };
        // Our own writing always reads back; a failure would leave `out` as it was.
        if let Ok(be) = transcode_syntax(&le, plain, enc) {
            out.extend_from_slice(&be);
        }
    }

    fn write_le(&self, enc: Encoding, out: &mut Vec<u8>) {
        for e in &self.elements {
            out.extend_from_slice(&((e.tag >> 16) as u16).to_le_bytes());
            out.extend_from_slice(&(e.tag as u16).to_le_bytes());
            let len = match &e.value {
                Value::Bytes(b) => (b.len() + b.len() % 2) as u32,
                Value::Sequence(_) | Value::Encapsulated(_) => UNDEFINED,
            };
            let cp246 = matches!(e.value, Value::Sequence(_)) && &e.vr == b"UN";
            if enc.explicit {
                // A value too long for a 16-bit length goes as UN (PS3.5 §6.2.2).
                let vr = match &e.value {
                    Value::Sequence(_) if cp246 => *b"UN",
                    Value::Sequence(_) => *b"SQ",
                    _ if !long_form(e.vr) && len > 0xFFFF => *b"UN",
                    _ => e.vr,
                };
                out.extend_from_slice(&vr);
                if long_form(vr) {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&len.to_le_bytes());
                } else {
                    out.extend_from_slice(&(len as u16).to_le_bytes());
                }
            } else {
                out.extend_from_slice(&len.to_le_bytes());
            }
            match &e.value {
                Value::Bytes(b) => {
                    out.extend_from_slice(b);
                    if b.len() % 2 == 1 {
                        out.push(pad_byte(e.vr));
                    }
                }
                Value::Encapsulated(b) => out.extend_from_slice(b),
                Value::Sequence(items) => {
                    // CP-246: the items of a UN sequence are Implicit VR LE in any syntax.
                    let inner = if cp246 { Encoding::IMPLICIT_LE } else { enc };
                    for item in items {
                        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
                        item.write_le(inner, out);
                        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
                    }
                    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
                }
            }
        }
    }

    /// The element with this tag.
    pub fn get(&self, tag: u32) -> Option<&Element> {
        self.elements.iter().find(|e| e.tag == tag)
    }

    /// A string value, trimmed of padding.
    pub fn string(&self, tag: u32) -> Option<String> {
        match &self.get(tag)?.value {
            Value::Bytes(b) => Some(
                String::from_utf8_lossy(b)
                    .trim_end_matches(['\0', ' '])
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// Sets (or replaces) an element, keeping tag order.
    pub fn set(&mut self, e: Element) {
        match self.elements.binary_search_by_key(&e.tag, |x| x.tag) {
            Ok(i) => self.elements[i] = e,
            Err(i) => self.elements.insert(i, e),
        }
    }

    /// Sets a text value with the dictionary VR, padded to even length (NUL for UI, space
    /// otherwise).
    pub fn set_text(&mut self, tag: u32, text: &str) {
        let vr = vr_of(tag);
        self.set(Element {
            tag,
            vr,
            value: Value::Bytes(pad(vr, text.as_bytes().to_vec())),
        });
    }
}

/// Builds a [`DataSet`] from a data set's bytes as they arrive (a C-STORE being received),
/// leaving out Pixel Data and any value longer than `max_value`: what DICOM JSON of a received
/// object needs, in memory bounded by what is kept, whatever the size of the object.
#[derive(Debug)]
pub struct DataSetStream {
    reader: ElementReader,
    inflater: Option<crate::Inflater>,
    raw: Vec<u8>,
    pending: Vec<u8>,
    builder: Builder,
    skip: u64,
    max_value: u32,
    skipping_fragments: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").finish_non_exhaustive()
    }
}

impl DataSetStream {
    /// A builder for a data set in `syntax` (inflated first for Deflate).
    pub fn new(syntax: Syntax, max_value: u32) -> DataSetStream {
        DataSetStream {
            reader: ElementReader::new(syntax.encoding, None),
            inflater: syntax.deflated.then(crate::Inflater::new),
            raw: Vec::new(),
            pending: Vec::new(),
            builder: Builder::default(),
            skip: 0,
            max_value,
            skipping_fragments: false,
        }
    }

    /// Takes the next bytes of the data set.
    ///
    /// # Errors
    /// [`Error::DataSet`] when they are not a data set in the syntax.
    pub fn push(&mut self, input: &[u8]) -> Result<(), Error> {
        let Some(mut inf) = self.inflater.take() else {
            self.pending.extend_from_slice(input);
            return self.run();
        };
        self.raw.extend_from_slice(input);
        let mut at = 0;
        let result = loop {
            let used = match inf.push(&self.raw[at..], &mut self.pending) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            at += used;
            if let Err(e) = self.run() {
                break Err(e);
            }
            if used == 0 || at == self.raw.len() {
                break Ok(());
            }
        };
        self.raw.drain(..at);
        self.inflater = Some(inf);
        result
    }

    fn run(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min((pending.len() - at) as u64);
                at += n as usize;
                self.skip -= n;
                if self.skip > 0 {
                    break;
                }
            }
            let Some((token, n)) = self.reader.next(&pending[at..])? else {
                break;
            };
            at += n;
            match token {
                Token::Element(h)
                    if h.kind == Kind::Primitive
                        && (h.tag == crate::reader::PIXEL_DATA
                            || h.length.unwrap_or(0) > self.max_value) =>
                {
                    self.skip = self.reader.skip_value();
                }
                Token::Element(h)
                    if h.kind == Kind::Encapsulated && h.tag == crate::reader::PIXEL_DATA =>
                {
                    self.skipping_fragments = true;
                }
                Token::Item { .. } if self.skipping_fragments => {
                    self.skip = self.reader.skip_value();
                }
                Token::SequenceEnd if self.skipping_fragments => {
                    self.skipping_fragments = false;
                }
                other => self.builder.token(&other),
            }
        }
        self.pending = pending;
        self.pending.drain(..at);
        Ok(())
    }

    /// The data set built.
    ///
    /// # Errors
    /// [`Error::DataSet`] when the data ended inside an element.
    pub fn finish(self) -> Result<DataSet, Error> {
        if self.skip > 0 {
            return Err(Error::DataSet {
                offset: self.reader.position() as usize,
                reason: format!(
                    "the data ends {} bytes before the end of a value",
                    self.skip
                ),
            });
        }
        self.reader.finish(self.pending.len())?;
        Ok(self.builder.root)
    }
}

/// Pads a value to even length as its VR wants (PS3.5 §6.2: NUL for UI and binary VRs,
/// a space for text).
pub fn pad(vr: [u8; 2], mut v: Vec<u8>) -> Vec<u8> {
    if v.len() % 2 == 1 {
        v.push(pad_byte(vr));
    }
    v
}

/// Rewrites an uncompressed little-endian data set from one VR syntax to the other (or to
/// the same, padding odd values), streaming (see [`crate::Transcoder`]).
///
/// # Errors
/// [`Error::DataSet`] when `bytes` is not a data set in the source syntax;
/// [`Error::NeedsExplicitVr`] for an element Implicit VR cannot carry.
pub fn transcode(bytes: &[u8], from_explicit: bool, to_explicit: bool) -> Result<Vec<u8>, Error> {
    let enc = |explicit| {
        if explicit {
            Encoding::EXPLICIT_LE
        } else {
            Encoding::IMPLICIT_LE
        }
    };
    let from = Syntax {
        encoding: enc(from_explicit),
        deflated: false,
        encapsulated: false,
    };
    transcode_syntax(bytes, from, enc(to_explicit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> DataSet {
        let mut ds = DataSet::default();
        ds.set_text(0x0010_0010, "Doe^J*");
        ds.set_text(0x0010_0020, "");
        let mut item = DataSet::default();
        item.set_text(0x0008_0060, "CT");
        item.set_text(0x0040_0001, "");
        ds.set(Element {
            tag: 0x0040_0100,
            vr: *b"SQ",
            value: Value::Sequence(vec![item]),
        });
        ds.set_text(0x0008_0050, "ACC1");
        ds
    }

    /// Found by the dicom_dataset fuzz target: explicit VRs that contradict the dictionary
    /// (a sequence at CodeValue, text at ScheduledProcedureStepSequence) still transcode to
    /// implicit data that reads back.
    #[test]
    fn vrs_against_the_dictionary_transcode_and_read_back() {
        let mut item = DataSet::default();
        item.set_text(0x0008_0060, "CT");
        let mut ds = DataSet::default();
        ds.set(Element {
            tag: 0x0008_0100,
            vr: *b"SQ",
            value: Value::Sequence(vec![item]),
        });
        ds.set(Element {
            tag: 0x0040_0100,
            vr: *b"AE",
            value: Value::Bytes(b"CTSCANNER ".to_vec()),
        });
        let mut explicit = Vec::new();
        ds.write(true, &mut explicit);
        let implicit = transcode(&explicit, true, false).unwrap();
        let back = DataSet::parse(&implicit, false).unwrap();
        assert!(
            matches!(back.get(0x0008_0100).unwrap().value, Value::Sequence(ref i) if i.len() == 1)
        );
        assert_eq!(back.get(0x0040_0100).unwrap().vr, *b"UN");
        assert_eq!(
            back.get(0x0040_0100).unwrap().value,
            Value::Bytes(b"CTSCANNER ".to_vec())
        );
    }

    #[test]
    fn a_long_implicit_value_goes_explicit_as_un() {
        let mut ds = DataSet::default();
        ds.set(Element {
            tag: 0x0010_4000,
            vr: *b"LT",
            value: Value::Bytes(vec![b'x'; 70_000]),
        });
        let mut implicit = Vec::new();
        ds.write(false, &mut implicit);
        let explicit = transcode(&implicit, false, true).unwrap();
        let back = DataSet::parse(&explicit, true).unwrap();
        assert_eq!(back.elements[0].vr, *b"UN");
        assert_eq!(back.elements[0].value, Value::Bytes(vec![b'x'; 70_000]));
    }

    #[test]
    fn both_syntaxes_round_trip() {
        let ds = query();
        for explicit in [true, false] {
            let mut out = Vec::new();
            ds.write(explicit, &mut out);
            assert_eq!(
                DataSet::parse(&out, explicit).unwrap(),
                ds,
                "explicit {explicit}"
            );
        }
        assert_eq!(ds.elements[0].tag, 0x0008_0050, "kept in tag order");
        assert_eq!(ds.string(0x0010_0010).as_deref(), Some("Doe^J*"));
    }

    #[test]
    fn transcoding_both_ways() {
        let ds = query();
        let mut explicit = Vec::new();
        ds.write(true, &mut explicit);
        let implicit = transcode(&explicit, true, false).unwrap();
        assert_eq!(DataSet::parse(&implicit, false).unwrap(), ds);
        assert_eq!(transcode(&implicit, false, true).unwrap(), explicit);
    }

    #[test]
    fn defined_length_sequences_and_unknown_tags() {
        // implicit: a private tag (unknown: UN) and a defined-length sequence of one item
        let mut b = Vec::new();
        b.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, 2, 0, 0, 0, b'h', b'i']);
        let item = [0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, b'C', b'T'];
        b.extend_from_slice(&[0x40, 0x00, 0x00, 0x01, 18, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 10, 0, 0, 0]);
        b.extend_from_slice(&item);
        let ds = DataSet::parse(&b, false).unwrap();
        assert_eq!(&ds.elements[0].vr, b"UN");
        let Value::Sequence(items) = &ds.elements[1].value else {
            panic!()
        };
        assert_eq!(items[0].string(0x0008_0060).as_deref(), Some("CT"));
    }

    #[test]
    fn hostile_input_is_an_error() {
        for bad in [
            &[0x10u8, 0x00, 0x10, 0x00, b'P', b'N', 0xff, 0x00][..],
            &[0x10, 0x00, 0x10, 0x00, b'p', b'n', 0, 0],
            &[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0],
            &[
                0x40, 0x00, 0x00, 0x01, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
            ],
            &[0x10, 0x00],
        ] {
            assert!(DataSet::parse(bad, true).is_err(), "{bad:?}");
        }
        // nesting beyond the limit
        let mut deep = Vec::new();
        for _ in 0..40 {
            deep.extend_from_slice(&[
                0x40, 0x00, 0x00, 0x01, b'S', b'Q', 0, 0, 0xff, 0xff, 0xff, 0xff,
            ]);
            deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xff, 0xff, 0xff, 0xff]);
        }
        assert!(DataSet::parse(&deep, true).is_err());
    }
}
