//! The delimiter characters a message declares in MSH-1 and MSH-2.
//!
//! HL7 v2 Chapter 2 (message delimiters, Figure 2-1) orders MSH-2 as component separator,
//! repetition separator, escape character, subcomponent separator and (v2.7 on) truncation
//! character. The subcomponent separator may be left out when the message has no subcomponents,
//! so MSH-2 has three, four or five characters. A delimiter left out is absent: its usual
//! character is data (`MSH|^~\|` has no subcomponents, and `&` in its values is text).

use crate::Error;

/// The delimiters of one message: MSH-1 is the field separator, MSH-2 the encoding characters
/// (component, repetition, escape, then an optional subcomponent separator, and since v2.7 an
/// optional truncation character), in that order.
///
/// A three-character MSH-2 is read in the standard's order, whatever the characters are:
/// `^~\` is component, repetition and escape with no subcomponent separator, and so is `^~&`
/// (sent by some systems), whose escape character is then `&` while `\` is data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Field separator, MSH-1 (usually `|`).
    pub field: u8,
    /// Component separator (usually `^`).
    pub component: u8,
    /// Repetition separator (usually `~`).
    pub repetition: u8,
    /// Escape character (usually `\`).
    pub escape: u8,
    /// Subcomponent separator (usually `&`); `None` when MSH-2 has three characters, and then
    /// values have no subcomponents.
    pub subcomponent: Option<u8>,
    /// Truncation character (v2.7 and later, usually `#`); `None` when MSH-2 has three or four
    /// characters. It is only written when there is a subcomponent separator too.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// `|^~\&`, the delimiters nearly every message uses.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: Some(b'&'),
            truncation: None,
        }
    }
}

impl Delimiters {
    /// Reads the delimiters from a header segment (`MSH`, `FHS` or `BHS`) that starts at `seg[0]`.
    ///
    /// `base` is the offset of `seg` in the caller's input, used for error offsets. Returns the
    /// delimiters and the length of MSH-2.
    pub(crate) fn from_header(seg: &[u8], base: usize) -> Result<Delimiters, Error> {
        if seg.len() < 4 {
            return Err(Error::MshTooShort { len: seg.len() });
        }
        let field = seg[3];
        if !is_delimiter_candidate(field) {
            return Err(Error::InvalidEncodingCharacters {
                offset: base + 3,
                reason: "field separator (MSH-1) must be a printable, non-alphanumeric character",
            });
        }
        // MSH-2 runs from byte 4 to the next field separator or the end of the segment.
        let rest = &seg[4..];
        let ended = memchr::memchr(field, rest);
        let len = ended.unwrap_or(rest.len());
        let enc = &rest[..len];
        if len < 4 && ended.is_none() {
            // `MSH|^~\` with nothing after it: a cut-off header is likelier than a short MSH-2,
            // which is only taken as such when MSH-3 follows.
            return Err(Error::MshTooShort { len: seg.len() });
        }
        if len < 3 {
            return Err(Error::InvalidEncodingCharacters {
                offset: base + 4,
                reason: "MSH-2 must have 3 to 5 encoding characters: component separator, \
                         repetition separator, escape character, then optionally subcomponent \
                         separator and truncation character",
            });
        }
        if len > 5 {
            return Err(Error::InvalidEncodingCharacters {
                offset: base + 4,
                reason: "MSH-2 has more than 5 encoding characters",
            });
        }
        for (i, &c) in enc.iter().enumerate() {
            if !is_delimiter_candidate(c) {
                return Err(Error::InvalidEncodingCharacters {
                    offset: base + 4 + i,
                    reason: "encoding characters must be printable and non-alphanumeric",
                });
            }
            if c == field || enc[..i].contains(&c) {
                return Err(Error::InvalidEncodingCharacters {
                    offset: base + 4 + i,
                    reason: "encoding characters must all differ from each other and from MSH-1",
                });
            }
        }
        Ok(Delimiters {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc[2],
            subcomponent: enc.get(3).copied(),
            truncation: enc.get(4).copied(),
        })
    }

    /// MSH-2 as it is written on the wire: the first 3, 4 or 5 bytes of the array.
    pub fn encoding_characters(&self) -> ([u8; 5], usize) {
        let mut out = [self.component, self.repetition, self.escape, 0, 0];
        let Some(sub) = self.subcomponent else {
            return (out, 3);
        };
        out[3] = sub;
        match self.truncation {
            Some(t) => {
                out[4] = t;
                (out, 5)
            }
            None => (out, 4),
        }
    }

