//! What a job's process executes.
//!
//! An argv vector is executed directly: no shell sees it, so no argument is
//! ever re-interpreted and no shell start-up is paid for. A script becomes
//! `job.sh`, which bash runs with the strict-mode header in front of it.

use hodei_proto::v1::assign_job::Command;

/// Why a job's command cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// AssignJob carried neither a script nor an argv vector.
    #[error("the job has no command")]
    NoCommand,
    /// An argv vector with no program in it.
    #[error("the job's argv is empty")]
    EmptyArgv,
}

/// How a job's command is launched.
#[derive(Debug, PartialEq, Eq)]
pub enum Launch<'a> {
    /// Executed as is: the program (looked up in `PATH`), then its arguments.
    Argv {
        /// The program, `argv[0]`.
        program: &'a str,
        /// The rest of the vector.
        args: &'a [String],
    },
    /// The text of `job.sh`, to be run by bash.
    Script(Vec<u8>),
}

/// Decides how `command` is launched.
pub fn launch(command: Option<&Command>) -> Result<Launch<'_>, ScriptError> {
    match command.ok_or(ScriptError::NoCommand)? {
        Command::Script(script) => Ok(Launch::Script(render(script))),
        Command::Argv(argv) => match argv.args.split_first() {
            Some((program, args)) => Ok(Launch::Argv { program, args }),
            None => Err(ScriptError::EmptyArgv),
        },
    }
}

/// Builds `job.sh`: the bash shebang, the strict-mode header, the script.
fn render(script: &str) -> Vec<u8> {
    let mut text = b"#!/usr/bin/env bash\nset -euo pipefail\n".to_vec();
    text.extend_from_slice(script.as_bytes());
    if !script.ends_with('\n') {
        text.push(b'\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_proto::v1::ArgvCommand;

    #[test]
    fn script_gets_the_header() {
        let command = Command::Script("echo hi".into());
        assert_eq!(
            launch(Some(&command)).expect("launch"),
            Launch::Script(b"#!/usr/bin/env bash\nset -euo pipefail\necho hi\n".to_vec())
        );
    }

    #[test]
    fn argv_is_split_into_program_and_arguments() {
        let args = ["printf", "%s", "a b"].map(String::from).to_vec();
        let command = Command::Argv(ArgvCommand { args: args.clone() });
        assert_eq!(
            launch(Some(&command)).expect("launch"),
            Launch::Argv {
                program: "printf",
                args: &args[1..]
            }
        );
    }

    #[test]
    fn missing_or_empty_command_is_an_error() {
        assert!(matches!(launch(None), Err(ScriptError::NoCommand)));
        let empty = Command::Argv(ArgvCommand { args: vec![] });
        assert!(matches!(launch(Some(&empty)), Err(ScriptError::EmptyArgv)));
    }
}
