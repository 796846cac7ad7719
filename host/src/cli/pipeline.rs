//! `hodei pipeline run FILE | ls | get | cancel | retry`.
//!
//! `run` creates the pipeline a TOML (or YAML, `.yaml`/`.yml`, or JSON)
//! file describes, the body of `POST /api/v1/pipelines`:
//!
//! ```toml
//! name = "ci"
//! env = { CI = "true" }
//!
//! [[steps]]
//! name = "build"
//! command = "make"
//!
//! [[steps]]
//! name = "test"
//! needs = ["build"]
//! command = "make test"
//! on_failure = "continue"
//! ```
//!
//! then follows every step's log as its job appears, each line prefixed
//! with `[step]`, and exits 0 when the pipeline succeeded, 1 when it
//! failed, 130 when it was cancelled (Ctrl-C cancels it).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::client::{ApiClient, LogEvent};

/// Exit code of a cancelled pipeline: 130, as `hodei run` answers for a
/// cancelled job (after Ctrl-C).
const EXIT_CANCELLED: u8 = 130;
/// How often `run` reads the pipeline for new step jobs.
const POLL: Duration = Duration::from_millis(250);

/// Subcommands of `hodei pipeline`.
#[derive(Debug, clap::Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline from a TOML (or `.yaml`, `.yml`, `.json`) file and follow it.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Print the id and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// List pipelines, newest first.
    Ls {
        /// Only pipelines in this state (running, failed...).
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one pipeline as JSON.
    Get {
        /// Pipeline id.
        id: String,
    },
    /// Cancel a pipeline and its unfinished steps.
    Cancel {
        /// Pipeline id.
        id: String,
    },
    /// Rerun the failed, cancelled and skipped steps of an ended pipeline.
    Retry {
        /// Pipeline id.
        id: String,
    },
}

/// The body of `POST /api/v1/pipelines` a pipeline file describes: JSON
/// (`.json`), YAML (`.yaml`, `.yml`) or else TOML. The host validates it.
pub fn read_pipeline_file(file: &std::path::Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match extension.as_deref() {
        Some("json") => serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?,
        Some("yaml" | "yml") => serde_norway::from_str(&text)
            .with_context(|| format!("{} is not YAML", file.display()))?,
        _ => toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?,
    })
}

/// Runs a `hodei pipeline` subcommand; answers the exit code.
pub async fn run(client: &ApiClient, command: PipelineCommand) -> anyhow::Result<u8> {
    match command {
        PipelineCommand::Run { file, detach } => {
            let body = read_pipeline_file(&file)?;
            let created = client
                .send_json(Method::POST, "/api/v1/pipelines", &body)
                .await?;
            let id = created["id"]
                .as_str()
                .context("no id in the answer")?
                .to_owned();
            if detach {
                println!("{id}");
                return Ok(0);
            }
            eprintln!("pipeline {id}");
            follow(client, &id).await
        }
        PipelineCommand::Ls { state, limit } => {
            let mut path = format!("/api/v1/pipelines?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={state}"));
            }
            let list = client.get(&path).await?;
            println!(
                "{:<36}  {:<10}  {:>5}  {:<19}  NAME",
                "ID", "STATE", "STEPS", "CREATED"
            );
            for p in list["pipelines"].as_array().into_iter().flatten() {
                println!(
                    "{:<36}  {:<10}  {:>5}  {:<19}  {}",
                    p["id"].as_str().unwrap_or("-"),
                    p["state"].as_str().unwrap_or("-"),
                    p["steps"].as_array().map_or(0, Vec::len),
                    p["created_at"]
                        .as_str()
                        .and_then(|t| t.get(..19))
                        .unwrap_or("-"),
                    p["name"].as_str().unwrap_or("-"),
                );
            }
            Ok(0)
        }
        PipelineCommand::Get { id } => {
            let p = client.get(&format!("/api/v1/pipelines/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&p)?);
            Ok(0)
        }
        PipelineCommand::Cancel { id } => {
            let p = client
                .send_json(
                    Method::POST,
                    &format!("/api/v1/pipelines/{id}/cancel"),
                    &Value::Null,
                )
                .await?;
            println!("{}", p["state"].as_str().unwrap_or("-"));
            Ok(0)
        }
        PipelineCommand::Retry { id } => {
            let p = client
                .send_json(
                    Method::POST,
                    &format!("/api/v1/pipelines/{id}/retry"),
                    &Value::Null,
                )
                .await?;
            println!("{}", p["state"].as_str().unwrap_or("-"));
            Ok(0)
        }
    }
}

/// Follows the pipeline until it ends: each step's log as its job
/// appears, then a summary; answers the exit code.
async fn follow(client: &ApiClient, id: &str) -> anyhow::Result<u8> {
    let mut followed: HashSet<String> = HashSet::new();
    let mut logs = tokio::task::JoinSet::new();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut cancelled = false;
    let pipeline = loop {
        let pipeline = client.get(&format!("/api/v1/pipelines/{id}")).await?;
        for step in pipeline["steps"].as_array().into_iter().flatten() {
            let (Some(name), Some(job)) = (step["name"].as_str(), step["job_id"].as_str()) else {
                continue;
            };
            if followed.insert(job.to_owned()) {
                logs.spawn(print_step(client.clone(), name.to_owned(), job.to_owned()));
            }
        }
        let state = pipeline["state"].as_str().unwrap_or_default();
        if matches!(state, "SUCCEEDED" | "FAILED" | "CANCELLED") {
            break pipeline;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = &mut interrupted, if !cancelled => {
                cancelled = true;
                eprintln!("hodei: cancelling pipeline {id}");
                client
                    .send_json(Method::POST, &format!("/api/v1/pipelines/{id}/cancel"), &Value::Null)
                    .await?;
            }
        }
    };
    while let Some(done) = logs.join_next().await {
        if let Ok(Err(err)) = done {
            eprintln!("hodei: {err:#}");
        }
    }
    let mut err = std::io::stderr().lock();
    for step in pipeline["steps"].as_array().into_iter().flatten() {
        let reason = step["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        writeln!(
            err,
            "{:<24} {}{reason}",
            step["name"].as_str().unwrap_or("-"),
            step["state"].as_str().unwrap_or("-")
        )?;
    }
    let state = pipeline["state"].as_str().unwrap_or_default();
    writeln!(err, "pipeline {id} {state}")?;
    match state {
        "SUCCEEDED" => Ok(0),
        "CANCELLED" => Ok(EXIT_CANCELLED),
        "FAILED" => Ok(1),
        other => bail!("pipeline ended in an unknown state {other:?}"),
    }
}

/// Prints one step's log, each line prefixed with `[step]`.
async fn print_step(client: ApiClient, step: String, job: String) -> anyhow::Result<()> {
    let mut events = std::pin::pin!(client.logs(&job, true, None).await?);
    while let Some(event) = events.next().await {
        match event? {
            LogEvent::Line(line) if line.stream == "stderr" => {
                writeln!(std::io::stderr().lock(), "[{step}] {}", line.line)?;
            }
            LogEvent::Line(line) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "[{step}] {}", line.line)?;
                out.flush()?;
            }
            LogEvent::Done(_) => break,
        }
    }
    Ok(())
}
