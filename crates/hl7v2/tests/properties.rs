//! Property tests: build/parse and escape/unescape are inverses; no input panics.

use hl7v2::{
    Delimiters, EscapeTokens, Message, MessageBuilder, Precision, Timestamp, escape, unescape,
};
use proptest::prelude::*;

/// Any delimiter set: MSH-2 of four characters, five (truncation) or three (no subcomponents).
fn delimiters() -> impl Strategy<Value = Delimiters> {
    let pool: Vec<u8> = b"|^~\\&#*:!@%$".to_vec();
    (Just(pool).prop_shuffle(), 0..3u8).prop_map(|(p, n)| Delimiters {
        field: p[0],
        component: p[1],
        repetition: p[2],
        escape: p[3],
        subcomponent: (n != 2).then_some(p[4]),
        truncation: (n == 1).then_some(p[5]),
    })
}

/// Text that may contain every delimiter, CR, LF and non-ASCII characters.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            1 => prop::sample::select(vec!['|', '^', '~', '\\', '&', '#', '*', ':', '!', '@', '%', '$', '\r', '\n', ' ', 'é', '€', 'H', 'X', 'Z', '.']),
        ],
        0..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

#[derive(Debug, Clone)]
struct Seg {
    name: String,
    /// (field, rep, comp, sub, text), all 1-based.
    values: Vec<(usize, usize, usize, usize, String)>,
}

