//! `GET /ws/agent`: one agent's WebSocket session.
//!
//! The first message must be `agent:connect:request` with a valid token whose client may act
//! as that agent, within the connect timeout; any failure is answered with `agent:error` and the
//! socket is closed (a Medplum 5.0.10 agent never recovers from an open socket that is not
//! live). Then: heartbeats both ways, answers routed to waiting requests by `callback`, inbound
//! messages stored and answered. An agent silent for the agent timeout is disconnected, so
//! `$status` tells the truth. A newer connection for the same agent replaces the older one.

use std::net::SocketAddr;
use std::sync::Arc;

use agent_protocol::{
    AgentMessage, ConnectRequest, ConnectResponse, Decoded, Direction, HeartbeatRequest,
    HeartbeatResponse,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agents::Outgoing;
use crate::auth::may_act_as;
use crate::http::now_secs;
use crate::inbound;
use crate::state::{RelayState, VERSION};

/// Queue of frames waiting to be written to one socket.
const OUTGOING_QUEUE: usize = 1024;

/// Serves one agent socket until it closes.
pub async fn serve(state: Arc<RelayState>, socket: WebSocket, peer: SocketAddr) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let sent = match out {
                Outgoing::Text(t) => sink.send(Message::Text(t.into())).await,
                Outgoing::Close(reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut session = Session {
        state: state.clone(),
        tx: tx.clone(),
        live: None,
        peer,
    };
    let mut stopping = state.stopping.clone();
    let started = Instant::now();
    let mut last_heard = Instant::now();
    let mut ticker = tokio::time::interval_at(
        Instant::now() + state.config.heartbeat_interval,
        state.config.heartbeat_interval,
    );
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                let bytes = match frame {
                    Message::Text(t) => t.as_bytes().to_vec(),
                    Message::Binary(b) => b.to_vec(),
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                last_heard = Instant::now();
                if !session.on_message(&bytes).await {
                    break;
                }
            }
            _ = ticker.tick() => {
                if session.live.is_none() {
                    if started.elapsed() >= state.config.connect_timeout {
                        session.close("no agent:connect:request in time").await;
                        break;
                    }
                    continue;
                }
                if last_heard.elapsed() >= state.config.agent_timeout {
                    tracing::warn!(agent = session.agent_id(), %peer, "agent silent too long; disconnecting");
                    session.close("no heartbeat").await;
                    break;
                }
                let hb = AgentMessage::HeartbeatRequest(HeartbeatRequest::default());
                if tx.send(Outgoing::Text(hb.to_json())).await.is_err() {
                    break;
                }
            }
            _ = stopping.changed() => {
                session.close("relay shutting down").await;
                break;
            }
        }
    }
    if let Some((agent_id, conn)) = session.live.take() {
        state.agents.unregister(&agent_id, conn);
        if let Some(c) = &state.cluster {
            c.withdraw(&agent_id).await;
        }
        tracing::info!(agent = agent_id, %peer, "agent disconnected");
    }
    drop(session);
    drop(tx);
    let _ = writer.await;
}

struct Session {
    state: Arc<RelayState>,
    tx: mpsc::Sender<Outgoing>,
    /// The agent id and connection number, once connected.
    live: Option<(String, u64)>,
    peer: SocketAddr,
}

impl Session {
    fn agent_id(&self) -> &str {
        self.live.as_ref().map_or("", |(a, _)| a.as_str())
    }

    async fn send(&self, msg: &AgentMessage) -> bool {
        self.tx.send(Outgoing::Text(msg.to_json())).await.is_ok()
    }

    async fn close(&self, reason: &str) {
        let _ = self.tx.send(Outgoing::Close(reason.to_owned())).await;
    }

