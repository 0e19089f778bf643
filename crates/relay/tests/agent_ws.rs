//! The agent WebSocket: connect checks, heartbeats, status, replacement, inbound messages.

use std::time::Duration;

use agent_protocol::{
    AgentMessage, ConnectRequest, HeartbeatRequest, HeartbeatResponse, TransmitRequest,
};
use relay::RelayConfig;
use serde_json::json;
use test_support::relay::*;

async fn connect_with(
    relay: &relay::Relay,
    token: Option<String>,
    agent: Option<&str>,
) -> ScriptedAgent {
    let mut a = ScriptedAgent::open(relay).await;
    a.send(&AgentMessage::ConnectRequest(ConnectRequest {
        access_token: token,
        agent_id: agent.map(str::to_owned),
        callback: None,
    }))
    .await;
    a
}

async fn refused(mut a: ScriptedAgent, text: &str) {
    let AgentMessage::Error(e) = a.recv_kind("agent:error").await else {
        unreachable!()
    };
    assert!(
        e.body.starts_with(text),
        "{} does not start with {text}",
        e.body
    );
    assert!(
        a.closed().await,
        "socket must be closed after a refused connect"
    );
}

#[tokio::test]
async fn connect_refusals_close_the_socket() {
    let relay = start().await;
    let good = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    refused(
        connect_with(&relay, None, Some(AGENT)).await,
        "Missing access token",
    )
    .await;
    refused(
        connect_with(&relay, Some(good.clone()), None).await,
        "Missing agent ID",
    )
    .await;
    refused(
        connect_with(&relay, Some("garbage".into()), Some(AGENT)).await,
        "Invalid access token",
    )
    .await;
    let expired = relay
        .tokens()
        .issue(AGENT_CLIENT, chrono::Utc::now().timestamp() - 7200);
    refused(
        connect_with(&relay, Some(expired), Some(AGENT)).await,
        "Invalid access token: token expired",
    )
    .await;
    refused(
        connect_with(&relay, Some(good.clone()), Some("nope")).await,
        "Agent/nope not found",
    )
    .await;
    // a valid token of a client that is not bound to this agent
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    refused(
        connect_with(&relay, Some(caller), Some(AGENT)).await,
        "ClientApplication/caller may not act as Agent/",
    )
    .await;
    // bound to AGENT, not to agent-off
    refused(
        connect_with(&relay, Some(good), Some("agent-off")).await,
        "ClientApplication/agent-client may not act as Agent/agent-off",
    )
    .await;
    assert_eq!(relay.connected_agents(), 0);
}

#[tokio::test]
async fn silent_socket_is_closed_after_the_connect_timeout() {
    let relay = start_with(RelayConfig {
        heartbeat_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    })
    .await;
    let mut a = ScriptedAgent::open(&relay).await;
    assert!(a.closed().await);
}

