//! `hodei bench providers`: submit → first log line, with a worker that has
//! to be created for the job (cold) and with one already waiting (warm),
//! for local processes and Docker containers, side by side in one run.
//!
//! One real `hodei serve` with four pools: `local-cold` and `docker-cold`
//! are ephemeral with min 0 and max 4 (every job gets a worker created for
//! it, and the worker is destroyed after), `local-warm` and `docker-warm`
//! keep one worker (min 1). Jobs run one at a time; each is timed from just before
//! its submit until its first line reaches an SSE reader. The Docker rows
//! need the worker image (`scripts/worker-image.sh`); without it, or
//! without an engine, they are skipped with a note.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::logs::{follow_job, now};
use super::spine::Host;

/// Arguments of `hodei bench providers`.
#[derive(Debug, clap::Args)]
pub struct ProvidersArgs {
    /// Jobs timed per pool.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The worker image for the Docker pools.
    #[arg(long, default_value = concat!("hodei-worker:", env!("CARGO_PKG_VERSION")))]
    image: String,
}

fn pool(name: &str, provider: &str, config: &str, warm: bool) -> String {
    let grant = if provider == "local" {
        "process"
    } else {
        provider
    };
    let shape = if warm {
        "min = 1\nmax = 1\nidle_timeout_secs = 3600"
    } else {
        // Room for the next worker while the previous one is torn down,
        // so each job's cold start is its own.
        "min = 0\nmax = 4\nephemeral = true"
    };
    format!(
        "[[pools]]\nname = \"{name}\"\nprovider = \"{provider}\"\nconfig = \"{config}\"\n\
         grants = [\"{grant}\"]\nlabels = {{ bench = \"{name}\" }}\nslots = 1\n{shape}\n"
    )
}

fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the benchmark and prints its table.
pub async fn run(args: &ProvidersArgs) -> anyhow::Result<()> {
    let docker = image_present(&args.image);
    if !docker {
        eprintln!(
            "note: no Docker image {} (build it with scripts/worker-image.sh): Docker rows skipped",
            args.image
        );
    }
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("pools.toml");
    let docker_config = format!("image={} stop-timeout=2", args.image);
    let mut pools = vec![
        ("local-cold", pool("local-cold", "local", "", false)),
        ("local-warm", pool("local-warm", "local", "", true)),
    ];
    if docker {
        pools.push((
            "docker-cold",
            pool("docker-cold", "docker", &docker_config, false),
        ));
        pools.push((
            "docker-warm",
            pool("docker-warm", "docker", &docker_config, true),
        ));
    }
    let config: String = pools.iter().map(|(_, toml)| toml.as_str()).collect();
    std::fs::write(&config_path, config)?;
    let config_arg = config_path.display().to_string();
    let host = Host::start_with(0, 1, &["--config", &config_arg]).await?;
    let http = reqwest::Client::new();
    wait_warm(&http, &host.base, pools.len() / 2).await?;

    println!("| pool | runs | submit → first line p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, _) in &pools {
        let mut samples = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            let body = json!({ "command": "echo first", "labels": { "bench": name } });
            let submitted = now();
            let mut first = None;
            follow_job(&http, &host.base, &body, |_, at| {
                first.get_or_insert(at);
            })
            .await
            .with_context(|| format!("a job on pool {name}"))?;
            samples.push((first.context("the job printed nothing")? - submitted) * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[i]
        };
        println!(
            "| {name} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            samples.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    host.stop().await;
    Ok(())
}

/// Waits until the warm pools' workers are connected (60 s at most).
async fn wait_warm(http: &reqwest::Client, base: &str, warm: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let health: serde_json::Value = http
            .get(format!("{base}/healthz"))
            .send()
            .await?
            .json()
            .await?;
        if health["connected_workers"].as_u64() >= Some(warm as u64) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the warm pools' workers did not connect within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
