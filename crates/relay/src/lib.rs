//! The cloud side of Outpost: a relay that the Medplum clients (`medplum` CLI,
//! `MedplumClient.pushToAgent`) and Medplum-compatible agents talk to.
//!
//! ```text
//!  caller ──HTTPS── POST /fhir/R4/Agent/{id}/$push ──┐
//!                                                    relay ──WSS /ws/agent── agent ── device
//!  caller ◀── device's answer (raw, its content type)┘
//! ```
//!
//! - `POST /oauth2/token`: client credentials (form or HTTP Basic) against `ClientApplication`
//!   resources → an HS256 JWT with `client_id`, `exp` one hour ahead, no `login_id`.
//! - `GET /ws/agent`: agent sessions: heartbeats both ways, a silent agent disconnected, every
//!   write with a deadline and unsent data bounded.
//! - `POST /fhir/R4/Agent/{id}/$push` (also `%24push`, `Agent/$push?identifier=`),
//!   `GET Agent/{id}/$status`, `GET Agent/$bulk-status`, `$reload-config`, `$fetch-logs`,
//!   `$upgrade` (the agent downloads the release's executable from the relay: `release`).
//! - `POST /fhir/R4/Binary` (raw, or FHIR JSON with `data`) and `GET /fhir/R4/Binary/{id}`:
//!   contents streamed to files under `--data`, at most [`RelayConfig::max_binary`] bytes.
//! - Create, read, update, delete and search for `Agent`, `Device`, `Endpoint`,
//!   `ClientApplication` (and the lab-order resources) under `/fhir/R4/`, in SQLite (one
//!   process) or PostgreSQL (several processes, routing through Redis).
//! - Inbound device messages are stored, de-duplicated by callback, optionally POSTed to a
//!   webhook, and answered (an HL7 AA by default).
//! - Lab orders: a `ServiceRequest` created or updated here, or notified by another FHIR
//!   server (`POST /outpost/notify/{subscription}`), is converted to ORM/OML/ASTM and pushed as a
//!   matching order-push `Subscription` says.
//! - Lab results: a channel with the [`INBOUND_PROCESSOR_EXTENSION`] `lab-results` has each
//!   ORU/OUL or ASTM result message converted (the `lab-results` crate) and stored as
//!   DiagnosticReport, Observation, Specimen and Patient, `basedOn` the order, which is then
//!   `completed`; resends create nothing; rest-hook Subscriptions on `DiagnosticReport` /
//!   `Observation` get the Bundle. Record types are searched through an index
//!   (`DiagnosticReport?based-on=`, `?patient=`, `Observation?code=`, `?date=`).
//!
//! Where Medplum loses a message silently, the relay says so: a push to an agent that is not
//! connected, or has stopped answering heartbeats, is a 400 rather than "All OK"; an agent that
//! disconnects while a push waits fails the push at once; failures are 400s, never 5xx (the
//! Medplum client retries 5xx, which would deliver twice).
//!
//! It does not run Medplum Bots; inbound messages go to the channel's `targetReference` when it
//! is a rest-hook `Endpoint`, else to the webhook; a Bot target is reported, not acknowledged.
//!
//! ## Inside
//!
//! Imports run one way, top to bottom; nothing calls back up.
//!
//! ```text
//!   lib.rs (Relay: wiring)   server.rs (accept loop, TLS, connection limits)
//!        │
//!   http/        routes, extractors (Caller, FhirRoute), bodies, FHIR responses
//!        │
//!   orders/      lab orders: Subscriptions, conversion, the delivery loop
//!   agents/      sessions (one per socket), LocalAgents, Cluster (Redis), AgentRouter
//!   inbound/     device messages: store, webhook, answer
//!   blob/        Binary contents: BlobStore; files, or rows of chunks (PostgreSQL)
//!        │
//!   auth/        tokens, client secrets, the agent binding      store/   Store trait,
//!   fhir.rs      ids, instants, query strings                            sqlite, postgres
//! ```
//!
//! ## Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use relay::{Relay, RelayConfig};
//!
//! let relay = Relay::start(RelayConfig {
//!     listen: "127.0.0.1:0".into(), // any free port; `local_addr()` says which
//!     ..RelayConfig::default()      // registry in memory
//! })
//! .await?;
//! relay
//!     .registry()
//!     .bootstrap(&serde_json::json!({"resourceType": "Bundle", "entry": [
//!         {"resource": {"resourceType": "Agent", "id": "lab", "status": "active"}}]}))
//!     .await?;
//! assert_eq!(relay.registry().cached_resources(), 1);
//! assert!(!relay.is_connected("lab"));
//! relay.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Features
//!
//! None.

