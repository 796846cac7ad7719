//! The `hodei:scheduler` world on the host side: compiling a policy
//! component, instantiating it with its configuration, and calling
//! `filter` / `score` with the decision's columns.
//!
//! Everything a plugin returns is checked before the scheduler sees it: a
//! list of the wrong length or a reason index out of range is an error of
//! the plugin, exactly like a trap.

use std::sync::Arc;

use wasmtime::Store;

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
            PluginError::Invalid(format!(
                "not a scheduling policy (world hodei:scheduler/scheduling-policy): {e:#}"
            ))
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