fn segment() -> impl Strategy<Value = Seg> {
    (
        "[A-Z][A-Z0-9]{2}".prop_filter("not a header", |n| {
            !matches!(n.as_str(), "MSH" | "FHS" | "BHS")
        }),
        prop::collection::vec((1..8usize, 1..3usize, 1..4usize, 1..3usize, text()), 0..8),
    )
        .prop_map(|(name, values)| Seg { name, values })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn unescape_inverts_escape(d in delimiters(), x in prop::collection::vec(any::<u8>(), 0..64)) {
        let e = escape(&x, &d);
        prop_assert!(!e.iter().any(|&b| b == b'\r' || b == b'\n' || b == d.field || b == d.component
            || b == d.repetition || Some(b) == d.subcomponent || Some(b) == d.truncation));
        let back = unescape(&e, &d).into_owned();
        prop_assert_eq!(back, x);
    }

    #[test]
    fn tokens_rewrite_any_input_exactly(d in delimiters(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut out = Vec::new();
        for t in EscapeTokens::new(&raw, d) {
            t.write(&d, &mut out);
        }
        prop_assert_eq!(out, raw);
    }

    #[test]
    fn canonical_escapes_round_trip_byte_for_byte(
        parts in prop::collection::vec(prop_oneof![
            "[a-z ]{1,5}".prop_map(|s| s.into_bytes()),
            prop::sample::select(vec![
                // a literal escape character (`\E\`) followed by text that cannot read as a
                // sequence; see the `escape` docs for the one ambiguous case
                &br"\F\"[..], br"\S\", br"\T\", br"\R\", br"\E\ ", br"\.br\", br"\H\", br"\N\",
                br"\Zab\", br"\C2842\", br"\M2442\", br"\.sp2\", br"\X0D\",
            ]).prop_map(<[u8]>::to_vec),
        ], 0..10)
    ) {
        let raw: Vec<u8> = parts.concat();
        let d = Delimiters::default();
        let decoded = unescape(&raw, &d);
        let again = escape(&decoded, &d).into_owned();
        prop_assert_eq!(again, raw);
    }

    #[test]
    fn parse_of_build_has_the_same_structure(d in delimiters(), segs in prop::collection::vec(segment(), 0..6)) {
        let mut b = MessageBuilder::with_delimiters(d);
        b.msh().field(3, "APP").components(9, &["ADT", "A01"]).field(10, "1").field(12, "2.5");
        for s in &segs {
            let sb = b.segment(&s.name);
            for (f, r, c, sc, t) in &s.values {
                sb.value(*f, *r, *c, *sc, t);
            }
        }
        let bytes = b.build();
        let opts = hl7v2::ParseOptions { strict: true, ..Default::default() };
        let m = Message::parse_with(&bytes, &opts).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&bytes))))?;
        prop_assert_eq!(m.segment_count(), segs.len() + 1);
        prop_assert_eq!(m.delimiters(), d);
        prop_assert_eq!(m.get("MSH-9-2").unwrap().text(), "A01");
        for (i, s) in segs.iter().enumerate() {
            let seg = m.segments().nth(i + 1).unwrap();
            prop_assert_eq!(seg.name(), s.name.as_str());
            // Later writes to the same slot win.
            let mut expected = std::collections::HashMap::new();
            for (f, r, c, sc, t) in &s.values {
                // Without a subcomponent separator the builder ignores subcomponents past the first.
                if *sc > 1 && d.subcomponent.is_none() {
                    continue;
                }
                expected.insert((*f, *r, *c, *sc), t.clone());
            }
            for ((f, r, c, sc), t) in expected {
                let v = seg.field(f).repetition(r).component(c).subcomponent(sc);
                prop_assert_eq!(v.text(), t.as_str(), "{}-{}[{}]-{}-{}", s.name, f, r, c, sc);
            }
        }
        // and serializing the parsed message gives the same bytes
        prop_assert_eq!(m.to_bytes(), bytes);
    }

    #[test]
    fn parse_never_panics(input in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::parse(&input);
        let mut with_header = b"MSH|^~\\&|".to_vec();
        with_header.extend_from_slice(&input);
        if let Ok(m) = Message::parse(&with_header) {
            for seg in m.segments() {
                for f in seg.fields() {
                    let _ = f.text();
                    for r in f.repetitions() {
                        for c in r.components() {
                            let _ = c.subcomponents().count();
                        }
                    }
                }
            }
            let bytes = m.to_bytes();
            let again = Message::parse(&bytes).unwrap();
            prop_assert_eq!(again.segment_count(), m.segment_count());
        }
    }

    #[test]
    fn one_pass_walk_gives_what_the_nested_iterators_give(
        d in delimiters(),
        body in prop::collection::vec(prop::sample::select(b"|^~\\&#*:!@%$ab\x7d\x7f\x01\xe9\xfc\xde\xfe\xa6\x00".to_vec()), 0..80),
        header in any::<bool>(),
    ) {
        let (enc, len) = d.encoding_characters();
        let mut raw = if header { b"MSH".to_vec() } else { b"ZPX".to_vec() };
        raw.push(d.field);
        if header {
            raw.extend_from_slice(&enc[..len]);
            raw.push(d.field);
        }
        raw.extend_from_slice(&body);
        let mut text = raw.clone();
        text.push(b'\r');
        let m = Message::parse_with(&text, &hl7v2::ParseOptions { strict: true, ..Default::default() });
        let Ok(m) = m else { return Ok(()) };
        let seg = m.segments().next().unwrap();
        let walked: Vec<_> = seg.values().map(|(l, v)| ((l.field, l.repetition, l.component, l.subcomponent), v.raw())).collect();
        let mut nested = Vec::new();
        for (f, field) in seg.fields().enumerate() {
            for (r, rep) in field.repetitions().enumerate() {
                for (c, comp) in rep.components().enumerate() {
                    for (s, sub) in comp.subcomponents().enumerate() {
                        nested.push(((f + 1, r + 1, c + 1, s + 1), sub.raw()));
                    }
                }
            }
        }
        prop_assert_eq!(walked, nested);
    }

    #[test]
    fn timestamps_round_trip(
        y in 1900i32..2100, mo in 1u32..13, da in 1u32..29, h in 0u32..24, mi in 0u32..60, s in 0u32..60,
        frac in 0u32..10_000, precision in 0usize..7, off in prop::option::of(-720i32..840),
    ) {
        let precisions = [Precision::Year, Precision::Month, Precision::Day, Precision::Hour,
            Precision::Minute, Precision::Second, Precision::Fraction(4)];
        let naive = chrono::NaiveDate::from_ymd_opt(y, mo, da).unwrap()
            .and_hms_micro_opt(h, mi, s, frac * 100).unwrap();
        let p = precisions[precision];
        let t = match off {
            None => Timestamp::from_naive(naive, p),
            Some(m) => {
                use chrono::TimeZone;
                let tz = chrono::FixedOffset::east_opt(m * 60).unwrap();
                Timestamp::from_datetime(&tz.from_local_datetime(&naive).unwrap(), p)
            }
        };
        let text = t.to_string();
        let back = Timestamp::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(back, t);
        prop_assert_eq!(back.to_string(), text);
    }
}
