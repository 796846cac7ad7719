//! Blobs in PostgreSQL (migration 0006): `artifact_chunks (blob, seq,
//! data)`, one row per [`BLOB_CHUNK`]. A writer holds one transaction for
//! the whole blob, so its rows appear together at commit or not at all,
//! and any host sharing the database reads them.

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{BLOB_CHUNK, BlobStore, BlobWriter};
use crate::store::StoreError;

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}

/// Blobs over the job store's pool.
#[derive(Debug, Clone)]
pub(crate) struct PgBlobs {
    pool: PgPool,
}

impl PgBlobs {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BlobStore for PgBlobs {
    async fn create(&self, id: Uuid) -> Result<Box<dyn BlobWriter>, StoreError> {
        let tx = self.pool.begin().await.map_err(backend)?;
        Ok(Box::new(PgWriter {
            tx: Some(tx),
            id,
            seq: 0,
            buffer: Vec::with_capacity(BLOB_CHUNK),
        }))
    }

    async fn chunk(&self, id: Uuid, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let seq = i64::try_from(index).map_err(backend)?;
        let row = sqlx::query("SELECT data FROM artifact_chunks WHERE blob = $1 AND seq = $2")
            .bind(id)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| r.try_get::<Vec<u8>, _>("data"))
            .transpose()
            .map_err(backend)
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM artifact_chunks WHERE blob = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

struct PgWriter {
    /// `None` once committed; dropped uncommitted, it rolls back.
    tx: Option<Transaction<'static, Postgres>>,
    id: Uuid,
    seq: i64,
    buffer: Vec<u8>,
}

impl PgWriter {
    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| StoreError::Backend("blob already committed".into()))?;
        sqlx::query("INSERT INTO artifact_chunks (blob, seq, data) VALUES ($1, $2, $3)")
            .bind(self.id)
            .bind(self.seq)
            .bind(&self.buffer)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
        self.seq += 1;
        self.buffer.clear();
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for PgWriter {
    async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            let room = BLOB_CHUNK - self.buffer.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.buffer.extend_from_slice(now);
            data = rest;
            if self.buffer.len() == BLOB_CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.flush().await?;
        let tx = self
            .tx
            .take()
            .ok_or_else(|| StoreError::Backend("blob already committed".into()))?;
        tx.commit().await.map_err(backend)
    }
}
