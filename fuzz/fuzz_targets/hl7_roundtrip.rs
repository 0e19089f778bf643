//! A message that parses serializes to bytes that parse to the same structure, and serializing
//! again is stable.
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
});
