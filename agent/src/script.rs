//! The text of `job.sh`: what bash actually runs for a job.
//!
//! Every job, whether the host sent a script or an argv vector, becomes one
//! bash file so that both kinds get the same stderr redirection and the same
//! `set -euo pipefail` header. An argv vector is turned into a single
//! `exec 'arg0' 'arg1' ...` line; POSIX single quotes make every byte
//! literal, so no argument is ever re-interpreted by the shell.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hodei_proto::v1::assign_job::Command;

/// Why a job's command cannot be turned into a script.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// AssignJob carried neither a script nor an argv vector.
    #[error("the job has no command")]
    NoCommand,
    /// An argv vector with no program in it.
    #[error("the job's argv is empty")]
    EmptyArgv,
}

/// Builds `job.sh`: the bash shebang, the redirection of stderr into
/// `stderr_fifo`, the strict-mode header, then the command.
///
/// Bytes rather than a `String` because the work directory (and so the FIFO
/// path) need not be UTF-8.
pub fn render(stderr_fifo: &Path, command: Option<&Command>) -> Result<Vec<u8>, ScriptError> {
    let mut text = b"#!/usr/bin/env bash\nexec 2>".to_vec();
    push_quoted(&mut text, stderr_fifo.as_os_str().as_bytes());
    text.extend_from_slice(b"\nset -euo pipefail\n");
    match command.ok_or(ScriptError::NoCommand)? {
        Command::Script(script) => {
            text.extend_from_slice(script.as_bytes());
            if !script.ends_with('\n') {
                text.push(b'\n');
            }
        }
        Command::Argv(argv) => {
            if argv.args.is_empty() {
                return Err(ScriptError::EmptyArgv);
            }
            text.extend_from_slice(b"exec");
            for arg in &argv.args {
                text.push(b' ');
                push_quoted(&mut text, arg.as_bytes());
            }
            text.push(b'\n');
        }
    }
    Ok(text)
}

/// Appends `word` quoted for a POSIX shell: `it's` becomes `'it'\''s'`.
fn push_quoted(out: &mut Vec<u8>, word: &[u8]) {
    out.push(b'\'');
    for &byte in word {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_proto::v1::ArgvCommand;

    fn quote(word: &str) -> String {
        let mut quoted = Vec::new();
        push_quoted(&mut quoted, word.as_bytes());
        String::from_utf8(quoted).expect("utf8")
    }

    #[test]
    fn quote_escapes_single_quotes() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn script_gets_header_and_redirect() {
        let command = Command::Script("echo hi".into());
        let text = render(Path::new("/tmp/x y/stderr.fifo"), Some(&command)).expect("render");
        assert_eq!(
            String::from_utf8(text).expect("utf8"),
            "#!/usr/bin/env bash\nexec 2>'/tmp/x y/stderr.fifo'\nset -euo pipefail\necho hi\n"
        );
    }

    #[test]
    fn missing_or_empty_command_is_an_error() {
        let fifo = Path::new("/tmp/f");
        assert!(matches!(render(fifo, None), Err(ScriptError::NoCommand)));
        let empty = Command::Argv(ArgvCommand { args: vec![] });
        assert!(matches!(
            render(fifo, Some(&empty)),
            Err(ScriptError::EmptyArgv)
        ));
    }

    /// The argv vector must reach the program byte for byte, whatever shell
    /// syntax it contains: bash runs the rendered script and printf echoes
    /// every argument back NUL-terminated.
    #[test]
    fn argv_round_trips_through_bash() {
        let tricky = [
            "a b",
            "it's",
            "$HOME",
            "`id`",
            "line1\nline2",
            "\"double\"",
            "back\\slash",
            "",
            "*",
            "'",
            "$(echo no)",
        ];
        let mut args = vec!["printf".to_string(), "%s\\0".to_string()];
        args.extend(tricky.iter().map(|s| s.to_string()));
        let command = Command::Argv(ArgvCommand { args });
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("stderr");
        let script = dir.path().join("job.sh");
        std::fs::write(
            &script,
            render(&stderr_path, Some(&command)).expect("render"),
        )
        .expect("write");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .current_dir(dir.path())
            .output()
            .expect("run bash");
        assert!(output.status.success(), "{output:?}");
        let got: Vec<&[u8]> = output.stdout.split(|&b| b == 0).collect();
        let expected: Vec<&[u8]> = tricky
            .iter()
            .map(|s| s.as_bytes())
            .chain([&b""[..]])
            .collect();
        assert_eq!(got, expected);
    }
}
