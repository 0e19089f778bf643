//! [`Server`]: accepts MLLP connections and hands each message to a [`Handler`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use byte_stream::{Budget, Listener, ListenerOptions, ListenerStats, Shutdown};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use hl7v2::{AckCode, AckError, AckOptions, Message, build_reject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::codec::FramedWrite;

use crate::{DEFAULT_MAX_FRAME, Error, Framer, MllpCodec};

/// Bytes read at a time (the buffer grows for larger frames).
const READ_CHUNK: usize = 64 * 1024;

/// How a [`Server`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Largest frame content accepted; a larger frame is answered with AR and skipped.
    pub max_frame: usize,
    /// Most connections served at once; more are closed on arrival.
    pub max_connections: usize,
    /// A connection cap shared with other listeners of the process, if any.
    pub budget: Option<Budget>,
    /// A frame that has started must be complete within this time, or the connection is
    /// closed (a sender stuck mid-frame, or a slow-loris). Idle connections between frames are
    /// kept: devices hold MLLP connections open for hours.
    pub frame_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 1024,
            budget: None,
            frame_timeout: Duration::from_secs(60),
        }
    }
}

/// The write half of a connection: TCP, or TLS over TCP.
trait WriteHalf: AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncWrite + Send + Unpin + std::fmt::Debug> WriteHalf for T {}

type Writer = Arc<Mutex<FramedWrite<Box<dyn WriteHalf>, MllpCodec>>>;

/// Time allowed for a TLS handshake on a new connection.
#[cfg(feature = "tls")]
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One received message, with the means to answer it.
#[derive(Debug)]
pub struct Request {
    peer: SocketAddr,
    frame: Bytes,
    writer: Writer,
}

impl Request {
    /// Who sent it.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The message as received (the server has checked that it parses).
    pub fn bytes(&self) -> &Bytes {
        &self.frame
    }

    /// The message parsed.
    pub fn message(&self) -> Result<Message<'_>, hl7v2::Error> {
        Message::parse(&self.frame)
    }

    /// Sends a reply (an acknowledgement) on the connection at once. A handler may reply
    /// more than once, for example a commit ACK and later an application ACK.
    pub async fn reply(&self, bytes: &[u8]) -> Result<(), Error> {
        self.writer.lock().await.send(bytes).await
    }
}

/// Handles one message. Messages on one connection are handled one at a time, in order.
pub trait Handler: Send + Sync + 'static {
    /// Handles `req`, replying with [`Request::reply`].
    fn handle(&self, req: Request) -> impl Future<Output = ()> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    fn handle(&self, req: Request) -> impl Future<Output = ()> + Send {
        self(req)
    }
}

/// The acknowledgements a receiver owes for a message it accepted, stamped now:
/// [`hl7v2::acks_for`] with the clock read here.
pub fn acks_for(msg: &Message<'_>, enhanced: bool) -> Vec<Vec<u8>> {
    hl7v2::acks_for(msg, enhanced, &chrono::Utc::now())
}

/// Options for an acknowledgement sent now: [`hl7v2::ack_options_at`] with the clock read here.
pub fn ack_options(text: Option<String>) -> AckOptions {
    hl7v2::ack_options_at(&chrono::Utc::now(), text)
}

/// The AR (application reject) for a frame that is not a readable message, with `error` in its
/// ERR segment and MSA-3 (see [`hl7v2::build_reject`]): MSA-2 is the frame's control ID
/// whenever its header can be read, even when MSH-2 cannot.
pub fn reject(frame: &[u8], error: AckError) -> Vec<u8> {
    let mut opts = ack_options(Some(error.text.clone()));
    opts.error = Some(error);
    build_reject(frame, AckCode::AR, &opts)
}

/// An MLLP server. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    listener: Listener,
}

impl Server {
    /// Binds `addr` and starts serving with `handler`.
    pub async fn bind<H: Handler>(
        addr: &str,
        opts: ServerOptions,
        handler: H,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Server::serve(listener, opts, handler)
    }

