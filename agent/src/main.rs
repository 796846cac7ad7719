//! The `hodei-agent` binary: flags, logging to stderr, then [`hodei_agent::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use hodei_agent::{Args, TokenRejected};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // One crypto provider for every TLS connection (ring, as the host).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person; a supervising host reads plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match hodei_agent::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        // Already logged where it happened; retrying cannot help.
        Err(error) if error.is::<TokenRejected>() => ExitCode::from(2),
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
