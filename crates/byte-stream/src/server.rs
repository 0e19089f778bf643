//! [`Server`]: serves start/end-byte framed connections. Each frame goes to a [`Handler`] the
//! moment it is complete; the handler's answers are written back in the order the frames came,
//! while the connection goes on reading.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Budget, DelimitedFramer, Listener, ListenerOptions, Shutdown};

/// Answers not yet written on one connection; when this many wait, reading pauses.
const MAX_PENDING_ANSWERS: usize = 64;

/// How a [`Server`] frames and bounds its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// The byte that opens a frame.
    pub start: u8,
    /// The byte that closes it (kept in the frame).
    pub end: u8,
    /// Largest frame, end byte included; a larger one is dropped and logged.
    pub max_frame: usize,
    /// Most connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// A started frame must end within this time, or the connection is closed.
    pub frame_timeout: Duration,
    /// A cap shared with other listeners, if any.
    pub budget: Option<Budget>,
}

impl ServerOptions {
    /// Frames `start … end`, at most 8 MiB, 32 connections, 60 s to finish a frame.
    pub fn new(start: u8, end: u8) -> ServerOptions {
        ServerOptions {
            start,
            end,
            max_frame: 8 << 20,
            max_connections: 32,
            frame_timeout: Duration::from_secs(60),
            budget: None,
        }
    }
}

/// The answer to a frame: bytes to write back, or nothing.
pub type Answer = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// Takes each frame as it completes.
pub trait Handler: Send + Sync + 'static {
    /// Called as soon as `frame` (start byte dropped, end byte kept) is complete, in order.
    /// Work done before returning is done before the next frame is read (commit it durably
    /// here); the returned answer is awaited on its own and written back in frame order.
    fn frame(&self, peer: SocketAddr, frame: BytesMut) -> Answer;
}

/// A frame server. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    listener: Listener,
}

impl Server {
    /// Binds `addr` and serves each connection with `handler`.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn bind<H: Handler>(
        addr: &str,
        opts: ServerOptions,
        handler: H,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Server::serve(listener, opts, handler)
    }

    /// Serves connections from a listener the caller bound.
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read.
    pub fn serve<H: Handler>(
        listener: TcpListener,
        opts: ServerOptions,
        handler: H,
    ) -> std::io::Result<Server> {
        let handler = Arc::new(handler);
        let limits = ListenerOptions {
            max_connections: opts.max_connections,
            budget: opts.budget.clone(),
        };
        let opts = Arc::new(opts);
        let listener = Listener::serve(listener, limits, move |stream, peer, shutdown| {
            serve(stream, peer, opts.clone(), handler.clone(), shutdown)
        })?;
        Ok(Server { listener })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The accept loop's counters.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Stops accepting and closes the connections, waiting up to `drain` for them.
    pub async fn shutdown(self, drain: Duration) {
        self.listener.shutdown(drain).await;
    }
}

/// One connection: frames go to the handler as they complete; a writer task writes the answers
/// back in order.
async fn serve<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    opts: Arc<ServerOptions>,
    handler: Arc<H>,
    mut shutdown: Shutdown,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (to_writer, mut answers) = mpsc::channel::<Answer>(MAX_PENDING_ANSWERS);
    let writer = tokio::spawn(async move {
        while let Some(answer) = answers.recv().await {
            let Some(bytes) = answer.await else { continue };
            if let Err(e) = wr.write_all(&bytes).await {
                tracing::warn!(%peer, error = %e, "could not answer the device");
                return;
            }
        }
    });
    let mut frames = DelimitedFramer::new(opts.start, opts.end, opts.max_frame);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut frame_since: Option<Instant> = None;
    'conn: loop {
        loop {
            match frames.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if to_writer.send(handler.frame(peer, frame)).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => tracing::warn!(%peer, error = %e, "frame dropped"),
            }
        }
        frame_since = if frames.in_frame() {
            frame_since.or_else(|| Some(Instant::now()))
        } else {
            None
        };
        let read = async {
            match frame_since {
                Some(t) => tokio::time::timeout_at(t + opts.frame_timeout, rd.read_buf(&mut buf))
                    .await
                    .ok(),
                None => Some(rd.read_buf(&mut buf).await),
            }
        };
        tokio::select! {
            r = read => match r {
                Some(Ok(n)) if n > 0 => {}
                Some(Ok(_)) | Some(Err(_)) => break,
                None => {
                    tracing::warn!(%peer, timeout_ms = opts.frame_timeout.as_millis() as u64,
                        "frame not finished in time; closing");
                    break;
                }
            },
            () = shutdown.recv() => {
                writer.abort();
                return;
            }
        }
    }
    if let Some(len) = frames.finish(&mut buf) {
        tracing::warn!(%peer, len, "connection closed inside a frame; its bytes are dropped");
    }
    // Answers to what was received still go out (the device may only have shut its sending
    // side); each answer bounds its own wait.
    drop(to_writer);
    let _ = writer.await;
}
