//! The relay (`outpost server`) with the real Medplum clients from npm: `medplum post`,
//! `medplum get`, `medplum agent status`, and `MedplumClient.pushToAgent` in Node. A scripted
//! agent on a real WebSocket plays the agent side.

mod support;

use std::time::Duration;

use agent_protocol::{
    AgentMessage, ConnectRequest, Decoded, Direction, HeartbeatResponse, StatusResponse,
    TransmitResponse,
};
use futures_util::{SinkExt, StreamExt};
use support::{Proc, medplum, outpost, repo, run, token};
use tokio_tungstenite::tungstenite::Message;

const AGENT: &str = "1080ee82-e4fc-4312-946f-322fbecf9bb9";
const DEVICE: &str = "52c9a9de-1081-4fb2-a40a-e62efe1b73b2";
const WAIT: Duration = Duration::from_secs(60);

fn relay() -> (Proc, String) {
    let data = std::env::temp_dir().join(format!("outpost-relay-{}", std::process::id()));
    let data = data.join(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    let _ = std::fs::remove_dir_all(&data);
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--bootstrap")
        .arg(repo().join("examples/bootstrap/push-example.json"));
    let mut p = Proc::spawn("outpost server", cmd);
    let line = p.wait_for("Relay listening on ", WAIT);
    let base = line.rsplit(' ').next().unwrap().to_owned();
    (p, base)
}

/// An agent that answers every push with an AA built from the message, until dropped.
fn scripted_agent(base: &str) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let base = base.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let token = token(&base, "outpost-agent", "agent-secret-change-me").await;
            let ws_url = base.replace("http://", "ws://") + "ws/agent";
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
            let connect = AgentMessage::ConnectRequest(ConnectRequest {
                access_token: Some(token),
                agent_id: Some(AGENT.into()),
                callback: None,
            });
            ws.send(Message::Text(connect.to_json().into()))
                .await
                .unwrap();
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(Decoded::Message(msg)) =
                    AgentMessage::decode(text.as_bytes(), Direction::ToAgent, 1 << 24)
                else {
                    continue;
                };
                let reply = match msg {
                    AgentMessage::ConnectResponse(_) => {
                        let _ = ready_tx.send(());
                        continue;
                    }
                    AgentMessage::HeartbeatRequest(_) => {
                        AgentMessage::HeartbeatResponse(HeartbeatResponse {
                            version: "scripted-1".into(),
                            callback: None,
                        })
                    }
                    AgentMessage::ReloadConfigRequest(req) => {
                        let _ = tx.send("reload-config".to_owned());
                        AgentMessage::ReloadConfigResponse(StatusResponse {
                            status_code: 200,
                            callback: req.callback,
                        })
                    }
                    // A ping: answered as the agent does, with ping's output.
                    AgentMessage::TransmitRequest(req)
                        if req.content_type == agent_protocol::CONTENT_TYPE_PING =>
                    {
                        let _ = tx.send(format!("{} to {}", req.body, req.remote));
                        AgentMessage::TransmitResponse(TransmitResponse {
                            channel: None,
                            remote: req.remote.clone(),
                            callback: req.callback,
                            content_type: agent_protocol::CONTENT_TYPE_PING.into(),
                            status_code: Some(200),
                            status: None,
                            body: format!(
                                "PING {0}: 56 data bytes\n--- {0} ping statistics ---\n1 packets transmitted, 1 packets received, 0% packet loss",
                                req.remote
                            ),
                            device_us: None,
                        })
                    }
                    AgentMessage::TransmitRequest(req) => {
                        let _ = tx.send(req.body.clone());
                        let msg = hl7v2::Message::parse(req.body.as_bytes()).unwrap();
                        let ack = hl7v2::build_ack(
                            &msg,
                            hl7v2::AckCode::AA,
                            &hl7v2::AckOptions::new(
                                "ACK1",
                                hl7v2::Timestamp::parse(b"20240101120000").unwrap(),
                            ),
                        );
                        AgentMessage::TransmitResponse(TransmitResponse {
                            channel: None,
                            remote: req.remote,
                            callback: req.callback,
                            content_type: "x-application/hl7-v2+er7".into(),
                            status_code: Some(200),
                            status: None,
                            body: String::from_utf8(ack).unwrap(),
                            device_us: None,
                        })
                    }
                    _ => continue,
                };
                ws.send(Message::Text(reply.to_json().into()))
                    .await
                    .unwrap();
            }
        });
    });
    ready_rx
        .recv_timeout(WAIT)
        .expect("scripted agent connected");
    rx
}

