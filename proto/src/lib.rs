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
    use super::v1::AssignJob;

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
