//! The accept loop: TCP (and TLS) connections served with HTTP/1.1 and WebSocket upgrades,
//! each within its time limits, all stopped by one watch flag.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::Error;

/// Resolves once the stop flag is set (without holding the watch lock across awaits).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The TLS acceptor for a PEM certificate chain and key.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|source| Error::TlsFile {
            path: cert.to_owned(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| Error::TlsFile {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// TLS handshake.
    pub(crate) handshake: Duration,
    /// The head of each request (the first, and each next one on a kept-alive connection).
    pub(crate) header: Duration,
    /// Connections served at once; more are closed as soon as they are accepted.
    pub(crate) max_connections: usize,
}

/// File descriptors kept free for everything but client connections (the database, Redis,
/// the webhook client, log files, the listener itself).
const FD_RESERVE: u64 = 64;

/// The connection cap: `configured`, else the soft file-descriptor limit less a reserve, so
/// the process runs out of connection slots before it runs out of descriptors.
pub(crate) fn max_connections(configured: Option<usize>) -> usize {
    if let Some(n) = configured {
        return n.max(1);
    }
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX)
}

/// Whether an accept error means the process or system is out of file descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (24): this process's limit; ENFILE (23): the system's.
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Accepts connections (TLS when an acceptor is given) and serves each with HTTP/1.1 and
/// WebSocket upgrades. A client that is slow to finish a TLS handshake or a request head (a
/// slow-loris), or that keeps a connection idle between requests, is disconnected after the
/// limits; request bodies have their own limit in the routes.
///
/// At most `max_connections` are served at once: one more is accepted and closed at once
/// (the client sees the connection reset instead of hanging in the backlog). Out of file
/// descriptors (EMFILE/ENFILE), accepting pauses — 10 ms, doubling to 1 s — instead of
/// spinning. Either condition is logged once when it starts and once when it ends, not per
/// attempt.
pub(crate) async fn serve(
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
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (mut at_cap, mut no_fds) = (0u64, false);
    let mut pause = Duration::from_millis(10);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) if out_of_descriptors(&e) => {
                    if !no_fds {
                        tracing::error!(error = %e, "out of file descriptors: pausing accepts until some are free");
                        no_fds = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stopped(&mut stopping) => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut stopping) => return,
        };
        if no_fds {
            tracing::info!("file descriptors available again: accepting");
            (no_fds, pause) = (false, Duration::from_millis(10));
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: the client hears a reset, not silence.
            let _ = tcp.set_zero_linger();
            drop(tcp);
            if at_cap == 0 {
                tracing::warn!(
                    max = limits.max_connections,
                    "connection limit reached: closing new connections until some end"
                );
            }
            at_cap += 1;
            continue;
        };
        if at_cap > 0 {
            tracing::info!(refused = at_cap, "below the connection limit again");
            at_cap = 0;
        }
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, stop, builder) = (
            acceptor.clone(),
            app.clone(),
            stopping.clone(),
            builder.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
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
