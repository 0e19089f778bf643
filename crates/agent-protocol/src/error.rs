//! The crate's one error type.

/// Why a message or request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Over the configured size limit; nothing was parsed.
    #[error("message too large: {size} > {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or JSON of the wrong shape for its `type`.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Well-formed but invalid parameters; the text is what the caller is told (Medplum's
    /// wording where Medplum has one).
    #[error("{0}")]
    Invalid(String),
}
