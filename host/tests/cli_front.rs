//! The `hodei` front binary against a real host: the job it submits for
//! `run` is the job `hodei-host` submits for the same command line, a
//! followed job prints and exits the same, errors read the same, Ctrl-C
//! cancels, and every other command line reaches `hodei-host` (same
//! process, same exit code).
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Agent, Host, hodei_bin, host_bin};
use serde_json::{Value, json};

/// `args` run by `program` against `host` (plus `env`).
fn cli(program: &std::path::Path, host: &Host, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .env("HODEI_SERVER", &host.http)
        .envs(env.iter().copied())
        .output()
        .expect("run a hodei binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The job a detached submit printed the id of.
fn submitted(host: &Host, out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let id = text(&out.stdout);
    let id = id.trim_end();
    assert!(!id.is_empty() && !id.contains('\n'), "stdout: {id:?}");
    host.job(id)
}

/// What a job's submitter asked for (what the two binaries must agree on).
fn spec(job: &Value) -> Value {
    let fields = [
        "name",
        "args",
        "command",
        "env",
        "labels",
        "priority",
        "queue",
        "resources",
        "timeout_secs",
        "max_attempts",
    ];
    let mut spec = json!({});
    for field in fields {
        spec[field] = job[field].clone();
    }
    // Secret values are never served back; their names are.
    spec["secrets"] = job["secret_names"].clone();
    spec
}

#[test]
fn a_detached_submit_makes_the_job_hodei_host_makes_and_it_runs() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let args = [
        "run",
        "--detach",
        "--name",
        "twin",
        "--priority",
        "-3",
        "-e",
        "GREETING=two words",
        "--env",
        "N=1",
        "--secret",
        "TOKEN_X=hidden",
        "--secret",
        "FROM_SHELL",
        "--timeout",
        "30",
        "--cpu-millis",
        "100",
        "--memory-mb",
        "64",
        "--max-attempts",
        "2",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING $N\"",
    ];
    let env = [("FROM_SHELL", "from-the-shell")];
    let front = submitted(&host, &cli(&hodei_bin(), &host, &args, &env));
    let full = submitted(&host, &cli(&host_bin(), &host, &args, &env));
    assert_ne!(front["id"], full["id"]);
    assert_eq!(spec(&front), spec(&full));
    assert_eq!(front["name"], json!("twin"));
    assert_eq!(front["priority"], json!(-3));
    assert_eq!(front["env"]["GREETING"], json!("two words"));

    for job in [&front, &full] {
        let id = job["id"].as_str().unwrap();
        host.wait_state(id, &["SUCCEEDED"], Duration::from_secs(30));
        let lines: Vec<Value> = host
            .sse(id, "")
            .into_iter()
            .filter(|e| e.event != "done")
            .map(|e| e.data["line"].clone())
            .collect();
        assert_eq!(lines, vec![json!("two words 1")], "job {id}");
    }

    // A script, a label and a queue left out: the same job again.
    let args = ["run", "-d", "-l", "zone=z1", "-c", "echo from a script"];
    let front = submitted(&host, &cli(&hodei_bin(), &host, &args, &[]));
    let full = submitted(&host, &cli(&host_bin(), &host, &args, &[]));
    assert_eq!(spec(&front), spec(&full));
    assert_eq!(front["command"], json!("echo from a script"));
    assert_eq!(front["labels"], json!({ "zone": "z1" }));
}

#[test]
fn the_front_fails_as_hodei_host_does() {
    let host = Host::start_with(&["--queue-weights", "batch=1"]);
    // `exact`: the whole of stderr is the same, not just `needle` in both.
    let same = |args: &[&str], env: &[(&str, &str)], code: i32, needle: &str, exact: bool| {
        let front = cli(&hodei_bin(), &host, args, env);
        let full = cli(&host_bin(), &host, args, env);
        for out in [&front, &full] {
            assert_eq!(
                out.status.code(),
                Some(code),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains(needle),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        if exact {
            assert_eq!(text(&front.stderr), text(&full.stderr), "{args:?}");
        }
    };
    // Refused by the host: the API's error, word for word.
    same(
        &["run", "--detach", "--queue", "nope", "--", "true"],
        &[],
        125,
        "HTTP 400",
        true,
    );
    // Nothing to run; a secret named but not in this shell.
    same(&["run", "--detach"], &[], 125, "nothing to run", true);
    same(
        &[
            "run",
            "--detach",
            "--secret",
            "HODEI_TEST_UNSET_X",
            "--",
            "true",
        ],
        &[],
        125,
        "--secret HODEI_TEST_UNSET_X: no such variable",
        true,
    );
    // No host there (the causes below that line are each HTTP stack's
    // own words).
    same(
        &[
            "run",
            "--detach",
            "--server",
            "http://127.0.0.1:1",
            "--",
            "true",
        ],
        &[],
        125,
        "hodei: cannot reach the hodei server at http://127.0.0.1:1 (set --server or HODEI_SERVER): ",
        false,
    );
    // A token no header can carry.
    same(
        &["run", "--detach", "--token", "a\u{1}b", "--", "true"],
        &[],
        125,
        "the API token has characters a header cannot carry",
        true,
    );
    // A flag the command does not have: clap's own error, from
    // `hodei-host` (the front does not answer what it does not parse).
    same(
        &["run", "--detach", "--bogus", "--", "true"],
        &[],
        2,
        "--bogus",
        true,
    );
    let (_, jobs) = host.get("/api/v1/jobs");
    assert_eq!(jobs["jobs"], json!([]), "a failed submit stored a job");
}

#[test]
fn the_front_finds_the_token_its_host_left_and_sends_a_given_one() {
    let config = tempfile::tempdir().unwrap();
    let xdg = config.path().to_str().unwrap();
    let host = Host::start_with_env(&["--api-auth", "tokens"], &[("XDG_CONFIG_HOME", xdg)]);
    // The token the host left for its port, found by the front.
    let out = cli(
        &hodei_bin(),
        &host,
        &["run", "--detach", "--", "true"],
        &[("XDG_CONFIG_HOME", xdg)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Without it: refused, as by `hodei-host`.
    for program in [hodei_bin(), host_bin()] {
        let out = cli(
            &program,
            &host,
            &["run", "--detach", "--token", "not-a-token", "--", "true"],
            &[("XDG_CONFIG_HOME", xdg)],
        );
        assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("HTTP 401"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn every_other_command_line_reaches_hodei_host() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    host.wait_workers(1);
    // Commands the front does not do, answered by `hodei-host`.
    let out = cli(&hodei_bin(), &host, &["--version"], &[]);
    assert_eq!(
        text(&out.stdout),
        format!("hodei {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = cli(&hodei_bin(), &host, &["workers"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("a1"), "{}", text(&out.stdout));
    // Usage errors name what the user typed.
    let out = cli(&hodei_bin(), &host, &["no-such-command"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no-such-command"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("Usage: hodei"),
        "{}",
        text(&out.stderr)
    );

    // Without `hodei-host` beside it, the front says what is missing.
    let alone = tempfile::tempdir().unwrap();
    let front = alone.path().join("hodei");
    std::fs::copy(hodei_bin(), &front).unwrap();
    let out = cli(&front, &host, &["workers"], &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("hodei-host` holds every command but `run`"),
        "{}",
        text(&out.stderr)
    );
    // Its own `run` does not need it.
    let out = cli(&front, &host, &["run", "--detach", "--", "true"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = cli(&front, &host, &["run", "--", "echo", "alone"], &[]);
    assert_eq!(text(&out.stdout), "alone\n", "{}", text(&out.stderr));
}

#[test]
fn a_followed_run_prints_and_exits_as_hodei_host_does() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    // (args, exit code); stdout and stderr must be the same from both,
    // with the job's id (which differs) written as ID.
    let cases: [(&[&str], i32); 4] = [
        (
            &[
                "run",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; echo more; exit 3",
            ],
            3,
        ),
        (
            &["run", "--script", "for i in 1 2 3; do echo line $i; done"],
            0,
        ),
        (&["run", "--timeout", "1", "--", "sleep", "30"], 124),
        (&["run", "--", "/no/such/program"], 1),
    ];
    for (args, code) in cases {
        let mut seen = Vec::new();
        for program in [hodei_bin(), host_bin()] {
            let out = cli(&program, &host, args, &[]);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{program:?} {args:?}: {}",
                text(&out.stderr)
            );
            let (_, jobs) = host.get("/api/v1/jobs?limit=1");
            let id = jobs["jobs"][0]["id"].as_str().unwrap().to_owned();
            seen.push((text(&out.stdout), text(&out.stderr).replace(&id, "ID")));
        }
        assert_eq!(seen[0], seen[1], "{args:?}");
    }
    // The timed-out run said why on stderr (the same words from both).
    let out = cli(
        &hodei_bin(),
        &host,
        &["run", "--timeout", "1", "--", "sleep", "30"],
        &[],
    );
    assert!(
        text(&out.stderr).contains("TIMED_OUT: ran past its timeout"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ctrl_c_cancels_the_followed_job() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    for program in [hodei_bin(), host_bin()] {
        let mut child = Command::new(&program)
            .args(["run", "--", "sh", "-c", "echo started; sleep 60"])
            .env("HODEI_SERVER", &host.http)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Interrupted only once the job printed (it runs, and the run
        // follows it).
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        assert_eq!(first, "started\n", "{program:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{program:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("hodei: cancelling job"),
            "{}",
            text(&out.stderr)
        );
        let (_, jobs) = host.get("/api/v1/jobs?limit=1");
        assert_eq!(jobs["jobs"][0]["state"], json!("CANCELLED"));
    }
}

#[test]
fn a_submit_over_the_tokens_rate_waits_and_goes_through() {
    let config = tempfile::tempdir().unwrap();
    let xdg = config.path().to_str().unwrap();
    // One submit per second, a burst of one.
    let host = Host::start_with_env(
        &["--api-auth", "tokens", "--api-submit-rate", "1"],
        &[("XDG_CONFIG_HOME", xdg)],
    );
    for program in [hodei_bin(), host_bin()] {
        let started = std::time::Instant::now();
        for _ in 0..2 {
            let out = cli(
                &program,
                &host,
                &["run", "--detach", "--", "true"],
                &[("XDG_CONFIG_HOME", xdg)],
            );
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
        // The bucket was empty for one of the two: a 429 with
        // `Retry-After: 1`, waited for, then accepted.
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{}: two submits in {:?} at one per second",
            program.display(),
            started.elapsed()
        );
    }
}
