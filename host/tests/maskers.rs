//! Masking at the host: a job run by an agent that does NOT mask (a
//! protocol-level client forwarding output untouched, `common::raw_agent`)
//! still has its secrets and well-known tokens masked before anything is
//! stored, streamed or kept, by the real masker components from plugins/.
//! Black-box: real `hodei` processes, real Wasm maskers, real bash jobs.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::raw_agent::{self, RawAgent};
use common::{Host, lines, script_for};
use serde_json::json;

/// A secret with characters every encoding changes.
const SECRET: &str = "p@ss w/rd\"Z9+k&q~7";
/// A 3-line secret (a key file, say).
const MULTI: [&str; 3] = ["first-line-AAAA", "second-line-BBBB", "third-line-CCCC"];

async fn raw(host: &Host, role: &str) -> RawAgent {
    // One slot: each job is assigned only when the previous one ended.
    raw_agent::connect(host, raw_agent::register(role, &[("role", role)], 1))
        .await
        .expect("registers")
        .0
}

/// The job's stored log (the SSE replay of a finished job), its job JSON,
/// and the host's own log.
fn everything_kept(host: &Host, id: &str) -> (Vec<String>, String, String) {
    let events = host.sse(id, "");
    let log = lines(&events);
    let sse = serde_json::to_string(&events.iter().map(|e| &e.data).collect::<Vec<_>>()).unwrap();
    let job = host.job(id).to_string();
    (log, format!("{sse}\n{job}"), host.logs())
}

/// Every form of the secrets a job might print that must not be kept.
fn forbidden() -> Vec<String> {
    let mut out = vec![SECRET.to_owned()];
    out.extend(MULTI.iter().map(|l| (*l).to_owned()));
    // base64 at three offsets, the characters that depend on the secret only.
    for prefix in ["", "x", "xy"] {
        let encoded = STANDARD.encode(format!("{prefix}{SECRET}"));
        out.push(encoded[4..encoded.len() - 4].to_owned());
    }
    let url_safe = URL_SAFE_NO_PAD.encode(SECRET);
    out.push(url_safe[4..url_safe.len() - 4].to_owned());
    out.push("p%40ss%20w%2Frd%22Z9%2Bk%26q".to_owned());
    out.push(
        serde_json::to_string(SECRET)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_from_an_agent_that_does_not_mask_are_masked_by_the_host_in_every_form() {
    let host = Host::start();
    let mut agent = raw(&host, "plain").await;
    let body = {
        let mut body = script_for(
            "plain",
            r#"
echo "whole: $S"
printf 'split: %s' "${S:0:6}"; printf '%s\n' "${S:6}"
printf 'b64-0: %s\n' "$(printf '%s' "$S" | base64 -w0)"
printf 'b64-1: %s\n' "$(printf 'x%s' "$S" | base64 -w0)"
printf 'b64-2: %s\n' "$(printf 'xy%s' "$S" | base64 -w0)"
printf 'b64url: %s\n' "$(printf '%s' "$S" | base64 -w0 | tr '+/' '-_' | tr -d '=')"
printf 'url: %s\n' "$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$S")"
printf 'json: %s\n' "$(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$S")"
printf '\e[31mcoloured: %s\e[0m\n' "$S"
printf '%s\n' "$M"
echo "one line of it: ${M#*$'\n'}" | head -1
echo done
"#,
        );
        body["secrets"] = json!({ "S": SECRET, "M": MULTI.join("\n") });
        body
    };
    let id = host.submit_ok(&body);
    let assign = agent.next_assignment().await;
    assert_eq!(assign.job_id, id);
    let sent = agent.run_unmasked(&assign, 3).await;
    // The agent really sent the secrets in clear.
    let sent_text = String::from_utf8_lossy(&sent.concat()).into_owned();
    assert!(sent_text.contains(SECRET), "{sent_text}");
    host.wait_state(&id, &["SUCCEEDED"], std::time::Duration::from_secs(30));

    let (log, api, host_log) = everything_kept(&host, &id);
    assert_eq!(
        log.len(),
        sent.len(),
        "one stored line per line sent: {log:#?}"
    );
    assert_eq!(log.last().map(String::as_str), Some("done"));
    for form in forbidden() {
        for (what, text) in [
            ("stored log", log.join("\n")),
            ("API", api.clone()),
            ("host log", host_log.clone()),
        ] {
            assert!(!text.contains(&form), "{form:?} is in the {what}:\n{text}");
        }
    }
    assert!(log[0] == "whole: ***", "{log:#?}");
    assert!(log.iter().any(|l| l.contains("coloured: ***")), "{log:#?}");
    // An agent's error string is kept as the job's reason: masked too.
    let mut failing = script_for("plain", "true");
    failing["secrets"] = json!({ "S": SECRET, "M": MULTI.join("\n") });
    failing["max_attempts"] = json!(1);
    let failing = host.submit_ok(&failing);
    let assign = agent.next_assignment().await;
    agent.fail_to_start(
        &assign,
        &format!("cannot log in with {SECRET}\nas {}", MULTI[1]),
    );
    let job = host.wait_state(&failing, &["FAILED"], std::time::Duration::from_secs(30));
    assert_eq!(
        job["reason"],
        json!("could not start: cannot log in with ***\nas ***"),
        "{job}"
    );
    assert!(!host.logs().contains(SECRET));
    let (_, maskers) = host.get("/api/v1/maskers");
    assert_eq!(
        maskers["chain"],
        json!([{"name": "literal", "config": ""}, {"name": "patterns", "config": ""}])
    );
    assert!(maskers["masking"]["lines"].as_u64().unwrap() >= sent.len() as u64);
    assert_eq!(maskers["masking"]["fallbacks"], json!(0), "{maskers}");
}

