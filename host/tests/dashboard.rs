//! The web dashboard in a real browser: headless Chromium (Debian's
//! `chromium` + `chromium-driver`, installed by scripts/chromium.sh) driven
//! over WebDriver against a real `hodei serve` with a local agent.
//!
//! - a job submitted from the form streams its lines live, in order, red
//!   text computed red, a deep link lands on its line, and the page
//!   cancels it;
//! - an XSS corpus in job names, labels, env and log lines stays text, and
//!   no dialog fires;
//! - a job of 1,000,000 lines opens at its tail, is searched whole, and
//!   the page stays small (figures printed with `--nocapture`).
//!
//! Screenshots of every page land in target/dashboard-screenshots/ (and
//! docs/screenshots/ with `HODEI_UPDATE_SCREENSHOTS=1`). Without Chromium
//! the tests skip with a reason, except under `CI=true`, where they fail.
//! The three tests take turns (one browser at a time): they share two
//! cores with everything else.
#![allow(clippy::unwrap_used)]

#[path = "dashboard/browser.rs"]
mod browser;
mod common;
#[path = "dashboard/million.rs"]
mod million;
#[path = "dashboard/token.rs"]
mod token;
#[path = "dashboard/xss.rs"]
mod xss;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use browser::Browser;
use common::{Agent, Host};

static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A page function: the rows of the log in view that hold text,
/// `[[seq, text, classes]]`.
const ROWS_FN: &str = r#"const rows = () => [...document.querySelectorAll('#log-view .line:not([hidden])')]
    .filter(r => r.querySelector('.text'))
    .map(r => [Number(r.dataset.seq), r.querySelector('.text').textContent, r.className]);"#;
/// The rows of the log in view that hold text.
async fn log_rows(browser: &Browser) -> Vec<(u64, String, String)> {
    rows(&browser.js(&format!("{ROWS_FN} return rows();")).await)
}

