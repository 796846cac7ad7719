//! A job's artifacts on the agent: its inputs fetched into its directory
//! before it starts, its outputs sent to the host once it exits 0.
//!
//! Both go over calls of their own (`DownloadArtifact`, `UploadArtifact`),
//! not the session's stream: a large file then never holds up heartbeats
//! or log batches (see the protocol header). Each transfer is checked with
//! SHA-256 end to end: an upload sends the digest of what was read and the
//! host compares it with what it received; a download is compared with
//! the digest the host sends first, and written to a temporary name that
//! becomes the input's only once it checks out. A transfer that fails for
//! the transport (a host restarting, a blip) is retried a few times, on
//! the next host of the list; a refusal (too large, not granted) is final.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use hodei_proto::v1::agent_service_client::AgentServiceClient;
use hodei_proto::v1::{ArtifactChunk, ArtifactHeader, ArtifactRequest, AssignJob};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::{info, warn};

/// Bytes of an output in one upload message (well under the host's
/// message limit).
const UPLOAD_PIECE: usize = 256 * 1024;
/// Tries of one transfer when the transport fails.
const TRIES: u32 = 5;
/// The first pause between tries; doubled each time.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Dials the host for transfers.
#[derive(Debug, Clone)]
pub struct ArtifactClient {
    /// The hosts, tried in turn.
    pub endpoints: Vec<Endpoint>,
    /// `Bearer <token>`, as for the session.
    pub authorization: MetadataValue<Ascii>,
}

/// A transfer failed; the text says what and why, for the job's reason.
type Failure = String;

fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `path` under `dir`, refusing anything that would leave it.
fn inside(dir: &Path, path: &str) -> Result<PathBuf, Failure> {
    let relative = Path::new(path);
    if path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{path:?} is not a relative path inside the job's directory"
        ));
    }
    Ok(dir.join(relative))
}

