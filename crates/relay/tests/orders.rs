//! Lab orders in the relay: Subscriptions, ServiceRequest writes and rest-hook notifications
//! turned into pushes; retries, final failures and every outcome as an AuditEvent. A scripted
//! agent plays the agent and the device.

use std::time::Duration;

use agent_protocol::{AgentMessage, TransmitResponse};
use relay::RelayConfig;
use serde_json::{Value, json};
use test_support::relay::*;

const SUB: &str = "lab-orders";

async fn relay() -> relay::Relay {
    let r = start_with(RelayConfig {
        heartbeat_interval: Duration::from_secs(30),
        agent_timeout: Duration::from_secs(60),
        order_attempts: 3,
        order_backoff: Duration::from_millis(50),
        order_timeout: Duration::from_secs(2),
        ..RelayConfig::default()
    })
    .await;
    r.registry()
        .put(json!({"resourceType": "Patient", "id": "pat-1", "identifier": [{"value": "MRN-1"}],
            "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-02-03", "gender": "female"})).await
        .unwrap();
    r
}

fn subscription(criteria: &str, format: &str) -> Value {
    json!({"resourceType": "Subscription", "id": SUB, "status": "active", "reason": "lab orders",
        "criteria": criteria, "channel": {"type": "rest-hook"},
        "extension": [{"url": relay::ORDER_PUSH_EXTENSION, "extension": [
            {"url": "agent", "valueReference": {"reference": format!("Agent/{AGENT}")}},
            {"url": "device", "valueReference": {"reference": format!("Device/{DEVICE}")}},
            {"url": "format", "valueCode": format}]}]})
}

fn service_request(id: &str, status: &str) -> Value {
    json!({"resourceType": "ServiceRequest", "id": id, "status": status, "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": "Patient/pat-1"}, "priority": "routine",
        "note": [{"text": "fasting | 12h"}]})
}

