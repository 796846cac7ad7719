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
//!   chatty build looks like) as fast as it can, three ways: to stdout
//!   (the PTY) a line per write, as stdio's line buffering on a terminal
//!   does; to stdout in blocks (through `cat`), as a tool writing through a
//!   pipe or fully buffered does; and to stderr (a pipe). MB/s of log data
//!   from the job's first write to the reader's receipt of the last line,
//!   how fast the job itself got its output out, and the CPU the host, the
//!   agent and this reader spent per MB (`/proc`, see [`super::cpu`]).
//! - the PTY's ceiling, side by side: each PTY job again, on a bare PTY
//!   (output processing off, as the agent sets it) that this process reads
//!   64 KiB at a time and only counts. Nothing of Hodei's is in the way,
//!   so this is what the job and the kernel's terminal layer allow on this
//!   machine; a job writing line by line to a terminal pays a system call
//!   and a hand-over to the kernel's terminal worker per line. Then once
//!   more with one core kept busy by a spinning thread: how much of that
//!   ceiling survives other work on the machine.
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

use super::cpu;
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
    let mut rows = Vec::new();
    for writer in [Writer::PtyLines, Writer::PtyBlocks, Writer::Pipe] {
        let ceilings = if writer.pty() {
            let quiet =
                tokio::task::spawn_blocking(move || pty_ceiling(bytes, width, writer, false))
                    .await??;
            let contended =
                tokio::task::spawn_blocking(move || pty_ceiling(bytes, width, writer, true))
                    .await??;
            Some((quiet, contended))
        } else {
            None
        };
        rows.push((
            writer,
            throughput(&http, &host, args, writer).await?,
            ceilings,
        ));
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
    for (writer, figures, ceilings) in rows {
        println!(
            "| throughput, {:.0} MB of {}-char lines {}, job's first write → last line at the reader | {:.0} MB/s ({:.1} s) | {} |",
            figures.megabytes,
            args.line_width,
            writer.what(),
            figures.megabytes / figures.delivered_secs,
            figures.delivered_secs,
            writer.aim()
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
        println!(
            "| … CPU per MB delivered: host, agent, this reader | {:.1}, {:.1}, {:.1} ms | |",
            figures.host_cpu * 1e3 / figures.megabytes,
            figures.agent_cpu * 1e3 / figures.megabytes,
            figures.reader_cpu * 1e3 / figures.megabytes,
        );
        println!(
            "| … the machine's busy CPU meanwhile (job and kernel included), of {} cores | {:.1} s of {:.1} s | |",
            cpu::cores(),
            figures.machine_busy,
            figures.delivered_secs * cpu::cores() as f64
        );
        if let Some((quiet, contended)) = ceilings {
            println!(
                "| … the same job on a bare PTY this process only counts (the PTY's ceiling here) | {:.0} MB/s ({:.1} s), machine busy {:.1} s of {:.1} s | |",
                quiet.rate(),
                quiet.secs,
                quiet.machine_busy,
                quiet.secs * cpu::cores() as f64
            );
            println!(
                "| … delivered to the reader, as a share of that ceiling | {:.0} % | |",
                100.0 * (figures.megabytes / figures.delivered_secs) / quiet.rate()
            );
            println!(
                "| … the bare PTY again with one core kept busy by a spinning thread (what any other work on the machine does to it) | {:.0} MB/s ({:.1} s) | |",
                contended.rate(),
                contended.secs
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

/// How the throughput job writes its lines.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// To stdout (the PTY), a write per line: stdio buffers by line on a
    /// terminal, as a tool printing as it goes does.
    PtyLines,
    /// The same lines to stdout in blocks (through `cat`): as a tool
    /// writing through a pipe or with full buffering does.
    PtyBlocks,
    /// To stderr (a pipe).
    Pipe,
}

impl Writer {
    fn pty(self) -> bool {
        !matches!(self, Self::Pipe)
    }

    fn what(self) -> &'static str {
        match self {
            Self::PtyLines => "on stdout (the PTY), a write per line",
            Self::PtyBlocks => "on stdout (the PTY), written in blocks (`| cat`)",
            Self::Pipe => "on stderr (a pipe)",
        }
    }

    fn aim(self) -> &'static str {
        match self {
            Self::Pipe => "≥ 100 MB/s",
            Self::PtyLines | Self::PtyBlocks => "≥ 60 MB/s",
        }
    }

    /// The job: `bytes` of random data as base64 lines of `width`, written
    /// this way.
    fn command(self, bytes: u64, width: u32) -> String {
        let tail = match self {
            Self::PtyLines => "",
            Self::PtyBlocks => " | cat",
            Self::Pipe => " >&2",
        };
        format!("head -c {bytes} /dev/urandom | base64 -w {width}{tail}")
    }
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
    /// CPU seconds, submit to the reader's last line: the host's, its
    /// local agent's, this process's (the reader, mostly).
    host_cpu: f64,
    agent_cpu: f64,
    reader_cpu: f64,
    /// Busy CPU seconds of the whole machine over the same span.
    machine_busy: f64,
}

/// Runs a job printing `megabytes` of base64 to `stream` as fast as it
/// can, following its log.
async fn throughput(
    http: &reqwest::Client,
    host: &Host,
    args: &LogsArgs,
    writer: Writer,
) -> anyhow::Result<Throughput> {
    let base = host.base.as_str();
    let host_pid = host.pid().context("the host has exited")?;
    let agents = cpu::children_named(host_pid, "hodei-agent")?;
    let agent_pid = match agents.as_slice() {
        [one] => *one,
        other => bail!("expected one local hodei-agent under the host, found {other:?}"),
    };
    let cpu_now = || -> anyhow::Result<[f64; 4]> {
        Ok([
            cpu::process_seconds(host_pid)?,
            cpu::process_seconds(agent_pid)?,
            cpu::process_seconds(std::process::id())?,
            cpu::machine_busy_seconds()?,
        ])
    };
    let before = cpu_now()?;
    let (bytes, width) = (job_bytes(args), args.line_width);
    let script = format!(
        "echo \"start $EPOCHREALTIME\"; {}; echo \"end $EPOCHREALTIME\"",
        writer.command(bytes, width)
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
    let after = cpu_now()?;
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
        host_cpu: after[0] - before[0],
        agent_cpu: after[1] - before[1],
        reader_cpu: after[2] - before[2],
        machine_busy: after[3] - before[3],
    })
}

/// Random bytes the throughput job encodes: base64 makes `megabytes` of
/// them (4 characters per 3 bytes).
fn job_bytes(args: &LogsArgs) -> u64 {
    args.megabytes * 1_000_000 * 3 / 4
}

/// What a bare-PTY run measured.
struct Ceiling {
    megabytes: f64,
    secs: f64,
    /// Busy CPU seconds of the whole machine meanwhile.
    machine_busy: f64,
}

impl Ceiling {
    fn rate(&self) -> f64 {
        self.megabytes / self.secs
    }
}

/// The throughput job (`writer`'s way, a PTY one), on the slave of
/// a fresh PTY with output processing off (as the agent sets it), its
/// master read here in 64 KiB reads that are only counted, until every
/// process closed the terminal. With `contended`, a thread spins on one
/// core meanwhile, as any other work would.
fn pty_ceiling(bytes: u64, width: u32, writer: Writer, contended: bool) -> anyhow::Result<Ceiling> {
    use std::io::Read;
    use std::process::{Command, Stdio};

    use nix::sys::termios::{self, OutputFlags, SetArg};

    let pty = nix::pty::openpty(None, None).context("openpty")?;
    let mut mode = termios::tcgetattr(&pty.slave)?;
    mode.output_flags.remove(OutputFlags::OPOST);
    termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &mode)?;
    let slave = std::fs::File::from(pty.slave);
    // Stops and joins the spinner however this function returns.
    let _spinner = contended.then(Spinner::start);
    let busy_before = cpu::machine_busy_seconds()?;
    let started = std::time::Instant::now();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(writer.command(bytes, width))
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
    let machine_busy = cpu::machine_busy_seconds()? - busy_before;
    let status = child.wait()?;
    if !status.success() || read == 0 {
        bail!("the bare-PTY job ended {status} after {read} bytes");
    }
    Ok(Ceiling {
        megabytes: read as f64 / 1e6,
        secs,
        machine_busy,
    })
}

/// A thread keeping one core busy until dropped.
struct Spinner {
    spinning: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let spinning = std::sync::Arc::new(AtomicBool::new(true));
        let flag = std::sync::Arc::clone(&spinning);
        let thread = std::thread::spawn(move || {
            while flag.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Self {
            spinning,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.spinning
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
