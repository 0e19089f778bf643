//! A relay in the test's process on a listener bound to `127.0.0.1:0`, with the standard test
//! registry; an HTTP helper; and a scripted agent over a real WebSocket.

use std::time::Duration;

use ::relay::{Relay, RelayConfig};
use agent_protocol::{AgentMessage, ConnectRequest, Decoded, Direction};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

pub const AGENT: &str = "1080ee82-e4fc-4312-946f-322fbecf9bb9";
pub const DEVICE: &str = "52c9a9de-1081-4fb2-a40a-e62efe1b73b2";
pub const CALLER: &str = "caller";
pub const CALLER_SECRET: &str = "caller-secret-0123456";
pub const AGENT_CLIENT: &str = "agent-client";
pub const AGENT_SECRET: &str = "agent-secret-0123456";
/// A second agent the agent client may act for.
pub const AGENT2: &str = "agent-two";

/// The resources every test starts with.
pub fn bundle() -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": CALLER, "name": "caller", "secret": CALLER_SECRET}},
        {"resource": {"resourceType": "ClientApplication", "id": AGENT_CLIENT, "name": "agent", "secret": AGENT_SECRET,
            "extension": [{"url": ::relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT}")}},
                {"url": ::relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": format!("Agent/{AGENT2}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT2, "name": "Second agent", "status": "active"}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Lab agent", "status": "active",
            "identifier": [{"system": "urn:outpost", "value": "lab-1"}],
            "channel": [{"name": "adt-in", "endpoint": {"reference": "Endpoint/e1"}}]}},
        {"resource": {"resourceType": "Agent", "id": "agent-off", "name": "Off agent", "status": "off"}},
        {"resource": {"resourceType": "Device", "id": DEVICE, "url": "mllp://127.0.0.1:56000",
            "identifier": [{"system": "urn:outpost", "value": "adt-1"}]}},
        {"resource": {"resourceType": "Device", "id": "no-url"}},
        {"resource": {"resourceType": "Endpoint", "id": "e1", "status": "active", "address": "mllp://0.0.0.0:57000"}},
    ]})
}

/// A relay with `config`, on a listener bound here and handed over, loaded with [`bundle`].
pub async fn start_with(config: RelayConfig) -> Relay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start_on(listener, config)
        .await
        .expect("relay starts");
    relay.registry().bootstrap(&bundle()).await.unwrap();
    relay
}

/// A relay with fast heartbeats (200 ms) and a 5 s agent timeout.
pub async fn start() -> Relay {
    start_with(RelayConfig {
        heartbeat_interval: Duration::from_millis(200),
        agent_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    })
    .await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// An access token from `relay`.
pub async fn token(relay: &Relay, id: &str, secret: &str) -> String {
    crate::token(&relay.base_url(), id, secret).await
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    /// The body parsed as JSON (`Null` when it is not).
    pub json: Value,
}

pub async fn call(req: reqwest::RequestBuilder) -> Resp {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        content_type,
        text,
        json,
    }
}

/// The text of an OperationOutcome's first issue.
pub fn oo_text(v: &Value) -> &str {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"][0]["details"]["text"].as_str().unwrap()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The agent side of a WebSocket session, scripted by the test.
pub struct ScriptedAgent {
    pub ws: Ws,
}

impl ScriptedAgent {
    pub async fn open(relay: &Relay) -> ScriptedAgent {
        ScriptedAgent::open_base(&relay.base_url()).await
    }

    /// Opens a socket to the relay at `base` (`http://host:port/`).
    pub async fn open_base(base: &str) -> ScriptedAgent {
        let url = format!("{}ws/agent", base.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ScriptedAgent { ws }
    }

    /// Opens a socket to the relay at `base` and connects as `agent` with an access token for
    /// `client`/`secret`; asserts the connect response.
    pub async fn connect_base(
        base: &str,
        agent: &str,
        client: &str,
        secret: &str,
    ) -> ScriptedAgent {
        let mut a = ScriptedAgent::open_base(base).await;
        let t = crate::token(base, client, secret).await;
        a.send(&AgentMessage::ConnectRequest(ConnectRequest {
            access_token: Some(t),
            agent_id: Some(agent.into()),
            callback: None,
        }))
        .await;
        a.recv_kind("agent:connect:response").await;
        a
    }

    /// Opens a socket and connects as the test agent; asserts the connect response.
    pub async fn connect(relay: &Relay) -> ScriptedAgent {
        ScriptedAgent::connect_as(relay, AGENT).await
    }

    /// Opens a socket and connects as `agent`; asserts the connect response.
    pub async fn connect_as(relay: &Relay, agent: &str) -> ScriptedAgent {
        let mut a = ScriptedAgent::open(relay).await;
        let t = token(relay, AGENT_CLIENT, AGENT_SECRET).await;
        a.send(&AgentMessage::ConnectRequest(ConnectRequest {
            access_token: Some(t),
            agent_id: Some(agent.into()),
            callback: None,
        }))
        .await;
        let m = a.recv_kind("agent:connect:response").await;
        assert_eq!(m.kind(), "agent:connect:response");
        a
    }

    pub async fn send(&mut self, msg: &AgentMessage) {
        self.ws
            .send(Message::Text(msg.to_json().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .unwrap();
    }

    /// The next message, skipping heartbeat requests; `None` when the socket closed.
    pub async fn recv(&mut self) -> Option<AgentMessage> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("nothing from the relay within 10 s")?;
            let text = match frame {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            };
            match AgentMessage::decode(text.as_bytes(), Direction::ToAgent, 1 << 24).unwrap() {
                Decoded::Message(AgentMessage::HeartbeatRequest(_)) => continue,
                Decoded::Message(m) => return Some(m),
                Decoded::Unknown { kind, .. } => panic!("unknown message {kind}"),
            }
        }
    }

    pub async fn recv_kind(&mut self, kind: &str) -> AgentMessage {
        let m = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("socket closed waiting for {kind}"));
        assert_eq!(m.kind(), kind, "{m:?}");
        m
    }

    /// Whether the relay closes the socket (within 10 s), after any messages.
    pub async fn closed(&mut self) -> bool {
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await
        {
            match frame {
                Ok(Message::Close(_)) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
        true
    }
}
