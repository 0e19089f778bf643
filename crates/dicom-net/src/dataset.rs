//! Data sets: elements in Explicit or Implicit VR Little Endian (PS3.5 §7), with sequences of
//! defined or undefined length. Enough to build and read C-FIND identifiers and to transcode an
//! uncompressed data set from one syntax to the other.

use crate::Error;
use crate::dict::vr_of;

/// (FFFE,E000)
const ITEM: u32 = 0xFFFE_E000;
/// (FFFE,E00D)
const ITEM_END: u32 = 0xFFFE_E00D;
/// (FFFE,E0DD)
const SEQ_END: u32 = 0xFFFE_E0DD;
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Deepest sequence nesting read (a bound on recursion for hostile input).
const MAX_DEPTH: usize = 32;

/// A value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The value bytes as encoded (little endian), padding included.
    Bytes(Vec<u8>),
    /// The items of a sequence.
    Sequence(Vec<DataSet>),
    /// Encapsulated pixel data (undefined length, items of fragments): the bytes after the
    /// header through the sequence delimiter, kept as they are.
    Encapsulated(Vec<u8>),
}

/// One element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// (group << 16) | element
    pub tag: u32,
    /// Value representation (from the data, or the dictionary when implicit).
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

/// VRs with a 4-byte length (after 2 reserved bytes) in explicit VR.
fn long_form(vr: [u8; 2]) -> bool {
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

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    explicit: bool,
}

