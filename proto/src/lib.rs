//! The Hodei Worker Protocol (`hodei.agent.v1`): prost messages and the tonic
//! client and server for the agent stream.
//!
//! This crate exists only so the host and the agent share one copy of the
//! generated code; the protocol's rules are documented at the top of
//! `proto/hodei/agent/v1/agent.proto`.

use std::fmt;

/// Protocol version this build speaks (`Register.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Generated messages, client and server of `hodei.agent.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("hodei.agent.v1");
}

/// Secret values never reach a log line: only the secret names are shown.
impl fmt::Debug for v1::AssignJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_names: Vec<&String> = self.secrets.keys().collect();
        f.debug_struct("AssignJob")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("command", &self.command.as_ref().map(CommandDebug))
            .field("env", &self.env)
            .field("secrets", &secret_names)
            .field("timeout_secs", &self.timeout_secs)
            .field("first_sequence", &self.first_sequence)
            .finish()
    }
}

/// The agent's secret never reaches a log line.
impl fmt::Debug for v1::Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Register")
            .field("protocol_version", &self.protocol_version)
            .field("agent_id", &self.agent_id)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("os", &self.os)
            .field("arch", &self.arch)
            .field("cpu_count", &self.cpu_count)
            .field("memory_bytes", &self.memory_bytes)
            .field("labels", &self.labels.len())
            .field("slots", &self.slots)
            .field("running", &self.running.len())
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

/// The agent id a secret proves: the first 16 bytes of the secret's
/// SHA-256, shaped as a version-4 UUID. Both sides derive it here, once:
/// the agent to name itself, the host to check a `Register`.
pub fn agent_id_for_secret(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A fresh agent secret and the id it proves.
pub fn new_agent_identity() -> (String, String) {
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let id = agent_id_for_secret(&secret);
    (secret, id)
}

/// `assign_job::Command` lost its derived Debug with `AssignJob`'s.
struct CommandDebug<'a>(&'a v1::assign_job::Command);

impl fmt::Debug for CommandDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v1::assign_job::Command::Script(script) => {
                f.debug_tuple("Script").field(script).finish()
            }
            v1::assign_job::Command::Argv(argv) => f.debug_tuple("Argv").field(&argv.args).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::{AssignJob, Register};
    use super::{agent_id_for_secret, new_agent_identity};

    #[test]
    fn an_agent_id_is_proved_by_its_secret_only() {
        let (secret, id) = new_agent_identity();
        assert_eq!(agent_id_for_secret(&secret), id);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        let (other, other_id) = new_agent_identity();
        assert_ne!(id, other_id);
        assert_ne!(agent_id_for_secret(&other), id);
        assert_ne!(agent_id_for_secret(""), id);
    }

    #[test]
    fn register_debug_hides_the_secret() {
        let register = Register {
            agent_id: "a1".into(),
            agent_secret: "s3cr3t-value".into(),
            ..Default::default()
        };
        let shown = format!("{register:?}");
        assert!(shown.contains("a1"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn assign_job_debug_hides_secret_values() {
        let job = AssignJob {
            job_id: "j1".into(),
            secrets: [("API_KEY".to_string(), "hunter2-very-secret".to_string())].into(),
            ..Default::default()
        };
        let shown = format!("{job:?}");
        assert!(shown.contains("API_KEY"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