fn medplum_with(base: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = medplum();
    cmd.args(args).args([
        "--base-url",
        base,
        "--client-id",
        "outpost-caller",
        "--client-secret",
        "caller-secret-change-me",
    ]);
    run(&format!("medplum {}", args[0]), cmd, WAIT)
}

/// The canonical example body from the push documentation (segments separated by `\n`).
fn canonical_body(wait: bool) -> String {
    let msg = "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305.516||ADT^A01|1698105185516|P|2.5|\nEVN|A01|20231023235305.516||\nPID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M|||123 STREET^APT 4B^CITY^ST^12345-6789||555-555-5555||S|\nPV1|1|I|2000^2012^01||||12345^DOCTOR^DOC||||||||||1234567^DOCTOR^DOC||AMB|||||||||||||||||||||||||202309280900|";
    serde_json::json!({"destination": format!("Device/{DEVICE}"), "contentType": "x-application/hl7-v2+er7", "body": msg, "waitForResponse": wait}).to_string()
}

#[test]
fn medplum_post_push_reaches_the_agent_and_prints_its_answer() {
    let (_relay, base) = relay();
    let pushes = scripted_agent(&base);
    let (code, out, err) = medplum_with(
        &base,
        &[
            "post",
            &format!("Agent/{AGENT}/$push"),
            &canonical_body(true),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // `medplum post` prints the raw ACK as a JSON string
    let answer: String = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        answer.starts_with("MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|"),
        "{answer}"
    );
    assert!(answer.contains("\rMSA|AA|1698105185516|OK"), "{answer}");
    let pushed = pushes.recv_timeout(WAIT).unwrap();
    assert!(pushed.starts_with("MSH|^~\\&|ADTSYS|HOSPITAL|") && pushed.contains("\nEVN|A01|"));
    // without waiting: All OK, and the agent still got it
    let (code, out, err) = medplum_with(
        &base,
        &[
            "post",
            &format!("Agent/{AGENT}/$push"),
            &canonical_body(false),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\"All OK\""), "{out}");
    pushes.recv_timeout(WAIT).unwrap();
}

#[test]
fn medplum_post_push_to_an_offline_agent_fails_loudly() {
    let (_relay, base) = relay();
    let (code, out, err) = medplum_with(
        &base,
        &[
            "post",
            &format!("Agent/{AGENT}/$push"),
            &canonical_body(false),
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        format!("{out}{err}").contains(&format!("Agent/{AGENT} is not connected")),
        "{out}\n{err}"
    );
}

#[test]
fn medplum_get_status_and_agent_status() {
    let (_relay, base) = relay();
    let _pushes = scripted_agent(&base);
    let (code, out, err) = medplum_with(&base, &["get", &format!("Agent/{AGENT}/$status")]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["resourceType"], "Parameters");
    assert_eq!(v["parameter"][0]["valueCode"], "connected");
    let (code, out, err) = medplum_with(&base, &["agent", "status", AGENT, "--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("connected"), "{out}");
}

#[test]
fn medplum_agent_reload_config_and_ping() {
    let (_relay, base) = relay();
    let seen = scripted_agent(&base);
    let (code, out, err) = medplum_with(
        &base,
        &["agent", "reload-config", AGENT, "--output", "json"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(AGENT), "{out}");
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), "reload-config");
    let (code, out, err) = medplum_with(&base, &["agent", "ping", "127.0.0.1", AGENT]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1 packets received"), "{out}");
    assert_eq!(seen.recv_timeout(WAIT).unwrap(), "PING 1 to 127.0.0.1");
}

#[test]
fn medplum_client_push_to_agent_gets_the_answer() {
    let (_relay, base) = relay();
    let pushes = scripted_agent(&base);
    let modules = std::env::var("OUTPOST_NODE_MODULES").unwrap_or_else(|_| {
        repo()
            .join(".tools/node/node_modules")
            .display()
            .to_string()
    });
    let msg = "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|NODE-1|P|2.5\nPID|1||7";
    let mut cmd = std::process::Command::new("node");
    cmd.arg(repo().join("crates/cli/tests/medplum_push.mjs"))
        .args([
            &base,
            "outpost-caller",
            "caller-secret-change-me",
            AGENT,
            DEVICE,
            msg,
        ])
        .env("OUTPOST_NODE_MODULES", modules);
    let (code, out, err) = run("node medplum_push.mjs", cmd, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.contains("MSA|AA|NODE-1|OK"), "{answer}");
    assert_eq!(pushes.recv_timeout(WAIT).unwrap(), msg);
}
