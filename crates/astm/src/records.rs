//! E1394 (LIS02) records: `H|\^&|...` `P|1|...` `O|1|...` `R|1|...` `C|1|...` `L|1|N`.
//!
//! The H record declares the delimiters: byte 1 the field delimiter, bytes 2-4 the repeat,
//! component and escape delimiters (`H|\^&`). H.2 is that definition and is never split. Fields
//! are numbered from 1, field 1 being the record type letter. Escapes `&F& &S& &R& &E&` are
//! decoded when a value is read as text; other escape sequences are kept as they are. Text is
//! ISO 8859-1 unless the caller decodes the bytes otherwise.

use std::borrow::Cow;

use crate::Error;

/// The four delimiters of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Between fields (`|`).
    pub field: u8,
    /// Between repeats (`\`).
    pub repeat: u8,
    /// Between components (`^`).
    pub component: u8,
    /// Escape (`&`).
    pub escape: u8,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: b'|',
            repeat: b'\\',
            component: b'^',
            escape: b'&',
        }
    }
}

impl Delimiters {
    /// Reads `H|\^&` at the start of a header record.
    pub fn from_header(h: &[u8], offset: usize) -> Result<Delimiters, Error> {
        let err = |reason| Error::InvalidHeader { offset, reason };
        if h.first() != Some(&b'H') {
            return Err(err("a message starts with an H record"));
        }
        let d = h
            .get(1..5)
            .ok_or_else(|| err("the H record must start with H and four delimiters, as H|\\^&"))?;
        if d.iter()
            .any(|b| b.is_ascii_alphanumeric() || !b.is_ascii_graphic())
        {
            return Err(err(
                "delimiters must be printable and not letters or digits",
            ));
        }
        if (1..4).any(|i| d[..i].contains(&d[i])) {
            return Err(err("the four delimiters must differ"));
        }
        Ok(Delimiters {
            field: d[0],
            repeat: d[1],
            component: d[2],
            escape: d[3],
        })
    }
}

/// One record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    raw: &'a [u8],
    d: Delimiters,
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Record({:?})", String::from_utf8_lossy(self.raw))
    }
}

fn nth(raw: &[u8], sep: u8, n: usize) -> &[u8] {
    raw.split(|&b| b == sep).nth(n).unwrap_or(&[])
}

impl<'a> Record<'a> {
    /// The record as received (without terminator).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The record type: `H`, `P`, `O`, `R`, `C`, `Q`, `M`, `S` or `L`.
    pub fn kind(&self) -> u8 {
        self.raw.first().map_or(0, u8::to_ascii_uppercase)
    }

    /// Field `n` (1-based; field 1 is the type letter, H.2 the delimiter definition), raw.
    pub fn field(&self, n: usize) -> &'a [u8] {
        if n == 0 {
            return &[];
        }
        nth(self.raw, self.d.field, n - 1)
    }

    /// Number of fields present (the type letter counts as field 1).
    pub fn field_count(&self) -> usize {
        memchr::memchr_iter(self.d.field, self.raw).count() + 1
    }

    /// Repeat `r` of field `n` (1-based), raw.
    pub fn repeat(&self, n: usize, r: usize) -> &'a [u8] {
        if self.is_definition(n) || r == 0 {
            return if r == 1 { self.field(n) } else { &[] };
        }
        nth(self.field(n), self.d.repeat, r - 1)
    }

    /// Component `c` of the first repeat of field `n` (1-based), raw.
    pub fn component(&self, n: usize, c: usize) -> &'a [u8] {
        if self.is_definition(n) || c == 0 {
            return if c == 1 { self.field(n) } else { &[] };
        }
        nth(self.repeat(n, 1), self.d.component, c - 1)
    }

    fn is_definition(&self, n: usize) -> bool {
        self.kind() == b'H' && n == 2
    }

    /// A raw value as text: escapes decoded, bytes read as ISO 8859-1.
    pub fn text(&self, raw: &[u8]) -> String {
        encoding_rs::mem::decode_latin1(&unescape(raw, &self.d)).into_owned()
    }

    /// Field `n` as text.
    pub fn field_text(&self, n: usize) -> String {
        if self.is_definition(n) {
            return String::from_utf8_lossy(self.field(n)).into_owned();
        }
        self.text(self.field(n))
    }
}

