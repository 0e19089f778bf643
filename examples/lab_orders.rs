//! Lab orders, the whole flow in one process: a relay, an agent and an MLLP listener standing in
//! for the LIS, all on loopback. A Subscription says "push every active ServiceRequest to the
//! LIS as ORM^O01"; posting a ServiceRequest prints the ORM^O01 as the LIS receives it, then the
//! AuditEvent in which the relay recorded the LIS's acknowledgement.
//!
//! `cargo run -p outpost-examples --example lab_orders`

use std::time::Duration;

use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The LIS: prints what it receives and acknowledges it.
    let lis = mllp::Server::bind(
        "127.0.0.1:0",
        mllp::ServerOptions::default(),
        |req: mllp::Request| async move {
            let Ok(msg) = req.message() else { return };
            println!(
                "LIS received:\n  {}",
                String::from_utf8_lossy(msg.raw())
                    .trim_end()
                    .replace('\r', "\n  ")
            );
            for ack in mllp::acks_for(&msg, false) {
                let _ = req.reply(&ack).await;
            }
        },
    )
    .await?;

    let relay = relay::Relay::start(relay::RelayConfig {
        listen: "127.0.0.1:0".into(),
        ..relay::RelayConfig::default()
    })
    .await?;
    let base = relay.base_url();
    relay.registry().bootstrap(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "ehr", "secret": "ehr-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": "Agent/lab-agent"}}]}},
        {"resource": {"resourceType": "Agent", "id": "lab-agent", "name": "Lab agent", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": "lis", "url": format!("mllp://{}", lis.local_addr())}},
        {"resource": {"resourceType": "Patient", "id": "pat-1", "identifier": [{"value": "MRN-555"}],
            "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-02-03", "gender": "female"}},
        {"resource": {"resourceType": "Subscription", "id": "orders-to-lis", "status": "active",
            "reason": "lab orders to the LIS", "criteria": "ServiceRequest?status=active", "channel": {"type": "rest-hook"},
            "extension": [{"url": relay::ORDER_PUSH_EXTENSION, "extension": [
                {"url": "agent", "valueReference": {"reference": "Agent/lab-agent"}},
                {"url": "device", "valueReference": {"reference": "Device/lis"}},
                {"url": "format", "valueCode": "hl7-orm"}]}]}},
    ]})).await?;

    let data =
        std::env::temp_dir().join(format!("outpost-lab-orders-example-{}", std::process::id()));
    let agent = agent_core::Agent::start(
        agent_core::AgentConfig {
            base_url: base.clone(),
            client_id: "agent".into(),
            client_secret: "agent-secret-0123456".into(),
            agent_id: "lab-agent".into(),
            data_dir: data.clone(),
            ..agent_core::AgentConfig::default()
        },
        agent_core::LogBuffer::new(),
    )
    .await?;
    if !agent.wait_live(Duration::from_secs(10)).await {
        return Err("the agent did not connect".into());
    }

    // The EHR posts an order.
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ehr"),
            ("client_secret", "ehr-secret-0123456"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let order = json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order", "priority": "stat",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
        "subject": {"reference": "Patient/pat-1"}, "note": [{"text": "Fasting since midnight"}]});
    let created: Value = http
        .post(format!("{base}fhir/R4/ServiceRequest"))
        .bearer_auth(&token)
        .json(&order)
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    println!("EHR created ServiceRequest/{id}");

    // The relay records the outcome as an AuditEvent.
    for _ in 0..100 {
        let found: Value = http
            .get(format!(
                "{base}fhir/R4/AuditEvent?entity=ServiceRequest/{id}"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if let Some(audit) = found["entry"][0]["resource"].as_object() {
            println!(
                "Relay recorded AuditEvent/{}: outcome {} ({})",
                audit["id"].as_str().unwrap_or(""),
                audit["outcome"].as_str().unwrap_or(""),
                audit["outcomeDesc"].as_str().unwrap_or("")
            );
            let ack = audit["entity"][0]["detail"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["type"] == "response")
                .and_then(|d| d["valueString"].as_str())
                .unwrap_or("");
            println!(
                "  acknowledgement:\n  {}",
                ack.trim_end().replace('\r', "\n  ")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.shutdown().await;
    relay.shutdown().await;
    lis.shutdown(Duration::from_millis(100)).await;
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}
