//! What waits to be written to one agent's socket, and the task that writes it.
//!
//! The session never waits on the socket: it hands frames to the [`Outbox`] (`push` never
//! blocks) and a writer task sends them, each within the write deadline. Unsent data is
//! bounded in bytes for what callers send: a request that does not fit beside what is queued
//! is refused ([`Outbox::offer`]: the caller hears the agent is not keeping up, the socket
//! stays open), so a healthy agent is not dropped because a few large pushes came at once.
//! The link's own small frames (heartbeats, answers) are always queued. A write that does not
//! drain within the deadline marks the outbox failed; the session sees that at once and closes
//! the socket whatever else is queued, and the agent is disconnected. Heartbeats and the
//! silence check therefore never wait behind a full queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::{mpsc, oneshot, watch};

/// Why the outbox stopped taking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// A write did not complete within the deadline.
    WriteTimeout(Duration),
    /// The socket failed or closed.
    Closed,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stalled::WriteTimeout(t) => write!(
                f,
                "the agent's socket took no data for {} ms",
                t.as_millis()
            ),
            Stalled::Closed => f.write_str("the agent's socket closed"),
        }
    }
}

/// A frame and, optionally, who wants to know it was written.
#[derive(Debug)]
enum Frame {
    Text(String, Option<oneshot::Sender<()>>),
    Close(String),
}

/// The sending side: cheap to clone, shared by the session and its inbound tasks.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    frames: mpsc::UnboundedSender<Frame>,
    unsent: Arc<AtomicUsize>,
    max_unsent: usize,
    failed: Arc<watch::Sender<Option<Stalled>>>,
}

/// Why [`Outbox::offer`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It does not fit beside what is queued (the bound, in bytes): try again later.
    Full(usize),
    /// The outbox failed: the socket is being closed.
    Stalled(Stalled),
}

impl Outbox {
    /// Queues one of the link's own frames (a heartbeat, an answer: small, and as many as the
    /// link allows); `written` hears when it is on the socket.
    ///
    /// # Errors
    ///
    /// The outbox failed before: the frame is not sent, and the session closes the socket.
    pub(crate) fn push(
        &self,
        text: String,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<(), Stalled> {
        if let Some(s) = *self.failed.borrow() {
            return Err(s);
        }
        self.unsent.fetch_add(text.len(), Ordering::AcqRel);
        self.frames
            .send(Frame::Text(text, written))
            .map_err(|_| self.fail(Stalled::Closed))
    }

    /// Queues a caller's frame (a push) if it fits beside what is queued: unsent data stays
    /// within the bound (one frame alone is always taken: the bound is above the largest
    /// message); `written` hears when it is on the socket.
    ///
    /// # Errors
    ///
    /// [`Refused::Full`]: not queued, nothing else changes. [`Refused::Stalled`]: the outbox
    /// failed before.
    pub(crate) fn offer(
        &self,
        text: String,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<(), Refused> {
        if let Some(s) = *self.failed.borrow() {
            return Err(Refused::Stalled(s));
        }
        let n = text.len();
        let before = self.unsent.fetch_add(n, Ordering::AcqRel);
        if before > 0 && before + n > self.max_unsent {
            self.unsent.fetch_sub(n, Ordering::AcqRel);
            return Err(Refused::Full(self.max_unsent));
        }
        self.frames
            .send(Frame::Text(text, written))
            .map_err(|_| Refused::Stalled(self.fail(Stalled::Closed)))
    }

    /// Queues a close frame (after what is already queued).
    pub(crate) fn close(&self, reason: &str) {
        let _ = self.frames.send(Frame::Close(reason.to_owned()));
    }

    fn fail(&self, why: Stalled) -> Stalled {
        fail(&self.failed, why)
    }
}

/// Records the first reason the outbox failed; returns it.
fn fail(failed: &watch::Sender<Option<Stalled>>, why: Stalled) -> Stalled {
    failed.send_if_modified(|f| {
        if f.is_none() {
            *f = Some(why);
            true
        } else {
            false
        }
    });
    failed.borrow().unwrap_or(why)
}

/// The session's view of the writer: resolves when the outbox failed.
#[derive(Debug)]
pub(crate) struct Failure {
    rx: watch::Receiver<Option<Stalled>>,
}

impl Failure {
    /// Waits until the outbox fails; why.
    pub(crate) async fn wait(&mut self) -> Stalled {
        match self.rx.wait_for(Option::is_some).await {
            Ok(s) => s.unwrap_or(Stalled::Closed),
            Err(_) => Stalled::Closed,
        }
    }
}

/// Starts the writer task for `sink`; returns the outbox, its failure signal and the task.
pub(crate) fn start(
    sink: SplitSink<WebSocket, Message>,
    max_unsent: usize,
    write_timeout: Duration,
) -> (Outbox, Failure, tokio::task::JoinHandle<()>) {
    let (frames, rx) = mpsc::unbounded_channel();
    let (failed, failed_rx) = watch::channel(None);
    let outbox = Outbox {
        frames,
        unsent: Arc::new(AtomicUsize::new(0)),
        max_unsent,
        failed: Arc::new(failed),
    };
    // The writer holds no sender: the channel ends when the last `Outbox` is dropped.
    let task = tokio::spawn(write(
        sink,
        rx,
        outbox.unsent.clone(),
        outbox.failed.clone(),
        write_timeout,
    ));
    (outbox, Failure { rx: failed_rx }, task)
}

async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::UnboundedReceiver<Frame>,
    unsent: Arc<AtomicUsize>,
    failed: Arc<watch::Sender<Option<Stalled>>>,
    write_timeout: Duration,
) {
    while let Some(frame) = frames.recv().await {
        match frame {
            Frame::Text(text, written) => {
                let n = text.len();
                let sent =
                    tokio::time::timeout(write_timeout, sink.send(Message::Text(text.into())))
                        .await;
                unsent.fetch_sub(n, Ordering::AcqRel);
                match sent {
                    Ok(Ok(())) => {
                        if let Some(w) = written {
                            let _ = w.send(());
                        }
                    }
                    Ok(Err(_)) => {
                        fail(&failed, Stalled::Closed);
                        return;
                    }
                    Err(_) => {
                        fail(&failed, Stalled::WriteTimeout(write_timeout));
                        return;
                    }
                }
            }
            Frame::Close(reason) => {
                // 1000 normal closure; 1008 policy violation when the relay ends it.
                let code = if reason.is_empty() { 1000 } else { 1008 };
                let close = Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }));
                let _ = tokio::time::timeout(write_timeout, sink.send(close)).await;
                break;
            }
        }
    }
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}