/// Decodes `&F& &S& &R& &E&`; keeps any other sequence, and a lone escape, as it is.
pub fn unescape<'a>(raw: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    if !raw.contains(&d.escape) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == d.escape && raw.get(i + 2) == Some(&d.escape) {
            let decoded = match raw[i + 1] {
                b'F' => Some(d.field),
                b'S' => Some(d.component),
                b'R' => Some(d.repeat),
                b'E' => Some(d.escape),
                _ => None,
            };
            if let Some(b) = decoded {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// Escapes the delimiters in a value (`|` → `&F&`, ...). CR and LF become spaces: they cannot
/// appear inside a record.
pub fn escape(value: &[u8], d: &Delimiters) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        let letter = if b == d.field {
            b'F'
        } else if b == d.component {
            b'S'
        } else if b == d.repeat {
            b'R'
        } else if b == d.escape {
            b'E'
        } else {
            out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
            continue;
        };
        out.extend_from_slice(&[d.escape, letter, d.escape]);
    }
    out
}

/// A message: H ... L, records separated by CR (LF and CRLF are accepted too, for files).
#[derive(Debug, Clone)]
pub struct Message<'a> {
    records: Vec<Record<'a>>,
    d: Delimiters,
}

/// Default largest message [`Message::parse`] accepts: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl<'a> Message<'a> {
    /// Splits a message into records; the first must be an H record declaring the delimiters.
    pub fn parse(text: &'a [u8]) -> Result<Message<'a>, Error> {
        if text.len() > DEFAULT_MAX_MESSAGE {
            return Err(Error::TooLarge {
                size: text.len(),
                max: DEFAULT_MAX_MESSAGE,
            });
        }
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\r' || b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .collect();
        let start = text.len() - text.trim_ascii_start().len();
        let Some(first) = lines.first() else {
            return Err(Error::InvalidHeader {
                offset: start,
                reason: "empty message",
            });
        };
        let d = Delimiters::from_header(first, start)?;
        Ok(Message {
            records: lines.into_iter().map(|raw| Record { raw, d }).collect(),
            d,
        })
    }

    /// The delimiters from the H record.
    pub fn delimiters(&self) -> Delimiters {
        self.d
    }

    /// Every record in order.
    pub fn records(&self) -> &[Record<'a>] {
        &self.records
    }

    /// The H record.
    pub fn header(&self) -> Record<'a> {
        self.records[0]
    }

    /// Whether the message ends with an L record.
    pub fn is_complete(&self) -> bool {
        self.records.last().is_some_and(|r| r.kind() == b'L')
    }

    /// The records as a hierarchy: header, patients with their orders, results and comments.
    /// Records out of place (a result before any order) are reported in `unplaced`.
    pub fn tree(&self) -> Tree<'a> {
        let mut t = Tree {
            header: self.header(),
            comments: Vec::new(),
            patients: Vec::new(),
            queries: Vec::new(),
            manufacturer: Vec::new(),
            terminator: None,
            unplaced: Vec::new(),
        };
        #[derive(Clone, Copy)]
        enum Last {
            Top,
            Patient,
            Order,
            Result,
        }
        let mut last = Last::Top;
        for r in &self.records[1..] {
            match r.kind() {
                b'P' => {
                    t.patients.push(Patient {
                        record: *r,
                        comments: Vec::new(),
                        orders: Vec::new(),
                    });
                    last = Last::Patient;
                }
                b'O' => match t.patients.last_mut() {
                    Some(p) => {
                        p.orders.push(Order {
                            record: *r,
                            comments: Vec::new(),
                            results: Vec::new(),
                        });
                        last = Last::Order;
                    }
                    None => t.unplaced.push(*r),
                },
                b'R' => match t.patients.last_mut().and_then(|p| p.orders.last_mut()) {
                    Some(o) => {
                        o.results.push(ResultRecord {
                            record: *r,
                            comments: Vec::new(),
                        });
                        last = Last::Result;
                    }
                    None => t.unplaced.push(*r),
                },
                b'C' => {
                    let p = t.patients.last_mut();
                    match (last, p) {
                        (Last::Patient, Some(p)) => p.comments.push(*r),
                        (Last::Order, Some(p)) => p
                            .orders
                            .last_mut()
                            .map_or_else(|| t.comments.push(*r), |o| o.comments.push(*r)),
                        (Last::Result, Some(p)) => {
                            match p.orders.last_mut().and_then(|o| o.results.last_mut()) {
                                Some(res) => res.comments.push(*r),
                                None => t.comments.push(*r),
                            }
                        }
                        _ => t.comments.push(*r),
                    }
                }
                b'Q' => t.queries.push(*r),
                b'M' | b'S' => t.manufacturer.push(*r),
                b'L' => t.terminator = Some(*r),
                _ => t.unplaced.push(*r),
            }
        }
        t
    }
}

