//! Small facts about FHIR resources that every part of the relay uses: the types stored, ids,
//! instants and query strings. No I/O; imports nothing else from the crate.

use serde_json::Value;

/// Resource types the relay stores.
pub(crate) const RESOURCE_TYPES: &[&str] = &[
    "Agent",
    "Device",
    "Endpoint",
    "ClientApplication",
    "Patient",
    "Practitioner",
    "ServiceRequest",
    "Subscription",
    "AuditEvent",
];

/// A resource's `id` (empty when it has none).
pub(crate) fn id_of(r: &Value) -> &str {
    r["id"].as_str().unwrap_or("")
}

/// FHIR ids: 1-64 of `[A-Za-z0-9\-\.]`.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The current time, RFC 3339 in UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `a=1&b=2` → pairs, percent-decoded.
pub(crate) fn url_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
