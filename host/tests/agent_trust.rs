//! An agent acts only for itself, within limits: black-box tests with a
//! protocol-level client (`common::raw_agent`) written from agent.proto,
//! against a real host and a real `hodei-agent`.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::raw_agent::{self, RawAgent};
use common::{Agent, Host, lines, script_for};
use hodei_proto::v1::{JobStarted, server_message::Msg};
use serde_json::{Value, json};

fn worker_view(host: &Host, id: &str) -> Value {
    let (_, body) = host.get("/api/v1/workers");
    body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == json!(id))
        .cloned()
        .unwrap_or_else(|| panic!("no worker {id}: {body}"))
}

#[test]
fn another_agent_cannot_log_for_finish_or_impersonate_the_holder_of_a_job() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = Host::start();
    let a = Agent::start(&host, "agent-a", "role=a", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&script_for(
        "a",
        "echo from-a; sleep 4; echo a-done; exit 3",
    ));
    let running = host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    let attempt = u32::try_from(running["attempt"].as_u64().unwrap()).unwrap();

    runtime.block_on(async {
        let (mut b, _) =
            raw_agent::connect(&host, raw_agent::register("agent-b", &[("role", "b")], 1))
                .await
                .unwrap();
        // Each forged message, one at a time: every one is refused.
        b.send(hodei_proto::v1::agent_message::Msg::JobStarted(
            JobStarted {
                job_id: id.clone(),
                attempt,
                pid: 1,
            },
        ));
        let mut reasons = vec![next_ack_or_refusal(&mut b).await.unwrap_err()];
        b.send_logs(&id, attempt, &[(2, b"forged by b")]);
        reasons.push(next_ack_or_refusal(&mut b).await.unwrap_err());
        b.send_logs(&id, attempt, &[(1_000_000, b"forged jump by b")]);
        reasons.push(next_ack_or_refusal(&mut b).await.unwrap_err());
        b.send_result(&id, attempt, 0, 1_000_000);
        reasons.push(next_ack_or_refusal(&mut b).await.unwrap_err());
        assert!(
            reasons
                .iter()
                .all(|r| r.contains("not assigned to this worker")),
            "{reasons:?}"
        );
        let later = b.drain(Duration::from_millis(500)).await;
        assert!(
            !later.iter().any(|m| matches!(m, Msg::Ack(_))),
            "nothing of b's is acknowledged: {later:?}"
        );
        assert_eq!(
            host.job(&id)["state"],
            json!("RUNNING"),
            "b did not finish a's job"
        );
        assert_eq!(worker_view(&host, &b.id)["refused_messages"], json!(4));

        // Impersonation: a's id without a's secret.
        let a_id = a.worker_id(&host);
        for secret in [String::new(), hodei_proto::new_agent_identity().0] {
            let mut claim = raw_agent::register("agent-a-impostor", &[("role", "a")], 1);
            claim.agent_id = a_id.clone();
            claim.agent_secret = secret;
            let status = raw_agent::connect(&host, claim).await.err().unwrap();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        }
        assert_eq!(
            worker_view(&host, &a_id)["connected"],
            json!(true),
            "a keeps its session"
        );

        // Repeated offences close the session.
        for _ in 0..20 {
            b.send_result(&id, attempt, 0, 0);
        }
        let status = b.closing_status().await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("refused messages"), "{status:?}");
    });

    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(done["state"], json!("FAILED"), "a's real result: {done}");
    assert_eq!(done["exit_code"], json!(3), "{done}");
    assert_eq!(lines(&host.sse(&id, "")), vec!["from-a", "a-done"]);
    let logs = host.logs();
    assert!(logs.contains("agent message refused"), "{logs}");
    assert!(logs.contains("agent registration refused"), "{logs}");
    drop(a);
}

/// A raw agent labelled `role=raw` and the job it was given.
async fn raw_agent_with_a_job(host: &Host, script: &str) -> (RawAgent, String, u32) {
    let (mut agent, _) =
        raw_agent::connect(host, raw_agent::register("raw", &[("role", "raw")], 1))
            .await
            .unwrap();
    let id = host.submit_ok(&script_for("raw", script));
    let (job_id, attempt, first) = agent
        .expect("AssignJob", |m| match m {
            Msg::AssignJob(a) => Some((a.job_id.clone(), a.attempt, a.first_sequence)),
            _ => None,
        })
        .await;
    assert_eq!((job_id.as_str(), first), (id.as_str(), 1));
    agent.send(hodei_proto::v1::agent_message::Msg::JobStarted(
        JobStarted {
            job_id: id.clone(),
            attempt,
            pid: 1,
        },
    ));
    (agent, id, attempt)
}

async fn next_ack_or_refusal(agent: &mut RawAgent) -> Result<u64, String> {
    agent
        .expect("Ack or Refused", |m| match m {
            Msg::Ack(ack) => Some(Ok(ack.log_sequence)),
            Msg::Refused(r) => Some(Err(r.reason.clone())),
            _ => None,
        })
        .await
}

#[test]
fn log_sequences_continue_densely_gaps_and_jumps_are_refused_duplicates_ignored() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = Host::start();
    let id = runtime.block_on(async {
        let (mut agent, id, attempt) = raw_agent_with_a_job(&host, "true").await;
        agent.send_logs(&id, attempt, &[(1, b"one"), (2, b"two")]);
        assert_eq!(next_ack_or_refusal(&mut agent).await, Ok(2));
        agent.send_logs(&id, attempt, &[(1, b"one"), (2, b"two")]);
        assert_eq!(
            next_ack_or_refusal(&mut agent).await,
            Ok(2),
            "duplicates ignored"
        );
        agent.send_logs(&id, attempt, &[(5, b"gap")]);
        let gap = next_ack_or_refusal(&mut agent).await.unwrap_err();
        assert!(gap.contains("expected 3, got 5"), "{gap}");
        agent.send_logs(&id, attempt, &[(3, b"three"), (1_000_000, b"jump")]);
        let jump = next_ack_or_refusal(&mut agent).await.unwrap_err();
        assert!(jump.contains("expected 4, got 1000000"), "{jump}");
        agent.send_logs(&id, attempt, &[(2, b"two"), (3, b"three")]);
        assert_eq!(next_ack_or_refusal(&mut agent).await, Ok(3));
        agent.send_result(&id, attempt, 0, 3);
        let stored = agent
            .expect("result ack", |m| match m {
                Msg::Ack(ack) if ack.result_stored => Some(ack.log_sequence),
                _ => None,
            })
            .await;
        assert_eq!(stored, 3);
        id
    });
    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(20));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    let events = host.sse(&id, "");
    assert_eq!(lines(&events), vec!["one", "two", "three"]);
    let sequences: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.data["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, vec![1, 2, 3], "the log read back is dense");
}
