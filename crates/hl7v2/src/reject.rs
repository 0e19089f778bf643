//! Answering input that is not a readable message: which HL7 table 0357 error it is
//! ([`AckError::for_parse_error`]) and the negative acknowledgement that still names the
//! message's control ID whenever its header can be read at all ([`build_reject`]).

use crate::message::skip_preamble;
use crate::{AckCode, AckError, AckOptions, Error, Message, MessageBuilder, build_ack};

impl AckError {
    /// The ERR content for input that did not parse: the table 0357 code that fits the fault,
    /// the parser's message as text, and the location when it is in the header.
    ///
    /// | fault | code |
    /// |---|---|
    /// | no MSH first, a segment ID that is not one, a line feed where strict parsing wants CR, a malformed batch | 100 segment sequence error |
    /// | header too short for MSH-1 and MSH-2 | 101 required field missing |
    /// | MSH-1 or MSH-2 not a usable set of delimiters | 102 data type error |
    /// | larger than the receiver accepts, anything else | 207 application internal error |
    pub fn for_parse_error(e: &Error) -> AckError {
        let msh = |field: usize| Some(("MSH".to_owned(), 1, field));
        let (code, location) = match e {
            Error::NoMsh { .. }
            | Error::InvalidSegmentName { .. }
            | Error::LineFeedTerminator { .. }
            | Error::InvalidBatch { .. } => (100, None),
            Error::MshTooShort { len } => (101, msh(if *len < 4 { 1 } else { 2 })),
            Error::InvalidEncodingCharacters { reason, .. } => {
                let msh1 = reason.starts_with("field separator (MSH-1)");
                (102, msh(if msh1 { 1 } else { 2 }))
            }
            _ => (207, None),
        };
        AckError {
            code,
            text: e.to_string(),
            location,
        }
    }
}

/// Builds the negative acknowledgement (usually [`AckCode::AR`]) of `input`, which is not a
/// message this crate can parse; `opts.error` says why (see [`AckError::for_parse_error`]).
///
/// The acknowledgement answers the message as far as its header can be read, so the sender can
/// match it: when the header segment parses on its own, as [`build_ack`] does; when it does not
/// (MSH-2 unusable, say) but the input starts with `MSH` and a field separator, its fields are
/// read split on that separator, and MSH-10 becomes MSA-2 (MSH-3 to MSH-6 swapped, MSH-11 and
/// MSH-12 copied), with the standard delimiters `|^~\&`. Otherwise MSA-2 is empty.
pub fn build_reject(input: &[u8], code: AckCode, opts: &AckOptions) -> Vec<u8> {
    let start = skip_preamble(input, false);
    let rest = &input[start..];
    let header = &rest[..memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len())];
    if let Ok(msg) = Message::parse(header) {
        return build_ack(&msg, code, opts);
    }
    let stand_in = stand_in_header(header);
    match Message::parse(&stand_in) {
        Ok(msg) => build_ack(&msg, code, opts),
        // The stand-in is built from escaped text with the standard delimiters: it parses.
        Err(_) => Vec::new(),
    }
}

