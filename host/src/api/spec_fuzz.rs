//! Property-based fuzzing of the job-spec parser: any JSON (biased toward
//! `SubmitJob`'s own field names, so deep fields are reached) and any bytes
//! either fail to parse or parse into a body whose validation gives a spec
//! that keeps the model's rules or a 400 listing its problems. Never a
//! panic. The same parser serves `POST /api/v1/jobs` and each item of
//! `POST /api/v1/jobs/batch`.
//!
//! Cases: `PROPTEST_CASES` (CI runs the default 256 per property; a longer
//! run: `PROPTEST_CASES=1000000 cargo test -p hodei --lib spec_fuzz`).

use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::jobs::{MIN_SECRET_LEN, SubmitJob};
use crate::domain::Command;

const FIELDS: [&str; 11] = [
    "name",
    "command",
    "args",
    "env",
    "secrets",
    "labels",
    "resources",
    "priority",
    "timeout_secs",
    "max_attempts",
    "unknown",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        Just(Value::from("a\0b")),
        Just(Value::from("x".repeat(MIN_SECRET_LEN))),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("[A-Za-z_0-9]{0,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Value> {
    proptest::collection::vec((proptest::sample::select(&FIELDS[..]), json()), 0..8).prop_map(
        |pairs| {
            let mut map = Map::new();
            for (key, value) in pairs {
                map.insert(key.to_owned(), value);
            }
            Value::Object(map)
        },
    )
}

fn check(parsed: Result<SubmitJob, serde_json::Error>) {
    let Ok(body) = parsed else { return };
    match body.into_spec() {
        Ok(spec) => {
            assert!((1..=100).contains(&spec.max_attempts));
            assert_ne!(spec.timeout_secs, Some(0));
            match &spec.command {
                Command::Script(script) => {
                    assert!(!script.trim().is_empty() && !script.contains('\0'));
                }
                Command::Args(args) => {
                    assert!(!args[0].is_empty() && args.iter().all(|a| !a.contains('\0')));
                }
            }
            assert!(spec.secrets.values().all(|v| v.len() >= MIN_SECRET_LEN));
            assert!(spec.secrets.keys().all(|k| !spec.env.contains_key(k)));
        }
        Err(error) => {
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            let problems = error.details.as_array().expect("details list problems");
            assert!(!problems.is_empty());
            assert!(
                problems
                    .iter()
                    .all(|p| p["field"].is_string() && p["problem"].is_string())
            );
        }
    }
}

proptest! {
    #[test]
    fn any_json_body_parses_into_a_valid_spec_or_a_400(value in body()) {
        check(serde_json::from_value::<SubmitJob>(value));
    }

    #[test]
    fn any_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(serde_json::from_slice::<SubmitJob>(&bytes));
    }
}
