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
    "DiagnosticReport",
    "Observation",
    "Specimen",
    // agent releases for `$upgrade` (src/release.rs)
    "DocumentReference",
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

/// URL schemes the agent delivers pushes to (`Device.url`).
pub(crate) const DEVICE_SCHEMES: &[&str] = &["mllp", "mllps", "astm", "dicom"];
/// URL schemes the agent listens on (`Endpoint.address`).
pub(crate) const ENDPOINT_SCHEMES: &[&str] = &["mllp", "mllps", "astm", "tcp", "dicom"];

/// Checks a Device's `url` or an Endpoint's `address`: `scheme://host:port[...]` with a
/// scheme the agent has a client or a listener for. Other types pass. The error is the
/// sentence a user needs (`Device/lis: url "mlp://h:1": unknown scheme mlp://; ...`).
pub(crate) fn check_address(resource: &Value) -> Result<(), String> {
    let (field, schemes) = match resource["resourceType"].as_str() {
        Some("Device") => ("url", DEVICE_SCHEMES),
        Some("Endpoint") => ("address", ENDPOINT_SCHEMES),
        _ => return Ok(()),
    };
    let name = match resource["id"].as_str() {
        Some(id) => format!("{}/{id}", resource["resourceType"].as_str().unwrap_or("")),
        None => resource["resourceType"].as_str().unwrap_or("").to_owned(),
    };
    let url = match &resource[field] {
        Value::Null => return Ok(()),
        Value::String(s) => s.as_str(),
        _ => return Err(format!("{name}: {field} is not a string")),
    };
    let expected = schemes
        .iter()
        .map(|s| format!("{s}://host:port"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{name}: {field} {url:?} is not a URL; expected {expected}"
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "{name}: {field} {url:?}: unknown scheme {scheme}://; expected {expected}"
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !host_port {
        return Err(format!(
            "{name}: {field} {url:?} has no host:port; expected {expected}"
        ));
    }
    if field == "address" {
        // The agent reads the certificate files; what can be told here is whether the
        // options can work at all.
        let query = url_params(rest.split_once('?').map_or("", |(_, q)| q));
        agent_protocol::channel::listener_tls(scheme, |k| {
            query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
        })
        .map_err(|e| format!("{name}: {field} {url:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses() {
        let dev = |url: &str| json!({"resourceType": "Device", "id": "lis", "url": url});
        assert_eq!(check_address(&dev("mllp://127.0.0.1:56000")), Ok(()));
        assert_eq!(check_address(&dev("dicom://[::1]:104?aet=PACS")), Ok(()));
        assert_eq!(
            check_address(&dev("mllps://lis.lan:2576?ca=/ca.pem")),
            Ok(())
        );
        assert_eq!(
            check_address(&dev("mlp://127.0.0.1:56000")),
            Err("Device/lis: url \"mlp://127.0.0.1:56000\": unknown scheme mlp://; expected mllp://host:port, mllps://host:port, astm://host:port, dicom://host:port".to_owned())
        );
        assert!(
            check_address(&dev("127.0.0.1:56000"))
                .unwrap_err()
                .contains("is not a URL")
        );
        assert!(
            check_address(&dev("mllp://host"))
                .unwrap_err()
                .contains("no host:port")
        );
        assert!(
            check_address(&dev("mllp://:1"))
                .unwrap_err()
                .contains("no host:port")
        );
        // tcp:// is for listeners only.
        assert!(check_address(&dev("tcp://h:1")).is_err());
        let endpoint =
            |address: &str| json!({"resourceType": "Endpoint", "id": "in", "address": address});
        assert_eq!(
            check_address(&endpoint(
                "dicom://0.0.0.0:11112?tls=true&cert=/c.pem&key=/k.pem"
            )),
            Ok(())
        );
        assert_eq!(
            check_address(&endpoint("dicom://0.0.0.0:11112?cert=/c.pem&key=/k.pem")),
            Err("Endpoint/in: address \"dicom://0.0.0.0:11112?cert=/c.pem&key=/k.pem\": cert= is for TLS channels: add tls=true, or remove cert=".to_owned())
        );
        assert!(
            check_address(&endpoint(
                "dicom://0.0.0.0:11112?tls=yes&cert=/c.pem&key=/k.pem"
            ))
            .is_err_and(|e| e.ends_with("tls=\"yes\": true or false"))
        );
        assert!(
            check_address(&endpoint("mllps://0.0.0.0:2576"))
                .is_err_and(|e| e.contains("need cert=FILE and key=FILE"))
        );
        let ep = json!({"resourceType": "Endpoint", "address": "tcp://0.0.0.0:9000"});
        assert_eq!(check_address(&ep), Ok(()));
        // The agent's DICOM channel (an SCP).
        let ep = json!({"resourceType": "Endpoint", "address": "dicom://0.0.0.0:104"});
        assert_eq!(check_address(&ep), Ok(()));
        let ep = json!({"resourceType": "Endpoint", "address": "hl7://0.0.0.0:104"});
        assert!(
            check_address(&ep)
                .unwrap_err()
                .starts_with("Endpoint: address")
        );
        assert_eq!(
            check_address(&json!({"resourceType": "Device", "id": "x"})),
            Ok(())
        );
        assert_eq!(
            check_address(&json!({"resourceType": "Patient", "url": 5})),
            Ok(())
        );
        assert!(check_address(&json!({"resourceType": "Device", "url": 5})).is_err());
    }
}
