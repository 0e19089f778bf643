//! Dead letters through the relay: a message the relay keeps refusing is moved aside by the
//! agent, the device is told why, `outpost fleet dead-letters AGENT` lists it (and
//! `$fetch-logs` shows the log line), and `--retry ID` sends it again once the cause is fixed.
//! A Bot target is reported in the relay's log when the agent connects.

mod support;

use std::time::Duration;

use agent_core::{Agent, AgentConfig, LogBuffer, LogLayer};
use relay::{Relay, RelayConfig};
use serde_json::{Value, json};
use support::outpost;
use tracing_subscriber::prelude::*;

const AGENT: &str = "dl-agent";

fn agent_resource(with_channel: bool) -> Value {
    // "bot" names a Bot as its target: Outpost cannot run it and says so.
    let bot = json!({"name": "bot", "endpoint": {"reference": "Endpoint/bot"}, "targetReference": {"reference": "Bot/123"}});
    let channels = if with_channel {
        json!([{"name": "in", "endpoint": {"reference": "Endpoint/in"}}, bot])
    } else {
        json!([bot])
    };
    json!({"resourceType": "Agent", "id": AGENT, "name": "Dead letters", "status": "active", "channel": channels})
}

fn oru(id: &str) -> String {
    format!("MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{id}|P|2.5\rPID|1||42\r")
}

/// `outpost fleet dead-letters` against `base`, with `extra` arguments: (exit code, stdout).
async fn fleet(base: &str, extra: &[&str]) -> (i32, String) {
    let mut cmd = outpost();
    cmd.args(["fleet", "dead-letters", AGENT, "--base-url", base])
        .args([
            "--client-id",
            "caller",
            "--client-secret",
            "caller-secret-0123456",
        ])
        .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn refused_messages_are_dead_lettered_listed_and_sent_again_through_the_relay() {
    // The agent's log lines, for $fetch-logs (this test runs on one thread).
    let logs = LogBuffer::new();
    let seen = logs.clone();
    let _guard = tracing_subscriber::registry()
        .with(LogLayer::new(logs.clone()))
        .set_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start_on(listener, RelayConfig::default())
        .await
        .unwrap();
    relay
        .registry()
        .bootstrap(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
            {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
                "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
            {"resource": agent_resource(true)},
            {"resource": {"resourceType": "Endpoint", "id": "in", "status": "active", "address": "mllp://127.0.0.1:0"}},
            {"resource": {"resourceType": "Endpoint", "id": "bot", "status": "active", "address": "mllp://127.0.0.1:0"}},
        ]}))
        .await
        .unwrap();
    let base = relay.base_url();
    let data = std::env::temp_dir().join(format!(
        "outpost-dl-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let agent = Agent::start(
        AgentConfig {
            base_url: base.clone(),
            client_id: "agent".into(),
            client_secret: "agent-secret-0123456".into(),
            agent_id: AGENT.into(),
            data_dir: data.clone(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            inbound_reply_wait: Duration::from_secs(20),
            inbound_max_attempts: 2,
            ..AgentConfig::default()
        },
        logs,
    )
    .await
    .unwrap();
    assert!(agent.wait_live(Duration::from_secs(10)).await);
    // The relay read the Agent when it connected, and said which target it cannot run.
    assert!(
        seen.recent(1000).iter().any(|l| {
            l.level == "WARN"
                && l.msg.contains("inbound target not supported")
                && l.extra["problem"].as_str().is_some_and(|p| {
                    p.starts_with("channel bot: target Bot/123 cannot run on Outpost")
                })
        }),
        "no warning in the relay's log"
    );
    let port = agent
        .wait_channel("in", Duration::from_secs(10))
        .await
        .unwrap()
        .port();

    // The channel is removed at the relay while the agent still runs it: every message on it
    // is refused ("Channel not found").
    relay.registry().put(agent_resource(false)).await.unwrap();
    let mut conn =
        mllp::Connection::connect(&format!("127.0.0.1:{port}"), mllp::ClientOptions::default())
            .await
            .unwrap();
    match conn.send(oru("DL1").as_bytes()).await {
        Err(mllp::Error::Negative { description, .. }) => assert!(
            description.contains("refused 2 times") && description.contains("Channel not found"),
            "{description}"
        ),
        other => panic!("expected an AE, got {other:?}"),
    }
    let dead = agent.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    let id = dead[0].message.id;

    // Listed through the relay, without the body.
    let (code, out) = fleet(&base, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("{id}\tin\t")) && out.contains("Channel not found"),
        "{out}"
    );
    assert!(!out.contains("DL1"), "no message bodies: {out}");
    // And in $fetch-logs.
    let http = reqwest::Client::new();
    let logs: Value = http
        .get(format!("{base}fhir/R4/Agent/{AGENT}/$fetch-logs?limit=200"))
        .basic_auth("caller", Some("caller-secret-0123456"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = logs["parameter"][0]["valueString"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("moved to the dead letters"),
        "not in $fetch-logs: {text}"
    );

    // The cause fixed, the message is sent again and stored once, with its first callback.
    relay.registry().put(agent_resource(true)).await.unwrap();
    let (code, out) = fleet(&base, &["--retry", &id.to_string()]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("dead letter {id} queued again")),
        "{out}"
    );
    assert!(out.contains("no dead letters"), "{out}");
    let stored = async {
        loop {
            let rows = relay
                .registry()
                .inbound(Some(AGENT), None, 0, 100)
                .await
                .unwrap();
            if rows.iter().any(|r| r.status_code == Some(200)) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let rows = tokio::time::timeout(Duration::from_secs(15), stored)
        .await
        .expect("the retried message was not stored");
    assert_eq!(rows.len(), 1, "stored once");
    assert_eq!(rows[0].callback, dead[0].message.callback);

    // An id that is no dead letter is a usage error.
    let (code, _) = fleet(&base, &["--retry", "999999"]).await;
    assert_eq!(code, 2);
    agent.shutdown().await;

    // On the agent's machine, the same from its queue file.
    let mut cmd = outpost();
    cmd.args(["agent", "dead-letters", "--data-dir"]).arg(&data);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no dead letters\n");
    // Without --data-dir: the directory the agent's properties file names, or the per-user
    // one (here an empty state directory: no queue, said so, exit 2).
    let props = data.with_extension("properties");
    std::fs::write(
        &props,
        format!(
            "baseUrl={base}\nclientId=agent\nclientSecret=s\nagentId={AGENT}\ndataDir={}\n",
            data.display()
        ),
    )
    .unwrap();
    let state = data.with_extension("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut by_config = outpost();
    by_config
        .args(["agent", "dead-letters", "--config"])
        .arg(&props);
    let mut by_default = outpost();
    by_default
        .args(["agent", "dead-letters"])
        .env("XDG_STATE_HOME", &state)
        .current_dir(&state);
    let (by_config, by_default) = tokio::task::spawn_blocking(move || {
        (by_config.output().unwrap(), by_default.output().unwrap())
    })
    .await
    .unwrap();
    assert!(by_config.status.success());
    assert_eq!(
        String::from_utf8_lossy(&by_config.stdout),
        "no dead letters\n"
    );
    assert_eq!(by_default.status.code(), Some(2));
    let err = String::from_utf8_lossy(&by_default.stderr);
    assert!(
        err.contains(&format!(
            "no agent queue at {}",
            state.join("outpost/agent/agent-queue.sqlite").display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(data);
    let _ = std::fs::remove_file(props);
    let _ = std::fs::remove_dir_all(state);
}
