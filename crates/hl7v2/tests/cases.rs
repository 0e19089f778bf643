//! The field cases in `corpus/hl7v2/cases/` (rebuilt from public bug reports against other HL7
//! software), each with the answer HL7 v2 Chapter 2 gives, and the other members of each kind.

use std::path::PathBuf;

use hl7v2::{
    AckCode, AckError, AckOptions, Delimiters, Error, Message, ParseOptions, Timestamp, build_ack,
};

fn case(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../corpus/hl7v2/cases")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(m: &Message<'_>) -> Vec<String> {
    m.segments().map(|s| s.name().to_owned()).collect()
}

fn ack_opts() -> AckOptions {
    AckOptions::new("ACK1", Timestamp::parse(b"20240105093001").unwrap())
}

/// The chest X-ray report of `report-with-lf.hl7`, line feeds and all.
const REPORT: &str = "EXAM: XR CHEST 2 VIEWS\nFINDINGS:\nHeart size normal.\nCXR\nCompared with prior study.\nIMPRESSION:\nNo acute disease.";

// Case 05 (nextgenhealthcare/connect #649): line feeds inside the report text of a message whose
// segments end with CR. The terminator is CR (Chapter 2, Figure 2-1), so a LF is data.

#[test]
fn lf_inside_a_value_of_a_cr_message_is_data() {
    let input = case("report-with-lf.hl7");
    assert!(
        !input.windows(2).any(|w| w == b"\r\n"),
        "the case has CR terminators only"
    );
    for strict in [false, true] {
        let opts = ParseOptions {
            strict,
            ..ParseOptions::default()
        };
        let m = Message::parse_with(&input, &opts).unwrap();
        assert_eq!(names(&m), ["MSH", "PID", "OBR", "OBX"], "strict: {strict}");
        assert_eq!(m.get("OBX-5").unwrap().text(), REPORT);
        assert_eq!(m.get("OBX-11").unwrap().raw(), b"F");
        assert!(m.segment("CXR").is_none());
        // Sent as it is: nothing to normalise.
        assert_eq!(m.to_wire().as_ref(), input.as_slice());
        assert!(matches!(m.to_wire(), std::borrow::Cow::Borrowed(_)));
        assert_eq!(m.to_bytes(), input);
    }
}

