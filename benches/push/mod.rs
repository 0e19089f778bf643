//! The parts of the `push_roundtrip` bench: the two shapes it measures, the two helper processes
//! of the four-process shape (re-runs of the bench binary with `--role`), and the arithmetic.

pub mod device;
pub mod four_process;
pub mod http;
pub mod loadgen;
pub mod one_process;
pub mod stats;

/// The Agent the benches push to.
pub const AGENT: &str = "bench-agent";
/// The Device the pushes go to.
pub const DEVICE: &str = "Device/dev";
/// Warm-up pushes per caller before a measured window.
pub const WARMUP: usize = 20;

/// The `$push` body for the example ADT^A01 with `{ID}` where its control ID (MSH-10) goes:
/// `body.replace("{ID}", id)` gives the request for one push.
pub fn push_body_template() -> String {
    let adt = outpost_benches::adt_a01().replace("|1698105185516|", "|{ID}|");
    serde_json::json!({
        "destination": DEVICE,
        "contentType": "x-application/hl7-v2+er7",
        "body": adt,
        "waitForResponse": true,
    })
    .to_string()
}

/// The resources a relay needs for the benches: a caller, the agent's client (allowed to act as
/// [`AGENT`]), the Agent, and the Device at `device` (`host:port` of an MLLP listener).
pub fn bootstrap_bundle(device: &str) -> serde_json::Value {
    serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
                "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "dev", "url": format!("mllp://{device}")}},
    ]})
}
