//! A message that parses serializes to bytes that parse to the same structure, and serializing
//! again is stable. The wire form (`to_wire`, what MLLP sends) parses to the same segments, is
//! the input itself when the input already was CR-terminated, and never changes a segment's bytes
//! (line feeds inside values included).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn shape(m: &hl7v2::Message<'_>) -> Vec<Vec<Vec<u8>>> {
    m.segments()
        .map(|s| s.fields().map(|f| f.raw().to_vec()).collect())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = hl7v2::Message::parse(data) else {
        return;
    };
    let bytes = msg.to_bytes();
    let again = hl7v2::Message::parse(&bytes).expect("serialized message must parse");
    assert_eq!(shape(&msg), shape(&again));
    assert_eq!(again.to_bytes(), bytes);

    let wire = msg.to_wire();
    assert_eq!(wire.as_ref(), bytes.as_slice());
    if let std::borrow::Cow::Borrowed(b) = &wire {
        assert_eq!(*b, data, "a borrowed wire form is the input");
    }
    let received = hl7v2::Message::parse(&wire).expect("the wire form must parse");
    let raws = |m: &hl7v2::Message<'_>| m.segments().map(|s| s.raw().to_vec()).collect::<Vec<_>>();
    assert_eq!(raws(&received), raws(&msg));
    assert!(matches!(received.to_wire(), std::borrow::Cow::Borrowed(_)));
});
