//! The hub of a running agent: what the relay asks (`$reload-config`, `$stats`, pushes,
//! `$upgrade`, ...), routed to the part that answers it.

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{AgentMessage, LogsResponse, StatsResponse, StatusResponse};
use byte_stream::Budget;
use tokio::sync::watch;

use crate::config::remote::RemoteConfig;
use crate::event::Events;
use crate::inbound::Inbound;
use crate::link::{self, RelayLink, Session};
use crate::outbound::Outbound;
use crate::{
    AgentConfig, ConfigError, Error, LogBuffer, RelayClient, Restart, UpgradeError, VERSION,
    config, event, stats, upgrade,
};

/// The `logStatsFreqSecs` task, with its period in seconds.
type StatsTimer = (u64, tokio::task::JoinHandle<()>);

/// The one place the parts meet: what the relay asks, routed to the part that answers it.
#[derive(Debug, Clone)]
pub(crate) struct Wiring {
    pub(crate) config: Arc<AgentConfig>,
    pub(crate) client: RelayClient,
    pub(crate) relay: RelayLink,
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) outbound: Arc<Outbound>,
    pub(crate) logs: LogBuffer,
    pub(crate) events: Events,
    pub(crate) stopping: watch::Receiver<bool>,
    /// `Agent.setting` names already logged as ignored: each is said once.
    pub(crate) settings_seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The `logStatsFreqSecs` task and its period.
    pub(crate) stats_timer: Arc<std::sync::Mutex<Option<StatsTimer>>>,
    /// The device connections of all channels, and how many it allows (`$stats`).
    pub(crate) budget: Budget,
    pub(crate) connections: usize,
    /// Set once an upgrade has installed a new executable.
    pub(crate) restart: Arc<watch::Sender<Option<Restart>>>,
    /// An upgrade is being downloaded or installed: a second request is refused.
    pub(crate) upgrading: Arc<std::sync::atomic::AtomicBool>,
    /// What is wrong with the relay's configuration of this agent, as last read.
    pub(crate) problems: Arc<std::sync::Mutex<Vec<String>>>,
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
    pub(crate) async fn open_saved(&self) {
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
