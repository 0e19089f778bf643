//! `tcp://HOST:PORT?startChar=C&endChar=C` (both required, URL-encoded, e.g. `%02`, `%03`): a
//! byte-stream channel. Each frame (the bytes after the start byte, through the end byte, as
//! Medplum's byte-stream channel cuts them) is committed to the queue as soon as it is complete
//! and forwarded hex-encoded as `application/octet-stream`; an `application/octet-stream` answer
//! from the relay is hex-decoded and written back to the device as is, in the order the frames
//! came. Any other answer (an error, `text/plain`) is only recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_protocol::CONTENT_TYPE_OCTET_STREAM;
use byte_stream::{Answer, Handler, Server, ServerOptions};
use bytes::BytesMut;
use tokio::time::Instant;

use crate::ChannelProblem;
use crate::inbound::inbox::Inbox;
use crate::inbound::{ChannelContext, Listener};
use crate::url::DeviceUrl;

/// Most device connections one byte-stream channel serves at once and the largest frame each
/// may send: at most 256 MB buffered per channel. A started frame has 60 s to end.
const MAX_CONNECTIONS: usize = 32;
const MAX_FRAME: usize = 8 << 20;
const FRAME_TIME: Duration = Duration::from_secs(60);

/// Starts the listener.
pub(crate) async fn start(
    ctx: &ChannelContext,
    name: &str,
    url: &DeviceUrl,
) -> Result<Listener, ChannelProblem> {
    let (start, end) = delimiters(url)?;
    let opts = ServerOptions {
        max_frame: MAX_FRAME,
        max_connections: MAX_CONNECTIONS,
        frame_timeout: FRAME_TIME,
        budget: Some(ctx.budget.clone()),
        ..ServerOptions::new(start, end)
    };
    let channel = Channel {
        inbox: ctx.inbox.clone(),
        name: name.to_owned(),
        reply_wait: ctx.config.inbound_reply_wait,
    };
    Server::bind(&url.addr, opts, channel)
        .await
        .map(Listener::Stream)
        .map_err(|source| ChannelProblem::Listen {
            addr: url.addr.clone(),
            source,
        })
}

/// A byte-stream channel's `startChar` and `endChar`.
pub(super) fn delimiters(url: &DeviceUrl) -> Result<(u8, u8), ChannelProblem> {
    Ok((delimiter(url, "startChar")?, delimiter(url, "endChar")?))
}

/// A byte-stream channel's delimiter (`startChar`, `endChar`): the first character of the
/// parameter's value, which must be a single byte (code point below 256).
fn delimiter(url: &DeviceUrl, key: &'static str) -> Result<u8, ChannelProblem> {
    let value = url.get(key).ok_or(ChannelProblem::MissingDelimiter(key))?;
    let c = value
        .chars()
        .next()
        .ok_or(ChannelProblem::EmptyDelimiter(key))?;
    u8::try_from(u32::from(c)).map_err(|_| ChannelProblem::WideDelimiter { key, value: c })
}

struct Channel {
    inbox: Arc<Inbox>,
    name: String,
    reply_wait: Duration,
}

impl Handler for Channel {
    fn frame(&self, peer: SocketAddr, frame: BytesMut) -> Answer {
        let text = hex::encode(&frame);
        let receipt = match self.inbox.commit(
            &self.name,
            &peer.to_string(),
            CONTENT_TYPE_OCTET_STREAM,
            &text,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(channel = self.name, error = %e, "cannot queue a device message");
                return Box::pin(async { None });
            }
        };
        let (inbox, name) = (self.inbox.clone(), self.name.clone());
        let deadline = Instant::now() + self.reply_wait;
        Box::pin(async move {
            let a = inbox.answer_by(receipt, deadline).await?;
            if a.status >= 400 || a.content_type != CONTENT_TYPE_OCTET_STREAM || a.body.is_empty() {
                return None;
            }
            match hex::decode(a.body.trim()) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::warn!(channel = name, error = %e, "the relay's answer is not hex; not sent");
                    None
                }
            }
        })
    }
}
