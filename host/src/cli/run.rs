//! `hodei run [OPTIONS] -- CMD...`: submit, follow the log live, and exit
//! with the job's exit code, like `docker run`.
//!
//! Exit codes: the job's own code when it exited; 124 when it timed out (as
//! timeout(1)); 130 when cancelled (as after Ctrl-C); 125 when hodei itself
//! failed (as docker). Ctrl-C cancels the job and keeps printing until the
//! agent confirms.

use anyhow::Context;

pub use hodei_cli::EXIT_HODEI_FAILED;
pub use hodei_cli::args::RunArgs;

use super::client::ApiClient;
use super::logs;

/// Runs `hodei run`; returns the process exit code.
pub async fn run(client: &ApiClient, args: RunArgs) -> anyhow::Result<u8> {
    let job = client.submit(&args.body()?).await?;
    let id = job["id"]
        .as_str()
        .context("server returned no job id")?
        .to_owned();
    if args.detach() {
        println!("{id}");
        return Ok(0);
    }
    let follow = logs::print(client, &id, true, None);
    tokio::pin!(follow);
    let done = tokio::select! {
        done = &mut follow => done?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("hodei: cancelling job {id}");
            client.cancel(&id).await?;
            follow.await?
        }
    };
    let (said, code) = hodei_cli::outcome::conclude(&id, done.as_ref());
    if let Some(said) = said {
        eprintln!("{said}");
    }
    Ok(code)
}
