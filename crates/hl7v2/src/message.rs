//! [`Message`]: a parsed message, borrowing its input.

use std::borrow::Cow;
use std::fmt;

use crate::{Charset, Delimiters, Error, Path, Segment, Value};

/// Default for [`ParseOptions::max_size`]: 16 MiB, enough for a message carrying a large base64
/// PDF in OBX-5, small enough to bound what a hostile peer can make us hold.
pub const DEFAULT_MAX_SIZE: usize = 16 * 1024 * 1024;

/// How [`Message::parse_with`] reads its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Accept only `\r` as segment terminator (a `\n` inside a value is still data).
    ///
    /// The default (`false`) also accepts `\n` and `\r\n` terminators, as found in files and
    /// in `$push` JSON bodies, and skips blank lines and leading whitespace. Which terminator a
    /// message uses is decided once, from the end of its header segment (MSH, or FHS/BHS for a
    /// batch), never line by line:
    ///
    /// - header ended by `\r` or `\r\n`: every segment ends at a `\r` (the standard's
    ///   terminator, HL7 v2 Chapter 2), a `\n` right after it belongs to the terminator, and any
    ///   other `\n` is data inside a value, whatever the line after it looks like;
    /// - header ended by a bare `\n` (a message with no `\r` terminators): `\n`, `\r\n` and `\r`
    ///   end segments, and a `\n` followed by a line that is not a segment ID stays in the value
    ///   it sits in. In such a message a line feed inside a value cannot be told apart from a
    ///   terminator when the next line starts like a segment (`CXR|`, `OBX`); write such values
    ///   with `\r` terminators or as `\X0A\` / `\.br\`.
    pub strict: bool,
    /// Inputs larger than this are refused with [`Error::TooLarge`] before any work is done.
    pub max_size: usize,
    /// Character set used when values are read as text, overriding MSH-18.
    pub charset: Option<Charset>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            strict: false,
            max_size: DEFAULT_MAX_SIZE,
            charset: None,
        }
    }
}

/// Byte range of one segment (terminator excluded) in the message's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// A parsed HL7 v2 message.
///
/// Parsing finds the delimiters and the segment boundaries and nothing else: fields,
/// repetitions, components and subcomponents are located when they are read, as slices of the
/// input. The message borrows its input; [`Message::into_owned`] copies it for storage.
#[derive(Clone, PartialEq, Eq)]
pub struct Message<'a> {
    raw: Cow<'a, [u8]>,
    delims: Delimiters,
    charset: Charset,
    segments: Vec<Span>,
}

impl<'a> Message<'a> {
    /// Parses with the default [`ParseOptions`].
    pub fn parse(input: &'a [u8]) -> Result<Message<'a>, Error> {
        Message::parse_with(input, &ParseOptions::default())
    }

    /// Parses with explicit options.
    pub fn parse_with(input: &'a [u8], opts: &ParseOptions) -> Result<Message<'a>, Error> {
        check_size(input, opts)?;
        let start = skip_preamble(input, opts.strict);
        if !input[start..].starts_with(b"MSH") {
            return Err(Error::NoMsh { offset: start });
        }
        let delims = header_delimiters(input, start)?;
        let segments = split_segments(input, start, delims.field, opts.strict)?;
        let mut msg = Message {
            raw: Cow::Borrowed(input),
            delims,
            charset: Charset::Auto,
            segments,
        };
        msg.charset = match opts.charset {
            Some(c) => c,
            None => {
                Charset::from_msh18(msg.msh().field(18).component(1).raw()).unwrap_or(Charset::Auto)
            }
        };
        Ok(msg)
    }

    /// Builds a message from parts already validated by the batch splitter.
    pub(crate) fn from_parts(
        raw: &'a [u8],
        delims: Delimiters,
        segments: Vec<Span>,
        charset: Option<Charset>,
    ) -> Message<'a> {
        let mut msg = Message {
            raw: Cow::Borrowed(raw),
            delims,
            charset: Charset::Auto,
            segments,
        };
        msg.charset = charset.unwrap_or_else(|| {
            Charset::from_msh18(msg.msh().field(18).component(1).raw()).unwrap_or(Charset::Auto)
        });
        msg
    }

    /// Copies the input so the message can outlive it.
    pub fn into_owned(self) -> Message<'static> {
        Message {
            raw: Cow::Owned(self.raw.into_owned()),
            delims: self.delims,
            charset: self.charset,
            segments: self.segments,
        }
    }

