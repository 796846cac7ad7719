//! The `RecordStore` port: small keyed JSON records in collections, beside
//! the jobs, in the same database (redb file or PostgreSQL).
//!
//! What lives here is written and read by key: API tokens (by the hash of
//! the token), agents' credentials, pipelines (by id, with their events). One generic shape
//! rather than a table per kind, so a new kind of credential needs no
//! migration. `update` reads and writes one record in one transaction (a
//! row lock on PostgreSQL), which is what consuming a token exactly once
//! needs.

mod postgres;
mod redb;

use async_trait::async_trait;

pub(crate) use self::postgres::PgRecords;
pub(crate) use self::redb::RedbRecords;
use super::StoreError;
use crate::domain::EventRecord;

/// What an [`RecordStore::update`] does with the record it was shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordUpdate {
    /// Leave it as it is.
    Keep,
    /// Write this JSON.
    Put(Vec<u8>),
    /// Delete it.
    Delete,
}

/// Decides an update from the current record (if any).
pub type RecordChange = Box<dyn FnOnce(Option<&[u8]>) -> RecordUpdate + Send>;

/// Decides an update and the events that describe it, written to the
/// store's event log in the same transaction.
pub type LoggedChange = Box<dyn FnOnce(Option<&[u8]>) -> (RecordUpdate, Vec<EventRecord>) + Send>;

/// See the module docs.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// The record `key` of `kind`.
    async fn get(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every record of `kind`, by key.
    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Creates or replaces a record. Durable when it returns.
    async fn put(&self, kind: &str, key: &str, doc: Vec<u8>) -> Result<(), StoreError>;

    /// Reads the record and applies `change` to it in one transaction;
    /// answers the record as it is afterwards.
    async fn update(
        &self,
        kind: &str,
        key: &str,
        change: RecordChange,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.update_logged(kind, key, Box::new(move |doc| (change(doc), Vec::new())))
            .await
    }

    /// [`RecordStore::update`], appending the events `change` answers to
    /// the event log in the same transaction: an event is in the log
    /// exactly when its change is in the record (pipelines' events).
    async fn update_logged(
        &self,
        kind: &str,
        key: &str,
        change: LoggedChange,
    ) -> Result<Option<Vec<u8>>, StoreError>;
}

impl std::fmt::Debug for dyn RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordStore")
    }
}

/// The contract both adapters pass.
#[cfg(test)]
pub(crate) async fn contract(records: &dyn RecordStore) {
    // PostgreSQL keeps JSONB (normalised whitespace): compare values.
    let json = |doc: Option<Vec<u8>>| {
        doc.map(|d| serde_json::from_slice::<serde_json::Value>(&d).expect("records hold JSON"))
    };
    let n = |n: i64| Some(serde_json::json!({ "n": n }));
    assert_eq!(records.get("k", "a").await.unwrap(), None);
    records.put("k", "b", b"{\"n\":2}".to_vec()).await.unwrap();
    records.put("k", "a", b"{\"n\":1}".to_vec()).await.unwrap();
    records
        .put("other", "a", b"{\"n\":9}".to_vec())
        .await
        .unwrap();
    assert_eq!(json(records.get("k", "a").await.unwrap()), n(1));
    let keys: Vec<String> = records
        .list("k")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["a", "b"]);
    let after = records
        .update(
            "k",
            "a",
            Box::new(|old| {
                let old = old.map(|d| serde_json::from_slice::<serde_json::Value>(d).unwrap());
                assert_eq!(old, Some(serde_json::json!({ "n": 1 })));
                RecordUpdate::Put(b"{\"n\":3}".to_vec())
            }),
        )
        .await
        .unwrap();
    assert_eq!(json(after), n(3));
    let kept = records
        .update("k", "b", Box::new(|_| RecordUpdate::Keep))
        .await
        .unwrap();
    assert_eq!(json(kept), n(2));
    let created = records
        .update(
            "k",
            "c",
            Box::new(|old| {
                assert_eq!(old, None);
                RecordUpdate::Put(b"{}".to_vec())
            }),
        )
        .await
        .unwrap();
    assert!(created.is_some());
    let gone = records
        .update("k", "c", Box::new(|_| RecordUpdate::Delete))
        .await
        .unwrap();
    assert_eq!(gone, None);
    assert_eq!(records.get("k", "c").await.unwrap(), None);
    assert_eq!(json(records.get("other", "a").await.unwrap()), n(9));
}