/// A message as a hierarchy.
#[derive(Debug, Clone)]
pub struct Tree<'a> {
    /// The H record.
    pub header: Record<'a>,
    /// Comments on the message itself.
    pub comments: Vec<Record<'a>>,
    /// Patients, each with orders and results.
    pub patients: Vec<Patient<'a>>,
    /// Q records (host queries).
    pub queries: Vec<Record<'a>>,
    /// M and S records.
    pub manufacturer: Vec<Record<'a>>,
    /// The L record.
    pub terminator: Option<Record<'a>>,
    /// Records that fit nowhere (an O before any P, an unknown type).
    pub unplaced: Vec<Record<'a>>,
}

/// A P record and what follows it.
#[derive(Debug, Clone)]
pub struct Patient<'a> {
    /// The P record.
    pub record: Record<'a>,
    /// Its C records.
    pub comments: Vec<Record<'a>>,
    /// Its O records.
    pub orders: Vec<Order<'a>>,
}

/// An O record and what follows it.
#[derive(Debug, Clone)]
pub struct Order<'a> {
    /// The O record.
    pub record: Record<'a>,
    /// Its C records.
    pub comments: Vec<Record<'a>>,
    /// Its R records.
    pub results: Vec<ResultRecord<'a>>,
}

/// An R record and its comments.
#[derive(Debug, Clone)]
pub struct ResultRecord<'a> {
    /// The R record.
    pub record: Record<'a>,
    /// Its C records.
    pub comments: Vec<Record<'a>>,
}

/// Builds records: fields, repeats and components, with escaping.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    d: Delimiters,
    kind: u8,
    /// Index `i` is field `i + 2`; each field is repeats of components of escaped bytes.
    fields: Vec<Vec<Vec<Vec<u8>>>>,
}

impl RecordBuilder {
    /// A record of type `kind` (`P`, `O`, ...). For `H`, use [`RecordBuilder::header`].
    pub fn new(kind: u8, d: Delimiters) -> Self {
        RecordBuilder {
            d,
            kind,
            fields: Vec::new(),
        }
    }

    /// An H record with the delimiter definition as H.2.
    pub fn header(d: Delimiters) -> Self {
        let mut b = RecordBuilder::new(b'H', d);
        b.fields
            .push(vec![vec![vec![d.repeat, d.component, d.escape]]]);
        b
    }

    fn slot(&mut self, n: usize, r: usize, c: usize) -> &mut Vec<u8> {
        let (i, r, c) = (n.max(2) - 2, r.max(1) - 1, c.max(1) - 1);
        if self.fields.len() <= i {
            self.fields.resize_with(i + 1, Vec::new);
        }
        let f = &mut self.fields[i];
        if f.len() <= r {
            f.resize_with(r + 1, Vec::new);
        }
        let rep = &mut f[r];
        if rep.len() <= c {
            rep.resize_with(c + 1, Vec::new);
        }
        &mut rep[c]
    }

    /// Sets component `c` of repeat `r` of field `n` (all 1-based, `n` from 2) to `text`
    /// (ISO 8859-1; other characters become `?`).
    pub fn set(&mut self, n: usize, r: usize, c: usize, text: &str) -> &mut Self {
        if self.kind == b'H' && n == 2 {
            return self;
        }
        let bytes: Vec<u8> = text
            .chars()
            .map(|ch| u8::try_from(u32::from(ch)).unwrap_or(b'?'))
            .collect();
        let esc = escape(&bytes, &self.d);
        *self.slot(n, r, c) = esc;
        self
    }

    /// Sets field `n` to one text value.
    pub fn field(&mut self, n: usize, text: &str) -> &mut Self {
        self.set(n, 1, 1, text)
    }

    /// Sets the components of field `n`.
    pub fn components(&mut self, n: usize, texts: &[&str]) -> &mut Self {
        for (i, t) in texts.iter().enumerate() {
            self.set(n, 1, i + 1, t);
        }
        self
    }

    /// Appends the record (without its CR).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        for (fi, field) in self.fields.iter().enumerate() {
            out.push(self.d.field);
            if self.kind == b'H' && fi == 0 {
                out.extend_from_slice(&field[0][0]);
                continue;
            }
            for (ri, rep) in field.iter().enumerate() {
                if ri > 0 {
                    out.push(self.d.repeat);
                }
                for (ci, comp) in rep.iter().enumerate() {
                    if ci > 0 {
                        out.push(self.d.component);
                    }
                    out.extend_from_slice(comp);
                }
            }
        }
    }
}

/// Joins records into a message: each record followed by CR.
pub fn build_message(records: &[RecordBuilder]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.write_to(&mut out);
        out.push(b'\r');
    }
    out
}

