//! Pools: named sets of workers one provider creates on demand.
//!
//! A pool is declared in the config file (`[[pools]]`) or over REST
//! (`POST /api/v1/pools`), in one shape, [`PoolSpec`]. Everything that can
//! be checked without running anything is checked by
//! [`PoolSpec::validate`]; what needs the provider (its imports against the
//! pool's grants, its own reading of the configuration) is checked when
//! the pool is started, before it is accepted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::integral;
use crate::plugins::provider::Capability;

/// Most workers one pool may have.
pub const MAX_POOL_WORKERS: u32 = 1000;

/// One pool, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "docker-small", "provider": "docker", "config": "image=hodei-worker:0.1.0",
    "grants": ["docker"], "labels": {"size": "small"}, "min": 0, "max": 4}))]
pub struct PoolSpec {
    /// Unique name, `[a-z0-9-]`, e.g. `docker-small`.
    pub name: String,
    /// The provider: an in-tree one (`local`, `docker`) by name.
    pub provider: String,
    /// The provider's configuration (its own syntax; the in-tree providers
    /// take `key=value` words, e.g. `image=hodei-worker:0.1.0`).
    #[serde(default)]
    pub config: String,
    /// Host capabilities the provider may use (`process`, `docker`,
    /// `kubernetes`). Nothing else is linked.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Labels the pool's workers announce, on top of what the provider
    /// offers; jobs are matched against both.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Workers kept even without demand.
    #[serde(default, deserialize_with = "integral::deserialize")]
    pub min: u32,
    /// Most workers at once.
    #[serde(deserialize_with = "integral::deserialize")]
    pub max: u32,
    /// Job slots per worker.
    #[serde(default = "one", deserialize_with = "integral::deserialize")]
    pub slots: u32,
    /// Seconds a worker may stay idle above `min` before it is drained and
    /// destroyed.
    #[serde(default = "default_idle", deserialize_with = "integral::deserialize")]
    pub idle_timeout_secs: u64,
    /// One job per worker: the worker is destroyed after it.
    #[serde(default)]
    pub ephemeral: bool,
    /// Seconds a created worker has to register before it is destroyed
    /// and replaced; also the life of its one-time token.
    #[serde(
        default = "default_registration",
        deserialize_with = "integral::deserialize"
    )]
    pub registration_timeout_secs: u64,
}

fn one() -> u32 {
    1
}

fn default_idle() -> u64 {
    30
}

fn default_registration() -> u64 {
    60
}

/// A pool that cannot be accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool {pool:?}: {problem}")]
pub struct PoolError {
    /// The pool's name as given.
    pub pool: String,
    /// What is wrong, saying which field.
    pub problem: String,
}

impl PoolSpec {
    /// A local pool of exactly `count` agents with `slots` each (what
    /// `serve --local-agents N` declares).
    pub fn local(count: u32, slots: Option<u32>) -> Self {
        Self {
            name: "local".into(),
            provider: "local".into(),
            config: String::new(),
            grants: vec![Capability::Process.name().into()],
            labels: BTreeMap::new(),
            min: count,
            max: count,
            slots: slots.unwrap_or(0),
            idle_timeout_secs: default_idle(),
            ephemeral: false,
            registration_timeout_secs: default_registration(),
        }
    }

    fn error(&self, problem: impl Into<String>) -> PoolError {
        PoolError {
            pool: self.name.clone(),
            problem: problem.into(),
        }
    }

