//! Pipeline artifacts on the host: receiving a step's outputs, keeping
//! them, and reading them back (for the steps that take them as inputs,
//! and for `GET /api/v1/pipelines/{id}/artifacts/…`).
//!
//! The bytes are a blob of the store's [`BlobStore`] (files under the data
//! directory with redb, rows of PostgreSQL when hosts share it); what they
//! are is one record per job in the record collection `artifact` (key: the
//! job id), mapping each output path to its [`ArtifactMeta`]. An upload is
//! counted against `max_bytes` as it arrives and hashed with SHA-256; the
//! blob is committed only when the digest matches the one the agent sent,
//! and the record names it only after that, so a reader never sees a
//! partial or corrupt artifact. A resent output (a retried attempt)
//! replaces the earlier blob, which is then removed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{JobId, Timestamp};
use crate::store::{BlobStore, BlobWriter, JobStore, RecordStore, RecordUpdate, StoreError};

/// The record collection of artifacts' descriptions.
const ARTIFACTS: &str = "artifact";

/// Largest output kept unless configured (`--max-artifact-bytes`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1024 * 1024 * 1024;

/// One stored output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// Its path in the producing job's directory.
    pub path: String,
    /// The attempt of the job that sent it.
    pub attempt: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// The blob holding the bytes.
    pub blob: Uuid,
    /// When it was stored.
    pub stored_at: Timestamp,
}

/// What can go wrong receiving an output.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// More bytes than the host keeps.
    #[error("output {path:?} is over the host's limit of {limit} bytes (--max-artifact-bytes)")]
    TooLarge {
        /// The output.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not hash to the digest the agent sent.
    #[error("output {path:?}: SHA-256 mismatch (sent {claimed}, received {actual})")]
    Checksum {
        /// The output.
        path: String,
        /// What the agent said.
        claimed: String,
        /// What arrived.
        actual: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The artifacts of every job, over the store's records and blobs.
#[derive(Debug)]
pub struct Artifacts {
    records: Arc<dyn RecordStore>,
    blobs: Arc<dyn BlobStore>,
    max_bytes: u64,
}

type Outputs = BTreeMap<String, ArtifactMeta>;

fn decode(doc: &[u8]) -> Result<Outputs, StoreError> {
    serde_json::from_slice(doc).map_err(|e| StoreError::Backend(format!("artifact record: {e}")))
}

/// Hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Artifacts {
    /// Artifacts in `store`, outputs at most `max_bytes` each.
    pub fn new(store: &Arc<dyn JobStore>, max_bytes: u64) -> Self {
        Self {
            records: store.records(),
            blobs: store.blobs(),
            max_bytes,
        }
    }

    /// The largest output kept, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Starts receiving output `path` of `job`'s `attempt`.
    pub async fn receive(
        &self,
        job: JobId,
        attempt: u32,
        path: &str,
    ) -> Result<Upload, ArtifactError> {
        let blob = Uuid::now_v7();
        Ok(Upload {
            job,
            attempt,
            path: path.to_owned(),
            blob,
            writer: self.blobs.create(blob).await?,
            hasher: Sha256::new(),
            size: 0,
            limit: self.max_bytes,
        })
    }

    /// Every stored output of `job`, by path.
    pub async fn of_job(&self, job: JobId) -> Result<Outputs, StoreError> {
        self.records
            .get(ARTIFACTS, &job.to_string())
            .await?
            .map_or_else(|| Ok(Outputs::new()), |doc| decode(&doc))
    }

    /// Output `path` of `job`, if stored.
    pub async fn get(&self, job: JobId, path: &str) -> Result<Option<ArtifactMeta>, StoreError> {
        Ok(self.of_job(job).await?.remove(path))
    }

    /// Chunk `index` of an artifact's bytes (see [`BlobStore::chunk`]).
    pub async fn chunk(
        &self,
        meta: &ArtifactMeta,
        index: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.blobs.chunk(meta.blob, index).await
    }

    async fn keep(&self, job: JobId, meta: ArtifactMeta) -> Result<(), StoreError> {
        let replaced: Arc<Mutex<Option<Uuid>>> = Arc::default();
        let seen = Arc::clone(&replaced);
        let problem: Arc<Mutex<Option<StoreError>>> = Arc::default();
        let failed = Arc::clone(&problem);
        self.records
            .update(
                ARTIFACTS,
                &job.to_string(),
                Box::new(move |doc| {
                    let mut outputs = match doc.map(decode).transpose() {
                        Ok(outputs) => outputs.unwrap_or_default(),
                        Err(err) => {
                            *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                            return RecordUpdate::Keep;
                        }
                    };
                    let path = meta.path.clone();
                    if let Some(old) = outputs.insert(path, meta) {
                        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(old.blob);
                    }
                    match serde_json::to_vec(&outputs) {
                        Ok(doc) => RecordUpdate::Put(doc),
                        Err(err) => {
                            *failed.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(StoreError::backend(err));
                            RecordUpdate::Keep
                        }
                    }
                }),
            )
            .await?;
        if let Some(err) = problem.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(err);
        }
        let old = replaced.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old
            && let Err(err) = self.blobs.delete(old).await
        {
            tracing::warn!(%job, %old, %err, "cannot remove a replaced artifact blob");
        }
        Ok(())
    }
}

/// An output being received: counted, hashed and written as it arrives.
pub struct Upload {
    job: JobId,
    attempt: u32,
    path: String,
    blob: Uuid,
    writer: Box<dyn BlobWriter>,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("job", &self.job)
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// Appends `data`; past the limit the upload is refused (and, dropped,
    /// leaves nothing).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ArtifactError> {
        self.size += data.len() as u64;
        if self.size > self.limit {
            return Err(ArtifactError::TooLarge {
                path: self.path.clone(),
                limit: self.limit,
            });
        }
        self.hasher.update(data);
        self.writer.write(data).await?;
        Ok(())
    }

    /// Checks the digest the agent sent, then makes the output durable and
    /// visible.
    pub async fn finish(
        self,
        claimed: &str,
        artifacts: &Artifacts,
    ) -> Result<ArtifactMeta, ArtifactError> {
        let actual = hex(&self.hasher.finalize());
        if !actual.eq_ignore_ascii_case(claimed) {
            return Err(ArtifactError::Checksum {
                path: self.path,
                claimed: claimed.to_owned(),
                actual,
            });
        }
        self.writer.commit().await?;
        let meta = ArtifactMeta {
            path: self.path,
            attempt: self.attempt,
            size: self.size,
            sha256: actual,
            blob: self.blob,
            stored_at: Timestamp::now(),
        };
        if let Err(err) = artifacts.keep(self.job, meta.clone()).await {
            let _ = artifacts.blobs.delete(self.blob).await;
            return Err(err.into());
        }
        Ok(meta)
    }
}
