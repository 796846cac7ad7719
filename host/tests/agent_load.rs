//! Backpressure without loss: a job printing hundreds of megabytes as fast
//! as it can while the host is away. Real `hodei` and `hodei-agent`
//! processes; the host is frozen with SIGSTOP so that it reads nothing.
//!
//! What must hold: the job is not held up by the frozen host (it finishes
//! writing while the host is still stopped: the agent keeps reading and
//! spills to disk), every byte arrives once and in order (the stored log,
//! read back through the REST logs API, equals the file the job `tee`d its
//! output into), and the agent's resident memory stays under 64 MB. The
//! peak resident memory of both processes is printed.
//!
//! Size: 200 MB; `HODEI_LOAD_MB` overrides it.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::rss::PeakRss;
use common::{Agent, Host, script};
use nix::sys::signal::Signal;
use serde_json::json;

const AGENT_RSS_LIMIT: u64 = 64 * 1024 * 1024;
/// Generous: the host holds no log in memory, but redb's page cache and
/// the allocator's arenas grow with what it writes.
const HOST_RSS_LIMIT: u64 = 1024 * 1024 * 1024;

/// What the test reads of each SSE data record (typed: a `Value` per line
/// would make reading 2.6 million lines back slow in a debug build).
#[derive(serde::Deserialize)]
struct Record<'a> {
    sequence: u64,
    #[serde(borrow)]
    line: std::borrow::Cow<'a, str>,
}

/// 200 MB: about 55 s in a debug build on this project's 2-core machine
/// (`HODEI_LOAD_MB` sets another size).
#[test]
fn a_job_printing_200_mb_while_the_host_is_away_loses_nothing() {
    load(megabytes(200));
}

fn megabytes(default: u64) -> u64 {
    std::env::var("HODEI_LOAD_MB")
        .ok()
        .and_then(|mb| mb.parse().ok())
        .unwrap_or(default)
}

fn load(mb: u64) {
    // A long lease: a frozen host's clock runs on, and the agent must not
    // count as lost when it wakes up.
    let host = Host::start_with(&["--lease-secs", "600"]);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let agent = Agent::start_env(
        &host,
        "loader",
        "",
        1,
        &[("HODEI_WORK_DIR", work.to_str().unwrap())],
    );
    host.wait_workers(1);
    let peaks = PeakRss::start(vec![agent.child.id(), host.pid()]);

    let data = dir.path().join("data");
    let done = dir.path().join("done");
    let id = host.submit_ok(&script(&format!(
        "head -c {bytes} /dev/urandom | base64 | tee {data}\ntouch {done}",
        bytes = mb * 1_000_000 * 3 / 4,
        data = data.display(),
        done = done.display(),
    )));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));

    // The host freezes; the job must still get all its output out.
    host.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    while !done.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let written_in = started.elapsed();
    host.signal(Signal::SIGCONT);
    assert!(
        done.exists(),
        "the job did not finish writing within {written_in:?} while the host was stopped"
    );

    let job = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(600));
    let delivered_in = started.elapsed();
    assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
    assert_eq!(job["attempt"], json!(1), "ran once: {job}");

    // The stored log, line by line, against the file the job wrote.
    let mut expected = BufReader::with_capacity(1 << 20, std::fs::File::open(&data).unwrap())
        .lines()
        .map(Result::unwrap);
    let (mut lines, mut bytes, mut previous) = (0_u64, 0_u64, 0_u64);
    let mut status = None;
    host.sse_raw(&id, "", |event, data| {
        if event == "done" {
            let done: serde_json::Value = serde_json::from_str(data).unwrap();
            status = Some(done["state"].clone());
            return;
        }
        let record: Record<'_> = serde_json::from_str(data).unwrap();
        assert_eq!(record.sequence, previous + 1, "dense sequences");
        previous = record.sequence;
        let want = expected
            .next()
            .unwrap_or_else(|| panic!("extra line {}: {}", record.sequence, record.line));
        assert_eq!(record.line, want, "line {}", record.sequence);
        lines += 1;
        bytes += record.line.len() as u64 + 1;
    });
    assert_eq!(status, Some(json!("SUCCEEDED")));
    assert!(expected.next().is_none(), "lines missing after {lines}");
    let file_bytes = std::fs::metadata(&data).unwrap().len();
    assert_eq!(bytes, file_bytes);

    let peaks = peaks.stop();
    let (agent_rss, host_rss) = (peaks[0], peaks[1]);
    println!(
        "{lines} lines, {file_bytes} bytes: written in {written_in:.1?} with the host stopped, \
         stored in {delivered_in:.1?}; peak RSS agent {:.1} MiB, host {:.1} MiB",
        agent_rss as f64 / 1048576.0,
        host_rss as f64 / 1048576.0
    );
    assert!(
        agent_rss > 0 && agent_rss < AGENT_RSS_LIMIT,
        "agent peak RSS {agent_rss}"
    );
    assert!(
        host_rss > 0 && host_rss < HOST_RSS_LIMIT,
        "host peak RSS {host_rss}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(leftovers.is_empty(), "left in the work dir: {leftovers:?}");
}
