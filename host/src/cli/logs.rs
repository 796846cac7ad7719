//! `hodei logs [-f] [--tail N] ID`, and the log printer `hodei run` shares.

use std::io::Write;

use futures::StreamExt;

use super::client::{ApiClient, Done, LogEvent};

/// Arguments of `hodei logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Job id.
    pub id: String,
    /// Keep following until the job ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Start with the last N lines.
    #[arg(long)]
    pub tail: Option<u64>,
}

/// Prints the log, stdout lines to stdout and stderr lines to stderr.
/// Returns the final event (None if the stream ended without one).
pub async fn print(
    client: &ApiClient,
    id: &str,
    follow: bool,
    tail: Option<u64>,
) -> anyhow::Result<Option<Done>> {
    let mut events = std::pin::pin!(client.logs(id, follow, tail).await?);
    while let Some(event) = events.next().await {
        match event? {
            LogEvent::Line(line) => {
                if line.stream == "stderr" {
                    let mut err = std::io::stderr().lock();
                    writeln!(err, "{}", line.line)?;
                } else {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", line.line)?;
                    out.flush()?;
                }
            }
            LogEvent::Done(done) => return Ok(Some(done)),
        }
    }
    Ok(None)
}

/// Runs `hodei logs`.
pub async fn run(client: &ApiClient, args: LogsArgs) -> anyhow::Result<()> {
    print(client, &args.id, args.follow, args.tail).await?;
    Ok(())
}
