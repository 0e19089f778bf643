//! [`PgBlobs`]: blobs in PostgreSQL, for relay processes that share one database: a `blob` row
//! (media type, size) and its bytes as `blob_chunk` rows of at most [`CHUNK`] bytes.
//!
//! A write is one transaction: the chunks are inserted as the body arrives and the `blob` row
//! last, so a blob is visible whole or not at all, and an upload that fails or runs over the
//! limit is rolled back. A read fetches one chunk at a time. Uploads use a pool of their own
//! and never hold the registry's connections.

use deadpool_postgres::Pool;
use futures_util::StreamExt;

use super::{BlobError, BlobMeta, BlobStore, Chunks, valid_id};
use crate::fhir::now_rfc3339;
use crate::store::StoreError;

/// The largest chunk row: 1 MiB.
pub(crate) const CHUNK: usize = 1 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blob (
    id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_chunk (
    blob_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, seq)
);";

/// Blobs as rows of chunks.
#[derive(Debug)]
pub(crate) struct PgBlobs {
    pool: Pool,
}

fn db(e: impl Into<StoreError>) -> BlobError {
    BlobError::Database(crate::store::chain(&e.into()))
}

impl PgBlobs {
    /// Blobs in the database at `url` (tables created if missing).
    pub(crate) async fn open(url: &str, ca_pem: Option<&[u8]>) -> Result<PgBlobs, StoreError> {
        let pool = crate::store::pool_for(url, ca_pem)?;
        let mut client = pool.get().await?;
        // As the registry's schema: one process at a time creates it.
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(727002)", &[])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        drop(client);
        Ok(PgBlobs { pool })
    }
}

#[async_trait::async_trait]
impl BlobStore for PgBlobs {
    async fn put(
        &self,
        id: &str,
        content_type: &str,
        mut body: Chunks,
        max: u64,
    ) -> Result<BlobMeta, BlobError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let insert = tx
            .prepare("INSERT INTO blob_chunk (blob_id, seq, data) VALUES ($1, $2, $3)")
            .await
            .map_err(db)?;
        let (mut size, mut seq) = (0u64, 0i32);
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        loop {
            let next = body.next().await.transpose()?;
            let done = next.is_none();
            if let Some(chunk) = next {
                size += chunk.len() as u64;
                if size > max {
                    // Dropping the transaction rolls back what was inserted.
                    return Err(BlobError::TooLarge { max });
                }
                buf.extend_from_slice(&chunk);
            }
            while buf.len() >= CHUNK || (done && !buf.is_empty()) {
                let rest = buf.split_off(buf.len().min(CHUNK));
                tx.execute(&insert, &[&id, &seq, &buf]).await.map_err(db)?;
                seq += 1;
                buf = rest;
            }
            if done {
                break;
            }
        }
        tx.execute(
            "INSERT INTO blob (id, content_type, size, created_at) VALUES ($1, $2, $3, $4)",
            &[&id, &content_type, &(size as i64), &now_rfc3339()],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(BlobMeta {
            content_type: content_type.to_owned(),
            size,
        })
    }

    async fn open(&self, id: &str) -> Result<Option<(BlobMeta, Chunks)>, BlobError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let client = self.pool.get().await.map_err(db)?;
        let Some(row) = client
            .query_opt("SELECT content_type, size FROM blob WHERE id = $1", &[&id])
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let meta = BlobMeta {
            content_type: row.get(0),
            size: row.get::<_, i64>(1) as u64,
        };
        let id = id.to_owned();
        let chunks = futures_util::stream::unfold(Some((client, 0i32)), move |state| {
            let id = id.clone();
            async move {
                let (client, seq) = state?;
                let row = client
                    .query_opt(
                        "SELECT data FROM blob_chunk WHERE blob_id = $1 AND seq = $2",
                        &[&id, &seq],
                    )
                    .await;
                match row {
                    Ok(Some(r)) => {
                        let data: Vec<u8> = r.get(0);
                        Some((Ok(bytes::Bytes::from(data)), Some((client, seq + 1))))
                    }
                    Ok(None) => None,
                    Err(e) => Some((Err(db(e)), None)),
                }
            }
        });
        Ok(Some((meta, Box::pin(chunks))))
    }
}
