//! A network blip: the agent's connection to the host is cut for 5 s in
//! the middle of a job, by a TCP proxy between them that this test owns.
//! The job keeps running, the agent buffers its output and reconnects,
//! and the stored log ends up with every line exactly once, in order,
//! from a job that ran once.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Agent, Host, lines, script};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that can be cut: while cut, open connections
/// are dropped and new ones are closed as soon as they are accepted.
struct Proxy {
    url: String,
    cut: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(watch::Sender::new(false));
        let control = Arc::clone(&cut);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *control.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = control.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { url, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// The last number the job appended to its progress file. The job only
/// appends (never truncates), so a read racing a write sees at worst an
/// unterminated last line, which is skipped: the answer is never a
/// spurious 0 once the job has written a line.
fn last_progress(path: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
    complete
        .lines()
        .rev()
        .find_map(|line| line.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_five_second_cut_mid_job_loses_and_repeats_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The lease outlasts the cut: the job stays the agent's.
    let host = Host::start_with(&["--lease-secs", "30"]);
    let upstream = host.grpc.trim_start_matches("http://").to_owned();
    let proxy = runtime.block_on(Proxy::start(upstream));
    let _agent = Agent::start_at(&proxy.url, "behind-proxy", "", 1, &[]);
    host.wait_workers(1);

    let dir = tempfile::tempdir().unwrap();
    let (runs, progress) = (dir.path().join("runs"), dir.path().join("progress"));
    let count = 800;
    let id = host.submit_ok(&script(&format!(
        "echo run >> {runs}\nfor i in $(seq 1 {count}); do echo \"n $i\"; echo $i >> {progress}; sleep 0.01; done",
        runs = runs.display(),
        progress = progress.display(),
    )));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));

    proxy.set_cut(true);
    let at_cut = last_progress(&progress);
    std::thread::sleep(Duration::from_secs(5));
    let at_restore = last_progress(&progress);
    proxy.set_cut(false);
    assert!(
        0 < at_cut && at_cut < at_restore && at_restore < count,
        "the cut must fall inside the job: line {at_cut} at the cut, {at_restore} at the restore"
    );

    let job = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(60));
    assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
    assert_eq!(job["attempt"], json!(1), "{job}");
    let got = lines(&host.sse(&id, ""));
    let want: Vec<String> = (1..=count).map(|i| format!("n {i}")).collect();
    assert_eq!(got.len(), want.len(), "line count");
    assert_eq!(got, want);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "ran once");
    host.wait_log("agent disconnected", Duration::from_secs(10));
    drop(proxy);
    drop(runtime);
}
