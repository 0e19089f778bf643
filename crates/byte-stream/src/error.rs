//! The crate's one error type.

/// What can go wrong framing or serving a byte stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame is larger than the configured maximum. The framer has dropped it and goes on
    /// with the next one.
    #[error("frame too large: {size} > {max} bytes")]
    FrameTooLarge {
        /// Bytes of the frame seen when it was given up (at least `max + 1`).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
