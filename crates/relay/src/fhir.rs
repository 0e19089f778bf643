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

/// What stops an Agent's channels from running together: two channels with one name, or two
/// whose Endpoints listen on one port (port 0, "any free port", is never shared; an Endpoint
/// that is `off` or not known is left out). `endpoint` gives an Endpoint by id. One sentence
/// per problem (`Agent/a: channels adt and lab share port 2575`); empty for other types.
pub(crate) fn check_agent_channels(
    agent: &Value,
    endpoint: impl Fn(&str) -> Option<Value>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if agent["resourceType"] != "Agent" {
        return problems;
    }
    let name = format!("Agent/{}", agent["id"].as_str().unwrap_or("?"));
    let mut names = std::collections::HashSet::new();
    let mut ports: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for ch in agent["channel"].as_array().into_iter().flatten() {
        let channel = ch["name"].as_str().unwrap_or_default();
        if !names.insert(channel) {
            problems.push(format!(
                "{name}: two channels are named {channel}; channel names must differ"
            ));
            continue;
        }
        let Some(reference) = ch["endpoint"]["reference"].as_str() else {
            continue;
        };
        let Some(e) = endpoint(reference.strip_prefix("Endpoint/").unwrap_or(reference)) else {
            continue;
        };
        if e["status"].as_str() == Some("off") {
            continue;
        }
        let Some(port) = e["address"].as_str().and_then(address_port) else {
            continue;
        };
        if port == "0" {
            continue;
        }
        match ports.get(&port) {
            Some(first) => problems.push(format!(
                "{name}: channels {first} and {channel} share port {port}; each channel needs a port of its own"
            )),
            None => {
                ports.insert(port, channel.to_owned());
            }
        }
    }
    problems
}

/// The port of `scheme://host:port[/...][?...]`.
fn address_port(address: &str) -> Option<String> {
    let (_, rest) = address.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let (_, port) = authority.rsplit_once(':')?;
    port.parse::<u16>().ok().map(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_agents_channels_must_differ_in_name_and_port() {
        let endpoints = json!({
            "adt": {"resourceType": "Endpoint", "id": "adt", "address": "mllp://0.0.0.0:2575"},
            "lab": {"resourceType": "Endpoint", "id": "lab", "address": "astm://[::]:2575?x=1"},
            "any": {"resourceType": "Endpoint", "id": "any", "address": "mllp://0.0.0.0:0"},
            "any2": {"resourceType": "Endpoint", "id": "any2", "address": "mllp://0.0.0.0:0"},
            "off": {"resourceType": "Endpoint", "id": "off", "status": "off", "address": "mllp://0.0.0.0:2575"},
        });
        let get = |id: &str| endpoints.get(id).cloned();
        let agent =
            |channels: Value| json!({"resourceType": "Agent", "id": "a", "channel": channels});
        let ch = |name: &str, e: &str| json!({"name": name, "endpoint": {"reference": format!("Endpoint/{e}")}});
        let fine = agent(json!([
            ch("adt", "adt"),
            ch("a0", "any"),
            ch("b0", "any2"),
            ch("o", "off"),
            ch("x", "missing")
        ]));
        assert!(check_agent_channels(&fine, get).is_empty());
        assert_eq!(
            check_agent_channels(&agent(json!([ch("adt", "adt"), ch("lab", "lab")])), get),
            ["Agent/a: channels adt and lab share port 2575; each channel needs a port of its own"]
        );
        assert_eq!(
            check_agent_channels(&agent(json!([ch("adt", "adt"), ch("adt", "any")])), get),
            ["Agent/a: two channels are named adt; channel names must differ"]
        );
        assert!(check_agent_channels(&json!({"resourceType": "Device"}), get).is_empty());
    }

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
