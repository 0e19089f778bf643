//! `$upgrade` on the relay, with a scripted agent: the version resolved to a registered
//! release (a DocumentReference) or given as `binary` + `sha256`, the answer awaited across the
//! agent's reconnection (its new version answers on a new session), and the refusals the relay
//! makes before asking the agent.

use agent_protocol::{AgentMessage, StatusResponse, UpgradeRequest};
use serde_json::json;
use test_support::relay::*;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

async fn register(relay: &relay::Relay, t: &str, id: &str, version: &str, binary: &str) {
    let doc = json!({"resourceType": "DocumentReference", "id": id, "status": "current",
        "identifier": [{"system": relay::RELEASE_SYSTEM, "value": version}],
        "content": [{"attachment": {"url": format!("Binary/{binary}"),
            "extension": [{"url": relay::SHA256_EXTENSION, "valueString": SHA}]}}]});
    let r = call(
        client()
            .put(format!(
                "{}fhir/R4/DocumentReference/{id}",
                relay.base_url()
            ))
            .bearer_auth(t)
            .header("content-type", "application/fhir+json")
            .body(doc.to_string()),
    )
    .await;
    assert!(r.status < 300, "{}", r.text);
}

/// The scripted agent takes the request, disconnects as an upgrading agent does, and answers
/// from a new connection.
async fn upgrade_on_a_new_session(
    mut agent: ScriptedAgent,
    relay: &relay::Relay,
) -> UpgradeRequest {
    let AgentMessage::UpgradeRequest(r) = agent.recv_kind("agent:upgrade:request").await else {
        unreachable!()
    };
    drop(agent);
    let mut next = ScriptedAgent::connect(relay).await;
    next.send(&AgentMessage::UpgradeResponse(StatusResponse {
        status_code: 200,
        callback: r.callback.clone(),
    }))
    .await;
    r
}

#[tokio::test]
async fn a_registered_release_is_named_to_the_agent_and_its_new_session_answers() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    register(&relay, &t, "r1", "0.2.0", "bin-020").await;
    register(&relay, &t, "r2", "0.10.0", "bin-0100").await;
    let agent = ScriptedAgent::connect(&relay).await;

    let url = format!(
        "{}fhir/R4/Agent/{AGENT}/$upgrade?version=0.2.0",
        relay.base_url()
    );
    let (resp, r) = tokio::join!(
        call(client().get(url).bearer_auth(&t)),
        upgrade_on_a_new_session(agent, &relay)
    );
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(oo_text(&resp.json), "All OK");
    assert_eq!(r.version.as_deref(), Some("0.2.0"));
    assert_eq!(r.binary.as_deref(), Some("bin-020"));
    assert_eq!(r.sha256.as_deref(), Some(SHA));

    // Without a version: the highest registered (0.10.0 > 0.2.0), in the bulk form.
    let agent = ScriptedAgent::connect(&relay).await;
    let url = format!("{}fhir/R4/Agent/$upgrade?_id={AGENT}", relay.base_url());
    let (resp, r) = tokio::join!(
        call(client().get(url).bearer_auth(&t)),
        upgrade_on_a_new_session(agent, &relay)
    );
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["resourceType"], "Bundle", "{}", resp.text);
    assert!(resp.text.contains("All OK"), "{}", resp.text);
    assert_eq!(r.version.as_deref(), Some("0.10.0"));
    assert_eq!(r.binary.as_deref(), Some("bin-0100"));
}

#[tokio::test]
async fn binary_and_sha256_given_and_the_agents_refusal() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let url = format!(
        "{}fhir/R4/Agent/{AGENT}/$upgrade?version=1.0.0&binary=b1&sha256={}&force=true",
        relay.base_url(),
        SHA.to_ascii_uppercase()
    );
    let answer = async {
        let AgentMessage::UpgradeRequest(r) = agent.recv_kind("agent:upgrade:request").await else {
            unreachable!()
        };
        assert_eq!(r.binary.as_deref(), Some("b1"));
        assert_eq!(r.sha256.as_deref(), Some(SHA), "lower-cased");
        assert_eq!(r.force, Some(true));
        agent
            .send(&AgentMessage::error(
                "sha256 mismatch for Binary/b1: nothing was replaced",
                r.callback,
            ))
            .await;
    };
    let (resp, ()) = tokio::join!(call(client().get(url).bearer_auth(&t)), answer);
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert!(
        oo_text(&resp.json).contains("sha256 mismatch"),
        "{}",
        resp.text
    );
}

