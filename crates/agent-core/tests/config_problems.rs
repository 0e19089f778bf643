//! A configuration problem never keeps the agent off the relay: with a channel whose Endpoint
//! does not exist and two channels on one port, `$reload-config` is refused, and after a
//! restart the agent connects all the same, runs the channels that can run, forwards device
//! messages, and shows each problem in its `$stats`.

mod common;

use std::time::Duration;

use agent_core::{Agent, LogBuffer};
use common::*;
use mllp::{ClientOptions, Connection};
use serde_json::{Value, json};

/// `GET Agent/{AGENT}/$stats` as a caller: the agent's stats.
async fn stats(relay: &relay::Relay) -> Value {
    let token = caller(&relay.base_url()).token().await.unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}fhir/R4/Agent/{AGENT}/$stats", relay.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(body["parameter"][0]["valueString"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_bad_channel_does_not_keep_the_agent_off_the_relay_after_a_restart() {
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let data = tmp("agent-config-problems");
    let agent = start_agent(agent_config(&relay.base_url(), data.clone())).await;
    channel_port(&agent, "adt-in").await;

    // Two new channels on one port (one this test holds), and one whose Endpoint does not
    // exist, written as a Medplum server would take them.
    let held = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = held.local_addr().unwrap().port();
    let store = relay.registry();
    for id in ["lab-a", "lab-b"] {
        store
            .put(
                json!({"resourceType": "Endpoint", "id": id, "status": "active",
                "address": format!("mllp://127.0.0.1:{port}")}),
            )
            .await
            .unwrap();
    }
    let mut a = (*store.get("Agent", AGENT).await.unwrap().unwrap()).clone();
    for (name, endpoint) in [("lab-a", "lab-a"), ("lab-b", "lab-b"), ("ghost", "nope")] {
        a["channel"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name, "endpoint": {"reference": format!("Endpoint/{endpoint}")}}));
    }
    store.put(a).await.unwrap();
    let (status, body) = reload_config(&relay).await;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("share port"), "{body}");
    // Refused, what ran runs on, and the relay can see why.
    assert_eq!(
        stats(&relay).await["configurationProblems"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Restarted: it connects and stays connected, whatever the configuration says.
    agent.shutdown().await;
    let agent = Agent::start(agent_config(&relay.base_url(), data), LogBuffer::new())
        .await
        .unwrap();
    assert!(
        agent.wait_live(Duration::from_secs(10)).await,
        "the agent did not connect"
    );
    let adt = channel_port(&agent, "adt-in").await;
    let mut c = Connection::connect(&format!("127.0.0.1:{adt}"), ClientOptions::default())
        .await
        .unwrap();
    let ack = c.send(oru("CP-1").as_bytes()).await.unwrap();
    let (code, id, _) = msa(ack.bytes());
    assert_eq!((code.as_str(), id.as_str()), ("AA", "CP-1"));
    assert!(
        ack.bytes().starts_with(b"MSH|^~\\&|EHR|HOSP|LAB|HOSP|"),
        "the relay's answer"
    );
    let running: Vec<String> = agent.channels().await.into_iter().map(|(n, _)| n).collect();
    assert!(
        !running.iter().any(|n| n == "lab-b" || n == "ghost"),
        "{running:?}"
    );

    // Seen from the relay: each problem, in the agent's $stats.
    let seen = stats(&relay).await;
    assert_eq!(seen["live"], true);
    let problems: Vec<&str> = seen["configurationProblems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("channel ghost: cannot read Endpoint/nope: HTTP 404")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&format!("channels lab-a and lab-b share port {port}").as_str()),
        "{problems:?}"
    );

    // Corrected: $reload-config takes it, and the problems are gone.
    let mut a = (*store.get("Agent", AGENT).await.unwrap().unwrap()).clone();
    a["channel"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] == "adt-in");
    store.put(a).await.unwrap();
    let (status, body) = reload_config(&relay).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stats(&relay).await["configurationProblems"], json!([]));
    drop(held);
    agent.shutdown().await;
}
