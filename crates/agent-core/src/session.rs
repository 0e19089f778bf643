//! The WebSocket session with the relay, and reconnecting it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agent_protocol::{
    AgentMessage, ConnectRequest, Decoded, Direction, HeartbeatRequest, HeartbeatResponse,
    LogsResponse, StatsResponse, StatusResponse, TransmitRequest,
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{Error, Event, Inner, VERSION, channels, dispatch};

/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
/// Limit on each step of connecting (TCP, TLS, WebSocket handshake, connect response).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps a session up until the agent stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut failures: u32 = 0;
    while !inner.stopping() {
        let started = Instant::now();
        let reason = match session(&inner).await {
            Ok(reason) => reason,
            Err(e) => e.to_string(),
        };
        inner.set_link(None);
        if inner.stopping() {
            break;
        }
        tracing::warn!(reason, "relay session ended; reconnecting");
        inner.emit(Event::Disconnected {
            reason: reason.clone(),
        });
        failures = if started.elapsed() > STABLE {
            0
        } else {
            failures.saturating_add(1)
        };
        let delay = backoff(&inner, failures);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "waiting before reconnecting"
        );
        let mut stop = inner.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
    }
}

/// `min × 2^(failures-1)`, capped at `max`, then a random part of it dropped (between 0 and
/// half), so that a fleet of agents does not reconnect in step after a relay restart.
fn backoff(inner: &Inner, failures: u32) -> Duration {
    let (min, max) = (inner.config.min_backoff, inner.config.max_backoff);
    let exp = min.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(max).max(min);
    let mut r = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let frac = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
    capped.mul_f64(1.0 - 0.5 * frac)
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Stream>>;

/// The byte stream under the WebSocket: TCP, or TLS over TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Opens the WebSocket to `<baseUrl host>/ws/agent`.
async fn open(inner: &Inner) -> Result<Ws, Error> {
    let url = inner.config.ws_url();
    let (secure, rest) = match url.split_once("://") {
        Some(("wss", rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => (false, url.as_str()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = split_host_port(authority, if secure { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| Error::Http(format!("connecting to {authority}: timed out")))?
    .map_err(|e| Error::Http(format!("connecting to {authority}: {e}")))?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Error::Tls(format!("{host}: {e}")))?;
        let tls = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_rustls::TlsConnector::from(inner.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| Error::Tls(format!("handshake with {authority} timed out")))?
        .map_err(|e| Error::Tls(format!("{authority}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(agent_protocol::DEFAULT_MAX_MESSAGE))
        .max_frame_size(Some(agent_protocol::DEFAULT_MAX_MESSAGE));
    let (ws, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config)),
    )
    .await
    .map_err(|_| Error::Http(format!("WebSocket handshake with {authority} timed out")))?
    .map_err(|e| Error::Http(format!("WebSocket handshake with {authority}: {e}")))?;
    Ok(ws)
}

/// `host:port`, `[v6]:port` or `host` → (host, port).
fn split_host_port(authority: &str, default: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((h, p)) = rest.split_once(']')
    {
        return (
            h.to_owned(),
            p.trim_start_matches(':').parse().unwrap_or(default),
        );
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(default)),
        _ => (authority.to_owned(), default),
    }
}

/// One session: log in, load the configuration, connect, serve until it ends. The reason it
/// ended, or why it could not start.
async fn session(inner: &Arc<Inner>) -> Result<String, Error> {
    let token = inner.client.token().await?;
    channels::reload(inner).await?;
    let mut ws = open(inner).await?;
    let connect = AgentMessage::ConnectRequest(ConnectRequest {
        access_token: Some(token),
        agent_id: Some(inner.config.agent_id.clone()),
        callback: None,
    });
    ws.send(Message::Text(connect.to_json().into()))
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    // The relay answers connect, or refuses with agent:error.
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| Error::Relay("no answer to agent:connect:request".into()))?;
        let Some(Ok(frame)) = frame else {
            return Err(Error::Relay(
                "connection closed before agent:connect:response".into(),
            ));
        };
        match decode(&frame) {
            Some(Decoded::Message(AgentMessage::ConnectResponse(_))) => break,
            Some(Decoded::Message(AgentMessage::Error(e))) => {
                if e.body.starts_with("Invalid access token") {
                    inner.client.invalidate();
                }
                return Err(Error::Relay(format!("connect refused: {}", e.body)));
            }
            _ => continue,
        }
    }
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    inner.set_link(Some(tx));
    tracing::info!(
        agent = inner.config.agent_id,
        relay = inner.config.base(),
        "connected to the relay"
    );
    inner.emit(Event::Connected);
    let period = inner.config.heartbeat_interval;
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    let mut outstanding = 0u32;
    let mut stop = inner.stop.clone();
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(Ok(frame)) = frame else { return Ok("connection closed by the relay".into()) };
                if let Message::Close(c) = &frame {
                    return Ok(format!("relay closed the connection: {}", c.as_ref().map_or("", |c| c.reason.as_str())));
                }
                outstanding = 0;
                handle(inner, &frame).await;
            }
            out = rx.recv() => {
                let Some(text) = out else { return Ok("link dropped".into()) };
                ws.send(Message::Text(text.into())).await.map_err(|e| Error::Http(e.to_string()))?;
            }
            _ = ticker.tick() => {
                // Two periods without a word from the relay: the link is dead even if TCP has
                // not noticed.
                if outstanding >= 2 {
                    return Ok("relay stopped answering heartbeats".into());
                }
                outstanding += 1;
                let hb = AgentMessage::HeartbeatRequest(HeartbeatRequest::default());
                ws.send(Message::Text(hb.to_json().into())).await.map_err(|e| Error::Http(e.to_string()))?;
            }
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                return Ok("agent stopping".into());
            }
        }
    }
}

