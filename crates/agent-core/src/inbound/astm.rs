//! `astm://HOST:PORT[?encoding=LABEL]`: an E1381 listener as the LIS. Each message is committed
//! when its last frame arrives and before that frame is acknowledged (earlier frames are
//! acknowledged one by one as E1381 requires), then forwarded. An ASTM answer from the relay
//! (orders for a host query, say) is sent back to the analyzer when it comes.
//!
//! The connection never waits on the relay: while an answer is outstanding it goes on reading
//! and answering the analyzer's ENQs and frames within E1381's timers (15 s), committing each
//! further message as it completes.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agent_protocol::CONTENT_TYPE_ASTM;
use byte_stream::{Listener as Accept, ListenerOptions, Shutdown};
use hl7v2::Charset;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::ChannelProblem;
use crate::inbound::inbox::{Answer, Inbox, Receipt};
use crate::inbound::{ChannelContext, Listener};
use crate::url::DeviceUrl;

/// Most analyzer connections one ASTM channel serves at once, and the largest message each may
/// send: at most 64 MB buffered per channel, whatever the senders do.
const MAX_CONNECTIONS: usize = 16;
const MAX_MESSAGE: usize = 4 << 20;
/// Relay answers awaited on one connection; past this the oldest is only recorded.
const MAX_OUTSTANDING: usize = 16;

/// Starts the listener.
pub(crate) async fn start(
    ctx: &ChannelContext,
    name: &str,
    url: &DeviceUrl,
) -> Result<Listener, ChannelProblem> {
    let channel = Arc::new(Channel {
        inbox: ctx.inbox.clone(),
        name: name.to_owned(),
        charset: super::charset(url, Charset::Latin1)?,
        reply_wait: ctx.config.inbound_reply_wait,
    });
    let opts = ListenerOptions {
        max_connections: MAX_CONNECTIONS,
        budget: Some(ctx.budget.clone()),
    };
    Accept::bind(&url.addr, opts, move |stream, peer, shutdown| {
        channel.clone().serve(stream, peer, shutdown)
    })
    .await
    .map(Listener::Accept)
    .map_err(|source| ChannelProblem::Listen {
        addr: url.addr.clone(),
        source,
    })
}

struct Channel {
    inbox: Arc<Inbox>,
    name: String,
    charset: Charset,
    reply_wait: Duration,
}

type Pending = Pin<Box<dyn Future<Output = Option<Answer>> + Send>>;

impl Channel {
    /// One analyzer connection.
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, mut shutdown: Shutdown) {
        // The message is stored before the analyzer gets the ACK of its last frame.
        let opts = astm::LinkOptions {
            max_message: MAX_MESSAGE,
            confirm_before_ack: true,
            ..astm::LinkOptions::default()
        };
        let mut conn = astm::Connection::new(stream, opts);
        // Answers still to come, in message order; the first is being awaited.
        let mut waiting: VecDeque<(Receipt, Instant)> = VecDeque::new();
        let mut current: Option<Pending> = None;
        loop {
            if current.is_none()
                && let Some((receipt, deadline)) = waiting.pop_front()
            {
                let inbox = self.inbox.clone();
                current = Some(Box::pin(
                    async move { inbox.answer_by(receipt, deadline).await },
                ));
            }
            // `next_message` may be dropped here when an answer comes first: it waits on the
            // socket or a timer, and the link's state lives in `conn`, so nothing is lost.
            tokio::select! {
                message = conn.next_message() => {
                    let Ok(Some(message)) = message else { break };
                    let text = self.charset.decode(&message).into_owned();
                    let committed =
                        self.inbox
                            .commit(&self.name, &peer.to_string(), CONTENT_TYPE_ASTM, &text);
                    // ACK (stored) or NAK (the analyzer sends the frame again) the last frame.
                    if conn.confirm(committed.is_ok()).await.is_err() {
                        break;
                    }
                    match committed {
                        Ok(receipt) => {
                            if waiting.len() == MAX_OUTSTANDING
                                && let Some((oldest, _)) = waiting.pop_front()
                            {
                                self.inbox.forget(oldest);
                            }
                            waiting.push_back((receipt, Instant::now() + self.reply_wait));
                        }
                        Err(e) => {
                            tracing::error!(channel = self.name, error = %e, "cannot queue an analyzer message");
                        }
                    }
                }
                answer = next_answer(&mut current) => {
                    current = None;
                    if let Some(a) = answer
                        && a.status < 400
                        && a.body.trim_start().starts_with('H')
                    {
                        let records = self.charset.encode(&astm::records_from_text(&a.body)).into_owned();
                        if let Err(e) = conn.send(&records).await {
                            tracing::warn!(channel = self.name, error = %e, "could not send the relay's answer to the analyzer");
                        }
                    }
                }
                () = shutdown.recv() => break,
            }
        }
        for (receipt, _) in waiting {
            self.inbox.forget(receipt);
        }
    }
}

/// The awaited answer; never, when none is awaited.
async fn next_answer(current: &mut Option<Pending>) -> Option<Answer> {
    match current {
        Some(answer) => answer.await,
        None => std::future::pending().await,
    }
}
