//! Any bytes that do not parse: the reject a receiver sends (`build_reject`, reading what it can
//! of a broken header) never panics, always parses, is an AR with ERR, and names the control ID
//! when the header parses on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Err(e) = hl7v2::Message::parse(data) else {
        return;
    };
    let error = hl7v2::AckError::for_parse_error(&e);
    let code = error.code;
    let ts = hl7v2::Timestamp::parse(b"20240101120000").expect("constant timestamp");
    let mut opts = hl7v2::AckOptions::new("R1", ts);
    opts.text = Some(error.text.clone());
    opts.error = Some(error);
    let ack = hl7v2::build_reject(data, hl7v2::AckCode::AR, &opts);
    let msg = hl7v2::Message::parse(&ack).expect("a reject must parse");
    let read = hl7v2::Acknowledgment::read(&msg).expect("a reject has an MSA");
    assert_eq!(read.code(), hl7v2::AckCode::AR);
    assert!(msg.segment("ERR").is_some());
    assert!(matches!(code, 100 | 101 | 102 | 207));
});
