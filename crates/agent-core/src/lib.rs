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

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{AgentMessage, LogsResponse, StatsResponse, StatusResponse};
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
use link::{RelayLink, Session};
use outbound::Outbound;

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

/// The `logStatsFreqSecs` task, with its period in seconds.
type StatsTimer = (u64, tokio::task::JoinHandle<()>);

/// The one place the parts meet: what the relay asks, routed to the part that answers it.
#[derive(Debug, Clone)]
struct Wiring {
    config: Arc<AgentConfig>,
    client: RelayClient,
    relay: RelayLink,
    inbound: Arc<Inbound>,
    outbound: Arc<Outbound>,
    logs: LogBuffer,
    events: Events,
    stopping: watch::Receiver<bool>,
    /// `Agent.setting` names already logged as ignored: each is said once.
    settings_seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The `logStatsFreqSecs` task and its period.
    stats_timer: Arc<std::sync::Mutex<Option<StatsTimer>>>,
    /// The device connections of all channels, and how many it allows (`$stats`).
    budget: Budget,
    connections: usize,
    /// Set once an upgrade has installed a new executable.
    restart: Arc<watch::Sender<Option<Restart>>>,
    /// An upgrade is being downloaded or installed: a second request is refused.
    upgrading: Arc<std::sync::atomic::AtomicBool>,
    /// What is wrong with the relay's configuration of this agent, as last read.
    problems: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Wiring {
    /// `$reload-config`: reads what the relay configures, keeps it for the next start, and
    /// applies it; a configuration with a problem is refused whole (the caller is told why) and
    /// what runs is left alone.
    async fn reload(&self) -> Result<(), Error> {
        let remote = match RemoteConfig::read(&self.client, &self.config.agent_id).await {
            Ok(r) => r,
            Err(Error::Config(e)) => {
                // Refused, and shown in `$stats` until a configuration without them is read.
                let each = match &e {
                    ConfigError::Several(all) => all.iter().map(ToString::to_string).collect(),
                    one => vec![one.to_string()],
                };
                self.report_problems(each);
                return Err(Error::Config(e));
            }
            Err(e) => return Err(e),
        };
        self.keep(&remote);
        self.report_problems(Vec::new());
        self.apply(&remote).await;
        Ok(())
    }

    /// Before each connection: what the relay configures, as far as it can run. A
    /// configuration problem (an Endpoint missing, two channels on one port or with one name,
    /// an address that does not parse) never keeps the agent off the relay: the channels that
    /// can run are kept and run, each problem is logged once at ERROR and shown in `$stats`
    /// (`configurationProblems`). Only what stops a session anyway (the relay unreachable,
    /// the credentials refused) is an error.
    async fn prepare_session(&self) -> Result<(), Error> {
        let (remote, problems) =
            match RemoteConfig::read_runnable(&self.client, &self.config.agent_id).await {
                Ok(r) => r,
                Err(
                    e @ (Error::Http(_)
                    | Error::Connect { .. }
                    | Error::ConnectTimeout { .. }
                    | Error::Login { .. }
                    | Error::NoToken
                    | Error::Unauthorized),
                ) => return Err(e),
                Err(e) => {
                    // The relay answered, but not with this agent's configuration: what runs
                    // keeps running.
                    self.report_problems(vec![e.to_string()]);
                    return Ok(());
                }
            };
        self.report_problems(problems.iter().map(ToString::to_string).collect());
        self.keep(&remote);
        self.apply(&remote).await;
        Ok(())
    }

    /// Keeps `remote` for a start without the relay.
    fn keep(&self, remote: &RemoteConfig) {
        if let Err(e) = remote.save(&self.config.data_dir) {
            tracing::warn!(error = %e, "cannot keep the configuration for a start without the relay");
        }
    }

    /// The configuration's problems now: each one not seen at the last look is logged at ERROR
    /// (once, however often the agent reconnects), and all are shown in `$stats`.
    fn report_problems(&self, now: Vec<String>) {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        for p in &now {
            if !problems.contains(p) {
                tracing::error!(
                    "configuration problem: {p}; the agent stays connected and runs what it can"
                );
            }
        }
        *problems = now;
    }

    async fn apply(&self, remote: &RemoteConfig) {
        self.outbound
            .set_off(remote.off || remote.transmits_stopped);
        self.apply_settings(&remote.settings);
        self.inbound.apply(&remote.channels).await;
    }

    /// `Agent.setting`: connections for pushes, the stats line, and each ignored name said
    /// once.
    fn apply_settings(&self, settings: &config::remote::AgentSettings) {
        {
            let mut seen = self.settings_seen.lock().unwrap_or_else(|p| p.into_inner());
            for (name, why) in &settings.ignored {
                if seen.insert(name.clone()) {
                    tracing::warn!(setting = name, "Agent.setting {name} ignored: {why}");
                }
            }
        }
        self.outbound.apply_settings(settings);
        let mut timer = self.stats_timer.lock().unwrap_or_else(|p| p.into_inner());
        let period = settings.log_stats_freq_secs;
        if timer.as_ref().map(|(p, _)| *p) == period {
            return;
        }
        if let Some((_, task)) = timer.take() {
            task.abort();
        }
        if let Some(secs) = period {
            tracing::info!("stats logging enabled: every {secs} s");
            let this = self.clone();
            *timer = Some((
                secs,
                tokio::spawn(this.log_stats(Duration::from_secs(secs))),
            ));
        }
    }

    /// Every `period`, one line with each inbound channel's counts since the start and its
    /// queue (Medplum's `logStatsFreqSecs`, packages/agent/src/app.ts `logStats`).
    async fn log_stats(self, period: Duration) {
        let mut stopping = self.stopping.clone();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let line = self
                .channel_counts()
                .await
                .iter()
                .map(|(name, (c, queued, dead))| {
                    format!(
                        "{name}: received={} sent={} errored={} queued={queued} dead={dead}",
                        c.received, c.sent, c.errored
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            tracing::info!(
                live = self.relay.is_live(),
                "agent stats: {}",
                if line.is_empty() {
                    "no channels"
                } else {
                    &line
                }
            );
        }
    }

    /// Store and forward across restarts: the channels of the last configuration seen open at
    /// once, whether or not the relay can be reached; the relay's configuration replaces it at
    /// the first connection.
    async fn open_saved(&self) {
        if let Some(saved) = RemoteConfig::load(&self.config.data_dir) {
            tracing::info!(
                channels = saved.channels.len(),
                "opening the channels of the last configuration seen"
            );
            self.apply(&saved).await;
        }
    }
}

impl link::Handler for Wiring {
    fn prepare(&self) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        self.prepare_session()
    }

    fn request(&self, session: Session, msg: AgentMessage) {
        match msg {
            AgentMessage::TransmitRequest(req) => {
                self.outbound.push(self.relay.clone(), session, req);
            }
            AgentMessage::ReloadConfigRequest(r) => {
                let this = self.clone();
                tokio::spawn(async move {
                    let answer = match this.reload().await {
                        Ok(()) => AgentMessage::ReloadConfigResponse(StatusResponse {
                            status_code: 200,
                            callback: r.callback,
                        }),
                        Err(e) => AgentMessage::error(e.to_string(), r.callback),
                    };
                    this.relay.answer(session, answer).await;
                });
            }
            AgentMessage::LogsRequest(r) => {
                let limit = r.limit.unwrap_or(20).min(1000) as usize;
                // The lines may come from the log files: read them off the runtime's threads.
                let logs = self.logs.clone();
                let relay = self.relay.clone();
                tokio::spawn(async move {
                    let logs = tokio::task::spawn_blocking(move || logs.recent(limit))
                        .await
                        .unwrap_or_default();
                    let answer = AgentMessage::LogsResponse(LogsResponse {
                        status_code: 200,
                        logs,
                        callback: r.callback,
                    });
                    relay.answer(session, answer).await;
                });
            }
            AgentMessage::UpgradeRequest(r) => {
                let this = self.clone();
                tokio::spawn(async move {
                    tracing::info!(
                        version = r.version.as_deref().unwrap_or("latest"),
                        binary = r.binary.as_deref().unwrap_or(""),
                        "upgrade requested"
                    );
                    // The new version answers once it is connected; only a refusal is
                    // answered here.
                    use std::sync::atomic::Ordering;
                    let installed = if this.upgrading.swap(true, Ordering::AcqRel) {
                        Err(UpgradeError::Busy)
                    } else {
                        let r =
                            upgrade::install(&this.client, &r, this.config.upgrade_window).await;
                        // Once installed, the process is about to be replaced: stay busy.
                        if r.is_err() {
                            this.upgrading.store(false, Ordering::Release);
                        }
                        r
                    };
                    match installed {
                        Ok(restart) => {
                            let _ = this.restart.send(Some(restart));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "upgrade refused");
                            let answer = AgentMessage::error(e.to_string(), r.callback);
                            this.relay.answer(session, answer).await;
                        }
                    }
                });
            }
            AgentMessage::StatsRequest(r) => {
                let this = self.clone();
                tokio::spawn(async move {
                    let stats = this.stats().await;
                    let answer = AgentMessage::StatsResponse(StatsResponse {
                        status_code: 200,
                        stats,
                        callback: r.callback,
                    });
                    this.relay.answer(session, answer).await;
                });
            }
            AgentMessage::DeadLettersRequest(r) => {
                let this = self.clone();
                tokio::spawn(async move {
                    let answer = this.dead_letters(r).await;
                    this.relay.answer(session, answer).await;
                });
            }
            other => tracing::debug!(kind = other.kind(), "ignored a message from the relay"),
        }
    }
}

impl Wiring {
    /// `agent:stats:response`'s `stats`, in Medplum's shape: `hl7ConnectionsOpen` (device
    /// connections open on every inbound channel), `hl7QueueDepth` (the queue),
    /// `live`, `channelStats` (per channel: `rtt` as Medplum's, and Outpost's `received`,
    /// `sent`, `errored` since the start, `queued` and `deadLettered` now), `clientStats` (per push
    /// destination: `rtt`), `ping` (the last heartbeat round trip to the relay in ms, `null`
    /// before the first), `webSocketQueueDepth` (messages waiting to be written to the
    /// relay), `hl7ClientCount` (device connections of pushes, open or held) and
    /// `outstandingHeartbeats`; `version` and `configurationProblems` (what is wrong with the
    /// relay's configuration of this agent: the channels named there do not run) are added.
    async fn stats(&self) -> serde_json::Value {
        let rows = self.channel_counts().await;
        let mut channels = self.events.rtt.to_json(stats::Kind::Channel);
        for (name, (c, queued, dead)) in &rows {
            let entry = channels.entry(name.clone()).or_insert_with(|| {
                serde_json::json!({"rtt": {"count": 0, "min": -1, "max": -1, "average": -1,
                    "p50": -1, "p95": -1, "p99": -1, "pendingCount": 0}})
            });
            entry["received"] = c.received.into();
            entry["sent"] = c.sent.into();
            entry["errored"] = c.errored.into();
            entry["queued"] = (*queued).into();
            entry["deadLettered"] = (*dead).into();
        }
        let link = self.relay.health();
        serde_json::json!({
            "hl7ConnectionsOpen": self.connections.saturating_sub(self.budget.available()),
            "ping": link.ping_ms,
            "webSocketQueueDepth": link.queued,
            "hl7QueueDepth": rows.values().map(|(_, queued, _)| queued).sum::<i64>(),
            "hl7ClientCount": self.outbound.device_connections(),
            "live": self.relay.is_live(),
            "outstandingHeartbeats": link.outstanding_heartbeats,
            "channelStats": channels,
            "clientStats": self.events.rtt.to_json(stats::Kind::Remote),
            "version": VERSION,
            "configurationProblems": *self.problems.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }

    /// Each inbound channel's counts since the start, its queue and its dead letters now, by
    /// name: every channel listening, counted or with messages kept (the stats line and
    /// `$stats`).
    async fn channel_counts(
        &self,
    ) -> std::collections::BTreeMap<String, (event::ChannelCounts, i64, i64)> {
        let mut counts = self.events.counts();
        let inbox = self.inbound.inbox().clone();
        let (depths, dead) = tokio::task::spawn_blocking(move || {
            let q = inbox.queue();
            (
                q.depth_by_channel().unwrap_or_default(),
                q.dead_by_channel().unwrap_or_default(),
            )
        })
        .await
        .unwrap_or_default();
        let listening = self.inbound.listening().await;
        let names = listening
            .into_iter()
            .map(|(name, _)| name)
            .chain(counts.keys().cloned())
            .chain(depths.keys().cloned())
            .chain(dead.keys().cloned())
            .collect::<std::collections::BTreeSet<String>>();
        names
            .into_iter()
            .map(|name| {
                let c = counts.remove(&name).unwrap_or_default();
                let queued = depths.get(&name).copied().unwrap_or(0);
                let dead = dead.get(&name).copied().unwrap_or(0);
                (name, (c, queued, dead))
            })
            .collect()
    }

    /// `agent:deadletters:request` (Outpost): send one again if asked, then list what is left.
    async fn dead_letters(&self, r: agent_protocol::DeadLettersRequest) -> AgentMessage {
        let mut status_code = 200;
        if let Some(id) = r.retry {
            match self.inbound.retry_dead_letter(id).await {
                Ok(true) => {}
                Ok(false) => status_code = 404,
                Err(e) => return AgentMessage::error(e.to_string(), r.callback),
            }
        }
        match self.inbound.inbox().queue().dead_letters() {
            Ok(list) => AgentMessage::DeadLettersResponse(agent_protocol::DeadLettersResponse {
                status_code,
                dead_letters: list
                    .into_iter()
                    .map(|d| {
                        serde_json::json!({
                            "id": d.message.id,
                            "channel": d.message.channel,
                            "remote": d.message.remote,
                            "contentType": d.message.content_type,
                            "callback": d.message.callback,
                            "receivedAt": d.received_at,
                            "deadAt": d.dead_at,
                            "failures": d.failures,
                            "reason": d.reason,
                        })
                    })
                    .collect(),
                retried: r.retry.filter(|_| status_code == 200),
                callback: r.callback,
            }),
            Err(e) => AgentMessage::error(e.to_string(), r.callback),
        }
    }
}
