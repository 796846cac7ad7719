//! The `hodei:scheduler` world on the host side: compiling a policy
//! component, instantiating it with its configuration, and calling
//! `decide` with the decision's columns.
//!
//! Everything a plugin returns is checked before the scheduler sees it: a
//! list of the wrong length or a reason index out of range is an error of
//! the plugin, exactly like a trap.
//!
//! The columns a decision sends are filled by [`columns`], into buffers
//! each instance keeps.

use wasmtime::Store;
use wasmtime::component::Component;

use super::PluginError;
use super::engine::{PluginEngine, PluginState};
use crate::scheduler::policy::{Candidate, Demand, Ranking};

/// Generated bindings stay private to this module.
mod bindings {
    wasmtime::component::bindgen!({
        world: "scheduling-policy",
        path: "../wit/scheduler.wit",
    });
}

use bindings::SchedulingPolicyPre;

mod columns;
pub use columns::Columns;

/// The version of `hodei:scheduler` this host speaks (wit/scheduler.wit).
pub const WORLD_VERSION: &str = "0.3.0";

/// The `hodei:scheduler` version a component was built against, when it
/// exports the policy interface of a version other than [`WORLD_VERSION`]
/// (the export is named `hodei:scheduler/policy@VERSION`).
fn other_version(engine: &PluginEngine, component: &Component) -> Option<String> {
    component
        .component_type()
        .exports(engine.wasmtime())
        .find_map(|(name, _)| name.strip_prefix("hodei:scheduler/policy@"))
        .filter(|version| *version != WORLD_VERSION)
        .map(str::to_owned)
}

/// A failed call into a plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{function}: {message}")]
pub struct CallError {
    /// `instantiate`, `configure`, `label-keys` or `decide`.
    pub function: &'static str,
    /// Trap reason (with the wasm backtrace when there is one), what the
    /// plugin printed on stderr just before, or what was wrong with its
    /// answer.
    pub message: String,
}

/// A validated, compiled policy component, ready to instantiate.
#[derive(Clone)]
pub struct CompiledPolicy {
    name: String,
    pre: SchedulingPolicyPre<PluginState>,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A live instance: its own store, configured once, the label keys it
/// asked to see, and the column buffers its decisions reuse.
pub struct PolicyInstance {
    store: Store<PluginState>,
    bindings: bindings::SchedulingPolicy,
    label_keys: Vec<String>,
    columns: Columns,
}

impl std::fmt::Debug for PolicyInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyInstance")
    }
}

impl CompiledPolicy {
    /// Compiles `bytes` and checks it is a `hodei:scheduler` policy whose
    /// imports this host can satisfy.
    pub fn new(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let component = engine.compile(bytes)?;
        let instance_pre = engine.linker().instantiate_pre(&component).map_err(|e| {
            PluginError::Invalid(format!("it needs imports this host does not offer: {e:#}"))
        })?;
        let pre = SchedulingPolicyPre::new(instance_pre).map_err(|e| {
            match other_version(engine, &component) {
                Some(found) => PluginError::WorldVersion {
                    found,
                    supported: WORLD_VERSION.to_owned(),
                },
                None => PluginError::Invalid(format!(
                    "not a scheduling policy (world hodei:scheduler/scheduling-policy@{WORLD_VERSION}): {e:#}"
                )),
            }
        })?;
        Ok(Self {
            name: name.to_owned(),
            pre,
        })
    }

    /// A new instance, configured with `config`.
    pub fn instantiate(
        &self,
        engine: &PluginEngine,
        config: &str,
    ) -> Result<PolicyInstance, CallError> {
        let mut store = engine.store(&self.name);
        engine.arm(&mut store);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| failure(&store, "instantiate", &e))?;
        engine.arm(&mut store);
        match bindings
            .hodei_scheduler_policy()
            .call_configure(&mut store, config)
        {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                return Err(CallError {
                    function: "configure",
                    message: format!("configuration refused: {refused}"),
                });
            }
            Err(e) => return Err(failure(&store, "configure", &e)),
        }
        engine.arm(&mut store);
        let label_keys = bindings
            .hodei_scheduler_policy()
            .call_label_keys(&mut store)
            .map_err(|e| failure(&store, "label-keys", &e))?;
        Ok(PolicyInstance {
            store,
            bindings,
            label_keys,
            columns: Columns::default(),
        })
    }
}

