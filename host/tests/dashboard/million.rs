//! A job of 1,000,000 lines: opens at its tail, searched whole, and the
//! page stays small. Prints its figures (`--nocapture`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Browser, Host, ONE_BROWSER_AT_A_TIME, log_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_line_log_opens_at_its_tail_and_is_searched_whole() {
    const LINES: u64 = 1_000_000;
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let host = Host::start_with(&["--local-agents", "1"]);
    host.wait_workers(1);
    // Every 200th line holds the term: 5,000 matches. stderr is a pipe,
    // cheaper than the PTY for this many lines.
    let started = Instant::now();
    let id = host.submit_ok(&json!({
        "name": "a million lines",
        "command": format!("awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) {{ if (i % 200 == 0) print \"line \" i \" needle\"; else print \"line \" i }} }}' >&2"),
    }));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(240));
    let (_, page) = host.get(&format!("/api/v1/jobs/{id}/logs/page?tail=1"));
    assert_eq!(page["head"], json!(LINES));
    eprintln!(
        "1M lines produced and stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Opens at the tail.
    let opened = Instant::now();
    browser.goto(&host.url(&format!("/jobs/{id}"))).await;
    let tail_ms = browser
        .wait_js(
            "the last line visible",
            Duration::from_secs(30),
            "const m = performance.getEntriesByName('hodei:log-tail-visible')[0]; return m ? m.startTime : false",
        )
        .await
        .as_f64()
        .unwrap();
    let wall = opened.elapsed();
    let last = log_rows(&browser).await;
    assert_eq!(
        last.last().map(|r| (r.0, r.1.as_str())),
        Some((LINES, "line 1000000 needle"))
    );
    eprintln!(
        "time to the last line visible: {tail_ms:.0} ms from navigation start ({} ms as the test saw it)",
        wall.as_millis()
    );
    assert!(
        tail_ms < 10_000.0,
        "last line after {tail_ms} ms (aim < 1 s)"
    );

    // Search the whole log.
    browser.type_into("#log-search", "needle").await;
    browser.click("#log-search-go").await;
    let searched = browser
        .wait_js(
            "search results",
            Duration::from_secs(120),
            "const c = document.querySelector('#log-count'); return c.dataset.count !== undefined && [Number(c.dataset.count), Number(c.dataset.ms)]",
        )
        .await;
    assert_eq!(searched[0], json!(5000));
    eprintln!(
        "search: {} matches of \"needle\" in {} ms",
        searched[0], searched[1]
    );
    // The first match at or after the view, then the next ones.
    for _ in 0..3 {
        browser.click("#log-next").await;
    }
    let current = browser
        .wait_js(
            "the current match in view",
            Duration::from_secs(20),
            "const r = document.querySelector('#log-view .line.current .text'); return r && r.textContent",
        )
        .await;
    assert!(current.as_str().unwrap().ends_with(" needle"), "{current}");
    browser.screenshot("million-lines").await;

    // Top, middle, a deep link into the middle: lines load, the DOM and the
    // heap stay small. The view renders on the frame after a scroll, so
    // each wait is for the rows of the new place (`lines` are the visible
    // rows' texts), not for whatever rows were loaded before it.
    let mut figures = Vec::new();
    for (what, script, arrived) in [
        (
            "top",
            "document.querySelector('#log-view').scrollTop = 0",
            "lines.includes('line 1')",
        ),
        (
            "middle",
            "const v = document.querySelector('#log-view'); v.scrollTop = v.scrollHeight / 2",
            "lines.some(t => { const n = Number(t.split(' ')[1]); return n > 400000 && n < 600000; })",
        ),
        (
            "line 777777",
            "location.hash = '#L777777'",
            "lines.includes('line 777777')",
        ),
    ] {
        browser.js(script).await;
        browser
            .wait_js(
                &format!("lines at {what}"),
                Duration::from_secs(20),
                &format!(
                    "const v = [...document.querySelectorAll('#log-view .line:not([hidden])')]; \
                     if (!v.length || v.some(r => r.querySelector('.loading'))) return false; \
                     const lines = v.map(r => r.querySelector('.text').textContent); \
                     return ({arrived}) && lines"
                ),
            )
            .await;
        let sizes = browser
            .js("return [document.querySelectorAll('#log-view .line').length, document.getElementsByTagName('*').length, performance.memory.usedJSHeapSize]")
            .await;
        figures.push((what, sizes));
    }
    for (what, sizes) in &figures {
        let heap_mb = sizes[2].as_f64().unwrap() / 1e6;
        eprintln!(
            "at {what}: {} row elements, {} elements in the page, JS heap {heap_mb:.1} MB",
            sizes[0], sizes[1]
        );
        assert!(sizes[0].as_u64().unwrap() < 200, "{what}: {sizes}");
        assert!(heap_mb < 400.0, "{what}: heap {heap_mb} MB");
    }

    // Following a job that prints 200,000 lines flat out: the page keeps
    // up, ends on the last line, and holds at most its window in memory.
    const LIVE: u64 = 200_000;
    let id = host.submit_ok(&json!({
        "name": "fast live",
        "command": format!("sleep 2; seq 1 {LIVE}"),
    }));
    browser.goto(&host.url(&format!("/jobs/{id}"))).await;
    let followed = Instant::now();
    let end = browser
        .wait_js(
            "the last live line",
            Duration::from_secs(180),
            &format!(
                "const v = document.querySelector('#log-view'); const rows = [...v.querySelectorAll('.line:not([hidden]) .text')]; \
                 return rows.length && rows[rows.length - 1].textContent === '{LIVE}' && [Number(v.dataset.held), performance.memory.usedJSHeapSize, v.querySelectorAll('.line').length]"
            ),
        )
        .await;
    let heap_mb = end[1].as_f64().unwrap() / 1e6;
    eprintln!(
        "followed {LIVE} live lines to the last in {:.1} s: {} lines held, JS heap {heap_mb:.1} MB, {} row elements",
        followed.elapsed().as_secs_f64(),
        end[0],
        end[2]
    );
    assert!(end[0].as_u64().unwrap() <= 36_000, "{end}");
    assert!(end[2].as_u64().unwrap() < 200, "{end}");
    browser.assert_no_dialog().await;
}
