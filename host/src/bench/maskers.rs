//! `hodei bench maskers`: what the host's masker chain costs log ingest.
//!
//! Two real `hodei serve` processes side by side, one with host-side
//! masking off (`--maskers none`) and one with the default chain (literal
//! then patterns, the in-tree Wasm components). Into each, this process
//! speaks agent.proto itself (no PTY, no agent: only the host's ingest is
//! measured): it registers, takes one job with a declared secret, and
//! streams log batches of 76-character base64 lines (what a chatty build
//! prints; one line in 100 carries the secret), keeping a window of
//! batches in flight, until the last one is acknowledged (stored). MB/s
//! of line data per run; runs alternate between the hosts, and the table
//! gives the median of each and the cost of the chain as a share of
//! ingest throughput.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use hodei_proto::v1::agent_service_client::AgentServiceClient;
use hodei_proto::v1::{
    AgentMessage, JobResult, JobStarted, LogBatch, LogEntry, Outcome, Register, Stream,
    agent_message, server_message,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::cpu;
use super::spine::Host;

/// Arguments of `hodei bench maskers`.
#[derive(Debug, clap::Args)]
pub struct MaskersArgs {
    /// Megabytes of log lines per run.
    #[arg(long, default_value_t = 64)]
    megabytes: u64,
    /// Lines per log batch (the agent sends up to 1,000 per batch).
    #[arg(long, default_value_t = 500)]
    batch_lines: usize,
    /// Runs per host (alternating).
    #[arg(long, default_value_t = 3)]
    runs: u32,
}

const TOKEN: &str = "bench-maskers-token";
const SECRET: &str = "bench-Secret-4f9a77";
/// Batches sent and not yet acknowledged.
const WINDOW: u64 = 8;

/// Runs the benchmark and prints a table.
pub async fn run(args: &MaskersArgs) -> anyhow::Result<()> {
    let off = Host::start_with(0, 1, &["--maskers", "none", "--agent-token", TOKEN]).await?;
    let on = Host::start_with(0, 1, &["--agent-token", TOKEN]).await?;
    let lines = lines(args.batch_lines);
    let (mut off_mbs, mut on_mbs) = (Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        for (host, mbs, cpu) in [
            (&off, &mut off_mbs, &mut off_cpu),
            (&on, &mut on_mbs, &mut on_cpu),
        ] {
            let before = cpu_seconds(host)?;
            mbs.push(ingest(host, &lines, args, run).await?);
            cpu.push((cpu_seconds(host)? - before) * 1e3 / args.megabytes as f64);
        }
    }
    off.stop().await;
    on.stop().await;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off_median, on_median) = (median(&mut off_mbs), median(&mut on_mbs));
    println!(
        "| host ingest, 76-char lines, {} MB × {} runs | MB/s (median) | runs |",
        args.megabytes, args.runs
    );
    println!("|---|---:|---|");
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| masking off (`--maskers none`) | {off_median:.1} | {} |",
        runs(&off_mbs)
    );
    println!(
        "| chain literal → patterns (Wasm) | {on_median:.1} | {} |",
        runs(&on_mbs)
    );
    let (off_cpu_median, on_cpu_median) = (median(&mut off_cpu), median(&mut on_cpu));
    println!(
        "| host CPU ms per MB, masking off | {off_cpu_median:.1} | {} |",
        runs(&off_cpu)
    );
    println!(
        "| host CPU ms per MB, chain on | {on_cpu_median:.1} | {} |",
        runs(&on_cpu)
    );
    println!(
        "\ncost of the chain: {:.1} % of ingest throughput (aim: < 15 %); {:.1} ms of host CPU per MB ({:.0} % more)",
        (1.0 - on_median / off_median) * 100.0,
        on_cpu_median - off_cpu_median,
        (on_cpu_median / off_cpu_median - 1.0) * 100.0
    );
    Ok(())
}

/// CPU seconds the host has used so far (see [`cpu`]).
fn cpu_seconds(host: &Host) -> anyhow::Result<f64> {
    cpu::process_seconds(host.pid().context("the host has exited")?)
}