fn rows(value: &Value) -> Vec<(u64, String, String)> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                r[1].as_str().unwrap().to_owned(),
                r[2].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn job_id_of(path: &Value) -> String {
    path.as_str()
        .unwrap()
        .strip_prefix("/jobs/")
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_the_form_streams_live_renders_colours_deep_links_and_cancels() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let host = Host::start_with(&["--local-agents", "1"]);
    let _labelled = Agent::start(&host, "gpu-box", "gpu=true,zone=a", 4);
    host.wait_workers(2);

    // Submit from the form.
    browser.goto(&host.url("/jobs")).await;
    browser.click("#new-job").await;
    browser.type_into("#submit-name", "live demo").await;
    // The job stops half-way until the test has seen the first half on the
    // page, so "live" is checked whatever the machine's load.
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let script = format!(
        r#"for i in $(seq 1 40); do printf '\e[31mred %d\e[0m plain\n' "$i"; sleep 0.05
  if [ "$i" = 20 ]; then while [ ! -e {go} ]; do sleep 0.05; done; fi; done
echo "key=$API_KEY greeting=$GREETING"
printf 'progress 10%%\rprogress 50%%\rprogress 100%%\n'
printf '\e[1;32mgreen from here\n'; echo 'still green'; printf '\e[0m'
echo 'to stderr' >&2
sleep 300"#,
        go = go.display()
    );
    browser.type_into("#submit-command", &script).await;
    browser.type_into("#submit-env", "GREETING=hello").await;
    browser
        .type_into("#submit-secrets", "API_KEY=supersecret-4711")
        .await;
    browser.type_into("#submit-timeout", "600").await;
    browser.screenshot("submit").await;
    browser.click("#submit-go").await;
    let path = browser
        .wait_js(
            "the job page after submit",
            Duration::from_secs(20),
            "return location.pathname.startsWith('/jobs/') && location.pathname",
        )
        .await;
    let id = job_id_of(&path);

    // Lines appear while the job runs, in order, each once.
    let half = browser
        .wait_js(
            "the first 20 lines while the job waits",
            Duration::from_secs(60),
            &format!(
                "{ROWS_FN} const r = rows(); return r.length && r[r.length - 1][0] === 20 && r"
            ),
        )
        .await;
    assert_eq!(rows(&half).last().unwrap().1, "red 20 plain");
    std::fs::write(&go, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = log_rows(&browser).await;
        for pair in now.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1, "rows out of order: {now:?}");
        }
        for (seq, text, _) in now.iter().filter(|(seq, _, _)| *seq <= 40) {
            assert_eq!(text, &format!("red {seq} plain"));
        }
        let last = now.last().map_or(0, |r| r.0);
        if last >= 45 {
            break;
        }
        assert!(Instant::now() < deadline, "lines did not arrive: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = browser
        .js("return document.querySelector('#job-state').dataset.state")
        .await;
    assert_eq!(state, json!("RUNNING"));

    // Colours: the SGR red computed red, the reset computed plain.
    let colours = browser
        .js(
            r#"const spans = document.querySelectorAll('#log-view .line[data-seq="40"] .text span');
        return [...spans].map(s => [s.textContent, getComputedStyle(s).color]);"#,
        )
        .await;
    assert_eq!(
        colours,
        json!([
            ["red 40", "rgb(220, 50, 47)"],
            [" plain", "rgb(216, 220, 228)"]
        ])
    );
    // stderr is marked; the secret is masked and appears nowhere.
    let now = log_rows(&browser).await;
    let stderr = now.iter().find(|r| r.1 == "to stderr").unwrap();
    assert!(stderr.2.contains("stderr"), "{stderr:?}");
    assert!(
        now.iter().any(|r| r.1 == "key=*** greeting=hello"),
        "{now:?}"
    );
    // `\r` overwrote the progress line; the SGR state of one line carried
    // into the next.
    assert!(now.iter().any(|r| r.1 == "progress 100%"), "{now:?}");
    let carried = browser
        .js(
            r#"return [...document.querySelectorAll('#log-view .line .text span')]
            .filter(s => s.textContent === 'still green')
            .map(s => [getComputedStyle(s).color, getComputedStyle(s).fontWeight]);"#,
        )
        .await;
    assert_eq!(carried, json!([["rgb(79, 181, 91)", "700"]]));
    let html = browser
        .js("return document.documentElement.outerHTML")
        .await;
    assert!(!html.as_str().unwrap().contains("supersecret-4711"));
    // Timestamps on and off.
    browser.click("#log-timestamps").await;
    let stamp = browser
        .wait_js(
            "timestamps shown",
            Duration::from_secs(10),
            "const t = document.querySelector('#log-view .line .ts'); return t && t.textContent",
        )
        .await;
    let stamp = stamp.as_str().unwrap();
    assert!(
        stamp.len() == 12 && stamp.as_bytes()[2] == b':' && stamp.as_bytes()[8] == b'.',
        "{stamp}"
    );
    browser.screenshot("job").await;
    browser.click("#log-timestamps").await;
    browser
        .wait_js(
            "timestamps hidden",
            Duration::from_secs(10),
            "return !document.querySelector('#log-view .line .ts')",
        )
        .await;

    // A deep link opens with its line marked, in view.
    browser.goto(&host.url(&format!("/jobs/{id}#L7"))).await;
    let in_view = browser
        .wait_js(
            "line 7 marked and in view",
            Duration::from_secs(20),
            r#"const row = document.querySelector('#log-view .line.hl[data-seq="7"]');
            if (!row || !row.querySelector('.text')) return false;
            const r = row.getBoundingClientRect(), v = document.querySelector('#log-view').getBoundingClientRect();
            return r.top >= v.top && r.bottom <= v.bottom && row.querySelector('.text').textContent;"#,
        )
        .await;
    assert_eq!(in_view, json!("red 7 plain"));
    // A click on a line number in view marks that line and keeps the view.
    let first = browser
        .js("return document.querySelector('#log-view').dataset.first")
        .await;
    browser.click(r#"#log-view .line[data-seq="9"] .ln"#).await;
    let marked = browser
        .wait_js(
            "line 9 marked",
            Duration::from_secs(10),
            r#"return location.hash === '#L9' && !!document.querySelector('#log-view .line.hl[data-seq="9"]') && document.querySelectorAll('#log-view .line.hl').length === 1 && document.querySelector('#log-view').dataset.first"#,
        )
        .await;
    assert_eq!(marked, first);

    // Workers while it runs: slots, reservations, the job's usage, labels.
    browser.goto(&host.url("/workers")).await;
    browser
        .wait_js(
            "the running job's usage on its worker",
            Duration::from_secs(20),
            &format!("return document.querySelectorAll('#workers-body tr').length === 2 && [...document.querySelectorAll('#workers-body a')].some(a => a.getAttribute('href') === '/jobs/{id}')"),
        )
        .await;
    browser.screenshot("workers").await;
    browser.goto(&host.url("/plugins")).await;
    browser
        .wait_js(
            "policies and pools",
            Duration::from_secs(10),
            "return document.querySelectorAll('#policies-body tr').length >= 3 && document.querySelectorAll('#pools-body tr').length && document.querySelectorAll('#maskers-body tr').length",
        )
        .await;
    let maskers = browser
        .js("return [...document.querySelectorAll('#maskers-body tr')].map(r => r.dataset.name)")
        .await;
    assert!(
        maskers.as_array().unwrap().contains(&json!("literal")),
        "{maskers}"
    );
    browser.screenshot("plugins").await;

    // Cancel from the job page.
    browser.goto(&host.url(&format!("/jobs/{id}"))).await;
    browser
        .wait_js(
            "the job page",
            Duration::from_secs(10),
            "return document.querySelector('#job-state').dataset.state === 'RUNNING'",
        )
        .await;
    browser.click("#job-cancel").await;
    browser
        .wait_js(
            "the page shows CANCELLED",
            Duration::from_secs(30),
            "return document.querySelector('#job-state').dataset.state === 'CANCELLED'",
        )
        .await;
    assert_eq!(host.job(&id)["state"], json!("CANCELLED"));

    // The list, filtered; the other pages.
    browser.goto(&host.url("/jobs")).await;
    browser
        .wait_js(
            "the job in the list",
            Duration::from_secs(10),
            &format!("return !!document.querySelector('#jobs-body tr[data-id=\"{id}\"][data-state=\"CANCELLED\"]')"),
        )
        .await;
    // An argv job asking for a label no worker has: it waits, and says why.
    browser.click("#new-job").await;
    browser.type_into("#submit-name", "other").await;
    browser
        .find("#submit-mode")
        .await
        .select_by_value("args")
        .await
        .unwrap();
    browser
        .type_into("#submit-command", "echo\nsame line")
        .await;
    browser.type_into("#submit-labels", "team=a").await;
    browser.click("#submit-go").await;
    let reason = browser
        .wait_js(
            "the pending reason",
            Duration::from_secs(20),
            r#"const r = document.querySelector('[data-fact="pending because"]'); return r && r.textContent"#,
        )
        .await;
    assert!(reason.as_str().unwrap().contains("team=a"), "{reason}");
    let other = job_id_of(&browser.js("return location.pathname").await);
    assert_eq!(host.job(&other)["args"], json!(["echo", "same line"]));
    browser.goto(&host.url("/jobs")).await;
    browser.type_into("#filter-name", "live").await;
    browser
        .wait_js(
            "the name filter",
            Duration::from_secs(10),
            "return document.querySelectorAll('#jobs-body tr').length === 1",
        )
        .await;
    browser.type_into("#filter-name", "").await;
    browser.type_into("#filter-label", "team=a").await;
    let names = browser
        .wait_js(
            "the label filter",
            Duration::from_secs(10),
            "const r = [...document.querySelectorAll('#jobs-body tr td:first-child')].map(t => t.textContent); return r.length === 1 && r",
        )
        .await;
    assert_eq!(names, json!(["other"]));
    browser.type_into("#filter-label", "").await;
    browser
        .wait_js(
            "both jobs listed",
            Duration::from_secs(10),
            "return document.querySelectorAll('#jobs-body tr').length === 2",
        )
        .await;
    browser.screenshot("jobs").await;
    browser.assert_no_dialog().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_render_as_a_terminal_would() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let host = Host::start();
    browser.goto(&host.url("/jobs")).await;
    // The page's own module, run in the page: text and styles per case.
    let cases = json!([
        ["10%\r50%\r100%", "plain"],
        ["abcdef\rXY", "plain"],
        ["abcdef\rXY\u{1b}[K", "plain"],
        ["a\tb", "plain"],
        ["x\u{8}y", "plain"],
        ["\u{1b}]0;title\u{7}\u{1b}]8;;https://x\u{1b}\\link\u{1b}]8;;\u{1b}\\", "plain"],
        ["\u{1b}[38;5;196mA\u{1b}[38;2;1;2;3mB\u{1b}[7mC\u{1b}[0mD", "plain"],
        ["still", {"fg": 2, "bold": true}],
        ["\u{1b}[22;39mreset", {"fg": 2, "bold": true}],
    ]);
    let rendered = browser
        .js(&format!(
            r#"return import('/assets/ansi.js').then(a => {cases}.map(([text, style]) => {{
                const r = a.renderLine(text, style === "plain" ? a.PLAIN : {{...a.PLAIN, ...style}});
                return r.segments.map(s => [s.text, s.style.fg, s.style.bold, s.style.inverse]);
            }}))"#
        ))
        .await;
    assert_eq!(
        rendered,
        json!([
            [["100%", null, false, false]],
            [["XYcdef", null, false, false]],
            [["XY", null, false, false]],
            [["a       b", null, false, false]],
            [["y", null, false, false]],
            [["link", null, false, false]],
            [
                ["A", 196, false, false],
                ["B", "rgb(1, 2, 3)", false, false],
                ["C", "rgb(1, 2, 3)", false, true],
                ["D", null, false, false]
            ],
            [["still", 2, true, false]],
            [["reset", null, false, false]],
        ])
    );
    // The style a line ends with is the next one's start.
    let carried = browser
        .js("return import('/assets/ansi.js').then(a => { const e = a.endStyle('\\u001b[1;32mgo', a.PLAIN); return [e.fg, e.bold, a.endStyle('\\u001b[0m', e) === a.PLAIN]; })")
        .await;
    assert_eq!(carried, json!([2, true, true]));
}

