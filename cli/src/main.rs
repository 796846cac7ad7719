//! `hodei`: does `hodei run` itself over plain HTTP and runs `hodei-host`
//! with every other command line (see the library's docs).
//!
//! The fast path is taken only for a command line it parses completely
//! with the shared definitions ([`hodei_cli::args`]); anything else, help,
//! `--version`, a parse error, an `https://` server, another command,
//! goes to `hodei-host` untouched, which answers as it always has.
//!
//! `hodei run` (following) exits as `hodei-host run` does: with the job's
//! exit code, 124 when it timed out, 130 when cancelled, 125 when hodei
//! failed. Ctrl-C cancels the job and keeps printing until the job ends.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hodei_cli::api::Client;
use hodei_cli::args::{Globals, RunArgs};
use hodei_cli::{EXIT_HODEI_FAILED, HOST_BIN, outcome, token};
use nix::sys::signal::{SigSet, Signal};

/// The part of the command line the front understands.
#[derive(Debug, Parser)]
#[command(name = "hodei")]
struct Front {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: FrontCommand,
}

#[derive(Debug, Subcommand)]
enum FrontCommand {
    Run(Box<RunArgs>),
    /// Any other command: `hodei-host` gets the whole command line (these
    /// words are not read here).
    #[command(external_subcommand)]
    #[allow(dead_code)]
    Other(Vec<OsString>),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Ok(Front {
        globals,
        command: FrontCommand::Run(run),
    }) = Front::try_parse_from(&args)
        && globals.server.starts_with("http://")
    {
        return match run_job(&globals, &run) {
            Ok(code) => ExitCode::from(code),
            Err(err) => {
                eprintln!("hodei: {err:#}");
                ExitCode::from(EXIT_HODEI_FAILED)
            }
        };
    }
    delegate(&args)
}

/// `hodei run`: submits; prints the id (`--detach`) or follows the log to
/// the job's end. Returns the exit code.
fn run_job(globals: &Globals, run: &RunArgs) -> anyhow::Result<u8> {
    let body = run.body()?;
    let token = token::discover_token(&globals.server, globals.token.as_deref());
    let client = Client::new(&globals.server, token.as_deref())?;
    let job = client.submit(&body)?;
    let id = job["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("server returned no job id"))?
        .to_owned();
    if run.detach() {
        println!("{id}");
        return Ok(0);
    }
    cancel_on_interrupt(client.clone(), id.clone())?;
    let done = client.follow(&id, |line| {
        if line.stream == "stderr" {
            writeln!(std::io::stderr().lock(), "{}", line.line)?;
        } else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", line.line)?;
            out.flush()?;
        }
        Ok(())
    })?;
    let (said, code) = outcome::conclude(&id, done.as_ref());
    if let Some(said) = said {
        eprintln!("{said}");
    }
    Ok(code)
}

/// From now on Ctrl-C (SIGINT) does not stop this process: a thread of
/// its own takes it and cancels job `id` (the log, still followed, then
/// shows the job's end).
fn cancel_on_interrupt(client: Client, id: String) -> anyhow::Result<()> {
    let mut interrupt = SigSet::empty();
    interrupt.add(Signal::SIGINT);
    // Blocked here, before the thread starts, so every thread inherits
    // the block and the signal waits for `wait` below.
    interrupt.thread_block()?;
    std::thread::spawn(move || {
        let mut cancelled = false;
        while interrupt.wait().is_ok() {
            if cancelled {
                continue;
            }
            cancelled = true;
            eprintln!("hodei: cancelling job {id}");
            if let Err(err) = client.cancel(&id) {
                eprintln!("hodei: {err:#}");
            }
        }
    });
    Ok(())
}

/// Replaces this process with `hodei-host` and the same arguments (the
/// same argv[0] too); returns only when that fails.
fn delegate(args: &[OsString]) -> ExitCode {
    let host = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(HOST_BIN),
        Err(err) => {
            eprintln!("hodei: cannot find this executable's directory: {err}");
            return ExitCode::from(EXIT_HODEI_FAILED);
        }
    };
    let arg0 = args.first().cloned().unwrap_or_else(|| "hodei".into());
    let err = std::process::Command::new(&host)
        .arg0(arg0)
        .args(args.iter().skip(1))
        .exec();
    eprintln!(
        "hodei: cannot run {}: {err} (`{HOST_BIN}` holds every command but `run`: install it beside `hodei`)",
        host.display()
    );
    ExitCode::from(EXIT_HODEI_FAILED)
}
