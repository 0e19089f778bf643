//! HL7 escape sequences (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\P\`, `\Xhh..\`, `\.br\`, ...).
//!
//! Three layers:
//!
//! - [`EscapeTokens`] splits a raw value into tokens. Writing the tokens back with
//!   [`EscapeToken::write`] gives the input byte for byte, whatever it was.
//! - [`unescape`] turns a raw value into the bytes it stands for: delimiter escapes become the
//!   delimiter, `\Xhh..\` becomes its bytes (which may not be UTF-8), `\.br\` becomes `\n`.
//!   Sequences this crate does not interpret (`\H\ \N\ \Zxx\ \Cxxyy\ \Mxxyyzz\`, other
//!   formatting commands, unknown ones) are kept as they are, and so is an escape character that
//!   starts no complete sequence (a lone or unterminated `\`).
//! - [`escape`] is the inverse: `unescape(escape(x)) == x` for every byte string `x`. It writes
//!   delimiters as `\F\` etc., `\n` as `\.br\`, `\r` as `\X0D\`, and leaves a kept sequence such
//!   as `\H\` in `x` as it is. So `escape(unescape(raw)) == raw` for values written with kept
//!   sequences and the canonical escapes (`\F\ \S\ \T\ \R\ \E\ \P\ \.br\ \X0D\`), with one
//!   exception no codec can avoid: a literal escape character written `\E\` and followed by
//!   text that reads as a sequence (`\E\H\E\`, the text `\H\`) comes back as that sequence.
//!   Non-ASCII bytes written as `\Xhh\` come back as the bytes themselves; the token layer keeps
//!   even those exactly.

use std::borrow::Cow;

use crate::Delimiters;

/// One token of a raw (escaped) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeToken<'a> {
    /// Literal bytes. A lone escape character that starts no complete sequence is literal too.
    Text(&'a [u8]),
    /// `\F\`, `\S\`, `\R\`, `\E\`, and when MSH-2 declares the delimiter `\T\` or `\P\`: the
    /// delimiter byte it stands for. (Without a subcomponent separator `\T\` is kept as it is,
    /// and so is `\P\` without a truncation character.)
    Delimiter(DelimiterEscape),
    /// `\Xhh..\`: the hex digits (an even number, at least two).
    Hex(&'a [u8]),
    /// `\.br\`: a line break.
    LineBreak,
    /// A sequence kept verbatim (`\H\`, `\N\`, `\Zxx\`, `\Cxxyy\`, `\Mxxyyzz\`, `\.sp\`, ...),
    /// including both escape characters.
    Kept(&'a [u8]),
}

/// Which delimiter a `\F\`-style escape stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelimiterEscape {
    /// `\F\`
    Field,
    /// `\S\`
    Component,
    /// `\T\`
    Subcomponent,
    /// `\R\`
    Repetition,
    /// `\E\`
    Escape,
    /// `\P\` (v2.7 truncation character)
    Truncation,
}

impl DelimiterEscape {
    fn letter(self) -> u8 {
        match self {
            DelimiterEscape::Field => b'F',
            DelimiterEscape::Component => b'S',
            DelimiterEscape::Subcomponent => b'T',
            DelimiterEscape::Repetition => b'R',
            DelimiterEscape::Escape => b'E',
            DelimiterEscape::Truncation => b'P',
        }
    }

    fn byte(self, d: &Delimiters) -> u8 {
        match self {
            DelimiterEscape::Field => d.field,
            DelimiterEscape::Component => d.component,
            // Only produced when the subcomponent separator is declared.
            DelimiterEscape::Subcomponent => d.subcomponent.unwrap_or(b'&'),
            DelimiterEscape::Repetition => d.repetition,
            DelimiterEscape::Escape => d.escape,
            // Only produced when the truncation character is declared.
            DelimiterEscape::Truncation => d.truncation.unwrap_or(b'#'),
        }
    }
}

impl EscapeToken<'_> {
    /// Appends the token's raw form to `out`.
    pub fn write(&self, d: &Delimiters, out: &mut Vec<u8>) {
        match *self {
            EscapeToken::Text(b) | EscapeToken::Kept(b) => out.extend_from_slice(b),
            EscapeToken::Delimiter(k) => out.extend_from_slice(&[d.escape, k.letter(), d.escape]),
            EscapeToken::Hex(h) => {
                out.extend_from_slice(&[d.escape, b'X']);
                out.extend_from_slice(h);
                out.push(d.escape);
            }
            EscapeToken::LineBreak => {
                out.extend_from_slice(&[d.escape, b'.', b'b', b'r', d.escape]);
            }
        }
    }
}

