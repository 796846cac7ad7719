//! The real Docker engine for tests: is it there, the worker image built
//! FROM scratch by `scripts/worker-image.sh`, and our containers by label.

use std::process::Command;
use std::sync::OnceLock;

/// The image pool tests run (a dev-profile agent: faster to build).
pub const IMAGE: &str = "hodei-worker:test";

/// Whether an engine answers. Without one a test says so and passes,
/// except under `CI=true`, where it fails.
pub fn available() -> bool {
    let available = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no Docker engine, and CI=true requires the Docker tests to run"
        );
        eprintln!("skipping: no Docker engine reachable");
    }
    available
}

/// Builds [`IMAGE`] once per test binary.
pub fn build_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let output = super::without_outer_build_env(
            Command::new(format!("{root}/scripts/worker-image.sh"))
                .env("HODEI_WORKER_IMAGE", IMAGE)
                .env("HODEI_AGENT_PROFILE", "dev")
                .env("CARGO_TARGET_DIR", super::target_dir()),
        )
        .output()
        .expect("run scripts/worker-image.sh");
        assert!(
            output.status.success(),
            "worker-image.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// Ids of every container (running or not) labelled `hodei.pool=<pool>`,
/// as `docker ps -a` shows them.
pub fn containers_of_pool(pool: &str) -> Vec<String> {
    containers_labelled("hodei.pool", pool)
}

/// Ids of every container (running or not) labelled `key=value`, as
/// `docker ps -a` shows them.
pub fn containers_labelled(key: &str, value: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-a", "--quiet", "--filter"])
        .arg(format!("label={key}={value}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes a pool's containers when dropped (after a failed test).
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for id in containers_of_pool(&self.0) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}
