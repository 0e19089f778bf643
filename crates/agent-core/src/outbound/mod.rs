//! Pushes: a message from the relay delivered to a device by the scheme of its `remote` (the
//! destination Device's `url`), one module per scheme.
//!
//! | `remote` | action | answer |
//! |---|---|---|
//! | `mllp://host:port[?encoding=&returnAck=]` | send over MLLP (pooled), wait for the ACK | the ACK, 200 |
//! | `mllps://host:port[?ca=&cert=&key=&...]` | the same over TLS ([`device_tls`]) | the ACK, 200 |
//! | `astm://host:port[?encoding=]` | E1381 over TCP as the LIS: ENQ, frames, EOT | `text/plain` summary, 200 |
//! | `dicom://host:port?calledAet=&callingAet=[&tls=true&ca=...]` with `application/dicom` (base64 Part 10) | C-STORE (over TLS with `tls=true`) | JSON result, 200 |
//! | same, with `application/dicom+json` (a query identifier) | C-FIND | JSON array of matches, 200 |
//! | a host or IP with `x-application/ping` | the system `ping` | its output, 200 |
//! | anything else | none | 400 "unsupported destination scheme" |
//!
//! Failures are 400 `text/plain` saying what happened ([`PushError`]). Every push is answered
//! exactly once, within its time: `ackTimeoutMs` from its arrival at the agent, or the caller's
//! deadline when the relay sends a shorter one (`deadlineMs`). Waiting for a pooled connection
//! counts; a push that cannot be sent before its deadline is not sent at all.

mod astm;
pub(crate) mod device_tls;
mod dicom;
mod error;
mod mllp;
mod ping;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_PING, CONTENT_TYPE_TEXT, TransmitRequest, TransmitResponse,
};
use tokio::time::Instant;

pub use error::{Fault, PushError};

use crate::AgentConfig;
use crate::config::remote::AgentSettings;
use crate::event::{Event, Events};
use crate::link::{RelayLink, Session};
use crate::stats::Kind;
use crate::url::DeviceUrl;

/// What a delivered push answers: a content type and a body.
pub(crate) type Delivered = (String, String);

/// A push's time budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeBudget {
    /// When the push arrived.
    pub(crate) arrived: Instant,
    /// When its answer is due.
    pub(crate) deadline: Instant,
    /// Whether the deadline is the caller's (shorter than `ackTimeoutMs`).
    pub(crate) callers: bool,
}

impl TimeBudget {
    /// The time from arrival to the deadline.
    pub(crate) fn total(&self) -> Duration {
        self.deadline - self.arrived
    }

    /// The time left.
    pub(crate) fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Logs a push that was on the wire when its caller's deadline passed: the device may
    /// still act on it, and its caller has been told "timeout".
    pub(crate) fn log_late(&self, remote: &str) {
        if self.callers {
            tracing::warn!(
                remote,
                after_ms = self.total().as_millis() as u64,
                "push was on the wire when its caller's deadline passed; the device may act on it late"
            );
        }
    }
}

/// Push delivery.
#[derive(Debug)]
pub(crate) struct Outbound {
    config: Arc<AgentConfig>,
    /// Replaced when `Agent.setting` changes how connections are kept; a push holds the pool
    /// it started with.
    pool: std::sync::RwLock<::mllp::Pool>,
    device_tls: device_tls::DeviceTls,
    /// `Agent.status` is `off`: pushes are refused.
    off: AtomicBool,
    events: Events,
}

impl Outbound {
    pub(crate) fn new(config: Arc<AgentConfig>, events: Events) -> Outbound {
        let pool = ::mllp::Pool::new(pool_options(&config, &AgentSettings::default()));
        Outbound {
            config,
            pool: std::sync::RwLock::new(pool),
            device_tls: device_tls::DeviceTls::default(),
            off: AtomicBool::new(false),
            events,
        }
    }

    /// Applies `keepAlive` and `maxClientsPerRemote`: a new pool when they change them (the
    /// old one's idle connections close; pushes on them finish), as Medplum's agent resets its
    /// client pools when `keepAlive` changes.
    pub(crate) fn apply_settings(&self, settings: &AgentSettings) {
        let opts = pool_options(&self.config, settings);
        let mut pool = self.pool.write().unwrap_or_else(|p| p.into_inner());
        if *pool.options() != opts {
            tracing::info!(
                keep_alive = opts.keep_alive,
                connection_per_message = !opts.keep_alive && opts.idle_timeout.is_zero(),
                max_clients_per_remote = opts.max_per_destination,
                "outbound MLLP connections reconfigured"
            );
            pool.clear();
            *pool = ::mllp::Pool::new(opts);
        }
    }

    /// MLLP connections to devices open or held by a push (`$stats` `hl7ClientCount`).
    pub(crate) fn device_connections(&self) -> usize {
        self.pool().connections()
    }

