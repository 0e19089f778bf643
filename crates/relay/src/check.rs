//! `outpost server --check`: every problem of a bootstrap bundle, found before the relay
//! starts (the relay's own start stops at the first).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::auth::{MIN_SECRET_LEN, is_hashed};
use crate::fhir::{RESOURCE_TYPES, check_address, check_agent_channels, valid_id};

/// Every problem of a bootstrap Bundle, one sentence each, in entry order (empty when it
/// loads): not a Bundle, entries without a resource or a type, types the relay does not keep,
/// ids that are not FHIR ids, the same id twice, Device and Endpoint URLs the agent cannot use,
/// ClientApplication secrets under [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) characters, Agent
/// channels whose Endpoint is not in the bundle or whose inbound processor the relay does not
/// know, two channels of one Agent with one name or on one port.
pub fn check_bundle(bundle: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if bundle["resourceType"] != "Bundle" {
        problems.push("not a FHIR Bundle (resourceType is not \"Bundle\")".to_owned());
    }
    let Some(entries) = bundle["entry"].as_array() else {
        problems.push("the Bundle has no entry array".to_owned());
        return problems;
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut endpoints = HashSet::new();
    let mut endpoint_resources: HashMap<String, Value> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(r) = e.get("resource") else {
            problems.push(format!("entry {i}: no resource"));
            continue;
        };
        let Some(ty) = r["resourceType"].as_str() else {
            problems.push(format!("entry {i}: the resource has no resourceType"));
            continue;
        };
        if !RESOURCE_TYPES.contains(&ty) {
            problems.push(format!(
                "entry {i}: {ty} is not a type the relay keeps ({})",
                RESOURCE_TYPES.join(", ")
            ));
        }
        match r["id"].as_str() {
            Some(id) if !valid_id(id) => problems.push(format!(
                "entry {i}: {ty} id {id:?} is not a FHIR id (1-64 of A-Z, a-z, 0-9, '-', '.')"
            )),
            Some(id) => {
                let key = format!("{ty}/{id}");
                if let Some(first) = seen.insert(key.clone(), i) {
                    problems.push(format!("entry {i}: {key} again (first at entry {first})"));
                }
                if ty == "Endpoint" {
                    endpoints.insert(id.to_owned());
                    endpoint_resources.insert(id.to_owned(), r.clone());
                }
            }
            None => problems.push(format!("entry {i}: {ty} without an id")),
        }
        if let Err(e) = check_address(r) {
            problems.push(format!("entry {i}: {e}"));
        }
        if ty == "ClientApplication"
            && let Some(secret) = r["secret"].as_str()
            && !is_hashed(secret)
            && secret.chars().count() < MIN_SECRET_LEN
        {
            problems.push(format!(
                "entry {i}: ClientApplication/{} secret too short ({} characters, at least {MIN_SECRET_LEN})",
                r["id"].as_str().unwrap_or("?"),
                secret.chars().count()
            ));
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let r = &e["resource"];
        if r["resourceType"] != "Agent" {
            continue;
        }
        let agent = r["id"].as_str().unwrap_or("?");
        for p in check_agent_channels(r, |id| endpoint_resources.get(id).cloned()) {
            problems.push(format!("entry {i}: {p}"));
        }
        for ch in r["channel"].as_array().into_iter().flatten() {
            let name = ch["name"].as_str().unwrap_or("?");
            match ch["endpoint"]["reference"].as_str() {
                Some(reference) => {
                    let id = reference.strip_prefix("Endpoint/").unwrap_or(reference);
                    if !reference.starts_with("Endpoint/") || !endpoints.contains(id) {
                        problems.push(format!(
                            "entry {i}: Agent/{agent} channel {name}: {reference} is not an Endpoint in the bundle"
                        ));
                    }
                }
                None => problems.push(format!(
                    "entry {i}: Agent/{agent} channel {name}: no endpoint reference"
                )),
            }
            if let Err(p) = crate::inbound::channel_processor(ch) {
                problems.push(format!("entry {i}: Agent/{agent} channel {name}: {p}"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_inbound_processor_is_named() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Endpoint", "id": "in", "address": "astm://0.0.0.0:5000"}},
            {"resource": {"resourceType": "Endpoint", "id": "in2", "address": "astm://0.0.0.0:5001"}},
            {"resource": {"resourceType": "Agent", "id": "a", "channel": [
                {"name": "ok", "endpoint": {"reference": "Endpoint/in"},
                 "extension": [{"url": crate::INBOUND_PROCESSOR_EXTENSION, "valueCode": "lab-results"}]},
                {"name": "typo", "endpoint": {"reference": "Endpoint/in2"},
                 "extension": [{"url": crate::INBOUND_PROCESSOR_EXTENSION, "valueCode": "lab-result"}]}]}},
        ]});
        assert_eq!(
            check_bundle(&bundle),
            [
                "entry 2: Agent/a channel typo: inbound-processor \"lab-result\": unknown processor; the relay runs lab-results"
            ]
        );
    }

    #[test]
    fn two_channels_of_one_agent_on_one_port_or_with_one_name_are_named() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Endpoint", "id": "adt", "address": "mllp://0.0.0.0:57002"}},
            {"resource": {"resourceType": "Endpoint", "id": "lab", "address": "astm://0.0.0.0:57002"}},
            {"resource": {"resourceType": "Agent", "id": "a", "channel": [
                {"name": "adt", "endpoint": {"reference": "Endpoint/adt"}},
                {"name": "lab", "endpoint": {"reference": "Endpoint/lab"}},
                {"name": "adt", "endpoint": {"reference": "Endpoint/adt"}}]}},
        ]});
        assert_eq!(
            check_bundle(&bundle),
            [
                "entry 2: Agent/a: channels adt and lab share port 57002; each channel needs a port of its own",
                "entry 2: Agent/a: two channels are named adt; channel names must differ"
            ]
        );
    }

    #[test]
    fn every_problem_is_named() {
        let good = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Agent", "id": "a", "channel": [{"name": "adt", "endpoint": {"reference": "Endpoint/adt"}}]}},
            {"resource": {"resourceType": "Endpoint", "id": "adt", "address": "mllp://0.0.0.0:2575"}},
            {"resource": {"resourceType": "Device", "id": "lis", "url": "mllp://10.0.0.5:2575"}},
            {"resource": {"resourceType": "Device", "id": "lis-tls", "url": "mllps://10.0.0.5:2576?ca=/etc/outpost/lis-ca.pem"}},
            {"resource": {"resourceType": "ClientApplication", "id": "c", "secret": "sixteen-chars-xx"}},
        ]});
        assert!(check_bundle(&good).is_empty(), "{:?}", check_bundle(&good));
        let bad = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Agent", "id": "a", "channel": [{"name": "adt", "endpoint": {"reference": "Endpoint/missing"}}]}},
            {"resource": {"resourceType": "Device", "id": "lis", "url": "mlp://10.0.0.5:2575"}},
            {"resource": {"resourceType": "Device", "id": "lis", "url": "mllp://10.0.0.5:2575"}},
            {"resource": {"resourceType": "Encounter", "id": "o"}},
            {"fullUrl": "x"},
            {"resource": {"resourceType": "ClientApplication", "id": "c", "secret": "short"}},
        ]});
        let problems = check_bundle(&bad);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(
            problems[0].contains("unknown scheme mlp://"),
            "{}",
            problems[0]
        );
        assert!(problems[1].contains("Device/lis again (first at entry 1)"));
        assert!(problems[2].contains("Encounter is not a type the relay keeps"));
        assert_eq!(problems[3], "entry 4: no resource");
        assert_eq!(
            problems[4],
            "entry 5: ClientApplication/c secret too short (5 characters, at least 16)"
        );
        assert!(problems[5].contains("Endpoint/missing is not an Endpoint in the bundle"));
        assert_eq!(
            check_bundle(&json!({"resourceType": "Patient"})),
            [
                "not a FHIR Bundle (resourceType is not \"Bundle\")",
                "the Bundle has no entry array"
            ]
        );
    }
}
