//! `mllp://HOST:PORT[?encoding=LABEL&enhanced=true|aa]`: an MLLP listener for HL7 v2 devices
//! (`0.0.0.0` for every interface). Each message is committed to the durable queue first; then,
//! by the channel's ACK mode (Medplum's `enhanced`):
//!
//! - `enhanced=aa`: an AA at once; the relay's answer is only recorded;
//! - `enhanced=true`: a CA at once, and the relay's answer later when it comes (the connection
//!   goes on reading meanwhile: the device's next message is committed and CA'd at once);
//! - otherwise (original mode): the relay's answer, or — when it has not come within
//!   [`AgentConfig::inbound_reply_wait`](crate::AgentConfig::inbound_reply_wait), or the relay
//!   said it cannot take the message yet — an AA saying the message is queued at the agent (it
//!   has it durably and will deliver it).
//!
//! A message that cannot be committed (disk full) is answered AE: the device keeps it.
//!
//! `mllps://HOST:PORT?cert=FILE&key=FILE[&ca=FILE]`: the same over TLS 1.2/1.3, the agent
//! presenting `cert`; with `ca`, devices must present a client certificate from those CAs.

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::CONTENT_TYPE_HL7_V2;
use hl7v2::{AckCode, Charset};
use mllp::{Request, Server, ServerOptions, ack_options};
use tokio::time::Instant;

use crate::ChannelProblem;
use crate::inbound::forward::first_line;
use crate::inbound::inbox::{Answer, Inbox};
use crate::inbound::{ChannelContext, Listener};
use crate::url::DeviceUrl;

/// An MLLP channel serves at most 32 device connections with frames of at most 8 MB: at most
/// 256 MB buffered per channel, whatever the senders do. A frame must be complete within 60 s.
const MAX_CONNECTIONS: usize = 32;
const MAX_FRAME: usize = 8 << 20;

/// How a channel acknowledges (Medplum's `enhanced` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPolicy {
    /// The relay's answer (or "queued at the agent" after the reply wait).
    Original,
    /// CA at once, the relay's answer later.
    Enhanced,
    /// AA at once.
    AcceptAtOnce,
}

impl AckPolicy {
    fn of(url: &DeviceUrl) -> AckPolicy {
        match url.get("enhanced") {
            Some("aa") => AckPolicy::AcceptAtOnce,
            Some("true") => AckPolicy::Enhanced,
            _ => AckPolicy::Original,
        }
    }
}

/// Starts the listener.
pub(crate) async fn start(
    ctx: &ChannelContext,
    name: &str,
    url: &DeviceUrl,
) -> Result<Listener, ChannelProblem> {
    let charset = super::charset(url, Charset::Utf8)?;
    let channel = Arc::new(Channel {
        inbox: ctx.inbox.clone(),
        name: name.to_owned(),
        charset,
        policy: AckPolicy::of(url),
        reply_wait: ctx.config.inbound_reply_wait,
    });
    let opts = ServerOptions {
        max_frame: MAX_FRAME,
        max_connections: MAX_CONNECTIONS,
        budget: Some(ctx.budget.clone()),
        ..ServerOptions::default()
    };
    let handler = move |req: Request| {
        let channel = channel.clone();
        async move { channel.on_message(req).await }
    };
    let listen = |source| ChannelProblem::Listen {
        addr: url.addr.clone(),
        source,
    };
    if url.scheme == "mllps" {
        let tls = crate::outbound::device_tls::server_config(url).map_err(ChannelProblem::Tls)?;
        let listener = tokio::net::TcpListener::bind(&url.addr)
            .await
            .map_err(listen)?;
        return Server::serve_tls(listener, opts, tls, handler)
            .map(Listener::Mllp)
            .map_err(listen);
    }
    Server::bind(&url.addr, opts, handler)
        .await
        .map(Listener::Mllp)
        .map_err(listen)
}

struct Channel {
    inbox: Arc<Inbox>,
    name: String,
    charset: Charset,
    policy: AckPolicy,
    reply_wait: Duration,
}

impl Channel {
    /// One message from a device: commit, maybe acknowledge at once, relay, answer.
    async fn on_message(self: Arc<Self>, req: Request) {
        let Ok(msg) = req.message() else { return };
        let text = self.charset.decode(req.bytes()).into_owned();
        let remote = req.peer().to_string();
        let receipt = match self
            .inbox
            .commit(&self.name, &remote, CONTENT_TYPE_HL7_V2, &text)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(channel = self.name, error = %e, "cannot queue a device message");
                let text = format!("agent could not store the message: {e}");
                let ack = hl7v2::build_ack(&msg, AckCode::AE, &ack_options(Some(text)));
                let _ = req.reply(&ack).await;
                return;
            }
        };
        match self.policy {
            AckPolicy::AcceptAtOnce => {
                self.inbox.forget(receipt);
                let ack = hl7v2::build_ack(&msg, AckCode::AA, &ack_options(None));
                let _ = req.reply(&ack).await;
            }
            AckPolicy::Enhanced => {
                let ca = hl7v2::build_ack(&msg, AckCode::CA, &ack_options(None));
                let _ = req.reply(&ca).await;
                // The relay's answer follows when it comes; the connection reads on.
                let deadline = Instant::now() + self.reply_wait;
                tokio::spawn(async move {
                    if let Some(a) = self.inbox.answer_by(receipt, deadline).await {
                        self.reply(&req, Some(a)).await;
                    }
                });
            }
            AckPolicy::Original => {
                let deadline = Instant::now() + self.reply_wait;
                let answer = self.inbox.answer_by(receipt, deadline).await;
                self.reply(&req, answer).await;
            }
        }
    }

    /// The relay's answer as the device gets it: an HL7 answer as it is, an error as AE, no
    /// answer yet as AA "queued at the agent for delivery".
    async fn reply(&self, req: &Request, answer: Option<Answer>) {
        let Ok(msg) = req.message() else { return };
        let reply = match answer {
            Some(a) if a.status < 400 && a.body.starts_with("MSH") => {
                self.charset.encode(&a.body).into_owned()
            }
            Some(a) => hl7v2::build_ack(&msg, AckCode::AE, &ack_options(Some(first_line(&a.body)))),
            None => hl7v2::build_ack(
                &msg,
                AckCode::AA,
                &ack_options(Some("queued at the agent for delivery".into())),
            ),
        };
        if let Err(e) = req.reply(&reply).await {
            tracing::warn!(channel = self.name, error = %e, "could not answer the device");
        }
    }
}
