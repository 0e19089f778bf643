//! The Outpost agent: the on-premises half of push. It composes the protocol crates and owns no
//! protocol logic of its own.
//!
//! ```text
//!  relay ══ WSS /ws/agent ══ Agent ──┬── mllp://  (mllp::Pool)      → HL7 device
//!                                    ├── ping                       → reachability
//!                                    └── inbound channels (mllp::Server) ← devices
//!                                            │ durable queue (SQLite) before any ACK
//! ```
//!
//! - [`AgentConfig`]: Medplum's `agent.properties` (`baseUrl`, `clientId`, `clientSecret`,
//!   `agentId`, `logLevel`) or the same as flags.
//! - The session logs in with client credentials (refreshing the token before it expires), reads
//!   its `Agent` and each channel's `Endpoint`, opens the channels, and keeps the WebSocket up:
//!   heartbeats both ways every 10 s, reconnect with exponential backoff and jitter whatever
//!   state it failed in (login, connect, mid-push).
//! - Every push gets exactly one answer, within [`AgentConfig::ack_timeout`] at most: the
//!   device's answer, or a 400 `text/plain` saying what failed.
//! - Inbound messages are committed to the [`queue`] before the device is acknowledged, sent to
//!   the relay in order per channel, and redelivered with the same callback until answered.
//! - [`RelayClient`] is the HTTP side, with `push_to_agent` for callers.
//!
//! ## Features
//!
//! None.

mod channels;
mod client;
mod config;
mod dispatch;
mod error;
mod logs;
pub mod queue;
mod session;
mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_protocol::AgentMessage;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

pub use client::{PushAnswer, PushOptions, RelayClient};
pub use config::AgentConfig;
pub use error::Error;
pub use logs::{LogBuffer, LogLayer};
pub use tls::client_config;

/// The agent's version, sent in heartbeat responses.
pub const VERSION: &str = concat!("outpost-agent-", env!("CARGO_PKG_VERSION"));

/// Something the agent did, for demos, tests and monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The relay accepted the connect request.
    Connected,
    /// The session ended; the agent reconnects.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A push arrived from the relay.
    PushReceived {
        /// Where to.
        remote: String,
        /// What.
        content_type: String,
    },
    /// A push was answered.
    PushAnswered {
        /// Where to.
        remote: String,
        /// 200, or 400 with the reason in the body.
        status: u16,
        /// The answer (the device's answer, or the error text).
        body: String,
    },
    /// An inbound channel is listening.
    ChannelStarted {
        /// `Agent.channel.name`.
        name: String,
        /// The Endpoint address.
        address: String,
    },
    /// An inbound channel could not start.
    ChannelFailed {
        /// `Agent.channel.name`.
        name: String,
        /// Why.
        error: String,
    },
    /// A device message was committed to the queue.
    InboundQueued {
        /// The channel.
        channel: String,
        /// Queue sequence number.
        id: i64,
    },
    /// The relay answered a queued message.
    InboundAnswered {
        /// The channel.
        channel: String,
        /// Queue sequence number.
        id: i64,
        /// The relay's status code.
        status: u16,
    },
}

