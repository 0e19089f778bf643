//! Opening the WebSocket to the relay: TCP, TLS for `https` base URLs, the WebSocket handshake,
//! each step within its limit.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{AgentConfig, Error};

/// Limit on each step of connecting (TCP, TLS, WebSocket handshake).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Stream>>;

/// The byte stream under the WebSocket: TCP, or TLS over TCP.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Opens the WebSocket to `<baseUrl host>/ws/agent`.
pub(crate) async fn open(
    config: &AgentConfig,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Ws, Error> {
    let url = config.ws_url();
    let (secure, rest) = match url.split_once("://") {
        Some(("wss", rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => (false, url.as_str()),
    };
    let authority = rest.split('/').next().unwrap_or(rest).to_owned();
    let (host, port) = split_host_port(&authority, if secure { 443 } else { 80 });
    let step = |step: &'static str| {
        let authority = authority.clone();
        move |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
            step,
            authority,
            source,
        }
    };
    let timed_out = |step: &'static str| Error::ConnectTimeout {
        step,
        authority: authority.clone(),
    };
    let tcp = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| timed_out("connecting"))?
    .map_err(|e| step("connecting")(Box::new(e)))?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Stream> = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Error::Tls(Box::new(e)))?;
        let tls = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| timed_out("TLS handshake"))?
        .map_err(|e| step("TLS handshake")(Box::new(e)))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(agent_protocol::DEFAULT_MAX_MESSAGE))
        .max_frame_size(Some(agent_protocol::DEFAULT_MAX_MESSAGE));
    let (ws, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ws_config)),
    )
    .await
    .map_err(|_| timed_out("WebSocket handshake"))?
    .map_err(|e| step("WebSocket handshake")(Box::new(e)))?;
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
