//! A scripted relay for fault tests: it speaks the relay's side as Outpost's relay does
//! (`crates/relay/src/ws.rs` for the socket, `crates/relay/src/inbound.rs` for inbound
//! messages: de-duplication by callback, an AA for HL7, `OK` otherwise) and the
//! temporary-failure contract (503 when it cannot take a message), but does what the test says:
//! answer 503 for a while, answer nothing, or be unreachable. It runs on the sans-IO
//! `agent_protocol::link::Link` in the relay role, and counts every attempt it sees.
//!
//! [`ScriptedRelay::behave_as_medplum`] makes it answer inbound messages as Medplum's server
//! does (`packages/server/src/agent/websockets.ts`, 5.0.x): every transmit's token and channel
//! are checked and a failure is an `agent:error` *without* callback ("Invalid access token",
//! "Channel not found"); the channel's Bot runs for every request, resends included (no
//! de-duplication by callback), and answers after `bot_delay`; a Bot that throws is an
//! `agent:error` without callback too.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_protocol::link::{Event, Link, LinkOptions};
use agent_protocol::{AgentMessage, CONTENT_TYPE_HL7_V2, CONTENT_TYPE_TEXT, TransmitResponse};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// How the relay answers device messages (`agent:transmit:request` from the agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Store (once per callback) and answer: an AA for HL7, `OK` otherwise.
    Store,
    /// Answer this many requests 503 ("cannot store"), then store.
    Unavailable(usize),
    /// Never answer.
    Silent,
}

/// One device message as the relay received it (every attempt, resends included).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub callback: String,
    pub channel: String,
    pub body: String,
}

type Push = (
    AgentMessage,
    Duration,
    oneshot::Sender<Option<AgentMessage>>,
);

/// What the test controls and reads.
pub struct Script {
    pub agent: Mutex<Value>,
    pub endpoints: Mutex<HashMap<String, Value>>,
    pub mode: Mutex<Mode>,
    /// Every connection is accepted and closed at once: the relay cannot be reached.
    pub down: AtomicBool,
    pub attempts: Mutex<Vec<Attempt>>,
    /// Stored messages, one per callback, in arrival order: (callback, body).
    pub stored: Mutex<Vec<(String, String)>>,
    answers: Mutex<HashMap<String, AgentMessage>>,
    pub connects: AtomicUsize,
    session: Mutex<Option<mpsc::Sender<Push>>>,
    /// Medplum's server: see the module docs.
    pub medplum: Mutex<Option<Medplum>>,
    /// Tokens handed out so far (`tok-1`, `tok-2`, ...).
    pub tokens_issued: AtomicUsize,
}

/// How the scripted server behaves as Medplum's does.
#[derive(Debug, Clone, Default)]
pub struct Medplum {
    /// Channels the server's Agent resource has; any other is "Channel not found".
    pub channels: HashSet<String>,
    /// Tokens refused as expired ("Invalid access token").
    pub expired: HashSet<String>,
    /// How long the Bot takes.
    pub bot_delay: Duration,
    /// Bodies containing this make the Bot throw (an `agent:error` without callback).
    pub bot_throws_on: Option<String>,
}

