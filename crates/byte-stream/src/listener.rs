//! [`Listener`]: a TCP accept loop that stays up and stays bounded.
//!
//! Each accepted connection is handed to a [`Serve`] on its own task. The loop never spins and
//! never leaves a client hanging:
//!
//! - past the listener's cap ([`ListenerOptions::max_connections`]) or the process-wide
//!   [`Budget`] shared by several listeners, a new connection is closed at once;
//! - at the file-descriptor limit (`accept` fails with `EMFILE`/`ENFILE`), a spare descriptor
//!   kept for the purpose is released, a waiting connection accepted and closed at once, and
//!   the spare taken back; when no client waited (accept fails that way regardless) or the
//!   spare cannot be taken back, the loop pauses (50 ms doubling to 1 s) instead of spinning,
//!   so a client arriving at the limit is closed within a second;
//! - each of these is logged once when it starts and once when it ends, with the count of
//!   connections closed meanwhile, not once per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// `accept(2)` errors that mean the process or the system is out of file descriptors (the
/// values are the same on Linux, the BSDs and macOS).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Kernel memory for sockets ran out (Linux `ENOBUFS`, `ENOMEM`): handled like the fd limit.
const ENOBUFS: i32 = 105;
const ENOMEM: i32 = 12;

/// Longest pause when the descriptor limit persists.
const MAX_PAUSE: Duration = Duration::from_secs(1);
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Connections that several listeners share: a process-wide cap, set below the process's
/// file-descriptor limit so that the descriptors the process needs for other work (its
/// database, its upstream connections) are always there.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    /// A budget of `connections` open at once.
    pub fn new(connections: usize) -> Budget {
        Budget(Arc::new(Semaphore::new(connections)))
    }

    /// Connections that may still be opened.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }

    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

impl PartialEq for Budget {
    fn eq(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Budget {}

/// How a [`Listener`] bounds its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOptions {
    /// Most connections this listener serves at once; more are closed on arrival.
    pub max_connections: usize,
    /// A cap shared with other listeners, if any.
    pub budget: Option<Budget>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            max_connections: 1024,
            budget: None,
        }
    }
}

/// Tells a connection's task that the listener is shutting down (mini-redis's `Shutdown`).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until shutdown begins.
    pub async fn recv(&mut self) {
        // An error means the listener is gone: that is a shutdown too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Serves one accepted connection until it ends or [`Shutdown`] fires.
pub trait Serve: Send + Sync + 'static {
    /// Serves `stream` from `peer`.
    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static;
}

impl<F, Fut> Serve for F
where
    F: Fn(TcpStream, SocketAddr, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        self(stream, peer, shutdown)
    }
}

/// What a listener has done.
#[derive(Debug, Default)]
pub struct ListenerStats {
    accepted: AtomicU64,
    closed_at_cap: AtomicU64,
    closed_at_fd_limit: AtomicU64,
    accept_errors: AtomicU64,
}

impl ListenerStats {
    /// Connections accepted and served.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed on arrival because the listener or its budget was full.
    pub fn closed_at_cap(&self) -> u64 {
        self.closed_at_cap.load(Ordering::Relaxed)
    }

    /// Connections closed on arrival because the process was out of file descriptors.
    pub fn closed_at_fd_limit(&self) -> u64 {
        self.closed_at_fd_limit.load(Ordering::Relaxed)
    }

    /// Calls to `accept` that failed because descriptors ran out (with or without a client
    /// waiting): bounded by the pauses, whatever the clients do.
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
}

/// A running accept loop. Dropping it does not stop it; call [`Listener::shutdown`].
#[derive(Debug)]
pub struct Listener {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<JoinSet<()>>,
    stats: Arc<ListenerStats>,
}

