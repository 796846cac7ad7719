//! Bad input gets the right status and the one JSON error shape, and
//! nothing already stored is lost or changed.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::{Agent, Host, TOKEN, assert_error_shape, post_raw, script};
use hodei_proto::v1::agent_service_client::AgentServiceClient;
use hodei_proto::v1::{AgentMessage, Register, agent_message};
use serde_json::json;

fn stored_snapshot(host: &Host) -> serde_json::Value {
    host.get("/api/v1/jobs?limit=1000").1
}

#[test]
fn bad_bodies_get_400_413_415_with_the_error_shape_and_change_nothing() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    let done = host.submit_ok(&script("echo kept"));
    host.wait_state(&done, &["SUCCEEDED"], Duration::from_secs(20));
    let pending = host.submit_ok(&json!({ "args": ["true"], "labels": { "never": "matches" } }));
    let before = stored_snapshot(&host);
    let url = host.url("/api/v1/jobs");

    let (status, body) = post_raw(&url, "application/json", b"{\"command\": \"echo".to_vec());
    assert_eq!(status, 400);
    assert_error_shape(&body, "MALFORMED_JSON");

    let (status, body) = host.submit(&json!({ "name": "no command" }));
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");
    assert_eq!(body["details"][0]["field"], json!("command"));

    let (status, body) = host.submit(&json!({ "command": "true", "priority": "high" }));
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");
    assert!(
        body["message"].as_str().unwrap().contains("priority"),
        "{body}"
    );

    let (status, body) = host.submit(&json!({ "command": ["not", "a", "string"] }));
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");

    let (status, body) =
        host.submit(&json!({ "command": "true", "resources": { "cpu_millis": -5 } }));
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");
    assert!(
        body["message"].as_str().unwrap().contains("cpu_millis"),
        "{body}"
    );

    let (status, body) = host.submit(&json!({ "command": "true", "comand": "typo" }));
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");

    let (status, body) = host.submit(&json!({ "command": "true", "secrets": { "K": "short" } }));
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");

    // 2 MiB: refused from its Content-Length, before the body is sent (a
    // client that writes it all first races the server's close).
    let (status, body) = common::post_announced(&url, "application/json", 2 << 20);
    assert_eq!(status, 413);
    assert_error_shape(&body, "PAYLOAD_TOO_LARGE");

    let (status, body) = post_raw(&url, "text/plain", b"{\"command\":\"true\"}".to_vec());
    assert_eq!(status, 415);
    assert_error_shape(&body, "UNSUPPORTED_MEDIA_TYPE");

    let (status, body) = host.get("/api/v1/jobs?limit=nope");
    assert_eq!(status, 400);
    assert_error_shape(&body, "INVALID_QUERY");

    let (status, body) = host.get("/api/v1/jobs?state=weird");
    assert_eq!(status, 400);
    assert_error_shape(&body, "VALIDATION_ERROR");

    // One vocabulary: the filter is `state`, like the job's field; the old
    // name is an unknown parameter, not silently ignored.
    let (status, body) = host.get("/api/v1/jobs?status=pending");
    assert_eq!(status, 400);
    assert_error_shape(&body, "INVALID_QUERY");

    assert_eq!(stored_snapshot(&host), before, "nothing stored changed");
    assert_eq!(host.job(&pending)["state"], json!("PENDING"));
}

#[test]
fn unknown_ids_get_404_and_finished_jobs_refuse_cancel_with_409() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    for path in [
        "/api/v1/jobs/0190b2c4-0000-7000-8000-000000000000",
        "/api/v1/jobs/not-a-uuid",
        "/api/v1/jobs/0190b2c4-0000-7000-8000-000000000000/logs",
        "/api/v1/nothing-here",
    ] {
        let (status, body) = host.get(path);
        assert_eq!(status, 404, "{path}");
        assert_error_shape(&body, "NOT_FOUND");
    }
    let (status, body) = host.cancel("0190b2c4-0000-7000-8000-000000000000");
    assert_eq!(status, 404);
    assert_error_shape(&body, "NOT_FOUND");

    let id = host.submit_ok(&script("echo done"));
    let finished = host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    let (status, body) = host.cancel(&id);
    assert_eq!(status, 409);
    assert_error_shape(&body, "ILLEGAL_TRANSITION");
    assert_eq!(host.job(&id), finished, "the finished job is unchanged");

    let (status, body) = host.delete("/api/v1/jobs");
    assert_eq!(status, 405);
    assert_error_shape(&body, "METHOD_NOT_ALLOWED");
}

#[test]
fn an_agent_with_a_wrong_token_is_unauthenticated_and_logged() {
    let host = Host::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let code = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(host.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = AgentServiceClient::new(channel);
        let register = AgentMessage {
            msg: Some(agent_message::Msg::Register(Register {
                protocol_version: 1,
                agent_id: "intruder".into(),
                slots: 1,
                ..Register::default()
            })),
        };
        let mut request = tonic::Request::new(futures::stream::iter(vec![register]));
        request
            .metadata_mut()
            .insert("authorization", "Bearer not-the-token".parse().unwrap());
        client.connect(request).await.unwrap_err().code()
    });
    assert_eq!(code, tonic::Code::Unauthenticated);

    // The real agent binary with a bad token gives up and says why.
    let out = std::process::Command::new(common::agent_bin())
        .args(["--server-url", &host.grpc, "--token", "wrong-token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (_, workers) = host.get("/api/v1/workers");
    assert_eq!(workers["workers"], json!([]), "no worker registered");
    host.wait_log(
        "agent rejected: bad or missing token",
        Duration::from_secs(10),
    );
    assert!(
        !host.logs().contains(TOKEN),
        "the real token is never logged"
    );
}
