//! `hodei bench`: figures printed as Markdown tables, measured on this
//! machine. Build with `--release` for figures worth comparing.
//!
//! - `spine`: durable submits/s and end-to-end jobs/s against real
//!   `hodei serve` processes (see [`spine`]).
//! - `policies`: decision latency and throughput of the built-in policy
//!   and the in-tree Wasm policies over synthetic clusters, plus swap
//!   latency (see [`policies`]).
//! - `store`: redb and PostgreSQL side by side, and two hosts sharing
//!   PostgreSQL (see [`store`]).
//! - `logs`: a job's output to an SSE reader: latency and throughput (see
//!   [`logs`]).
//! - `maskers`: host log ingest with the masker chain on vs off (see
//!   [`maskers`]).
//! - `latency`: one job's trip hop by hop, and `hodei run` at the command
//!   line beside Slurm's `srun` (see [`latency`]).
//! - `footprint`: the host's memory with 100,000 stored jobs, and listing
//!   by state against that history (see [`footprint`]).
//! - `pipeline`: a pipeline step's overhead over a lone job (see
//!   [`pipeline`]).
//! - `scheduler`: submits/s and a placeable job's start with 100,000
//!   unplaceable jobs pending (see [`scheduler`]).
//! - `providers`: submit → first log line on a cold and a warm worker of
//!   local and Docker pools (see [`providers`]).

mod cpu;
pub mod footprint;
pub mod latency;
pub mod logs;
pub mod maskers;
pub mod pipeline;
pub mod policies;
pub mod providers;
pub mod scheduler;
mod sim_agents;
pub mod spine;
pub mod store;

/// Which benchmark to run.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Durable submits/s and completed jobs/s with real processes.
    Spine(spine::SpineArgs),
    /// Scheduling decision latency: native vs Wasm policies.
    Policies(policies::PolicyBenchArgs),
    /// Durable submits/s on redb vs PostgreSQL; two hosts on PostgreSQL.
    Store(store::StoreArgs),
    /// Log latency (write → SSE reader) and throughput with real processes.
    Logs(logs::LogsArgs),
    /// One job's trip hop by hop; `hodei run` vs `srun` at the command line.
    Latency(latency::LatencyArgs),
    /// Host memory and listing time with a long history.
    Footprint(footprint::FootprintArgs),
    /// Submit → first log line on cold and warm workers of local and
    /// Docker pools.
    Providers(providers::ProvidersArgs),
    /// Host log ingest MB/s with the masker chain on vs off.
    Maskers(maskers::MaskersArgs),
    /// A pipeline step's overhead over a lone job (need's end → start).
    Pipeline(pipeline::PipelineArgs),
    /// Submits/s and a placeable job's start with a deep unplaceable backlog.
    Scheduler(scheduler::SchedulerArgs),
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; use `cargo run --release -p hodei -- bench ...` for real figures"
        );
    }
    match command {
        BenchCommand::Spine(args) => spine::run(args).await,
        BenchCommand::Policies(args) => policies::run(&args).await,
        BenchCommand::Store(args) => store::run(&args).await,
        BenchCommand::Logs(args) => logs::run(&args).await,
        BenchCommand::Latency(args) => latency::run(&args).await,
        BenchCommand::Footprint(args) => footprint::run(&args).await,
        BenchCommand::Providers(args) => providers::run(&args).await,
        BenchCommand::Maskers(args) => maskers::run(&args).await,
        BenchCommand::Pipeline(args) => pipeline::run(&args).await,
        BenchCommand::Scheduler(args) => scheduler::run(&args).await,
    }
}