pub(super) fn failure(
    store: &Store<PluginState>,
    function: &'static str,
    error: &wasmtime::Error,
) -> CallError {
    let mut message = if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
    {
        "ran past its deadline and was interrupted".to_owned()
    } else {
        // `{:#}`: the cause chain with the wasm backtrace, not the host's.
        format!("{error:#}")
    };
    let printed = store.data().take_stderr();
    if !printed.is_empty() {
        message = format!("{}\n{message}", printed.join("\n"));
    }
    CallError { function, message }
}

impl PolicyInstance {
    /// `decide` over `candidates`: a verdict per worker and a score per
    /// accepted one, checked for shape, or an error.
    pub fn decide(
        &mut self,
        engine: &PluginEngine,
        demand: &Demand<'_>,
        candidates: &[Candidate],
    ) -> Result<Ranking, CallError> {
        self.columns.fill(demand, candidates, &self.label_keys);
        engine.arm(&mut self.store);
        let answer = self
            .bindings
            .hodei_scheduler_policy()
            .call_decide(
                &mut self.store,
                self.columns.demand(),
                self.columns.workers(),
            )
            .map_err(|e| failure(&self.store, "decide", &e))?;
        let ranking = Ranking {
            verdicts: answer.verdicts,
            reasons: answer.reasons,
            scores: answer.scores,
        };
        check(&ranking, candidates.len()).map_err(|message| CallError {
            function: "decide",
            message,
        })?;
        Ok(ranking)
    }

    /// The plugin's own name for itself.
    pub fn name(&mut self, engine: &PluginEngine) -> Result<String, CallError> {
        engine.arm(&mut self.store);
        self.bindings
            .hodei_scheduler_policy()
            .call_name(&mut self.store)
            .map_err(|e| failure(&self.store, "name", &e))
    }
}