/// Iterator over the [`EscapeToken`]s of a raw value.
#[derive(Debug, Clone)]
pub struct EscapeTokens<'a> {
    rest: &'a [u8],
    d: Delimiters,
}

impl<'a> EscapeTokens<'a> {
    /// Tokenizes `raw` with the delimiters `d`.
    pub fn new(raw: &'a [u8], d: Delimiters) -> Self {
        EscapeTokens { rest: raw, d }
    }
}

impl<'a> Iterator for EscapeTokens<'a> {
    type Item = EscapeToken<'a>;

    fn next(&mut self) -> Option<EscapeToken<'a>> {
        let rest = self.rest;
        let first = *rest.first()?;
        let (token, used) = if first != self.d.escape {
            let n = memchr::memchr(self.d.escape, rest).unwrap_or(rest.len());
            (EscapeToken::Text(&rest[..n]), n)
        } else {
            sequence(rest, &self.d).unwrap_or((EscapeToken::Text(&rest[..1]), 1))
        };
        self.rest = &rest[used..];
        Some(token)
    }
}

/// Reads the escape sequence at the start of `s` (which starts with the escape character).
/// `None` when the escape character starts no complete sequence.
fn sequence<'a>(s: &'a [u8], d: &Delimiters) -> Option<(EscapeToken<'a>, usize)> {
    let close = memchr::memchr(d.escape, &s[1..])? + 1;
    let content = &s[1..close];
    // Real sequences are letters, digits and `.+-` (`\H\`, `\Zxx\`, `\.in+4\`); anything
    // else between two escape characters is text with lone escape characters in it.
    if content.is_empty()
        || !content
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
    {
        return None;
    }
    let token = match content {
        b"F" => EscapeToken::Delimiter(DelimiterEscape::Field),
        b"S" => EscapeToken::Delimiter(DelimiterEscape::Component),
        b"T" if d.subcomponent.is_some() => EscapeToken::Delimiter(DelimiterEscape::Subcomponent),
        b"R" => EscapeToken::Delimiter(DelimiterEscape::Repetition),
        b"E" => EscapeToken::Delimiter(DelimiterEscape::Escape),
        b"P" if d.truncation.is_some() => EscapeToken::Delimiter(DelimiterEscape::Truncation),
        b".br" => EscapeToken::LineBreak,
        [b'X', hex @ ..]
            if !hex.is_empty() && hex.len() % 2 == 0 && hex.iter().all(u8::is_ascii_hexdigit) =>
        {
            EscapeToken::Hex(hex)
        }
        _ => EscapeToken::Kept(&s[..=close]),
    };
    Some((token, close + 1))
}

/// The bytes a raw value stands for (see the [module docs](self)). Borrows when the value has no
/// escape character.
pub fn unescape<'a>(raw: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    if memchr::memchr(d.escape, raw).is_none() {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    for token in EscapeTokens::new(raw, *d) {
        match token {
            EscapeToken::Text(b) | EscapeToken::Kept(b) => out.extend_from_slice(b),
            EscapeToken::Delimiter(k) => out.push(k.byte(d)),
            EscapeToken::Hex(h) => out.extend(h.chunks_exact(2).map(|p| hex_pair(p[0], p[1]))),
            EscapeToken::LineBreak => out.push(b'\n'),
        }
    }
    Cow::Owned(out)
}

