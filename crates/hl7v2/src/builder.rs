//! [`MessageBuilder`]: construct messages in code, with escaping.

use crate::{Delimiters, escape::escape};

/// Reps → components → subcomponents → escaped bytes.
type FieldData = Vec<Vec<Vec<Vec<u8>>>>;

/// Builds a message segment by segment. Text given to the setters is escaped; `raw_*` setters
/// take bytes already in wire form. The result is serialized with `\r` after every segment.
///
/// ```
/// use hl7v2::{Message, MessageBuilder};
///
/// let mut b = MessageBuilder::new();
/// b.msh().field(3, "LAB").components(9, &["ORU", "R01"]).field(10, "42").field(12, "2.5");
/// b.segment("PID").component(5, 1, "O'Brien|Smith").component(5, 2, "Ann");
/// let bytes = b.build();
/// assert!(bytes.starts_with(b"MSH|^~\\&|LAB||||||ORU^R01|42||2.5\rPID|||||O'Brien\\F\\Smith^Ann\r"));
/// let msg = Message::parse(&bytes).unwrap();
/// assert_eq!(msg.get("PID-5-1").unwrap().text(), "O'Brien|Smith");
/// ```
///
/// `field("ORU^R01")` would store one component holding a `^` (written `ORU\S\R01`): text is
/// always escaped. Composites are set with [`SegmentBuilder::component`],
/// [`SegmentBuilder::components`] or [`SegmentBuilder::raw_field`].
///
/// With delimiters that have no subcomponent separator (a three-character MSH-2), a message has
/// no subcomponents: setting subcomponent 2 or later of a component does nothing, and MSH-2 is
/// written with its three characters.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    d: Delimiters,
    segments: Vec<SegmentBuilder>,
}

impl Default for MessageBuilder {
    fn default() -> Self {
        MessageBuilder::new()
    }
}

impl MessageBuilder {
    /// A builder with the default delimiters `|^~\&` and an empty MSH segment.
    pub fn new() -> Self {
        MessageBuilder::with_delimiters(Delimiters::default())
    }

    /// A builder with the given delimiters and an empty MSH segment.
    pub fn with_delimiters(d: Delimiters) -> Self {
        MessageBuilder {
            d,
            segments: vec![SegmentBuilder::new("MSH", d)],
        }
    }

    /// The delimiters in use.
    pub fn delimiters(&self) -> Delimiters {
        self.d
    }

    /// The MSH segment. MSH-1 and MSH-2 come from the delimiters; set fields from 3 on.
    pub fn msh(&mut self) -> &mut SegmentBuilder {
        &mut self.segments[0]
    }

    /// Appends a segment and returns it for filling in.
    pub fn segment(&mut self, name: &str) -> &mut SegmentBuilder {
        self.segments.push(SegmentBuilder::new(name, self.d));
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Appends the serialized message to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for seg in &self.segments {
            seg.write_to(out);
            out.push(b'\r');
        }
    }

    /// The serialized message.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_to(&mut out);
        out
    }
}

/// One segment under construction; see [`MessageBuilder`].
#[derive(Debug, Clone)]
pub struct SegmentBuilder {
    name: String,
    d: Delimiters,
    /// Index `i` is field `i + 1`. For header segments fields 1 and 2 are the delimiters and
    /// their entries stay empty.
    fields: Vec<FieldData>,
}

impl SegmentBuilder {
    pub(crate) fn new(name: &str, d: Delimiters) -> Self {
        SegmentBuilder {
            name: name.to_owned(),
            d,
            fields: Vec::new(),
        }
    }

    fn is_header(&self) -> bool {
        matches!(self.name.as_str(), "MSH" | "FHS" | "BHS")
    }

    fn slot(&mut self, n: usize, rep: usize, comp: usize, sub: usize) -> &mut Vec<u8> {
        let grow = |len: usize, need: usize| need.max(len);
        let n = n.max(1);
        let (rep, comp, sub) = (rep.max(1), comp.max(1), sub.max(1));
        let len = grow(self.fields.len(), n);
        self.fields.resize_with(len, Vec::new);
        let field = &mut self.fields[n - 1];
        let len = grow(field.len(), rep);
        field.resize_with(len, Vec::new);
        let r = &mut field[rep - 1];
        let len = grow(r.len(), comp);
        r.resize_with(len, Vec::new);
        let c = &mut r[comp - 1];
        let len = grow(c.len(), sub);
        c.resize_with(len, Vec::new);
        &mut c[sub - 1]
    }

    fn set(&mut self, n: usize, rep: usize, comp: usize, sub: usize, bytes: &[u8]) -> &mut Self {
        if self.is_header() && n <= 2 {
            // MSH-1 and MSH-2 are the delimiters; they are not settable.
            return self;
        }
        if sub > 1 && self.d.subcomponent.is_none() {
            // Nothing could separate it from subcomponent 1 (see the type's docs).
            return self;
        }
        let slot = self.slot(n, rep, comp, sub);
        slot.clear();
        slot.extend_from_slice(bytes);
        self
    }

