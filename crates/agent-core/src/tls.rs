//! Which servers the agent trusts: the system's roots, plus an optional CA file. One rustls
//! configuration serves both HTTPS (token, FHIR reads) and WSS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::Error;

/// A rustls client configuration trusting the system roots and the certificates in `ca_file`.
///
/// # Errors
///
/// [`Error::CaFile`] when the file cannot be read or holds no certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let ca_file = |source| Error::CaFile {
            path: path.to_owned(),
            source,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ca_file(std::io::Error::other(e)))?;
        if certs.is_empty() {
            return Err(ca_file(std::io::Error::other("no certificates")));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ca_file(std::io::Error::other(e)))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(Box::new(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