impl ArtifactClient {
    async fn client(&self, turn: u32) -> Result<AgentServiceClient<Channel>, Status> {
        let endpoint = &self.endpoints[turn as usize % self.endpoints.len()];
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the host: {e}")))?;
        Ok(AgentServiceClient::new(channel).max_decoding_message_size(8 * 1024 * 1024))
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// Runs `transfer` until it succeeds, fails for good, or runs out of
    /// tries.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut transfer: F) -> Result<T, Failure>
    where
        F: FnMut(AgentServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut pause = FIRST_PAUSE;
        for turn in 0..TRIES {
            let outcome = match self.client(turn).await {
                Ok(client) => transfer(client).await,
                Err(status) => Err(status),
            };
            match outcome {
                Ok(done) => return Ok(done),
                Err(status) if retryable(&status) && turn + 1 < TRIES => {
                    warn!(what, error = %status.message(), "artifact transfer failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(status) => return Err(format!("{what}: {}", status.message())),
            }
        }
        Err(format!("{what}: the host could not be reached"))
    }

    /// Sends every output of `job` from `dir`; answers the outputs the host
    /// confirmed (all of them), or why one could not be sent.
    pub async fn send_outputs(&self, job: &AssignJob, dir: &Path) -> Result<Vec<String>, Failure> {
        let mut sent = Vec::new();
        for output in &job.outputs {
            let file = inside(dir, output)?;
            let size = match tokio::fs::metadata(&file).await {
                Ok(meta) if meta.is_file() => meta.len(),
                Ok(_) => return Err(format!("output {output:?} is not a regular file")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(format!(
                        "output {output:?} does not exist in the step's directory"
                    ));
                }
                Err(e) => return Err(format!("output {output:?} cannot be read: {e}")),
            };
            if size > job.max_artifact_bytes {
                return Err(format!(
                    "output {output:?} is {size} bytes, over the host's limit of {} bytes",
                    job.max_artifact_bytes
                ));
            }
            let header = ArtifactHeader {
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                artifact_token: job.artifact_token.clone(),
                path: output.clone(),
                size,
                ..ArtifactHeader::default()
            };
            let what = format!("output {output:?}");
            let stored = self
                .with_retries(&what, |mut client| {
                    let (header, file) = (header.clone(), file.clone());
                    async move {
                        let (chunks, digest) = read_chunks(file, header).await?;
                        let stored = client
                            .upload_artifact(self.request(chunks))
                            .await?
                            .into_inner();
                        let sent = digest.await.map_err(|_| Status::aborted("reader gone"))?;
                        if stored.sha256 != sent {
                            return Err(Status::data_loss("the host stored other bytes"));
                        }
                        Ok(stored)
                    }
                })
                .await?;
            info!(job_id = %job.job_id, output, size = stored.size, sha256 = %stored.sha256, "output sent");
            sent.push(output.clone());
        }
        Ok(sent)
    }

    /// Fetches every input of `job` into `dir`.
    pub async fn fetch_inputs(&self, job: &AssignJob, dir: &Path) -> Result<(), Failure> {
        for input in &job.inputs {
            let what = format!("input {:?} of step {:?}", input.path, input.step);
            let target = inside(dir, &input.path).map_err(|e| format!("{what}: {e}"))?;
            let header = ArtifactHeader {
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                artifact_token: job.artifact_token.clone(),
                path: input.path.clone(),
                from_job_id: input.from_job_id.clone(),
                ..ArtifactHeader::default()
            };
            let size = self
                .with_retries(&what, |mut client| {
                    let (header, target) = (header.clone(), target.clone());
                    async move {
                        let request = self.request(ArtifactRequest {
                            header: Some(header),
                        });
                        let inbound = client.download_artifact(request).await?.into_inner();
                        write_input(inbound, &target).await
                    }
                })
                .await?;
            info!(job_id = %job.job_id, path = %input.path, size, "input received");
        }
        Ok(())
    }
}

/// The messages of an upload of `file`, read by a task as they are sent
/// (a few pieces ahead); the digest of what was read arrives on the
/// receiver once the last one is out. A read error ends the stream without
/// a digest, which the host refuses.
async fn read_chunks(
    file: PathBuf,
    header: ArtifactHeader,
) -> Result<
    (
        ReceiverStream<ArtifactChunk>,
        tokio::sync::oneshot::Receiver<String>,
    ),
    Status,
> {
    let mut reader = tokio::fs::File::open(&file)
        .await
        .map_err(|e| Status::failed_precondition(format!("cannot open it: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (done, digest) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut hasher = Sha256::new();
        let mut header = Some(header);
        loop {
            let mut buffer = vec![0u8; UPLOAD_PIECE];
            let n = match read_full(&mut reader, &mut buffer).await {
                Ok(n) => n,
                Err(error) => {
                    warn!(%error, "cannot read an output; the upload ends short");
                    return;
                }
            };
            buffer.truncate(n);
            hasher.update(&buffer);
            let last = n < UPLOAD_PIECE;
            let sha256 = if last {
                hex(&hasher.clone().finalize())
            } else {
                String::new()
            };
            let chunk = ArtifactChunk {
                header: header.take(),
                data: buffer,
                sha256: sha256.clone(),
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
            if last {
                let _ = done.send(sha256);
                return;
            }
        }
    });
    Ok((ReceiverStream::new(rx), digest))
}

/// Fills `buffer` unless the file ends first; answers how much was read.
async fn read_full(reader: &mut tokio::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes a download to a temporary file beside `target`, checks its size
/// and digest against the header, then renames it into place.
async fn write_input(
    mut inbound: tonic::Streaming<ArtifactChunk>,
    target: &Path,
) -> Result<u64, Status> {
    let local = |e: std::io::Error| Status::failed_precondition(format!("cannot write it: {e}"));
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(local)?;
    }
    let partial = target.with_extension("hodei-partial");
    let mut file = tokio::fs::File::create(&partial).await.map_err(local)?;
    let mut hasher = Sha256::new();
    let mut expected: Option<ArtifactHeader> = None;
    let mut size = 0u64;
    while let Some(chunk) = inbound.next().await {
        let chunk = chunk?;
        if let Some(header) = chunk.header {
            expected = Some(header);
        }
        hasher.update(&chunk.data);
        size += chunk.data.len() as u64;
        file.write_all(&chunk.data).await.map_err(local)?;
    }
    file.flush().await.map_err(local)?;
    drop(file);
    let expected = expected.ok_or_else(|| Status::data_loss("the host sent no header"))?;
    let actual = hex(&hasher.finalize());
    if size != expected.size || actual != expected.sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(Status::data_loss(format!(
            "received {size} bytes with SHA-256 {actual}, expected {} bytes with {}",
            expected.size, expected.sha256
        )));
    }
    tokio::fs::rename(&partial, target).await.map_err(local)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::inside;
    use std::path::Path;

    #[test]
    fn paths_stay_inside_the_job_directory() {
        let dir = Path::new("/work/job");
        assert_eq!(inside(dir, "a/b.txt").unwrap(), dir.join("a/b.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(inside(dir, bad).is_err(), "{bad:?}");
        }
    }
}
