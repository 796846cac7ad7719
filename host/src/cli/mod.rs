//! The full `hodei` command line, the `hodei-host` binary's: `serve` runs
//! the host; every other command is a client of its REST API (one file per
//! command). The `hodei` binary users type (the hodei-cli crate) does
//! `run --detach` itself and hands everything else here by `exec`; the
//! options both parse are defined there once (`hodei_cli::args`).

mod agent_token;
pub mod client;
mod jobs;
mod logs;
mod masker;
mod pipeline;
mod plugin;
mod policy;
mod pools;
pub mod run;
mod token;
mod workers;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hodei_cli::args::{Globals, LogFormat};

use crate::bench::BenchCommand;
use crate::config::ServeArgs;

/// Hodei Jobs: a job scheduler with Wasm policies and gRPC agents.
#[derive(Debug, Parser)]
// `bin_name`: usage lines say `hodei`, the command users type, whether
// they reached this binary through the front or ran it by its own name.
#[command(name = "hodei", bin_name = "hodei", version, about)]
pub struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host (REST API, agent gateway, scheduler, store).
    Serve(Box<ServeArgs>),
    /// Submit a job, follow its log, exit with its exit code.
    Run(run::RunArgs),
    /// List, show and cancel jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Print a job's log.
    Logs(logs::LogsArgs),
    /// Run a pipeline from a file and follow its steps; list, show,
    /// cancel and retry pipelines.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// List workers.
    Workers,
    /// Worker pools: state, workers by phase, create latency, last error.
    Pools,
    /// Manage scheduling policies (WebAssembly plugins).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// A private CA and certificates: `init` (CA + host), `agent` (a client
    /// certificate for mutual TLS).
    #[command(subcommand)]
    Certs(crate::tls::certs::CertsCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Agents' bootstrap tokens (create, ls, revoke) and the credentials
    /// they bound (agents, revoke-agent).
    #[command(subcommand)]
    AgentToken(agent_token::AgentTokenCommand),
    /// Manage secret maskers (WebAssembly plugins) and the masker chain.
    #[command(subcommand)]
    Masker(masker::MaskerCommand),
    /// Write and build scheduling-policy plugins: `new` scaffolds a crate,
    /// `build` compiles it to the component `policy load` takes.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Measure this machine: `spine` (submits/s, jobs/s) or `policies`
    /// (decision latency, native vs Wasm).
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    crate::tls::install_provider();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.command {
            Command::Serve(_) => "info",
            _ => "warn",
        })
    });
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.globals.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(logs);
    #[cfg(feature = "otel")]
    let (subscriber, otel_provider) = match crate::otel::layer() {
        Ok(Some((layer, provider))) => (subscriber.with(Some(layer)), Some(provider)),
        Ok(None) => (subscriber.with(None), None),
        Err(err) => {
            eprintln!("hodei: OpenTelemetry export not started: {err:#}");
            (subscriber.with(None), None)
        }
    };
    subscriber.init();
    // A client command is one request or stream at a time: one thread
    // does it, without starting (and waking) a pool of workers per call
    // (`hodei run --detach` spent more time waiting for its threads than
    // for the host). The host and the benchmarks get the multi-threaded
    // runtime.
    let runtime = match cli.command {
        Command::Serve(_) | Command::Bench(_) => tokio::runtime::Runtime::new(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hodei: cannot start the runtime: {err}");
            return ExitCode::from(run::EXIT_HODEI_FAILED);
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    #[cfg(feature = "otel")]
    if let Some(provider) = otel_provider {
        // Flushes the spans still batched.
        let _ = provider.shutdown();
    }
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("hodei: {err:#}");
            ExitCode::from(run::EXIT_HODEI_FAILED)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let token = match &cli.command {
        Command::Serve(_) | Command::Plugin(_) | Command::Bench(_) | Command::Certs(_) => None,
        _ => hodei_cli::token::discover_token(&cli.globals.server, cli.globals.token.as_deref()),
    };
    let ca = cli.globals.ca_cert.clone().or_else(|| {
        let local = std::path::PathBuf::from("hodei-data/tls/ca.pem");
        local.is_file().then_some(local)
    });
    let client = client::ApiClient::new(&cli.globals.server, token.as_deref(), ca.as_deref())?;
    match cli.command {
        Command::Serve(args) => crate::serve::serve(args.resolve()?).await.map(|()| 0),
        Command::Run(args) => run::run(&client, args).await,
        Command::Jobs(command) => jobs::run(&client, command).await.map(|()| 0),
        Command::Logs(args) => logs::run(&client, args).await.map(|()| 0),
        Command::Pipeline(command) => pipeline::run(&client, command).await,
        Command::Workers => workers::run(&client).await.map(|()| 0),
        Command::Pools => pools::run(&client).await.map(|()| 0),
        Command::Policy(command) => policy::run(&client, command).await.map(|()| 0),
        Command::Masker(command) => masker::run(&client, command).await.map(|()| 0),
        Command::Token(command) => token::run(&client, command).await.map(|()| 0),
        Command::AgentToken(command) => agent_token::run(&client, command).await.map(|()| 0),
        Command::Certs(command) => crate::tls::certs::run(command).map(|()| 0),
        Command::Plugin(command) => plugin::run(command).await.map(|()| 0),
        Command::Bench(command) => crate::bench::run(command).await.map(|()| 0),
    }
}
