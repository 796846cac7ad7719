//! The `hodei:scheduler` world on the host side: compiling a policy
//! component, instantiating it with its configuration, and calling
//! `decide` with the decision's columns.
//!
//! Everything a plugin returns is checked before the scheduler sees it: a
//! list of the wrong length or a reason index out of range is an error of
//! the plugin, exactly like a trap.
//!
//! The columns are the cost of a decision that is not the policy's own
//! work, so each instance keeps its column buffers and refills them, a
//! tight pass per column: no allocation per decision once warm.

use std::collections::BTreeMap;

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
use bindings::hodei::scheduler::types::{Demand as WitDemand, LabelColumn, Workers as WitWorkers};

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

/// One decision's inputs as WIT values, kept between decisions so that
/// their buffers are reused.
pub struct Columns {
    demand: WitDemand,
    workers: WitWorkers,
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Columns")
            .field("workers", &self.workers.slots_free.len())
            .finish_non_exhaustive()
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            demand: WitDemand {
                labels: Vec::new(),
                cpu_millis: 0,
                memory_mb: 0,
                priority: 0,
                queue: String::new(),
            },
            workers: WitWorkers {
                label_mask: Vec::new(),
                cpu_total: Vec::new(),
                cpu_free: Vec::new(),
                memory_total: Vec::new(),
                memory_free: Vec::new(),
                slots_total: Vec::new(),
                slots_free: Vec::new(),
                cpu_used_percent: Vec::new(),
                memory_used_mb: Vec::new(),
                labels_by_key: Vec::new(),
            },
        }
    }
}

impl Columns {
    /// Refills the columns for `demand` over `candidates`: numbers per
    /// worker, plus one id column per label key the policy asked for.
    pub fn fill(&mut self, demand: &Demand<'_>, candidates: &[Candidate], label_keys: &[String]) {
        let d = &mut self.demand;
        d.labels.clear();
        d.labels
            .extend(demand.labels.iter().map(|(k, v)| format!("{k}={v}")));
        d.cpu_millis = demand.resources.cpu_millis;
        d.memory_mb = demand.resources.memory_mb;
        d.priority = demand.priority;
        d.queue.clear();
        d.queue.push_str(demand.queue);

        // One tight pass per column (an `extend` of a slice's map knows its
        // length: no capacity check per element, and it vectorizes where
        // it can), not one pass pushing to every column.
        let w = &mut self.workers;
        refill(&mut w.cpu_total, candidates, |c| c.capacity.cpu_millis);
        refill(&mut w.cpu_free, candidates, |c| c.free.cpu_millis);
        refill(&mut w.memory_total, candidates, |c| c.capacity.memory_mb);
        refill(&mut w.memory_free, candidates, |c| c.free.memory_mb);
        refill(&mut w.slots_total, candidates, |c| c.slots);
        refill(&mut w.slots_free, candidates, |c| c.free_slots);
        refill(&mut w.cpu_used_percent, candidates, |c| {
            c.metrics.cpu_percent
        });
        refill(&mut w.memory_used_mb, candidates, |c| {
            c.metrics.memory_used_bytes / (1024 * 1024)
        });
        fill_label_masks(&mut w.label_mask, demand.labels, candidates);
        w.labels_by_key
            .resize_with(label_keys.len(), || LabelColumn {
                key: String::new(),
                values: Vec::new(),
                value_ids: Vec::new(),
            });
        for (column, key) in w.labels_by_key.iter_mut().zip(label_keys) {
            fill_label_column(column, key, candidates);
        }
    }

    /// The demand as last filled.
    pub fn demand(&self) -> &WitDemand {
        &self.demand
    }

    /// The worker columns as last filled.
    pub fn workers(&self) -> &WitWorkers {
        &self.workers
    }
}

/// Interns the values of `key` across `candidates`: a few strings per
/// decision, a u32 per worker.
fn fill_label_column(column: &mut LabelColumn, key: &str, candidates: &[Candidate]) {
    if column.key != key {
        column.key.clear();
        column.key.push_str(key);
    }
    column.values.clear();
    column.value_ids.clear();
    let LabelColumn {
        values, value_ids, ..
    } = column;
    value_ids.extend(candidates.iter().map(|c| match c.labels.get(key) {
        None => 0,
        Some(value) => {
            let index = values.iter().position(|v| v == value).unwrap_or_else(|| {
                values.push(value.clone());
                values.len() - 1
            });
            u32::try_from(index + 1).unwrap_or(u32::MAX)
        }
    }));
}

/// Clears `column` and refills it with `value` of each candidate.
#[inline]
fn refill<T>(column: &mut Vec<T>, candidates: &[Candidate], value: impl Fn(&Candidate) -> T) {
    column.clear();
    column.extend(candidates.iter().map(value));
}

/// Per candidate, bit `i` set when it carries the job's `i`-th label (the
/// first 64: a job asking for more can never be placed by a plugin that
/// keeps the default constraints, which the SDK documents).
fn fill_label_masks(
    masks: &mut Vec<u64>,
    wanted: &BTreeMap<String, String>,
    candidates: &[Candidate],
) {
    masks.clear();
    match wanted.len() {
        0 => masks.resize(candidates.len(), 0),
        // The usual case, one label (`gpu=true`, `pool=x`): no inner loop.
        1 => {
            let (key, value) = wanted.iter().next().expect("one label");
            masks.extend(
                candidates
                    .iter()
                    .map(|c| u64::from(c.labels.get(key) == Some(value))),
            );
        }
        _ => masks.extend(candidates.iter().map(|c| {
            wanted
                .iter()
                .take(64)
                .enumerate()
                .filter(|(_, (k, v))| c.labels.get(*k) == Some(*v))
                .fold(0u64, |mask, (i, _)| mask | (1 << i))
        })),
    }
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
        let mut columns = Columns::default();
        columns.fill(&demand(&labels, 42, "batch"), &[], &[]);
        let wit = columns.demand();
        assert_eq!((wit.priority, wit.queue.as_str()), (42, "batch"));
        columns.fill(&demand(&labels, -3, "default"), &[], &[]);
        let wit = columns.demand();
        assert_eq!((wit.priority, wit.queue.as_str()), (-3, "default"));
    }

    /// Refilled buffers hold this decision's workers only, label columns
    /// included, whatever the previous decision held.
    #[test]
    fn refilled_columns_hold_only_this_decisions_workers() {
        let labels: BTreeMap<String, String> = [("tier".to_owned(), "fast".to_owned())].into();
        let keys = ["tier".to_owned()];
        let mut columns = Columns::default();
        let three = [
            worker("a", "fast"),
            worker("b", "slow"),
            worker("c", "fast"),
        ];
        columns.fill(&demand(&labels, 0, "default"), &three, &keys);
        assert_eq!(columns.workers().label_mask, [1, 0, 1]);
        assert_eq!(columns.workers().labels_by_key[0].value_ids, [1, 2, 1]);
        let one = [worker("b", "slow")];
        columns.fill(&demand(&BTreeMap::new(), 0, "default"), &one, &keys);
        let w = columns.workers();
        assert_eq!(columns.demand().labels, Vec::<String>::new());
        assert_eq!(
            (w.label_mask.as_slice(), w.slots_free.as_slice()),
            (&[0][..], &[4][..])
        );
        assert_eq!(w.labels_by_key[0].key, "tier");
        assert_eq!(w.labels_by_key[0].values, ["slow"]);
        assert_eq!(w.labels_by_key[0].value_ids, [1]);
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
