//! The Outpost agent: the on-premises half of push. It composes the protocol crates and owns no
//! protocol logic of its own.
//!
//! ```text
//!                       ┌──────────────────────── Agent ─────────────────────────────┐
//!  relay ══ WSS ═══════ │ link/      agent_protocol::link::Link over tokio-tungstenite │
//!  /ws/agent            │            (handshake, heartbeats, requests in flight)       │
//!                       │   │ pushes                         ▲ device messages        │
//!                       │   ▼                                │                        │
//!                       │ outbound/  mllp (mllp::Pool) ─────────────────► HL7 device  │
//!                       │            astm (astm::Connection) ───────────► analyzer    │
//!                       │            dicom (dicom_net::Association) ────► PACS, RIS   │
//!                       │            ping ──────────────────────────────► any host    │
//!                       │ inbound/   mllp, tcp, astm listeners ◄──────── devices      │
//!                       │            dicom SCP ◄──────────────────── modalities, PACS │
//!                       │            │ commit first (queue, SQLite), then ACK         │
//!                       │            └► forwarder per channel, in order, with backoff │
//!                       │               (a DICOM instance: a Binary upload first)     │
//!                       │ config/    agent.properties; Agent + Endpoints from the     │
//!                       │            relay, kept in the data directory                │
//!                       │ upgrade/   $upgrade: download, SHA-256, swap, watchdog      │
//!                       │ wiring     the parts above built and joined, in one place   │
//!                       └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! - [`AgentConfig`]: Medplum's `agent.properties` (`baseUrl`, `clientId`, `clientSecret`,
//!   `agentId`, `logLevel`) or the same as flags.
//! - The relay link logs in with client credentials (refreshing the token before it expires),
//!   reads its `Agent` and each channel's `Endpoint`, opens the channels, and keeps the
//!   WebSocket up: heartbeats both ways every 10 s, a relay silent for three periods is gone,
//!   reconnect with exponential backoff and jitter whatever state it failed in.
//! - Every push gets exactly one answer within its time — [`AgentConfig::ack_timeout`] from its
//!   arrival, or the caller's shorter deadline when the relay sends one — the device's answer,
//!   or a 400 `text/plain` saying what failed ([`PushError`]). A push that could not be sent
//!   before its deadline is not sent.
//! - Inbound messages are committed to the [`queue`] before the device is acknowledged, sent to
//!   the relay in order per channel, and sent again with the same callback until the relay
//!   answers for good (a 429 or 5xx answer is temporary); a message refused
//!   [`AgentConfig::inbound_max_attempts`] times (`agent:error`, with or without callback) is
//!   moved to the dead letters and its channel moves on. The last configuration seen is kept,
//!   so an agent restarted while the relay is unreachable opens its channels and keeps queueing.
//! - `$upgrade`: the agent downloads the release's executable from the relay, checks its
//!   SHA-256, replaces its own executable atomically (keeping the old one), and asks its caller
//!   to run it ([`Agent::restart_requested`], [`Restart::exec`]); a watchdog
//!   ([`watch_upgrade`]) puts the old one back when the new one does not connect within
//!   [`AgentConfig::upgrade_window`]. Refusals are [`UpgradeError`]s.
//! - [`RelayClient`] is the HTTP side, with `push_to_agent` for callers.
//!
//! ```
//! use agent_core::AgentConfig;
//!
//! let config = AgentConfig::from_properties(
//!     "baseUrl=https://relay.example.org/\nclientId=c1\nclientSecret=s3cret\nagentId=a1\n",
//! )?;
//! assert_eq!(config.ws_url(), "wss://relay.example.org/ws/agent");
//! assert_eq!(config.ack_timeout, std::time::Duration::from_secs(55));
//! // Then: `let agent = agent_core::Agent::start(config, agent_core::LogBuffer::new()).await?;`
//! // connects in the background and reconnects on its own; `agent.shutdown().await` stops it.
//! # Ok::<(), agent_core::Error>(())
//! ```
//!
//! ## Features
//!
//! None.

mod backoff;
mod client;
mod config;
mod error;
mod event;
mod inbound;
mod link;
mod logs;
mod metrics;
mod outbound;
mod stats;
mod tls;
mod upgrade;
mod url;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use byte_stream::Budget;
use tokio::sync::watch;

pub use client::{PushAnswer, PushOptions, RelayClient};
pub use config::{
    AgentConfig, DEFAULT_FILES_TO_KEEP, DEFAULT_MAX_FILE_SIZE_MB, LogLevel, LoggerConfig,
    PROPERTY_KEYS, data_dir_beside, default_data_dir, read_secret_file, unknown_property_keys,
};
pub use error::{ChannelProblem, ConfigError, Error};
pub use event::Event;
pub use inbound::queue;
pub use logs::{CHANNEL_FILE, CHANNEL_TARGET, LogBuffer, LogFiles, LogLayer, MAIN_FILE};
pub use outbound::{Fault, PushError};
pub use tls::client_config;
pub use upgrade::{MAX_EXECUTABLE, Restart, UpgradeError, Watch, watch as watch_upgrade};
pub use url::UrlError;

