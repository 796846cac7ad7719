//! Unit tests of [`super::run_job`] with real processes on a real PTY.

use std::sync::Mutex;
use std::time::Instant;

use hodei_proto::v1::{ArgvCommand, assign_job::Command};
use tokio::sync::Notify;

use super::*;

/// Collects what a job reports.
#[derive(Default)]
struct Collected {
    pid: Mutex<Option<u32>>,
    lines: Mutex<Vec<(Stream, Vec<u8>)>>,
    changed: Notify,
}

impl JobSink for Collected {
    fn started(&self, pid: u32) {
        *self.pid.lock().expect("lock") = Some(pid);
        self.changed.notify_waiters();
    }

    fn output(&self, stream: Stream, lines: Vec<Vec<u8>>) {
        self.lines
            .lock()
            .expect("lock")
            .extend(lines.into_iter().map(|data| (stream, data)));
        self.changed.notify_waiters();
    }
}

impl Collected {
    fn lines(&self, stream: Stream) -> Vec<Vec<u8>> {
        let lines = self.lines.lock().expect("lock");
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, data)| data.clone())
            .collect()
    }

    /// Waits until `ready` holds, checking after every event.
    async fn wait_until(&self, ready: impl Fn(&Self) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if ready(self) {
                    return;
                }
                changed.await;
            }
        })
        .await
        .expect("the job never got there");
    }
}

struct Harness {
    work_dir: tempfile::TempDir,
    sink: Arc<Collected>,
    stop: watch::Sender<Option<Stop>>,
}

impl Harness {
    fn new() -> Self {
        Self {
            work_dir: tempfile::tempdir().expect("tempdir"),
            sink: Arc::default(),
            stop: watch::channel(None).0,
        }
    }

    fn config(&self, grace: Duration) -> ExecConfig {
        ExecConfig {
            work_dir: self.work_dir.path().to_path_buf(),
            cancel_grace: grace,
            artifacts: None,
        }
    }

    /// Starts the job in the background.
    fn spawn(&self, job: AssignJob, grace: Duration) -> JoinHandle<JobResult> {
        let config = self.config(grace);
        let sink: Arc<dyn JobSink> = self.sink.clone();
        let stop = self.stop.subscribe();
        tokio::spawn(async move { run_job(&config, &job, sink, stop).await })
    }

    async fn run(&self, job: AssignJob) -> JobResult {
        self.spawn(job, Duration::from_secs(1))
            .await
            .expect("job task")
    }

    fn pid(&self) -> Pid {
        let pid = self.sink.pid.lock().expect("lock").expect("started");
        Pid::from_raw(i32::try_from(pid).expect("pid"))
    }

    fn work_dir_is_empty(&self) -> bool {
        std::fs::read_dir(self.work_dir.path())
            .expect("read work dir")
            .next()
            .is_none()
    }
}

/// Tests run in parallel and each job's end kills whatever carries its id
/// (see `crate::reap`), so every job gets its own.
fn script(text: &str) -> AssignJob {
    AssignJob {
        job_id: format!("job-{}", uuid::Uuid::new_v4()),
        attempt: 3,
        command: Some(Command::Script(text.into())),
        first_sequence: 1,
        ..Default::default()
    }
}

fn exited(result: &JobResult) -> bool {
    result.outcome == i32::from(Outcome::Exited)
}