impl Reader<'_> {
    fn err(&self, reason: &str) -> Error {
        Error::DataSet {
            offset: self.at,
            reason: reason.to_owned(),
        }
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let v = self
            .b
            .get(self.at..self.at + 2)
            .ok_or_else(|| self.err("truncated"))?;
        self.at += 2;
        Ok(u16::from_le_bytes([v[0], v[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let v = self
            .b
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.err("truncated"))?;
        self.at += 4;
        Ok(u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    }

    fn tag(&mut self) -> Result<u32, Error> {
        let g = self.u16()?;
        let e = self.u16()?;
        Ok((u32::from(g) << 16) | u32::from(e))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.err("value longer than the data"))?;
        let v = &self.b[self.at..end];
        self.at = end;
        Ok(v)
    }

    /// Elements until `end` (exclusive) or an item delimiter (when `in_item` with undefined
    /// length).
    fn data_set(
        &mut self,
        end: usize,
        depth: usize,
        until_item_end: bool,
    ) -> Result<DataSet, Error> {
        if depth > MAX_DEPTH {
            return Err(self.err("sequences nested too deep"));
        }
        let mut ds = DataSet::default();
        while self.at < end {
            let start = self.at;
            let tag = self.tag()?;
            if tag == ITEM_END {
                self.u32()?;
                if until_item_end {
                    return Ok(ds);
                }
                return Err(Error::DataSet {
                    offset: start,
                    reason: "item delimiter outside an item".into(),
                });
            }
            if tag == ITEM || tag == SEQ_END {
                return Err(Error::DataSet {
                    offset: start,
                    reason: "item or sequence delimiter out of place".into(),
                });
            }
            let (vr, len) = if self.explicit {
                let v = self.take(2)?;
                let vr = [v[0], v[1]];
                if !vr.iter().all(u8::is_ascii_uppercase) {
                    return Err(Error::DataSet {
                        offset: start + 4,
                        reason: format!("invalid VR {:?}", String::from_utf8_lossy(&vr)),
                    });
                }
                if long_form(vr) {
                    self.take(2)?;
                    (vr, self.u32()?)
                } else {
                    (vr, u32::from(self.u16()?))
                }
            } else {
                (vr_of(tag), self.u32()?)
            };
            // Implicit VR with undefined length: encapsulated pixel data (OB/OW, whose first
            // item, the offset table, has a defined length), else a sequence.
            let is_sq = &vr == b"SQ"
                || (!self.explicit
                    && len == UNDEFINED
                    && !(matches!(&vr, b"OB" | b"OW") && self.first_item_defined()));
            let mut vr = vr;
            let value = if is_sq && !self.explicit && len != UNDEFINED {
                // Implicit VR: the dictionary says SQ, but a sender may have meant otherwise.
                // A value that is not a run of items is kept as UN bytes.
                let at = self.at;
                match self.items(len, depth) {
                    Ok(items) => Value::Sequence(items),
                    Err(_) => {
                        self.at = at;
                        vr = *b"UN";
                        Value::Bytes(self.take(len as usize)?.to_vec())
                    }
                }
            } else if is_sq {
                Value::Sequence(self.items(len, depth)?)
            } else if len == UNDEFINED {
                Value::Encapsulated(self.encapsulated()?)
            } else {
                Value::Bytes(self.take(len as usize)?.to_vec())
            };
            if self.at > end {
                return Err(Error::DataSet {
                    offset: start,
                    reason: "element runs past the end of its item".into(),
                });
            }
            let vr = if matches!(value, Value::Sequence(_)) {
                *b"SQ"
            } else {
                vr
            };
            ds.elements.push(Element { tag, vr, value });
        }
        if until_item_end {
            return Err(self.err("item without its delimiter"));
        }
        Ok(ds)
    }

    fn items(&mut self, len: u32, depth: usize) -> Result<Vec<DataSet>, Error> {
        let end = if len == UNDEFINED {
            self.b.len()
        } else {
            self.at
                .checked_add(len as usize)
                .filter(|&e| e <= self.b.len())
                .ok_or_else(|| self.err("sequence longer than the data"))?
        };
        let mut items = Vec::new();
        while self.at < end {
            let start = self.at;
            let tag = self.tag()?;
            let ilen = self.u32()?;
            match tag {
                SEQ_END if len == UNDEFINED => return Ok(items),
                ITEM if ilen == UNDEFINED => {
                    items.push(self.data_set(self.b.len(), depth + 1, true)?)
                }
                ITEM => {
                    let iend = self
                        .at
                        .checked_add(ilen as usize)
                        .filter(|&e| e <= end)
                        .ok_or_else(|| self.err("item longer than its sequence"))?;
                    items.push(self.data_set(iend, depth + 1, false)?);
                }
                _ => {
                    return Err(Error::DataSet {
                        offset: start,
                        reason: "expected an item in a sequence".into(),
                    });
                }
            }
        }
        if len == UNDEFINED {
            return Err(self.err("sequence without its delimiter"));
        }
        Ok(items)
    }

    /// Whether the next header is an item with a defined length.
    fn first_item_defined(&self) -> bool {
        match self.b.get(self.at..self.at + 8) {
            Some(h) => h[..4] == [0xFE, 0xFF, 0x00, 0xE0] && h[4..] != [0xFF; 4],
            None => false,
        }
    }

    fn encapsulated(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.at;
        loop {
            let tag = self.tag()?;
            let len = self.u32()?;
            if tag == SEQ_END {
                return Ok(self.b[start..self.at].to_vec());
            }
            if tag != ITEM || len == UNDEFINED {
                return Err(self.err("bad fragment in encapsulated data"));
            }
            self.take(len as usize)?;
        }
    }
}

impl DataSet {
    /// Reads a data set in Explicit (`explicit`) or Implicit VR Little Endian.
    pub fn parse(bytes: &[u8], explicit: bool) -> Result<DataSet, Error> {
        let mut r = Reader {
            b: bytes,
            at: 0,
            explicit,
        };
        r.data_set(bytes.len(), 0, false)
    }

    /// Appends the data set in Explicit or Implicit VR Little Endian. Sequences and items are
    /// written with undefined length.
    pub fn write(&self, explicit: bool, out: &mut Vec<u8>) {
        for e in &self.elements {
            out.extend_from_slice(&((e.tag >> 16) as u16).to_le_bytes());
            out.extend_from_slice(&(e.tag as u16).to_le_bytes());
            let len = match &e.value {
                Value::Bytes(b) => b.len() as u32,
                Value::Sequence(_) | Value::Encapsulated(_) => UNDEFINED,
            };
            if explicit {
                // A value too long for a 16-bit length goes as UN (PS3.5 §6.2.2).
                let vr = if !long_form(e.vr) && len > 0xFFFF {
                    *b"UN"
                } else {
                    e.vr
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
                Value::Bytes(b) => out.extend_from_slice(b),
                Value::Encapsulated(b) => out.extend_from_slice(b),
                Value::Sequence(items) => {
                    for item in items {
                        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
                        item.write(explicit, out);
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

/// One step of a key path: a tag and, for a sequence, the item index.
fn parse_segment(seg: &str) -> Result<(u32, Option<usize>), Error> {
    let bad = || {
        Error::Invalid(format!(
            "{seg:?}: expected a keyword, gggg,eeee or (gggg,eeee), optionally [n]"
        ))
    };
    let (name, index) = match seg.split_once('[') {
        Some((name, rest)) => {
            let n = rest
                .strip_suffix(']')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n < 1024)
                .ok_or_else(bad)?;
            (name, Some(n))
        }
        None => (seg, None),
    };
    let hex = name
        .trim_start_matches('(')
        .trim_end_matches(')')
        .replace(',', "");
    let tag = if hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(&hex, 16).map_err(|_| bad())?
    } else {
        crate::dict::tag_of(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{name:?} is not a keyword this dictionary knows; use the tag (gggg,eeee)"
            ))
        })?
    };
    Ok((tag, index))
}

/// A value from text in the VR's binary form (numbers) or padded text.
fn value_from_text(tag: u32, vr: [u8; 2], text: &str) -> Result<Vec<u8>, Error> {
    let bad = |t: &str| {
        Error::Invalid(format!(
            "({:04X},{:04X}) {}: {t:?} is not a number",
            tag >> 16,
            tag & 0xFFFF,
            String::from_utf8_lossy(&vr)
        ))
    };
    let mut out = Vec::new();
    let parts = || text.split('\\').filter(|p| !p.is_empty());
    match &vr {
        b"US" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<u16>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"SS" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<i16>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"UL" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<u32>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"SL" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<i32>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"FL" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<f32>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        b"FD" => {
            for p in parts() {
                out.extend_from_slice(&p.trim().parse::<f64>().map_err(|_| bad(p))?.to_le_bytes())
            }
        }
        _ => out = pad(vr, text.as_bytes().to_vec()),
    }
    Ok(out)
}

impl DataSet {
    /// Sets a key given as text, the way query tools take them: `PatientName=Doe*`,
    /// `0010,0020=PID1`, `(0008,0052)=STUDY`, a return key without a value (`StudyDate`), and
    /// keys inside sequence items (`ScheduledProcedureStepSequence[0].Modality=CT`; the index
    /// defaults to 0). A sequence given without a value is an empty sequence (universal
    /// matching). The VR comes from the dictionary (unknown tags are `UN`).
    pub fn set_key(&mut self, key: &str) -> Result<(), Error> {
        let (path, value) = match key.split_once('=') {
            Some((p, v)) => (p.trim(), Some(v)),
            None => (key.trim(), None),
        };
        let segments = path
            .split('.')
            .map(parse_segment)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(((tag, index), parents)) = segments.split_last() else {
            return Err(Error::Invalid("empty key".into()));
        };
        let mut ds = self;
        for &(seq_tag, i) in parents {
            if ds
                .get(seq_tag)
                .is_none_or(|e| !matches!(e.value, Value::Sequence(_)))
            {
                ds.set(Element {
                    tag: seq_tag,
                    vr: *b"SQ",
                    value: Value::Sequence(Vec::new()),
                });
            }
            let Ok(at) = ds.elements.binary_search_by_key(&seq_tag, |e| e.tag) else {
                return Err(Error::Invalid(format!("{path}: lost sequence")));
            };
            let Value::Sequence(items) = &mut ds.elements[at].value else {
                return Err(Error::Invalid(format!("{path}: not a sequence")));
            };
            let i = i.unwrap_or(0);
            if items.len() <= i {
                items.resize_with(i + 1, DataSet::default);
            }
            ds = &mut items[i];
        }
        let vr = vr_of(*tag);
        if &vr == b"SQ" {
            if value.is_some_and(|v| !v.is_empty()) || index.is_some() {
                return Err(Error::Invalid(format!(
                    "{path} is a sequence: give keys inside it, as {path}[0].Keyword=value"
                )));
            }
            if ds.get(*tag).is_none() {
                ds.set(Element {
                    tag: *tag,
                    vr,
                    value: Value::Sequence(Vec::new()),
                });
            }
            return Ok(());
        }
        if index.is_some() {
            return Err(Error::Invalid(format!(
                "{path}: only sequences take an [index]"
            )));
        }
        let bytes = value_from_text(*tag, vr, value.unwrap_or(""))?;
        ds.set(Element {
            tag: *tag,
            vr,
            value: Value::Bytes(bytes),
        });
        Ok(())
    }
}

/// Pads a value to even length as its VR wants.
pub fn pad(vr: [u8; 2], mut v: Vec<u8>) -> Vec<u8> {
    if v.len() % 2 == 1 {
        v.push(match &vr {
            b"UI" => 0,
            b"OB" | b"UN" => 0,
            _ => b' ',
        });
    }
    v
}

/// Rewrites an uncompressed data set from one VR syntax to the other.
pub fn transcode(bytes: &[u8], from_explicit: bool, to_explicit: bool) -> Result<Vec<u8>, Error> {
    if from_explicit == to_explicit {
        return Ok(bytes.to_vec());
    }
    let ds = DataSet::parse(bytes, from_explicit)?;
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    ds.write(to_explicit, &mut out);
    Ok(out)
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
    fn keys_as_query_tools_write_them() {
        let mut ds = DataSet::default();
        ds.set_key("PatientName=Doe*").unwrap();
        ds.set_key("0010,0020").unwrap();
        ds.set_key("(0008,0052)=STUDY").unwrap();
        ds.set_key("ScheduledProcedureStepSequence[0].Modality=CT")
            .unwrap();
        ds.set_key("ScheduledProcedureStepSequence.ScheduledStationAETitle")
            .unwrap();
        ds.set_key("(0040,0100)[1].Modality=MR").unwrap();
        ds.set_key("RequestedProcedureCodeSequence").unwrap();
        ds.set_key("00280010=512").unwrap();
        assert_eq!(ds.string(0x0010_0010).as_deref(), Some("Doe*"));
        assert_eq!(ds.string(0x0010_0020).as_deref(), Some(""));
        assert_eq!(ds.string(0x0008_0052).as_deref(), Some("STUDY"));
        assert_eq!(ds.get(0x0028_0010).unwrap().value, Value::Bytes(vec![0, 2]));
        let Value::Sequence(items) = &ds.get(0x0040_0100).unwrap().value else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].string(0x0008_0060).as_deref(), Some("CT"));
        assert_eq!(items[0].string(0x0040_0001).as_deref(), Some(""));
        assert_eq!(items[1].string(0x0008_0060).as_deref(), Some("MR"));
        assert_eq!(
            ds.get(0x0032_1064).unwrap().value,
            Value::Sequence(Vec::new())
        );
        for bad in [
            "NoSuchKeyword=1",
            "PatientName[0]=x",
            "ScheduledProcedureStepSequence=CT",
            "00280010=abc",
            "",
            "(0010,0010)[x]",
        ] {
            assert!(ds.set_key(bad).is_err(), "{bad}");
        }
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
