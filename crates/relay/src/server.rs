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

/// Time limits on each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// TLS handshake.
    pub(crate) handshake: Duration,
    /// The head of each request (the first, and each next one on a kept-alive connection).
    pub(crate) header: Duration,
}

/// Accepts connections (TLS when an acceptor is given) and serves each with HTTP/1.1 and
/// WebSocket upgrades. A client that is slow to finish a TLS handshake or a request head (a
/// slow-loris), or that keeps a connection idle between requests, is disconnected after the
/// limits; request bodies have their own limit in the routes.
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
