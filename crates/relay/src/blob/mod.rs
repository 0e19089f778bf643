//! Where `Binary` contents live: [`BlobStore`], one interface for every backend, and
//! [`DiskBlobs`], files under the relay's data directory.
//!
//! A blob is written from a stream of chunks and read back as one; neither direction holds it
//! whole in memory. Writes are all-or-nothing: a blob becomes visible only once every byte is
//! on disk (`fsync`, then a rename), so a reader never sees half of one and a failed upload
//! leaves nothing behind.
//!
//! A PostgreSQL relay (several processes on one database) keeps them in [`PgBlobs`], rows of
//! chunks in that database, so that every process reads what any of them stored.

mod disk;
mod postgres;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

pub(crate) use disk::DiskBlobs;
pub(crate) use postgres::PgBlobs;

/// A stream of chunks, read or written.
pub(crate) type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// What a blob is stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobMeta {
    /// Its media type.
    pub(crate) content_type: String,
    /// Its length in bytes.
    pub(crate) size: u64,
}

/// Why a blob could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BlobError {
    /// The body is over the limit (the caller's fault: 413).
    #[error("binary larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The body could not be read from the client (the caller's side).
    #[error("cannot read the request body: {0}")]
    Body(String),
    /// The relay's storage failed.
    #[error("binary storage: {0}")]
    Io(#[from] std::io::Error),
    /// The relay's database failed.
    #[error("binary storage: {0}")]
    Database(String),
}

/// A backend for `Binary` contents.
#[async_trait::async_trait]
pub(crate) trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores `body` as blob `id`, at most `max` bytes; nothing is kept when it fails.
    async fn put(
        &self,
        id: &str,
        content_type: &str,
        body: Chunks,
        max: u64,
    ) -> Result<BlobMeta, BlobError>;
    /// A blob's metadata and contents, `None` when there is no such blob.
    async fn open(&self, id: &str) -> Result<Option<(BlobMeta, Chunks)>, BlobError>;
}

/// Whether `id` is a FHIR id (`[A-Za-z0-9\-\.]{1,64}`): nothing else names a blob, so an id
/// never reaches a file name unchecked.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !id.starts_with('.')
}
