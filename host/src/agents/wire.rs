//! Translation between protocol messages and domain types, in one place.

use hodei_proto::v1::{
    self as pb, ArgvCommand, AssignJob, LogEntry, ServerMessage, assign_job, server_message,
};

use crate::domain::{Command, Job, LogRecord, LogStream, Outcome, Resources, Timestamp};
use crate::usage::JobUsage;

/// What a job with outputs or inputs needs to transfer them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactGrant {
    /// Proves the attempt to the artifact calls.
    pub token: String,
    /// Largest output the host keeps.
    pub max_bytes: u64,
}

/// The `AssignJob` for a job's current attempt.
pub fn assign_job(job: &Job, first_sequence: u64, grant: Option<ArtifactGrant>) -> ServerMessage {
    let grant = grant.unwrap_or(ArtifactGrant {
        token: String::new(),
        max_bytes: 0,
    });
    let command = match &job.spec.command {
        Command::Script(script) => assign_job::Command::Script(script.clone()),
        Command::Args(args) => assign_job::Command::Argv(ArgvCommand { args: args.clone() }),
    };
    ServerMessage {
        msg: Some(server_message::Msg::AssignJob(AssignJob {
            job_id: job.id.to_string(),
            attempt: job.attempt,
            command: Some(command),
            env: job.spec.env.clone().into_iter().collect(),
            secrets: job.spec.secrets.clone().into_iter().collect(),
            timeout_secs: job.spec.timeout_secs.unwrap_or(0),
            first_sequence,
            outputs: job.spec.artifacts.outputs.clone(),
            inputs: job
                .spec
                .artifacts
                .inputs
                .iter()
                .map(|input| pb::ArtifactInput {
                    from_job_id: input.from_job.map(|j| j.to_string()).unwrap_or_default(),
                    path: input.output.clone(),
                    step: input.step.clone(),
                })
                .collect(),
            artifact_token: grant.token,
            max_artifact_bytes: grant.max_bytes,
        })),
    }
}

/// A protocol log entry as a stored record.
pub fn log_record(entry: LogEntry) -> LogRecord {
    LogRecord {
        sequence: entry.sequence,
        stream: if entry.stream == pb::Stream::Stderr as i32 {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        },
        data: entry.data,
        timestamp: Timestamp(entry.timestamp_us),
    }
}

/// How a `JobResult` ended, in domain terms.
pub fn outcome(result: &pb::JobResult) -> Outcome {
    match pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Exited) {
        pb::Outcome::Cancelled => Outcome::Cancelled,
        pb::Outcome::TimedOut => Outcome::TimedOut,
        pb::Outcome::FailedToStart => Outcome::FailedToStart,
        pb::Outcome::OutputsFailed => Outcome::OutputsFailed,
        pb::Outcome::Exited | pb::Outcome::Unspecified if result.signal != 0 => {
            Outcome::Signalled(result.signal)
        }
        pb::Outcome::Exited | pb::Outcome::Unspecified => Outcome::Exited(result.exit_code),
    }
}

/// A job's resource use from a heartbeat.
pub fn job_usage(usage: pb::JobUsage) -> JobUsage {
    JobUsage {
        job_id: usage.job_id,
        attempt: usage.attempt,
        cpu_percent: usage.cpu_percent,
        memory_bytes: usage.memory_bytes,
        processes: usage.processes,
    }
}

/// What a worker offers, from its registration.
pub fn capacity(register: &pb::Register) -> Resources {
    Resources {
        cpu_millis: u64::from(register.cpu_count) * 1000,
        memory_mb: register.memory_bytes / (1024 * 1024),
    }
}