/// The endpoints the log view reads, over plain HTTP (no browser needed).
#[test]
fn log_page_search_and_raw_answer_by_sequence() {
    let host = Host::start_with(&["--local-agents", "1"]);
    let id = host.submit_ok(&json!({
        "command": "for i in $(seq 1 30); do if [ $((i % 10)) = 0 ]; then echo \"hit $i\"; else echo \"row $i\"; fi; done",
    }));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(30));
    let lines = |page: &Value| -> Vec<String> {
        page["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("{}:{}", l["sequence"], l["line"].as_str().unwrap()))
            .collect()
    };
    let (status, page) = host.get(&format!("/api/v1/jobs/{id}/logs/page?tail=2"));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["head"], json!(30));
    assert_eq!(lines(&page), ["29:row 29", "30:hit 30"]);
    let (_, page) = host.get(&format!("/api/v1/jobs/{id}/logs/page?after=9&limit=2"));
    assert_eq!(lines(&page), ["10:hit 10", "11:row 11"]);
    let (_, page) = host.get(&format!("/api/v1/jobs/{id}/logs/page?after=30"));
    assert_eq!(lines(&page), Vec::<String>::new());

    let (_, found) = host.get(&format!("/api/v1/jobs/{id}/logs/search?q=hit"));
    assert_eq!(
        (found["count"].clone(), found["head"].clone()),
        (json!(3), json!(30))
    );
    assert_eq!(found["matches"], json!([10, 20, 30]));
    let (status, err) = host.get(&format!("/api/v1/jobs/{id}/logs/search?q="));
    assert_eq!(
        (status, err["error"].clone()),
        (400, json!("VALIDATION_ERROR"))
    );

    let mut raw = ureq::Agent::new_with_defaults()
        .get(&host.url(&format!("/api/v1/jobs/{id}/logs/raw")))
        .call()
        .unwrap();
    assert_eq!(
        raw.headers()["content-disposition"],
        format!("attachment; filename=\"job-{id}.log\"").as_str()
    );
    let text = raw.body_mut().read_to_string().unwrap();
    assert_eq!(text.lines().count(), 30);
    assert!(text.starts_with("row 1\nrow 2\n") && text.ends_with("hit 30\n"));

    let unknown = "01234567-89ab-7def-8123-456789abcdef";
    for path in ["page", "search?q=x", "raw"] {
        let (status, _) = host.get(&format!("/api/v1/jobs/{unknown}/logs/{path}"));
        assert_eq!(status, 404, "{path}");
    }

    // The page and its assets, with a policy that runs no inline script.
    let index = ureq::Agent::new_with_defaults()
        .get(&host.url("/jobs/x"))
        .call()
        .unwrap();
    let csp = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    for asset in ["app.js", "logview.js", "app.css"] {
        let (status, _) = host.get(&format!("/assets/{asset}"));
        assert_eq!(status, 200, "{asset}");
    }
    assert_eq!(host.get("/assets/nope.js").0, 404);
}
