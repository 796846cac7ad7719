//! Artifacts: the files a pipeline step hands to the steps after it.
//!
//! A step declares `outputs`, paths relative to its work directory; once
//! its job exits 0 the agent sends each to the host, and the job succeeds
//! only if all of them arrived. A later step lists `inputs` (a step it
//! needs, and one of that step's outputs); the agent places each at the
//! same relative path in its own directory before the job starts. Here:
//! what a job carries of that, and the rules on paths (pure).

use serde::{Deserialize, Serialize};

use super::{JobId, StepProblem};

/// Most outputs one step may declare.
pub const MAX_OUTPUTS: usize = 32;
/// Longest output path, in bytes.
pub const MAX_OUTPUT_PATH: usize = 512;

/// What a job sends and receives (empty for a job outside a pipeline).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobArtifacts {
    /// Paths in its directory it must deliver when it exits 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Files it receives before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<ArtifactInput>,
}

impl JobArtifacts {
    /// True when the job neither sends nor receives anything.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.inputs.is_empty()
    }
}

/// One input: the output `output` of step `step`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInput {
    /// The step that produces it (one of the step's needs).
    pub step: String,
    /// Its path among that step's outputs (and in this job's directory).
    pub output: String,
    /// The job of `step` whose output it is, set when this job is created
    /// (that job has succeeded by then).
    #[serde(default)]
    pub from_job: Option<JobId>,
}

/// What is wrong with an output path, if anything: it must be relative,
/// without `.` or `..` components or empty ones, at most
/// [`MAX_OUTPUT_PATH`] bytes, without NUL or backslash.
pub fn check_output_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("an output path cannot be empty".into());
    }
    if path.len() > MAX_OUTPUT_PATH {
        return Err(format!("{path:?} is longer than {MAX_OUTPUT_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute: outputs are relative to the step's directory"
        ));
    }
    if path.contains(['\0', '\\']) {
        return Err(format!("{path:?} contains a NUL byte or a backslash"));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{path:?} has an empty, `.` or `..` component: outputs stay inside the step's directory"
        ));
    }
    Ok(())
}

/// A step's artifacts as submitted, for [`check_artifacts`].
#[derive(Debug, Clone, Copy)]
pub struct ArtifactShape<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it needs.
    pub needs: &'a [String],
    /// What it hands on.
    pub outputs: &'a [String],
    /// What it receives.
    pub inputs: &'a [ArtifactInput],
}

/// Checks the steps' outputs and inputs: at most [`MAX_OUTPUTS`] outputs,
/// each a good path listed once; each input from a known step that is one
/// of the step's needs, of an output that step declares, and no two files
/// landing on the same path of its directory. Every problem names its
/// step and field (`steps[1].inputs[0]`).
pub fn check_artifacts(steps: &[ArtifactShape<'_>]) -> Vec<StepProblem> {
    let mut problems = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let mut problem = |field: String, what: String| {
            problems.push(StepProblem {
                index: Some(i),
                step: Some(step.name.to_owned()),
                field,
                problem: what,
            });
        };
        if step.outputs.len() > MAX_OUTPUTS {
            problem(
                format!("steps[{i}].outputs"),
                format!("{} outputs: at most {MAX_OUTPUTS}", step.outputs.len()),
            );
        }
        for (j, output) in step.outputs.iter().enumerate() {
            if let Err(why) = check_output_path(output) {
                problem(format!("steps[{i}].outputs[{j}]"), why);
            } else if step.outputs[..j].contains(output) {
                problem(
                    format!("steps[{i}].outputs[{j}]"),
                    format!("output {output:?} is listed twice"),
                );
            }
        }
        let mut landing: Vec<&str> = Vec::new();
        for (j, input) in step.inputs.iter().enumerate() {
            let field = format!("steps[{i}].inputs[{j}]");
            let from = input.step.as_str();
            let Some(producer) = steps.iter().find(|s| s.name == from) else {
                problem(field, format!("input from unknown step {from:?}"));
                continue;
            };
            if !step.needs.iter().any(|n| n == from) {
                problem(
                    field,
                    format!("input from step {from:?}, which is not one of its needs"),
                );
            } else if !producer.outputs.contains(&input.output) {
                problem(
                    field,
                    format!("step {from:?} declares no output {:?}", input.output),
                );
            } else if landing.contains(&input.output.as_str())
                || step.outputs.contains(&input.output)
            {
                problem(
                    field,
                    format!(
                        "two files would land at {:?} in its directory",
                        input.output
                    ),
                );
            }
            landing.push(&input.output);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(step: &str, output: &str) -> ArtifactInput {
        ArtifactInput {
            step: step.into(),
            output: output.into(),
            from_job: None,
        }
    }

    #[test]
    fn inputs_come_from_declared_outputs_of_needs() {
        let (needs_a, none) = (vec!["a".to_owned()], Vec::new());
        let outputs = vec!["x".to_owned()];
        let good = [input("a", "x")];
        let bad = [
            input("zz", "x"),
            input("a", "y"),
            input("a", "x"),
            input("a", "x"),
        ];
        let shape = |name, needs, outputs, inputs| ArtifactShape {
            name,
            needs,
            outputs,
            inputs,
        };
        assert!(
            check_artifacts(&[
                shape("a", &none, &outputs, &[]),
                shape("b", &needs_a, &none, &good)
            ])
            .is_empty()
        );
        let problems = check_artifacts(&[
            shape("a", &none, &outputs, &[]),
            shape("b", &needs_a, &none, &bad),
            shape("c", &none, &none, &good),
        ]);
        let said: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.step.as_deref().unwrap_or(""), p.problem.as_str()))
            .collect();
        assert_eq!(
            said,
            [
                ("b", "input from unknown step \"zz\""),
                ("b", "step \"a\" declares no output \"y\""),
                ("b", "two files would land at \"x\" in its directory"),
                ("c", "input from step \"a\", which is not one of its needs"),
            ]
        );
        assert_eq!(problems[0].field, "steps[1].inputs[0]");
    }

    #[test]
    fn output_paths_stay_inside_the_directory() {
        for good in ["a", "dist/app.tar.gz", "x/y/z", ".hidden", "a..b"] {
            assert_eq!(check_output_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "a\0b",
        ] {
            assert!(check_output_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_output_path(&"a".repeat(513)).is_err());
    }
}
