//! `UploadArtifact` and `DownloadArtifact`: a job's outputs in, its inputs
//! out, on calls of their own beside `Connect` (why: the proto header).
//!
//! Each call is authenticated like `Connect` (the bearer token) and
//! authorised by the `artifact_token` of the job's attempt (a grant of the
//! host's key over `job/attempt`, [`grant_subject`]), then checked against
//! the stored job: the attempt must be its current one and on a worker, an
//! upload's path one of its outputs, a download one of its inputs.

use std::pin::Pin;

use futures::Stream;
use hodei_proto::v1::{ArtifactChunk, ArtifactHeader, ArtifactRequest, ArtifactStored};
use tonic::{Request, Response, Status, Streaming};

use super::AgentGateway;
use crate::artifacts::{ArtifactError, ArtifactMeta};
use crate::domain::{Job, JobId, JobState};

/// Largest piece of an artifact in one download message.
const DOWNLOAD_PIECE: usize = 256 * 1024;

/// What a grant for a job's attempt signs.
pub fn grant_subject(job: JobId, attempt: u32) -> String {
    format!("artifact:{job}/{attempt}")
}

/// The stream of a download.
pub(super) type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<ArtifactChunk, Status>> + Send + 'static>>;

impl AgentGateway {
    /// The job of `header`, once its grant and attempt check out.
    async fn granted_job(&self, header: &ArtifactHeader) -> Result<Job, Status> {
        let id = JobId::parse(&header.job_id)
            .map_err(|_| Status::invalid_argument("job_id is not a job id"))?;
        let subject = grant_subject(id, header.attempt);
        if !self
            .jobs
            .sealer()
            .check_grant(&subject, &header.artifact_token)
        {
            return Err(Status::permission_denied(
                "artifact_token does not grant this job attempt",
            ));
        }
        let job = self
            .jobs
            .store()
            .get(id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found("no such job"))?;
        if job.attempt != header.attempt
            || !matches!(job.state, JobState::Scheduled | JobState::Running)
        {
            return Err(Status::failed_precondition(
                "this attempt of the job is no longer on a worker",
            ));
        }
        Ok(job)
    }

    pub(super) async fn upload(
        &self,
        request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactStored>, Status> {
        self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let header = first
            .header
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first message must carry a header"))?;
        let job = self.granted_job(&header).await?;
        let path = header.path.clone();
        if !job.spec.artifacts.outputs.contains(&path) {
            return Err(Status::permission_denied(format!(
                "{path:?} is not an output of this job"
            )));
        }
        let artifacts = &self.config.artifacts;
        if header.size > artifacts.max_bytes() {
            return Err(too_large(&ArtifactError::TooLarge {
                path,
                limit: artifacts.max_bytes(),
            }));
        }
        let mut upload = artifacts
            .receive(job.id, header.attempt, &path)
            .await
            .map_err(|e| store_status(&e))?;
        let mut message = Some(first);
        let mut claimed = String::new();
        while let Some(chunk) = message {
            upload.write(&chunk.data).await.map_err(|e| too_large(&e))?;
            if !chunk.sha256.is_empty() {
                claimed = chunk.sha256;
            }
            message = inbound.message().await?;
        }
        let meta = upload
            .finish(&claimed, artifacts)
            .await
            .map_err(|e| match e {
                ArtifactError::Checksum { .. } => Status::data_loss(e.to_string()),
                other => store_status(&other),
            })?;
        tracing::info!(job = %job.id, attempt = header.attempt, path = %meta.path, size = meta.size, "artifact stored");
        Ok(Response::new(ArtifactStored {
            size: meta.size,
            sha256: meta.sha256,
        }))
    }

    pub(super) async fn download(
        &self,
        request: Request<ArtifactRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        self.authenticate(&request)?;
        let header = request
            .into_inner()
            .header
            .ok_or_else(|| Status::invalid_argument("a download needs a header"))?;
        let job = self.granted_job(&header).await?;
        let input = job
            .spec
            .artifacts
            .inputs
            .iter()
            .find(|i| {
                i.output == header.path
                    && i.from_job.map(|j| j.to_string()).as_deref() == Some(&header.from_job_id)
            })
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "{:?} of job {} is not an input of this job",
                    header.path, header.from_job_id
                ))
            })?;
        let from = input.from_job.unwrap_or(job.id);
        let meta = self
            .config
            .artifacts
            .get(from, &input.output)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "step {:?} stored no output {:?}",
                    input.step, input.output
                ))
            })?;
        Ok(Response::new(self.stream_artifact(meta)))
    }

    fn stream_artifact(&self, meta: ArtifactMeta) -> DownloadStream {
        let artifacts = std::sync::Arc::clone(&self.config.artifacts);
        Box::pin(async_stream::stream! {
            let mut header = Some(ArtifactHeader {
                path: meta.path.clone(),
                size: meta.size,
                sha256: meta.sha256.clone(),
                ..ArtifactHeader::default()
            });
            let mut index = 0;
            loop {
                let chunk = match artifacts.chunk(&meta, index).await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(err) => {
                        yield Err(Status::unavailable(err.to_string()));
                        return;
                    }
                };
                for piece in chunk.chunks(DOWNLOAD_PIECE) {
                    yield Ok(ArtifactChunk {
                        header: header.take(),
                        data: piece.to_vec(),
                        sha256: String::new(),
                    });
                }
                index += 1;
            }
            if let Some(header) = header.take() {
                // An empty file: the header alone.
                yield Ok(ArtifactChunk { header: Some(header), ..ArtifactChunk::default() });
            }
        })
    }
}

fn too_large(err: &ArtifactError) -> Status {
    match err {
        ArtifactError::TooLarge { .. } => Status::resource_exhausted(err.to_string()),
        other => store_status(other),
    }
}

fn store_status(err: &ArtifactError) -> Status {
    tracing::warn!(%err, "artifact upload failed");
    Status::unavailable(err.to_string())
}
