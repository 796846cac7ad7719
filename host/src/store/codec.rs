//! How a job is laid out as bytes, shared by every adapter: a versioned
//! JSON envelope `{"v":1,"job":…}`, so a newer build can tell an old record
//! from one it does not understand.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::Job;

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    job: &'a Job,
}

#[derive(Deserialize)]
struct Envelope {
    v: u32,
    job: Job,
}

pub(super) fn encode_job(job: &Job) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&EnvelopeRef { v: 1, job }).map_err(StoreError::backend)
}

pub(super) fn decode_job(bytes: &[u8]) -> Result<Job, StoreError> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(StoreError::backend)?;
    if envelope.v != 1 {
        return Err(StoreError::Backend(format!(
            "job record version {} is newer than this build understands",
            envelope.v
        )));
    }
    Ok(envelope.job)
}