#![warn(unreachable_pub)]

mod agents;
mod auth;
mod blob;
mod check;
mod config;
mod error;
mod fhir;
mod http;
mod inbound;
mod metrics;
mod orders;
mod release;
mod server;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use agents::{AskError, ClusterError, VERSION};
pub use auth::{
    ALLOWED_AGENT_EXTENSION, Claims, KeyError, LoginLimits, MIN_SECRET_LEN, PBKDF2_ITERATIONS,
    TENANT_SCOPE_EXTENSION, TOKEN_TTL_SECS, TokenError, Tokens,
};
pub use check::check_bundle;
pub use config::RelayConfig;
pub use error::Error;
pub use http::UPGRADE_TIMEOUT;
pub use inbound::INBOUND_PROCESSOR_EXTENSION;
pub use orders::{ORDER_PUSH_EXTENSION, SubscriptionError};
pub use release::{AGENT_EXECUTABLE, RELEASE_SYSTEM, SHA256_EXTENSION};
pub use store::{
    ChannelCounts, InboundQuery, InboundRow, InvalidResource, JournalQuery, MessageKeys,
    NewInbound, PushLogLimits, PushRecord, PushRow, PutError, Recorded, Registry, StoreError,
};

use agents::{AgentRouter, Cluster, LocalAgents, SessionConfig, Sessions};
use http::RelayState;
use inbound::Inbound;
use orders::{OrderConfig, Orders};

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    state: Arc<RelayState>,
    local_addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Opens the registry, loads the bootstrap bundle, binds `config.listen` and starts
    /// serving.
    ///
    /// # Errors
    ///
    /// [`Error`]: the data directory, the registry (a damaged SQLite file is refused), the
    /// bootstrap file, the token key, Redis, TLS files, or the listening address.
    pub async fn start(config: RelayConfig) -> Result<Relay, Error> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        Relay::start_on(listener, config).await
    }

    /// The same, on a listener the caller has bound (`config.listen` is not used).
    ///
    /// # Errors
    ///
    /// As [`Relay::start`].
    pub async fn start_on(listener: TcpListener, config: RelayConfig) -> Result<Relay, Error> {
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        let backend_ca = match &config.backend_ca_file {
            Some(f) => Some(std::fs::read(f).map_err(|source| Error::ReadFile {
                path: f.clone(),
                source,
            })?),
            None => None,
        };
        let registry = match &config.database_url {
            Some(url) => Registry::open_postgres(url, backend_ca.as_deref()).await?,
            None => {
                let file = config.data_dir.as_deref().map(|d| d.join("relay.sqlite"));
                Registry::open_sqlite(file.as_deref()).await?
            }
        };
        if let Some(path) = &config.bootstrap {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            let bundle: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::BootstrapJson {
                    path: path.clone(),
                    source,
                })?;
            let n = registry
                .bootstrap(&bundle)
                .await
                .map_err(|source| Error::Bootstrap {
                    path: path.clone(),
                    source,
                })?;
            tracing::info!(resources = n, file = %path.display(), "bootstrap loaded");
        }
        let key = signing_key(&config, &registry).await?;
        let cluster = match &config.redis_url {
            Some(url) => {
                Some(Cluster::connect(url, backend_ca.as_deref(), config.agent_timeout).await?)
            }
            None => None,
        };
        let tls = match &config.tls {
            Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
            None => None,
        };
        let local_addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let (stop, stopping) = watch::channel(false);
        let tokens = Tokens::new(&key).with_ttl(config.token_ttl.as_secs() as i64);
        let http = reqwest::Client::builder()
            .build()
            .map_err(Error::HttpClient)?;
        let local = Arc::new(LocalAgents::new(
            config.max_inbound_per_agent,
            config.max_inbound_bytes,
        ));
        let router = Arc::new(AgentRouter::new(local.clone(), cluster.clone()));
        let orders = Arc::new(Orders::new(
            registry.clone(),
            router.clone(),
            OrderConfig {
                attempts: config.order_attempts,
                backoff: config.order_backoff,
                timeout: config.order_timeout,
            },
        ));
        let inbound = Arc::new(Inbound::new(
            registry.clone(),
            tokens.clone(),
            config.inbound_webhook.clone(),
            http,
        ));
        let sessions = Arc::new(Sessions {
            config: SessionConfig {
                heartbeat_interval: config.heartbeat_interval,
                heartbeat_grace: config.heartbeat_grace,
                agent_timeout: config.agent_timeout,
                connect_timeout: config.connect_timeout,
                max_message: config.max_ws_message,
                max_unsent: config.max_unsent,
                write_timeout: config.write_timeout,
                max_inbound_per_socket: config.max_inbound_per_socket,
            },
            tokens: tokens.clone(),
            registry: registry.clone(),
            inbound,
            local: local.clone(),
            metrics: Arc::new(metrics::Metrics::default()),
            cluster: cluster.clone(),
            stopping: stopping.clone(),
        });
        tokio::spawn(orders.clone().run(stopping.clone()));
        if let Some(c) = cluster {
            tracing::info!(process = c.id(), "relay joins the cluster (Redis)");
            tokio::spawn(agents::run_cluster(local, c, stopping.clone()));
        }
        let limits = server::ConnLimits {
            handshake: config.handshake_timeout,
            header: config.header_timeout,
            max_connections: server::max_connections(config.max_connections),
        };
        tracing::info!(max_connections = limits.max_connections, "connection limit");
        let blobs: Arc<dyn blob::BlobStore> = match &config.database_url {
            Some(url) => Arc::new(
                blob::PgBlobs::open(url, backend_ca.as_deref())
                    .await
                    .map_err(Error::from)?,
            ),
            None => open_blobs(&config)?,
        };
        let login_limits = config.login_limits;
        let push_log = store::PushLog::start(
            registry.clone(),
            store::PushLogLimits {
                max_rows: i64::try_from(config.push_log_rows).unwrap_or(i64::MAX),
                ..store::PushLogLimits::default()
            },
        );
        let state = Arc::new(RelayState {
            blobs,
            push_log,
            agent_counts: http::AgentCounts::default(),
            config,
            registry,
            logins: auth::Logins::new(tokens.clone(), login_limits),
            tokens,
            router,
            orders,
            sessions,
        });
        let app = http::router(state.clone());
        let is_tls = tls.is_some();
        let task = tokio::spawn(server::serve(listener, tls, app, stopping, limits));
        tracing::info!(addr = %local_addr, tls = is_tls, "relay listening");
        Ok(Relay {
            state,
            local_addr,
            tls: is_tls,
            stop,
            task,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://127.0.0.1:PORT/` (or `https://`), for clients on this machine.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/", self.local_addr.port())
    }

    /// The registry: resources, inbound messages, queued orders.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The token issuer and verifier (its key).
    pub fn tokens(&self) -> &Tokens {
        &self.state.tokens
    }

    /// Whether the agent has a live socket on this process.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.state.router.local().is_connected(agent_id)
    }

    /// Agents with a live socket on this process.
    pub fn connected_agents(&self) -> usize {
        self.state.router.local().connected_count()
    }

    /// Callers waiting for an agent's answer now.
    pub fn waiting_requests(&self) -> usize {
        self.state.router.waiting()
    }

    /// Stops accepting, closes every agent socket, and waits for the server to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// `Binary` contents of a relay without a shared database: files under `<data>/binary`, or
