//! Fixtures shared by the benches: deterministic messages, so that runs compare.

use chrono::{TimeZone, Utc};

/// The instant every fixture is stamped with.
pub fn fixed_now() -> chrono::DateTime<Utc> {
    // 2023-10-23T23:53:05.516Z, the timestamp of the canonical push example.
    Utc.timestamp_millis_opt(1_698_105_185_516)
        .single()
        .unwrap_or_default()
}

/// The ADT^A01 example (355 bytes, 4 segments).
pub fn adt_a01() -> String {
    hl7v2::example_adt_a01(fixed_now())
}

/// An ORU^R01 with 100 OBX segments (22,288 bytes).
pub fn oru_r01_100() -> String {
    hl7v2::example_oru_r01(fixed_now(), 100)
}
