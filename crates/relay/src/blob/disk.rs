//! [`DiskBlobs`]: each blob is two files in one directory, `<id>` (the bytes) and `<id>.type`
//! (its media type). A write goes to `.<id>.<n>.part`, is synced, and renamed into place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BlobError, BlobMeta, BlobStore, Chunks, valid_id};

/// Chunk size when a blob is read back.
const READ_CHUNK: usize = 64 << 10;

/// Blobs as files in a directory.
#[derive(Debug)]
pub(crate) struct DiskBlobs {
    dir: PathBuf,
    next: AtomicU64,
}

impl DiskBlobs {
    /// Blobs in `dir` (created with the first blob, so a relay that stores none leaves
    /// nothing behind).
    pub(crate) fn open(dir: PathBuf) -> std::io::Result<DiskBlobs> {
        Ok(DiskBlobs {
            dir,
            next: AtomicU64::new(0),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, BlobError> {
        if !valid_id(id) {
            return Err(BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a blob id: {id:?}"),
            )));
        }
        Ok(self.dir.join(id))
    }
}

#[async_trait::async_trait]
impl BlobStore for DiskBlobs {
    async fn put(
        &self,
        id: &str,
        content_type: &str,
        mut body: Chunks,
        max: u64,
    ) -> Result<BlobMeta, BlobError> {
        let path = self.path(id)?;
        let part = self.dir.join(format!(
            ".{id}.{}.part",
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        let written = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            let mut file = tokio::fs::File::create(&part).await?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(BlobError::TooLarge { max });
                }
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok(size)
        }
        .await;
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        let kept = async {
            tokio::fs::write(self.dir.join(format!("{id}.type")), content_type).await?;
            tokio::fs::rename(&part, &path).await
        }
        .await;
        if let Err(e) = kept {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e.into());
        }
        Ok(BlobMeta {
            content_type: content_type.to_owned(),
            size,
        })
    }

    async fn open(&self, id: &str) -> Result<Option<(BlobMeta, Chunks)>, BlobError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.path(id)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let content_type = tokio::fs::read_to_string(self.dir.join(format!("{id}.type")))
            .await
            .unwrap_or_else(|_| "application/octet-stream".to_owned());
        let chunks = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; READ_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(BlobError::Io(e)), None)),
            }
        });
        Ok(Some((BlobMeta { content_type, size }, Box::pin(chunks))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<&'static [u8]>) -> Chunks {
        Box::pin(futures_util::stream::iter(
            parts.into_iter().map(|p| Ok(bytes::Bytes::from_static(p))),
        ))
    }

    async fn read_all(mut c: Chunks) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = c.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn written_in_chunks_read_back_whole_and_over_the_limit_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("outpost-blobs-{}", uuid::Uuid::new_v4()));
        let blobs = DiskBlobs::open(dir.clone()).unwrap();
        let meta = blobs
            .put(
                "a1",
                "application/dicom",
                chunks(vec![b"DI", b"CM", b""]),
                10,
            )
            .await
            .unwrap();
        assert_eq!(meta.size, 4);
        let (meta, body) = blobs.open("a1").await.unwrap().unwrap();
        assert_eq!(meta.content_type, "application/dicom");
        assert_eq!(read_all(body).await, b"DICM");
        let e = blobs
            .put("a2", "x/y", chunks(vec![b"123456", b"78901"]), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::TooLarge { max: 10 }), "{e}");
        assert!(blobs.open("a2").await.unwrap().is_none());
        assert!(blobs.open("../a1").await.unwrap().is_none());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 2, "only a1 and a1.type: {left:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
