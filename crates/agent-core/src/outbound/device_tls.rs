//! TLS with devices (`mllps://`, `dicom://...?tls=true`): whom the agent trusts and what it
//! presents, from the destination's URL (and, for an `mllps://` or a TLS `dicom://` channel,
//! [`server_config`]). `?ca=FILE` (PEM, a file on the agent's host): only those CAs; without it
//! the system roots plus the agent's `caFile`. `?cert=FILE&key=FILE` (PEM): a client
//! certificate for mutual TLS (IHE ATNA). TLS 1.2 and 1.3 (rustls, ring). The server name
//! checked is the URL's host. Configurations are built once per set of files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mllp::TlsTarget;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use super::PushError;
use crate::url::DeviceUrl;

/// rustls configurations by (ca, cert, key).
#[derive(Debug, Default)]
pub(crate) struct DeviceTls {
    configs: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
}

impl DeviceTls {
    /// The TLS target for `url`, the agent's `caFile` as the extra root when `?ca=` is absent.
    pub(crate) fn target(
        &self,
        url: &DeviceUrl,
        agent_ca: Option<&Path>,
    ) -> Result<TlsTarget, PushError> {
        let ca = url.get("ca").map(PathBuf::from);
        let cert = url.get("cert").map(PathBuf::from);
        let key = url.get("key").map(PathBuf::from);
        let problem = |problem: String| PushError::DeviceTls {
            addr: url.addr.clone(),
            problem,
        };
        let host = url
            .addr
            .rsplit_once(':')
            .map_or(url.addr.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|_| problem(format!("{host:?} is not a valid server name")))?;
        let label = format!("ca={ca:?} cert={cert:?} key={key:?}");
        let cached = self
            .configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&label)
            .cloned();
        let config = match cached {
            Some(c) => c,
            None => {
                let c = build(ca.as_deref(), agent_ca, cert.as_deref(), key.as_deref())
                    .map_err(problem)?;
                self.configs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(label.clone(), c.clone());
                c
            }
        };
        Ok(TlsTarget {
            config,
            server_name,
            label,
        })
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates", path.display()));
    }
    Ok(certs)
}

fn build(
    ca: Option<&Path>,
    agent_ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let extra = match ca {
        Some(ca) => Some(ca),
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                // A malformed system certificate is skipped, as browsers do.
                let _ = roots.add(c);
            }
            agent_ca
        }
    };
    if let Some(path) = extra {
        for c in certs(path)? {
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("cert= and key= go together".to_owned()),
    };
    Ok(Arc::new(config))
}

/// The TLS configuration of an `mllps://` channel or a `dicom://...?tls=true` one:
/// `?cert=FILE&key=FILE` (PEM, required) is the agent's certificate; with `?ca=FILE` a device must present a client certificate from those
/// CAs (mutual TLS), without it none is asked.
pub(crate) fn server_config(url: &DeviceUrl) -> Result<Arc<rustls::ServerConfig>, String> {
    let (Some(cert), Some(key)) = (url.get("cert"), url.get("key")) else {
        return Err(format!(
            "{}:// channels over TLS need cert=FILE and key=FILE (PEM)",
            url.scheme
        ));
    };
    let chain = certs(Path::new(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match url.get("ca") {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(Path::new(ca))? {
                roots.add(c).map_err(|e| format!("{ca}: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("{ca}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate {cert}: {e}"))?;
    Ok(Arc::new(config))
}
