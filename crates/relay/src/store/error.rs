//! Why the store failed. Every variant is the relay's own trouble (disk, database, network to
//! the database), never the caller's: the HTTP layer answers it with a 5xx, the agent link with
//! a retryable 503.

use std::path::PathBuf;

/// A failure of the database behind the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thread hashing a client secret did not finish (the runtime is shutting down).
    #[error("client secret hashing did not finish")]
    Hashing,
    /// SQLite refused or failed (disk full, locked, I/O error, ...).
    #[error("SQLite")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed, or the connection to it broke.
    #[error("PostgreSQL")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to PostgreSQL could be had from the pool.
    #[error("no connection to PostgreSQL")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The PostgreSQL pool could not be built.
    #[error("cannot set up the PostgreSQL pool")]
    PoolSetup(#[from] deadpool_postgres::BuildError),
    /// A stored resource could not be read back as JSON.
    #[error("stored {ty}/{id} is not JSON")]
    NotJson {
        /// Its type.
        ty: String,
        /// Its id.
        id: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// `PRAGMA quick_check` found damage: the relay refuses to serve from this file.
    #[error(
        "the registry {path} is damaged (PRAGMA quick_check: {report}); stop the relay, restore \
         the file from a backup (or move it and its -wal/-shm files aside to start with an empty \
         registry), then start again"
    )]
    Damaged {
        /// The SQLite file.
        path: PathBuf,
        /// What `quick_check` said (its first lines).
        report: String,
    },
    /// The certificate authorities for TLS to PostgreSQL could not be read.
    #[error("CA file for PostgreSQL")]
    CaFile(#[source] rustls::pki_types::pem::Error),
    /// A CA certificate was refused.
    #[error("CA certificate for PostgreSQL")]
    CaCert(#[source] rustls::Error),
    /// No CA certificate to verify PostgreSQL's with.
    #[error("no CA certificates to verify the database with")]
    NoRoots,
    /// The blocking task running a SQLite statement panicked or was cancelled.
    #[error("the database worker stopped")]
    Worker(#[from] tokio::task::JoinError),
}

/// `e` with its causes, `: `-separated (what a person needs in a log line or an answer).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        // Some errors repeat their cause's text in their own; say it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}
