//! [`Server`]: accepts MLLP connections and hands each message to a [`Handler`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use hl7v2::{
    AckCode, AckError, AckMode, AckOptions, Message, Outcome, Timestamp, build_ack, build_reject,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;
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
            frame_timeout: Duration::from_secs(60),
        }
    }
}

type Writer = Arc<Mutex<FramedWrite<tokio::net::tcp::OwnedWriteHalf, MllpCodec>>>;

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

/// The acknowledgements a receiver owes for a message it accepted: in original mode an AA; in
/// enhanced mode (MSH-15/16 valued, or `enhanced` forced for senders that do not set them) a CA
/// and then an AA, each only if MSH-15/MSH-16 ask for it.
pub fn acks_for(msg: &Message<'_>, enhanced: bool) -> Vec<Vec<u8>> {
    let mode = match AckMode::of(msg) {
        AckMode::Original if enhanced => AckMode::Enhanced {
            accept: hl7v2::AckCondition::Always,
            application: hl7v2::AckCondition::Never,
        },
        mode => mode,
    };
    [
        mode.commit_ack(Outcome::Accepted),
        mode.application_ack(Outcome::Accepted),
    ]
    .into_iter()
    .flatten()
    .map(|code| build_ack(msg, code, &ack_options(None)))
    .collect()
}

/// Options for an acknowledgement sent now: timestamp in UTC to the millisecond and a fresh
/// control ID.
pub fn ack_options(text: Option<String>) -> AckOptions {
    let now = chrono::Utc::now();
    let mut opts = AckOptions::new(
        next_control_id(),
        Timestamp::from_datetime(&now, hl7v2::Precision::Fraction(3)),
    );
    opts.text = text;
    opts
}

/// Unique within the process: milliseconds since the epoch, then a counter.
fn next_control_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}{:04}", chrono::Utc::now().timestamp_millis(), n % 10_000)
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
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<JoinSet<()>>,
}

impl Server {
    /// Binds `addr` and starts serving with `handler`.
    pub async fn bind<H: Handler>(
        addr: &str,
        opts: ServerOptions,
        handler: H,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, opts, Arc::new(handler), stopped));
        Ok(Server {
            local_addr,
            stop,
            accept,
        })
    }

    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes idle connections at once, lets connections that are handling a
    /// message finish for up to `drain`, then closes those too. Never waits on idle clients.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        let Ok(mut conns) = self.accept.await else {
            return;
        };
        let all_done = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, all_done).await.is_err() {
            conns.abort_all();
        }
    }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    opts: ServerOptions,
    handler: Arc<H>,
    mut stopped: watch::Receiver<bool>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return conns,
        };
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = opts.max_connections, "refusing connection: too many open");
            drop(stream);
            continue;
        };
        let (handler, opts, stopped) = (handler.clone(), opts.clone(), stopped.clone());
        conns.spawn(async move {
            if let Err(e) = serve(stream, peer, &opts, &*handler, stopped).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn serve<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    opts: &ServerOptions,
    handler: &H,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let (mut read, write) = stream.into_split();
    let writer: Writer = Arc::new(Mutex::new(FramedWrite::new(
        write,
        MllpCodec::new(opts.max_frame),
    )));
    let mut framer = Framer::new(opts.max_frame);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // When the frame being received must be complete; set when a frame starts, so a sender
    // that trickles bytes cannot hold the connection by keeping it busy.
    let mut deadline: Option<Instant> = None;
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
        if *stopped.borrow() {
            break;
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
            n = read.read_buf(&mut buf) => n?,
            _ = stopped.changed() => break,
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