    /// Serves connections from a listener the caller bound (no window in which another
    /// process could take the port).
    pub fn serve<H: Handler>(
        listener: TcpListener,
        opts: ServerOptions,
        handler: H,
    ) -> std::io::Result<Server> {
        let limits = ListenerOptions {
            max_connections: opts.max_connections,
            budget: opts.budget.clone(),
        };
        let (handler, opts) = (Arc::new(handler), Arc::new(opts));
        let listener = Listener::serve(
            listener,
            limits,
            move |stream: TcpStream, peer, shutdown| {
                let (handler, opts) = (handler.clone(), opts.clone());
                async move {
                    let (read, write) = stream.into_split();
                    if let Err(e) =
                        serve(read, Box::new(write), peer, &opts, &*handler, shutdown).await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            },
        )?;
        Ok(Server { listener })
    }

    /// [`Server::serve`] over TLS (`mllps://`): each connection's TLS handshake as `tls` says
    /// (its certificate; a client certificate required when it has a client verifier), within
    /// 10 s; a connection whose handshake fails is closed and logged, naming the problem.
    #[cfg(feature = "tls")]
    pub fn serve_tls<H: Handler>(
        listener: TcpListener,
        opts: ServerOptions,
        tls: Arc<rustls::ServerConfig>,
        handler: H,
    ) -> std::io::Result<Server> {
        let limits = ListenerOptions {
            max_connections: opts.max_connections,
            budget: opts.budget.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let (handler, opts) = (Arc::new(handler), Arc::new(opts));
        let listener = Listener::serve(
            listener,
            limits,
            move |stream: TcpStream, peer, shutdown| {
                let (handler, opts, acceptor) = (handler.clone(), opts.clone(), acceptor.clone());
                async move {
                    let stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "TLS handshake not completed within 10 s");
                            return;
                        }
                    };
                    let (read, write) = tokio::io::split(stream);
                    if let Err(e) =
                        serve(read, Box::new(write), peer, &opts, &*handler, shutdown).await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            },
        )?;
        Ok(Server { listener })
    }

    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The accept loop's counters (connections accepted, closed at the cap or at the
    /// file-descriptor limit).
    pub fn stats(&self) -> &ListenerStats {
        self.listener.stats()
    }

    /// Stops accepting, closes idle connections at once, lets connections that are handling a
    /// message finish for up to `drain`, then closes those too. Never waits on idle clients.
    pub async fn shutdown(self, drain: Duration) {
        self.listener.shutdown(drain).await;
    }
}

async fn serve<H: Handler, R: AsyncRead + Unpin>(
    mut read: R,
    write: Box<dyn WriteHalf>,
    peer: SocketAddr,
    opts: &ServerOptions,
    handler: &H,
    mut stopped: Shutdown,
) -> Result<(), Error> {
    let writer: Writer = Arc::new(Mutex::new(FramedWrite::new(
        write,
        MllpCodec::new(opts.max_frame),
    )));
    let mut framer = Framer::new(opts.max_frame);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // When the frame being received must be complete; set when a frame starts, so a sender
    // that trickles bytes cannot hold the connection by keeping it busy.
    let mut deadline: Option<Instant> = None;
    // One wait for the shutdown for the whole connection, not one registered and dropped again
    // for every message.
    let stop = stopped.recv();
    tokio::pin!(stop);
    tracing::debug!(%peer, "connection open");
    loop {
        loop {
            let frame = match framer.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(frame)) => frame.freeze(),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "bad frame");
                    // The frame was over the limit and is gone: no header to answer, and the
                    // fault is the receiver's limit (table 0357: application internal error).
                    let error = AckError::new(207, e.to_string());
                    writer.lock().await.send(reject(b"", error)).await?;
                    continue;
                }
            };
            deadline = None;
            if let Err(e) = Message::parse(&frame) {
                tracing::warn!(%peer, error = %e, "rejecting a message that does not parse");
                let error = AckError::for_parse_error(&e);
                writer.lock().await.send(reject(&frame, error)).await?;
                continue;
            }
            handler
                .handle(Request {
                    peer,
                    frame,
                    writer: writer.clone(),
                })
                .await;
        }
        if framer.in_frame() {
            deadline.get_or_insert_with(|| Instant::now() + opts.frame_timeout);
        } else {
            deadline = None;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let n = tokio::select! {
            // Shutdown first: a connection that keeps sending still stops between messages.
            biased;
            () = &mut stop => break,
            n = read.read_buf(&mut buf) => n?,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                tracing::warn!(%peer, "closing connection: frame not completed in time");
                break;
            }
        };
        if n == 0 {
            if let Some(len) = framer.finish(&mut buf) {
                tracing::warn!(%peer, len, "connection closed inside a frame");
            }
            break;
        }
    }
    tracing::debug!(%peer, "connection closed");
    Ok(())
}
