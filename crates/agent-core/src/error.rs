//! The crate's one error type.

/// What can stop the agent or one of its operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The relay refused or failed a request (login, a FHIR read, a push).
    #[error("relay: {0}")]
    Relay(String),
    /// The relay could not be reached.
    #[error("cannot reach the relay: {0}")]
    Http(String),
    /// Certificates.
    #[error("TLS: {0}")]
    Tls(String),
    /// The durable queue.
    #[error("queue: {0}")]
    Queue(String),
    /// Sockets and files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
