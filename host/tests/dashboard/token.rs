//! With REST tokens on (the default of `hodei serve`): the page's first
//! call is refused, the page asks for a token, and with it the jobs, the
//! log page and the live log (SSE with `Authorization`) come through; the
//! token stays in the tab's sessionStorage and is never rendered.

use std::time::Duration;

use serde_json::json;

use super::{Browser, Host, ONE_BROWSER_AT_A_TIME, log_rows};
use crate::common::{Body, call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_token_on_401_and_works_with_it() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let host = Host::start_with(&["--api-auth", "tokens", "--local-agents", "1"]);
    let admin = std::fs::read_to_string(host.data_dir.join("admin.token")).unwrap();
    let admin = admin.trim();
    let (status, job) = call(
        "POST",
        &host.url("/api/v1/jobs"),
        Some(admin),
        Body::Json(json!({
            "name": "behind a token",
            "command": "for i in 1 2 3; do echo \"line $i\"; done; sleep 1; echo 'line 4'",
        })),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();

    browser.goto(&host.url("/jobs")).await;
    browser
        .wait_js(
            "the token prompt",
            Duration::from_secs(10),
            "return document.querySelector('#token-dialog').open",
        )
        .await;
    browser.screenshot("token").await;
    browser.type_into("#token-input", admin).await;
    browser.click("#token-form button[value=save]").await;
    browser
        .wait_js(
            "the job listed with the token",
            Duration::from_secs(10),
            &format!("return !!document.querySelector('#jobs-body tr[data-id=\"{id}\"]')"),
        )
        .await;
    browser
        .click(&format!("#jobs-body tr[data-id=\"{id}\"] a"))
        .await;
    browser
        .wait_js(
            "the last line, live",
            Duration::from_secs(30),
            "return [...document.querySelectorAll('#log-view .line .text')].some(t => t.textContent === 'line 4')",
        )
        .await;
    let texts: Vec<String> = log_rows(&browser).await.into_iter().map(|r| r.1).collect();
    assert_eq!(texts, ["line 1", "line 2", "line 3", "line 4"]);
    let secret_tail = &admin[admin.len() - 12..];
    assert_eq!(
        browser
            .js(&format!(
                "return [sessionStorage.getItem('hodei.api-token') !== null, document.querySelector('#token-input').value, document.documentElement.outerHTML.includes('{secret_tail}')]"
            ))
            .await,
        json!([true, "", false])
    );
    browser.assert_no_dialog().await;
}
