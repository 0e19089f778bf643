//! [`Pool`]: reusable connections per destination, with a cap on each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

#[cfg(feature = "tls")]
use crate::TlsTarget;
use crate::{Ack, ClientOptions, Connection, Error, ReturnAck};

/// Without the `tls` feature there is no TLS target: `Option<&TlsTarget>` is always `None`.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
enum TlsTarget {}

/// How a [`Pool`] manages connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Options for each connection.
    pub client: ClientOptions,
    /// Most connections open to one destination at once; further sends wait their turn.
    pub max_per_destination: usize,
    /// Keep connections open between messages. When `false`, a connection is reused only if
    /// the next message comes within `idle_timeout`, and closed otherwise.
    pub keep_alive: bool,
    /// How long an unused connection is kept when `keep_alive` is off. Zero: a connection per
    /// message, closed once its acknowledgement is in (Medplum's agent without `keepAlive`).
    pub idle_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            client: ClientOptions::default(),
            max_per_destination: 5,
            keep_alive: false,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What one send may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendOptions {
    /// Overrides [`ClientOptions::ack_timeout`].
    pub ack_timeout: Option<Duration>,
    /// Overrides [`ClientOptions::return_ack`].
    pub return_ack: Option<ReturnAck>,
}

#[derive(Debug)]
struct Destination {
    permits: Semaphore,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

/// Connections to many destinations (`host:port`), at most
/// [`max_per_destination`](PoolOptions::max_per_destination) to each, one message in flight per
/// connection. A connection is reused while it is healthy; one the peer closed while idle is
/// noticed before use and replaced. A connection that failed is never reused.
#[derive(Debug, Clone)]
pub struct Pool {
    opts: Arc<PoolOptions>,
    dests: Arc<Mutex<HashMap<String, Arc<Destination>>>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(opts: PoolOptions) -> Self {
        Pool {
            opts: Arc::new(opts),
            dests: Arc::default(),
        }
    }

    /// The pool's options.
    pub fn options(&self) -> &PoolOptions {
        &self.opts
    }

    fn destination(&self, addr: &str) -> Arc<Destination> {
        let mut dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        dests
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Arc::new(Destination {
                    permits: Semaphore::new(self.opts.max_per_destination.max(1)),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Sends `message` to `addr` and waits for its acknowledgement.
    pub async fn send(&self, addr: &str, message: &[u8], opts: SendOptions) -> Result<Ack, Error> {
        self.send_inner(addr, None, message, opts, None).await
    }

    /// [`Pool::send`] with a deadline that covers the whole send: waiting for a free
    /// connection, connecting, and the acknowledgement (whichever of the deadline and the ACK
    /// timeout comes first). A send that gets no connection before the deadline is not sent
    /// ([`Error::NotSent`]); one that times out after that was on the wire.
    pub async fn send_by(
        &self,
        addr: &str,
        message: &[u8],
        deadline: tokio::time::Instant,
        opts: SendOptions,
    ) -> Result<Ack, Error> {
        self.send_inner(addr, None, message, opts, Some(deadline))
            .await
    }

    /// [`Pool::send_by`] over TLS as `tls` says. Connections to one address are pooled per
    /// [`TlsTarget::label`], apart from plain ones.
    #[cfg(feature = "tls")]
    pub async fn send_tls_by(
        &self,
        addr: &str,
        tls: &TlsTarget,
        message: &[u8],
        deadline: tokio::time::Instant,
        opts: SendOptions,
    ) -> Result<Ack, Error> {
        self.send_inner(addr, Some(tls), message, opts, Some(deadline))
            .await
    }

    async fn send_inner(
        &self,
        addr: &str,
        tls: Option<&TlsTarget>,
        message: &[u8],
        opts: SendOptions,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Ack, Error> {
        let dest = match tls {
            None => self.destination(addr),
            #[cfg(feature = "tls")]
            Some(t) => self.destination(&format!("tls {} {addr}", t.label)),
            #[cfg(not(feature = "tls"))]
            Some(t) => match *t {},
        };
        let started = tokio::time::Instant::now();
        let deadline_passed = || Error::NotSent {
            addr: addr.to_owned(),
            waited: started.elapsed(),
        };
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = match deadline {
            Some(d) => tokio::time::timeout_at(d, dest.permits.acquire())
                .await
                .map_err(|_| deadline_passed())?
                .ok(),
            None => dest.permits.acquire().await.ok(),
        };
        let mut conn = match self.take_idle(&dest) {
            Some(conn) => conn,
            None => {
                let mut client = self.opts.client.clone();
                let mut cut_short = false;
                if let Some(d) = deadline {
                    let left = d.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(deadline_passed());
                    }
                    cut_short = left < client.connect_timeout;
                    client.connect_timeout = client.connect_timeout.min(left);
                }
                let connected = match tls {
                    None => Connection::connect(addr, client).await,
                    #[cfg(feature = "tls")]
                    Some(t) => Connection::connect_tls(addr, t, client).await,
                    #[cfg(not(feature = "tls"))]
                    Some(t) => match *t {},
                };
                match connected {
                    Ok(conn) => conn,
                    // The deadline, not the device, ended the attempt.
                    Err(Error::ConnectTimeout { .. }) if cut_short => {
                        return Err(deadline_passed());
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let mut timeout = opts.ack_timeout.unwrap_or(self.opts.client.ack_timeout);
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                // Not written yet: the connection goes back unused.
                self.give_back(&dest, conn);
                return Err(deadline_passed());
            }
            timeout = timeout.min(left);
        }
        let return_ack = opts.return_ack.unwrap_or(self.opts.client.return_ack);
        let result = conn.send_with(message, timeout, return_ack).await;
        // Negative acknowledgements leave the connection in step; anything else may not.
        if result.is_ok() || matches!(result, Err(Error::Negative { .. })) {
            self.give_back(&dest, conn);
        }
        result
    }

    fn give_back(&self, dest: &Destination, conn: Connection) {
        let kept = self.opts.keep_alive || !self.opts.idle_timeout.is_zero();
        if kept && conn.is_reusable() {
            dest.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((conn, Instant::now()));
        }
    }

    fn take_idle(&self, dest: &Destination) -> Option<Connection> {
        let mut idle = dest.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            let fresh = self.opts.keep_alive || since.elapsed() < self.opts.idle_timeout;
            if fresh && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Open idle connections to `addr` (for tests and statistics).
    pub fn idle_connections(&self, addr: &str) -> usize {
        self.destination(addr)
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Connections open or being opened, to every destination: idle ones and those a send
    /// holds.
    pub fn connections(&self) -> usize {
        let dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        dests
            .values()
            .map(|d| {
                let idle = d.idle.lock().unwrap_or_else(|p| p.into_inner()).len();
                let busy = self
                    .opts
                    .max_per_destination
                    .max(1)
                    .saturating_sub(d.permits.available_permits());
                idle + busy
            })
            .sum()
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        let dests = self.dests.lock().unwrap_or_else(|p| p.into_inner());
        for d in dests.values() {
            d.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}