/// What a running agent shares between its tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: AgentConfig,
    pub(crate) client: RelayClient,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) pool: mllp::Pool,
    pub(crate) queue: queue::Queue,
    /// The live session's outgoing frames, while there is one.
    link: Mutex<Option<mpsc::Sender<String>>>,
    live: watch::Sender<bool>,
    /// Requests to the relay waiting for their answer, by callback.
    pending: Mutex<HashMap<String, oneshot::Sender<AgentMessage>>>,
    events: broadcast::Sender<Event>,
    pub(crate) channels: tokio::sync::Mutex<channels::Channels>,
    /// Device connections waiting for the relay's answer to a queued message, by queue id.
    pub(crate) waiters: Mutex<HashMap<i64, oneshot::Sender<channels::Answer>>>,
    /// Wakes a channel's queue worker.
    pub(crate) notify: Mutex<HashMap<String, Arc<Notify>>>,
    /// `Agent.status` is `off`: pushes are refused.
    pub(crate) off: AtomicBool,
    pub(crate) logs: LogBuffer,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Inner {
    pub(crate) fn emit(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message on the live session; `false` when there is none.
    pub(crate) async fn send(&self, msg: &AgentMessage) -> bool {
        let tx = Inner::lock(&self.link).clone();
        match tx {
            Some(tx) => tx.send(msg.to_json()).await.is_ok(),
            None => false,
        }
    }

    /// Sends a message carrying `callback`; the receiver gets the relay's answer, or an error
    /// when the session ends first.
    pub(crate) async fn request(
        &self,
        callback: &str,
        msg: &AgentMessage,
    ) -> Option<oneshot::Receiver<AgentMessage>> {
        let (tx, rx) = oneshot::channel();
        Inner::lock(&self.pending).insert(callback.to_owned(), tx);
        if self.send(msg).await {
            Some(rx)
        } else {
            Inner::lock(&self.pending).remove(callback);
            None
        }
    }

    /// Hands an answer to whoever waits on its callback.
    pub(crate) fn resolve(&self, callback: &str, msg: AgentMessage) -> bool {
        match Inner::lock(&self.pending).remove(callback) {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        }
    }

    pub(crate) fn set_link(&self, tx: Option<mpsc::Sender<String>>) {
        let live = tx.is_some();
        *Inner::lock(&self.link) = tx;
        if !live {
            // Dropping the senders wakes every waiter with an error.
            Inner::lock(&self.pending).clear();
        }
        self.live.send_replace(live);
    }

    pub(crate) fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Waits until a session is live (or the agent stops: `false`).
    pub(crate) async fn wait_live(&self) -> bool {
        let mut rx = self.live.subscribe();
        let mut stop = self.stop.clone();
        loop {
            if *rx.borrow_and_update() {
                return true;
            }
            if *stop.borrow() {
                return false;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return false },
                _ = stop.changed() => {}
            }
        }
    }

    pub(crate) fn notifier(&self, channel: &str) -> Arc<Notify> {
        Inner::lock(&self.notify)
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// A running agent. Dropping it does not stop it; call [`Agent::shutdown`].
#[derive(Debug)]
pub struct Agent {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    session: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Validates the configuration, opens the queue and starts the session in the background
    /// (it connects, and reconnects, on its own). `logs` receives the agent's own log lines for
    /// `$fetch-logs` when the caller installed a [`LogLayer`] on it.
    pub async fn start(config: AgentConfig, logs: LogBuffer) -> Result<Agent, Error> {
        config.validate()?;
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let client = RelayClient::new(
            &config.base_url,
            &config.client_id,
            &config.client_secret,
            tls.clone(),
        )?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Config(format!("{}: {e}", config.data_dir.display())))?;
        let queue = queue::Queue::open(Some(&config.data_dir.join("agent-queue.sqlite")))?;
        let pool = mllp::Pool::new(mllp::PoolOptions {
            client: mllp::ClientOptions {
                ack_timeout: config.ack_timeout,
                ..mllp::ClientOptions::default()
            },
            ..mllp::PoolOptions::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let (live, _) = watch::channel(false);
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            config,
            client,
            tls,
            pool,
            queue,
            link: Mutex::new(None),
            live,
            pending: Mutex::default(),
            events,
            channels: tokio::sync::Mutex::default(),
            waiters: Mutex::default(),
            notify: Mutex::default(),
            off: AtomicBool::new(false),
            logs,
            stop: stop_rx,
        });
        // Messages left in the queue by a previous run go out as soon as a session is live.
        for channel in inner.queue.channels_with_backlog()? {
            channels::ensure_worker(&inner, &channel).await;
        }
        let session = tokio::spawn(session::run(inner.clone()));
        Ok(Agent {
            inner,
            stop,
            session,
        })
    }

    /// Subscribes to what the agent does.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Whether a session with the relay is live.
    pub fn is_live(&self) -> bool {
        self.inner.is_live()
    }

    /// Waits until a session is live, at most `timeout`.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.inner.wait_live())
            .await
            .unwrap_or(false)
    }

    /// Unanswered messages in the inbound queue.
    pub fn queue_depth(&self) -> i64 {
        self.inner.queue.depth().unwrap_or(-1)
    }

    /// Whether `Agent.status` is `off`.
    pub fn is_off(&self) -> bool {
        self.inner.off.load(Ordering::Relaxed)
    }

    /// Closes the session and the channels; queued messages stay for the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.session).await;
        channels::stop_all(&self.inner).await;
    }
}