use config::remote::RemoteConfig;
use event::Events;
use inbound::inbox::Inbox;
use inbound::{ChannelContext, Inbound};
use link::RelayLink;
use outbound::Outbound;
use wiring::Wiring;

/// The agent's version, sent in heartbeat responses and compared with an upgrade's: the
/// crate's, or `OUTPOST_BUILD_VERSION` when that was set at compile time (a build of the same
/// sources that must report another version, such as the second build of the upgrade tests).
pub const VERSION: &str = match option_env!("OUTPOST_BUILD_VERSION") {
    Some(v) => v,
    None => concat!("outpost-agent-", env!("CARGO_PKG_VERSION")),
};

/// File descriptors kept for the agent's own work (its queue, the relay, pushes to devices)
/// and not given to device connections: at least this many, or a quarter of the limit.
const RESERVED_FDS: u64 = 64;

/// A running agent. Dropping it does not stop it; call [`Agent::shutdown`].
#[derive(Debug)]
pub struct Agent {
    relay: RelayLink,
    inbound: Arc<Inbound>,
    outbound: Arc<Outbound>,
    events: Events,
    stop: watch::Sender<bool>,
    link: tokio::task::JoinHandle<()>,
    restart: watch::Receiver<Option<Restart>>,
}

/// What `outpost agent --check` found: the relay's configuration of the agent, read without
/// starting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `Agent.channel[]` as `(name, Endpoint.address)`.
    pub channels: Vec<(String, String)>,
    /// Every problem that would stop a channel, one sentence each.
    pub problems: Vec<String>,
}

/// Checks `config` and what the relay configures for it, without opening the queue or a
/// channel: the settings, the login, the Agent and each channel's Endpoint.
///
/// # Errors
///
/// [`Error::Config`] for the settings; the relay's errors ([`Error::Login`],
/// [`Error::Connect`], [`Error::Status`], ...) when it cannot be asked.
pub async fn check(config: &AgentConfig) -> Result<CheckReport, Error> {
    config.validate()?;
    let tls = tls::client_config(config.ca_file.as_deref())?;
    let client = RelayClient::new(
        &config.base_url,
        &config.client_id,
        &config.client_secret,
        tls,
    )?;
    let (channels, problems) = RemoteConfig::check(&client, &config.agent_id).await?;
    Ok(CheckReport { channels, problems })
}

