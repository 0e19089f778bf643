//! Any bytes as an HL7 result message and as an ASTM one: the conversion never panics, and
//! what converts is a transaction Bundle of conditional creates that serialises, the same on
//! every run.
#![no_main]

use lab_results::{Format, Options, convert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lenient = Options {
        lenient_values: true,
        local_offset: chrono::FixedOffset::east_opt(3600),
        ..Options::default()
    };
    for format in [Format::Hl7, Format::Astm] {
        for opts in [&Options::default(), &lenient] {
            let Ok(c) = convert(data, format, opts) else { continue };
            assert_eq!(c.bundle["type"], "transaction");
            for e in c.bundle["entry"].as_array().expect("entries") {
                assert_eq!(e["request"]["method"], "POST");
                assert!(e["request"]["ifNoneExist"].is_string());
            }
            serde_json::to_vec(&c.bundle).expect("the Bundle serialises");
            assert_eq!(convert(data, format, opts).ok().as_ref(), Some(&c));
        }
    }
});
