//! A relay, an agent and an MLLP device on loopback, all real.
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{Agent, AgentConfig, LogBuffer, RelayClient};
use hl7v2::{AckCode, AckError, Message, build_ack};
use mllp::{Request, Server, ServerOptions, ack_options, acks_for};
use relay::{Relay, RelayConfig};
use serde_json::{Value, json};

pub const AGENT: &str = "agent-1";
pub const DEVICE: &str = "device-1";

/// What the device does with a message.
pub const ANSWER_AA: u8 = 0;
pub const ANSWER_AE: u8 = 1;
pub const HANG: u8 = 2;

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("outpost-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The port the agent's channel `name` listens on (the bundles give channels port 0).
pub async fn channel_port(agent: &Agent, name: &str) -> u16 {
    agent
        .wait_channel(name, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("channel {name} did not start"))
        .port()
}

/// An MLLP device that records what it receives and answers as `mode` says.
pub struct Device {
    pub server: Server,
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Vec<u8>>>>,
    pub mode: Arc<AtomicU8>,
}

impl Device {
    pub async fn start(port: u16) -> Device {
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let mode = Arc::new(AtomicU8::new(ANSWER_AA));
        let (s2, m2) = (seen.clone(), mode.clone());
        let server = Server::bind(
            &format!("127.0.0.1:{port}"),
            ServerOptions::default(),
            move |req: Request| {
                let (seen, mode) = (s2.clone(), m2.clone());
                async move {
                    seen.lock().unwrap().push(req.bytes().to_vec());
                    let msg = req.message().unwrap();
                    match mode.load(Ordering::SeqCst) {
                        ANSWER_AA => {
                            for a in acks_for(&msg, false) {
                                let _ = req.reply(&a).await;
                            }
                        }
                        ANSWER_AE => {
                            let mut o = ack_options(Some("Unknown patient".into()));
                            o.error = Some(AckError::new(204, "MRN 12345 not on file"));
                            let _ = req.reply(&build_ack(&msg, AckCode::AE, &o)).await;
                        }
                        _ => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                }
            },
        )
        .await
        .unwrap();
        let port = server.local_addr().port();
        Device {
            server,
            port,
            seen,
            mode,
        }
    }

    pub fn received(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn bundle(device_port: u16, channel_port: u16) -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent-client", "secret": "agent-secret-0123456",
            "extension": [{"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Test agent", "status": "active",
            "channel": [{"name": "adt-in", "endpoint": {"reference": "Endpoint/adt-in"}}]}},
        {"resource": {"resourceType": "Endpoint", "id": "adt-in", "status": "active", "address": format!("mllp://127.0.0.1:{channel_port}")}},
        {"resource": {"resourceType": "Device", "id": DEVICE, "url": format!("mllp://127.0.0.1:{device_port}")}},
        {"resource": {"resourceType": "Device", "id": "astm-analyzer", "url": "astm://127.0.0.1:15200"}},
    ]})
}

pub async fn start_relay(
    listen: &str,
    data: Option<PathBuf>,
    bundle: &Value,
    ttl: Duration,
) -> Relay {
    let relay = Relay::start(RelayConfig {
        listen: listen.into(),
        data_dir: data,
        token_ttl: ttl,
        ..RelayConfig::default()
    })
    .await
    .unwrap();
    relay.registry().bootstrap(bundle).await.unwrap();
    relay
}

pub fn agent_config(relay_base: &str, data: PathBuf) -> AgentConfig {
    AgentConfig {
        base_url: relay_base.into(),
        client_id: "agent-client".into(),
        client_secret: "agent-secret-0123456".into(),
        agent_id: AGENT.into(),
        data_dir: data,
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(800),
        ack_timeout: Duration::from_secs(5),
        inbound_reply_wait: Duration::from_secs(5),
        ..AgentConfig::default()
    }
}

pub async fn start_agent(config: AgentConfig) -> Agent {
    let agent = Agent::start(config, LogBuffer::new()).await.unwrap();
    assert!(
        agent.wait_live(Duration::from_secs(10)).await,
        "agent did not connect"
    );
    agent
}

/// A caller of the relay, as `outpost push` is.
pub fn caller(relay_base: &str) -> RelayClient {
    let tls = agent_core::client_config(None).unwrap();
    RelayClient::new(relay_base, "caller", "caller-secret-0123456", tls).unwrap()
}

/// `GET Agent/{AGENT}/$reload-config` as a caller: the relay's HTTP status and body.
pub async fn reload_config(relay: &Relay) -> (reqwest::StatusCode, String) {
    let token = caller(&relay.base_url()).token().await.unwrap();
    let r = reqwest::Client::new()
        .get(format!(
            "{}fhir/R4/Agent/{AGENT}/$reload-config",
            relay.base_url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Everything up: device (on `device_port`, 0 for any), relay, agent.
pub struct World {
    pub device: Device,
    pub relay: Relay,
    pub agent: Agent,
    pub channel_port: u16,
    pub bundle: Value,
}

pub async fn world() -> World {
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    World {
        device,
        relay,
        agent,
        channel_port,
        bundle,
    }
}

pub const ADT_LF: &str = "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305.516||ADT^A01|1698105185516|P|2.5|\nEVN|A01|20231023235305.516||\nPID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M";

pub fn oru(id: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{id}|P|2.5\rPID|1||42\rOBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L\r"
    )
}

pub fn msa(ack: &[u8]) -> (String, String, String) {
    let m = Message::parse(ack).unwrap();
    let g = |p: &str| m.get(p).unwrap().text().into_owned();
    (g("MSA-1"), g("MSA-2"), g("MSA-3"))
}

/// Debian's `openssl` (scripts/peers.sh `ensure_tls_peers`).
pub fn openssl() -> tokio::process::Command {
    let path = std::env::var("OUTPOST_OPENSSL").unwrap_or_else(|_| "/usr/bin/openssl".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "openssl not found at {path}: run `source scripts/peers.sh && ensure_peers`"
    );
    tokio::process::Command::new(path)
}

/// `openssl s_client` to `127.0.0.1:port` with `args` (CA, certificate, ...): writes `input`,
/// then reads until its stdout holds `until` or the server closes the connection (`-ign_eof`:
/// the end of `input` does not end the connection), and ends it. Its stdout and stderr.
pub async fn s_client(port: u16, args: &[String], input: &[u8], until: &[u8]) -> (Vec<u8>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cmd = openssl();
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-ign_eof", "-nocommands"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("openssl s_client starts");
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut chunk = [0u8; 4096];
    while !out.windows(until.len()).any(|w| w == until) {
        match tokio::time::timeout_at(deadline, stdout.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "s_client: no {:?} within 20 s: {}",
                String::from_utf8_lossy(until),
                String::from_utf8_lossy(&out)
            ),
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    (out, errors.await.unwrap())
}