impl Listener {
    /// Binds `addr` and serves each connection with `serve`.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn bind<S: Serve>(
        addr: &str,
        opts: ListenerOptions,
        serve: S,
    ) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        Listener::serve(listener, opts, serve)
    }

    /// Serves connections from a listener the caller bound (tests bind `127.0.0.1:0` and pass
    /// the listener on, so no other process can take the port in between).
    ///
    /// # Errors
    ///
    /// When the listener's address cannot be read.
    pub fn serve<S: Serve>(
        listener: TcpListener,
        opts: ListenerOptions,
        serve: S,
    ) -> std::io::Result<Listener> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(ListenerStats::default());
        // Taken now, while descriptors are surely available.
        let reserve = spare();
        let task = tokio::spawn(accept_loop(
            listener,
            reserve,
            opts,
            serve,
            Shutdown(stopped),
            stats.clone(),
        ));
        Ok(Listener {
            local_addr,
            stop,
            task,
            stats,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the listener has done.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// Stops accepting and signals [`Shutdown`] to every connection; waits up to `drain` for
    /// them to end, then aborts the rest.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        let Ok(mut conns) = self.task.await else {
            return;
        };
        let all_done = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, all_done).await.is_err() {
            conns.abort_all();
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// A descriptor held in reserve, released to accept-and-close one connection at the limit.
fn spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// An ongoing condition, logged when it starts and when it ends.
#[derive(Default)]
struct Episode {
    closed: u64,
    active: bool,
}

impl Episode {
    /// Counts one more connection closed; `true` the first time (log then).
    fn hit(&mut self) -> bool {
        self.closed += 1;
        !std::mem::replace(&mut self.active, true)
    }

    /// Ends the episode; the count of connections closed during it, if there was one.
    fn end(&mut self) -> Option<u64> {
        if !std::mem::take(&mut self.active) {
            return None;
        }
        Some(std::mem::take(&mut self.closed))
    }
}

async fn accept_loop<S: Serve>(
    listener: TcpListener,
    mut reserve: Option<std::fs::File>,
    opts: ListenerOptions,
    serve: S,
    mut shutdown: Shutdown,
    stats: Arc<ListenerStats>,
) -> JoinSet<()> {
    let local = listener.local_addr().ok();
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut at_cap = Episode::default();
    let mut at_fd_limit = Episode::default();
    let mut pause = FIRST_PAUSE;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.recv() => return conns,
        };
        // Finished connections leave the set so it does not grow.
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if out_of_descriptors(&e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if at_fd_limit.hit() {
                    tracing::error!(listener = ?local, error = %e,
                        "out of file descriptors: closing new connections at once until some are free");
                }
                // `accept` fails this way whether or not a client waits. Free the spare and try
                // once without yielding, so the descriptor is ours: a waiting client is taken
                // and closed at once (it is told, not left in the backlog); then the spare is
                // taken back.
                let mut took = false;
                if reserve.take().is_some() {
                    let once = std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx)));
                    if let Poll::Ready(Ok(conn)) = once.await {
                        drop(conn);
                        took = true;
                        stats.closed_at_fd_limit.fetch_add(1, Ordering::Relaxed);
                    }
                    reserve = spare();
                }
                if !took || reserve.is_none() {
                    // Nothing waited, or no spare: pause (growing) instead of spinning. A
                    // client that arrives meanwhile is closed within the pause.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    if reserve.is_none() {
                        reserve = spare();
                    }
                }
                continue;
            }
            Err(e) => {
                // Per-connection failures (the client reset before we took it): go on, but
                // never faster than this if they keep coming.
                tracing::debug!(listener = ?local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        pause = FIRST_PAUSE;
        if let Some(closed) = at_fd_limit.end() {
            tracing::warn!(listener = ?local, closed, "file descriptors available again; accepting connections");
        }
        let permits = slots
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|own| match &opts.budget {
                Some(b) => b.try_take().map(|shared| (own, Some(shared))),
                None => Some((own, None)),
            });
        let Some(permits) = permits else {
            drop(stream);
            stats.closed_at_cap.fetch_add(1, Ordering::Relaxed);
            if at_cap.hit() {
                tracing::warn!(listener = ?local, %peer, max = opts.max_connections,
                    "too many connections: closing new ones at once until one ends");
            }
            continue;
        };
        if let Some(closed) = at_cap.end() {
            tracing::info!(listener = ?local, closed, "below the connection cap again");
        }
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let work = serve.serve(stream, peer, shutdown.clone());
        conns.spawn(async move {
            work.await;
            drop(permits);
        });
    }
}
