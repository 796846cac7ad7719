//! Blobs as files: `DIR/<id>`, written to `DIR/tmp/<id>` first, then
//! synced and renamed into place (and the directory synced), so a crash
//! leaves either the whole blob or none of it under its name.

use std::io::SeekFrom;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::{BLOB_CHUNK, BlobStore, BlobWriter};
use crate::store::StoreError;

/// Blobs under one directory (`DATA_DIR/artifacts` beside the redb file).
#[derive(Debug, Clone)]
pub(crate) struct FsBlobs {
    dir: PathBuf,
}

impl FsBlobs {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(id.to_string())
    }
}

#[async_trait]
impl BlobStore for FsBlobs {
    async fn create(&self, id: Uuid) -> Result<Box<dyn BlobWriter>, StoreError> {
        let tmp = self.dir.join("tmp");
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(StoreError::backend)?;
        let partial = tmp.join(id.to_string());
        let file = tokio::fs::File::create(&partial)
            .await
            .map_err(StoreError::backend)?;
        Ok(Box::new(FsWriter {
            file: Some(tokio::io::BufWriter::with_capacity(BLOB_CHUNK, file)),
            partial,
            target: self.path(id),
            dir: self.dir.clone(),
        }))
    }

    async fn chunk(&self, id: Uuid, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut file = match tokio::fs::File::open(self.path(id)).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(StoreError::backend(err)),
        };
        let offset = index.saturating_mul(BLOB_CHUNK as u64);
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(StoreError::backend)?;
        let mut chunk = Vec::with_capacity(BLOB_CHUNK);
        file.take(BLOB_CHUNK as u64)
            .read_to_end(&mut chunk)
            .await
            .map_err(StoreError::backend)?;
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(StoreError::backend(err)),
            _ => Ok(()),
        }
    }
}

struct FsWriter {
    /// `None` once committed.
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    partial: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Backend("blob already committed".into()))?;
        file.write_all(data).await.map_err(StoreError::backend)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::Backend("blob already committed".into()));
        };
        file.flush().await.map_err(StoreError::backend)?;
        file.get_ref()
            .sync_all()
            .await
            .map_err(StoreError::backend)?;
        drop(file);
        tokio::fs::rename(&self.partial, &self.target)
            .await
            .map_err(StoreError::backend)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(StoreError::backend)?
            .map_err(StoreError::backend)
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: the partial file goes (one unlink; no await).
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
