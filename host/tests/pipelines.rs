//! Pipelines: DAGs of jobs over real hosts and agents. Steps write marker
//! files (start and end times, appended) so the tests see how often and
//! in which order each step really ran, not only what the API says.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::pipeline::{self, assert_once_in_order, marked, overlapped, runs, step};
use common::{Agent, Host, assert_error_shape};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);

fn body(mark: &std::path::Path, steps: &[Value]) -> Value {
    json!({ "name": "t", "env": { "MARK": mark.to_str().unwrap() }, "steps": steps })
}

#[test]
fn a_diamond_runs_each_step_once_after_its_needs_and_b_c_together() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    let mark = tempfile::tempdir().unwrap();
    // b and c wait for each other's start: they can only both end when
    // they run at the same time (the step timeout ends a serial run).
    let steps = vec![
        marked("a", &[], "true"),
        marked("b", &["a"], "until [ -e \"$MARK/c\" ]; do sleep 0.05; done"),
        marked("c", &["a"], "until [ -e \"$MARK/b\" ]; do sleep 0.05; done"),
        marked("d", &["b", "c"], "true"),
    ];
    let mut with_timeout = steps.clone();
    for s in &mut with_timeout {
        s["timeout_secs"] = json!(60);
    }
    let id = pipeline::create_ok(&host, &body(mark.path(), &with_timeout));
    let done = pipeline::wait(&host, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    for name in ["a", "b", "c", "d"] {
        let s = step(&done, name);
        assert_eq!(s["state"], json!("SUCCEEDED"), "{done}");
        let job = host.job(s["job_id"].as_str().unwrap());
        assert_eq!(job["name"], json!(format!("t/{name}")));
    }
    assert_once_in_order(mark.path(), &pipeline::needs_of(&steps));
    let runs = runs(mark.path());
    assert!(overlapped(runs["b"][0], runs["c"][0]), "{runs:?}");
}

/// A small deterministic generator (the seed is printed on failure).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn a_random_dag_of_50_steps_runs_each_once_in_order_and_in_parallel() {
    let seed = std::env::var("HODEI_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (HODEI_TEST_SEED to repeat)");
    let mut rng = Lcg(seed);
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 8);
    host.wait_workers(1);
    let mark = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    for i in 0..50u64 {
        let mut needs: Vec<String> = Vec::new();
        // The first three are roots; later ones need up to 3 earlier steps.
        if i >= 3 {
            for _ in 0..=rng.next(3) {
                let need = format!("s{}", rng.next(i));
                if !needs.contains(&need) {
                    needs.push(need);
                }
            }
        }
        let needs: Vec<&str> = needs.iter().map(String::as_str).collect();
        steps.push(marked(&format!("s{i}"), &needs, "sleep 0.3"));
    }
    // Given in a shuffled order: the engine must not lean on it.
    for i in (1..steps.len()).rev() {
        steps.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let id = pipeline::create_ok(&host, &body(mark.path(), &steps));
    let done = pipeline::wait(
        &host,
        &id,
        &["SUCCEEDED", "FAILED"],
        Duration::from_secs(300),
    );
    assert_eq!(done["state"], json!("SUCCEEDED"), "seed {seed}: {done}");
    let needs = pipeline::needs_of(&steps);
    assert_once_in_order(mark.path(), &needs);
    // Parallel where allowed: some two steps neither of which needs the
    // other (transitively) ran at the same time. The three roots are
    // created together, so at least they may.
    let runs = runs(mark.path());
    let roots: Vec<_> = ["s0", "s1", "s2"].iter().map(|r| runs[*r][0]).collect();
    assert!(
        overlapped(roots[0], roots[1])
            || overlapped(roots[0], roots[2])
            || overlapped(roots[1], roots[2]),
        "seed {seed}: no two roots ran together: {roots:?}"
    );
}

