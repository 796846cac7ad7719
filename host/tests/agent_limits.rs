//! What one agent may send is bounded: an oversized message, a 10 MB log
//! line, 100,000 labels and a job printing past its log quota are each
//! refused or cut with a clear reason, the host's memory stays bounded
//! (measured), and the host keeps serving.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::raw_agent;
use common::rss::PeakRss;
use common::{Agent, Host, lines, script_for};
use hodei_proto::v1::server_message::Msg;
use serde_json::json;

const QUOTA: u64 = 100_000;
const MAX_LINE: usize = 4096;

#[test]
fn oversized_input_is_refused_or_cut_and_the_host_stays_bounded() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = Host::start_with(&[
        "--job-log-quota-bytes",
        &QUOTA.to_string(),
        "--agent-max-line-bytes",
        &MAX_LINE.to_string(),
    ]);
    let _agent = Agent::start(&host, "real", "role=real", 1);
    host.wait_workers(1);
    let peak = PeakRss::start(vec![host.pid()]);

    runtime.block_on(async {
        // 100,000 labels in Register.
        let many = raw_agent::register("many-labels", &[], 1);
        let many = hodei_proto::v1::Register {
            labels: (0..100_000)
                .map(|i| (format!("key-{i}"), "v".into()))
                .collect(),
            ..many
        };
        let status = raw_agent::connect(&host, many).await.err().unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("100000 labels"), "{status:?}");

        // A 10 MB log line in one message, five times: over the message
        // limit, refused before it is decoded.
        for _ in 0..5 {
            let (mut agent, _) =
                raw_agent::connect(&host, raw_agent::register("big", &[("role", "none")], 1))
                    .await
                    .unwrap();
            let line = vec![b'x'; 10 * 1024 * 1024];
            agent.send_logs("0190b2c4-0000-7000-8000-000000000000", 1, &[(1, &line)]);
            let status = agent.closing_status().await;
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("agent_max_message_bytes"),
                "{status:?}"
            );
        }

        // A line over the line limit but within the message limit: cut,
        // with a note in the log line and a Refused notice to the agent.
        let (mut agent, _) =
            raw_agent::connect(&host, raw_agent::register("long", &[("role", "raw")], 1))
                .await
                .unwrap();
        let id = host.submit_ok(&script_for("raw", "true"));
        let attempt = agent
            .expect("AssignJob", |m| match m {
                Msg::AssignJob(a) => Some(a.attempt),
                _ => None,
            })
            .await;
        agent.send(hodei_proto::v1::agent_message::Msg::JobStarted(
            hodei_proto::v1::JobStarted {
                job_id: id.clone(),
                attempt,
                pid: 1,
            },
        ));
        agent.send_logs(&id, attempt, &[(1, &vec![b'y'; 20_000])]);
        let (note, acked) = (
            agent
                .expect("cut notice", |m| match m {
                    Msg::Refused(r) => Some(r.reason.clone()),
                    _ => None,
                })
                .await,
            agent
                .expect("ack", |m| match m {
                    Msg::Ack(a) => Some(a.log_sequence),
                    _ => None,
                })
                .await,
        );
        assert!(note.contains("agent_max_line_bytes"), "{note}");
        assert_eq!(acked, 1);
        agent.send_result(&id, attempt, 0, 1);
        host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
        let stored = lines(&host.sse(&id, ""));
        assert_eq!(stored.len(), 1);
        assert!(
            stored[0].starts_with(&"y".repeat(MAX_LINE)),
            "kept the head"
        );
        assert!(
            stored[0].ends_with("[hodei: line cut, 15904 bytes dropped]"),
            "{}",
            &stored[0][MAX_LINE..]
        );
    });

    // A real job printing 1 MB, ten times its quota: the log ends with the
    // marker, the job is not killed.
    let id = host.submit_ok(&script_for(
        "real",
        "for i in $(seq 1 10000); do printf '%0100d\\n' $i; done; echo finished >&2",
    ));
    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(60));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    let stored = lines(&host.sse(&id, ""));
    let marker =
        format!("[hodei] output truncated: this job's log reached its quota of {QUOTA} bytes");
    assert_eq!(stored.last(), Some(&marker), "the log ends with the marker");
    assert_eq!(stored.len(), 1001, "1000 lines of 100 bytes fit the quota");
    assert!(
        !stored.iter().any(|l| l == "finished"),
        "nothing after the marker"
    );

    // The host keeps serving.
    let id = host.submit_ok(&script_for("real", "echo still-serving"));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    assert_eq!(lines(&host.sse(&id, "")), vec!["still-serving"]);
    let peak_mib = peak.stop()[0] / (1024 * 1024);
    println!("host peak RSS: {peak_mib} MiB");
    assert!(peak_mib < 256, "host peak RSS {peak_mib} MiB");
    let logs = host.logs();
    assert!(logs.contains("agent registration refused"), "{logs}");
    assert!(logs.contains("job's log reached its quota"), "{logs}");
}

#[test]
fn with_quota_cancels_a_job_printing_forever_is_cancelled_at_its_quota() {
    let host = Host::start_with(&[
        "--job-log-quota-bytes",
        "10000",
        "--job-log-quota-cancels",
        "true",
    ]);
    let _agent = Agent::start(&host, "real", "role=real", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&script_for("real", "yes printing-forever"));
    let done = host.wait_state(
        &id,
        &["SUCCEEDED", "FAILED", "CANCELLED"],
        Duration::from_secs(60),
    );
    assert_eq!(done["state"], json!("CANCELLED"), "{done}");
    let stored = lines(&host.sse(&id, ""));
    assert_eq!(
        stored.last().map(String::as_str),
        Some("[hodei] output truncated: this job's log reached its quota of 10000 bytes")
    );
    assert!(
        stored[..stored.len() - 1]
            .iter()
            .all(|l| l == "printing-forever")
    );
}