/// One batch worth of 76-character base64 lines, every 100th carrying the
/// secret.
fn lines(count: usize) -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    (0..count)
        .map(|i| {
            let raw: Vec<u8> = (0..57)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_le_bytes()[0]
                })
                .collect();
            let mut line = base64::engine::general_purpose::STANDARD
                .encode(raw)
                .into_bytes();
            if i % 100 == 0 {
                line.splice(20..20 + SECRET.len(), SECRET.bytes());
            }
            line
        })
        .collect()
}

/// Streams `args.megabytes` of `lines` as one job's log into `host`;
/// answers MB/s from the first batch to the last acknowledgement.
async fn ingest(
    host: &Host,
    lines: &[Vec<u8>],
    args: &MaskersArgs,
    run: u32,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let label = format!("bench-{run}");
    let (secret, agent_id) = hodei_proto::new_agent_identity();
    let channel = tonic::transport::Endpoint::from_shared(host.grpc.clone())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let send = |msg| {
        let tx = tx.clone();
        async move {
            tx.send(AgentMessage { msg: Some(msg) })
                .await
                .map_err(|_| anyhow::anyhow!("the host closed the stream"))
        }
    };
    send(agent_message::Msg::Register(Register {
        protocol_version: hodei_proto::PROTOCOL_VERSION,
        agent_id,
        agent_secret: secret,
        name: label.clone(),
        version: "bench".into(),
        cpu_count: 1,
        memory_bytes: 1 << 30,
        labels: [("bench".to_owned(), label.clone())].into(),
        slots: 1,
        ..Register::default()
    }))
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let mut inbound = client.connect(request).await?.into_inner();
    let job: serde_json::Value = http
        .post(format!("{}/api/v1/jobs", host.base))
        .json(&json!({
            "command": "true",
            "labels": { "bench": label },
            "secrets": { "S": SECRET },
        }))
        .send()
        .await?
        .json()
        .await?;
    let job_id = job["id"].as_str().context("no job id")?.to_owned();
    let (attempt, mut sequence) = loop {
        match inbound.message().await?.and_then(|m| m.msg) {
            Some(server_message::Msg::AssignJob(assign)) => {
                break (assign.attempt, assign.first_sequence);
            }
            Some(_) => {}
            None => bail!("the host closed the stream before assigning the job"),
        }
    };
    send(agent_message::Msg::JobStarted(JobStarted {
        job_id: job_id.clone(),
        attempt,
        pid: 1,
    }))
    .await?;
    let batch_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let batches = (args.megabytes << 20).div_ceil(batch_bytes);
    let started = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    let first = sequence;
    while acked < batches {
        while sent < batches && sent - acked < WINDOW {
            let entries = lines
                .iter()
                .map(|data| {
                    let entry = LogEntry {
                        sequence,
                        stream: Stream::Stdout as i32,
                        data: data.clone(),
                        timestamp_us: 1,
                    };
                    sequence += 1;
                    entry
                })
                .collect();
            send(agent_message::Msg::LogBatch(LogBatch {
                job_id: job_id.clone(),
                attempt,
                entries,
            }))
            .await?;
            sent += 1;
        }
        let answer = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .context("no ack within 30 s")??;
        match answer.and_then(|m| m.msg) {
            Some(server_message::Msg::Ack(ack)) if ack.log_sequence >= first => {
                acked = (ack.log_sequence + 1 - first) / lines.len() as u64;
            }
            Some(server_message::Msg::Refused(refused)) => bail!("refused: {}", refused.reason),
            Some(_) => {}
            None => bail!("the host closed the stream"),
        }
    }
    let elapsed = started.elapsed();
    send(agent_message::Msg::JobResult(JobResult {
        job_id,
        attempt,
        outcome: Outcome::Exited as i32,
        last_sequence: sequence - 1,
        outputs: Vec::new(),
        ..JobResult::default()
    }))
    .await?;
    Ok((batches * batch_bytes) as f64 / 1e6 / elapsed.as_secs_f64())
}
