//! What one agent may send: the bounds of the Hodei Worker Protocol.
//!
//! Workers run untrusted code, so the host bounds everything an agent can
//! make it hold: one message, one log line, a job's whole log, what a
//! `Register` declares, and how many refused messages a session may send
//! before it is closed. Each bound is a setting declared once here, as a
//! flag (`--agent-max-message-bytes`...) and as a key of the config file's
//! `[limits]` table with the same name.

use serde::Deserialize;
use tonic::Status;

use hodei_proto::v1::Register;

/// The settings, as flags and config-file keys; unset ones take the
/// defaults of [`AgentLimits::default`].
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitArgs {
    /// Largest gRPC message an agent may send, in bytes [default: 4194304].
    #[arg(long, env = "HODEI_AGENT_MAX_MESSAGE_BYTES")]
    pub agent_max_message_bytes: Option<usize>,
    /// Longest log line kept; longer ones are cut, with a note [default: 65536].
    #[arg(long, env = "HODEI_AGENT_MAX_LINE_BYTES")]
    pub agent_max_line_bytes: Option<usize>,
    /// Bytes of output stored per job; past it the log ends with a marker
    /// line [default: 1073741824].
    #[arg(long, env = "HODEI_JOB_LOG_QUOTA_BYTES")]
    pub job_log_quota_bytes: Option<u64>,
    /// Cancel a job whose output passes its log quota (otherwise it runs on
    /// and the rest of its output is dropped) [default: false].
    #[arg(long, env = "HODEI_JOB_LOG_QUOTA_CANCELS")]
    pub job_log_quota_cancels: Option<bool>,
    /// Most labels an agent may register with [default: 64].
    #[arg(long, env = "HODEI_AGENT_MAX_LABELS")]
    pub agent_max_labels: Option<usize>,
    /// Longest label key or value, and longest name, version, os or arch
    /// in `Register`, in bytes [default: 256].
    #[arg(long, env = "HODEI_AGENT_MAX_LABEL_BYTES")]
    pub agent_max_label_bytes: Option<usize>,
    /// Most slots an agent may offer [default: 1024].
    #[arg(long, env = "HODEI_AGENT_MAX_SLOTS")]
    pub agent_max_slots: Option<u32>,
    /// Refused messages after which a session is closed [default: 16].
    #[arg(long, env = "HODEI_AGENT_MAX_REFUSALS")]
    pub agent_max_refusals: Option<u32>,
}

impl LimitArgs {
    /// These settings, each falling back to `file`'s, then to the default.
    pub fn resolve(self, file: Option<Self>) -> anyhow::Result<AgentLimits> {
        let file = file.unwrap_or_default();
        let d = AgentLimits::default();
        let limits = AgentLimits {
            max_message_bytes: self
                .agent_max_message_bytes
                .or(file.agent_max_message_bytes)
                .unwrap_or(d.max_message_bytes),
            max_line_bytes: self
                .agent_max_line_bytes
                .or(file.agent_max_line_bytes)
                .unwrap_or(d.max_line_bytes),
            log_quota_bytes: self
                .job_log_quota_bytes
                .or(file.job_log_quota_bytes)
                .unwrap_or(d.log_quota_bytes),
            log_quota_cancels: self
                .job_log_quota_cancels
                .or(file.job_log_quota_cancels)
                .unwrap_or(d.log_quota_cancels),
            max_labels: self
                .agent_max_labels
                .or(file.agent_max_labels)
                .unwrap_or(d.max_labels),
            max_label_bytes: self
                .agent_max_label_bytes
                .or(file.agent_max_label_bytes)
                .unwrap_or(d.max_label_bytes),
            max_slots: self
                .agent_max_slots
                .or(file.agent_max_slots)
                .unwrap_or(d.max_slots),
            max_refusals: self
                .agent_max_refusals
                .or(file.agent_max_refusals)
                .unwrap_or(d.max_refusals),
        };
        limits.check()?;
        Ok(limits)
    }
}

/// The resolved bounds (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLimits {
    /// Largest message an agent may send.
    pub max_message_bytes: usize,
    /// Longest log line kept.
    pub max_line_bytes: usize,
    /// Bytes of output stored per job.
    pub log_quota_bytes: u64,
    /// Whether passing the quota cancels the job.
    pub log_quota_cancels: bool,
    /// Most labels in `Register`.
    pub max_labels: usize,
    /// Longest label key or value, name, version, os or arch.
    pub max_label_bytes: usize,
    /// Most slots in `Register`.
    pub max_slots: u32,
    /// Refused messages before a session is closed.
    pub max_refusals: u32,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            // Four times the agent's own cut (16 KiB), for agents built
            // with another.
            max_line_bytes: 64 * 1024,
            log_quota_bytes: 1 << 30,
            log_quota_cancels: false,
            max_labels: 64,
            max_label_bytes: 256,
            max_slots: 1024,
            max_refusals: 16,
        }
    }
}

/// Most CPUs an agent may declare.
const MAX_CPUS: u32 = 65_536;
/// Most memory an agent may declare: 1 PiB.
const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// Most jobs an agent may report as running in `Register`.
const MAX_RUNNING: usize = 4096;

