//! [`Segment`]: one segment of a message, fields located on demand.

use crate::{Charset, Delimiters, SegmentValues, Value, value::Level};

/// One segment, borrowing the message's bytes.
///
/// Fields are numbered as the standard numbers them, from 1. In header segments (`MSH`, `FHS`,
/// `BHS`) field 1 is the field separator itself and field 2 the encoding characters, so `MSH-3`
/// is the sending application. Field 0 is the segment ID.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Segment<'m> {
    raw: &'m [u8],
    d: Delimiters,
    charset: Charset,
}

impl<'m> Segment<'m> {
    pub(crate) fn new(raw: &'m [u8], d: Delimiters, charset: Charset) -> Self {
        Segment { raw, d, charset }
    }

    /// The segment ID (`MSH`, `PID`, `ZPI`, ...).
    pub fn name(&self) -> &'m str {
        // The parser only admits segments whose first three bytes are ASCII letters or digits.
        std::str::from_utf8(self.raw.get(..3).unwrap_or(b"")).unwrap_or("")
    }

    /// The segment's bytes, without terminator.
    pub fn raw(&self) -> &'m [u8] {
        self.raw
    }

    fn is_header(&self) -> bool {
        matches!(self.raw.get(..3), Some(b"MSH" | b"FHS" | b"BHS"))
    }

    /// Field `n` (1-based, as the standard numbers it). Missing fields read as empty.
    pub fn field(&self, n: usize) -> Value<'m> {
        let value = |raw: &'m [u8], literal: bool| {
            Value::new(raw, self.d, self.charset, Level::Field, literal)
        };
        if n == 0 {
            return value(self.raw.get(..3).unwrap_or(b""), true);
        }
        if self.is_header() {
            match n {
                1 => return value(self.raw.get(3..4).unwrap_or(b""), true),
                2 => return value(nth(self.raw, self.d.field, 1), true),
                _ => return value(nth(self.raw, self.d.field, n - 1), false),
            }
        }
        value(nth(self.raw, self.d.field, n), false)
    }

    /// Number of the last field present (trailing empty fields included).
    pub fn field_count(&self) -> usize {
        let seps = memchr::memchr_iter(self.d.field, self.raw).count();
        if self.is_header() && seps > 0 {
            seps + 1
        } else {
            seps
        }
    }

    /// Fields 1..=[`field_count`](Self::field_count), in order, in one pass over the segment.
    pub fn fields(&self) -> impl Iterator<Item = Value<'m>> + use<'m> {
        let (d, charset, header) = (self.d, self.charset, self.is_header());
        // After the ID: nothing, or the separator followed by the fields. In a header the first
        // piece is MSH-2 and MSH-1 (the separator itself) comes before it.
        let after_id = self.raw.get(3..).unwrap_or(b"");
        let body = after_id.get(1..).filter(|_| !after_id.is_empty());
        let msh1 = (header && body.is_some()).then(|| self.field(1));
        msh1.into_iter().chain(
            body.into_iter()
                .flat_map(move |b| Pieces::new(b, d.field))
                .enumerate()
                .map(move |(i, raw)| Value::new(raw, d, charset, Level::Field, header && i == 0)),
        )
    }
}

impl<'m> Segment<'m> {
    /// Every subcomponent of every field, in order, each with its [`Location`](crate::Location): the values
    /// [`fields`](Self::fields) and the nested iterators give, found in one pass over the segment
    /// instead of one search per level. Use it to read everything (printing, converting); use
    /// [`field`](Self::field) and paths to read a few values.
    ///
    /// ```
    /// use hl7v2::{Location, Message};
    ///
    /// let msg = Message::parse(b"MSH|^~\\&|A\rPID|1||123^^^HOSP&X~456||DOE^JOHN\r")?;
    /// let pid = msg.segment("PID").unwrap();
    /// let all: Vec<(Location, &[u8])> = pid.values().map(|(l, v)| (l, v.raw())).collect();
    /// assert_eq!(all.len(), 11); // empty ones too: PID-2, PID-3-2, PID-3-3, PID-4
    /// let l = Location { field: 3, repetition: 1, component: 4, subcomponent: 2 };
    /// assert!(all.contains(&(l, &b"X"[..])));
    /// # Ok::<(), hl7v2::Error>(())
    /// ```
    pub fn values(&self) -> SegmentValues<'m> {
        SegmentValues::new(self.raw, self.d, self.charset, self.is_header())
    }
}

