//! Lab orders end to end: `outpost server` and `outpost agent` as processes, the real
//! `medplum hl7 listen` as the LIS. Create a ServiceRequest → ORM^O01 at the listener → its ACK
//! recorded; update it → a second message; listener gone → retried, then recorded as failed.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Proc, agent_process, medplum, port_for_peer, relay_process, token};

const WAIT: Duration = Duration::from_secs(60);

async fn audits(base: &str, token: &str, sr: &str, n: usize) -> Vec<Value> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        let r: Value = client
            .get(format!(
                "{base}fhir/R4/AuditEvent?entity=ServiceRequest/{sr}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found: Vec<Value> = r["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} AuditEvents for ServiceRequest/{sr}");
}

fn response(audit: &Value) -> String {
    audit["entity"][0]["detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "response")
        .and_then(|d| d["valueString"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[test]
fn service_request_to_medplum_hl7_listener_and_back() {
    // `medplum hl7 listen` binds the port it is given: one picked free.
    let lis_port = port_for_peer();
    let dir = std::env::temp_dir().join(format!("outpost-lab-orders-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "ehr", "secret": "ehr-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
                "valueReference": {"reference": "Agent/lab-agent"}}]}},
        {"resource": {"resourceType": "Agent", "id": "lab-agent", "name": "Lab agent", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "lis", "url": format!("mllp://127.0.0.1:{lis_port}")}},
        {"resource": {"resourceType": "Patient", "id": "pat-1", "identifier": [{"system": "urn:mrn", "value": "MRN-555"}],
            "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-02-03", "gender": "female"}},
        {"resource": {"resourceType": "Subscription", "id": "orders-to-lis", "status": "active",
            "reason": "lab orders to the LIS", "criteria": "ServiceRequest?status=active", "channel": {"type": "rest-hook"},
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/order-push", "extension": [
                {"url": "agent", "valueReference": {"reference": "Agent/lab-agent"}},
                {"url": "device", "valueReference": {"reference": "Device/lis"}},
                {"url": "format", "valueCode": "hl7-orm"}]}]}},
    ]});
    let (relay, base) = relay_process(
        &dir,
        &bundle,
        &["--order-attempts", "3", "--order-backoff-ms", "200"],
    );
    let agent = agent_process(
        &base,
        ("agent", "agent-secret-0123456"),
        "lab-agent",
        &dir.join("agent"),
        WAIT,
    );
    let mut cmd = medplum();
    cmd.args(["hl7", "listen", &lis_port.to_string()]);
    let mut lis = Proc::spawn("medplum hl7 listen", cmd);
    lis.wait_for(&format!("Listening on port {lis_port}"), WAIT);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let token = rt.block_on(token(&base, "ehr", "ehr-secret-0123456"));
    let put = |sr: Value| {
        rt.block_on(async {
            let r = client
                .put(format!(
                    "{base}fhir/R4/ServiceRequest/{}",
                    sr["id"].as_str().unwrap()
                ))
                .bearer_auth(&token)
                .json(&sr)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    let order = |id: &str, priority: &str| {
        json!({"resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order", "priority": priority,
            "identifier": [{"system": "urn:placer", "value": format!("PL-{id}"), "type": {"coding": [{"code": "PLAC"}]}}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel - Blood by Automated count"}]},
            "subject": {"reference": "Patient/pat-1"}, "occurrenceDateTime": "2024-03-01T09:30:00Z",
            "note": [{"text": "Call ward 4^B | ext 123"}]})
    };

    // Create: the ORM^O01 reaches the LIS, its ACK is recorded.
    assert_eq!(put(order("cbc-1", "routine")), 201);
    lis.wait_for("|ORM^O01^ORM_O01|", WAIT);
    lis.wait_for("ORC|NW|PL-cbc-1|", WAIT);
    lis.wait_for(
        "OBR|1|PL-cbc-1||58410-2^CBC panel - Blood by Automated count^LN|R|",
        WAIT,
    );
    lis.wait_for("NTE|1|P|Call ward 4\\S\\B \\F\\ ext 123", WAIT);
    let a = rt.block_on(audits(&base, &token, "cbc-1", 1));
    assert_eq!(a[0]["outcome"], "0", "{:#}", a[0]);
    assert!(response(&a[0]).contains("MSA|AA|"), "{}", response(&a[0]));

    // Update: a second message, ORC-1 XO, priority now STAT.
    assert_eq!(put(order("cbc-1", "stat")), 200);
    lis.wait_for("ORC|XO|PL-cbc-1|", WAIT);
    let a = rt.block_on(audits(&base, &token, "cbc-1", 2));
    assert!(a.iter().all(|e| e["outcome"] == "0"));

    // The LIS goes away: the next order is retried, then recorded as failed with the reason.
    drop(lis);
    assert_eq!(put(order("cbc-2", "routine")), 201);
    let a = rt.block_on(audits(&base, &token, "cbc-2", 1));
    assert_eq!(a[0]["outcome"], "8");
    let why = a[0]["outcomeDesc"].as_str().unwrap();
    assert!(why.starts_with("not delivered after 3 attempts:"), "{why}");
    assert!(why.contains("refused"), "{why}");
    drop(agent);
    drop(relay);
}
