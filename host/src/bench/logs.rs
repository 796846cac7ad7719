//! `hodei bench logs`: how fast a job's output reaches a reader.
//!
//! Starts a real `hodei serve` with one local `hodei-agent`, and follows
//! each job's log over SSE (`GET /api/v1/jobs/{id}/logs?follow=true`), as
//! `hodei logs -f` does:
//! - latency: a job prints a line carrying bash's `$EPOCHREALTIME` (the
//!   moment of the write) every 20 ms; the reader subtracts it from its own
//!   clock when the line arrives (same machine, same clock). p50/p99/max;
//!   the first lines are skipped (the reader connects while the job
//!   starts).
//! - throughput: a job prints base64 text (76-character lines, what a
//!   chatty build looks like) as fast as it can, once to stdout (the PTY)
//!   and once to stderr (a pipe); MB/s of log data from the job's first
//!   write to the reader's receipt of the last line, and how fast the job
//!   itself got its output out.
//! - the PTY's ceiling, side by side: the stdout job again, on a bare PTY
//!   (output processing off, as the agent sets it) that this process reads
//!   64 KiB at a time and only counts. Nothing of Hodei's is in the way,
//!   so this is what the job and the kernel's terminal layer allow on this
//!   machine; a job writing line by line to a terminal (stdio line
//!   buffering) pays a system call and a terminal hand-over per line.
//!
//! It also prints the size of the static agent binary if it was built
//! (`cargo build --profile agent-release --target x86_64-unknown-linux-musl
//! -p hodei-agent`). Build with `--release` for figures worth comparing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::spine::Host;

/// Arguments of `hodei bench logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Timestamped lines of the latency job (one every 20 ms).
    #[arg(long, default_value_t = 500)]
    lines: u32,
    /// Megabytes of output of the throughput job.
    #[arg(long, default_value_t = 200)]
    megabytes: u64,
    /// Characters per line of the throughput job (base64 -w).
    #[arg(long, default_value_t = 76)]
    line_width: u32,
}

/// Lines skipped at the start of the latency job.
const WARM_UP: usize = 10;

/// Runs the benchmark and prints a table.
pub async fn run(args: &LogsArgs) -> anyhow::Result<()> {
    let host = Host::start(1, 2).await?;
    host.wait_agents(1).await?;
    let http = reqwest::Client::new();

    let script = format!(
        "for i in $(seq {}); do echo \"t $EPOCHREALTIME\"; sleep 0.02; done",
        args.lines
    );
    let mut latencies = Vec::new();
    follow(&http, &host.base, &script, |line, received| {
        if let Some(written) = line.strip_prefix("t ").and_then(parse_epoch) {
            latencies.push(received - written);
        }
    })
    .await?;
    let latencies: Vec<f64> = latencies.into_iter().skip(WARM_UP).collect();
    if latencies.is_empty() {
        bail!("the latency job printed nothing");
    }

    let (bytes, width) = (job_bytes(args), args.line_width);
    let ceiling = tokio::task::spawn_blocking(move || pty_ceiling(bytes, width)).await??;
    let mut rows = Vec::new();
    for stream in [Stream::Stdout, Stream::Stderr] {
        rows.push((stream, throughput(&http, &host.base, args, stream).await?));
    }
    host.stop().await;

    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let ms = |q: f64| {
        let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[rank] * 1000.0
    };
    println!("| measurement | figure | aim |");
    println!("|---|---:|---|");
    println!(
        "| write → SSE receipt, p50 ({} lines, 1 every 20 ms) | {:.2} ms | < 5 ms |",
        sorted.len(),
        ms(0.5)
    );
    println!(
        "| write → SSE receipt, p99 | {:.2} ms | < 25 ms |",
        ms(0.99)
    );
    println!("| write → SSE receipt, max | {:.2} ms | |", ms(1.0));
    for (stream, figures) in rows {
        let (what, aim) = match stream {
            Stream::Stdout => ("stdout (the PTY)", "≥ 100 MB/s"),
            Stream::Stderr => ("stderr (a pipe)", "≥ 100 MB/s"),
        };
        println!(
            "| throughput, {:.0} MB of {}-char lines on {what}, job's first write → last line at the reader | {:.0} MB/s ({:.1} s) | {aim} |",
            figures.megabytes,
            args.line_width,
            figures.megabytes / figures.delivered_secs,
            figures.delivered_secs
        );
        println!(
            "| … job's first write → all stored on the host | {:.0} MB/s ({:.1} s) | |",
            figures.megabytes / figures.stored_secs,
            figures.stored_secs
        );
        println!(
            "| … the job alone writing it | {:.0} MB/s ({:.1} s) | |",
            figures.megabytes / figures.written_secs,
            figures.written_secs
        );
        if let Stream::Stdout = stream {
            let (megabytes, secs) = ceiling;
            println!(
                "| … the same job on a bare PTY this process only counts (the PTY's ceiling here) | {:.0} MB/s ({secs:.1} s) | |",
                megabytes / secs
            );
            println!(
                "| … delivered to the reader, as a share of that ceiling | {:.0} % | |",
                100.0 * (figures.megabytes / figures.delivered_secs) / (megabytes / secs)
            );
        }
    }
    match static_agent() {
        Some((path, size)) => println!(
            "| static agent binary ({}) | {:.2} MB | |",
            path.display(),
            size as f64 / 1e6
        ),
        None => println!(
            "| static agent binary | not built: cargo build --profile agent-release --target x86_64-unknown-linux-musl -p hodei-agent | |"
        ),
    }
    Ok(())
}