pub struct ScriptedRelay {
    pub base_url: String,
    pub script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedRelay {
    /// Starts on `listener` with `agent` (an Agent resource) and its Endpoints.
    pub fn start(
        listener: tokio::net::TcpListener,
        agent: Value,
        endpoints: &[Value],
    ) -> ScriptedRelay {
        let base_url = format!("http://{}/", listener.local_addr().unwrap());
        let script = Arc::new(Script {
            agent: Mutex::new(agent),
            endpoints: Mutex::new(
                endpoints
                    .iter()
                    .map(|e| (e["id"].as_str().unwrap().to_owned(), e.clone()))
                    .collect(),
            ),
            mode: Mutex::new(Mode::Store),
            down: AtomicBool::new(false),
            attempts: Mutex::default(),
            stored: Mutex::default(),
            answers: Mutex::default(),
            connects: AtomicUsize::new(0),
            session: Mutex::default(),
            medplum: Mutex::default(),
            tokens_issued: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/oauth2/token", post(token))
            .route("/fhir/R4/Agent/{id}", get(read_agent))
            .route("/fhir/R4/Endpoint/{id}", get(read_endpoint))
            .route("/ws/agent", get(ws))
            .with_state(script.clone());
        let s = script.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if s.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        ScriptedRelay {
            base_url,
            script,
            task,
        }
    }

    /// Answers inbound messages as Medplum's server does (module docs), with the Agent's
    /// `channels`.
    pub fn behave_as_medplum(&self, channels: &[&str], bot_delay: Duration) {
        *self.script.medplum.lock().unwrap() = Some(Medplum {
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            bot_delay,
            ..Medplum::default()
        });
    }

    /// Changes the Medplum behaviour (after [`ScriptedRelay::behave_as_medplum`]).
    pub fn medplum(&self, change: impl FnOnce(&mut Medplum)) {
        if let Some(m) = self.script.medplum.lock().unwrap().as_mut() {
            change(m);
        }
    }

    /// Every token handed out so far expires (the server refuses it from now on).
    pub fn expire_tokens(&self) {
        let n = self.script.tokens_issued.load(Ordering::SeqCst);
        self.medplum(|m| m.expired.extend((0..=n).map(|i| format!("tok-{i}"))));
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.script.mode.lock().unwrap() = mode;
    }

    /// Makes the relay unreachable (`true`) or reachable again; going down also ends the
    /// agent's live session.
    pub fn set_down(&self, down: bool) {
        self.script.down.store(down, Ordering::SeqCst);
        if down {
            self.script.session.lock().unwrap().take();
        }
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.script.attempts.lock().unwrap().clone()
    }

    pub fn stored(&self) -> Vec<(String, String)> {
        self.script.stored.lock().unwrap().clone()
    }

    /// Whether an agent session is live.
    pub fn is_connected(&self) -> bool {
        self.script.session.lock().unwrap().is_some()
    }

    /// Sends a request to the agent and waits for its answer until `wait` has passed.
    pub async fn request(&self, msg: AgentMessage, wait: Duration) -> Option<AgentMessage> {
        let session = self.script.session.lock().unwrap().clone()?;
        let (tx, rx) = oneshot::channel();
        session.send((msg, wait, tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Waits until `n` messages are stored, at most `timeout`.
    pub async fn wait_stored(&self, n: usize, timeout: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = self.stored();
            if stored.len() >= n || Instant::now() > deadline {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until an agent session is live, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_connected() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

async fn token(State(s): State<Arc<Script>>) -> axum::Json<Value> {
    let access_token = if s.medplum.lock().unwrap().is_some() {
        format!("tok-{}", s.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1)
    } else {
        "scripted-token".to_owned()
    };
    axum::Json(json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600}))
}

async fn read_agent(State(s): State<Arc<Script>>) -> axum::Json<Value> {
    axum::Json(s.agent.lock().unwrap().clone())
}

async fn read_endpoint(
    State(s): State<Arc<Script>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, axum::http::StatusCode> {
    s.endpoints
        .lock()
        .unwrap()
        .get(&id)
        .cloned()
        .map(axum::Json)
        .ok_or(axum::http::StatusCode::NOT_FOUND)
}

async fn ws(State(s): State<Arc<Script>>, up: WebSocketUpgrade) -> axum::response::Response {
    up.on_upgrade(move |socket| session(s, socket))
}

/// One agent connection, driven through the relay end of the link.
async fn session(script: Arc<Script>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let opts = LinkOptions {
        heartbeat_interval: Duration::from_secs(1),
        silence_timeout: Duration::from_secs(5),
        ..LinkOptions::default()
    };
    let mut link = Link::relay(opts, Instant::now());
    let (tx, mut pushes) = mpsc::channel::<Push>(1024);
    // Answers from a slow Bot, sent when they are ready.
    let (bot_tx, mut bot_answers) = mpsc::unbounded_channel::<AgentMessage>();
    let mut waiting: HashMap<String, oneshot::Sender<Option<AgentMessage>>> = HashMap::new();
    let mut registered = false;
    loop {
        while let Some(msg) = link.poll_send() {
            if sink
                .send(Message::Text(msg.to_json().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        while let Some(event) = link.poll_event() {
            match event {
                Event::ConnectRequested(_) => {
                    let _ = link.accept(Instant::now());
                    script.connects.fetch_add(1, Ordering::SeqCst);
                    *script.session.lock().unwrap() = Some(tx.clone());
                    registered = true;
                }
                Event::Request(AgentMessage::TransmitRequest(req)) => {
                    script.attempts.lock().unwrap().push(Attempt {
                        at: Instant::now(),
                        callback: req.callback.clone().unwrap_or_default(),
                        channel: req.channel.clone().unwrap_or_default(),
                        body: req.body.clone(),
                    });
                    let medplum = script.medplum.lock().unwrap().clone();
                    if let Some(medplum) = medplum {
                        let (script, bot_tx) = (script.clone(), bot_tx.clone());
                        tokio::spawn(async move {
                            if let Some(answer) = as_medplum(&script, &medplum, &req).await {
                                let _ = bot_tx.send(answer);
                            }
                        });
                    } else if let Some(answer) = inbound(&script, &req) {
                        let _ = link.send(answer);
                    }
                }
                Event::Answer {
                    callback, message, ..
                }
                | Event::LateAnswer { callback, message } => {
                    if let Some(w) = waiting.remove(&callback) {
                        let _ = w.send(Some(message));
                    }
                }
                Event::Expired { callback } | Event::Failed { callback } => {
                    if let Some(w) = waiting.remove(&callback) {
                        let _ = w.send(None);
                    }
                }
                Event::Closed(_) => {
                    if registered {
                        script.session.lock().unwrap().take();
                    }
                    return;
                }
                _ => {}
            }
        }
        // Taken down by the test: end this session.
        if registered && script.session.lock().unwrap().is_none() {
            let _ = sink.close().await;
            return;
        }
        let wake = link
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(t))) => link.handle_bytes(t.as_bytes(), Instant::now()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    link.close(agent_protocol::link::CloseReason::TransportClosed);
                }
                Some(Ok(_)) => {}
            },
            answer = bot_answers.recv() => if let Some(answer) = answer {
                let _ = link.send(answer);
            },
            push = pushes.recv() => if let Some((msg, wait, reply)) = push {
                let callback = msg.callback().unwrap_or_default().to_owned();
                let now = Instant::now();
                if link.request(msg, now + wait, now).is_ok() {
                    waiting.insert(callback, reply);
                } else {
                    let _ = reply.send(None);
                }
            },
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                link.handle_timeout(Instant::now());
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Medplum's answer to a device message (`websockets.ts`): checks first, errors without a
/// callback, then the Bot (every time: no de-duplication), its answer after `bot_delay`.
async fn as_medplum(
    script: &Script,
    medplum: &Medplum,
    req: &agent_protocol::TransmitRequest,
) -> Option<AgentMessage> {
    let error = |text: &str| Some(AgentMessage::error(text, None));
    let token = req.access_token.as_deref().unwrap_or_default();
    if token.is_empty() {
        return error("Missing access token");
    }
    if medplum.expired.contains(token) {
        return error("Invalid access token");
    }
    let channel = req.channel.as_deref().unwrap_or_default();
    if !medplum.channels.contains(channel) {
        return error("Channel not found");
    }
    tokio::time::sleep(medplum.bot_delay).await;
    if medplum
        .bot_throws_on
        .as_deref()
        .is_some_and(|t| req.body.contains(t))
    {
        return error("Bot error: TypeError: Cannot read properties of undefined");
    }
    script
        .stored
        .lock()
        .unwrap()
        .push((req.callback.clone().unwrap_or_default(), req.body.clone()));
    let msg = hl7v2::Message::parse(req.body.as_bytes()).ok()?;
    let ack = hl7v2::build_ack(
        &msg,
        hl7v2::AckCode::AA,
        &hl7v2::ack_options_at(&chrono::Utc::now(), None),
    );
    Some(AgentMessage::TransmitResponse(TransmitResponse {
        channel: req.channel.clone(),
        remote: req.remote.clone(),
        callback: req.callback.clone(),
        content_type: CONTENT_TYPE_HL7_V2.to_owned(),
        status_code: Some(200),
        status: None,
        body: String::from_utf8_lossy(&ack).into_owned(),
        device_us: None,
    }))
}

/// The relay's answer to a device message, per the script; `None` to stay silent.
fn inbound(script: &Script, req: &agent_protocol::TransmitRequest) -> Option<AgentMessage> {
    let callback = req.callback.clone().unwrap_or_default();
    let respond = |status: u16, content_type: &str, body: String| {
        AgentMessage::TransmitResponse(TransmitResponse {
            channel: req.channel.clone(),
            remote: req.remote.clone(),
            callback: req.callback.clone(),
            content_type: content_type.to_owned(),
            status_code: Some(status),
            status: None,
            body,
            device_us: None,
        })
    };
    {
        let mut mode = script.mode.lock().unwrap();
        match &mut *mode {
            Mode::Silent => return None,
            Mode::Unavailable(0) => *mode = Mode::Store,
            Mode::Unavailable(n) => {
                *n -= 1;
                return Some(respond(
                    503,
                    CONTENT_TYPE_TEXT,
                    "relay could not store the message: database or disk is full; retry".into(),
                ));
            }
            Mode::Store => {}
        }
    }
    if let Some(previous) = script.answers.lock().unwrap().get(&callback) {
        return Some(previous.clone());
    }
    script
        .stored
        .lock()
        .unwrap()
        .push((callback.clone(), req.body.clone()));
    let answer = if req.content_type == CONTENT_TYPE_HL7_V2 {
        let msg = hl7v2::Message::parse(req.body.as_bytes()).ok()?;
        let ack = hl7v2::build_ack(
            &msg,
            hl7v2::AckCode::AA,
            &hl7v2::ack_options_at(&chrono::Utc::now(), None),
        );
        respond(
            200,
            CONTENT_TYPE_HL7_V2,
            String::from_utf8_lossy(&ack).into_owned(),
        )
    } else {
        respond(200, CONTENT_TYPE_TEXT, "OK".into())
    };
    script
        .answers
        .lock()
        .unwrap()
        .insert(callback, answer.clone());
    Some(answer)
}

/// An Agent with channels `(name, address)`, and their Endpoints (id = name).
pub fn agent_with(id: &str, channels: &[(&str, &str)]) -> (Value, Vec<Value>) {
    let agent = json!({
        "resourceType": "Agent", "id": id, "status": "active",
        "channel": channels.iter().map(|(n, _)| json!({"name": n, "endpoint": {"reference": format!("Endpoint/{n}")}})).collect::<Vec<_>>(),
    });
    let endpoints = channels
        .iter()
        .map(
            |(n, a)| json!({"resourceType": "Endpoint", "id": n, "status": "active", "address": a}),
        )
        .collect();
    (agent, endpoints)
}
