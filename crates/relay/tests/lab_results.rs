//! The lab-results processor over a real agent WebSocket (a scripted agent): an inbound channel
//! naming it stores ORU^R01 and ASTM results as DiagnosticReport / Observation / Specimen /
//! Patient, searchable by `based-on`, `patient`, `code` and `date`, answers AA (or AE with the
//! reason), completes the order, ignores a resend, and notifies a rest-hook Subscription (a
//! listener bound to port 0 here) with the transaction Bundle.

use std::time::Duration;

use agent_protocol::{AgentMessage, TransmitRequest};
use serde_json::{Value, json};
use test_support::hook::rest_hook;
use test_support::relay::*;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

const ORU: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500+0100||ORU^R01|MSG-1|P|2.5.1\r\
PID|1||MRN-7^^^HOSP^MR||Doe^Jane||19800101|F\r\
ORC|RE|PL-42^EHR|F-9^LAB\r\
OBR|1|PL-42^EHR|F-9^LAB|2345-7^Glucose^LN|||20240301093000+0100|||||||||||||||20240301101500+0100|||F\r\
OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|N|||F\r\
OBX|2|NM|2951-2^Sodium^LN||140|mmol/L|136-145|N|||F\r";

const ASTM: &str = "H|\\^&|||ANALYZER^1.0|||||LIS||P|LIS2-A2|20240302080000\r\
P|1||PID-9||Roe^Rick||19700505|M\r\
O|1|PL-43||^^^GLU|R|20240302073000|||||||||||||||||||F\r\
R|1|^^^GLU|6.1|mmol/L|3.9-6.1|N||F||||20240302075900\r\
L|1|N\r";

fn inbound(callback: &str, token: &str, content_type: &str, body: &str) -> AgentMessage {
    AgentMessage::TransmitRequest(TransmitRequest {
        access_token: Some(token.into()),
        channel: Some("lab-in".into()),
        remote: "10.0.0.9:51234".into(),
        content_type: content_type.into(),
        body: body.into(),
        callback: Some(callback.into()),
        return_ack: None,
        deadline_ms: None,
    })
}

async fn answer(agent: &mut ScriptedAgent, msg: AgentMessage) -> agent_protocol::TransmitResponse {
    agent.send(&msg).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    r
}

