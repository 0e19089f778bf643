//! Properties: no input makes the conversion panic; numbers, text and binary payloads come
//! through exactly; a resend has the same keys whatever its header says.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lab_results::{Format, Options, convert};
use proptest::prelude::*;
use support::*;

const HEAD: &str = "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240301101500+0100||ORU^R01|1|P|2.5.1\rOBR|1|P1|F1|X^Y^L|||20240301093000+0100||||||||||||||||||F\r";

fn one_obx(kind: &str, value: &str, unit: &str) -> Option<serde_json::Value> {
    let msg = format!(
        "{HEAD}{}\r",
        segment(
            "OBX",
            &[
                (1, "1"),
                (2, kind),
                (3, "G^Glu^LN"),
                (5, value),
                (6, unit),
                (11, "F")
            ]
        )
    );
    let c = convert(msg.as_bytes(), Format::Hl7, &Options::default()).ok()?;
    resources(&c.bundle, "Observation")
        .first()
        .map(|o| (*o).clone())
}

/// Anything a segment field may hold, delimiters and escapes included.
fn field() -> impl Strategy<Value = String> {
    prop::string::string_regex(r"[A-Za-z0-9 .+\-<>=:/^~&\\|]{0,12}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = convert(&bytes, Format::Hl7, &Options::default());
        let _ = convert(&bytes, Format::Astm, &Options::default());
        let _ = lab_results::Format::detect(&bytes);
    }

    #[test]
    fn arbitrary_segments_never_panic(
        segs in prop::collection::vec(
            (prop::sample::select(vec!["PID", "ORC", "OBR", "OBX", "SPM", "NTE", "PV1", "ZZZ"]),
             prop::collection::vec(field(), 0..36)),
            0..12),
        lenient in any::<bool>(),
    ) {
        let mut msg = HEAD.to_owned();
        for (name, fields) in &segs {
            msg.push_str(name);
            for f in fields {
                msg.push('|');
                msg.push_str(f);
            }
            msg.push('\r');
        }
        let opts = Options { lenient_values: lenient, ..Options::default() };
        match convert(msg.as_bytes(), Format::Hl7, &opts) {
            Ok(c) => {
                for e in c.bundle["entry"].as_array().unwrap() {
                    prop_assert_eq!(&e["request"]["method"], "POST");
                    prop_assert!(e["request"]["ifNoneExist"].is_string());
                }
                serde_json::to_vec(&c.bundle).unwrap();
            }
            Err(e) => prop_assert!(e.location().is_some() || matches!(e, lab_results::Error::Hl7(_)), "{}", e),
        }
    }

    #[test]
    fn arbitrary_astm_records_never_panic(
        recs in prop::collection::vec(
            (prop::sample::select(vec!["P", "O", "R", "C", "Q", "L"]), prop::collection::vec(field(), 0..28)),
            0..10),
    ) {
        let mut msg = String::from("H|\\^&|||INSTR\r");
        for (kind, fields) in &recs {
            msg.push_str(kind);
            for f in fields {
                // `\` repeats and `^` components stay; `|` would just shift fields.
                msg.push('|');
                msg.push_str(f);
            }
            msg.push('\r');
        }
        if let Ok(c) = convert(msg.as_bytes(), Format::Astm, &Options::default()) {
            serde_json::to_vec(&c.bundle).unwrap();
        }
    }

    #[test]
    fn numbers_come_through(int in 0u64..1_000_000, frac in "[0-9]{0,6}", negative in any::<bool>()) {
        let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
        let text = if negative { format!("-{text}") } else { text };
        let o = one_obx("NM", &text, "mmol/L").unwrap();
        let q = &o["valueQuantity"];
        let expected: f64 = text.parse().unwrap();
        prop_assert_eq!(q["value"].as_f64().unwrap(), expected);
        prop_assert_eq!(&q["code"], "mmol/L");
        // Trailing zeros survive as the precision extension.
        let shown = q["value"].to_string().split_once('.').map_or(0, |(_, f)| f.len());
        match q["_value"]["extension"][0]["valueInteger"].as_u64() {
            Some(p) => { prop_assert_eq!(p as usize, frac.len()); prop_assert!(shown < frac.len()); }
            None => prop_assert!(shown >= frac.len() || frac.is_empty()),
        }
    }

    #[test]
    fn text_comes_through(text in r"[A-Za-z0-9|^~&.,:;!?()\-]([A-Za-z0-9|^~& .,:;!?()\-]{0,38}[A-Za-z0-9|^~&.,:;!?()\-])?") {
        let escaped = hl7v2::escape(text.as_bytes(), &hl7v2::Delimiters::default());
        let o = one_obx("ST", std::str::from_utf8(&escaped).unwrap(), "").unwrap();
        prop_assert_eq!(o["valueString"].as_str().unwrap(), text.as_str());
    }

    #[test]
    fn binary_payloads_are_byte_exact(data in prop::collection::vec(any::<u8>(), 1..2000)) {
        let ed = format!("^AP^PDF^Base64^{}", STANDARD.encode(&data));
        let o = one_obx("ED", &ed, "").unwrap();
        let b64 = o["extension"][0]["valueAttachment"]["data"].as_str().unwrap();
        prop_assert_eq!(STANDARD.decode(b64).unwrap(), data);
    }

}

proptest! {
    // Each case converts a 16-result message twice.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn resends_have_the_same_keys(control in "[A-Z0-9]{1,20}", hour in 10u32..24) {
        let first = oru_full("AAEC");
        let resent = first
            .replace("MSG-0001", &control)
            .replace("20240301101500+0100||ORU", &format!("202403011{}00+0100||ORU", hour % 10));
        let a = convert(first.as_bytes(), Format::Hl7, &Options::default()).unwrap();
        let b = convert(resent.as_bytes(), Format::Hl7, &Options::default()).unwrap();
        prop_assert_eq!(&a.reports[0].key, &b.reports[0].key);
        let searches = |c: &lab_results::Conversion| -> Vec<serde_json::Value> {
            c.bundle["entry"].as_array().unwrap().iter().map(|e| e["request"]["ifNoneExist"].clone()).collect()
        };
        prop_assert_eq!(searches(&a), searches(&b));
    }
}
