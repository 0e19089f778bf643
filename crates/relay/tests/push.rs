//! `$push` end to end through the relay to a scripted agent, and every failure row of the
//! Medplum contract (§3.1).

use std::time::Duration;

use agent_protocol::{AgentMessage, TransmitResponse};
use serde_json::{Value, json};
use test_support::relay::*;

const ADT: &str = "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305.516||ADT^A01|1698105185516|P|2.5|\nPID|1|12345";

async fn push(relay: &relay::Relay, path: impl std::fmt::Display, body: Value) -> Resp {
    let t = token(relay, CALLER, CALLER_SECRET).await;
    call(
        client()
            .post(format!("{}fhir/R4/{path}", relay.base_url()))
            .bearer_auth(t)
            .header("content-type", "application/fhir+json")
            .body(body.to_string()),
    )
    .await
}

fn body(wait: bool) -> Value {
    json!({"destination": format!("Device/{DEVICE}"), "contentType": "x-application/hl7-v2+er7", "body": ADT, "waitForResponse": wait})
}

/// Answers the next transmit request like a device that ACKs.
async fn answer_next(
    agent: &mut ScriptedAgent,
    status: u16,
    content_type: &str,
    answer: &str,
) -> agent_protocol::TransmitRequest {
    let AgentMessage::TransmitRequest(req) = agent.recv_kind("agent:transmit:request").await else {
        unreachable!()
    };
    agent
        .send(&AgentMessage::TransmitResponse(TransmitResponse {
            channel: None,
            remote: req.remote.clone(),
            callback: req.callback.clone(),
            content_type: content_type.into(),
            status_code: Some(status),
            status: None,
            body: answer.into(),
            device_us: None,
        }))
        .await;
    req
}

#[tokio::test]
async fn push_with_wait_returns_the_device_answer_raw() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let ack = "MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|20231023235305.600||ACK^A01|1|P|2.5\rMSA|AA|1698105185516|OK";
    let (resp, req) = tokio::join!(
        push(&relay, format!("Agent/{AGENT}/$push"), body(true)),
        answer_next(&mut agent, 200, "x-application/hl7-v2+er7", ack)
    );
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.text, ack);
    assert!(
        resp.content_type.starts_with("x-application/hl7-v2+er7"),
        "{}",
        resp.content_type
    );
    // what the agent received: Medplum's push message
    assert_eq!(req.remote, "mllp://127.0.0.1:56000");
    assert_eq!(req.content_type, "x-application/hl7-v2+er7");
    assert_eq!(req.body, ADT);
    assert!(
        req.callback
            .as_deref()
            .unwrap()
            .starts_with(&format!("Agent/{AGENT}-"))
    );
    assert!(req.access_token.is_none() && req.channel.is_none());
}

#[tokio::test]
async fn push_route_variants() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    for path in [
        format!("Agent/{AGENT}/%24push"),
        "Agent/$push?identifier=lab-1".into(),
        "Agent/$push?identifier=urn:outpost|lab-1".into(),
    ] {
        let mut b = body(true);
        b["destination"] = json!("Device?identifier=adt-1");
        let (resp, _) = tokio::join!(
            push(&relay, &path, b),
            answer_next(&mut agent, 200, "text/plain", "done")
        );
        assert_eq!((resp.status, resp.text.as_str()), (200, "done"), "{path}");
    }
    // FHIR Parameters input, including a valueBoolean that Medplum would drop
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "destination", "valueString": format!("Device/{DEVICE}")},
        {"name": "contentType", "valueString": "x-application/hl7-v2+er7"},
        {"name": "body", "valueString": ADT},
        {"name": "waitForResponse", "valueBoolean": true},
    ]});
    let (resp, _) = tokio::join!(
        push(&relay, format!("Agent/{AGENT}/$push"), params),
        answer_next(&mut agent, 200, "text/plain", "p")
    );
    assert_eq!(resp.text, "p");
}

