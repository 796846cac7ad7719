//! A short property-based fuzz run (proptest) over sequences of
//! `AgentMessage`s sent by a registered agent to a live host, while a real
//! agent runs a job: whatever the sequence, the host does not panic, keeps
//! serving, and the other agent's job is untouched (same state, attempt
//! and log; it ends with its own result and only its own lines).
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::raw_agent;
use common::{Agent, Host, labels, lines};
use hodei_proto::v1::{
    Heartbeat, JobResult, JobStarted, JobUsage, LogBatch, LogEntry, Register, agent_message::Msg,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

/// Which job a fuzzed message names.
#[derive(Debug, Clone)]
enum Target {
    /// The real agent's running job.
    Victim,
    /// A well-formed id of no job.
    Unknown,
    /// Not an id at all.
    Garbage(String),
}

/// One fuzzed message.
#[derive(Debug, Clone)]
enum Fuzz {
    Started(Target, u32),
    Logs(Target, u32, u64, Vec<Vec<u8>>),
    Result(Target, u32, i32),
    Usage(Target, u32),
    Register,
    Empty,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => Just(Target::Victim),
        1 => Just(Target::Unknown),
        1 => ".{0,40}".prop_map(Target::Garbage),
    ]
}

fn fuzz() -> impl Strategy<Value = Fuzz> {
    let attempt = prop_oneof![Just(1u32), any::<u32>()];
    let sequence = prop_oneof![0u64..8, any::<u64>()];
    prop_oneof![
        (target(), attempt.clone()).prop_map(|(t, a)| Fuzz::Started(t, a)),
        (
            target(),
            attempt.clone(),
            sequence,
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..6)
        )
            .prop_map(|(t, a, s, l)| Fuzz::Logs(t, a, s, l)),
        (target(), attempt.clone(), any::<i32>()).prop_map(|(t, a, c)| Fuzz::Result(t, a, c)),
        (target(), attempt).prop_map(|(t, a)| Fuzz::Usage(t, a)),
        Just(Fuzz::Register),
        Just(Fuzz::Empty),
    ]
}

fn job_id(target: &Target, victim: &str) -> String {
    match target {
        Target::Victim => victim.to_owned(),
        Target::Unknown => "0190b2c4-0000-7000-8000-000000000000".to_owned(),
        Target::Garbage(s) => s.clone(),
    }
}

fn message(fuzz: &Fuzz, victim: &str) -> Option<Msg> {
    Some(match fuzz {
        Fuzz::Started(t, attempt) => Msg::JobStarted(JobStarted {
            job_id: job_id(t, victim),
            attempt: *attempt,
            pid: 7,
        }),
        Fuzz::Logs(t, attempt, first, data) => Msg::LogBatch(LogBatch {
            job_id: job_id(t, victim),
            attempt: *attempt,
            entries: data
                .iter()
                .zip(0u64..)
                .map(|(d, i)| LogEntry {
                    sequence: first.wrapping_add(i),
                    stream: 1,
                    data: d.clone(),
                    timestamp_us: 1,
                })
                .collect(),
        }),
        Fuzz::Result(t, attempt, code) => Msg::JobResult(JobResult {
            job_id: job_id(t, victim),
            attempt: *attempt,
            exit_code: *code,
            ..JobResult::default()
        }),
        Fuzz::Usage(t, attempt) => Msg::Heartbeat(Heartbeat {
            jobs: vec![JobUsage {
                job_id: job_id(t, victim),
                attempt: *attempt,
                cpu_percent: 99.0,
                memory_bytes: 1 << 40,
                processes: 3,
            }],
            ..Heartbeat::default()
        }),
        Fuzz::Register => Msg::Register(Register::default()),
        Fuzz::Empty => return None,
    })
}

#[test]
fn fuzzed_agent_messages_never_touch_another_agents_job() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = Host::start();
    let _real = Agent::start(&host, "real", "role=real", 1);
    host.wait_workers(1);
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let victim = host.submit_ok(&json!({
        "command": format!(
            "echo victim-start; while [ ! -f {} ]; do sleep 0.05; done; echo victim-end; exit 4",
            release.display()
        ),
        "labels": labels(&[("role", "real")]),
    }));
    let running = host.wait_state(&victim, &["RUNNING"], Duration::from_secs(20));
    common::wait_until("the victim's first line", Duration::from_secs(20), || {
        lines(&host.sse(&victim, "")) == ["victim-start"]
    });

    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(fuzz(), 1..40);
    runner
        .run(&strategy, |messages| {
            runtime.block_on(async {
                let register = raw_agent::register("fuzzer", &[("role", "fuzz")], 1);
                let (mut agent, _) = raw_agent::connect(&host, register).await.unwrap();
                for m in &messages {
                    match message(m, &victim) {
                        Some(msg) => agent.send(msg),
                        None => agent.send_empty(),
                    }
                }
                // Whatever came back, none of it says the victim's result or
                // lines were taken.
                for answer in agent.drain(Duration::from_millis(200)).await {
                    if let hodei_proto::v1::server_message::Msg::Ack(ack) = answer {
                        prop_assert_ne!(&ack.job_id, &victim, "an ack for the victim");
                    }
                }
                Ok(())
            })?;
            let now = host.job(&victim);
            prop_assert_eq!(&now["state"], &running["state"]);
            prop_assert_eq!(&now["attempt"], &running["attempt"]);
            prop_assert_eq!(&now["worker_id"], &running["worker_id"]);
            prop_assert_eq!(lines(&host.sse(&victim, "")), vec!["victim-start"]);
            Ok(())
        })
        .unwrap();

    std::fs::write(&release, "").unwrap();
    let done = host.wait_state(&victim, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(
        done["exit_code"],
        json!(4),
        "the victim's own result: {done}"
    );
    assert_eq!(done["attempt"], json!(1));
    assert_eq!(
        lines(&host.sse(&victim, "")),
        vec!["victim-start", "victim-end"]
    );
    let (status, _) = host.get("/api/v1/workers");
    assert_eq!(status, 200, "the host keeps serving");
}
