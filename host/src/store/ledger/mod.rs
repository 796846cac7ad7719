//! The `WorkerLedger` port: the durable record of provisioned workers and
//! of which host drives each pool.
//!
//! Beside the job store, in the same database (redb file or PostgreSQL),
//! because a worker's row must outlive the host that wrote it: after a
//! crash the next host (or the same one restarted) compares the ledger with
//! what the provider says it runs. Writes are rare (a few per worker
//! life), so the adapters use plain transactions, no group commit.

mod postgres;
mod redb;

use async_trait::async_trait;

pub(crate) use self::postgres::PgLedger;
pub(crate) use self::redb::RedbLedger;
use super::StoreError;
use crate::domain::{ProvisionedWorker, Timestamp, TokenRefusal};

/// A change to one ledger row, applied inside the adapter's transaction.
pub type RowChange = Box<dyn FnOnce(&mut ProvisionedWorker) + Send>;

/// The ledger of provisioned workers (see the module docs).
#[async_trait]
pub trait WorkerLedger: Send + Sync {
    /// Writes (inserts or replaces) a worker's row.
    async fn put(&self, worker: &ProvisionedWorker) -> Result<(), StoreError>;

    /// Applies `change` to a worker's row atomically (read, change, write
    /// in one transaction, so a registration redeeming the token at the
    /// same moment is not overwritten); the row afterwards, or `None` when
    /// there is none.
    async fn update(
        &self,
        id: &str,
        change: RowChange,
    ) -> Result<Option<ProvisionedWorker>, StoreError>;

    /// One worker's row.
    async fn get(&self, id: &str) -> Result<Option<ProvisionedWorker>, StoreError>;

    /// Every row, of one pool or of all, sorted by id.
    async fn list(&self, pool: Option<&str>) -> Result<Vec<ProvisionedWorker>, StoreError>;

    /// Removes a row (the worker is destroyed); absent is not an error.
    async fn remove(&self, id: &str) -> Result<(), StoreError>;

    /// An agent presents a registration token (by its hash): atomically
    /// finds the worker and applies [`ProvisionedWorker::redeem`].
    async fn redeem(
        &self,
        token_hash: &str,
        agent_id: &str,
        now: Timestamp,
    ) -> Result<Result<ProvisionedWorker, TokenRefusal>, StoreError>;

    /// Takes or renews the lead of `pool` for `holder` until `until`: true
    /// when `holder` leads (it did already, nobody did, or the previous
    /// lead ran out before `now`). One host at a time drives a pool.
    async fn lead(
        &self,
        pool: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError>;
}

impl std::fmt::Debug for dyn WorkerLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerLedger")
    }
}

fn encode(worker: &ProvisionedWorker) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(worker).map_err(StoreError::backend)
}

fn decode(bytes: &[u8]) -> Result<ProvisionedWorker, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::backend)
}

/// The ledger's contract, run against every adapter.
#[cfg(test)]
pub(crate) async fn contract(ledger: &dyn WorkerLedger) {
    use crate::domain::WorkerPhase;

    let row = |id: &str, pool: &str| ProvisionedWorker {
        id: id.into(),
        pool: pool.into(),
        phase: WorkerPhase::Requested,
        handle: None,
        token_hash: format!("hash-{id}"),
        token_expires: Timestamp(10_000),
        agent_id: None,
        created: Timestamp(1_000),
        connected: None,
        ephemeral: false,
    };
    let (a, b, c) = (row("w-a", "p1"), row("w-b", "p1"), row("w-c", "p2"));
    for w in [&b, &a, &c] {
        ledger.put(w).await.unwrap();
    }
    let ids = |rows: Vec<ProvisionedWorker>| rows.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(ids(ledger.list(Some("p1")).await.unwrap()), ["w-a", "w-b"]);
    assert_eq!(ids(ledger.list(None).await.unwrap()), ["w-a", "w-b", "w-c"]);
    let mut started = a.clone();
    started.phase = WorkerPhase::Starting;
    started.handle = Some("container-1".into());
    ledger.put(&started).await.unwrap();
    assert_eq!(ledger.get("w-a").await.unwrap(), Some(started.clone()));
    let changed = ledger
        .update("w-c", Box::new(|w| w.handle = Some("pod-c".into())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.handle.as_deref(), Some("pod-c"));
    assert_eq!(ledger.get("w-c").await.unwrap(), Some(changed));
    assert_eq!(ledger.update("w-zz", Box::new(|_| {})).await.unwrap(), None);

    let redeemed = ledger
        .redeem("hash-w-a", "agent-1", Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.phase, WorkerPhase::Connected);
    assert_eq!(redeemed.agent_id.as_deref(), Some("agent-1"));
    assert_eq!(ledger.get("w-a").await.unwrap(), Some(redeemed), "durable");
    let again = ledger.redeem("hash-w-a", "agent-1", Timestamp(20_000));
    assert!(again.await.unwrap().is_ok(), "the same agent reconnects");
    let replay = ledger.redeem("hash-w-a", "agent-2", Timestamp(2_001));
    assert_eq!(replay.await.unwrap(), Err(TokenRefusal::Replayed));
    let late = ledger.redeem("hash-w-b", "agent-3", Timestamp(10_001));
    assert_eq!(late.await.unwrap(), Err(TokenRefusal::Expired));
    let unknown = ledger.redeem("no-such-hash", "agent-3", Timestamp(1));
    assert_eq!(unknown.await.unwrap(), Err(TokenRefusal::Unknown));

    ledger.remove("w-a").await.unwrap();
    ledger.remove("w-a").await.unwrap();
    assert_eq!(ledger.get("w-a").await.unwrap(), None);

    assert!(
        ledger
            .lead("p1", "h1", Timestamp(0), Timestamp(100))
            .await
            .unwrap()
    );
    assert!(
        ledger
            .lead("p1", "h1", Timestamp(50), Timestamp(150))
            .await
            .unwrap(),
        "renewed"
    );
    assert!(
        !ledger
            .lead("p1", "h2", Timestamp(100), Timestamp(200))
            .await
            .unwrap(),
        "held"
    );
    assert!(
        ledger
            .lead("p2", "h2", Timestamp(100), Timestamp(200))
            .await
            .unwrap(),
        "per pool"
    );
    assert!(
        ledger
            .lead("p1", "h2", Timestamp(151), Timestamp(300))
            .await
            .unwrap(),
        "ran out"
    );
    assert!(
        !ledger
            .lead("p1", "h1", Timestamp(152), Timestamp(300))
            .await
            .unwrap()
    );
}