/// Which stream the throughput job writes to.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// What one throughput run measured.
struct Throughput {
    /// Log data received (lines plus their newline), MB.
    megabytes: f64,
    /// From the job's first write to the reader's receipt of the last line.
    delivered_secs: f64,
    /// From the job's first write to its last.
    written_secs: f64,
    /// From the job's first write until the host had stored everything
    /// (its `finished_at`: the result is stored after the last line).
    stored_secs: f64,
}

/// Runs a job printing `megabytes` of base64 to `stream` as fast as it
/// can, following its log.
async fn throughput(
    http: &reqwest::Client,
    base: &str,
    args: &LogsArgs,
    stream: Stream,
) -> anyhow::Result<Throughput> {
    let (bytes, width) = (job_bytes(args), args.line_width);
    let redirect = match stream {
        Stream::Stdout => "",
        Stream::Stderr => " >&2",
    };
    let script = format!(
        "echo \"start $EPOCHREALTIME\"; head -c {bytes} /dev/urandom | base64 -w {width}{redirect}; echo \"end $EPOCHREALTIME\""
    );
    let (mut first, mut last, mut ended, mut volume) = (None, 0.0, None, 0_u64);
    let id = follow(http, base, &script, |line, received| {
        if let Some(start) = line.strip_prefix("start ").and_then(parse_epoch) {
            first = Some(start);
        } else if let Some(end) = line.strip_prefix("end ").and_then(parse_epoch) {
            ended = Some(end);
        } else {
            volume += line.len() as u64 + 1;
        }
        last = received;
    })
    .await?;
    let first = first.context("no start line")?;
    let job: Value = http
        .get(format!("{base}/api/v1/jobs/{id}"))
        .send()
        .await?
        .json()
        .await?;
    let finished = job["finished_at"].as_str().context("no finished_at")?;
    let finished = time::OffsetDateTime::parse(finished, &Rfc3339)?;
    let finished = finished.unix_timestamp_nanos() as f64 / 1e9;
    Ok(Throughput {
        megabytes: volume as f64 / 1e6,
        delivered_secs: last - first,
        written_secs: ended.context("no end line")? - first,
        stored_secs: finished - first,
    })
}

/// Random bytes the throughput job encodes: base64 makes `megabytes` of
/// them (4 characters per 3 bytes).
fn job_bytes(args: &LogsArgs) -> u64 {
    args.megabytes * 1_000_000 * 3 / 4
}

/// The throughput job's `bytes` as base64 lines of `width`, on the slave of
/// a fresh PTY with output processing off (as the agent sets it), its
/// master read here in 64 KiB reads that are only counted, until every
/// process closed the terminal. Returns (MB read, seconds from spawn).
fn pty_ceiling(bytes: u64, width: u32) -> anyhow::Result<(f64, f64)> {
    use std::io::Read;
    use std::process::{Command, Stdio};

    use nix::sys::termios::{self, OutputFlags, SetArg};

    let pty = nix::pty::openpty(None, None).context("openpty")?;
    let mut mode = termios::tcgetattr(&pty.slave)?;
    mode.output_flags.remove(OutputFlags::OPOST);
    termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &mode)?;
    let slave = std::fs::File::from(pty.slave);
    let started = std::time::Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("head -c {bytes} /dev/urandom | base64 -w {width}"))
        .stdin(Stdio::null())
        .stdout(slave.try_clone()?)
        .stderr(Stdio::null())
        .spawn()
        .context("spawning bash")?;
    // Only the job holds the terminal now: its end reads as EIO.
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut read = 0_u64;
    loop {
        match master.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => read += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) => break,
            Err(e) => return Err(e).context("reading the PTY"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let status = child.wait()?;
    if !status.success() || read == 0 {
        bail!("the bare-PTY job ended {status} after {read} bytes");
    }
    Ok((read as f64 / 1e6, secs))
}

/// One SSE data record; only the line is read (borrowed when it has no
/// escapes), as a lean client would.
#[derive(serde::Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    line: std::borrow::Cow<'a, str>,
}

/// Submits `script` and follows its log to the end, calling `each` with
/// every line and the reader's clock when it arrived (Unix seconds).
/// Returns the job's id.
async fn follow(
    http: &reqwest::Client,
    base: &str,
    script: &str,
    each: impl FnMut(&str, f64),
) -> anyhow::Result<String> {
    follow_job(http, base, &json!({ "command": script }), each).await
}

/// Submits the job `body` and follows its log to the end (see [`follow`]).
pub(super) async fn follow_job(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    mut each: impl FnMut(&str, f64),
) -> anyhow::Result<String> {
    let job: Value = http
        .post(format!("{base}/api/v1/jobs"))
        .json(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = job["id"].as_str().context("no job id")?.to_owned();
    let response = http
        .get(format!("{base}/api/v1/jobs/{id}/logs?follow=true"))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut event = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let received = now();
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            start += end + 1;
            if let Some(name) = line.strip_prefix(b"event:") {
                event = String::from_utf8_lossy(name).trim().to_owned();
            } else if let Some(data) = line.strip_prefix(b"data:") {
                if event == "done" {
                    let done: Value = serde_json::from_slice(data)?;
                    if done["state"] != json!("SUCCEEDED") {
                        bail!("the job ended {done}");
                    }
                    return Ok(id);
                }
                let record: Record<'_> = serde_json::from_slice(data)?;
                each(&record.line, received);
            } else if line.is_empty() {
                event.clear();
            }
        }
        pending.drain(..start);
    }
    bail!("the log stream ended before the job")
}

/// `$EPOCHREALTIME` (`1732269600.123456`) as seconds.
fn parse_epoch(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

pub(super) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The musl agent next to this build's target directory, and its size.
fn static_agent() -> Option<(PathBuf, u64)> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let path = target.join("x86_64-unknown-linux-musl/agent-release/hodei-agent");
    let size = std::fs::metadata(&path).ok()?.len();
    Some((path, size))
}
