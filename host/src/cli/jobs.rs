//! `hodei jobs ls|get|cancel`.

use serde_json::Value;

use super::client::ApiClient;

/// Subcommands of `hodei jobs`.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    Ls {
        /// Only jobs in this state (pending, running, succeeded...).
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this cursor (printed under a full page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one job as JSON.
    Get {
        /// Job id.
        id: String,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
    },
}

fn field<'a>(job: &'a Value, key: &str) -> &'a str {
    job[key].as_str().unwrap_or("-")
}

/// Runs a `hodei jobs` subcommand.
pub async fn run(client: &ApiClient, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Ls {
            state,
            limit,
            cursor,
        } => {
            let mut path = format!("/api/v1/jobs?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={state}"));
            }
            if let Some(cursor) = cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = client.get(&path).await?;
            println!(
                "{:<36}  {:<10}  {:>4}  {:<24}  NAME",
                "ID", "STATE", "EXIT", "CREATED"
            );
            for job in page["jobs"].as_array().into_iter().flatten() {
                let exit = job["exit_code"]
                    .as_i64()
                    .map_or("-".to_owned(), |c| c.to_string());
                println!(
                    "{:<36}  {:<10}  {:>4}  {:<24}  {}",
                    field(job, "id"),
                    field(job, "state"),
                    exit,
                    field(job, "created_at").get(..19).unwrap_or("-"),
                    field(job, "name"),
                );
            }
            if let Some(next) = page["next_cursor"].as_str() {
                println!("(more: --cursor {next})");
            }
        }
        JobsCommand::Get { id } => {
            let job = client.get(&format!("/api/v1/jobs/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Cancel { id } => {
            let job = client.cancel(&id).await?;
            let note = if job["cancel_requested"].as_bool() == Some(true)
                && field(&job, "state") != "CANCELLED"
            {
                " (cancel requested; the agent is stopping it)"
            } else {
                ""
            };
            println!("{} {}{note}", field(&job, "id"), field(&job, "state"));
        }
    }
    Ok(())
}
