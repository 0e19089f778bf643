//! Any bytes as a data set in both syntaxes, and as a Part 10 file: never a panic; what parses
//! writes back (odd values padded) and parses to what writes the same bytes again, transcodes
//! both ways, and converts to DICOM JSON and back.
#![no_main]

use dicom_net::{DataSet, from_json, to_json, transcode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dicom_net::part10::read_meta(data);
    for explicit in [true, false] {
        let Ok(ds) = DataSet::parse(data, explicit) else {
            continue;
        };
        let mut out = Vec::new();
        ds.write(explicit, &mut out);
        let again = DataSet::parse(&out, explicit).expect("our own writing parses");
        let mut twice = Vec::new();
        again.write(explicit, &mut twice);
        assert_eq!(twice, out);
        if let Ok(other) = transcode(data, explicit, !explicit) {
            assert!(DataSet::parse(&other, !explicit).is_ok());
        }
        let _ = from_json(&to_json(&ds));
    }
});