impl std::fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Segment")
            .field(&String::from_utf8_lossy(self.raw))
            .finish()
    }
}

/// The pieces of `raw` split on `sep` (one empty piece for empty input), found with memchr.
#[derive(Debug, Clone)]
pub(crate) struct Pieces<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(raw: &'a [u8], sep: u8) -> Self {
        Pieces {
            rest: Some(raw),
            sep,
        }
    }
}

impl Pieces<'_> {
    /// An exhausted iterator.
    pub(crate) fn done() -> Self {
        Pieces { rest: None, sep: 0 }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memchr(self.sep, rest) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// The `n`-th (0-based) piece of `raw` split on `sep`; empty when there are fewer pieces.
#[inline]
pub(crate) fn nth(raw: &[u8], sep: u8, n: usize) -> &[u8] {
    let mut start = 0;
    if n > 0 {
        let mut seps = memchr::memchr_iter(sep, raw);
        match seps.nth(n - 1) {
            Some(p) => start = p + 1,
            None => return &[],
        }
    }
    let end = memchr::memchr(sep, &raw[start..]).map_or(raw.len(), |e| start + e);
    &raw[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_pieces() {
        assert_eq!(nth(b"a|b||d", b'|', 0), b"a");
        assert_eq!(nth(b"a|b||d", b'|', 1), b"b");
        assert_eq!(nth(b"a|b||d", b'|', 2), b"");
        assert_eq!(nth(b"a|b||d", b'|', 3), b"d");
        assert_eq!(nth(b"a|b||d", b'|', 4), b"");
        assert_eq!(nth(b"", b'|', 0), b"");
        assert_eq!(nth(b"|", b'|', 1), b"");
    }

    #[test]
    fn header_numbering() {
        let d = Delimiters::default();
        let seg = Segment::new(b"MSH|^~\\&|APP|FAC", d, Charset::Auto);
        assert_eq!(seg.field(0).raw(), b"MSH");
        assert_eq!(seg.field(1).raw(), b"|");
        assert_eq!(seg.field(2).raw(), b"^~\\&");
        assert_eq!(seg.field(3).raw(), b"APP");
        assert_eq!(seg.field(4).raw(), b"FAC");
        assert_eq!(seg.field_count(), 4);
        let all: Vec<_> = seg.fields().map(|f| f.raw()).collect();
        assert_eq!(all, [&b"|"[..], b"^~\\&", b"APP", b"FAC"]);
        assert!(seg.fields().nth(1).unwrap().component(2).is_empty());
        // MSH-2 is never split or unescaped.
        assert_eq!(seg.field(2).component(1).raw(), b"^~\\&");
        assert_eq!(seg.field(2).text(), "^~\\&");
    }

    #[test]
    fn ordinary_numbering() {
        let d = Delimiters::default();
        let seg = Segment::new(b"PID|1||X", d, Charset::Auto);
        assert_eq!(seg.name(), "PID");
        assert_eq!(seg.field(1).raw(), b"1");
        assert_eq!(seg.field(3).raw(), b"X");
        assert_eq!(seg.field_count(), 3);
        assert_eq!(seg.fields().count(), 3);
        let all: Vec<_> = seg.fields().map(|f| f.raw()).collect();
        assert_eq!(all, [&b"1"[..], b"", b"X"]);
        let bare = Segment::new(b"ZZZ", d, Charset::Auto);
        assert_eq!((bare.field_count(), bare.fields().count()), (0, 0));
    }
}
