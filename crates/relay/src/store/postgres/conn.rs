//! Connections to PostgreSQL: the pool (plaintext or TLS, verified as libpq's `verify-full`),
//! and the listener that follows `NOTIFY outpost_resource` to keep the registry cache in step.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::StoreError;
use super::super::cache::{RegistryCache, is_cached};
use super::registry_rows;

/// Connections in the pool: enough for the statements one process issues at once.
const POOL_SIZE: usize = 16;
/// Longest wait for a pooled connection (or a new one).
const POOL_WAIT: Duration = Duration::from_secs(10);

/// How connections are made: plaintext or TLS.
#[derive(Clone)]
pub(super) enum Tls {
    None,
    Rustls(MakeRustlsConnect),
}

fn pool<T>(config: tokio_postgres::Config, tls: T) -> Result<Pool, StoreError>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<Socket>>::Future: Send,
{
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .build()?)
}

/// The URL parsed, how to connect, and a pool of connections (made when first used).
pub(super) fn connect(
    url: &str,
    ca_pem: Option<&[u8]>,
) -> Result<(tokio_postgres::Config, Tls, Pool), StoreError> {
    let config: tokio_postgres::Config = url.parse()?;
    let tls = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Require => {
            Tls::Rustls(MakeRustlsConnect::new(tls_client_config(ca_pem)?))
        }
        _ => Tls::None,
    };
    let pool = match &tls {
        Tls::None => pool(config.clone(), NoTls)?,
        Tls::Rustls(t) => pool(config.clone(), t.clone())?,
    };
    Ok((config, tls, pool))
}

/// A pool of its own on the database at `url` (TLS as the registry's), for another service of
/// the relay (`Binary` contents), so that long uploads never hold the registry's connections.
pub(crate) fn pool_for(url: &str, ca_pem: Option<&[u8]>) -> Result<Pool, StoreError> {
    Ok(connect(url, ca_pem)?.2)
}

/// Follows `NOTIFY outpost_resource` and keeps `cache` in step, reconnecting forever (with
/// backoff) until the runtime stops.
pub(super) async fn listen(config: tokio_postgres::Config, tls: Tls, cache: Arc<RegistryCache>) {
    let mut backoff = Duration::from_millis(200);
    let mut first = true;
    loop {
        let result = match &tls {
            Tls::None => listen_once(&config, NoTls, &cache, &mut first, &mut backoff).await,
            Tls::Rustls(t) => {
                listen_once(&config, t.clone(), &cache, &mut first, &mut backoff).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %super::super::chain(&e), "PostgreSQL change listener lost its connection; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One listening connection, until it fails.
async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    cache: &RegistryCache,
    first: &mut bool,
    backoff: &mut Duration,
) -> Result<(), StoreError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await?;
    let (notes, mut notified) = tokio::sync::mpsc::channel::<String>(1024);
    // The connection does its I/O when polled; this task polls it and passes notifications on.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m? {
                AsyncMessage::Notification(n) => {
                    if notes.send(n.payload().to_owned()).await.is_err() {
                        break;
                    }
                }
                _ => continue,
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    let result = async {
        client.batch_execute("LISTEN outpost_resource").await?;
        if !*first {
            // Changes made while we were away: start from the database again.
            cache.replace(registry_rows(&client).await?)?;
        }
        *first = false;
        *backoff = Duration::from_millis(200);
        loop {
            let key = tokio::select! {
                key = notified.recv() => match key {
                    Some(k) => k,
                    None => return Ok(()),
                },
                () = tokio::time::sleep(Duration::from_secs(30)) => {
                    // Quiet for a while: make sure the connection is still there.
                    client.simple_query("SELECT 1").await?;
                    continue;
                }
            };
            let Some((ty, id)) = key.split_once('/').filter(|(ty, _)| is_cached(ty)) else {
                continue;
            };
            let row = client
                .query_opt(
                    "SELECT content FROM resource WHERE resource_type = $1 AND id = $2",
                    &[&ty, &id],
                )
                .await?;
            match row.map(|r| r.get::<_, String>(0)) {
                Some(content) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&content) {
                        cache.insert(ty, id, Arc::new(v));
                    }
                }
                None => {
                    cache.remove(ty, id);
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// TLS settings for the connections to PostgreSQL: the CAs in `ca_pem`, or the system's roots.
fn tls_client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(StoreError::CaFile)?)
                    .map_err(StoreError::CaCert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(StoreError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(StoreError::CaCert)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