    /// Sets field `n` to one escaped text value, replacing whatever it held.
    pub fn field(&mut self, n: usize, text: &str) -> &mut Self {
        if let Some(f) = self.fields.get_mut(n.wrapping_sub(1)) {
            f.clear();
        }
        let esc = escape(text.as_bytes(), &self.d).into_owned();
        self.set(n, 1, 1, 1, &esc)
    }

    /// Sets field `n` to bytes already in wire form (delimiters and escapes kept as given).
    pub fn raw_field(&mut self, n: usize, raw: &[u8]) -> &mut Self {
        if let Some(f) = self.fields.get_mut(n.wrapping_sub(1)) {
            f.clear();
        }
        self.set(n, 1, 1, 1, raw)
    }

    /// Sets component `c` of the first repetition of field `n`.
    pub fn component(&mut self, n: usize, c: usize, text: &str) -> &mut Self {
        self.value(n, 1, c, 1, text)
    }

    /// Sets components 1.. of the first repetition of field `n`.
    pub fn components(&mut self, n: usize, texts: &[&str]) -> &mut Self {
        for (i, t) in texts.iter().enumerate() {
            self.value(n, 1, i + 1, 1, t);
        }
        self
    }

    /// Sets subcomponent `s` of component `c` of repetition `rep` of field `n` (all 1-based).
    pub fn value(&mut self, n: usize, rep: usize, c: usize, s: usize, text: &str) -> &mut Self {
        let esc = escape(text.as_bytes(), &self.d).into_owned();
        self.set(n, rep, c, s, &esc)
    }

    /// Appends the segment (without terminator) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let d = self.d;
        out.extend_from_slice(self.name.as_bytes());
        let skip = if self.is_header() {
            out.push(d.field);
            let (enc, len) = d.encoding_characters();
            out.extend_from_slice(&enc[..len]);
            2
        } else {
            0
        };
        for field in self.fields.iter().skip(skip) {
            out.push(d.field);
            for (ri, rep) in field.iter().enumerate() {
                if ri > 0 {
                    out.push(d.repetition);
                }
                for (ci, comp) in rep.iter().enumerate() {
                    if ci > 0 {
                        out.push(d.component);
                    }
                    for (si, sub) in comp.iter().enumerate() {
                        if si > 0 {
                            // `set` stores subcomponents past the first only when there is a
                            // separator for them.
                            let Some(sep) = d.subcomponent else { break };
                            out.push(sep);
                        }
                        out.extend_from_slice(sub);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn builds_structure() {
        let mut b = MessageBuilder::new();
        b.msh()
            .field(3, "APP")
            .raw_field(9, b"ADT^A01")
            .field(10, "1")
            .field(12, "2.5");
        b.segment("PID")
            .value(3, 1, 1, 1, "111")
            .value(3, 2, 1, 1, "222")
            .value(3, 2, 4, 2, "ISO")
            .components(5, &["DOE", "JOHN"]);
        let bytes = b.build();
        assert_eq!(
            bytes,
            b"MSH|^~\\&|APP||||||ADT^A01|1||2.5\rPID|||111~222^^^&ISO||DOE^JOHN\r"
        );
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.get("PID-3[2]-4-2").unwrap().raw(), b"ISO");
        assert_eq!(m.get("MSH-9-2").unwrap().raw(), b"A01");
    }

    #[test]
    fn header_delimiter_fields_are_fixed() {
        let mut b = MessageBuilder::new();
        b.msh().field(1, "X").field(2, "Y").field(3, "A");
        assert_eq!(b.build(), b"MSH|^~\\&|A\r");
    }

    #[test]
    fn truncation_and_custom_delimiters() {
        let d = Delimiters {
            field: b'*',
            component: b':',
            repetition: b'!',
            escape: b'@',
            subcomponent: Some(b'%'),
            truncation: Some(b'#'),
        };
        let mut b = MessageBuilder::with_delimiters(d);
        b.msh().field(3, "A*B#");
        let bytes = b.build();
        assert_eq!(bytes, b"MSH*:!@%#*A@F@B@P@\r");
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.get("MSH-3").unwrap().text(), "A*B#");
    }

    #[test]
    fn three_encoding_characters() {
        let d = Delimiters {
            subcomponent: None,
            ..Delimiters::default()
        };
        let mut b = MessageBuilder::with_delimiters(d);
        b.msh().field(3, "R&D");
        b.segment("PID")
            .value(3, 1, 4, 1, "HOSP")
            .value(3, 1, 4, 2, "ignored")
            .field(5, "A&B^C");
        let bytes = b.build();
        assert_eq!(bytes, b"MSH|^~\\|R&D\rPID|||^^^HOSP||A&B\\S\\C\r");
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.delimiters(), d);
        assert_eq!(m.get("PID-5").unwrap().text(), "A&B^C");
        assert_eq!(m.get("PID-3-4-1").unwrap().text(), "HOSP");
    }
}