impl Agent {
    /// Validates the configuration, checks and opens the queue, opens the channels of the last
    /// configuration seen, and starts the relay link in the background (it connects, and
    /// reconnects, on its own). `logs` receives the agent's own log lines for `$fetch-logs`
    /// when the caller installed a [`LogLayer`] on it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::CaFile`] for a configuration that cannot work,
    /// [`Error::QueueDamaged`] when the queue file fails its integrity check (the message says
    /// how to recover), [`Error::Queue`] when it cannot be opened.
    pub async fn start(config: AgentConfig, logs: LogBuffer) -> Result<Agent, Error> {
        config.validate()?;
        // The new version of an upgrade that is not the version asked for stops here, before
        // it opens anything; the watchdog rolls back and the old version answers why.
        tokio::task::spawn_blocking(upgrade::check_this_process)
            .await
            .unwrap_or(Ok(()))
            .map_err(Error::Upgrade)?;
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let client = RelayClient::new(
            &config.base_url,
            &config.client_id,
            &config.client_secret,
            tls.clone(),
        )?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ConfigError::File {
            path: config.data_dir.clone(),
            source,
        })?;
        let queue = queue::Queue::open(Some(&config.data_dir.join("agent-queue.sqlite")))?;
        let config = Arc::new(config);
        let events = Events::new();
        let (stop, stopping) = watch::channel(false);
        let (relay, driver) = link::new(
            config.clone(),
            client.clone(),
            tls,
            events.clone(),
            stopping.clone(),
        );
        let (budget, connections) = connection_budget();
        let (restart_tx, restart) = watch::channel(None);
        let ctx = ChannelContext {
            inbox: Arc::new(Inbox::new(queue, &config.agent_id, events.clone())),
            config: config.clone(),
            budget: budget.clone(),
        };
        let inbound = Arc::new(Inbound::new(
            ctx,
            relay.clone(),
            client.clone(),
            events.clone(),
            stopping.clone(),
        ));
        let outbound = Arc::new(Outbound::new(config.clone(), events.clone()));
        let wiring = Wiring {
            config,
            client,
            relay: relay.clone(),
            inbound: inbound.clone(),
            outbound: outbound.clone(),
            logs,
            events: events.clone(),
            stopping,
            settings_seen: Arc::default(),
            stats_timer: Arc::default(),
            budget,
            connections,
            restart: Arc::new(restart_tx),
            upgrading: Arc::default(),
            problems: Arc::default(),
        };
        wiring.open_saved().await;
        // After an upgrade, the first session answers the request that started it.
        let reporter = relay.clone();
        tokio::spawn(async move {
            if !reporter.wait_live().await {
                return;
            }
            if let Some(msg) = tokio::task::spawn_blocking(upgrade::outcome)
                .await
                .ok()
                .flatten()
                && let Some(session) = reporter.session()
            {
                reporter.answer(session, msg).await;
            }
        });
        // Messages left in the queue by a previous run go out as soon as a session is live.
        inbound.resume().await?;
        let link = tokio::spawn(driver.run(Arc::new(wiring)));
        Ok(Agent {
            relay,
            inbound,
            outbound,
            events,
            stop,
            link,
            restart,
        })
    }

    /// Waits until an upgrade has put a new executable in place: then stop the agent
    /// ([`Agent::shutdown`]) and run it ([`Restart::exec`]). Pending forever when no upgrade
    /// comes. A program that never runs it is stopped by the upgrade's watchdog when the
    /// window ([`AgentConfig::upgrade_window`]) passes, and the old executable is run in its
    /// place.
    pub async fn restart_requested(&self) -> Restart {
        let mut rx = self.restart.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Subscribes to what the agent does.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Whether a session with the relay is live.
    pub fn is_live(&self) -> bool {
        self.relay.is_live()
    }

    /// Waits until a session is live, at most `timeout`.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.relay.wait_live())
            .await
            .unwrap_or(false)
    }

    /// The inbound channels listening now: `(Agent.channel.name, bound socket address)`, sorted
    /// by name. An Endpoint with port 0 listens on a port the system chose; this says which.
    pub async fn channels(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.inbound.listening().await
    }

    /// Waits until the channel `name` listens, at most `timeout`, and returns its address.
    pub async fn wait_channel(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Option<std::net::SocketAddr> {
        let mut events = self.events.subscribe();
        let find = async {
            loop {
                if let Some((_, addr)) = self.channels().await.into_iter().find(|(n, _)| n == name)
                {
                    return Some(addr);
                }
                match events.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, find).await.ok().flatten()
    }

    /// Unanswered messages in the inbound queue (-1 when the queue cannot be read).
    pub fn queue_depth(&self) -> i64 {
        self.inbound.inbox().queue().depth().unwrap_or(-1)
    }

    /// The dead letters: messages the relay kept refusing, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Queue`] when the queue cannot be read.
    pub fn dead_letters(&self) -> Result<Vec<queue::DeadLetter>, Error> {
        self.inbound.inbox().queue().dead_letters()
    }

    /// Sends dead letter `id` again (same callback, its errors forgotten); `false` when there
    /// is no such dead letter.
    ///
    /// # Errors
    ///
    /// [`Error::Queue`] when the queue cannot be written.
    pub async fn retry_dead_letter(&self, id: i64) -> Result<bool, Error> {
        self.inbound.retry_dead_letter(id).await
    }

    /// The agent's metrics in Prometheus's text exposition format (`--metrics-listen`):
    /// `outpost_agent_messages_total{channel,outcome}`, `outpost_agent_pushes_total{outcome}`,
    /// `outpost_agent_push_duration_seconds`, `outpost_agent_queue_depth{channel}` and
    /// `outpost_agent_relay_connected`. Reads the queue: call it off the runtime's threads
    /// or accept a short block.
    pub fn metrics_text(&self) -> String {
        let mut depths = self
            .inbound
            .inbox()
            .queue()
            .depth_by_channel()
            .unwrap_or_default();
        // A channel that has had messages shows an empty queue as 0, not as nothing.
        for channel in self.events.counts().into_keys() {
            depths.entry(channel).or_insert(0);
        }
        self.events.metrics.render(self.relay.is_live(), &depths)
    }

    /// Whether `Agent.status` is `off`.
    pub fn is_off(&self) -> bool {
        self.outbound.is_off()
    }

    /// Closes the session and the channels; queued messages stay for the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.link).await;
        self.inbound.stop_all().await;
    }
}

/// Raises the soft file-descriptor limit to the hard one where the system allows, and sizes
/// the device connections all channels may hold together below it: the budget and its size.
fn connection_budget() -> (Budget, usize) {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file-descriptor limit; assuming 1024");
            1024
        }
    };
    let reserved = RESERVED_FDS.max(soft / 4);
    let budget = usize::try_from(soft.saturating_sub(reserved).max(8)).unwrap_or(usize::MAX);
    tracing::info!(
        fd_limit = soft,
        device_connections = budget,
        "device connections capped below the file-descriptor limit"
    );
    (Budget::new(budget), budget)
}