/// A header with the standard delimiters carrying what can be read of `header` (a header
/// segment that does not parse), for [`build_ack`] to answer.
fn stand_in_header(header: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new();
    let field_sep = header.get(3).copied().filter(|c| c.is_ascii_punctuation());
    let (Some(sep), true) = (field_sep, header.starts_with(b"MSH")) else {
        b.msh()
            .raw_field(9, b"ACK")
            .raw_field(11, b"P")
            .raw_field(12, b"2.5");
        return b.build();
    };
    // Piece 0 is `MSH`, piece 1 MSH-2, piece n MSH-(n+1).
    let pieces: Vec<&[u8]> = header.split(|&c| c == sep).collect();
    let field = |n: usize| -> String {
        let raw = pieces.get(n - 1).copied().unwrap_or_default();
        String::from_utf8_lossy(raw).into_owned()
    };
    let msh = b.msh();
    for n in [3, 4, 5, 6, 10, 11] {
        msh.field(n, &field(n));
    }
    // MSH-9 and MSH-12 only steer the ACK's MSH-9 and ERR layout: their first component, read
    // with the component separator MSH-2 starts with.
    let component = pieces.get(1).and_then(|p| p.first()).copied();
    let first = |n: usize| -> String {
        let raw = pieces.get(n - 1).copied().unwrap_or_default();
        let head = match component {
            Some(c) => raw.split(|&b| b == c).next().unwrap_or_default(),
            None => raw,
        };
        String::from_utf8_lossy(head).into_owned()
    };
    msh.field(12, &first(12));
    let trigger = pieces
        .get(8)
        .zip(component)
        .and_then(|(p, c)| p.split(|&b| b == c).nth(1))
        .map(|t| String::from_utf8_lossy(t).into_owned());
    match trigger {
        Some(t) => msh.components(9, &[&first(9), &t]),
        None => msh.field(9, &first(9)),
    };
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    fn opts(e: &Error) -> AckOptions {
        let mut o = AckOptions::new("R1", Timestamp::parse(b"20240101120000").unwrap());
        let err = AckError::for_parse_error(e);
        o.text = Some(err.text.clone());
        o.error = Some(err);
        o
    }

    fn reject(input: &[u8]) -> (Vec<u8>, Error) {
        let e = Message::parse(input).unwrap_err();
        (build_reject(input, AckCode::AR, &opts(&e)), e)
    }

    #[test]
    fn codes_fit_the_fault() {
        let code = |input: &[u8]| AckError::for_parse_error(&Message::parse(input).unwrap_err());
        assert_eq!(code(b"this is not hl7").code, 100);
        assert_eq!(code(b"MSH|^~\\&|A\rpid|1\r").code, 100);
        let short = code(b"MSH|");
        assert_eq!(
            (short.code, short.location),
            (101, Some(("MSH".into(), 1, 2)))
        );
        let enc = code(b"MSH|^~|A|B\r");
        assert_eq!((enc.code, enc.location), (102, Some(("MSH".into(), 1, 2))));
        assert_eq!(code(b"MSHA^~\\&A").location, Some(("MSH".into(), 1, 1)));
        let big = AckError::for_parse_error(&Error::TooLarge { size: 9, max: 8 });
        assert_eq!(
            (big.code, big.text.as_str()),
            (207, "message too large: 9 > 8 bytes")
        );
    }

    #[test]
    fn unreadable_msh2_still_answers_the_control_id() {
        let (ack, _) =
            reject(b"MSH|^~|LAB|NORTH|EHR|CLINIC|20240105||ORU^R01|CTRL9|P|2.5\rPID|1\r");
        let a = Message::parse(&ack).unwrap();
        assert_eq!(a.get("MSA-1").unwrap().raw(), b"AR");
        assert_eq!(a.get("MSA-2").unwrap().raw(), b"CTRL9");
        assert_eq!(a.get("MSH-3").unwrap().raw(), b"EHR");
        assert_eq!(a.get("MSH-5").unwrap().raw(), b"LAB");
        assert_eq!(a.get("MSH-9").unwrap().raw(), b"ACK^R01^ACK");
        assert_eq!(a.get("MSH-12").unwrap().raw(), b"2.5");
        assert_eq!(a.get("ERR-3-1").unwrap().raw(), b"102");
        assert_eq!(a.get("ERR-2").unwrap().raw(), b"MSH^1^2");
        assert!(
            a.get("ERR-8")
                .unwrap()
                .text()
                .contains("MSH-2 must have 3 to 5"),
            "{a:?}"
        );
        assert!(
            a.get("MSA-3")
                .unwrap()
                .text()
                .starts_with("invalid encoding characters")
        );
    }

    #[test]
    fn header_with_odd_separator_and_delimiters_in_values() {
        // Field separator `*`, MSH-2 unusable; values carry the standard delimiters as data.
        let (ack, _) = reject(b"MSH*^^*A|B*C*D*E*1**ADT^A01*ID^7|x*P*2.3\r");
        let a = Message::parse(&ack).unwrap();
        assert_eq!(a.get("MSA-2").unwrap().text(), "ID^7|x");
        assert_eq!(a.get("MSH-5").unwrap().text(), "A|B");
        // v2.3 layout: the code in ERR-1-4
        assert_eq!(a.get("ERR-1-4-1").unwrap().raw(), b"102");
    }

    #[test]
    fn no_header_at_all_is_a_bare_reject() {
        let (ack, _) = reject(b"this is not hl7");
        let a = Message::parse(&ack).unwrap();
        assert_eq!(a.get("MSA-1").unwrap().raw(), b"AR");
        assert!(a.get("MSA-2").unwrap().is_empty());
        assert_eq!(a.get("ERR-3-1").unwrap().raw(), b"100");
        assert_eq!(
            a.get("ERR-8").unwrap().text(),
            "no MSH segment at byte 0: message must start with \"MSH\""
        );
    }

    #[test]
    fn parsable_header_is_answered_as_build_ack_does() {
        let (ack, e) = reject(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X9|P|2.5\rpid|bad\r");
        assert!(matches!(e, Error::InvalidSegmentName { offset: 37 }));
        let a = Message::parse(&ack).unwrap();
        assert_eq!(a.get("MSA-2").unwrap().raw(), b"X9");
        assert_eq!(a.get("ERR-3-1").unwrap().raw(), b"100");
        assert_eq!(a.get("MSH-9").unwrap().raw(), b"ACK^A01^ACK");
    }
}