    /// Handles one message; `false` ends the session.
    async fn on_message(&mut self, bytes: &[u8]) -> bool {
        let decoded =
            AgentMessage::decode(bytes, Direction::ToServer, self.state.config.max_ws_message);
        let msg = match decoded {
            Ok(Decoded::Message(m)) => m,
            Ok(Decoded::Unknown { kind, callback }) => {
                return self
                    .send(&AgentMessage::error(
                        format!("Unknown message type: {kind}"),
                        callback,
                    ))
                    .await;
            }
            Err(e) => return self.send(&AgentMessage::error(e.to_string(), None)).await,
        };
        match msg {
            AgentMessage::ConnectRequest(req) => self.connect(req).await,
            AgentMessage::HeartbeatRequest(_) => {
                self.send(&AgentMessage::HeartbeatResponse(HeartbeatResponse {
                    version: VERSION.into(),
                    callback: None,
                }))
                .await
            }
            AgentMessage::HeartbeatResponse(r) => {
                if let Some((agent, _)) = &self.live {
                    self.state.agents.heartbeat(agent, &r.version);
                    if let Some(c) = &self.state.cluster {
                        c.seen(agent, &r.version).await;
                    }
                }
                true
            }
            AgentMessage::TransmitRequest(req) => {
                let Some((agent, _)) = self.live.clone() else {
                    return self
                        .send(&AgentMessage::error("Not connected", req.callback))
                        .await;
                };
                // Stored here, in arrival order; answered when the webhook (if any) replies,
                // without holding up the socket.
                let (state, tx) = (self.state.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let answer = inbound::handle(&state, &agent, req).await;
                    let _ = tx.send(Outgoing::Text(answer.to_json())).await;
                });
                true
            }
            msg @ (AgentMessage::TransmitResponse(_)
            | AgentMessage::ReloadConfigResponse(_)
            | AgentMessage::UpgradeResponse(_)
            | AgentMessage::LogsResponse(_)
            | AgentMessage::StatsResponse(_)
            | AgentMessage::Error(_)) => {
                if let AgentMessage::Error(e) = &msg {
                    tracing::warn!(
                        agent = self.agent_id(),
                        error = e.body,
                        "agent reported an error"
                    );
                }
                if let Some(cb) = msg.callback().map(str::to_owned)
                    && !self.state.agents.resolve(&cb, msg)
                {
                    tracing::debug!(
                        agent = self.agent_id(),
                        callback = cb,
                        "answer for a request nobody waits on"
                    );
                }
                true
            }
            other => {
                let callback = other.callback().map(str::to_owned);
                self.send(&AgentMessage::error(
                    format!("Unexpected message type: {}", other.kind()),
                    callback,
                ))
                .await
            }
        }
    }

    /// Answers a refused connect with `agent:error`, then closes; returns `false`.
    async fn refuse(&self, text: String) -> bool {
        tracing::warn!(peer = %self.peer, reason = text, "agent connection refused");
        let _ = self.send(&AgentMessage::error(text, None)).await;
        self.close("connect refused").await;
        false
    }

    /// `agent:connect:request`: check it, register the agent, answer. `false` closes.
    async fn connect(&mut self, req: ConnectRequest) -> bool {
        let Some(token) = req.access_token.filter(|t| !t.is_empty()) else {
            return self.refuse("Missing access token".into()).await;
        };
        let Some(agent_id) = req.agent_id.filter(|a| !a.is_empty()) else {
            return self.refuse("Missing agent ID".into()).await;
        };
        let claims = match self.state.tokens.verify(&token, now_secs()) {
            Ok(c) => c,
            Err(e) => return self.refuse(format!("Invalid access token: {e}")).await,
        };
        let Some(agent) = self.state.store.get("Agent", &agent_id) else {
            return self.refuse(format!("Agent/{agent_id} not found")).await;
        };
        if !may_act_as(&self.state.store, &claims.client_id, &agent_id) {
            return self
                .refuse(format!(
                    "ClientApplication/{} may not act as Agent/{agent_id}",
                    claims.client_id
                ))
                .await;
        }
        if agent["status"].as_str() == Some("off") {
            tracing::info!(
                agent = agent_id,
                "agent connected while Agent.status is off"
            );
        }
        if let Some((old_agent, old_conn)) = self.live.take() {
            self.state.agents.unregister(&old_agent, old_conn);
        }
        let (conn, replaced) = self.state.agents.register(&agent_id, self.tx.clone());
        if let Some(old) = replaced {
            tracing::info!(
                agent = agent_id,
                "a newer connection replaces the previous one"
            );
            let _ = old.try_send(Outgoing::Close("replaced by a newer connection".into()));
        }
        if let Some(c) = &self.state.cluster {
            let version = self.state.agents.presence(&agent_id).version;
            c.announce(&agent_id, &version).await;
        }
        tracing::info!(agent = agent_id, peer = %self.peer, client = claims.client_id, "agent connected");
        self.live = Some((agent_id, conn));
        self.send(&AgentMessage::ConnectResponse(ConnectResponse::default()))
            .await
    }
}