/// `hodei masker ls|use` and the REST checks of a chain.
#[tokio::test(flavor = "multi_thread")]
async fn the_chain_is_set_over_rest_and_cli_and_bad_chains_are_refused() {
    let host = Host::start();
    let (status, body) = host.set_maskers(json!([]));
    assert_eq!(status, 400, "{body}");
    common::assert_error_shape(&body, "PLUGIN_REFUSED");
    let (status, body) = host.set_maskers(json!([{"name": "nope"}]));
    assert_eq!(status, 404, "{body}");
    common::assert_error_shape(&body, "NOT_FOUND");
    let (status, body) = host.set_maskers(json!([{"name": "literal", "bogus": 1}]));
    assert!((400..500).contains(&status), "{status} {body}");
    // Nothing changed.
    let (_, maskers) = host.get("/api/v1/maskers");
    assert_eq!(maskers["chain"].as_array().unwrap().len(), 2, "{maskers}");
    let out = host.cli(&["masker", "use", "patterns"]);
    assert!(out.status.success(), "{out:?}");
    let out = host.cli(&["masker", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("chain: patterns"), "{text}");
    let (status, body) = host.delete("/api/v1/maskers/patterns");
    assert_eq!(status, 409, "{body}");
    // The choice survives a restart.
    let mut host = host;
    host.restart(nix::sys::signal::Signal::SIGTERM);
    let (_, maskers) = host.get("/api/v1/maskers");
    assert_eq!(
        maskers["chain"],
        json!([{"name": "patterns", "config": ""}])
    );
}

/// One token per pattern rule, and the rule id it must be masked with.
const TOKENS: [(&str, &str); 9] = [
    ("github-token", "ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"),
    ("github-token", "ghs_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"),
    (
        "github-pat",
        "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",
    ),
    ("aws-access-key-id", "AKIA2E3F4G5H6J7K2L3M"),
    (
        "slack-token",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    ),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ),
    (
        "hodei-api-token",
        "hodei_Y40uvSwMFLZDe1f8rESQedUStPKR0CsTy4Qwb8Dw",
    ),
    (
        "hodei-worker-token",
        "hwt_53f16947ccf25ec84d8dbc74254770f58904dba41ecccc3fc1626e53a13043b0",
    ),
    ("github-token", "gho_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"),
];

/// Look like tokens, are not: documented examples and near misses.
const NEAR_MISSES: [&str; 5] = [
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_tooShort123",
    "xghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
    "xoxb-",
    "eyJhbGciOiJIUzI1NiJ9.notajwt",
];

#[tokio::test(flavor = "multi_thread")]
async fn undeclared_tokens_and_a_private_key_across_batches_are_masked_with_their_rule() {
    let host = Host::start();
    let mut agent = raw(&host, "plain").await;
    let mut script = String::new();
    for (_, token) in TOKENS {
        script.push_str(&format!("echo 'token: {token}'\n"));
    }
    // 9 lines above; the key's BEGIN and first line end batch 1 (12
    // lines), its last line and END open batch 2; printed in 3 writes.
    script.push_str(
        "echo 'before the key'\n\
         printf '%s\\n%s\\n' '-----BEGIN PRIVATE KEY-----' 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7'\n\
         printf '%s\\n' 'VHVkZ2V0IHNlY3JldCBrZXkgbWF0ZXJpYWwgZm9yIHRoZSB0ZXN0'\n\
         printf '%s\\n' '-----END PRIVATE KEY-----'\n\
         echo 'after the key'\n\
         echo '-----BEGIN PUBLIC KEY-----'\n\
         echo 'MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE'\n\
         echo '-----END PUBLIC KEY-----'\n",
    );
    for near in NEAR_MISSES {
        script.push_str(&format!("echo 'near: {near}'\n"));
    }
    let id = host.submit_ok(&script_for("plain", &script));
    let assign = agent.next_assignment().await;
    let sent = agent.run_unmasked(&assign, 2).await;
    assert_eq!(sent.len(), 23);
    host.wait_state(&id, &["SUCCEEDED"], std::time::Duration::from_secs(30));

    // (The job JSON holds the script, tokens included: that is what the
    // user submitted, not what the job printed.)
    let (log, _, host_log) = everything_kept(&host, &id);
    let mut expected: Vec<String> = TOKENS
        .iter()
        .map(|(rule, _)| format!("token: [MASKED:{rule}]"))
        .collect();
    expected.push("before the key".into());
    expected.extend(std::iter::repeat_n("[MASKED:private-key]".to_owned(), 4));
    expected.push("after the key".into());
    expected.extend([
        "-----BEGIN PUBLIC KEY-----".to_owned(),
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE".to_owned(),
        "-----END PUBLIC KEY-----".to_owned(),
    ]);
    expected.extend(NEAR_MISSES.iter().map(|near| format!("near: {near}")));
    assert_eq!(log, expected);
    for (_, token) in TOKENS {
        assert!(!host_log.contains(token), "{token} is in the host log");
    }
}