    /// Checks what can be checked without the provider. `known` lists the
    /// providers this host has.
    pub fn validate(&self, known: &[&str]) -> Result<(), PoolError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(self.error("name: 1 to 40 characters of a-z, 0-9 and -"));
        }
        if !known.contains(&self.provider.as_str()) {
            return Err(self.error(format!(
                "provider: unknown provider {:?} (known: {})",
                self.provider,
                known.join(", ")
            )));
        }
        if self.min > self.max {
            return Err(self.error(format!(
                "min ({}) is greater than max ({})",
                self.min, self.max
            )));
        }
        if self.max > MAX_POOL_WORKERS {
            return Err(self.error(format!("max: at most {MAX_POOL_WORKERS}")));
        }
        if self.ephemeral && self.slots > 1 {
            return Err(self.error("slots: an ephemeral pool runs one job per worker (slots 1)"));
        }
        // Labels reach the agent as `--labels k=v,k2=v2`.
        if let Some((k, v)) = self.labels.iter().find(|(k, v)| {
            k.is_empty() || k.contains([',', '=']) || v.contains(',') || k.len() + v.len() > 256
        }) {
            return Err(self.error(format!(
                "labels: {k:?} = {v:?}: keys must be non-empty without ',' or '=', values without ','"
            )));
        }
        if self.registration_timeout_secs == 0 {
            return Err(self.error("registration_timeout_secs must be at least 1"));
        }
        self.capabilities().map(drop)
    }

    /// The granted capabilities, parsed.
    pub fn capabilities(&self) -> Result<Vec<Capability>, PoolError> {
        self.grants
            .iter()
            .map(|g| {
                [
                    Capability::Process,
                    Capability::Docker,
                    Capability::Kubernetes,
                ]
                .into_iter()
                .find(|c| c.name() == g)
                .ok_or_else(|| {
                    self.error(format!(
                        "grants: unknown capability {g:?} (process, docker, kubernetes)"
                    ))
                })
            })
            .collect()
    }

    /// Whether a job asking for `labels` may run on this pool's workers,
    /// given what the provider `offered` on top of the pool's own labels.
    pub fn serves(&self, labels: &BTreeMap<String, String>, offered: &[(String, String)]) -> bool {
        labels.iter().all(|(k, v)| {
            self.labels.get(k) == Some(v) || offered.iter().any(|(ok, ov)| ok == k && ov == v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PoolSpec {
        PoolSpec {
            name: "docker-small".into(),
            provider: "docker".into(),
            config: "image=hodei-worker:0.1.0".into(),
            grants: vec!["docker".into()],
            labels: [("size".to_owned(), "small".to_owned())].into(),
            min: 0,
            max: 3,
            slots: 1,
            idle_timeout_secs: 30,
            ephemeral: false,
            registration_timeout_secs: 60,
        }
    }

    const KNOWN: &[&str] = &["local", "docker"];

    #[test]
    fn bad_pools_say_which_field() {
        assert_eq!(spec().validate(KNOWN), Ok(()));
        let problem = |s: PoolSpec| s.validate(KNOWN).unwrap_err().problem;
        assert!(
            problem(PoolSpec {
                provider: "nomad".into(),
                ..spec()
            })
            .contains("unknown provider")
        );
        assert!(problem(PoolSpec { min: 4, ..spec() }).contains("min (4) is greater than max (3)"));
        assert!(
            problem(PoolSpec {
                name: "Bad Name".into(),
                ..spec()
            })
            .starts_with("name")
        );
        assert!(
            problem(PoolSpec {
                grants: vec!["root".into()],
                ..spec()
            })
            .contains("unknown capability")
        );
        assert!(
            problem(PoolSpec {
                ephemeral: true,
                slots: 2,
                ..spec()
            })
            .contains("ephemeral")
        );
    }

    #[test]
    fn a_pool_serves_jobs_whose_labels_it_or_its_provider_offers() {
        let offered = vec![("arch".to_owned(), "x86_64".to_owned())];
        let want = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert!(spec().serves(&want(&[]), &offered));
        assert!(spec().serves(&want(&[("size", "small"), ("arch", "x86_64")]), &offered));
        assert!(!spec().serves(&want(&[("size", "large")]), &offered));
        assert!(!spec().serves(&want(&[("gpu", "true")]), &offered));
    }

    #[test]
    fn pools_read_from_toml_with_defaults() {
        let spec: PoolSpec =
            toml::from_str("name = \"p\"\nprovider = \"local\"\nmax = 2\ngrants = [\"process\"]\n")
                .unwrap();
        assert_eq!((spec.min, spec.slots, spec.idle_timeout_secs), (0, 1, 30));
        assert!(
            toml::from_str::<PoolSpec>("name = \"p\"\nprovider = \"local\"\nmax = 2\nmaxx = 3\n")
                .is_err()
        );
    }
}
