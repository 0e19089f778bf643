//! How a relay runs: [`RelayConfig`].

use std::path::PathBuf;
use std::time::Duration;

/// How a relay runs. Every limit here is a bound the relay keeps against a slow or hostile
/// peer (see SECURITY.md, "Limits against hostile peers").
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address to listen on (when [`Relay::start`](crate::Relay::start) binds it).
    pub listen: String,
    /// Directory for the SQLite registry and the token key; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// A FHIR Bundle of resources to load at start, keeping their ids.
    pub bootstrap: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS/WSS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where inbound device messages are POSTed before they are answered.
    pub inbound_webhook: Option<String>,
    /// How often each agent gets a heartbeat request.
    pub heartbeat_interval: Duration,
    /// A heartbeat request unanswered this long marks the agent unresponsive: pushes to it are
    /// refused (not queued) until it answers again.
    pub heartbeat_grace: Duration,
    /// An agent silent for this long is disconnected (Medplum keeps such sockets forever).
    pub agent_timeout: Duration,
    /// A new socket must send `agent:connect:request` within this time.
    pub connect_timeout: Duration,
    /// Every write to an agent's socket must complete within this time, or the socket is
    /// closed and the agent disconnected.
    pub write_timeout: Duration,
    /// Most bytes waiting to be written to one agent's socket; more closes it.
    pub max_unsent: usize,
    /// Inbound messages one agent socket may have the relay handle at once (more are answered
    /// 429 at once).
    pub max_inbound_per_socket: usize,
    /// Inbound messages one agent may have the relay handle at once, across its connections.
    pub max_inbound_per_agent: usize,
    /// Bytes of inbound messages one agent may have the relay handle at once.
    pub max_inbound_bytes: usize,
    /// Connections served at once (HTTP and agent sockets); more are closed as soon as they
    /// are accepted. `None`: the soft file-descriptor limit less 64, so the relay runs out of
    /// connection slots before it runs out of descriptors.
    pub max_connections: Option<usize>,
    /// Largest HTTP request body.
    pub max_body: usize,
    /// Largest `Binary` body (default 512 MiB); more is answered 413.
    pub max_binary: u64,
    /// Largest WebSocket message.
    pub max_ws_message: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's head; a connection idle this long between requests is
    /// closed too.
    pub header_timeout: Duration,
    /// Time allowed for a request's body.
    pub body_timeout: Duration,
    /// Failed logins (token endpoint, HTTP Basic) allowed per client id and per source
    /// address before further attempts are answered 429 with `Retry-After`.
    pub login_limits: crate::LoginLimits,
    /// Lifetime of issued access tokens (one hour).
    pub token_ttl: Duration,
    /// PostgreSQL for the registry (`postgres://...`), shared by several relay processes;
    /// `None`: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Redis for agent presence and push routing between relay processes (`redis://...`, or
    /// `rediss://...` for TLS).
    pub redis_url: Option<String>,
    /// PEM file of the CAs that PostgreSQL's and Redis's certificates must chain to (instead of
    /// the system's roots), for TLS to them (`sslmode=require`, `rediss://`).
    pub backend_ca_file: Option<PathBuf>,
    /// Lab orders: attempts before a push is recorded as failed.
    pub order_attempts: u32,
    /// Lab orders: the wait after the first failed attempt, doubling after each (at most 5 min).
    pub order_backoff: Duration,
    /// Lab orders: how long each push waits for the device's answer.
    pub order_timeout: Duration,
    /// The console's push log: how many pushes it keeps (the newest; at most 7 days). 0: no
    /// push log (each logged push costs the relay a database row).
    pub push_log_rows: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let max_ws_message = agent_protocol::DEFAULT_MAX_MESSAGE;
        RelayConfig {
            listen: "127.0.0.1:8103".into(),
            data_dir: None,
            bootstrap: None,
            tls: None,
            inbound_webhook: None,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_grace: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(35),
            connect_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_unsent: max_ws_message + 64 * 1024,
            max_inbound_per_socket: 32,
            max_inbound_per_agent: 64,
            max_inbound_bytes: 4 * max_ws_message,
            max_connections: None,
            max_body: 16 * 1024 * 1024,
            max_binary: 512 << 20,
            max_ws_message,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            login_limits: crate::LoginLimits::default(),
            token_ttl: Duration::from_secs(crate::auth::TOKEN_TTL_SECS as u64),
            database_url: None,
            redis_url: None,
            backend_ca_file: None,
            order_attempts: 5,
            order_backoff: Duration::from_secs(2),
            order_timeout: Duration::from_secs(30),
            push_log_rows: 100_000,
        }
    }
}