async fn put(relay: &relay::Relay, token: &str, resource: &Value) -> Resp {
    let path = format!(
        "{}fhir/R4/{}/{}",
        relay.base_url(),
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    call(client().put(path).bearer_auth(token).json(resource)).await
}

/// The AuditEvents about a ServiceRequest, waiting until there are `n`.
async fn audits(relay: &relay::Relay, token: &str, sr: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let r = call(
            client()
                .get(format!(
                    "{}fhir/R4/AuditEvent?entity=ServiceRequest/{sr}",
                    relay.base_url()
                ))
                .bearer_auth(token),
        )
        .await;
        let entries: Vec<Value> = r.json["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect();
        if entries.len() >= n {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} AuditEvents for ServiceRequest/{sr}");
}

fn detail<'a>(audit: &'a Value, kind: &str) -> &'a str {
    audit["entity"][0]["detail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == kind)
        .and_then(|d| d["valueString"].as_str())
        .unwrap_or("")
}

/// Answers the next transmit request as the device would; returns it.
async fn answer(
    agent: &mut ScriptedAgent,
    status: u16,
    body: &str,
) -> agent_protocol::TransmitRequest {
    let AgentMessage::TransmitRequest(req) = agent.recv_kind("agent:transmit:request").await else {
        unreachable!()
    };
    agent
        .send(&AgentMessage::TransmitResponse(TransmitResponse {
            channel: req.channel.clone(),
            remote: req.remote.clone(),
            callback: req.callback.clone(),
            content_type: if status == 200 {
                "x-application/hl7-v2+er7".into()
            } else {
                "text/plain".into()
            },
            status_code: Some(status),
            status: None,
            body: body.into(),
            device_us: None,
        }))
        .await;
    req
}

#[tokio::test]
async fn subscriptions_are_checked_when_written() {
    let relay = relay().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    for (criteria, format, why) in [
        (
            "ServiceRequest?color=blue",
            "hl7-orm",
            "criteria parameter \"color\" is not supported",
        ),
        ("Observation", "hl7-orm", "needs criteria ServiceRequest"),
        ("ServiceRequest", "fax", "expected hl7-orm, hl7-oml or astm"),
    ] {
        let r = put(&relay, &t, &subscription(criteria, format)).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(oo_text(&r.json).contains(why), "{}", r.text);
    }
    let mut no_agent = subscription("ServiceRequest", "hl7-orm");
    no_agent["extension"][0]["extension"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let r = put(&relay, &t, &no_agent).await;
    assert!(
        r.text.contains("agent must be a reference to a Agent"),
        "{}",
        r.text
    );
    assert_eq!(
        put(
            &relay,
            &t,
            &subscription("ServiceRequest?status=active", "hl7-orm")
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn create_and_update_push_orm_and_record_the_ack() {
    let relay = relay().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    put(
        &relay,
        &t,
        &subscription(
            "ServiceRequest?status=active&code=http://loinc.org|2345-7",
            "hl7-orm",
        ),
    )
    .await;

    assert_eq!(
        put(&relay, &t, &service_request("sr-1", "active"))
            .await
            .status,
        201
    );
    let ack = "MSH|^~\\&|LIS|LAB|OUTPOST||20240101||ACK^O01|A1|P|2.5\rMSA|AA|X\r";
    let req = answer(&mut agent, 200, ack).await;
    assert_eq!(req.remote, "mllp://127.0.0.1:56000");
    assert_eq!(req.content_type, "x-application/hl7-v2+er7");
    let m = hl7v2::Message::parse(req.body.as_bytes()).unwrap();
    assert_eq!(m.get("MSH-9-1").unwrap().text(), "ORM");
    assert_eq!(m.get("ORC-1").unwrap().text(), "NW");
    assert_eq!(m.get("PID-5-1").unwrap().text(), "Doe");
    assert_eq!(m.get("NTE-3").unwrap().text(), "fasting | 12h");
    let a = audits(&relay, &t, "sr-1", 1).await;
    assert_eq!(a[0]["outcome"], "0");
    assert_eq!(
        a[0]["entity"][0]["what"]["reference"],
        "ServiceRequest/sr-1/_history/1"
    );
    assert_eq!(detail(&a[0], "response"), ack);
    assert_eq!(detail(&a[0], "message"), req.body);

    // An update: a second message, ORC-1 XO.
    let mut changed = service_request("sr-1", "active");
    changed["priority"] = json!("stat");
    assert_eq!(put(&relay, &t, &changed).await.status, 200);
    let req = answer(&mut agent, 200, ack).await;
    let m = hl7v2::Message::parse(req.body.as_bytes()).unwrap();
    assert_eq!(m.get("ORC-1").unwrap().text(), "XO");
    assert_eq!(m.get("OBR-5").unwrap().text(), "S");
    let a = audits(&relay, &t, "sr-1", 2).await;
    assert!(
        a.iter()
            .any(|e| e["entity"][0]["what"]["reference"] == "ServiceRequest/sr-1/_history/2")
    );

    // Not matching the criteria (a draft): nothing pushed.
    put(&relay, &t, &service_request("sr-draft", "draft")).await;
    // A matching order would be queued before the PUT is answered; this window lets a wrong
    // one show as pushed too. (Proving that nothing happens needs a window, not an event.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(relay.registry().delivery_count("pending").await.unwrap(), 0);
    assert_eq!(relay.registry().delivery_count("done").await.unwrap(), 2);
}

#[tokio::test]
async fn astm_format_goes_as_astm() {
    let relay = relay().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    put(&relay, &t, &subscription("ServiceRequest", "astm")).await;
    put(&relay, &t, &service_request("sr-a", "active")).await;
    let req = answer(
        &mut agent,
        200,
        "sent 4 records in 4 frames, all acknowledged (0 retransmitted)",
    )
    .await;
    assert_eq!(req.content_type, "x-application/astm");
    assert!(req.body.starts_with("H|\\^&|||OUTPOST|"), "{}", req.body);
    assert!(
        req.body.contains("\rO|1|sr-a||^^^2345-7^Glucose|R|"),
        "{}",
        req.body
    );
    assert_eq!(audits(&relay, &t, "sr-a", 1).await[0]["outcome"], "0");
}

#[tokio::test]
async fn failures_are_retried_then_recorded_with_the_reason() {
    let relay = relay().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    put(&relay, &t, &subscription("ServiceRequest", "hl7-orm")).await;
    // No agent connected: three attempts, then failed, saying why.
    put(&relay, &t, &service_request("sr-offline", "active")).await;
    let a = audits(&relay, &t, "sr-offline", 1).await;
    assert_eq!(a[0]["outcome"], "8");
    let why = a[0]["outcomeDesc"].as_str().unwrap();
    assert!(why.starts_with("not delivered after 3 attempts: "), "{why}");
    assert!(why.contains("is not connected"), "{why}");
    assert_eq!(detail(&a[0], "attempts"), "3");

    // The device refuses: the agent answers 200 with the device's ACK (Medplum's meaning,
    // issue 18) and the relay reads MSA-1, whatever the text says. Final at once.
    let mut agent = ScriptedAgent::connect(&relay).await;
    put(&relay, &t, &service_request("sr-nak", "active")).await;
    answer(
        &mut agent,
        200,
        "MSH|^~\\&|LIS|LAB|||20240101||ACK|A1|P|2.5\rMSA|AR|X|unknown test\r",
    )
    .await;
    let a = audits(&relay, &t, "sr-nak", 1).await;
    assert_eq!(a[0]["outcome"], "8");
    assert!(a[0]["outcomeDesc"].as_str().unwrap().contains(
        "the device answered AR: MSH|^~\\&|LIS|LAB|||20240101||ACK|A1|P|2.5\nMSA|AR|X|unknown test"
    ));
    assert_eq!(detail(&a[0], "attempts"), "1");

    // The device is down once, then answers: retried, delivered.
    put(&relay, &t, &service_request("sr-retry", "active")).await;
    answer(
        &mut agent,
        400,
        "cannot connect to 127.0.0.1:56000: Connection refused (os error 111)",
    )
    .await;
    answer(
        &mut agent,
        200,
        "MSH|^~\\&|LIS|LAB|||20240101||ACK|A2|P|2.5\rMSA|AA|X\r",
    )
    .await;
    let a = audits(&relay, &t, "sr-retry", 1).await;
    assert_eq!(a[0]["outcome"], "0");
    assert_eq!(detail(&a[0], "attempts"), "2");

    // An order that cannot be converted: recorded at once, nothing sent.
    let mut broken = service_request("sr-broken", "active");
    broken["subject"] = json!({"reference": "Patient/nobody"});
    put(&relay, &t, &broken).await;
    let a = audits(&relay, &t, "sr-broken", 1).await;
    assert_eq!(a[0]["outcome"], "8");
    assert!(
        a[0]["outcomeDesc"]
            .as_str()
            .unwrap()
            .contains("ServiceRequest.subject refers to Patient/nobody, which was not found"),
        "{}",
        a[0]["outcomeDesc"]
    );
}

#[tokio::test]
async fn rest_hook_notifications_from_another_fhir_server() {
    let relay = relay().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    put(
        &relay,
        &t,
        &subscription("ServiceRequest?status=active", "hl7-oml"),
    )
    .await;
    let url = format!("{}outpost/notify/{SUB}", relay.base_url());
    // A Bundle carrying the order and its patient (not in the relay's registry).
    let mut sr = service_request("ext-1", "active");
    sr["subject"] = json!({"reference": "Patient/ext-pat"});
    let bundle = json!({"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": sr},
        {"resource": {"resourceType": "Patient", "id": "ext-pat", "identifier": [{"value": "EXT-9"}],
            "name": [{"family": "Roe", "given": ["Rick"]}]}}]});
    let r = call(client().post(&url).bearer_auth(&t).json(&bundle)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("1 order message(s) queued"), "{}", r.text);
    let req = answer(
        &mut agent,
        200,
        "MSH|^~\\&|L|L|||20240101||ACK|A3|P|2.5\rMSA|AA|X\r",
    )
    .await;
    let m = hl7v2::Message::parse(req.body.as_bytes()).unwrap();
    assert_eq!(m.get("MSH-9-1").unwrap().text(), "OML");
    assert_eq!(m.get("PID-3-1").unwrap().text(), "EXT-9");

    // The resource alone, with Medplum's interaction header: an update.
    let mut alone = service_request("ext-2", "active");
    alone["meta"] = json!({"versionId": "3"});
    let r = call(
        client()
            .post(&url)
            .bearer_auth(&t)
            .header("X-Medplum-Interaction", "update")
            .json(&alone),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let req = answer(
        &mut agent,
        200,
        "MSH|^~\\&|L|L|||20240101||ACK|A4|P|2.5\rMSA|AA|X\r",
    )
    .await;
    assert_eq!(
        hl7v2::Message::parse(req.body.as_bytes())
            .unwrap()
            .get("ORC-1")
            .unwrap()
            .text(),
        "XO"
    );

    // Cannot be converted: a 400 that says why.
    let mut orphan = service_request("ext-3", "active");
    orphan["subject"] = json!({"reference": "Patient/elsewhere"});
    let r = call(client().post(&url).bearer_auth(&t).json(&orphan)).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text.contains("Patient/elsewhere, which was not found"),
        "{}",
        r.text
    );
    // An unknown subscription, and agent credentials: refused.
    let r = call(
        client()
            .post(format!("{}outpost/notify/nope", relay.base_url()))
            .bearer_auth(&t)
            .json(&orphan),
    )
    .await;
    assert_eq!(r.status, 404);
    let at = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    assert_eq!(
        call(client().post(&url).bearer_auth(&at).json(&orphan))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn queued_orders_survive_a_relay_restart() {
    let dir = std::env::temp_dir().join(format!("outpost-orders-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = || RelayConfig {
        data_dir: Some(dir.clone()),
        order_attempts: 1000,
        order_backoff: Duration::from_millis(100),
        ..RelayConfig::default()
    };
    let relay = start_with(cfg()).await;
    relay
        .registry()
        .put(
            json!({"resourceType": "Patient", "id": "pat-1", "identifier": [{"value": "MRN-1"}],
        "name": [{"family": "Doe"}]}),
        )
        .await
        .unwrap();
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    put(&relay, &t, &subscription("ServiceRequest", "hl7-orm")).await;
    put(&relay, &t, &service_request("sr-kept", "active")).await;
    // Queued before the PUT is answered; the first attempt (no agent) puts it back to pending.
    test_support::wait_until(
        "the first attempt is recorded",
        Duration::from_secs(5),
        || async { (relay.registry().delivery_count("pending").await.unwrap() == 1).then_some(()) },
    )
    .await;
    assert_eq!(relay.registry().delivery_count("pending").await.unwrap(), 1);
    relay.shutdown().await;

    let relay = start_with(cfg()).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let req = answer(
        &mut agent,
        200,
        "MSH|^~\\&|L|L|||20240101||ACK|A5|P|2.5\rMSA|AA|X\r",
    )
    .await;
    assert!(req.body.contains("|ORM^O01^ORM_O01|"));
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    assert_eq!(audits(&relay, &t, "sr-kept", 1).await[0]["outcome"], "0");
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
