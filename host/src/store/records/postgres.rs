//! Records in PostgreSQL (migration 0004): `records (kind, key, doc)`;
//! `update` locks the row (`FOR UPDATE`) for its transaction, so two hosts
//! consuming the same token are serialised.

use async_trait::async_trait;
use sqlx::{PgPool, Row};

use super::{LoggedChange, RecordStore, RecordUpdate};
use crate::store::StoreError;

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}

/// The records over the job store's pool.
#[derive(Clone)]
pub(crate) struct PgRecords {
    pool: PgPool,
}

impl PgRecords {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn text(doc: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(doc).map_err(backend)
}

#[async_trait]
impl RecordStore for PgRecords {
    async fn get(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT doc::text AS doc FROM records WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(|r| r.try_get::<String, _>("doc").map(String::into_bytes))
            .transpose()
            .map_err(backend)
    }

    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows =
            sqlx::query("SELECT key, doc::text AS doc FROM records WHERE kind = $1 ORDER BY key")
                .bind(kind)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("key").map_err(backend)?,
                    r.try_get::<String, _>("doc").map_err(backend)?.into_bytes(),
                ))
            })
            .collect()
    }

    async fn put(&self, kind: &str, key: &str, doc: Vec<u8>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO records (kind, key, doc) VALUES ($1, $2, $3::jsonb) \
             ON CONFLICT (kind, key) DO UPDATE SET doc = $3::jsonb",
        )
        .bind(kind)
        .bind(key)
        .bind(text(doc)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_logged(
        &self,
        kind: &str,
        key: &str,
        change: LoggedChange,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // A missing row cannot be locked: take a transaction-scoped
        // advisory lock on the key first, so two creators serialise too.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))")
            .bind(kind)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let before: Option<Vec<u8>> = sqlx::query(
            "SELECT doc::text AS doc FROM records WHERE kind = $1 AND key = $2 FOR UPDATE",
        )
        .bind(kind)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .map(|r| r.try_get::<String, _>("doc").map(String::into_bytes))
        .transpose()
        .map_err(backend)?;
        let (update, events) = change(before.as_deref());
        for event in &events {
            sqlx::query("INSERT INTO events (doc) VALUES ($1::text::jsonb)")
                .bind(serde_json::to_string(event).map_err(backend)?)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let after = match update {
            RecordUpdate::Keep => before,
            RecordUpdate::Put(doc) => {
                sqlx::query(
                    "INSERT INTO records (kind, key, doc) VALUES ($1, $2, $3::jsonb) \
                     ON CONFLICT (kind, key) DO UPDATE SET doc = $3::jsonb",
                )
                .bind(kind)
                .bind(key)
                .bind(text(doc.clone())?)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                Some(doc)
            }
            RecordUpdate::Delete => {
                sqlx::query("DELETE FROM records WHERE kind = $1 AND key = $2")
                    .bind(kind)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                None
            }
        };
        tx.commit().await.map_err(backend)?;
        Ok(after)
    }
}