#[tokio::test]
async fn push_without_wait_is_all_ok_only_when_delivered_to_the_agent() {
    let relay = start().await;
    // no agent connected: Medplum says "All OK" and loses the message; we say why not
    let resp = push(&relay, format!("Agent/{AGENT}/$push"), body(false)).await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        oo_text(&resp.json),
        format!("Agent/{AGENT} is not connected: the message was not delivered")
    );
    let mut agent = ScriptedAgent::connect(&relay).await;
    let resp = push(&relay, format!("Agent/{AGENT}/$push"), body(false)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text,
        agent_protocol::OperationOutcome::all_ok().to_json()
    );
    let AgentMessage::TransmitRequest(req) = agent.recv_kind("agent:transmit:request").await else {
        unreachable!()
    };
    assert!(
        req.callback.is_none(),
        "fire-and-forget pushes carry no callback"
    );
}

#[tokio::test]
async fn every_failure_row() {
    let relay = start().await;
    let p = format!("Agent/{AGENT}/$push");
    let cases: Vec<(String, Value, u16, String)> = vec![
        (
            p.clone(),
            json!({"contentType": "c", "destination": "d"}),
            400,
            "Missing body parameter".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "destination": "d"}),
            400,
            "Missing contentType parameter".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "contentType": "c"}),
            400,
            "Missing destination parameter".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "contentType": "c", "destination": "d", "waitTimeout": 60000}),
            400,
            "Invalid wait timeout".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "contentType": "c", "destination": "Device/nope"}),
            400,
            "Destination device not found".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "contentType": "c", "destination": "Device?identifier=nope"}),
            400,
            "Destination device not found".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "contentType": "c", "destination": "Endpoint/e1"}),
            400,
            "Destination device not found".into(),
        ),
        (
            p.clone(),
            json!({"body": "b", "contentType": "c", "destination": "Device/no-url"}),
            400,
            "Destination device missing url".into(),
        ),
        (
            "Agent/unknown-agent/$push".into(),
            body(true),
            404,
            "Agent/unknown-agent not found".into(),
        ),
        (
            "Agent/agent-off/$push".into(),
            body(true),
            400,
            "Agent is currently disabled. Agent.status is 'off'".into(),
        ),
        (
            "Agent/$push".into(),
            body(true),
            400,
            "Must specify agent ID or identifier".into(),
        ),
        (
            p.clone(),
            body(true),
            400,
            format!("Agent/{AGENT} is not connected: the message was not delivered"),
        ),
    ];
    for (path, b, status, text) in cases {
        let r = push(&relay, &path, b.clone()).await;
        assert_eq!(r.status, status, "{path} {b}: {}", r.text);
        assert_eq!(oo_text(&r.json), text, "{path} {b}");
        assert_eq!(r.json["issue"][0]["severity"], "error");
    }
    let r = push(&relay, &p, json!("not an object")).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn timeout_is_a_400_that_says_so() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let mut b = body(true);
    b["waitTimeout"] = json!(300);
    let started = std::time::Instant::now();
    let (resp, _) = tokio::join!(
        push(&relay, format!("Agent/{AGENT}/$push"), b),
        agent.recv_kind("agent:transmit:request")
    );
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json["issue"][0]["code"], "timeout");
    assert_eq!(
        oo_text(&resp.json),
        format!("Timeout: no answer from Agent/{AGENT} within 300 ms")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        relay.waiting_requests(),
        0,
        "a timed-out request is forgotten"
    );
}

#[tokio::test]
async fn agent_errors_come_back_as_400_with_their_text() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let (resp, _) = tokio::join!(
        push(&relay, format!("Agent/{AGENT}/$push"), body(true)),
        answer_next(
            &mut agent,
            400,
            "text/plain",
            "connect ECONNREFUSED 127.0.0.1:56000"
        )
    );
    assert_eq!(resp.status, 400);
    assert_eq!(oo_text(&resp.json), "connect ECONNREFUSED 127.0.0.1:56000");

    let push_fut = push(&relay, format!("Agent/{AGENT}/$push"), body(true));
    let agent_fut = async {
        let AgentMessage::TransmitRequest(req) = agent.recv_kind("agent:transmit:request").await
        else {
            unreachable!()
        };
        agent
            .send(&AgentMessage::error(
                "Agent.status is currently set to off",
                req.callback,
            ))
            .await;
    };
    let (resp, ()) = tokio::join!(push_fut, agent_fut);
    assert_eq!(resp.status, 400);
    assert_eq!(oo_text(&resp.json), "Agent.status is currently set to off");
}

