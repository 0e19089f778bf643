//! The crate's error: why a relay could not start.

use std::path::PathBuf;

use crate::agents::ClusterError;
use crate::auth::KeyError;
use crate::store::{PutError, StoreError};

/// Why the relay could not start. Each variant keeps its cause (`source()`); print the chain
/// (`{:#}` with anyhow) for the whole story.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file named in the configuration could not be read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bootstrap file is not JSON.
    #[error("{path} is not JSON")]
    BootstrapJson {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A bootstrap resource could not be stored.
    #[error("cannot load {path}")]
    Bootstrap {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: PutError,
    },
    /// The registry (SQLite or PostgreSQL) could not be opened.
    #[error("registry")]
    Store(#[from] StoreError),
    /// The token signing key could not be had.
    #[error("token signing key")]
    Key(#[from] KeyError),
    /// Redis could not be joined.
    #[error("cluster")]
    Cluster(#[from] ClusterError),
    /// The listening socket could not be had.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key file could not be read.
    #[error("TLS: {path}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The TLS certificate and key do not make a server configuration.
    #[error("TLS")]
    Tls(#[from] rustls::Error),
    /// The HTTP client for the inbound webhook could not be built.
    #[error("HTTP client")]
    HttpClient(#[source] reqwest::Error),
}
