//! Character sets: MSH-18 values and caller-named labels, decoding bytes to text and back.

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::Error;

/// How the bytes of a message become text.
///
/// The parser never needs this: it works on bytes, and HL7 delimiters are ASCII in every
/// supported set. It matters only when a value is read as text ([`Value::text`](crate::Value::text))
/// or when text is written to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Charset {
    /// No MSH-18 and nothing named by the caller: UTF-8 where the bytes are valid UTF-8,
    /// windows-1252 where they are not (untagged 8-bit text is nearly always Western European).
    #[default]
    Auto,
    /// UTF-8 (`UNICODE UTF-8`); invalid sequences become U+FFFD.
    Utf8,
    /// ISO 8859-1 (`8859/1`, `latin1`): every byte is the code point of the same value.
    Latin1,
    /// Any other encoding known to the WHATWG Encoding Standard (windows-1252, 8859/2..15,
    /// Shift_JIS, GB 18030, Big5, EUC-KR, ...).
    Other(&'static Encoding),
}

impl Charset {
    /// Reads an MSH-18 value (HL7 table 0211), for example `8859/1` or `UNICODE UTF-8`.
    ///
    /// `ASCII` maps to [`Charset::Auto`]: ASCII is a subset of both fallbacks, and real senders
    /// that claim ASCII often send windows-1252.
    pub fn from_msh18(value: &[u8]) -> Result<Charset, Error> {
        let v = value.trim_ascii();
        let upper: Vec<u8> = v.iter().map(u8::to_ascii_uppercase).collect();
        let named = |label: &str| {
            Encoding::for_label(label.as_bytes())
                .map(Charset::Other)
                .ok_or_else(|| Error::UnknownCharset(label.to_owned()))
        };
        match upper.as_slice() {
            b"" | b"ASCII" => Ok(Charset::Auto),
            b"UNICODE UTF-8" | b"UTF-8" | b"UNICODE" => Ok(Charset::Utf8),
            b"8859/1" => Ok(Charset::Latin1),
            b"8859/2" => named("iso-8859-2"),
            b"8859/3" => named("iso-8859-3"),
            b"8859/4" => named("iso-8859-4"),
            b"8859/5" => named("iso-8859-5"),
            b"8859/6" => named("iso-8859-6"),
            b"8859/7" => named("iso-8859-7"),
            b"8859/8" => named("iso-8859-8"),
            // 8859/9 (Latin-5, Turkish) is windows-1254 in the WHATWG registry.
            b"8859/9" => named("iso-8859-9"),
            b"8859/15" => named("iso-8859-15"),
            b"ISO IR87" | b"ISO IR159" => named("iso-2022-jp"),
            b"ISO IR14" => named("shift_jis"),
            b"GB 18030-2000" => named("gb18030"),
            b"KS X 1001" => named("euc-kr"),
            b"BIG-5" => named("big5"),
            b"CNS 11643-1992" => named("big5"),
            _ => Err(Error::UnknownCharset(
                String::from_utf8_lossy(v).into_owned(),
            )),
        }
    }

    /// Reads a label as a user would type it on a command line or in `?encoding=`:
    /// `utf-8`, `latin1`, `iso-8859-1`, `windows-1252`, `cp1252`, or an MSH-18 value.
    pub fn from_label(label: &str) -> Result<Charset, Error> {
        let l = label.trim().to_ascii_lowercase();
        match l.as_str() {
            "" | "auto" => Ok(Charset::Auto),
            "utf8" | "utf-8" | "unicode-1-1-utf-8" => Ok(Charset::Utf8),
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "l1" | "8859/1"
            | "binary" => Ok(Charset::Latin1),
            _ => match Encoding::for_label(l.as_bytes()) {
                // The WHATWG registry maps "iso-8859-1" style labels to windows-1252; we caught
                // the true Latin-1 labels above, so whatever remains is what it says.
                Some(enc) if enc == encoding_rs::UTF_8 => Ok(Charset::Utf8),
                Some(enc) => Ok(Charset::Other(enc)),
                None => Charset::from_msh18(label.as_bytes()),
            },
        }
    }

    /// Decodes bytes to text. Never fails: unmappable bytes become U+FFFD.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        match self {
            Charset::Auto => match std::str::from_utf8(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => {
                    encoding_rs::WINDOWS_1252
                        .decode_without_bom_handling(bytes)
                        .0
                }
            },
            Charset::Utf8 => String::from_utf8_lossy(bytes),
            Charset::Latin1 => encoding_rs::mem::decode_latin1(bytes),
            Charset::Other(enc) => enc.decode_without_bom_handling(bytes).0,
        }
    }

    /// Encodes text to bytes in this character set. Characters the set cannot represent become
    /// `?` (Latin-1) or an HTML numeric reference (other legacy sets), as the WHATWG standard does.
    pub fn encode<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        match self {
            Charset::Auto | Charset::Utf8 => Cow::Borrowed(text.as_bytes()),
            Charset::Latin1 => {
                if text.is_ascii() {
                    return Cow::Borrowed(text.as_bytes());
                }
                Cow::Owned(
                    text.chars()
                        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                        .collect(),
                )
            }
            Charset::Other(enc) => enc.encode(text).0,
        }
    }

    /// A short name for logs and URLs.
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Auto => "auto",
            Charset::Utf8 => "utf-8",
            Charset::Latin1 => "iso-8859-1",
            Charset::Other(enc) => enc.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_values() {
        assert_eq!(Charset::from_msh18(b"8859/1").unwrap(), Charset::Latin1);
        assert_eq!(
            Charset::from_msh18(b"UNICODE UTF-8").unwrap(),
            Charset::Utf8
        );
        assert_eq!(Charset::from_msh18(b"").unwrap(), Charset::Auto);
        assert_eq!(Charset::from_msh18(b"ASCII").unwrap(), Charset::Auto);
        assert!(matches!(
            Charset::from_msh18(b"8859/2").unwrap(),
            Charset::Other(_)
        ));
        assert!(Charset::from_msh18(b"KLINGON").is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(Charset::from_label("latin1").unwrap(), Charset::Latin1);
        assert_eq!(Charset::from_label("UTF-8").unwrap(), Charset::Utf8);
        assert_eq!(
            Charset::from_label("windows-1252").unwrap(),
            Charset::Other(encoding_rs::WINDOWS_1252)
        );
        assert!(Charset::from_label("nope-nope").is_err());
    }

    #[test]
    fn latin1_is_exact() {
        // 0x80..0x9F are C1 controls in ISO 8859-1, not the windows-1252 punctuation.
        let bytes: Vec<u8> = (0u8..=255).collect();
        let text = Charset::Latin1.decode(&bytes);
        assert_eq!(text.chars().count(), 256);
        assert_eq!(Charset::Latin1.encode(&text).as_ref(), bytes.as_slice());
    }

    #[test]
    fn auto_falls_back_to_windows_1252() {
        assert_eq!(Charset::Auto.decode(b"Jos\xe9"), "José");
        assert_eq!(Charset::Auto.decode("José".as_bytes()), "José");
        assert_eq!(Charset::Auto.decode(b"\x80"), "€");
    }
}