#[tokio::test]
async fn what_names_no_executable_is_refused_before_the_agent_is_asked() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let _agent = ScriptedAgent::connect(&relay).await;
    let base = format!("{}fhir/R4/Agent/{AGENT}/$upgrade", relay.base_url());
    for (query, text) in [
        (
            "?version=9.9.9",
            "no agent release registered for version 9.9.9",
        ),
        ("", "no agent release registered for version latest"),
        (
            "?version=1.0.0&binary=b1",
            "'sha256' (64 hex digits) is required",
        ),
        (
            "?version=1.0.0&binary=b1&sha256=abc",
            "'sha256' (64 hex digits) is required",
        ),
        (
            &format!("?binary=b1&sha256={SHA}"),
            "'version' is required with 'binary'",
        ),
        (
            &format!("?version=1&binary=..%2Fx&sha256={SHA}"),
            "'binary' must be a Binary's id",
        ),
    ] {
        let r = call(client().get(format!("{base}{query}")).bearer_auth(&t)).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert!(oo_text(&r.json).contains(text), "{query}: {}", r.text);
    }
}

#[tokio::test]
async fn with_several_processes_the_answer_from_another_process_reaches_the_waiting_caller() {
    let pg = tokio::task::spawn_blocking(test_support::services::Postgres::start)
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(test_support::services::Redis::start)
        .await
        .unwrap();
    let config = || relay::RelayConfig {
        database_url: Some(pg.url()),
        redis_url: Some(redis.url()),
        heartbeat_interval: std::time::Duration::from_millis(200),
        ..relay::RelayConfig::default()
    };
    let a = start_with(config()).await;
    let b = start_with(config()).await;
    let mut agent = ScriptedAgent::connect(&a).await;
    // The caller asks process b; the agent is connected to a, and its new version comes back
    // to a: the answer goes from a to b through Redis.
    let t = token(&b, CALLER, CALLER_SECRET).await;
    let url = format!(
        "{}fhir/R4/Agent/{AGENT}/$upgrade?version=1.0.0&binary=b1&sha256={SHA}",
        b.base_url()
    );
    let answer = async {
        let AgentMessage::UpgradeRequest(r) = agent.recv_kind("agent:upgrade:request").await else {
            unreachable!()
        };
        drop(agent);
        let mut next = ScriptedAgent::connect(&a).await;
        next.send(&AgentMessage::UpgradeResponse(StatusResponse {
            status_code: 200,
            callback: r.callback,
        }))
        .await;
        next
    };
    let (resp, _next) = tokio::join!(call(client().get(url).bearer_auth(&t)), answer);
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(oo_text(&resp.json), "All OK");
}

#[tokio::test]
async fn one_current_release_per_version() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    register(&relay, &t, "rel-a", "2.0.0", "b1").await;
    // The same document again (an update) is fine; another for the same version is not.
    register(&relay, &t, "rel-a", "2.0.0", "b2").await;
    let doc = json!({"resourceType": "DocumentReference", "id": "rel-b", "status": "current",
        "identifier": [{"system": relay::RELEASE_SYSTEM, "value": "2.0.0"}],
        "content": [{"attachment": {"url": "Binary/b3",
            "extension": [{"url": relay::SHA256_EXTENSION, "valueString": SHA}]}}]});
    let put = |doc: serde_json::Value| {
        call(
            client()
                .put(format!(
                    "{}fhir/R4/DocumentReference/{}",
                    relay.base_url(),
                    doc["id"].as_str().unwrap()
                ))
                .bearer_auth(&t)
                .header("content-type", "application/fhir+json")
                .body(doc.to_string()),
        )
    };
    let r = put(doc.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        oo_text(&r.json).contains("release 2.0.0 is already registered by DocumentReference/rel-a"),
        "{}",
        r.text
    );
    // Once the first is superseded, the second may take the version.
    let mut old = doc.clone();
    old["id"] = "rel-a".into();
    old["status"] = "superseded".into();
    assert_eq!(put(old).await.status, 200);
    assert_eq!(put(doc).await.status, 201);
}