#[tokio::test]
async fn agent_dropping_mid_push_fails_the_push_at_once() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let started = std::time::Instant::now();
    let push_fut = push(&relay, format!("Agent/{AGENT}/$push"), body(true));
    let drop_fut = async {
        agent.recv_kind("agent:transmit:request").await;
        drop(agent);
    };
    let (resp, ()) = tokio::join!(push_fut, drop_fut);
    assert_eq!(resp.status, 400);
    assert_eq!(
        oo_text(&resp.json),
        format!("Agent/{AGENT} disconnected before answering")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the 10 s timeout"
    );
}

#[tokio::test]
async fn ping_to_a_host_needs_no_device() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let b = json!({"destination": "127.0.0.1", "contentType": "x-application/ping", "body": "PING 1", "waitForResponse": true});
    let (resp, req) = tokio::join!(
        push(&relay, format!("Agent/{AGENT}/$push"), b),
        answer_next(
            &mut agent,
            200,
            "x-application/ping",
            "1 packets transmitted"
        )
    );
    assert_eq!(resp.status, 200);
    assert_eq!(req.remote, "127.0.0.1");
}

/// The link's own expiry of a request and its caller's wait end at the same instant: whichever
/// comes first, the caller hears "timeout", never "disconnected" (the agent is still there).
#[tokio::test]
async fn a_timeout_is_never_reported_as_a_disconnection() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    for wait in [20, 35, 50, 65, 80, 95, 110, 125, 140, 155] {
        let mut b = body(true);
        b["waitTimeout"] = json!(wait);
        let (resp, _) = tokio::join!(
            push(&relay, format!("Agent/{AGENT}/$push"), b),
            agent.recv_kind("agent:transmit:request")
        );
        assert_eq!(resp.status, 400);
        assert_eq!(
            resp.json["issue"][0]["code"], "timeout",
            "waitTimeout {wait}: {}",
            resp.text
        );
        assert!(relay.is_connected(AGENT));
    }
}

/// Large pushes at once to an agent that is not reading yet: a push that does not fit beside
/// what is queued for its socket (one largest message + 64 KiB) is refused at once with "not
/// keeping up", the agent stays connected, and every push taken is delivered and answered once
/// the agent reads.
#[tokio::test]
async fn large_pushes_at_once_refuse_the_excess_and_keep_the_agent() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    // Five of 7 MiB: more than the bound and than loopback's socket buffers together.
    let big = "X".repeat(7 << 20);
    let refused = tokio::sync::Notify::new();
    let pushes = futures_util::future::join_all((0..5).map(|_| {
        let mut b = body(true);
        b["body"] = json!(big);
        let (relay, refused) = (&relay, &refused);
        async move {
            let resp = push(relay, format!("Agent/{AGENT}/$push"), b).await;
            if resp.status == 400 {
                refused.notify_one();
            }
            resp
        }
    }));
    let agent_side = async {
        refused.notified().await;
        // Refused, and still connected: the socket was not closed for it.
        let url = format!("{}fhir/R4/Agent/{AGENT}/$status", relay.base_url());
        let s = call(client().get(url).bearer_auth(&t)).await.json;
        assert_eq!(
            s["parameter"][0],
            json!({"name": "status", "valueCode": "connected"}),
            "{s}"
        );
        loop {
            let req = answer_next(&mut agent, 200, "text/plain", "taken").await;
            assert_eq!(req.body.len(), 7 << 20);
        }
    };
    let results = tokio::select! {
        r = pushes => r,
        () = agent_side => unreachable!(),
    };
    let (taken, refused): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.status == 200);
    assert!(!taken.is_empty() && !refused.is_empty(), "{results:?}");
    for r in &taken {
        assert_eq!(r.text, "taken");
    }
    for r in &refused {
        assert_eq!(
            oo_text(&r.json),
            format!(
                "Agent/{AGENT} is not keeping up (too much queued for it): the message was not delivered"
            )
        );
    }
    // The same socket carries the next push.
    let (resp, _) = tokio::join!(
        push(&relay, format!("Agent/{AGENT}/$push"), body(true)),
        answer_next(&mut agent, 200, "text/plain", "after")
    );
    assert_eq!((resp.status, resp.text.as_str()), (200, "after"));
}