/// Whether no live process is left in the group. A killed orphan stays a
/// zombie until init reaps it (slowly, on some machines), so zombies count
/// as gone; a little time is allowed for SIGKILL to land.
async fn group_is_gone(pgid: Pid) -> bool {
    for _ in 0..100 {
        if live_members(pgid).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn live_members(pgid: Pid) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid pgrp ..."; comm may hold anything.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

#[tokio::test]
async fn echo_reaches_stdout_and_the_directory_is_removed() {
    let harness = Harness::new();
    let job = script("echo hello");
    let id = job.job_id.clone();
    let result = harness.run(job).await;
    assert!(exited(&result), "{result:?}");
    assert_eq!((result.exit_code, result.signal), (0, 0));
    assert_eq!((result.job_id.as_str(), result.attempt), (id.as_str(), 3));
    assert_eq!(harness.sink.lines(Stream::Stdout), vec![b"hello".to_vec()]);
    assert!(harness.sink.lines(Stream::Stderr).is_empty());
    assert!(harness.work_dir_is_empty(), "job directory left behind");
}

#[tokio::test]
async fn stderr_is_separate_and_the_exit_code_is_kept() {
    let harness = Harness::new();
    let result = harness.run(script("echo out\necho oops >&2\nexit 3")).await;
    assert!(exited(&result), "{result:?}");
    assert_eq!((result.exit_code, result.signal), (3, 0));
    assert_eq!(harness.sink.lines(Stream::Stderr), vec![b"oops".to_vec()]);
    assert_eq!(harness.sink.lines(Stream::Stdout), vec![b"out".to_vec()]);
}

#[tokio::test]
async fn stdout_is_a_terminal_and_colours_are_byte_exact() {
    let harness = Harness::new();
    let result = harness
        .run(script("test -t 1\nprintf '\\033[31mred\\033[0m\\n'"))
        .await;
    assert_eq!(result.exit_code, 0, "stdout is not a TTY: {result:?}");
    assert_eq!(
        harness.sink.lines(Stream::Stdout),
        vec![b"\x1b[31mred\x1b[0m".to_vec()]
    );
}

#[tokio::test]
async fn argv_env_and_secrets_reach_the_process() {
    let harness = Harness::new();
    let mut job = script("");
    job.command = Some(Command::Argv(ArgvCommand {
        args: [
            "bash",
            "-c",
            "echo \"$HODEI_JOB_ID/$HODEI_ATTEMPT/$A/$S/$1\"",
            "_",
            "it's",
        ]
        .map(String::from)
        .to_vec(),
    }));
    job.env.insert("A".into(), "plain".into());
    job.secrets.insert("S".into(), "hidden".into());
    let id = job.job_id.clone();
    let result = harness.run(job).await;
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert_eq!(
        harness.sink.lines(Stream::Stdout),
        vec![format!("{id}/3/plain/***/it's").into_bytes()],
        "the secret arrives, and is masked on its way out"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_sink_in_any_common_form() {
    const SECRET: &str = "s3cr3t-Value-42/+&\"\\x";
    const LINES: [&str; 3] = ["line-one-alpha", "line-two-bravo", "line-three-charlie"];
    let harness = Harness::new();
    let mut job = script(
        r#"printf '%s\n' "$S"
printf '%s' "${S:0:5}"; sleep 0.1; printf '%s\n' "${S:5}"
printf '%s' "$S" | base64
printf '%s' "x$S" | base64
printf '%s' "xy$S" | base64
python3 -c 'import urllib.parse,os;print(urllib.parse.quote(os.environ["S"],safe=""))'
python3 -c 'import json,os;print(json.dumps({"k":os.environ["S"]}))'
echo "err $S" >&2
printf '%s\n' "$M"
printf '%s\n' "$M" | while read -r line; do echo "line: $line"; done
echo "prefix only: s3cr3t-Val"
"#,
    );
    job.secrets.insert("S".into(), SECRET.into());
    job.secrets.insert("M".into(), LINES.join("\n"));
    let result = harness.run(job).await;
    assert_eq!(result.exit_code, 0, "{result:?}");
    let stdout = harness.sink.lines(Stream::Stdout);
    let stderr = harness.sink.lines(Stream::Stderr);
    let text = |lines: &[Vec<u8>]| {
        lines
            .iter()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect::<Vec<_>>()
    };
    let (stdout, stderr) = (text(&stdout), text(&stderr));
    let all = [stdout.clone(), stderr.clone()].concat().join("\n");
    for leaked in [SECRET, "s3cr3t-Value", "czNjcjN0LVZhbHVlLTQy"]
        .into_iter()
        .chain(LINES)
    {
        assert!(!all.contains(leaked), "{leaked:?} leaked in {all}");
    }
    assert_eq!(stdout[0], "***");
    assert_eq!(stdout[1], "***", "split across two writes");
    assert!(
        stdout[2..5].iter().all(|line| line.contains("***")),
        "{stdout:?}"
    );
    assert_eq!(stdout[5], "***", "URL-encoded");
    assert_eq!(stdout[6], r#"{"k": "***"}"#, "JSON");
    assert_eq!(stderr, vec!["err ***"]);
    assert_eq!(stdout[7], "***", "multi-line, whole");
    assert_eq!(stdout[8..11], ["line: ***", "line: ***", "line: ***"]);
    assert_eq!(stdout[11], "prefix only: s3cr3t-Val");
}

fn argv(args: &[&str]) -> AssignJob {
    let mut job = script("");
    job.command = Some(Command::Argv(ArgvCommand {
        args: args.iter().map(|arg| arg.to_string()).collect(),
    }));
    job
}

#[tokio::test]
async fn stdin_and_stdout_are_the_terminal_and_stderr_is_not() {
    let harness = Harness::new();
    let result = harness
        .run(script("test -t 0\ntest -t 1\n! test -t 2"))
        .await;
    assert_eq!(result.exit_code, 0, "{result:?}");
}

/// The PTY's master and the agent's copy of the slave are closed on exec:
/// beyond stdin and stdout, the job holds no descriptor of a terminal.
#[tokio::test]
async fn no_descriptor_of_the_pty_leaks_into_the_job() {
    let harness = Harness::new();
    let check = r#"for f in /proc/$$/fd/*; do
  n=${f##*/}; t=$(readlink "$f" || true)
  case "$n" in 0|1) continue ;; esac
  case "$t" in *ptmx*|/dev/pts/*) echo "leaked $n -> $t" ;; esac
done"#;
    let result = harness.run(script(check)).await;
    assert_eq!(result.exit_code, 0, "{result:?}");
    let leaked = harness.sink.lines(Stream::Stdout);
    assert!(
        leaked.is_empty(),
        "{:?}",
        leaked
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
}

/// Output read in gathered chunks still arrives whole and in order.
#[tokio::test]
async fn a_flood_of_lines_arrives_whole_and_in_order() {
    let harness = Harness::new();
    let result = harness.run(argv(&["seq", "200000"])).await;
    assert_eq!(result.exit_code, 0, "{result:?}");
    let lines = harness.sink.lines(Stream::Stdout);
    assert_eq!(lines.len(), 200_000);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, line)| *line == (i + 1).to_string().into_bytes())
    );
}

/// No shell sees an argv vector: every byte reaches the program as sent.
#[tokio::test]
async fn argv_reaches_the_program_byte_exact() {
    let harness = Harness::new();
    let tricky = [
        "a b",
        "it's",
        "$HOME",
        "`id`",
        "$(echo no)",
        "\"double\"",
        "back\\slash",
        "*",
        "",
    ];
    let mut args = vec!["printf", "[%s]\\n"];
    args.extend(tricky);
    let result = harness.run(argv(&args)).await;
    assert!(exited(&result) && result.exit_code == 0, "{result:?}");
    let expected: Vec<Vec<u8>> = tricky
        .iter()
        .map(|arg| format!("[{arg}]").into_bytes())
        .collect();
    assert_eq!(harness.sink.lines(Stream::Stdout), expected);
}

#[tokio::test]
async fn a_missing_program_fails_to_start() {
    let harness = Harness::new();
    let result = harness.run(argv(&["nosuchprog", "x"])).await;
    assert_eq!(
        result.outcome,
        i32::from(Outcome::FailedToStart),
        "{result:?}"
    );
    assert_eq!(result.exit_code, -1);
    assert!(
        result.error.contains("cannot start `nosuchprog`")
            && result.error.contains("No such file or directory"),
        "{result:?}"
    );
    assert!(harness.sink.pid.lock().expect("lock").is_none());
    assert!(harness.work_dir_is_empty());
}

#[tokio::test]
async fn a_job_that_cannot_start_fails_to_start() {
    let harness = Harness::new();
    let mut job = script("");
    job.command = Some(Command::Argv(ArgvCommand { args: vec![] }));
    let result = harness.run(job).await;
    assert_eq!(result.outcome, i32::from(Outcome::FailedToStart));
    assert_eq!(result.exit_code, -1);
    assert!(result.error.contains("argv is empty"), "{result:?}");
    assert!(harness.work_dir_is_empty());

    let config = ExecConfig {
        work_dir: harness.work_dir.path().join("missing"),
        cancel_grace: Duration::from_secs(1),
        artifacts: None,
    };
    let sink: Arc<dyn JobSink> = harness.sink.clone();
    let result = run_job(&config, &script("true"), sink, harness.stop.subscribe()).await;
    assert_eq!(result.outcome, i32::from(Outcome::FailedToStart));
    assert!(result.error.contains("job directory"), "{result:?}");
}

#[tokio::test]
async fn cancel_terminates_the_whole_group() {
    let harness = Harness::new();
    let job = harness.spawn(script("sleep 1000 &\nsleep 1000"), Duration::from_secs(5));
    harness
        .sink
        .wait_until(|s| s.pid.lock().expect("lock").is_some())
        .await;
    let begun = Instant::now();
    harness.stop.send_replace(Some(Stop::Cancel));
    let result = job.await.expect("job task");
    assert!(
        begun.elapsed() < Duration::from_secs(1),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(result.outcome, i32::from(Outcome::Cancelled), "{result:?}");
    assert_eq!(result.signal, 15, "{result:?}");
    assert_eq!(result.exit_code, 128 + 15);
    assert!(group_is_gone(harness.pid()).await);
    assert!(harness.work_dir_is_empty());
}

#[tokio::test]
async fn a_job_ignoring_sigterm_is_killed_after_the_grace() {
    let harness = Harness::new();
    let job = harness.spawn(
        script("trap '' TERM\necho ready\nsleep 1000"),
        Duration::from_secs(1),
    );
    harness
        .sink
        .wait_until(|s| !s.lines(Stream::Stdout).is_empty())
        .await;
    let begun = Instant::now();
    harness.stop.send_replace(Some(Stop::Cancel));
    let result = job.await.expect("job task");
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(result.outcome, i32::from(Outcome::Cancelled), "{result:?}");
    assert_eq!(result.signal, 9, "{result:?}");
    assert!(group_is_gone(harness.pid()).await);
}

#[tokio::test]
async fn a_job_past_its_timeout_is_timed_out() {
    let harness = Harness::new();
    let mut job = script("sleep 30");
    job.timeout_secs = 1;
    let begun = Instant::now();
    let result = harness.run(job).await;
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(result.outcome, i32::from(Outcome::TimedOut), "{result:?}");
    assert!(result.duration_ms >= 1000, "{result:?}");
    assert!(group_is_gone(harness.pid()).await);
    assert!(harness.work_dir_is_empty());
}

#[tokio::test]
async fn a_background_process_does_not_hang_the_agent() {
    let harness = Harness::new();
    let begun = Instant::now();
    // Holds the terminal open and survives the SIGHUP of bash's exit.
    let result = harness
        .run(script("(trap '' HUP; exec sleep 1000) &\necho done"))
        .await;
    assert!(exited(&result) && result.exit_code == 0, "{result:?}");
    assert!(begun.elapsed() < DRAIN_BOUND + Duration::from_secs(1));
    assert!(
        group_is_gone(harness.pid()).await,
        "the background sleep survived"
    );
}