#[test]
fn fail_skips_dependents_continue_runs_them_and_retry_reruns_only_failed_and_skipped() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    let mark = tempfile::tempdir().unwrap();
    let fixed = mark.path().join("fixed");
    let marks = tempfile::tempdir().unwrap();
    // b fails until the file `fixed` exists (its end is marked either
    // way, then it exits with the verdict).
    let steps = |on_failure: &str| {
        let mut b = marked(
            "b",
            &["a"],
            &format!("ok=0; test -e {} || ok=1", fixed.display()),
        );
        let command = format!("{}\nexit $ok", b["command"].as_str().unwrap());
        b["command"] = json!(command);
        b["on_failure"] = json!(on_failure);
        vec![
            marked("a", &[], "true"),
            b,
            marked("c", &["b"], "true"),
            marked("d", &["a"], "true"),
        ]
    };
    let id = pipeline::create_ok(&host, &body(marks.path(), &steps("fail")));
    let failed = pipeline::wait(&host, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(failed["state"], json!("FAILED"), "{failed}");
    assert_eq!(step(&failed, "b")["state"], json!("FAILED"));
    assert_eq!(step(&failed, "c")["state"], json!("SKIPPED"));
    assert_eq!(
        step(&failed, "c")["reason"],
        json!("needs \"b\", which ended FAILED")
    );
    assert_eq!(step(&failed, "c")["job_id"], Value::Null);
    assert_eq!(step(&failed, "d")["state"], json!("SUCCEEDED"));
    let before = runs(marks.path());
    assert!(!before.contains_key("c"), "a skipped step never runs");

    // Retry once b can pass: b and c run, a and d keep their results.
    std::fs::write(&fixed, "").unwrap();
    let (status, retried) = common::post_json(
        &host.url(&format!("/api/v1/pipelines/{id}/retry")),
        &json!({}),
    );
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["retries"], json!(1));
    let done = pipeline::wait(&host, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    let after = runs(marks.path());
    assert_eq!(after["a"].len(), 1, "a kept: {after:?}");
    assert_eq!(after["d"].len(), 1, "d kept: {after:?}");
    assert_eq!(after["b"].len(), 2, "b rerun: {after:?}");
    assert_eq!(
        after["c"].len(),
        1,
        "c ran once, after the retry: {after:?}"
    );
    assert_eq!(
        step(&done, "b")["earlier_jobs"].as_array().unwrap().len(),
        1
    );
    assert_eq!(step(&done, "a")["earlier_jobs"], json!([]));
    // A succeeded pipeline is not retried.
    let (status, refused) = common::post_json(
        &host.url(&format!("/api/v1/pipelines/{id}/retry")),
        &json!({}),
    );
    assert_eq!(status, 409, "{refused}");
    assert_error_shape(&refused, "ILLEGAL_TRANSITION");

    // With `continue`, b's failure lets c run and the pipeline succeed.
    std::fs::remove_file(&fixed).unwrap();
    let marks = tempfile::tempdir().unwrap();
    let id = pipeline::create_ok(&host, &body(marks.path(), &steps("continue")));
    let done = pipeline::wait(&host, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    assert_eq!(step(&done, "b")["state"], json!("FAILED"));
    assert_eq!(step(&done, "c")["state"], json!("SUCCEEDED"));
    assert_once_in_order(marks.path(), &pipeline::needs_of(&steps("continue")));
}

#[test]
fn cancel_cascades_to_running_and_waiting_steps_and_events_tell_it() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let marks = tempfile::tempdir().unwrap();
    let steps = vec![marked("a", &[], "sleep 600"), marked("b", &["a"], "true")];
    let id = pipeline::create_ok(&host, &body(marks.path(), &steps));
    common::wait_until("a runs", LONG, || runs(marks.path()).contains_key("a"));
    let (status, cancelled) = common::post_json(
        &host.url(&format!("/api/v1/pipelines/{id}/cancel")),
        &json!({}),
    );
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["cancel_requested"], json!(true));
    let done = pipeline::wait(&host, &id, &["CANCELLED"], LONG);
    assert_eq!(step(&done, "a")["state"], json!("CANCELLED"), "{done}");
    assert_eq!(step(&done, "b")["state"], json!("SKIPPED"), "{done}");
    assert_eq!(
        step(&done, "b")["reason"],
        json!("the pipeline was cancelled")
    );
    let (status, again) = common::post_json(
        &host.url(&format!("/api/v1/pipelines/{id}/cancel")),
        &json!({}),
    );
    assert_eq!(status, 409, "{again}");
    let (status, list) = host.get("/api/v1/pipelines?state=cancelled");
    assert_eq!(status, 200);
    assert_eq!(list["pipelines"][0]["id"], json!(id));

    // The event log holds every transition of the pipeline and its steps.
    let events = pipeline::events(&host, "kind=pipeline&follow=false");
    let seen: Vec<(String, Option<String>, String)> = events
        .iter()
        .filter(|e| e.data["pipeline_id"] == json!(id))
        .map(|e| {
            (
                e.event.clone(),
                e.data["step"].as_str().map(str::to_owned),
                e.data["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has = |kind: &str, step: Option<&str>, state: &str| {
        seen.contains(&(kind.to_owned(), step.map(str::to_owned), state.to_owned()))
    };
    assert!(has("pipeline.created", None, "PENDING"), "{seen:?}");
    assert!(
        has("pipeline.step_changed", Some("a"), "PENDING"),
        "{seen:?}"
    );
    assert!(
        has("pipeline.step_changed", Some("a"), "CANCELLED"),
        "{seen:?}"
    );
    assert!(
        has("pipeline.step_changed", Some("b"), "SKIPPED"),
        "{seen:?}"
    );
    assert!(has("pipeline.finished", None, "CANCELLED"), "{seen:?}");
    let finished = seen.iter().filter(|e| e.0 == "pipeline.finished").count();
    assert_eq!(finished, 1, "{seen:?}");
}

#[test]
fn bad_pipelines_are_refused_naming_the_step_and_nothing_is_stored() {
    let host = Host::start();
    let step =
        |name: &str, needs: &[&str]| json!({ "name": name, "needs": needs, "command": "true" });
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({ "steps": [] }), "steps", ""),
        (
            json!({ "steps": [step("a", &["c"]), step("b", &["a"]), step("c", &["b"])] }),
            "steps[0].needs",
            "a",
        ),
        (
            json!({ "steps": [step("a", &["nope"])] }),
            "steps[0].needs",
            "a",
        ),
        (
            json!({ "steps": [step("a", &[]), step("a", &[])] }),
            "steps[1].name",
            "a",
        ),
        (
            json!({ "steps": [step("a", &["a"])] }),
            "steps[0].needs",
            "a",
        ),
        (
            json!({ "steps": [step("a", &[]), { "name": "b", "command": "" }] }),
            "steps[1].command",
            "b",
        ),
        (
            json!({ "steps": (0..501).map(|i| step(&format!("s{i}"), &[])).collect::<Vec<_>>() }),
            "steps",
            "",
        ),
    ];
    for (body, field, named) in cases {
        let (status, answer) = pipeline::create(&host, &body);
        assert_eq!(status, 400, "{answer}");
        assert_error_shape(&answer, "VALIDATION_ERROR");
        let problem = &answer["details"][0];
        assert_eq!(problem["field"], json!(field), "{answer}");
        if !named.is_empty() {
            assert_eq!(problem["step"], json!(named), "{answer}");
        }
    }
    let (status, cycle) = pipeline::create(
        &host,
        &json!({ "steps": [step("a", &["c"]), step("b", &["a"]), step("c", &["b"])] }),
    );
    assert_eq!(status, 400);
    assert_eq!(
        cycle["details"][0]["problem"],
        json!("cycle: a → c → b → a")
    );
    let (_, list) = host.get("/api/v1/pipelines");
    assert_eq!(list["pipelines"], json!([]));
    let (_, jobs) = host.get("/api/v1/jobs");
    assert_eq!(jobs["jobs"], json!([]));
    let (status, missing) = host.get("/api/v1/pipelines/0193a5e2-7c4b-7d3e-9f21-4b8e2a1c6d0f");
    assert_eq!(status, 404);
    assert_error_shape(&missing, "NOT_FOUND");
}