/// (a relay in memory) under a fresh directory in the system's temporary directory, made when
/// the first Binary is stored.
fn open_blobs(config: &RelayConfig) -> Result<Arc<dyn blob::BlobStore>, Error> {
    let dir = match &config.data_dir {
        Some(d) => d.join("binary"),
        None => std::env::temp_dir().join(format!("outpost-relay-{}", uuid::Uuid::new_v4())),
    };
    let blobs = blob::DiskBlobs::open(dir.clone())
        .map_err(|source| Error::DataDir { path: dir, source })?;
    Ok(Arc::new(blobs))
}

/// The token signing key: `OUTPOST_TOKEN_KEY` (base64) if set; with a shared (PostgreSQL)
/// registry, the key stored there, so that every relay process accepts every other's tokens;
/// else `<data>/token.key`.
async fn signing_key(config: &RelayConfig, registry: &Registry) -> Result<Vec<u8>, Error> {
    if std::env::var_os("OUTPOST_TOKEN_KEY").is_none() && registry.is_shared() {
        use base64::Engine;
        let fresh = base64::engine::general_purpose::STANDARD.encode(auth::random_key()?);
        if let Some(b64) = registry.shared_setting("token_key", fresh).await? {
            return Ok(auth::decode_key(&b64, "the stored token key")?);
        }
    }
    Ok(auth::load_or_create_key(config.data_dir.as_deref())?)
}
