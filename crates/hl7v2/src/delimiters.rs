//! The five (or six) delimiter characters a message declares in MSH-1 and MSH-2.

use crate::Error;

/// The delimiters of one message: MSH-1 is the field separator, MSH-2 the encoding characters
/// (component, repetition, escape, subcomponent, and since v2.7 an optional truncation character).
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
    /// Subcomponent separator (usually `&`).
    pub subcomponent: u8,
    /// Truncation character (v2.7 and later, usually `#`); `None` when MSH-2 has four characters.
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
            subcomponent: b'&',
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
        let len = memchr::memchr(field, rest).unwrap_or(rest.len());
        let enc = &rest[..len];
        if len < 4 {
            return Err(if seg.len() < 8 {
                Error::MshTooShort { len: seg.len() }
            } else {
                Error::InvalidEncodingCharacters {
                    offset: base + 4,
                    reason: "MSH-2 must have 4 encoding characters (5 with a truncation character)",
                }
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
            subcomponent: enc[3],
            truncation: enc.get(4).copied(),
        })
    }

    /// MSH-2 as it is written on the wire (4 or 5 bytes).
    pub fn encoding_characters(&self) -> ([u8; 5], usize) {
        let mut out = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
            0,
        ];
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
            || b == self.subcomponent
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
            (b'*', b':', b'!', b'@', b'%')
        );
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