#[test]
fn the_cli_runs_a_toml_pipeline_printing_each_step_s_lines_and_exits_by_its_outcome() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci.toml");
    std::fs::write(
        &file,
        r#"
name = "ci"
env = { GREETING = "hello" }

[[steps]]
name = "build"
command = "echo $GREETING from build"

[[steps]]
name = "test"
needs = ["build"]
command = "echo testing; echo oops >&2"
"#,
    )
    .unwrap();
    let out = host.cli(&["pipeline", "run", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("[build] hello from build"), "{stdout}");
    assert!(stdout.contains("[test] testing"), "{stdout}");
    assert!(stderr.contains("[test] oops"), "{stderr}");
    assert!(stderr.contains("SUCCEEDED"), "{stderr}");

    std::fs::write(
        &file,
        "[[steps]]\nname = \"a\"\ncommand = \"exit 3\"\n\n[[steps]]\nname = \"b\"\nneeds = [\"a\"]\ncommand = \"true\"\n",
    )
    .unwrap();
    let out = host.cli(&["pipeline", "run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs \"a\", which ended FAILED"),
        "{stderr}"
    );
    let out = host.cli(&["pipeline", "ls", "--state", "failed"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));

    // A bad file is refused by the host with the step named, exit 125.
    std::fs::write(
        &file,
        "[[steps]]\nname = \"a\"\nneeds = [\"a\"]\ncommand = \"true\"\n",
    )
    .unwrap();
    let out = host.cli(&["pipeline", "run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("a step cannot need itself"), "{stderr}");
}

#[test]
fn a_yaml_pipeline_runs_and_its_own_event_stream_tells_each_transition_then_ends() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci.yml");
    std::fs::write(
        &file,
        "name: ci\nenv:\n  GREETING: hello\nsteps:\n  - name: build\n    command: echo $GREETING from yaml\n  \
         - name: test\n    needs: [build]\n    command: echo tested\n",
    )
    .unwrap();
    let out = host.cli(&["pipeline", "run", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("[build] hello from yaml"), "{stdout}");
    assert!(stdout.contains("[test] tested"), "{stdout}");
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("pipeline "))
        .unwrap_or_else(|| panic!("no pipeline id in {stderr}"))
        .trim()
        .to_owned();

    // Followed (the default), the pipeline's stream ends by itself after
    // its end, and holds only its own transitions, in order.
    let events = pipeline::sse_until_end(&host, &format!("/api/v1/pipelines/{id}/events"));
    let seen: Vec<(String, Option<String>, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.data["pipeline_id"], json!(id), "{:?}", e.data);
            (
                e.event.clone(),
                e.data["step"].as_str().map(str::to_owned),
                e.data["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let at = |kind: &str, step: Option<&str>, state: &str| {
        seen.iter()
            .position(|(k, s, st)| k == kind && s.as_deref() == step && st == state)
            .unwrap_or_else(|| panic!("no {kind} {step:?} {state} in {seen:?}"))
    };
    assert_eq!(at("pipeline.created", None, "PENDING"), 0, "{seen:?}");
    at("pipeline.step_changed", Some("build"), "SUCCEEDED");
    at("pipeline.step_changed", Some("test"), "SUCCEEDED");
    assert_eq!(
        at("pipeline.finished", None, "SUCCEEDED"),
        seen.len() - 1,
        "{seen:?}"
    );

    // A malformed YAML file is the CLI's error, naming the file; nothing
    // reaches the host.
    std::fs::write(&file, "steps: [unclosed\n").unwrap();
    let out = host.cli(&["pipeline", "run", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("is not YAML"), "{stderr}");
    let (_, list) = host.get("/api/v1/pipelines");
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1, "{list}");

    // An unknown pipeline has no stream.
    let (status, missing) =
        host.get("/api/v1/pipelines/0193a5e2-7c4b-7d3e-9f21-4b8e2a1c6d0f/events");
    assert_eq!(status, 404);
    assert_error_shape(&missing, "NOT_FOUND");
}
