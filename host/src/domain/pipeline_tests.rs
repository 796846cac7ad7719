use std::collections::BTreeMap;

use super::*;
use crate::domain::{Command, Resources};

fn spec() -> JobSpec {
    JobSpec {
        name: "s".into(),
        command: Command::Script("true".into()),
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        labels: BTreeMap::new(),
        resources: Resources::default(),
        priority: 0,
        queue: crate::domain::DEFAULT_QUEUE.to_owned(),
        timeout_secs: None,
        max_attempts: 1,
        artifacts: Default::default(),
    }
}

fn step(name: &str, needs: &[&str], on_failure: OnFailure) -> Step {
    Step {
        name: name.into(),
        needs: needs.iter().map(|n| (*n).to_owned()).collect(),
        on_failure,
        spec: spec(),
        state: StepState::Waiting,
        job_id: None,
        reason: None,
        earlier_jobs: Vec::new(),
    }
}

fn diamond(b_fails: OnFailure) -> Pipeline {
    Pipeline::new(
        "d".into(),
        vec![
            step("a", &[], OnFailure::Fail),
            step("b", &["a"], b_fails),
            step("c", &["a"], OnFailure::Fail),
            step("d", &["b", "c"], OnFailure::Fail),
        ],
        Timestamp(0),
    )
}

fn names(p: &Pipeline, advance: &Advance) -> Vec<String> {
    advance
        .create
        .iter()
        .map(|(i, _)| p.steps[*i].name.clone())
        .collect()
}

/// Ends the job of `step` with `state` and advances.
fn end(p: &mut Pipeline, step: &str, state: JobState) -> Advance {
    let job = p
        .steps
        .iter()
        .find(|s| s.name == step)
        .unwrap()
        .job_id
        .unwrap();
    p.advance(&HashMap::from([(job, state)]), Timestamp(1))
}

#[test]
fn a_diamond_runs_each_step_once_after_its_needs() {
    let mut p = diamond(OnFailure::Fail);
    let first = p.advance(&HashMap::new(), Timestamp(0));
    assert_eq!(names(&p, &first), ["a"]);
    assert_eq!(p.state, PipelineState::Pending);
    // Advancing again creates nothing new.
    assert!(p.advance(&HashMap::new(), Timestamp(0)).create.is_empty());
    let next = end(&mut p, "a", JobState::Succeeded);
    assert_eq!(names(&p, &next), ["b", "c"]);
    assert_eq!(p.state, PipelineState::Running);
    assert!(end(&mut p, "b", JobState::Succeeded).create.is_empty());
    let after_c = end(&mut p, "c", JobState::Succeeded);
    assert_eq!(names(&p, &after_c), ["d"]);
    end(&mut p, "d", JobState::Succeeded);
    assert_eq!(p.state, PipelineState::Succeeded);
    assert!(p.finished_at.is_some());
}

#[test]
fn a_failing_step_skips_its_dependents_and_fails_the_pipeline() {
    let mut p = diamond(OnFailure::Fail);
    p.advance(&HashMap::new(), Timestamp(0));
    end(&mut p, "a", JobState::Succeeded);
    let after = end(&mut p, "b", JobState::Failed);
    assert!(after.create.is_empty());
    let d = &p.steps[3];
    assert_eq!(d.state, StepState::Skipped);
    assert_eq!(d.reason.as_deref(), Some("needs \"b\", which ended FAILED"));
    // c still runs; the pipeline ends when it does.
    assert_eq!(p.state, PipelineState::Running);
    end(&mut p, "c", JobState::Succeeded);
    assert_eq!(p.state, PipelineState::Failed);
}

#[test]
fn continue_lets_dependents_run_and_the_pipeline_succeed() {
    let mut p = diamond(OnFailure::Continue);
    p.advance(&HashMap::new(), Timestamp(0));
    end(&mut p, "a", JobState::Succeeded);
    end(&mut p, "b", JobState::Failed);
    let after_c = end(&mut p, "c", JobState::Succeeded);
    assert_eq!(names(&p, &after_c), ["d"]);
    end(&mut p, "d", JobState::Succeeded);
    assert_eq!(p.state, PipelineState::Succeeded);
}

