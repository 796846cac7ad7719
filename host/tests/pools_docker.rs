//! Docker pools on the real engine: containers of the FROM-scratch worker
//! image (`scripts/worker-image.sh`), on the host network, created for
//! demand and removed when idle; ephemeral containers; scale 0 → 4 → 0
//! under 20 queued jobs; and a host SIGKILLed while workers start and run,
//! restarted on the same store: nothing orphaned, the pool converges.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::docker::{self, IMAGE, RemoveOnDrop};
use common::{Host, lines, script_for, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A fresh pool name, so runs never see each other's containers.
fn pool_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn docker_pool(name: &str, max: u32, extra: &str) -> String {
    format!(
        "[[pools]]\nname = \"{name}\"\nprovider = \"docker\"\nconfig = \"image={IMAGE} stop-timeout=5\"\n\
         grants = [\"docker\"]\nlabels = {{ role = \"{name}\" }}\nmax = {max}\n{extra}\n"
    )
}

/// A host with `config` as its config file and `extra` flags.
fn host_with(config: &str, extra: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hodei.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config".to_owned(), path.display().to_string()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Host::start_with(&args), dir)
}

fn pool_view(host: &Host, name: &str) -> Value {
    host.get(&format!("/api/v1/pools/{name}")).1
}

#[test]
fn a_docker_pool_starts_a_container_for_a_job_and_removes_it_when_idle() {
    if !docker::available() {
        return;
    }
    docker::build_image();
    let name = pool_name("dk");
    let _cleanup = RemoveOnDrop(name.clone());
    let (host, _dir) = host_with(&docker_pool(&name, 3, "idle_timeout_secs = 2"), &[]);
    assert!(docker::containers_of_pool(&name).is_empty(), "min 0");

    let id = host.submit_ok(&script_for(&name, "echo from-a-container; uname -n"));
    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(90));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    assert_eq!(lines(&host.sse(&id, ""))[0], "from-a-container");
    assert_eq!(
        docker::containers_of_pool(&name).len(),
        1,
        "one container ran it"
    );

    // The engine's view and the host's are two observers: the container
    // can be gone a moment before the host has recorded its destroy.
    wait_until(
        "the idle container removed, and the pool empty",
        Duration::from_secs(60),
        || {
            docker::containers_of_pool(&name).is_empty()
                && pool_view(&host, &name)["workers"] == json!([])
        },
    );

    // Ephemeral: each job its own container, each removed.
    let once = pool_name("dk-once");
    let _cleanup_once = RemoveOnDrop(once.clone());
    let (status, body) = common::post_json(
        &host.url("/api/v1/pools"),
        &json!({
            "name": once, "provider": "docker", "config": format!("image={IMAGE} stop-timeout=5"),
            "grants": ["docker"], "labels": { "role": once }, "max": 2, "ephemeral": true,
        }),
    );
    assert_eq!(status, 201, "{body}");
    let ids: Vec<String> = (0..5)
        .map(|_| host.submit_ok(&script_for(&once, "echo one-shot")))
        .collect();
    let mut most = 0;
    wait_until("five ephemeral jobs", Duration::from_secs(120), || {
        most = most.max(docker::containers_of_pool(&once).len());
        ids.iter()
            .all(|id| host.job(id)["state"] == json!("SUCCEEDED"))
    });
    let workers: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| host.job(id)["worker_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(workers.len(), 5, "a container each: {workers:?}");
    assert!(most <= 2, "never more than max: {most}");
    wait_until(
        "every ephemeral container removed",
        Duration::from_secs(60),
        || docker::containers_of_pool(&once).is_empty(),
    );
}

#[test]
fn twenty_queued_jobs_scale_a_docker_pool_to_its_max_of_four_and_back_to_zero() {
    if !docker::available() {
        return;
    }
    docker::build_image();
    let name = pool_name("dk-scale");
    let _cleanup = RemoveOnDrop(name.clone());
    let (host, _dir) = host_with(&docker_pool(&name, 4, "idle_timeout_secs = 1"), &[]);
    let ids: Vec<String> = (0..20)
        .map(|i| host.submit_ok(&script_for(&name, &format!("sleep 2; echo job-{i}"))))
        .collect();
    let mut most = 0;
    wait_until("twenty jobs", Duration::from_secs(240), || {
        most = most.max(docker::containers_of_pool(&name).len());
        ids.iter()
            .all(|id| matches!(host.job(id)["state"].as_str(), Some("SUCCEEDED" | "FAILED")))
    });
    assert!(
        (1..=4).contains(&most),
        "never more than 4 containers: {most}"
    );
    for (i, id) in ids.iter().enumerate() {
        let job = host.job(id);
        assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
        assert_eq!(job["attempt"], json!(1), "ran once: {job}");
        assert_eq!(lines(&host.sse(id, "")), vec![format!("job-{i}")]);
    }
    wait_until("back to zero containers", Duration::from_secs(60), || {
        docker::containers_of_pool(&name).is_empty()
    });
    println!("most containers at once: {most}");
}

#[test]
fn a_host_killed_while_workers_start_and_run_leaves_no_orphan_and_converges() {
    if !docker::available() {
        return;
    }
    docker::build_image();
    let name = pool_name("dk-crash");
    let _cleanup = RemoveOnDrop(name.clone());
    // Agents dial the gRPC port they were created with: the restarted host
    // must listen on the same one.
    let grpc = common::free_local_addr();
    let (mut host, _dir) = host_with(
        &docker_pool(&name, 3, "idle_timeout_secs = 2"),
        &["--grpc-addr", &grpc, "--lease-secs", "10"],
    );
    let ids: Vec<String> = (0..6)
        .map(|i| host.submit_ok(&script_for(&name, &format!("sleep 4; echo crash-{i}"))))
        .collect();
    wait_until(
        "jobs running in containers",
        Duration::from_secs(90),
        || {
            ids.iter()
                .any(|id| host.job(id)["state"] == json!("RUNNING"))
        },
    );
    host.restart(Signal::SIGKILL);

    let mut most = 0;
    wait_until(
        "every job finished after the restart",
        Duration::from_secs(180),
        || {
            most = most.max(docker::containers_of_pool(&name).len());
            ids.iter()
                .all(|id| matches!(host.job(id)["state"].as_str(), Some("SUCCEEDED" | "FAILED")))
        },
    );
    for (i, id) in ids.iter().enumerate() {
        let job = host.job(id);
        assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
        let got = lines(&host.sse(id, ""));
        assert_eq!(got.last(), Some(&format!("crash-{i}")), "{job}");
    }
    assert!(most <= 3, "never more than max, orphans included: {most}");
    wait_until(
        "the pool converges to zero containers",
        Duration::from_secs(90),
        || docker::containers_of_pool(&name).is_empty(),
    );
    let view = pool_view(&host, &name);
    assert_eq!(view["workers"], json!([]), "{view}");
}
