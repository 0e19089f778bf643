//! `GET /metrics` after real traffic: a scripted agent connected, pushes answered, sent,
//! timed out and refused, an inbound message stored. The exposition parses as Prometheus text
//! and every name follows its conventions.

use std::collections::HashMap;

use agent_protocol::{AgentMessage, TransmitRequest, TransmitResponse};
use serde_json::json;
use test_support::relay::*;

const ADT: &str = "MSH|^~\\&|EHR|H|LIS|L|20240101120000||ADT^A08|M-1|P|2.5\rPID|1||42";

/// `name{labels} value` lines → value, by the part before the value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_pushes_inbound_messages_and_agents() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let push = |wait: bool, timeout_ms: u64, device: &str| {
        let body = json!({"destination": format!("Device/{device}"), "contentType": "x-application/hl7-v2+er7",
            "body": ADT, "waitForResponse": wait, "waitTimeout": timeout_ms});
        call(
            client()
                .post(format!("{}fhir/R4/Agent/{AGENT}/$push", relay.base_url()))
                .bearer_auth(&t)
                .header("content-type", "application/fhir+json")
                .body(body.to_string()),
        )
    };
    // Answered: the scripted agent answers the one push that waits.
    let answer = async {
        let AgentMessage::TransmitRequest(req) = agent.recv_kind("agent:transmit:request").await
        else {
            unreachable!()
        };
        agent
            .send(&AgentMessage::TransmitResponse(TransmitResponse {
                channel: None,
                remote: req.remote.clone(),
                callback: req.callback.clone(),
                content_type: "x-application/hl7-v2+er7".into(),
                status_code: Some(200),
                status: None,
                body: "MSH|^~\\&|LIS|L|EHR|H|20240101120001||ACK|A-1|P|2.5\rMSA|AA|M-1".into(),
                device_us: None,
            }))
            .await;
    };
    let (answered, ()) = tokio::join!(push(true, 10_000, DEVICE), answer);
    assert_eq!(answered.status, 200, "{}", answered.text);
    // Sent without waiting; timed out (nobody answers); refused (no such device).
    assert_eq!(push(false, 10_000, DEVICE).await.status, 200);
    let _ = agent.recv_kind("agent:transmit:request").await;
    assert_eq!(push(true, 200, DEVICE).await.status, 400);
    let _ = agent.recv_kind("agent:transmit:request").await;
    assert_eq!(push(true, 10_000, "nope").await.status, 400);
    // An inbound message, stored.
    let at = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    agent
        .send(&AgentMessage::TransmitRequest(TransmitRequest {
            access_token: Some(at),
            channel: Some("adt-in".into()),
            remote: "10.0.0.9:5000".into(),
            content_type: "x-application/hl7-v2+er7".into(),
            body: "MSH|^~\\&|LAB|H|EHR|H|20240101120000||ORU^R01|IN-1|P|2.5\rPID|1||42".into(),
            callback: Some("Agent/m-1".into()),
            return_ack: None,
            deadline_ms: None,
        }))
        .await;
    let _ = agent.recv_kind("agent:transmit:response").await;

    let scrape = call(client().get(format!("{}metrics", relay.base_url()))).await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        scrape.content_type
    );
    let s = samples(&scrape.text);
    let get = |k: &str| {
        s.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{}", scrape.text))
    };
    assert_eq!(get("outpost_agents_connected"), 1.0);
    for (outcome, n) in [
        ("answered", 1.0),
        ("sent", 1.0),
        ("timeout", 1.0),
        ("rejected", 1.0),
    ] {
        assert_eq!(
            get(&format!("outpost_pushes_total{{outcome=\"{outcome}\"}}")),
            n,
            "{outcome}"
        );
        assert_eq!(
            get(&format!(
                "outpost_push_duration_seconds_count{{outcome=\"{outcome}\"}}"
            )),
            n,
            "{outcome}"
        );
    }
    let timed_out = get("outpost_push_duration_seconds_sum{outcome=\"timeout\"}");
    assert!(
        (0.2..5.0).contains(&timed_out),
        "the timeout took {timed_out} s"
    );
    assert_eq!(
        get("outpost_inbound_messages_total{outcome=\"stored\"}"),
        1.0
    );
    assert!(get("outpost_websocket_messages_total{direction=\"in\"}") >= 3.0);
    assert!(get("outpost_websocket_messages_total{direction=\"out\"}") >= 4.0);
    // Prometheus conventions: counters end in _total, durations are in seconds, one prefix.
    for line in scrape.text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(name.starts_with("outpost_"), "{line}");
        if name.contains("duration") {
            assert!(name.ends_with("_seconds") && kind == "histogram", "{line}");
        }
    }
}