#[test]
fn skips_cascade_and_retry_reruns_only_failed_and_skipped_steps() {
    let mut p = diamond(OnFailure::Fail);
    p.advance(&HashMap::new(), Timestamp(0));
    let a_job = p.steps[0].job_id;
    end(&mut p, "a", JobState::Failed);
    assert_eq!(p.state, PipelineState::Failed);
    for s in &p.steps[1..] {
        assert_eq!(s.state, StepState::Skipped, "{}", s.name);
    }
    let moves = p.retry().unwrap();
    assert_eq!(moves.len(), 5);
    assert_eq!(p.steps[0].earlier_jobs, vec![a_job.unwrap()]);
    assert_eq!(
        names(&p, &p.clone().advance(&HashMap::new(), Timestamp(2))),
        ["a"]
    );
    // Retrying a running pipeline is refused.
    assert!(matches!(p.retry(), Err(PipelineError::NotRetryable(_))));
}

#[test]
fn retry_keeps_succeeded_steps() {
    let mut p = diamond(OnFailure::Fail);
    p.advance(&HashMap::new(), Timestamp(0));
    end(&mut p, "a", JobState::Succeeded);
    end(&mut p, "b", JobState::Succeeded);
    end(&mut p, "c", JobState::Failed);
    assert_eq!(p.state, PipelineState::Failed);
    p.retry().unwrap();
    assert_eq!(p.steps[0].state, StepState::Succeeded);
    assert_eq!(p.steps[1].state, StepState::Succeeded);
    let again = p.advance(&HashMap::new(), Timestamp(2));
    assert_eq!(names(&p, &again), ["c"]);
}

#[test]
fn cancel_skips_waiting_steps_and_ends_once_jobs_end() {
    let mut p = diamond(OnFailure::Fail);
    p.advance(&HashMap::new(), Timestamp(0));
    let jobs = p.request_cancel().unwrap();
    assert_eq!(jobs, vec![p.steps[0].job_id.unwrap()]);
    let after = p.advance(&HashMap::new(), Timestamp(1));
    assert!(after.create.is_empty());
    assert_eq!(p.steps[3].state, StepState::Skipped);
    assert_eq!(p.state, PipelineState::Pending);
    end(&mut p, "a", JobState::Cancelled);
    assert_eq!(p.state, PipelineState::Cancelled);
    assert!(matches!(p.request_cancel(), Err(PipelineError::Ended(_))));
}

fn shapes(steps: &[(&str, Vec<String>)]) -> Vec<StepProblem> {
    let shapes: Vec<StepShape<'_>> = steps
        .iter()
        .map(|(name, needs)| StepShape { name, needs })
        .collect();
    validate(&shapes)
}

fn needs(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn validation_names_the_offending_step() {
    assert_eq!(shapes(&[])[0].field, "steps");
    let dup = shapes(&[("a", needs(&[])), ("a", needs(&[]))]);
    assert_eq!(dup[0].step.as_deref(), Some("a"));
    assert_eq!(dup[0].field, "steps[1].name");
    let unknown = shapes(&[("a", needs(&["zz"]))]);
    assert_eq!(unknown[0].problem, "needs unknown step \"zz\"");
    let cycle = shapes(&[
        ("a", needs(&[])),
        ("b", needs(&["a", "d"])),
        ("c", needs(&["b"])),
        ("d", needs(&["c"])),
    ]);
    assert_eq!(cycle.len(), 1, "{cycle:?}");
    assert_eq!(cycle[0].step.as_deref(), Some("b"));
    assert_eq!(cycle[0].problem, "cycle: b → d → c → b");
    let many: Vec<(String, Vec<String>)> = (0..=MAX_STEPS)
        .map(|i| (format!("s{i}"), Vec::new()))
        .collect();
    let many: Vec<(&str, Vec<String>)> =
        many.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    assert!(shapes(&many)[0].problem.contains("at most"));
    assert_eq!(
        shapes(&[("bad name", needs(&[]))])[0].field,
        "steps[0].name"
    );
}