    fn pool(&self) -> ::mllp::Pool {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_off(&self, off: bool) {
        self.off.store(off, Ordering::Relaxed);
    }

    pub(crate) fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// A push from the relay on `session`: delivered on its own task, answered exactly once.
    pub(crate) fn push(self: &Arc<Self>, relay: RelayLink, session: Session, req: TransmitRequest) {
        let arrived = Instant::now();
        let this = self.clone();
        tokio::spawn(async move {
            this.events.emit(Event::PushReceived {
                remote: req.remote.clone(),
                content_type: req.content_type.clone(),
            });
            if this.is_off() {
                this.events.metrics.push("refused", None);
                let refusal =
                    AgentMessage::error("Agent.status is currently set to off", req.callback);
                relay.answer(session, refusal).await;
                return;
            }
            let budget = this.budget(arrived, req.deadline_ms);
            this.events.rtt.started(Kind::Remote, &req.remote);
            let resp = this.deliver(&req, budget).await;
            let status = resp.status_code.unwrap_or(200);
            let took = arrived.elapsed();
            let answered = !resp.is_error();
            // Only an answer from the device is a round trip (as Medplum's `clientStats`).
            this.events
                .rtt
                .finished(Kind::Remote, &req.remote, answered.then_some(took));
            this.events
                .metrics
                .push(if answered { "answered" } else { "error" }, Some(took));
            tracing::info!(remote = req.remote, status, "push answered");
            this.events.emit(Event::PushAnswered {
                remote: req.remote.clone(),
                status,
                body: resp.body.clone(),
            });
            if !relay
                .answer(session, AgentMessage::TransmitResponse(resp))
                .await
            {
                tracing::warn!(
                    remote = req.remote,
                    "push answered after the session ended; the relay has failed it already"
                );
            }
        });
    }

    /// `ackTimeoutMs` from arrival, or the caller's deadline when the relay sent a shorter one.
    fn budget(&self, arrived: Instant, deadline_ms: Option<u64>) -> TimeBudget {
        let own = self.config.ack_timeout;
        match deadline_ms.map(Duration::from_millis) {
            Some(callers) if callers < own => TimeBudget {
                arrived,
                deadline: arrived + callers,
                callers: true,
            },
            _ => TimeBudget {
                arrived,
                deadline: arrived + own,
                callers: false,
            },
        }
    }

    /// Delivers one push and builds its answer.
    async fn deliver(&self, req: &TransmitRequest, budget: TimeBudget) -> TransmitResponse {
        let result = if budget.left().is_zero() {
            Err(PushError::ArrivedLate)
        } else if req.content_type == CONTENT_TYPE_PING {
            ping::ping(&req.remote, &req.body, budget).await
        } else {
            match DeviceUrl::parse(&req.remote) {
                Ok(url) => match url.scheme.as_str() {
                    "mllp" => mllp::push(&self.pool(), &url, None, req, budget).await,
                    "mllps" => match self.device_tls.target(&url, self.config.ca_file.as_deref()) {
                        Ok(tls) => mllp::push(&self.pool(), &url, Some(&tls), req, budget).await,
                        Err(e) => Err(e),
                    },
                    "astm" => astm::push(&url, req, budget).await,
                    "dicom" => {
                        let tls = match url.get("tls") {
                            Some("true") => self
                                .device_tls
                                .target(&url, self.config.ca_file.as_deref())
                                .map(Some),
                            _ => Ok(None),
                        };
                        match tls {
                            Ok(tls) => {
                                dicom::push(&url, tls, req, budget, self.config.ack_timeout).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    other => Err(PushError::UnsupportedScheme(other.to_owned())),
                },
                Err(crate::url::UrlError::NotAUrl(_)) => {
                    Err(PushError::NotAUrl(req.remote.clone()))
                }
                Err(e) => match req.remote.split_once("://") {
                    Some((scheme, _)) if !matches!(scheme, "mllp" | "mllps" | "astm" | "dicom") => {
                        Err(PushError::UnsupportedScheme(scheme.to_owned()))
                    }
                    _ => Err(e.into()),
                },
            }
        };
        // From the push's arrival here to the device's answer.
        let device_us = result
            .is_ok()
            .then(|| u64::try_from(budget.arrived.elapsed().as_micros()).unwrap_or(u64::MAX));
        let (status, content_type, body) = match result {
            Ok((ct, body)) => (200, ct, body),
            Err(e) => {
                tracing::warn!(
                    remote = req.remote,
                    fault = ?e.fault(),
                    reason = e.reason_for_log(),
                    "push not delivered"
                );
                (400, CONTENT_TYPE_TEXT.to_owned(), e.to_string())
            }
        };
        TransmitResponse {
            channel: req.channel.clone(),
            remote: req.remote.clone(),
            callback: req.callback.clone(),
            content_type,
            status_code: Some(status),
            status: None,
            body,
            device_us,
        }
    }
}

/// The MLLP pool's options for `Agent.setting` (Medplum's packages/agent/src/app.ts,
/// `reloadConfig`: `keepAlive` keeps connections, and then one per remote unless
/// `maxClientsPerRemote` says otherwise; without it a client per message).
fn pool_options(config: &AgentConfig, settings: &AgentSettings) -> ::mllp::PoolOptions {
    let defaults = ::mllp::PoolOptions::default();
    let (keep_alive, idle_timeout, max) = match settings.keep_alive {
        Some(true) => (true, defaults.idle_timeout, 1),
        Some(false) => (false, Duration::ZERO, defaults.max_per_destination),
        None => (false, defaults.idle_timeout, defaults.max_per_destination),
    };
    ::mllp::PoolOptions {
        client: ::mllp::ClientOptions {
            ack_timeout: config.ack_timeout,
            ..::mllp::ClientOptions::default()
        },
        keep_alive,
        idle_timeout,
        max_per_destination: settings.max_clients_per_remote.map_or(max, |m| m as usize),
    }
}

/// `?encoding=` of a destination, or the scheme's default.
fn charset(
    url: &DeviceUrl,
    remote: &str,
    default: hl7v2::Charset,
) -> Result<hl7v2::Charset, PushError> {
    match url.get("encoding") {
        Some(label) => hl7v2::Charset::from_label(label).map_err(|source| PushError::Encoding {
            remote: remote.to_owned(),
            source,
        }),
        None => Ok(default),
    }
}
