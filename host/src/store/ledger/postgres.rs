//! The worker ledger in PostgreSQL (migration 0003): `workers` rows as
//! JSONB with the columns lookups need, `pool_leads` for who drives a pool.

use async_trait::async_trait;
use sqlx::{PgPool, Row};

use super::{RowChange, WorkerLedger, decode, encode};
use crate::domain::{ProvisionedWorker, Timestamp, TokenRefusal};
use crate::store::StoreError;

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}

/// The ledger over the job store's pool.
#[derive(Clone)]
pub(crate) struct PgLedger {
    pool: PgPool,
}

impl PgLedger {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn row_doc(row: &sqlx::postgres::PgRow) -> Result<ProvisionedWorker, StoreError> {
    let doc: String = row.try_get("doc").map_err(backend)?;
    decode(doc.as_bytes())
}

/// The row as JSON text; the statements cast it to JSONB (and back with
/// `doc::text`), as the job store does.
fn doc(worker: &ProvisionedWorker) -> Result<String, StoreError> {
    String::from_utf8(encode(worker)?).map_err(backend)
}

#[async_trait]
impl WorkerLedger for PgLedger {
    async fn put(&self, worker: &ProvisionedWorker) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workers (id, pool, token_hash, doc) VALUES ($1, $2, $3, $4::jsonb) \
             ON CONFLICT (id) DO UPDATE SET pool = $2, token_hash = $3, doc = $4::jsonb",
        )
        .bind(&worker.id)
        .bind(&worker.pool)
        .bind(&worker.token_hash)
        .bind(doc(worker)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update(
        &self,
        id: &str,
        change: RowChange,
    ) -> Result<Option<ProvisionedWorker>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query("SELECT doc::text AS doc FROM workers WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut worker = row_doc(&row)?;
        change(&mut worker);
        sqlx::query("UPDATE workers SET doc = $2::jsonb WHERE id = $1")
            .bind(id)
            .bind(doc(&worker)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(worker))
    }

    async fn get(&self, id: &str) -> Result<Option<ProvisionedWorker>, StoreError> {
        sqlx::query("SELECT doc::text AS doc FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(row_doc)
            .transpose()
    }

    async fn list(&self, pool: Option<&str>) -> Result<Vec<ProvisionedWorker>, StoreError> {
        sqlx::query(
            "SELECT doc::text AS doc FROM workers WHERE $1::text IS NULL OR pool = $1 ORDER BY id",
        )
        .bind(pool)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(row_doc)
        .collect()
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn redeem(
        &self,
        token_hash: &str,
        agent_id: &str,
        now: Timestamp,
    ) -> Result<Result<ProvisionedWorker, TokenRefusal>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row =
            sqlx::query("SELECT doc::text AS doc FROM workers WHERE token_hash = $1 FOR UPDATE")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(row) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let mut worker = row_doc(&row)?;
        if let Err(refusal) = worker.redeem(agent_id, now) {
            return Ok(Err(refusal));
        }
        sqlx::query("UPDATE workers SET doc = $2::jsonb WHERE id = $1")
            .bind(&worker.id)
            .bind(doc(&worker)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Ok(worker))
    }

    async fn lead(
        &self,
        pool: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "INSERT INTO pool_leads (pool, holder, until) VALUES ($1, $2, $3) \
             ON CONFLICT (pool) DO UPDATE SET holder = $2, until = $3 \
             WHERE pool_leads.holder = $2 OR pool_leads.until < $4 \
             RETURNING holder",
        )
        .bind(pool)
        .bind(holder)
        .bind(until.0)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        Ok(row.is_some())
    }
}