    /// The delimiters from MSH-1 and MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.delims
    }

    /// The character set used to read values as text (from MSH-18 or the parse options).
    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The input as given to the parser.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// All segments in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_>> + '_ {
        self.segments.iter().map(move |s| self.segment_at(*s))
    }

    /// The MSH segment.
    pub fn msh(&self) -> Segment<'_> {
        // A parsed message always has its header first.
        self.segment_at(self.segments[0])
    }

    /// The first segment with this name.
    pub fn segment(&self, name: &str) -> Option<Segment<'_>> {
        self.segments_named(name).next()
    }

    /// The `occurrence`-th (1-based) segment with this name.
    pub fn segment_n(&self, name: &str, occurrence: usize) -> Option<Segment<'_>> {
        self.segments_named(name).nth(occurrence.checked_sub(1)?)
    }

    /// Every segment with this name, in order.
    pub fn segments_named<'s>(&'s self, name: &str) -> impl Iterator<Item = Segment<'s>> + 's {
        let name: [u8; 3] = name.as_bytes().try_into().unwrap_or([0; 3]);
        let raw: &[u8] = &self.raw;
        self.segments
            .iter()
            .filter(move |s| raw[s.range()].starts_with(&name))
            .map(move |s| self.segment_at(*s))
    }

    /// Reads a value by path, for example `PID-5-1`, `OBX(2)-5` or `PID-3[2]-1` (see [`Path`]).
    /// Missing parts read as empty; only a malformed path is an error.
    pub fn get(&self, path: &str) -> Result<Value<'_>, Error> {
        Ok(self.value(&path.parse::<Path>()?))
    }

    /// Reads a value by a pre-parsed [`Path`]. Missing parts read as empty.
    pub fn value(&self, path: &Path) -> Value<'_> {
        match self.segment_n(path.segment(), path.occurrence()) {
            Some(seg) => path.select(seg),
            None => Value::empty(self.delims, self.charset),
        }
    }

    /// MSH-10, the message control ID.
    pub fn control_id(&self) -> Value<'_> {
        self.msh().field(10)
    }

    /// Appends the message to `out` with every segment terminated by `\r`.
    ///
    /// Segments are copied as they are: only what separates them changes (`\n` and `\r\n`
    /// terminators become `\r`, blank lines and a leading byte-order mark or whitespace go, a
    /// missing `\r` after the last segment is added). A `\n` inside a value stays.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for s in &self.segments {
            out.extend_from_slice(&self.raw[s.range()]);
            out.push(b'\r');
        }
    }

    /// The message with every segment terminated by `\r` (see [`write_to`](Self::write_to)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + 1);
        self.write_to(&mut out);
        out
    }

    /// The message as it goes on the wire: the input itself when it already is every segment
    /// followed by one `\r` and nothing else, else [`to_bytes`](Self::to_bytes). So a
    /// `\r`-terminated message is sent byte for byte as given, and only the terminators of
    /// other messages change, never a byte inside a segment.
    pub fn to_wire(&self) -> Cow<'_, [u8]> {
        if self.is_wire_form() {
            Cow::Borrowed(&self.raw)
        } else {
            Cow::Owned(self.to_bytes())
        }
    }

    /// Whether the input is exactly the segments, each followed by one `\r`.
    fn is_wire_form(&self) -> bool {
        let mut expect = 0usize;
        for s in &self.segments {
            let (start, end) = (s.start as usize, s.end as usize);
            if start != expect || self.raw.get(end) != Some(&b'\r') {
                return false;
            }
            expect = end + 1;
        }
        expect == self.raw.len()
    }

    fn segment_at(&self, span: Span) -> Segment<'_> {
        Segment::new(&self.raw[span.range()], self.delims, self.charset)
    }
}

