//! The `BlobStore` port: large immutable byte strings (pipeline artifacts)
//! beside the jobs, and its two adapters: files under the data directory
//! next to the redb file (`fs`), and rows of a table in PostgreSQL
//! (`postgres`, migration 0006), so that every host sharing the database
//! reads what any of them stored.
//!
//! A blob is written once through a [`BlobWriter`] and becomes visible
//! only at [`BlobWriter::commit`], durable when it returns; a writer
//! dropped before that leaves nothing behind. Blobs are read back in
//! chunks of [`BLOB_CHUNK`] bytes, so neither adapter ever holds a whole
//! blob in memory. What a blob is (its name, size, digest) lives in the
//! record store, which points at it by id (see `crate::artifacts`).

mod fs;
mod postgres;

use async_trait::async_trait;
use uuid::Uuid;

pub(crate) use self::fs::FsBlobs;
pub(crate) use self::postgres::PgBlobs;
use super::StoreError;

/// The unit blobs are stored and read back in.
pub const BLOB_CHUNK: usize = 1024 * 1024;

/// See the module docs.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Starts a new blob `id`.
    async fn create(&self, id: Uuid) -> Result<Box<dyn BlobWriter>, StoreError>;

    /// Chunk `index` of blob `id` ([`BLOB_CHUNK`] bytes, the last one
    /// shorter); `None` past the end.
    async fn chunk(&self, id: Uuid, index: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes blob `id`; removing a missing blob is not an error.
    async fn delete(&self, id: Uuid) -> Result<(), StoreError>;
}

/// A blob being written.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends `data`.
    async fn write(&mut self, data: &[u8]) -> Result<(), StoreError>;

    /// Makes the blob durable and visible.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

impl std::fmt::Debug for dyn BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobStore")
    }
}

/// What every adapter must do.
#[cfg(test)]
pub(crate) async fn contract(blobs: &dyn BlobStore) {
    let id = Uuid::now_v7();
    let data: Vec<u8> = (0..BLOB_CHUNK * 2 + 17).map(|i| (i % 251) as u8).collect();
    let mut writer = blobs.create(id).await.expect("create");
    for piece in data.chunks(300_000) {
        writer.write(piece).await.expect("write");
    }
    assert_eq!(
        blobs.chunk(id, 0).await.expect("read"),
        None,
        "visible before commit"
    );
    writer.commit().await.expect("commit");
    let mut back = Vec::new();
    let mut index = 0;
    while let Some(chunk) = blobs.chunk(id, index).await.expect("read") {
        back.extend(chunk);
        index += 1;
    }
    assert_eq!(index, 3);
    assert!(back == data, "read back differs");

    let dropped = Uuid::now_v7();
    let mut writer = blobs.create(dropped).await.expect("create");
    writer.write(b"never committed").await.expect("write");
    drop(writer);
    assert_eq!(blobs.chunk(dropped, 0).await.expect("read"), None);

    blobs.delete(id).await.expect("delete");
    assert_eq!(blobs.chunk(id, 0).await.expect("read"), None);
    blobs.delete(id).await.expect("delete twice");
}

#[cfg(test)]
#[tokio::test]
async fn files_honour_the_blob_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    contract(&FsBlobs::new(dir.path().join("artifacts"))).await;
}