#[tokio::test]
async fn heartbeats_both_ways_and_status() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let status = |relay: &relay::Relay| {
        let t = t.clone();
        let url = format!("{}fhir/R4/Agent/{AGENT}/$status", relay.base_url());
        async move { call(client().get(url).bearer_auth(t)).await.json }
    };
    let s = status(&relay).await;
    assert_eq!(
        s["parameter"][0],
        json!({"name": "status", "valueCode": "unknown"})
    );
    let mut agent = ScriptedAgent::connect(&relay).await;
    // the relay sends heartbeat requests on its own, the first as it accepts the agent
    let frame = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut agent.ws),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(
        frame.to_text().unwrap(),
        r#"{"type":"agent:heartbeat:request"}"#
    );
    agent
        .send(&AgentMessage::HeartbeatResponse(HeartbeatResponse {
            version: "5.0.10-test".into(),
            callback: None,
        }))
        .await;
    // and answers ours with its version
    agent
        .send(&AgentMessage::HeartbeatRequest(HeartbeatRequest::default()))
        .await;
    let AgentMessage::HeartbeatResponse(r) = agent.recv_kind("agent:heartbeat:response").await
    else {
        unreachable!()
    };
    assert_eq!(r.version, relay::VERSION);
    let s = status(&relay).await;
    assert_eq!(s["resourceType"], "Parameters");
    assert_eq!(s["parameter"][0]["valueCode"], "connected");
    assert_eq!(
        s["parameter"][1],
        json!({"name": "version", "valueString": "5.0.10-test"})
    );
    assert!(
        s["parameter"][2]["valueInstant"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // bulk status, as `medplum agent status` asks it
    let bulk = call(
        client()
            .get(format!(
                "{}fhir/R4/Agent/$bulk-status?_id={AGENT},agent-off",
                relay.base_url()
            ))
            .bearer_auth(&t),
    )
    .await
    .json;
    assert_eq!(bulk["type"], "collection");
    let entries = bulk["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| {
            e["resource"]["parameter"][1]["resource"]["parameter"][0]["valueCode"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(
        statuses.contains(&"connected") && statuses.contains(&"unknown"),
        "{statuses:?}"
    );
    drop(agent);
    test_support::wait_until(
        "the relay sees the socket close",
        Duration::from_secs(5),
        || async {
            (status(&relay).await["parameter"][0]["valueCode"] != "connected").then_some(())
        },
    )
    .await;
    assert_eq!(
        status(&relay).await["parameter"][0]["valueCode"],
        "disconnected"
    );
    assert_eq!(
        status(&relay).await["parameter"][1]["valueString"],
        "5.0.10-test",
        "version is remembered"
    );
}

#[tokio::test]
async fn silent_agent_is_disconnected() {
    let relay = start_with(RelayConfig {
        heartbeat_interval: Duration::from_millis(100),
        agent_timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    })
    .await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    // never answers heartbeats
    assert!(agent.closed().await);
    assert!(!relay.is_connected(AGENT));
}

#[tokio::test]
async fn unknown_and_malformed_messages_get_agent_error_and_the_socket_stays() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    agent
        .send_raw(r#"{"type":"agent:teleport:request","callback":"Agent/x-1"}"#)
        .await;
    let AgentMessage::Error(e) = agent.recv_kind("agent:error").await else {
        unreachable!()
    };
    assert_eq!(
        (e.body.as_str(), e.callback.as_deref()),
        (
            "Unknown message type: agent:teleport:request",
            Some("Agent/x-1")
        )
    );
    agent.send_raw("this is not json").await;
    let AgentMessage::Error(e) = agent.recv_kind("agent:error").await else {
        unreachable!()
    };
    assert!(e.body.starts_with("invalid JSON"), "{}", e.body);
    // still live
    agent
        .send(&AgentMessage::HeartbeatRequest(HeartbeatRequest::default()))
        .await;
    agent.recv_kind("agent:heartbeat:response").await;
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let relay = start().await;
    let mut first = ScriptedAgent::connect(&relay).await;
    let _second = ScriptedAgent::connect(&relay).await;
    assert!(first.closed().await);
    assert!(relay.is_connected(AGENT));
}

fn inbound(callback: &str, token: &str, body: &str) -> AgentMessage {
    AgentMessage::TransmitRequest(TransmitRequest {
        access_token: Some(token.into()),
        channel: Some("adt-in".into()),
        remote: "10.0.0.9:51234".into(),
        content_type: "x-application/hl7-v2+er7".into(),
        body: body.into(),
        callback: Some(callback.into()),
        return_ack: None,
        deadline_ms: None,
    })
}

const ORU: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|MSG-77|P|2.5\rPID|1||42";

#[tokio::test]
async fn inbound_messages_are_stored_once_and_acknowledged() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    agent.send(&inbound("Agent/x-cb1", &t, ORU)).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    assert_eq!(
        (r.status_code, r.channel.as_deref(), r.callback.as_deref()),
        (Some(200), Some("adt-in"), Some("Agent/x-cb1"))
    );
    assert_eq!(r.remote, "10.0.0.9:51234");
    assert!(
        r.body.starts_with("MSH|^~\\&|EHR|HOSP|LAB|HOSP|"),
        "{}",
        r.body
    );
    assert!(r.body.contains("\rMSA|AA|MSG-77|"), "{}", r.body);
    // the same callback again (a redelivery after a lost answer): same answer, stored once
    agent.send(&inbound("Agent/x-cb1", &t, ORU)).await;
    let AgentMessage::TransmitResponse(again) = agent.recv_kind("agent:transmit:response").await
    else {
        unreachable!()
    };
    assert_eq!(again.body, r.body);
    let rows = relay
        .registry()
        .inbound(Some(AGENT), None, 0, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body, ORU);
    assert_eq!(rows[0].response.as_deref(), Some(r.body.as_str()));
    // and it is listed over HTTP
    let ct = token(&relay, CALLER, CALLER_SECRET).await;
    let list = call(
        client()
            .get(format!(
                "{}outpost/inbound?agent={AGENT}&channel=adt-in",
                relay.base_url()
            ))
            .bearer_auth(ct),
    )
    .await;
    assert_eq!(list.json[0]["callback"], "Agent/x-cb1");
}

#[tokio::test]
async fn inbound_checks_match_medplum() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let mut m = inbound("Agent/x-1", &t, ORU);
    let AgentMessage::TransmitRequest(req) = &mut m else {
        unreachable!()
    };
    req.channel = Some("no-such-channel".into());
    agent.send(&m).await;
    let AgentMessage::Error(e) = agent.recv_kind("agent:error").await else {
        unreachable!()
    };
    assert_eq!(
        (e.body.as_str(), e.callback.as_deref()),
        ("Channel not found", Some("Agent/x-1"))
    );
    agent.send(&inbound("Agent/x-2", "bad-token", ORU)).await;
    let AgentMessage::Error(e) = agent.recv_kind("agent:error").await else {
        unreachable!()
    };
    assert_eq!(e.body, "Invalid access token");
    agent.send(&inbound("Agent/x-3", &t, "")).await;
    let AgentMessage::Error(e) = agent.recv_kind("agent:error").await else {
        unreachable!()
    };
    assert_eq!(e.body, "Missing body");
    agent.send(&inbound("Agent/x-4", &t, "not hl7")).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    assert_eq!(r.status_code, Some(400));
    assert!(r.body.starts_with("invalid HL7 message"), "{}", r.body);
}

/// A webhook receiver on loopback that answers with `reply` (HTTP `status`).
async fn webhook(
    status: u16,
    reply: &'static str,
) -> (String, tokio::sync::mpsc::Receiver<(String, String)>) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let channel = headers
                    .get("x-outpost-channel")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                tx.send((channel, body)).await.unwrap();
                (axum::http::StatusCode::from_u16(status).unwrap(), reply)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn webhook_reply_is_the_answer() {
    let reply =
        "MSH|^~\\&|EHR|HOSP|LAB|HOSP|20240101||ACK^R01|9|P|2.5\rMSA|AE|MSG-77|Unknown patient";
    let (url, mut seen) = webhook(200, reply).await;
    let relay = start_with(RelayConfig {
        inbound_webhook: Some(url),
        ..RelayConfig::default()
    })
    .await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    agent.send(&inbound("Agent/x-w1", &t, ORU)).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    assert_eq!(r.body, reply);
    assert_eq!(
        seen.recv().await.unwrap(),
        ("adt-in".to_owned(), ORU.to_owned())
    );
}

/// The agent-link contract (a temporary failure is never a final answer): a webhook that is
/// down is a retryable 503 for the agent, not recorded; a webhook that refuses the message
/// (4xx) gives the device an AE.
#[tokio::test]
async fn failing_webhook_is_a_503_for_the_agent_and_a_refusing_one_an_ae() {
    let (url, _seen) = webhook(503, "down").await;
    let relay = start_with(RelayConfig {
        inbound_webhook: Some(url),
        ..RelayConfig::default()
    })
    .await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    agent.send(&inbound("Agent/x-w2", &t, ORU)).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    assert_eq!(r.status_code, Some(503), "{}", r.body);
    assert_eq!(r.content_type, "text/plain");
    assert!(
        r.body.contains("webhook answered HTTP 503") && r.body.ends_with("; retry"),
        "{}",
        r.body
    );
    let rows = relay
        .registry()
        .inbound(Some(AGENT), None, 0, 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "stored once");
    assert_eq!(
        rows[0].status_code, None,
        "a 503 is not recorded as the answer"
    );

    let (url, _seen) = webhook(422, "no").await;
    let relay = start_with(RelayConfig {
        inbound_webhook: Some(url),
        ..RelayConfig::default()
    })
    .await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    agent.send(&inbound("Agent/x-w3", &t, ORU)).await;
    let AgentMessage::TransmitResponse(r) = agent.recv_kind("agent:transmit:response").await else {
        unreachable!()
    };
    assert!(
        r.body
            .contains("\rMSA|AE|MSG-77|upstream error: webhook answered HTTP 422"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn reload_config_and_fetch_logs_reach_the_agent() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let url = format!("{}fhir/R4/Agent/{AGENT}/$reload-config", relay.base_url());
    let answer = async {
        let AgentMessage::ReloadConfigRequest(r) =
            agent.recv_kind("agent:reloadconfig:request").await
        else {
            unreachable!()
        };
        agent
            .send(&AgentMessage::ReloadConfigResponse(
                agent_protocol::StatusResponse {
                    status_code: 200,
                    callback: r.callback,
                },
            ))
            .await;
    };
    let (resp, ()) = tokio::join!(call(client().get(url).bearer_auth(&t)), answer);
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(oo_text(&resp.json), "All OK");
    let url = format!(
        "{}fhir/R4/Agent/{AGENT}/$fetch-logs?limit=1",
        relay.base_url()
    );
    let answer = async {
        let AgentMessage::LogsRequest(r) = agent.recv_kind("agent:logs:request").await else {
            unreachable!()
        };
        assert_eq!(r.limit, Some(1));
        agent
            .send(&AgentMessage::LogsResponse(agent_protocol::LogsResponse {
                status_code: 200,
                logs: vec![agent_protocol::LogMessage {
                    level: "INFO".into(),
                    msg: "hello".into(),
                    timestamp: "2024-01-01T00:00:00Z".into(),
                    extra: Default::default(),
                }],
                callback: r.callback,
            }))
            .await;
    };
    let (resp, ()) = tokio::join!(call(client().get(url).bearer_auth(&t)), answer);
    assert_eq!(resp.json["parameter"][0]["name"], "logs");
    assert!(
        resp.json["parameter"][0]["valueString"]
            .as_str()
            .unwrap()
            .contains("\"msg\":\"hello\"")
    );
}

#[tokio::test]
async fn stats_carries_the_agents_answer_and_fetch_logs_takes_limit_from_a_post_body() {
    let relay = start().await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let stats = json!({"hl7ConnectionsOpen": 1, "hl7QueueDepth": 0, "live": true,
        "channelStats": {"in": {"rtt": {"count": 1, "min": 3.0, "max": 3.0, "average": 3.0,
            "p50": 3.0, "p95": 3.0, "p99": 3.0, "pendingCount": 0}}},
        "clientStats": {}});
    let url = format!("{}fhir/R4/Agent/{AGENT}/$stats", relay.base_url());
    let answer = async {
        let AgentMessage::StatsRequest(r) = agent.recv_kind("agent:stats:request").await else {
            unreachable!()
        };
        agent
            .send(&AgentMessage::StatsResponse(
                agent_protocol::StatsResponse {
                    status_code: 200,
                    stats: stats.clone(),
                    callback: r.callback,
                },
            ))
            .await;
    };
    let (resp, ()) = tokio::join!(call(client().get(url).bearer_auth(&t)), answer);
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["resourceType"], "Parameters");
    assert_eq!(resp.json["parameter"][0]["name"], "stats");
    let got: serde_json::Value =
        serde_json::from_str(resp.json["parameter"][0]["valueString"].as_str().unwrap()).unwrap();
    assert_eq!(got, stats);

    // Bulk: every Agent the search selects, one Bundle entry each; the one not connected
    // gets an OperationOutcome.
    let url = format!(
        "{}fhir/R4/Agent/$stats?_id={AGENT},{AGENT2}",
        relay.base_url()
    );
    let answer = async {
        let AgentMessage::StatsRequest(r) = agent.recv_kind("agent:stats:request").await else {
            unreachable!()
        };
        agent
            .send(&AgentMessage::StatsResponse(
                agent_protocol::StatsResponse {
                    status_code: 200,
                    stats: stats.clone(),
                    callback: r.callback,
                },
            ))
            .await;
    };
    let (resp, ()) = tokio::join!(call(client().get(url).bearer_auth(&t)), answer);
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["type"], "collection");
    let entries = resp.json["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{}", resp.text);
    let result_of = |id: &str| {
        entries
            .iter()
            .find(|e| e["resource"]["parameter"][0]["resource"]["id"] == id)
            .map(|e| e["resource"]["parameter"][1]["resource"].clone())
            .unwrap()
    };
    assert_eq!(result_of(AGENT)["resourceType"], "Parameters");
    assert_eq!(result_of(AGENT2)["resourceType"], "OperationOutcome");

    // $fetch-logs: `limit` in a POST body's Parameters, as Medplum's operation reads it.
    let url = format!("{}fhir/R4/Agent/{AGENT}/$fetch-logs", relay.base_url());
    let answer = async {
        let AgentMessage::LogsRequest(r) = agent.recv_kind("agent:logs:request").await else {
            unreachable!()
        };
        assert_eq!(r.limit, Some(7));
        agent
            .send(&AgentMessage::LogsResponse(agent_protocol::LogsResponse {
                status_code: 200,
                logs: Vec::new(),
                callback: r.callback,
            }))
            .await;
    };
    let body =
        json!({"resourceType": "Parameters", "parameter": [{"name": "limit", "valueInteger": 7}]});
    let (resp, ()) = tokio::join!(
        call(client().post(&url).bearer_auth(&t).json(&body)),
        answer
    );
    assert_eq!(resp.status, 200, "{}", resp.text);
    // A limit that is not a count is the caller's mistake, not sent to the agent.
    let resp = call(client().get(format!("{url}?limit=-1")).bearer_auth(&t)).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert!(oo_text(&resp.json).contains("limit"), "{}", resp.text);
}
