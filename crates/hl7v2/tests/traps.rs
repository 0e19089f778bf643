//! The inputs other HL7 libraries get wrong (see the project's research notes on peer
//! libraries): each is a vector with the answer the standard gives.

use hl7v2::{Charset, Error, Message, ParseOptions, unescape};

fn msg(s: &[u8]) -> Message<'_> {
    Message::parse(s).unwrap()
}

#[test]
fn truncation_character_does_not_shift_msh() {
    // hl7-parser 0.3 returns "#" for MSH-3 here.
    let m = msg(b"MSH|^~\\&#|APP|FAC|RCV|RFAC|20240101||ADT^A01|C1|P|2.7\rPID|1\r");
    assert_eq!(m.get("MSH-2").unwrap().raw(), b"^~\\&#");
    assert_eq!(m.get("MSH-3").unwrap().raw(), b"APP");
    assert_eq!(m.get("MSH-9-2").unwrap().raw(), b"A01");
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    // and '#' is not a separator
    let m = msg(b"MSH|^~\\&#|A#B|FAC\r");
    assert_eq!(m.get("MSH-3").unwrap().raw(), b"A#B");
}

#[test]
fn msh_numbering() {
    // rust-hl7's MSH.F1 returns MSH-2; python-hl7's MSH.F9 returns one component.
    let m = msg(b"MSH|^~\\&|APP|FAC|RCV|RFAC|20240101||ADT^A01|CTRL1|P|2.5\r");
    assert_eq!(m.get("MSH-1").unwrap().raw(), b"|");
    assert_eq!(m.get("MSH-2").unwrap().raw(), b"^~\\&");
    assert_eq!(m.get("MSH-3").unwrap().raw(), b"APP");
    assert_eq!(m.get("MSH-9").unwrap().raw(), b"ADT^A01");
    assert_eq!(m.get("MSH-10").unwrap().raw(), b"CTRL1");
    assert_eq!(m.msh().field(12).raw(), b"2.5");
}

#[test]
fn custom_delimiters() {
    let m =
        msg(b"MSH*:!@%*APP*FAC*RCV*RFAC*20240101**ADT:A01*C1*P*2.5\rPID*1**123:::HOSP:MR!456*X\r");
    assert_eq!(m.get("MSH-3").unwrap().raw(), b"APP");
    assert_eq!(m.get("MSH-9-2").unwrap().raw(), b"A01");
    assert_eq!(m.get("PID-3[2]").unwrap().raw(), b"456");
    assert_eq!(m.get("PID-3-4").unwrap().raw(), b"HOSP");
    assert_eq!(m.get("PID-4").unwrap().raw(), b"X");
}

#[test]
fn lf_and_crlf_terminators_never_truncate() {
    let cr = b"MSH|^~\\&|A|B\rPID|1||X\rOBX|1|ST|C||V\r";
    for sep in ["\n", "\r\n"] {
        let text = String::from_utf8_lossy(cr).replace('\r', sep);
        let m = msg(text.as_bytes());
        assert_eq!(m.segment_count(), 3, "{sep:?}");
        assert_eq!(m.get("OBX-5").unwrap().raw(), b"V");
        assert!(m.segments().all(|s| !s.raw().contains(&b'\n')));
    }
}

#[test]
fn latin1_bytes_never_panic_and_decode_by_msh18() {
    let m = msg(
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||1||M\xdcLLER^J\xd6RG\r",
    );
    assert_eq!(m.charset(), Charset::Latin1);
    assert_eq!(m.get("PID-5-1").unwrap().text(), "MÜLLER");
    assert_eq!(m.get("PID-5-2").unwrap().text(), "JÖRG");
    // without MSH-18, invalid UTF-8 falls back to windows-1252
    let m = msg(b"MSH|^~\\&|A\rPID|1||1||Jos\xe9\r");
    assert_eq!(m.get("PID-5").unwrap().text(), "José");
    // a caller-named charset wins
    let opts = ParseOptions {
        charset: Some(Charset::Utf8),
        ..ParseOptions::default()
    };
    let m = Message::parse_with(b"MSH|^~\\&|A\rPID|1||1||Jos\xe9\r", &opts).unwrap();
    assert_eq!(m.get("PID-5").unwrap().text(), "Jos\u{fffd}");
}

#[test]
fn hex_escape_to_non_utf8() {
    // rust-hl7 panics on \Xe9\.
    let m = msg(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||8859/1\rPID|1||1||Jos\\Xe9\\\r");
    assert_eq!(m.get("PID-5").unwrap().unescaped().as_ref(), b"Jos\xe9");
    assert_eq!(m.get("PID-5").unwrap().text(), "José");
    let m = msg(
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||1||Jos\\XC3A9\\\r",
    );
    assert_eq!(m.get("PID-5").unwrap().text(), "José");
}

#[test]
fn escapes_after_non_ascii() {
    // hl7-parser used char indices as byte indices: output was wrong after any non-ASCII char.
    let m = msg("MSH|^~\\&|A\rNTE|1||Zoë \\T\\ Chloé \\F\\ done\r".as_bytes());
    assert_eq!(m.get("NTE-3").unwrap().text(), "Zoë & Chloé | done");
}

#[test]
fn unterminated_and_lone_escapes() {
    let d = hl7v2::Delimiters::default();
    assert_eq!(
        unescape(b"ab\\X0D0A\\cd \\Xe9\\ trailing\\", &d).as_ref(),
        b"ab\r\ncd \xe9 trailing\\"
    );
    let m = msg(b"MSH|^~\\&|A\rNTE|1||50\\ off\\\r");
    assert_eq!(m.get("NTE-3").unwrap().text(), "50\\ off\\");
}

#[test]
fn short_headers_are_errors_not_panics() {
    assert!(matches!(
        Message::parse(b"MSH"),
        Err(Error::MshTooShort { len: 3 })
    ));
    assert!(matches!(
        Message::parse(b"MSH|"),
        Err(Error::MshTooShort { len: 4 })
    ));
    assert!(matches!(
        Message::parse(b"MSH|^~"),
        Err(Error::MshTooShort { len: 6 })
    ));
    assert!(matches!(
        Message::parse(b"MSH|^~\\"),
        Err(Error::MshTooShort { len: 7 })
    ));
    // Four encoding characters and nothing else is the smallest valid message.
    assert_eq!(msg(b"MSH|^~\\&").segment_count(), 1);
    assert!(matches!(
        Message::parse(b"  \r\n"),
        Err(Error::NoMsh { offset: 4 })
    ));
}

#[test]
fn field_path_returns_whole_field() {
    let m = msg(b"MSH|^~\\&|A\rPID|1||111^^^H^MR~222^^^H^PI||DOE^JOHN\r");
    assert_eq!(m.get("PID-5").unwrap().raw(), b"DOE^JOHN");
    assert_eq!(m.get("PID-3").unwrap().raw(), b"111^^^H^MR~222^^^H^PI");
    assert_eq!(m.get("PID-3-1").unwrap().raw(), b"111");
    assert_eq!(m.get("PID-3[2]-5").unwrap().raw(), b"PI");
}

#[test]
fn error_messages_carry_offsets() {
    let e = Message::parse(b"MSH|^~\\&|A\rP1D|x\rbad line\r").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid segment name at byte 17: expected three upper-case letters or digits"
    );
    let e = Message::parse_with(
        &[b'M'; 100],
        &ParseOptions {
            max_size: 64,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "message too large: 100 > 64 bytes");
}
