//! TLS on the REST API and the agent gateway, with the CA and certificates
//! `hodei certs` writes: the CLI and agents over https, mutual TLS refusing
//! a client certificate from another CA, and a clear answer to a client
//! speaking plain HTTP to the TLS port. Real `hodei` and `hodei-agent`
//! processes on 127.0.0.1.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Host, hodei_bin};

fn certs(args: &[&str]) {
    let out = Command::new(hodei_bin())
        .arg("certs")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn cli(host: &Host, ca: &Path, args: &[&str]) -> Output {
    Command::new(hodei_bin())
        .args(["--server", &host.http, "--ca-cert"])
        .arg(ca)
        .args(args)
        .output()
        .unwrap()
}

fn tls_host(dir: &Path, extra: &[&str]) -> Host {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Host::start_with(&args)
}

#[test]
fn the_cli_and_agents_speak_tls_and_plain_http_gets_a_clear_answer() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs(&["init", "--dir", tls.to_str().unwrap()]);
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(tls.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // The local pool's agents get the CA beside the certificate.
    let host = tls_host(&tls, &["--local-agents", "1"]);
    assert!(host.http.starts_with("https://"), "{}", host.http);
    assert!(host.grpc.starts_with("https://"), "{}", host.grpc);
    let out = cli(
        &host,
        &tls.join("ca.pem"),
        &["run", "--", "echo", "hello over tls"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello over tls"
    );

    // Plain HTTP to the TLS port: a 400 saying what to do, at once.
    let plain = host.http.replace("https://", "http://");
    let started = Instant::now();
    let (status, body) = common::call("GET", &format!("{plain}/healthz"), None, common::Body::None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], serde_json::json!("TLS_REQUIRED"));
    assert!(body["message"].as_str().unwrap().contains("https://"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = Command::new(hodei_bin())
        .args(["--server", &plain, "jobs", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("https://"), "{stderr}");
    // Without the CA the CLI refuses the host's certificate.
    let out = Command::new(hodei_bin())
        .args(["--server", &host.http, "jobs", "ls"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

/// Starts an agent with TLS material; stderr is kept for the test.
fn agent(
    host: &Host,
    name: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> std::process::Child {
    let mut command = Command::new(common::agent_bin());
    command
        .args(["--server-url", &host.grpc, "--name", name, "--slots", "1"])
        .arg("--ca-cert")
        .arg(ca)
        .env("HODEI_TOKEN", common::TOKEN)
        .env("HODEI_LABELS", format!("agent={name}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((cert, key)) = client {
        command
            .arg("--client-cert")
            .arg(cert)
            .arg("--client-key")
            .arg(key);
    }
    command.spawn().unwrap()
}

#[test]
fn mutual_tls_admits_an_agent_certified_by_the_ca_and_refuses_another_cas() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    for tls in [&ours, &theirs] {
        certs(&["init", "--dir", tls.to_str().unwrap()]);
        certs(&["agent", "--name", "a1", "--dir", tls.to_str().unwrap()]);
    }
    let ca = ours.join("ca.pem");
    let host = tls_host(&ours, &["--client-ca", ca.to_str().unwrap()]);
    let mut good = agent(
        &host,
        "good",
        &ca,
        Some((&ours.join("agent-a1.pem"), &ours.join("agent-a1.key"))),
    );
    let mut stranger = agent(
        &host,
        "stranger",
        &ca,
        Some((&theirs.join("agent-a1.pem"), &theirs.join("agent-a1.key"))),
    );
    let mut anonymous = agent(&host, "anonymous", &ca, None);
    let out = cli(
        &host,
        &ca,
        &["run", "--label", "agent=good", "--", "echo", "certified"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "certified");
    std::thread::sleep(Duration::from_secs(2));
    let workers = cli(&host, &ca, &["workers"]);
    let listing = String::from_utf8_lossy(&workers.stdout);
    assert!(listing.contains("good"), "{listing}");
    assert!(
        !listing.contains("stranger") && !listing.contains("anonymous"),
        "{listing}"
    );
    for child in [&mut good, &mut stranger, &mut anonymous] {
        let _ = child.kill();
    }
    let refused = stranger.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&refused.stderr);
    assert!(
        log.contains("cannot connect") || log.contains("connection"),
        "{log}"
    );
    let _ = good.wait();
    let _ = anonymous.wait();
}
