//! Job secrets are sealed before they reach the store: a copy of the redb
//! file, or a `pg_dump` of the PostgreSQL database, holds no secret value,
//! while the job that needs them still gets them. Real `hodei`, real
//! `hodei-agent`, a real PostgreSQL (scripts/postgres.sh).
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::pg::Database;
use common::{Agent, Host};
use serde_json::json;
use sha2::Digest;

const SECRETS: [&str; 3] = [
    "sealed-Value-0b1d2e",
    "second-sealed-7f7f7f",
    "third-line-of-it-AAA",
];

/// Submits two jobs that stay pending (with secrets) and one that runs and
/// proves it got its secret in clear.
fn submit(host: &Host) {
    for labels in [json!({ "pool": "nowhere" }), json!({ "pool": "nowhere-2" })] {
        host.submit_ok(&json!({
            "command": "true",
            "labels": labels,
            "secrets": { "A": SECRETS[0], "B": format!("{}\n{}", SECRETS[1], SECRETS[2]) },
        }));
    }
    // The command names the secret by its hash only, so the command itself
    // does not put the value in the store.
    let digest = format!("{:x}", sha2::Sha256::digest(SECRETS[0].as_bytes()));
    let runs = host.submit_ok(&json!({
        "command": format!("test \"$(printf %s \"$A\" | sha256sum | cut -d' ' -f1)\" = {digest}"),
        "secrets": { "A": SECRETS[0] },
    }));
    let job = host.wait_state(&runs, &["SUCCEEDED", "FAILED"], Duration::from_secs(60));
    assert_eq!(
        job["state"],
        json!("SUCCEEDED"),
        "the agent got the secret opened: {job}"
    );
}

fn assert_absent(what: &str, bytes: &[u8]) {
    for secret in SECRETS {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is in the {what}"
        );
    }
}

#[test]
fn the_redb_file_holds_no_secret_value() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a", "", 1);
    host.wait_workers(1);
    submit(&host);
    let file = std::fs::read(host.data_dir.join("hodei.redb")).unwrap();
    assert!(!file.is_empty());
    assert_absent("redb file", &file);
    let key = host.data_dir.join("secrets.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_pg_dump_holds_no_secret_value() {
    let Some(db) = Database::create("sealed") else {
        return;
    };
    let host = db.host(&[]);
    let _agent = Agent::start(&host, "a", "", 1);
    host.wait_workers(1);
    submit(&host);
    let dump = std::process::Command::new("pg_dump")
        .arg(&db.url)
        .output()
        .expect("pg_dump (Debian's postgresql-client, installed with the server)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(String::from_utf8_lossy(&dump.stdout).contains("hodei-sealed:v1:"));
    assert_absent("pg_dump", &dump.stdout);
}
