//! An XSS corpus in job names, labels, env and log lines: rendered as
//! text, no element made from it, no script run, no dialog.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Browser, Host, ONE_BROWSER_AT_A_TIME};

/// Markup and script in every place a job carries text.
const XSS: &[&str] = &[
    r#"<img src=x onerror="window.__xss=1;alert(1)">"#,
    "<script>window.__xss=2;alert(2)</script>",
    r#""><svg onload="window.__xss=3;alert(3)">"#,
    r#"<iframe src="javascript:alert(4)"></iframe>"#,
    "javascript:alert(5)",
    "&lt;b&gt;entity&lt;/b&gt; &amp;",
    "'; alert(6); '",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xss_corpus_in_names_labels_and_logs_stays_text() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let host = Host::start_with(&["--local-agents", "1"]);
    host.wait_workers(1);
    // Pending jobs, each a payload as its name and as a label value (no
    // worker has it, so the pending reason names it too).
    for payload in XSS {
        host.submit_ok(&json!({
            "name": payload, "args": ["true"], "labels": {"x": payload},
        }));
    }
    // One that runs and prints every payload, plus an OSC 8 hyperlink.
    let env: serde_json::Map<String, Value> = XSS
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("P{i}"), json!(p)))
        .collect();
    let id = host.submit_ok(&json!({
        "name": XSS[0],
        "env": env,
        "command": "for i in 0 1 2 3 4 5 6; do v=P$i; printf '%s\\n' \"${!v}\"; done\nprintf '\\e]8;;javascript:alert(7)\\e\\\\link\\e]8;;\\e\\\\\\n'",
    }));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(30));

    let inert = r#"return [document.querySelectorAll('#app img, #app script, #app svg, #app iframe, #app object, #app embed').length,
        window.__xss === undefined]"#;
    browser.goto(&host.url("/jobs")).await;
    let names = browser
        .wait_js(
            "the jobs listed",
            Duration::from_secs(10),
            "const r = [...document.querySelectorAll('#jobs-body tr td:first-child')].map(t => t.textContent); return r.length === 8 && r",
        )
        .await;
    for payload in XSS {
        assert!(names.as_array().unwrap().contains(&json!(payload)));
    }
    let labels = browser
        .js("return [...document.querySelectorAll('#jobs-body .chip')].map(c => c.textContent)")
        .await;
    for payload in XSS {
        assert!(
            labels
                .as_array()
                .unwrap()
                .contains(&json!(format!("x={payload}")))
        );
    }
    assert_eq!(browser.js(inert).await, json!([0, true]));
    browser.assert_no_dialog().await;
    browser.screenshot("xss-jobs").await;

    browser.goto(&host.url(&format!("/jobs/{id}"))).await;
    let lines = browser
        .wait_js(
            "the log",
            Duration::from_secs(10),
            "const r = [...document.querySelectorAll('#log-view .line .text')].map(t => t.textContent); return r.length === 8 && r",
        )
        .await;
    let mut expected: Vec<Value> = XSS.iter().map(|p| json!(p)).collect();
    expected.push(json!("link"));
    assert_eq!(lines, Value::Array(expected));
    assert_eq!(
        browser
            .js("return document.querySelector('#job-name').textContent")
            .await,
        json!(XSS[0])
    );
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#log-view a:not(.ln), #job-facts a').length")
            .await,
        json!(0)
    );
    assert_eq!(browser.js(inert).await, json!([0, true]));
    browser.assert_no_dialog().await;
    browser.screenshot("xss-job").await;
}
