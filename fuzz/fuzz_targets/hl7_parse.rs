//! Any bytes: parse (lenient and strict) and batch-split never panic, and every value reads.
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
                for field in seg.fields() {
                    let _ = field.text();
                    for rep in field.repetitions() {
                        for comp in rep.components() {
                            for sub in comp.subcomponents() {
                                let _ = sub.unescaped();
                            }
                        }
                    }
                }
            }
            let _ = msg.get("PID-5-1");
            let _ = hl7v2::AckMode::of(&msg);
            let _ = hl7v2::Acknowledgment::read(&msg).map(|a| a.describe());
            let _ = hl7v2::Timestamp::parse(msg.msh().field(7).raw());
        }
        let _ = hl7v2::Batch::parse_with(data, &opts);
    }
});
