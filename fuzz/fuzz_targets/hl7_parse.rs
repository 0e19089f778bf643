//! Any bytes: parse (lenient and strict) and batch-split never panic, every value reads, and
//! the one-pass walk of a segment (`Segment::values`) gives what the nested iterators give.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for strict in [false, true] {
        let opts = hl7v2::ParseOptions {
            strict,
            ..Default::default()
        };
        if let Ok(msg) = hl7v2::Message::parse_with(data, &opts) {
            for seg in msg.segments() {
                let mut nested = Vec::new();
                for (f, field) in seg.fields().enumerate() {
                    let _ = field.text();
                    for (r, rep) in field.repetitions().enumerate() {
                        for (c, comp) in rep.components().enumerate() {
                            for (s, sub) in comp.subcomponents().enumerate() {
                                let _ = sub.unescaped();
                                nested.push(((f + 1, r + 1, c + 1, s + 1), sub.raw()));
                            }
                        }
                    }
                }
                let walked: Vec<_> = seg
                    .values()
                    .map(|(l, v)| ((l.field, l.repetition, l.component, l.subcomponent), v.raw()))
                    .collect();
                assert_eq!(walked, nested);
            }
            let _ = msg.get("PID-5-1");
            let _ = hl7v2::AckMode::of(&msg);
            let _ = hl7v2::Acknowledgment::read(&msg).map(|a| a.describe());
            let _ = hl7v2::Timestamp::parse(msg.msh().field(7).raw());
        }
        let _ = hl7v2::Batch::parse_with(data, &opts);
    }
});
