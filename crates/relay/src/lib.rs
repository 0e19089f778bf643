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
//! - `GET /ws/agent`: agent sessions (see the `ws` module docs).
//! - `POST /fhir/R4/Agent/{id}/$push` (also `%24push`, `Agent/$push?identifier=`),
//!   `GET Agent/{id}/$status`, `GET Agent/$bulk-status`, `$reload-config`, `$fetch-logs`,
//!   `$upgrade`.
//! - Create, read, update, delete and search for `Agent`, `Device`, `Endpoint`,
//!   `ClientApplication` (and the lab-order resources) under `/fhir/R4/`, in SQLite.
//! - Inbound device messages are stored, de-duplicated by callback, optionally POSTed to a
//!   webhook, and answered (an HL7 AA by default).
//! - Lab orders: a `ServiceRequest` created or updated here, or notified by another FHIR
//!   server (`POST /outpost/notify/{subscription}`), is converted to ORM/OML/ASTM and pushed as a
//!   matching `Subscription` says (see [`orders`]).
//!
//! Where Medplum loses a message silently, the relay says so: a push to an agent that is not
//! connected is a 400 ("not connected") rather than "All OK"; an agent that disconnects while a
//! push waits fails the push at once; failures are 400s, never 5xx (the Medplum client retries
//! 5xx, which would deliver twice).
//!
//! It does not run Medplum Bots; inbound messages go to a webhook instead.
//!
//! ## Features
//!
//! None.

// Route helpers return `Result<_, Response>`: the error *is* the HTTP answer, built once per
// failed request. Boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod agents;
pub mod auth;
pub mod cluster;
mod error;
mod http;
mod inbound;
mod ops;
pub mod orders;
mod pg;
mod routes;
mod state;
mod store;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub use agents::{Agents, Presence};
pub use error::Error;
pub use state::{RelayConfig, RelayState, VERSION};
pub use store::{Delivery, InboundRow, Recorded, Store};

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
    /// Opens the registry, loads the bootstrap bundle, binds and starts serving.
    pub async fn start(config: RelayConfig) -> Result<Relay, Error> {
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
        }
        let backend_ca = match &config.backend_ca_file {
            Some(f) => Some(
                std::fs::read(f).map_err(|e| Error::Invalid(format!("{}: {e}", f.display())))?,
            ),
            None => None,
        };
        let store = match &config.database_url {
            Some(url) => Store::open_postgres(url, backend_ca.as_deref())?,
            None => Store::open(
                config
                    .data_dir
                    .as_deref()
                    .map(|d| d.join("relay.sqlite"))
                    .as_deref(),
            )?,
        };
        if let Some(path) = &config.bootstrap {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            let bundle: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            let n = store.bootstrap(&bundle)?;
            tracing::info!(resources = n, file = %path.display(), "bootstrap loaded");
        }
        let key = auth::signing_key(config.data_dir.as_deref(), &store)?;
        let cluster = match &config.redis_url {
            Some(url) => Some(
                cluster::Cluster::connect(url, backend_ca.as_deref(), config.agent_timeout).await?,
            ),
            None => None,
        };
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Io(format!("cannot listen on {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(e.to_string()))?;
        let config_ttl = config.token_ttl.as_secs() as i64;
        let (stop, stopping) = watch::channel(false);
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Io(format!("http client: {e}")))?;
        let state = Arc::new(RelayState {
            config,
            store,
            tokens: auth::Tokens::new(&key).with_ttl(config_ttl),
            agents: Agents::default(),
            http,
            stopping: stopping.clone(),
            orders_wakeup: tokio::sync::Notify::new(),
            cluster: cluster.clone(),
        });
        tokio::spawn(orders::run(state.clone()));
        if let Some(c) = cluster {
            tracing::info!(process = c.id(), "relay joins the cluster (Redis)");
            tokio::spawn(cluster::run(state.clone(), c));
        }
        let app = routes::router(state.clone());
        let is_tls = tls.is_some();
        let limits = ConnLimits {
            handshake: state.config.handshake_timeout,
            header: state.config.header_timeout,
        };
        let task = tokio::spawn(serve(listener, tls, app, stopping, limits));
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

    /// The shared state (registry, live agents).
    pub fn state(&self) -> &Arc<RelayState> {
        &self.state
    }

    /// Stops accepting, closes every agent socket, and waits for the server to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Resolves once the stop flag is set (without holding the watch lock across awaits).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Time limits on each connection.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    /// TLS handshake.
    handshake: Duration,
    /// The head of each request (the first, and each next one on a kept-alive connection).
    header: Duration,
}

/// Accepts connections (TLS when an acceptor is given) and serves each with HTTP/1.1 and
/// WebSocket upgrades. A client that is slow to finish a TLS handshake or a request head (a
/// slow-loris), or that keeps a connection idle between requests, is disconnected after the
/// limits; request bodies have their own limit in the routes.
async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    mut stopping: watch::Receiver<bool>,
    limits: ConnLimits,
) {
    // HTTP/1.1 only: the clients (the Medplum CLI and client, agents) speak it, and TLS offers
    // no ALPN for h2. (hyper-util's auto builder sniffs for h2 before any timer runs, so a silent
    // client would hold its connection forever.)
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    let builder = Arc::new(builder);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of file descriptors, most likely: give them a moment to come back.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stopping) => return,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, stop, builder) = (
            acceptor.clone(),
            app.clone(),
            stopping.clone(),
            builder.clone(),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            match acceptor {
                None => serve_conn(&builder, TokioIo::new(tcp), service, peer, stop).await,
                Some(acceptor) => {
                    // A client that never finishes the handshake holds nothing for long.
                    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            serve_conn(&builder, TokioIo::new(tls), service, peer, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_conn<I, S, B>(
    builder: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
