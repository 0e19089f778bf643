//! Any JSON as a ServiceRequest (references resolved among the other resources of an array):
//! conversion to ORM, OML and ASTM never panics, and what converts parses back.
#![no_main]

use lab_orders::{Format, Options, Order, convert, lookup_in};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let resources: Vec<Value> = match &v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let Some(sr) = resources.first() else { return };
    let Ok(order) = Order::from_fhir(sr, &lookup_in(&resources)) else { return };
    for f in [Format::Orm, Format::Oml, Format::Astm] {
        if let Ok(text) = convert(&order, f, &Options::default()) {
            if f == Format::Astm {
                let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
                astm::Message::parse(&bytes).expect("our ASTM parses");
            } else {
                let m = hl7v2::Message::parse(text.as_bytes()).expect("our HL7 parses");
                assert!(m.segment("OBR").is_some());
            }
        }
    }
});