#[test]
fn lf_inside_a_value_of_a_crlf_message_is_data() {
    let cr = case("report-with-lf.hl7");
    // Same message with CRLF terminators; the LFs inside OBX-5 stay bare.
    let crlf: Vec<u8> = cr
        .iter()
        .flat_map(|&b| {
            if b == b'\r' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    let m = Message::parse(&crlf).unwrap();
    assert_eq!(names(&m), ["MSH", "PID", "OBR", "OBX"]);
    assert_eq!(m.get("OBX-5").unwrap().text(), REPORT);
    assert_eq!(m.get("OBX-11").unwrap().raw(), b"F");
    // On the wire: CRLF becomes CR, the report keeps its LFs, byte for byte the CR form.
    assert_eq!(m.to_wire().as_ref(), cr.as_slice());
    // Strict mode accepts CR only as terminator.
    let strict = ParseOptions {
        strict: true,
        ..ParseOptions::default()
    };
    assert!(matches!(
        Message::parse_with(&crlf, &strict),
        Err(Error::LineFeedTerminator { .. })
    ));
}

#[test]
fn lf_after_cr_terminated_header_is_data_whatever_follows() {
    // Every kind of line after a LF: a segment-like ID with a field separator, one alone, one
    // that is the name of a real segment, a blank line.
    for tail in ["CXR|x", "OBX", "PID|1||2", "", "ZZZ\n\nAAA"] {
        let input =
            format!("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C1|P|2.5\rNTE|1||before\n{tail}\rPID|1\r");
        let m = Message::parse(input.as_bytes()).unwrap();
        assert_eq!(names(&m), ["MSH", "NTE", "PID"], "{tail:?}");
        let nte = m.segment("NTE").unwrap().raw();
        assert_eq!(nte, format!("NTE|1||before\n{tail}").as_bytes());
        assert_eq!(m.to_wire().as_ref(), input.as_bytes());
    }
}

#[test]
fn lf_only_messages_keep_working() {
    // No CR at all: LF ends segments; a line that is not a segment continues the value.
    let input = b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C1|P|2.5\nOBX|1|TX|R||line one\nline two||||||F\nNTE|1\n";
    let m = Message::parse(input).unwrap();
    assert_eq!(names(&m), ["MSH", "OBX", "NTE"]);
    assert_eq!(m.get("OBX-5").unwrap().text(), "line one\nline two");
    assert_eq!(m.get("OBX-11").unwrap().raw(), b"F");
    // On the wire the terminators become CR and the LF inside OBX-5 stays.
    let wire = m.to_wire();
    assert_eq!(
        wire.as_ref(),
        b"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C1|P|2.5\rOBX|1|TX|R||line one\nline two||||||F\rNTE|1\r"
    );
    let again = Message::parse(&wire).unwrap();
    assert_eq!(names(&again), ["MSH", "OBX", "NTE"]);
    assert_eq!(again.get("OBX-5").unwrap().text(), "line one\nline two");
}

#[test]
fn wire_form_changes_terminators_only() {
    // No final CR: one is added; blank lines and a byte-order mark go. Nothing else changes.
    let cases: [(&[u8], &[u8]); 4] = [
        (b"MSH|^~\\&|A\rPID|1", b"MSH|^~\\&|A\rPID|1\r"),
        (
            b"\xEF\xBB\xBFMSH|^~\\&|A\r\rPID|1\r",
            b"MSH|^~\\&|A\rPID|1\r",
        ),
        (b"MSH|^~\\&|A\r\nPID|a\nb\r\n", b"MSH|^~\\&|A\rPID|a\nb\r"),
        (b"MSH|^~\\&|A\nPID|1\n", b"MSH|^~\\&|A\rPID|1\r"),
    ];
    for (input, wire) in cases {
        let m = Message::parse(input).unwrap();
        assert_eq!(
            m.to_wire().as_ref(),
            wire,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

// Case 01 (Efferent-Health/HL7-dotnetcore #112, nextgenhealthcare/connect #1542): MSH-2 with three
// encoding characters. Chapter 2: the subcomponent separator may be left out.

#[test]
fn msh2_without_subcomponent_separator() {
    let input = case("no-subcomponent.hl7");
    let m = Message::parse(&input).unwrap();
    assert_eq!(names(&m), ["MSH", "PID", "OBX"]);
    assert_eq!(m.get("MSH-2").unwrap().raw(), b"^~\\");
    assert_eq!(m.get("MSH-3").unwrap().raw(), b"LABSYS");
    assert_eq!(m.control_id().raw(), b"CTRL0001");
    assert_eq!(m.get("PID-5-1").unwrap().text(), "TESTPATIENT");
    assert_eq!(m.get("PID-3-4").unwrap().text(), "NORTHLAB");
    assert_eq!(m.get("OBX-11").unwrap().raw(), b"F");
    assert_eq!(
        m.delimiters(),
        Delimiters {
            subcomponent: None,
            ..Delimiters::default()
        }
    );
    // Round trip keeps MSH-2 as received.
    assert_eq!(m.to_bytes(), input);
    assert_eq!(m.to_wire().as_ref(), input.as_slice());
    // The ACK echoes it.
    let ack = build_ack(&m, AckCode::AA, &ack_opts());
    assert!(
        ack.starts_with(b"MSH|^~\\|EHR|CLINIC|LABSYS|NORTHLAB|"),
        "{ack:?}"
    );
    let a = Message::parse(&ack).unwrap();
    assert_eq!(a.get("MSH-2").unwrap().raw(), b"^~\\");
    assert_eq!(a.get("MSA-1").unwrap().raw(), b"AA");
    assert_eq!(a.get("MSA-2").unwrap().raw(), b"CTRL0001");
}

#[test]
fn msh2_without_escape_character_as_real_systems_send_it() {
    // `^~&`: read in the standard's order, `&` is the escape character and there is no
    // subcomponent separator.
    let input = case("no-escape-char.hl7");
    let m = Message::parse(&input).unwrap();
    assert_eq!(names(&m), ["MSH", "PID", "OBX"]);
    assert_eq!(m.get("MSH-2").unwrap().raw(), b"^~&");
    assert_eq!(m.control_id().raw(), b"CTRL0002");
    assert_eq!(m.get("PID-5-1").unwrap().text(), "TESTPATIENT");
    assert_eq!(m.to_bytes(), input);
    let d = m.delimiters();
    assert_eq!((d.escape, d.subcomponent), (b'&', None));
    let ack = build_ack(&m, AckCode::AA, &ack_opts());
    assert!(ack.starts_with(b"MSH|^~&|EHR|CLINIC|"), "{ack:?}");
    assert_eq!(
        Message::parse(&ack).unwrap().get("MSA-2").unwrap().raw(),
        b"CTRL0002"
    );
}

#[test]
fn absent_delimiters_are_data() {
    let m = Message::parse(b"MSH|^~\\|A\rPID|1||123^^^R&D&ISO||O\\T\\NEIL^ANN\r").unwrap();
    // `&` separates nothing: PID-3-4 is the whole `R&D&ISO`, and it has no subcomponent 2.
    assert_eq!(m.get("PID-3-4").unwrap().text(), "R&D&ISO");
    assert_eq!(m.get("PID-3-4-1").unwrap().text(), "R&D&ISO");
    assert!(m.get("PID-3-4-2").unwrap().is_empty());
    assert_eq!(
        m.get("PID-3").unwrap().component(4).subcomponents().count(),
        1
    );
    // `\T\` stands for a delimiter the message does not have: it is kept as it is.
    assert_eq!(m.get("PID-5-1").unwrap().text(), "O\\T\\NEIL");
    // `\` is data when `&` is the escape character.
    let m = Message::parse(b"MSH|^~&|A\rNTE|1||C:\\path &F& x\r").unwrap();
    assert_eq!(m.get("NTE-3").unwrap().text(), "C:\\path | x");
}

#[test]
fn reject_of_a_three_character_header_echoes_it() {
    let input = case("no-subcomponent.hl7");
    let m = Message::parse(&input).unwrap();
    let mut o = ack_opts();
    o.error = Some(AckError {
        code: 101,
        text: "PID-3 is required".into(),
        location: Some(("PID".into(), 1, 3)),
    });
    // v2.3: the code goes in ERR-1-4; its text and table would be subcomponents, which this
    // message has no separator for.
    let ack = build_ack(&m, AckCode::AR, &o);
    let a = Message::parse(&ack).unwrap();
    assert_eq!(a.get("MSH-2").unwrap().raw(), b"^~\\");
    assert_eq!(a.get("ERR-1-1").unwrap().raw(), b"PID");
    assert_eq!(a.get("ERR-1-4").unwrap().raw(), b"101");
    assert_eq!(a.get("MSA-3").unwrap().text(), "Application Reject");
}

#[test]
fn truncation_character_still_works() {
    let m =
        Message::parse(b"MSH|^~\\&#|A|B|C|D|20240101||ADT^A01|T5|P|2.7\rPID|1||1||A#B\r").unwrap();
    assert_eq!(m.delimiters().truncation, Some(b'#'));
    assert_eq!(m.get("MSH-2").unwrap().raw(), b"^~\\&#");
    assert_eq!(m.get("PID-5").unwrap().raw(), b"A#B");
    let ack = build_ack(&m, AckCode::AA, &ack_opts());
    assert!(ack.starts_with(b"MSH|^~\\&#|C|D|A|B|"), "{ack:?}");
}

#[test]
fn one_or_two_encoding_characters_or_duplicates_are_refused() {
    for header in ["MSH|^|A|B", "MSH|^~|A|B", "MSH||A|B"] {
        let e = Message::parse(format!("{header}\rPID|1\r").as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid encoding characters at byte 4: MSH-2 must have 3 to 5 encoding characters: \
             component separator, repetition separator, escape character, then optionally \
             subcomponent separator and truncation character",
            "{header}"
        );
    }
    let e = Message::parse(b"MSH|^~^|A\r").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid encoding characters at byte 6: encoding characters must all differ from each \
         other and from MSH-1"
    );
    assert!(matches!(
        Message::parse(b"MSH|^~|\r"),
        Err(Error::InvalidEncodingCharacters { offset: 4, .. })
    ));
}