impl AgentLimits {
    /// A bad configuration is an error at start, not a host that refuses
    /// every agent.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_message_bytes >= 64 * 1024,
            "agent_max_message_bytes must be at least 65536 (an agent's log batch is up to 64 KiB)"
        );
        anyhow::ensure!(
            self.max_line_bytes >= 1024,
            "agent_max_line_bytes must be at least 1024"
        );
        anyhow::ensure!(self.max_slots >= 1, "agent_max_slots must be at least 1");
        anyhow::ensure!(
            self.max_label_bytes >= 16,
            "agent_max_label_bytes must be at least 16"
        );
        Ok(())
    }

    /// Checks what a `Register` declares; the error says which bound.
    pub fn check_register(&self, register: &Register) -> Result<(), Status> {
        if register.labels.len() > self.max_labels {
            return Err(Status::invalid_argument(format!(
                "{} labels; at most {} are accepted",
                register.labels.len(),
                self.max_labels
            )));
        }
        let longest = register
            .labels
            .iter()
            .flat_map(|(k, v)| [k, v])
            .chain([
                &register.name,
                &register.version,
                &register.os,
                &register.arch,
            ])
            .map(String::len)
            .max()
            .unwrap_or(0);
        if longest > self.max_label_bytes {
            return Err(Status::invalid_argument(format!(
                "a label, name, version, os or arch of {longest} bytes; at most {} are accepted",
                self.max_label_bytes
            )));
        }
        if register.slots == 0 || register.slots > self.max_slots {
            return Err(Status::invalid_argument(format!(
                "slots must be between 1 and {}, got {}",
                self.max_slots, register.slots
            )));
        }
        if register.cpu_count > MAX_CPUS || register.memory_bytes > MAX_MEMORY_BYTES {
            return Err(Status::invalid_argument(format!(
                "implausible resources: {} CPUs, {} bytes of memory",
                register.cpu_count, register.memory_bytes
            )));
        }
        if register.running.len() > MAX_RUNNING {
            return Err(Status::invalid_argument(format!(
                "{} running jobs reported; at most {MAX_RUNNING} are accepted",
                register.running.len()
            )));
        }
        Ok(())
    }

    /// Cuts a log line longer than the limit; returns how many bytes were
    /// dropped (0 when it fits).
    pub fn cut_line(&self, data: &mut Vec<u8>) -> usize {
        let over = data.len().saturating_sub(self.max_line_bytes);
        if over > 0 {
            data.truncate(self.max_line_bytes);
            data.extend_from_slice(format!(" [hodei: line cut, {over} bytes dropped]").as_bytes());
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register() -> Register {
        Register {
            protocol_version: 1,
            agent_id: "a".into(),
            slots: 2,
            cpu_count: 4,
            memory_bytes: 1 << 30,
            ..Register::default()
        }
    }

    #[test]
    fn register_bounds_say_which_one_broke() {
        let limits = AgentLimits::default();
        assert!(limits.check_register(&register()).is_ok());
        let many = Register {
            labels: (0..100_000)
                .map(|i| (format!("k{i}"), "v".into()))
                .collect(),
            ..register()
        };
        let err = limits.check_register(&many).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("100000 labels"), "{}", err.message());
        let long = Register {
            labels: [("k".into(), "v".repeat(300))].into(),
            ..register()
        };
        assert!(
            limits
                .check_register(&long)
                .unwrap_err()
                .message()
                .contains("300 bytes")
        );
        for slots in [0, 1025] {
            let bad = Register {
                slots,
                ..register()
            };
            assert!(
                limits
                    .check_register(&bad)
                    .unwrap_err()
                    .message()
                    .contains("slots")
            );
        }
        let huge = Register {
            memory_bytes: u64::MAX,
            ..register()
        };
        assert!(limits.check_register(&huge).is_err());
    }

    #[test]
    fn long_lines_are_cut_with_a_note() {
        let limits = AgentLimits {
            max_line_bytes: 1024,
            ..AgentLimits::default()
        };
        let mut fits = vec![b'x'; 1024];
        assert_eq!(limits.cut_line(&mut fits), 0);
        assert_eq!(fits.len(), 1024);
        let mut long = vec![b'x'; 5000];
        assert_eq!(limits.cut_line(&mut long), 3976);
        assert!(long.starts_with(&[b'x'; 1024]));
        assert!(long.ends_with(b" [hodei: line cut, 3976 bytes dropped]"));
    }

    #[test]
    fn flags_beat_the_file_and_bad_values_are_refused() {
        let file = LimitArgs {
            agent_max_labels: Some(8),
            agent_max_slots: Some(4),
            ..LimitArgs::default()
        };
        let flags = LimitArgs {
            agent_max_slots: Some(16),
            ..LimitArgs::default()
        };
        let limits = flags.resolve(Some(file)).unwrap();
        assert_eq!((limits.max_labels, limits.max_slots), (8, 16));
        assert_eq!(limits.max_line_bytes, AgentLimits::default().max_line_bytes);
        let err = LimitArgs {
            agent_max_message_bytes: Some(10),
            ..LimitArgs::default()
        }
        .resolve(None)
        .unwrap_err();
        assert!(err.to_string().contains("agent_max_message_bytes"), "{err}");
    }
}