/// One segment per line, each decoded with the message's character set (escapes kept).
impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&self.charset.decode(seg.raw()))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("delimiters", &self.delims)
            .field("charset", &self.charset)
            .field(
                "segments",
                &self
                    .segments()
                    .map(|s| String::from_utf8_lossy(s.raw()).into_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub(crate) fn check_size(input: &[u8], opts: &ParseOptions) -> Result<(), Error> {
    // Spans are u32, so nothing above 4 GiB is addressable whatever the option says.
    let max = opts.max_size.min(u32::MAX as usize);
    if input.len() > max {
        return Err(Error::TooLarge {
            size: input.len(),
            max,
        });
    }
    Ok(())
}

/// Skips a UTF-8 byte-order mark and, when lenient, leading whitespace and blank lines.
pub(crate) fn skip_preamble(input: &[u8], strict: bool) -> usize {
    let mut pos = if input.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    if !strict {
        while pos < input.len() && input[pos].is_ascii_whitespace() {
            pos += 1;
        }
    }
    pos
}

/// Reads the delimiters of the header segment starting at `start`.
pub(crate) fn header_delimiters(input: &[u8], start: usize) -> Result<Delimiters, Error> {
    let end = memchr::memchr2(b'\r', b'\n', &input[start..]).map_or(input.len(), |e| start + e);
    Delimiters::from_header(&input[start..end], start)
}

/// Whether `line` starts with a segment ID: three upper-case letters or digits followed by the
/// field separator, a terminator or the end of input.
fn is_segment_start(line: &[u8], field: u8) -> bool {
    let id_ok = line.len() >= 3
        && line[..3]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    id_ok
        && match line.get(3) {
            None | Some(b'\r' | b'\n') => true,
            Some(&b) => b == field,
        }
}

/// How the segments of one message end, read from the end of its header segment (see the
/// [`ParseOptions`] docs for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terminator {
    /// The header ends with `\r` (or `\r\n`): `\r` ends every segment, a `\n` right after it
    /// belongs to the terminator, and any other `\n` is data.
    Cr,
    /// The header ends with a bare `\n`: `\r`, `\n` and `\r\n` end segments, except a bare `\n`
    /// followed by a line that is not a segment, which stays in the value it sits in.
    Lf,
}

impl Terminator {
    /// The terminator of the message whose header segment starts at `input[start]`; `None`
    /// when the header is the whole input.
    pub(crate) fn of(input: &[u8], start: usize) -> Option<Terminator> {
        let end = start + memchr::memchr2(b'\r', b'\n', &input[start..])?;
        Some(if input[end] == b'\r' {
            Terminator::Cr
        } else {
            Terminator::Lf
        })
    }
}

/// Splits `input[start..]` into segments. `input[start..]` begins with a segment ID.
pub(crate) fn split_segments(
    input: &[u8],
    start: usize,
    field: u8,
    strict: bool,
) -> Result<Vec<Span>, Error> {
    // Typical segments are 60-200 bytes; reserving avoids most regrowth.
    let mut spans = Vec::with_capacity((input.len() - start) / 64 + 1);
    let Some(mode) = Terminator::of(input, start) else {
        push_span(&mut spans, start, input.len());
        return Ok(spans);
    };
    if strict && mode == Terminator::Lf {
        let lf = start + memchr::memchr(b'\n', &input[start..]).unwrap_or(0);
        return Err(Error::LineFeedTerminator { offset: lf });
    }
    let mut seg_start = start;
    let mut search = start;
    loop {
        let found = match mode {
            Terminator::Cr => memchr::memchr(b'\r', &input[search..]),
            Terminator::Lf => memchr::memchr2(b'\r', b'\n', &input[search..]),
        };
        let Some(rel) = found else {
            push_span(&mut spans, seg_start, input.len());
            return Ok(spans);
        };
        let term = search + rel;
        let mut next = term + 1;
        if input[term] == b'\r' && input.get(next) == Some(&b'\n') {
            if strict {
                return Err(Error::LineFeedTerminator { offset: next });
            }
            next += 1;
        }
        // Blank lines (and, when lenient, whitespace-only lines) between segments are skipped:
        // a segment never starts with a line feed, so this is safe in either mode.
        let mut line = next;
        loop {
            while line < input.len() && (input[line] == b'\r' || (!strict && input[line] == b'\n'))
            {
                line += 1;
            }
            if strict || line >= input.len() {
                break;
            }
            let eol = match mode {
                Terminator::Cr => memchr::memchr(b'\r', &input[line..]),
                Terminator::Lf => memchr::memchr2(b'\r', b'\n', &input[line..]),
            }
            .map_or(input.len(), |e| line + e);
            if input[line..eol].iter().all(u8::is_ascii_whitespace) {
                line = eol;
                if line >= input.len() {
                    break;
                }
                continue;
            }
            break;
        }
        if line >= input.len() {
            push_span(&mut spans, seg_start, term);
            return Ok(spans);
        }
        if is_segment_start(&input[line..], field) {
            push_span(&mut spans, seg_start, term);
            seg_start = line;
            search = line;
            continue;
        }
        if strict && input[line] == b'\n' {
            return Err(Error::LineFeedTerminator { offset: line });
        }
        if mode == Terminator::Lf && input[term] == b'\n' && next == term + 1 {
            // A bare line feed followed by text that is not a segment: part of the value.
            search = term + 1;
            continue;
        }
        return Err(Error::InvalidSegmentName { offset: line });
    }
}

fn push_span(spans: &mut Vec<Span>, start: usize, end: usize) {
    // Callers have checked the input against a u32 limit.
    spans.push(Span {
        start: start as u32,
        end: end as u32,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305||ADT^A01|1698105185516|P|2.5\rEVN|A01|20231023235305\rPID|1|12345|12345^^^HOSP^MR~67890^^^OTHER^PI|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M\r";

    fn names(m: &Message<'_>) -> Vec<String> {
        m.segments().map(|s| s.name().to_owned()).collect()
    }

    #[test]
    fn basic_structure() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(names(&m), ["MSH", "EVN", "PID"]);
        assert_eq!(m.get("PID-5-1").unwrap().raw(), b"DOE");
        assert_eq!(m.get("PID.5.2").unwrap().raw(), b"JOHN");
        assert_eq!(m.get("PID-3[2]-1").unwrap().raw(), b"67890");
        assert_eq!(m.get("MSH-9-2").unwrap().raw(), b"A01");
        assert_eq!(m.get("MSH-9").unwrap().raw(), b"ADT^A01");
        assert_eq!(m.get("MSH-1").unwrap().raw(), b"|");
        assert_eq!(m.get("MSH-2").unwrap().raw(), b"^~\\&");
        assert_eq!(m.get("MSH-3").unwrap().raw(), b"ADTSYS");
        assert_eq!(m.control_id().raw(), b"1698105185516");
    }

    #[test]
    fn missing_parts_are_empty() {
        let m = Message::parse(ADT).unwrap();
        for p in [
            "PID-99",
            "PID-5-9",
            "PID-5-1-4",
            "OBX-5",
            "OBX(3)-5",
            "PID-3[9]",
            "PID(2)-1",
        ] {
            assert!(m.get(p).unwrap().is_empty(), "{p}");
        }
    }

    #[test]
    fn terminator_styles_all_parse_the_same() {
        let lf: Vec<u8> = ADT
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect();
        let crlf = String::from_utf8_lossy(ADT).replace('\r', "\r\n");
        for input in [ADT, &lf, crlf.as_bytes()] {
            let m = Message::parse(input).unwrap();
            assert_eq!(names(&m), ["MSH", "EVN", "PID"]);
            assert_eq!(m.get("PID-5-1").unwrap().raw(), b"DOE");
        }
    }

    #[test]
    fn strict_accepts_only_cr() {
        let strict = ParseOptions {
            strict: true,
            ..ParseOptions::default()
        };
        assert!(Message::parse_with(ADT, &strict).is_ok());
        let crlf = String::from_utf8_lossy(ADT).replace('\r', "\r\n");
        assert!(matches!(
            Message::parse_with(crlf.as_bytes(), &strict),
            Err(Error::LineFeedTerminator { .. })
        ));
        let lf = String::from_utf8_lossy(ADT).replace('\r', "\n");
        assert!(matches!(
            Message::parse_with(lf.as_bytes(), &strict),
            Err(Error::LineFeedTerminator { .. })
        ));
    }

    #[test]
    fn bare_lf_inside_text_is_kept() {
        let input = b"MSH|^~\\&|A|B\rNTE|1||first line\nsecond line\rPID|1\r";
        let m = Message::parse(input).unwrap();
        assert_eq!(names(&m), ["MSH", "NTE", "PID"]);
        assert_eq!(m.get("NTE-3").unwrap().raw(), b"first line\nsecond line");
    }

    #[test]
    fn bom_and_blank_lines() {
        let input = b"\xEF\xBB\xBFMSH|^~\\&|A\r\n\r\nPID|1\r\n   \r\n";
        let m = Message::parse(input).unwrap();
        assert_eq!(names(&m), ["MSH", "PID"]);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            Message::parse(b""),
            Err(Error::NoMsh { offset: 0 })
        ));
        assert!(matches!(
            Message::parse(b"PID|1"),
            Err(Error::NoMsh { offset: 0 })
        ));
        assert!(matches!(
            Message::parse(b"MSH"),
            Err(Error::MshTooShort { .. })
        ));
        assert!(matches!(
            Message::parse(b"MSH|"),
            Err(Error::MshTooShort { .. })
        ));
        assert!(matches!(
            Message::parse(b"MSH|^~"),
            Err(Error::MshTooShort { .. })
        ));
        assert!(matches!(
            Message::parse(b"MSH|^~\\&|A\rpid|1"),
            Err(Error::InvalidSegmentName { offset: 11 })
        ));
        let small = ParseOptions {
            max_size: 10,
            ..ParseOptions::default()
        };
        assert!(matches!(
            Message::parse_with(ADT, &small),
            Err(Error::TooLarge { max: 10, .. })
        ));
    }

    #[test]
    fn serialize_normalizes_terminators() {
        let crlf = String::from_utf8_lossy(ADT).replace('\r', "\r\n");
        let m = Message::parse(crlf.as_bytes()).unwrap();
        assert_eq!(m.to_bytes(), ADT);
        let again = Message::parse(ADT).unwrap();
        assert_eq!(
            Message::parse(&m.to_bytes()).unwrap().to_bytes(),
            again.to_bytes()
        );
    }

    #[test]
    fn owned_outlives_input() {
        let owned = {
            let buf = ADT.to_vec();
            Message::parse(&buf).unwrap().into_owned()
        };
        assert_eq!(owned.get("PID-5-1").unwrap().raw(), b"DOE");
    }
}
