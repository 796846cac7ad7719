//! The `hodei:scheduler` world on the host side: compiling a policy
//! component, instantiating it with its configuration, and calling
//! `filter` / `score` with the decision's columns.
//!
//! Everything a plugin returns is checked before the scheduler sees it: a
//! list of the wrong length or a reason index out of range is an error of
//! the plugin, exactly like a trap.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::Component;

use super::PluginError;
use super::engine::{PluginEngine, PluginState};
use crate::scheduler::policy::{Candidate, Demand, Verdict};

/// Generated bindings stay private to this module.
mod bindings {
    wasmtime::component::bindgen!({
        world: "scheduling-policy",
        path: "../wit/scheduler.wit",
    });
}

use bindings::SchedulingPolicyPre;
use bindings::hodei::scheduler::types::{Demand as WitDemand, LabelColumn, Workers as WitWorkers};

/// The version of `hodei:scheduler` this host speaks (wit/scheduler.wit).
pub const WORLD_VERSION: &str = "0.2.0";

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
    /// `instantiate`, `configure`, `filter` or `score`.
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

/// A live instance: its own store, configured once, and the label keys it
/// asked to see.
pub struct PolicyInstance {
    store: Store<PluginState>,
    bindings: bindings::SchedulingPolicy,
    label_keys: Vec<String>,
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

/// The decision's inputs as WIT values: columns of numbers, plus one id
/// column per label key the policy asked for.
pub fn columns(
    demand: &Demand<'_>,
    workers: &[&Candidate],
    label_keys: &[String],
) -> (WitDemand, WitWorkers) {
    let labels: Vec<(&String, &String)> = demand.labels.iter().collect();
    let wit_demand = WitDemand {
        labels: labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cpu_millis: demand.resources.cpu_millis,
        memory_mb: demand.resources.memory_mb,
        priority: demand.priority,
        queue: demand.queue.to_owned(),
    };
    let mask = |c: &Candidate| {
        labels
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, (k, v))| c.labels.get(*k) == Some(*v))
            .fold(0u64, |mask, (i, _)| mask | (1 << i))
    };
    let wit_workers = WitWorkers {
        label_mask: workers.iter().map(|c| mask(c)).collect(),
        cpu_total: workers.iter().map(|c| c.capacity.cpu_millis).collect(),
        cpu_free: workers.iter().map(|c| c.free.cpu_millis).collect(),
        memory_total: workers.iter().map(|c| c.capacity.memory_mb).collect(),
        memory_free: workers.iter().map(|c| c.free.memory_mb).collect(),
        slots_total: workers.iter().map(|c| c.slots).collect(),
        slots_free: workers.iter().map(|c| c.free_slots).collect(),
        cpu_used_percent: workers.iter().map(|c| c.metrics.cpu_percent).collect(),
        memory_used_mb: workers
            .iter()
            .map(|c| c.metrics.memory_used_bytes / (1024 * 1024))
            .collect(),
        labels_by_key: label_keys
            .iter()
            .map(|key| label_column(key, workers))
            .collect(),
    };
    (wit_demand, wit_workers)
}

/// Interns the values of `key` across `workers`: a few strings per
/// decision, a u32 per worker.
fn label_column(key: &str, workers: &[&Candidate]) -> LabelColumn {
    let mut values: Vec<String> = Vec::new();
    let value_ids = workers
        .iter()
        .map(|c| match c.labels.get(key) {
            None => 0,
            Some(value) => {
                let index = values.iter().position(|v| v == value).unwrap_or_else(|| {
                    values.push(value.clone());
                    values.len() - 1
                });
                u32::try_from(index + 1).unwrap_or(u32::MAX)
            }
        })
        .collect();
    LabelColumn {
        key: key.to_owned(),
        values,
        value_ids,
    }
}

impl PolicyInstance {
    /// `filter` over `candidates`; one verdict per worker or an error.
    pub fn filter(
        &mut self,
        engine: &PluginEngine,
        demand: &Demand<'_>,
        candidates: &[&Candidate],
    ) -> Result<Vec<Verdict>, CallError> {
        let (demand, workers) = columns(demand, candidates, &self.label_keys);
        engine.arm(&mut self.store);
        let answer = self
            .bindings
            .hodei_scheduler_policy()
            .call_filter(&mut self.store, &demand, &workers)
            .map_err(|e| failure(&self.store, "filter", &e))?;
        let expected = workers.slots_free.len();
        if answer.verdicts.len() != expected {
            return Err(CallError {
                function: "filter",
                message: format!(
                    "returned {} verdicts for {expected} workers",
                    answer.verdicts.len()
                ),
            });
        }
        let reasons: Vec<Arc<str>> = answer.reasons.into_iter().map(Arc::from).collect();
        answer
            .verdicts
            .iter()
            .map(|&v| match v {
                0 => Ok(Verdict::Accept),
                k => reasons
                    .get(k as usize - 1)
                    .map(|reason| Verdict::Reject(Arc::clone(reason)))
                    .ok_or_else(|| CallError {
                        function: "filter",
                        message: format!(
                            "verdict {k} names no reason ({} reasons given)",
                            reasons.len()
                        ),
                    }),
            })
            .collect()
    }

    /// `score` over `candidates`; one score per worker or an error.
    pub fn score(
        &mut self,
        engine: &PluginEngine,
        demand: &Demand<'_>,
        candidates: &[&Candidate],
    ) -> Result<Vec<i64>, CallError> {
        let (demand, workers) = columns(demand, candidates, &self.label_keys);
        engine.arm(&mut self.store);
        let scores = self
            .bindings
            .hodei_scheduler_policy()
            .call_score(&mut self.store, &demand, &workers)
            .map_err(|e| failure(&self.store, "score", &e))?;
        let expected = workers.slots_free.len();
        if scores.len() != expected {
            return Err(CallError {
                function: "score",
                message: format!("returned {} scores for {expected} workers", scores.len()),
            });
        }
        Ok(scores)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::domain::{Resources, WorkerId, WorkerMetrics};
    use crate::plugins::{Limits, PolicyRegistry, Source, in_tree};
    use crate::scheduler::policy::{Decision, PolicySource, decide};

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

    fn worker(id: &str, tier: &str) -> Candidate {
        let capacity = Resources {
            cpu_millis: 4000,
            memory_mb: 8192,
        };
        Candidate {
            worker: WorkerId(id.into()),
            labels: [("tier".to_owned(), tier.to_owned())].into(),
            capacity,
            free: capacity,
            slots: 4,
            free_slots: 4,
            metrics: WorkerMetrics::default(),
        }
    }

    fn demand<'a>(
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
    fn the_demand_carries_the_jobs_priority_and_queue() {
        let labels = BTreeMap::new();
        let (wit, _) = columns(&demand(&labels, 42, "batch"), &[], &[]);
        assert_eq!((wit.priority, wit.queue.as_str()), (42, "batch"));
        let (wit, _) = columns(&demand(&labels, -3, "default"), &[], &[]);
        assert_eq!((wit.priority, wit.queue.as_str()), (-3, "default"));
    }

    #[test]
    fn the_world_version_is_the_wit_packages() {
        let wit = include_str!("../../../wit/scheduler.wit");
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