/// The relay's message in a frame: decoded, unknown (to answer with `agent:error`), or nothing.
fn decode(frame: &Message) -> Option<Decoded> {
    let bytes: &[u8] = match frame {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    match AgentMessage::decode(
        bytes,
        Direction::ToAgent,
        agent_protocol::DEFAULT_MAX_MESSAGE,
    ) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "undecodable message from the relay");
            None
        }
    }
}

/// Handles one message from the relay.
async fn handle(inner: &Arc<Inner>, frame: &Message) {
    let msg = match decode(frame) {
        Some(Decoded::Message(m)) => m,
        Some(Decoded::Unknown { kind, callback }) => {
            inner
                .send(&AgentMessage::error(
                    format!("Unknown message type: {kind}"),
                    callback,
                ))
                .await;
            return;
        }
        None => return,
    };
    match msg {
        AgentMessage::HeartbeatRequest(_) => {
            inner
                .send(&AgentMessage::HeartbeatResponse(HeartbeatResponse {
                    version: VERSION.into(),
                    callback: None,
                }))
                .await;
        }
        AgentMessage::HeartbeatResponse(_) | AgentMessage::ConnectResponse(_) => {}
        AgentMessage::TransmitRequest(req) => push(inner, req),
        AgentMessage::TransmitResponse(r) => {
            if let Some(cb) = r.callback.clone() {
                inner.resolve(&cb, AgentMessage::TransmitResponse(r));
            }
        }
        AgentMessage::Error(e) => {
            let delivered = match e.callback.clone() {
                Some(cb) => inner.resolve(&cb, AgentMessage::Error(e.clone())),
                None => false,
            };
            if !delivered {
                tracing::warn!(error = e.body, "error from the relay");
            }
        }
        AgentMessage::ReloadConfigRequest(r) => {
            let answer = match channels::reload(inner).await {
                Ok(()) => AgentMessage::ReloadConfigResponse(StatusResponse {
                    status_code: 200,
                    callback: r.callback,
                }),
                Err(e) => AgentMessage::error(e.to_string(), r.callback),
            };
            inner.send(&answer).await;
        }
        AgentMessage::LogsRequest(r) => {
            let limit = r.limit.unwrap_or(20).min(1000) as usize;
            inner
                .send(&AgentMessage::LogsResponse(LogsResponse {
                    status_code: 200,
                    logs: inner.logs.recent(limit),
                    callback: r.callback,
                }))
                .await;
        }
        AgentMessage::UpgradeRequest(r) => {
            inner
                .send(&AgentMessage::error(
                    "Upgrading is not supported by the Outpost agent: install the new binary and restart the service",
                    r.callback,
                ))
                .await;
        }
        AgentMessage::StatsRequest(r) => {
            let stats = serde_json::json!({
                "live": inner.is_live(),
                "queueDepth": inner.queue.depth().unwrap_or(-1),
                "version": VERSION,
            });
            inner
                .send(&AgentMessage::StatsResponse(StatsResponse {
                    status_code: 200,
                    stats,
                    callback: r.callback,
                }))
                .await;
        }
        other => {
            let callback = other.callback().map(str::to_owned);
            inner
                .send(&AgentMessage::error(
                    format!("Unexpected message type: {}", other.kind()),
                    callback,
                ))
                .await;
        }
    }
}

/// A push: dispatched on its own task, answered exactly once.
fn push(inner: &Arc<Inner>, req: TransmitRequest) {
    let inner = inner.clone();
    tokio::spawn(async move {
        inner.emit(Event::PushReceived {
            remote: req.remote.clone(),
            content_type: req.content_type.clone(),
        });
        if inner.off.load(Ordering::Relaxed) {
            inner
                .send(&AgentMessage::error(
                    "Agent.status is currently set to off",
                    req.callback,
                ))
                .await;
            return;
        }
        let resp = dispatch::dispatch(&inner, &req).await;
        let status = resp.status_code.unwrap_or(200);
        tracing::info!(remote = req.remote, status, "push answered");
        inner.emit(Event::PushAnswered {
            remote: req.remote.clone(),
            status,
            body: resp.body.clone(),
        });
        if !inner.send(&AgentMessage::TransmitResponse(resp)).await {
            tracing::warn!(
                remote = req.remote,
                "push answered after the session ended; the relay has failed it already"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("relay.example.org", 443),
            ("relay.example.org".into(), 443)
        );
        assert_eq!(
            split_host_port("127.0.0.1:8103", 80),
            ("127.0.0.1".into(), 8103)
        );
        assert_eq!(split_host_port("[::1]:9000", 80), ("::1".into(), 9000));
    }
}
