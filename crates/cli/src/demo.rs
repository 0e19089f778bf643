//! `outpost demo`: the whole push flow in one process on loopback: an embedded relay, an agent
//! and an MLLP device; pushes the example ADT^A01 and prints each hop and the ACK.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agent_core::{Agent, AgentConfig, Event, LogBuffer, PushAnswer, PushOptions, RelayClient};
use anyhow::Context;
use hl7v2::Message;
use mllp::{Request, Server, ServerOptions, acks_for};
use relay::{Relay, RelayConfig};
use serde_json::json;
use tokio::sync::mpsc;

const AGENT: &str = "1080ee82-e4fc-4312-946f-322fbecf9bb9";
const DEVICE: &str = "52c9a9de-1081-4fb2-a40a-e62efe1b73b2";

/// Lines from every part go through one channel, so they print in the order things happened.
type Out = mpsc::UnboundedSender<String>;

fn say(out: &Out, who: &str, line: impl AsRef<str>) {
    let _ = out.send(format!("[{who:<6}] {}", line.as_ref()));
}

fn indent(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|s| !s.is_empty())
        .map(|s| format!("           {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn run() -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async {
        let (out, mut lines) = mpsc::unbounded_channel::<String>();
        let printer = tokio::spawn(async move {
            while let Some(l) = lines.recv().await {
                println!("{l}");
            }
        });
        let result = demo(&out).await;
        drop(out);
        let _ = printer.await;
        result
    })
}

async fn demo(out: &Out) -> anyhow::Result<ExitCode> {
    let _ = out.send(
        "Outpost demo: a relay, an agent and an HL7 device, in one process on loopback.\n".into(),
    );

    // The device: an MLLP listener that prints what it gets and answers AA.
    let device_out = out.clone();
    let device = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        move |req: Request| {
            let out = device_out.clone();
            async move {
                let Ok(msg) = req.message() else { return };
                say(
                    &out,
                    "device",
                    format!(
                        "received {} {} from {} over MLLP:\n{}",
                        msg.get("MSH-9")
                            .map(|v| v.text().into_owned())
                            .unwrap_or_default(),
                        msg.control_id().text(),
                        req.peer(),
                        indent(&String::from_utf8_lossy(req.bytes()))
                    ),
                );
                for ack in acks_for(&msg, false) {
                    let code = Message::parse(&ack)
                        .ok()
                        .and_then(|m| m.get("MSA-1").ok().map(|v| v.text().into_owned()));
                    say(
                        &out,
                        "device",
                        format!("answers {}", code.unwrap_or_default()),
                    );
                    let _ = req.reply(&ack).await;
                }
            }
        },
    )
    .await
    .context("cannot start the device")?;
    let device_url = format!("mllp://{}", device.local_addr());

    // The relay, in memory, with the canonical example's agent and device.
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".into(),
        ..RelayConfig::default()
    })
    .await
    .context("cannot start the relay")?;
    relay.registry().bootstrap(&json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "demo-caller", "secret": "demo-caller-secret"}},
        {"resource": {"resourceType": "ClientApplication", "id": "demo-agent", "secret": "demo-agent-secret",
            "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Demo agent", "status": "active"}},
        {"resource": {"resourceType": "Device", "id": DEVICE, "url": device_url}},
    ]})).await?;
    let base = relay.base_url();
    say(out, "relay", format!("listening on {base}"));
    say(
        out,
        "device",
        format!(
            "listening on {} (Device/{DEVICE}, url {device_url})",
            device.local_addr()
        ),
    );

    // The agent.
    let data = std::env::temp_dir().join(format!("outpost-demo-{}", std::process::id()));
    let agent = Agent::start(
        AgentConfig {
            base_url: base.clone(),
            client_id: "demo-agent".into(),
            client_secret: "demo-agent-secret".into(),
            agent_id: AGENT.into(),
            data_dir: data.clone(),
            ..AgentConfig::default()
        },
        LogBuffer::new(),
    )
    .await?;
    let mut events = agent.events();
    if !agent.wait_live(Duration::from_secs(10)).await {
        anyhow::bail!("the agent did not connect to the relay");
    }
    say(
        out,
        "agent",
        format!("connected to the relay over WebSocket as Agent/{AGENT}"),
    );
    let agent_out = out.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            match ev {
                Event::PushReceived {
                    remote,
                    content_type,
                } => say(
                    &agent_out,
                    "agent",
                    format!("push received over the WebSocket: {content_type} for {remote}"),
                ),
                Event::PushAnswered { status, .. } => say(
                    &agent_out,
                    "agent",
                    format!("sends the device's answer back to the relay (statusCode {status})"),
                ),
                _ => {}
            }
        }
    });

    // The caller.
    let message = hl7v2::example_adt_a01(chrono::Utc::now());
    let control_id = Message::parse(message.as_bytes())?
        .control_id()
        .text()
        .into_owned();
    let tls = agent_core::client_config(None)?;
    let caller = RelayClient::new(&base, "demo-caller", "demo-caller-secret", tls)?;
    caller.token().await?;
    say(
        out,
        "caller",
        format!(
            "POST {base}fhir/R4/Agent/{AGENT}/$push\n           destination Device/{DEVICE}, ADT^A01 control id {control_id}, waitForResponse"
        ),
    );
    let started = Instant::now();
    let answer = caller
        .push_to_agent(
            AGENT,
            &format!("Device/{DEVICE}"),
            &message,
            agent_protocol::CONTENT_TYPE_HL7_V2,
            &PushOptions {
                wait_for_response: true,
                ..PushOptions::default()
            },
        )
        .await;
    let elapsed = started.elapsed();
    // Let the event watcher print what happened before the answer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let code = match answer {
        Ok(PushAnswer::Answer { content_type, body }) => {
            say(
                out,
                "caller",
                format!("HTTP 200 {content_type}:\n{}", indent(&body)),
            );
            let _ = out.send(format!(
                "\nPush answered in {:.1} ms.",
                elapsed.as_secs_f64() * 1000.0
            ));
            ExitCode::SUCCESS
        }
        Ok(PushAnswer::Delivered) => ExitCode::SUCCESS,
        Err(e) => {
            say(out, "caller", format!("push failed: {e}"));
            ExitCode::FAILURE
        }
    };
    watcher.abort();
    agent.shutdown().await;
    relay.shutdown().await;
    device.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(data);
    Ok(code)
}