/// Whether `ranking` is a well-formed answer over `workers` candidates:
/// one verdict each, each naming a reason that exists, one score per
/// accepted worker.
fn check(ranking: &Ranking, workers: usize) -> Result<(), String> {
    if ranking.verdicts.len() != workers {
        return Err(format!(
            "returned {} verdicts for {workers} workers",
            ranking.verdicts.len()
        ));
    }
    let reasons = ranking.reasons.len();
    // One pass: the highest verdict, and how many accepted.
    let (highest, accepted) = ranking
        .verdicts
        .iter()
        .fold((0u32, 0usize), |(highest, accepted), &k| {
            (highest.max(k), accepted + usize::from(k == 0))
        });
    if highest as usize > reasons {
        return Err(format!(
            "verdict {highest} names no reason ({reasons} reasons given)"
        ));
    }
    if ranking.scores.len() != accepted {
        return Err(format!(
            "returned {} scores for {accepted} accepted workers",
            ranking.scores.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::domain::{Resources, WorkerId, WorkerMetrics};
    use crate::plugins::{Limits, PolicyRegistry, Source, in_tree};
    use crate::scheduler::policy::{Decision, PolicySource, WorkerLabels, decide};

    fn engine() -> PluginEngine {
        // Generous: a debug build on a busy machine.
        let limits = Limits {
            deadline: Duration::from_secs(5),
            ..Limits::default()
        };
        PluginEngine::new(limits, None).unwrap()
    }

    fn component(file: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(in_tree::PLUGIN_DIR).join(file)).unwrap()
    }

    pub(super) fn worker(id: &str, tier: &str) -> Candidate {
        let capacity = Resources {
            cpu_millis: 4000,
            memory_mb: 8192,
        };
        Candidate {
            worker: WorkerId(id.into()),
            labels: Arc::new(WorkerLabels::new(
                [("tier".to_owned(), tier.to_owned())].into(),
            )),
            capacity,
            free: capacity,
            slots: 4,
            free_slots: 4,
            metrics: WorkerMetrics::default(),
        }
    }

    pub(super) fn demand<'a>(
        labels: &'a BTreeMap<String, String>,
        priority: i32,
        queue: &'a str,
    ) -> Demand<'a> {
        Demand {
            labels,
            resources: Resources::default(),
            priority,
            queue,
        }
    }

    #[test]
    fn a_malformed_ranking_is_the_plugins_error() {
        let ranking = |verdicts: &[u32], reasons: &[&str], scores: &[i64]| Ranking {
            verdicts: verdicts.to_vec(),
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            scores: scores.to_vec(),
        };
        assert_eq!(check(&ranking(&[0, 1, 0], &["full"], &[5, 6]), 3), Ok(()));
        assert_eq!(
            check(&ranking(&[0, 1], &["full"], &[5]), 3),
            Err("returned 2 verdicts for 3 workers".to_owned())
        );
        assert_eq!(
            check(&ranking(&[0, 2, 0], &["full"], &[5, 6]), 3),
            Err("verdict 2 names no reason (1 reasons given)".to_owned())
        );
        assert_eq!(
            check(&ranking(&[0, 1, 0], &["full"], &[5]), 3),
            Err("returned 1 scores for 2 accepted workers".to_owned())
        );
    }

    #[test]
    fn the_world_version_is_the_wit_packages() {
        let wit = include_str!("../../../../wit/scheduler.wit");
        assert!(
            wit.contains(&format!("package hodei:scheduler@{WORLD_VERSION};")),
            "WORLD_VERSION ({WORLD_VERSION}) is not wit/scheduler.wit's package version"
        );
    }

    /// The real tier-fixture component (plugins/tier-fixture) through the
    /// registry, as a scheduling round calls it: its placement follows the
    /// job's priority and queue, which it could not with a constant
    /// priority or no queue.
    #[test]
    fn a_plugin_places_by_the_jobs_priority_and_queue() {
        let registry = PolicyRegistry::new(engine());
        registry
            .load(
                "tier-fixture",
                &component("hodei_policy_tier_fixture.wasm"),
                Source::Uploaded,
            )
            .unwrap();
        registry.activate("tier-fixture", "").unwrap();
        let policy = registry.current();
        let workers = [
            worker("a", "standard"),
            worker("b", "slow"),
            worker("c", "fast"),
        ];
        let labels = BTreeMap::new();
        for (priority, queue, expected) in [
            (0, "default", "a"),
            (9, "default", "a"),
            (10, "default", "c"),
            (50, "web", "c"),
            (0, "batch", "b"),
            (50, "batch", "b"),
        ] {
            assert_eq!(
                decide(policy.as_ref(), &demand(&labels, priority, queue), &workers),
                Decision::Place(WorkerId(expected.into())),
                "priority {priority}, queue {queue}"
            );
        }
        let view = registry
            .views()
            .into_iter()
            .find(|v| v.name == "tier-fixture")
            .unwrap();
        assert_eq!(
            view.health.errors, 0,
            "the plugin decided, not the fallback"
        );
    }

    /// `binpack` with its exports renamed to `hodei:scheduler@0.1.0` (same
    /// length, so the binary stays valid): what a component built against
    /// the previous WIT exports.
    #[test]
    fn a_component_of_another_world_version_is_refused_naming_both_versions() {
        let mut bytes = component("hodei_policy_binpack.wasm");
        let mut renamed = 0;
        for interface in ["policy", "types"] {
            let from = format!("hodei:scheduler/{interface}@{WORLD_VERSION}");
            let to = format!("hodei:scheduler/{interface}@0.1.0");
            assert_eq!(from.len(), to.len());
            let mut at = 0;
            while let Some(found) = bytes[at..]
                .windows(from.len())
                .position(|w| w == from.as_bytes())
            {
                let start = at + found;
                bytes[start..start + to.len()].copy_from_slice(to.as_bytes());
                at = start + to.len();
                renamed += 1;
            }
        }
        assert!(
            renamed > 0,
            "binpack exports hodei:scheduler@{WORLD_VERSION}"
        );
        let err = CompiledPolicy::new(&engine(), "old", &bytes).unwrap_err();
        match &err {
            PluginError::WorldVersion { found, supported } => {
                assert_eq!(
                    (found.as_str(), supported.as_str()),
                    ("0.1.0", WORLD_VERSION)
                );
            }
            other => panic!("expected WorldVersion, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("hodei:scheduler@0.1.0") && message.contains("rebuild"),
            "{message}"
        );
    }
}