/// An order message (H, P, O, L) for a complete blood count, as an LIS sends an analyzer.
/// `now` is `YYYYMMDDHHMMSS`.
pub fn example_cbc_order(now: &str) -> Vec<u8> {
    let d = Delimiters::default();
    let mut h = RecordBuilder::header(d);
    h.components(5, &["OUTPOST", "1.0"])
        .field(10, "ANALYZER")
        .field(12, "P")
        .field(13, "LIS2-A2")
        .field(14, now);
    let mut p = RecordBuilder::new(b'P', d);
    p.field(2, "1")
        .field(3, "PID12345")
        .components(6, &["DOE", "JOHN"])
        .field(8, "19800101")
        .field(9, "M");
    let mut o = RecordBuilder::new(b'O', d);
    o.field(2, "1").field(3, "SPEC0001");
    for (i, test) in ["CBC", "WBC", "RBC", "HGB", "HCT", "PLT"]
        .iter()
        .enumerate()
    {
        o.set(5, i + 1, 4, test);
    }
    o.field(6, "R")
        .field(7, now)
        .field(12, "N")
        .field(16, "WB")
        .field(26, "O");
    let mut l = RecordBuilder::new(b'L', d);
    l.field(2, "1").field(3, "N");
    build_message(&[h, p, o, l])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"H|\\^&|||TestInstr^1.0|||||LIS||P|1|20240101120000\rP|1||PID123||Doe^John||19800101|M\rO|1|S001||^^^GLU\\^^^NA|R\rR|1|^^^GLU|5.4|mmol/L|3.9-6.1|N||F\rC|1|I|Hemolysed &F& recheck|G\rR|2|^^^NA|140|mmol/L\rL|1|N\r";

    #[test]
    fn header_delimiters_and_fields() {
        let m = Message::parse(MSG).unwrap();
        let h = m.header();
        assert_eq!(m.delimiters(), Delimiters::default());
        assert_eq!(h.field(1), b"H");
        assert_eq!(h.field(2), b"\\^&");
        assert_eq!(h.component(2, 1), b"\\^&", "H.2 is never split");
        assert_eq!(h.component(5, 1), b"TestInstr");
        assert_eq!(h.field(13), b"1");
        let p = m.records()[1];
        assert_eq!(p.component(6, 2), b"John");
        let o = m.records()[2];
        assert_eq!(o.repeat(5, 2), b"^^^NA");
        assert_eq!(o.component(5, 4), b"GLU");
        assert!(m.is_complete());
    }

    #[test]
    fn tree_structure() {
        let m = Message::parse(MSG).unwrap();
        let t = m.tree();
        assert_eq!(t.patients.len(), 1);
        let o = &t.patients[0].orders[0];
        assert_eq!(o.results.len(), 2);
        assert_eq!(o.results[0].comments.len(), 1);
        assert_eq!(
            o.results[0].comments[0].field_text(4),
            "Hemolysed | recheck"
        );
        assert_eq!(o.results[1].record.field(4), b"140");
        assert!(t.terminator.is_some() && t.unplaced.is_empty());
    }

    #[test]
    fn custom_delimiters_and_lf_files() {
        let m = Message::parse(b"H*!@#*\nP*1**A@B\nL*1\n").unwrap();
        assert_eq!(m.records().len(), 3);
        assert_eq!(m.records()[1].component(4, 2), b"B");
    }

    #[test]
    fn bad_headers() {
        for bad in [&b""[..], b"P|1", b"H|", b"H|\\^", b"H|\\\\&", b"HA\\^&"] {
            assert!(
                Message::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn escapes_round_trip() {
        let d = Delimiters::default();
        let v = b"a|b^c\\d&e";
        let e = escape(v, &d);
        assert_eq!(e, b"a&F&b&S&c&R&d&E&e");
        assert_eq!(unescape(&e, &d).as_ref(), v);
        // unknown sequences and lone escapes are kept
        assert_eq!(
            unescape(b"&H&bold&N& 5&10", &d).as_ref(),
            b"&H&bold&N& 5&10"
        );
    }

    #[test]
    fn builder_and_example() {
        let msg = example_cbc_order("20240101120000");
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(
            text.starts_with("H|\\^&|||OUTPOST^1.0|||||ANALYZER||P|LIS2-A2|20240101120000\r"),
            "{text}"
        );
        let m = Message::parse(&msg).unwrap();
        let kinds: Vec<u8> = m.records().iter().map(Record::kind).collect();
        assert_eq!(kinds, b"HPOL");
        let o = m.records()[2];
        assert_eq!(o.component(5, 4), b"CBC");
        assert_eq!(o.repeat(5, 6), b"^^^PLT");
        assert_eq!(m.records()[1].component(6, 1), b"DOE");
        let mut r = RecordBuilder::new(b'C', Delimiters::default());
        r.field(2, "1").field(4, "a|b\nc");
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"C|1||a&F&b c");
    }
}