async fn search(relay: &relay::Relay, t: &str, query: &str) -> Vec<Value> {
    let r = call(
        client()
            .get(format!("{}fhir/R4/{query}", relay.base_url()))
            .bearer_auth(t),
    )
    .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    r.json["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

#[tokio::test]
async fn results_are_stored_linked_deduplicated_and_notified() {
    results_flow(start().await).await;
}

#[tokio::test]
async fn with_postgresql_results_are_stored_linked_deduplicated_and_notified() {
    let pg = tokio::task::spawn_blocking(test_support::services::Postgres::start)
        .await
        .unwrap();
    let relay = start_with(relay::RelayConfig {
        database_url: Some(pg.url()),
        heartbeat_interval: Duration::from_millis(200),
        ..relay::RelayConfig::default()
    })
    .await;
    results_flow(relay).await;
    // The searches were answered from the index.
    let rows = pg.psql(
        "SELECT param, count(*) FROM search_index WHERE resource_type = 'Observation' \
         AND param IN ('based-on', 'code', 'date', 'subject') GROUP BY param ORDER BY param",
    );
    assert_eq!(
        rows.split_whitespace().collect::<Vec<_>>().join(" "),
        "based-on|3 code|3 date|3 subject|3",
        "{rows}"
    );
}

async fn results_flow(relay: relay::Relay) {
    let (hook_url, mut hook) = rest_hook().await;
    let registry = relay.registry();
    registry
        .put(json!({"resourceType": "Agent", "id": AGENT, "name": "Lab agent", "status": "active",
            "channel": [{"name": "lab-in", "endpoint": {"reference": "Endpoint/e1"},
                "extension": [{"url": relay::INBOUND_PROCESSOR_EXTENSION, "valueCode": "lab-results"}]}]}))
        .await
        .unwrap();
    registry
        .put(json!({"resourceType": "Subscription", "id": "results-hook", "status": "active",
            "reason": "results to the EHR", "criteria": "DiagnosticReport",
            "channel": {"type": "rest-hook", "endpoint": hook_url, "payload": "application/fhir+json",
                "header": ["Authorization: Bearer hook-secret"]}}))
        .await
        .unwrap();
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    for (id, number) in [("sr-42", "PL-42"), ("sr-43", "PL-43")] {
        let r = call(
            client()
                .put(format!("{}fhir/R4/ServiceRequest/{id}", relay.base_url()))
                .bearer_auth(&caller)
                .json(
                    &json!({"resourceType": "ServiceRequest", "id": id, "status": "active",
                    "intent": "order", "identifier": [{"system": "urn:placer", "value": number}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}),
                ),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let hl7 = "x-application/hl7-v2+er7";

    // ORU^R01: AA saying what was stored.
    let r = answer(&mut agent, inbound("Agent/x-1", &t, hl7, ORU)).await;
    assert_eq!(r.status_code, Some(200));
    assert!(
        r.body
            .contains("\rMSA|AA|MSG-1|stored 1 report(s), 4 resource(s)"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("ServiceRequest/sr-42 completed"),
        "{}",
        r.body
    );

    // The rest-hook gets the transaction Bundle, with the Subscription's header.
    let (auth, bundle) = tokio::time::timeout(WAIT, hook.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(auth, "Bearer hook-secret");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "transaction");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 4);

    // Searchable.
    let reports = search(
        &relay,
        &caller,
        "DiagnosticReport?based-on=ServiceRequest/sr-42",
    )
    .await;
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report["status"], "final");
    assert_eq!(report["basedOn"][0]["reference"], "ServiceRequest/sr-42");
    let patient = report["subject"]["reference"].as_str().unwrap().to_owned();
    let patient_id = patient.strip_prefix("Patient/").unwrap();
    assert_eq!(
        search(
            &relay,
            &caller,
            &format!("DiagnosticReport?patient={patient_id}")
        )
        .await
        .len(),
        1
    );
    let obs = search(&relay, &caller, "Observation?code=http://loinc.org|2951-2").await;
    assert_eq!(obs.len(), 1);
    assert_eq!(obs[0]["valueQuantity"]["value"], 140);
    assert_eq!(obs[0]["subject"]["reference"], patient.as_str());
    assert_eq!(
        search(&relay, &caller, "Observation?date=2024-03-01")
            .await
            .len(),
        2
    );
    assert_eq!(
        search(&relay, &caller, "Observation?date=ge2024-03-02")
            .await
            .len(),
        0
    );
    assert_eq!(
        search(
            &relay,
            &caller,
            &format!("Observation?patient={patient}&code=2345-7")
        )
        .await
        .len(),
        1
    );
    let sr = search(&relay, &caller, "ServiceRequest?_id=sr-42").await;
    assert_eq!(sr[0]["status"], "completed");

    // The instrument sends it again (a new callback): nothing new, AA all the same.
    let r = answer(&mut agent, inbound("Agent/x-2", &t, hl7, ORU)).await;
    assert!(
        r.body.contains("\rMSA|AA|MSG-1|1 report(s) already stored"),
        "{}",
        r.body
    );
    assert_eq!(search(&relay, &caller, "DiagnosticReport").await.len(), 1);
    assert_eq!(search(&relay, &caller, "Observation").await.len(), 2);
    assert_eq!(search(&relay, &caller, "Patient").await.len(), 1);

    // Not a result message: AE naming the field.
    let adt = "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240301101500||ADT^A01|MSG-2|P|2.5.1\rPID|1||X\r";
    let r = answer(&mut agent, inbound("Agent/x-3", &t, hl7, adt)).await;
    assert!(r.body.contains("\rMSA|AE|MSG-2|"), "{}", r.body);
    assert!(r.body.contains("MSH(1)-9"), "{}", r.body);

    // ASTM: stored, its order completed; the next notification is this one (the resend sent
    // none).
    let r = answer(
        &mut agent,
        inbound("Agent/x-4", &t, "x-application/astm", ASTM),
    )
    .await;
    assert_eq!(r.status_code, Some(200));
    assert!(r.body.starts_with("OK: stored 1 report(s)"), "{}", r.body);
    let (_, bundle) = tokio::time::timeout(WAIT, hook.recv())
        .await
        .unwrap()
        .unwrap();
    let text = bundle.to_string();
    assert!(text.contains("PL-43"), "{text}");
    let reports = search(
        &relay,
        &caller,
        "DiagnosticReport?based-on=ServiceRequest/sr-43",
    )
    .await;
    assert_eq!(reports.len(), 1);
    assert_eq!(
        search(&relay, &caller, "ServiceRequest?_id=sr-43").await[0]["status"],
        "completed"
    );
    assert_eq!(search(&relay, &caller, "DiagnosticReport").await.len(), 2);
    relay.shutdown().await;
}

#[tokio::test]
async fn an_unknown_processor_is_refused_with_the_reason() {
    let relay = start().await;
    relay
        .registry()
        .put(
            json!({"resourceType": "Agent", "id": AGENT, "name": "Lab agent", "status": "active",
            "channel": [{"name": "lab-in", "endpoint": {"reference": "Endpoint/e1"},
                "extension": [{"url": relay::INBOUND_PROCESSOR_EXTENSION, "valueCode": "bots"}]}]}),
        )
        .await
        .unwrap();
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let r = answer(
        &mut agent,
        inbound("Agent/x-1", &t, "x-application/hl7-v2+er7", ORU),
    )
    .await;
    assert!(r.body.contains("\rMSA|AE|MSG-1|"), "{}", r.body);
    assert!(r.body.contains("unknown processor"), "{}", r.body);
}

#[tokio::test]
async fn a_results_subscription_that_cannot_be_notified_is_refused() {
    let relay = start().await;
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    let put = |endpoint: &str| {
        client()
            .put(format!("{}fhir/R4/Subscription/results", relay.base_url()))
            .bearer_auth(&caller)
            .json(
                &json!({"resourceType": "Subscription", "id": "results", "status": "active",
                "reason": "results", "criteria": "DiagnosticReport",
                "channel": {"type": "rest-hook", "endpoint": endpoint}}),
            )
    };
    let r = call(put("mllp://ehr:2575")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        oo_text(&r.json).starts_with("invalid results Subscription: a rest-hook Subscription on DiagnosticReport needs channel.endpoint http:// or https://"),
        "{}",
        r.text
    );
    assert_eq!(call(put("https://ehr.example.org/fhir")).await.status, 201);
}

/// The next Bundle a rest-hook receiver gets.
async fn next(rx: &mut mpsc::Receiver<(String, Value)>) -> Value {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .1
}

/// A corrected result (OBX-5 5.4 → 5.6, the report itself unchanged): the Observation gets a
/// new version, the answer says what was updated, and rest-hook Subscriptions on
/// `DiagnosticReport` and on `Observation` are both sent the Bundle; the same correction sent
/// again writes nothing and notifies nobody.
#[tokio::test]
async fn a_corrected_result_is_an_update_and_notifies_report_and_observation_subscribers() {
    let relay = start().await;
    let (report_url, mut report_hook) = rest_hook().await;
    let (obs_url, mut obs_hook) = rest_hook().await;
    let registry = relay.registry();
    registry
        .put(json!({"resourceType": "Agent", "id": AGENT, "name": "Lab agent", "status": "active",
            "channel": [{"name": "lab-in", "endpoint": {"reference": "Endpoint/e1"},
                "extension": [{"url": relay::INBOUND_PROCESSOR_EXTENSION, "valueCode": "lab-results"}]}]}))
        .await
        .unwrap();
    for (id, criteria, url) in [
        ("on-reports", "DiagnosticReport", &report_url),
        ("on-results", "Observation", &obs_url),
    ] {
        registry
            .put(json!({"resourceType": "Subscription", "id": id, "status": "active",
                "reason": "results to the EHR", "criteria": criteria,
                "channel": {"type": "rest-hook", "endpoint": url, "payload": "application/fhir+json"}}))
            .await
            .unwrap();
    }
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let hl7 = "x-application/hl7-v2+er7";

    let r = answer(&mut agent, inbound("Agent/c-1", &t, hl7, ORU)).await;
    assert!(r.body.contains("|stored 1 report(s)"), "{}", r.body);
    next(&mut report_hook).await;
    next(&mut obs_hook).await;

    let corrected = ORU.replace("||5.4|", "||5.6|");
    let r = answer(&mut agent, inbound("Agent/c-2", &t, hl7, &corrected)).await;
    assert!(
        r.body
            .contains("\rMSA|AA|MSG-1|updated 1 report(s): 1 resource(s) changed"),
        "{}",
        r.body
    );
    for bundle in [next(&mut report_hook).await, next(&mut obs_hook).await] {
        assert!(bundle.to_string().contains("5.6"), "{bundle}");
    }
    let obs = search(&relay, &caller, "Observation?code=http://loinc.org|2345-7").await;
    assert_eq!(obs[0]["valueQuantity"]["value"], 5.6);
    assert_eq!(obs[0]["meta"]["versionId"], "2", "{}", obs[0]);

    // The same correction again: nothing written, nobody told (the next notification each
    // hook gets is the ASTM message's).
    let r = answer(&mut agent, inbound("Agent/c-3", &t, hl7, &corrected)).await;
    assert!(
        r.body.contains("\rMSA|AA|MSG-1|1 report(s) already stored"),
        "{}",
        r.body
    );
    let r = answer(
        &mut agent,
        inbound("Agent/c-4", &t, "x-application/astm", ASTM),
    )
    .await;
    assert!(r.body.starts_with("OK: stored 1 report(s)"), "{}", r.body);
    for bundle in [next(&mut report_hook).await, next(&mut obs_hook).await] {
        assert!(bundle.to_string().contains("PL-43"), "{bundle}");
    }
    relay.shutdown().await;
}
