//! The crate's one error type.

/// Why the relay could not start or a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQLite registry or the data directory.
    #[error("registry: {0}")]
    Store(String),
    /// A resource or configuration that is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Binding or socket trouble.
    #[error("{0}")]
    Io(String),
    /// Certificates and keys.
    #[error("TLS: {0}")]
    Tls(String),
}
