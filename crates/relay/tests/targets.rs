//! Where inbound messages go, per channel, as Medplum configures it:
//! `Agent.channel[].targetReference`. A rest-hook Endpoint receives its channel's messages and
//! its reply is the device's answer; channels without a target use `--inbound-webhook`; a
//! target Outpost cannot run (a Bot) is reported in `$status` and in the answer, never
//! acknowledged; with nothing configured, the AA says so.

use agent_protocol::{AgentMessage, TransmitRequest};
use relay::RelayConfig;
use serde_json::{Value, json};
use test_support::relay::*;

const ORU: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|MSG-77|P|2.5\rPID|1||42";

fn inbound(channel: &str, callback: &str, token: &str) -> AgentMessage {
    AgentMessage::TransmitRequest(TransmitRequest {
        access_token: Some(token.into()),
        channel: Some(channel.into()),
        remote: "10.0.0.9:51234".into(),
        content_type: "x-application/hl7-v2+er7".into(),
        body: ORU.into(),
        callback: Some(callback.into()),
        return_ack: None,
        deadline_ms: None,
    })
}

/// What a hook saw: (agent header, channel header, body).
type Seen = tokio::sync::mpsc::Receiver<(String, String, String)>;

/// An HTTP receiver on loopback answering `status` with an AA whose MSA-3 is `name`.
async fn hook(status: u16, name: &'static str) -> (String, Seen) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let _ = tx
                    .send((h("x-outpost-agent"), h("x-outpost-channel"), body))
                    .await;
                let reply = format!(
                    "MSH|^~\\&|EHR|HOSP|LAB|HOSP|20240101||ACK^R01|9|P|2.5\rMSA|AA|MSG-77|{name}"
                );
                (axum::http::StatusCode::from_u16(status).unwrap(), reply)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

async fn answer(agent: &mut ScriptedAgent, msg: &AgentMessage) -> (u16, String) {
    agent.send(msg).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    (r.status_code.unwrap_or(200), r.body)
}

fn endpoint(id: &str, code: &str, address: &str) -> Value {
    json!({"resourceType": "Endpoint", "id": id, "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": code},
        "address": address})
}

#[tokio::test]
async fn each_channel_goes_to_its_target_and_a_bot_target_is_reported_not_acknowledged() {
    let (default_url, mut default_seen) = hook(200, "from the default webhook").await;
    let (target_url, mut target_seen) = hook(200, "from the target").await;
    let (down_url, _down_seen) = hook(503, "down").await;
    let relay = start_with(RelayConfig {
        inbound_webhook: Some(default_url),
        ..RelayConfig::default()
    })
    .await;
    let reg = relay.registry();
    reg.put(endpoint("target", "rest-hook", &target_url))
        .await
        .unwrap();
    reg.put(endpoint("down", "rest-hook", &down_url))
        .await
        .unwrap();
    reg.put(endpoint("mllp-out", "hl7v2-mllp", "mllp://10.0.0.1:2575"))
        .await
        .unwrap();
    reg.put(json!({"resourceType": "Agent", "id": AGENT, "name": "Lab agent", "status": "active",
        "channel": [
            {"name": "adt-in", "endpoint": {"reference": "Endpoint/e1"}, "targetReference": {"reference": "Endpoint/target"}},
            {"name": "plain", "endpoint": {"reference": "Endpoint/e1"}},
            {"name": "bot", "endpoint": {"reference": "Endpoint/e1"}, "targetReference": {"reference": "Bot/123"}},
            {"name": "other", "endpoint": {"reference": "Endpoint/e1"}, "targetReference": {"reference": "Endpoint/mllp-out"}},
            {"name": "down", "endpoint": {"reference": "Endpoint/e1"}, "targetReference": {"reference": "Endpoint/down"}},
        ]}))
        .await
        .unwrap();
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;

    // The target's reply is the answer; the target saw the channel and agent headers.
    let (status, body) = answer(&mut agent, &inbound("adt-in", "Agent/x-t1", &t)).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("MSA|AA|MSG-77|from the target"), "{body}");
    assert_eq!(
        target_seen.recv().await.unwrap(),
        (AGENT.to_owned(), "adt-in".to_owned(), ORU.to_owned())
    );
    // A channel without a target uses the --inbound-webhook.
    let (_, body) = answer(&mut agent, &inbound("plain", "Agent/x-t2", &t)).await;
    assert!(body.ends_with("from the default webhook"), "{body}");
    assert_eq!(default_seen.recv().await.unwrap().1, "plain");

    // A Bot target: the message is stored, the device is told AE with the reason.
    let (status, body) = answer(&mut agent, &inbound("bot", "Agent/x-t3", &t)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\rMSA|AE|MSG-77|channel bot: target Bot/123 cannot run on Outpost"),
        "{body}"
    );
    let (_, body) = answer(&mut agent, &inbound("other", "Agent/x-t4", &t)).await;
    assert!(
        body.contains("MSA|AE|") && body.contains("hl7v2-mllp"),
        "{body}"
    );
    assert!(default_seen.try_recv().is_err(), "not sent to the default");

    // A target that is down is a 503 for the agent (it keeps the message), not an answer.
    let (status, body) = answer(&mut agent, &inbound("down", "Agent/x-t5", &t)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.ends_with("; retry"), "{body}");

    // $status names the channels whose target cannot run.
    let ct = token(&relay, CALLER, CALLER_SECRET).await;
    let status = call(
        client()
            .get(format!("{}fhir/R4/Agent/{AGENT}/$status", relay.base_url()))
            .bearer_auth(ct),
    )
    .await;
    let problems: Vec<&str> = status.json["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "channelProblem")
        .map(|p| p["valueString"].as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("channel bot: target Bot/123"));
    assert!(problems[1].starts_with("channel other: target Endpoint/mllp-out"));
}

#[tokio::test]
async fn without_target_or_webhook_the_aa_says_no_application_is_configured() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let (status, body) = answer(&mut agent, &inbound("adt-in", "Agent/x-n1", &t)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\rMSA|AA|MSG-77|stored by the relay, no application configured"),
        "{body}"
    );
}