/// Escapes bytes for use as one value (see the [module docs](self)). Borrows when nothing needs
/// escaping.
pub fn escape<'a>(value: &'a [u8], d: &Delimiters) -> Cow<'a, [u8]> {
    if !value
        .iter()
        .any(|&b| d.is_delimiter(b) || b == b'\r' || b == b'\n')
    {
        return Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len() + 16);
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        let letter = if b == d.escape {
            if let Some((EscapeToken::Kept(kept), n)) = sequence(&value[i..], d) {
                out.extend_from_slice(kept);
                i += n;
                continue;
            }
            b'E'
        } else if b == d.field {
            b'F'
        } else if b == d.component {
            b'S'
        } else if Some(b) == d.subcomponent {
            b'T'
        } else if b == d.repetition {
            b'R'
        } else if Some(b) == d.truncation {
            b'P'
        } else if b == b'\n' {
            out.extend_from_slice(&[d.escape, b'.', b'b', b'r', d.escape]);
            i += 1;
            continue;
        } else if b == b'\r' {
            out.extend_from_slice(&[d.escape, b'X', b'0', b'D', d.escape]);
            i += 1;
            continue;
        } else {
            out.push(b);
            i += 1;
            continue;
        };
        out.extend_from_slice(&[d.escape, letter, d.escape]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex_pair(hi: u8, lo: u8) -> u8 {
    fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            // Only called on validated hex digits.
            _ => 0,
        }
    }
    (nibble(hi) << 4) | nibble(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delimiters {
        Delimiters::default()
    }

    fn un(s: &[u8]) -> Vec<u8> {
        unescape(s, &d()).into_owned()
    }

    fn roundtrip_tokens(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in EscapeTokens::new(s, d()) {
            t.write(&d(), &mut out);
        }
        out
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(un(br"a\F\b\S\c\T\d\R\e\E\f"), b"a|b^c&d~e\\f");
    }

    #[test]
    fn hex_may_be_non_utf8() {
        assert_eq!(un(br"caf\Xe9\"), b"caf\xe9");
        assert_eq!(un(br"ab\X0D0A\cd"), b"ab\r\ncd");
        assert_eq!(un(br"\X41\"), b"A");
    }

    #[test]
    fn line_break() {
        assert_eq!(un(br"line1\.br\line2"), b"line1\nline2");
    }

    #[test]
    fn kept_sequences() {
        for s in [
            &br"\H\bold\N\"[..],
            br"\Zfoo\",
            br"\C2842\",
            br"\M2442\",
            br"\.sp2\",
            br"\Q\",
            br"\X4\",
            br"\P\",
        ] {
            assert_eq!(un(s), s, "{}", String::from_utf8_lossy(s));
            assert_eq!(escape(s, &d()).as_ref(), s);
        }
    }

    #[test]
    fn lone_and_unterminated() {
        assert_eq!(un(br"trailing\"), br"trailing\");
        assert_eq!(un(br"\Xe9 trailing"), br"\Xe9 trailing");
        assert_eq!(un(br"a\\b"), br"a\\b");
        assert_eq!(un(br"4\5"), br"4\5");
        // \E\ at the very end of a field
        assert_eq!(un(br"x\E\"), br"x\");
    }

    #[test]
    fn truncation_escape_only_when_declared() {
        let mut with = d();
        with.truncation = Some(b'#');
        assert_eq!(unescape(br"a\P\b", &with).as_ref(), b"a#b");
        assert_eq!(escape(b"a#b", &with).as_ref(), br"a\P\b");
        assert_eq!(un(br"a\P\b"), br"a\P\b");
        assert_eq!(escape(b"a#b", &d()).as_ref(), b"a#b");
    }

    #[test]
    fn escape_canonical() {
        assert_eq!(
            escape(b"a|b^c&d~e\\f", &d()).as_ref(),
            br"a\F\b\S\c\T\d\R\e\E\f"
        );
        assert_eq!(escape(b"l1\nl2\r", &d()).as_ref(), br"l1\.br\l2\X0D\");
        assert!(matches!(escape(b"plain", &d()), Cow::Borrowed(_)));
    }

    #[test]
    fn conformance_vectors_round_trip() {
        let vectors: &[&[u8]] = &[
            "é".as_bytes(),
            br"\F\ \S\ \T\ \R\ \E\ \X41\ \.br\ \H\bold\N\ \Zfoo\ \C2842\ \M2442\",
            br"ab\X0D0A\cd \Xe9\ trailing\",
            br"\\\\",
            br"\",
            br"\E\X09\E\",
        ];
        for v in vectors {
            assert_eq!(roundtrip_tokens(v), *v);
            let decoded = un(v);
            assert_eq!(
                unescape(&escape(&decoded, &d()), &d()).as_ref(),
                decoded.as_slice()
            );
        }
    }

    #[test]
    fn double_escaped_epic_style() {
        // \E\X09\E\ is the text "\X09\" escaped once: decoding once yields the inner sequence.
        assert_eq!(un(br"\E\X09\E\"), br"\X09\");
    }
}