    /// Whether `b` is one of the delimiters (field, component, repetition, escape, subcomponent,
    /// truncation).
    #[inline]
    pub fn is_delimiter(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.escape
            || Some(b) == self.subcomponent
            || Some(b) == self.truncation
    }
}

fn is_delimiter_candidate(c: u8) -> bool {
    c.is_ascii_graphic() && !c.is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_header() {
        let d = Delimiters::from_header(b"MSH|^~\\&|APP", 0).unwrap();
        assert_eq!(d, Delimiters::default());
    }

    #[test]
    fn truncation_character() {
        let d = Delimiters::from_header(b"MSH|^~\\&#|APP", 0).unwrap();
        assert_eq!(d.truncation, Some(b'#'));
        assert_eq!(d.encoding_characters(), (*b"^~\\&#", 5));
    }

    #[test]
    fn custom_delimiters() {
        let d = Delimiters::from_header(b"MSH*:!@%*APP", 0).unwrap();
        assert_eq!(
            (d.field, d.component, d.repetition, d.escape, d.subcomponent),
            (b'*', b':', b'!', b'@', Some(b'%'))
        );
    }

    #[test]
    fn three_encoding_characters() {
        // Chapter 2: the subcomponent separator may be left out; it is then absent.
        let d = Delimiters::from_header(b"MSH|^~\\|APP", 0).unwrap();
        assert_eq!(
            (d.component, d.repetition, d.escape, d.subcomponent),
            (b'^', b'~', b'\\', None)
        );
        assert_eq!(d.encoding_characters(), (*b"^~\\\0\0", 3));
        assert!(!d.is_delimiter(b'&'));
        // `^~&` is read in the standard's order: `&` is the escape character.
        let d = Delimiters::from_header(b"MSH|^~&|APP", 0).unwrap();
        assert_eq!((d.escape, d.subcomponent), (b'&', None));
        assert!(!d.is_delimiter(b'\\'));
        let (enc, len) = d.encoding_characters();
        assert_eq!(&enc[..len], b"^~&");
    }

    #[test]
    fn one_or_two_encoding_characters_are_refused() {
        for (header, offset) in [(&b"MSH|^|APP"[..], 4), (b"MSH|^~|APP", 4), (b"MSH||APP", 4)] {
            let e = Delimiters::from_header(header, 0).unwrap_err();
            assert!(
                matches!(e, Error::InvalidEncodingCharacters { offset: o, .. } if o == offset),
                "{e}"
            );
            assert!(e.to_string().contains("3 to 5 encoding characters"), "{e}");
        }
        // duplicates, also in a three-character MSH-2
        let e = Delimiters::from_header(b"MSH|^^\\|APP", 0).unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidEncodingCharacters { offset: 5, .. }
        ));
        assert!(e.to_string().contains("must all differ"), "{e}");
        let e = Delimiters::from_header(b"MSH|^~^|APP", 0).unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidEncodingCharacters { offset: 6, .. }
        ));
    }

    #[test]
    fn rejects_bad_sets() {
        assert!(matches!(
            Delimiters::from_header(b"MSH", 0),
            Err(Error::MshTooShort { len: 3 })
        ));
        assert!(matches!(
            Delimiters::from_header(b"MSH|", 0),
            Err(Error::MshTooShort { .. })
        ));
        assert!(matches!(
            Delimiters::from_header(b"MSH|^~", 0),
            Err(Error::MshTooShort { .. })
        ));
        assert!(matches!(
            Delimiters::from_header(b"MSH|^~|APP|X", 0),
            Err(Error::InvalidEncodingCharacters { offset: 4, .. })
        ));
        assert!(matches!(
            Delimiters::from_header(b"MSH|^^\\&|", 0),
            Err(Error::InvalidEncodingCharacters { offset: 5, .. })
        ));
        assert!(matches!(
            Delimiters::from_header(b"MSHA^~\\&A", 0),
            Err(Error::InvalidEncodingCharacters { offset: 3, .. })
        ));
        assert!(matches!(
            Delimiters::from_header(b"MSH|^~\\&#$|", 0),
            Err(Error::InvalidEncodingCharacters { .. })
        ));
    }
}
