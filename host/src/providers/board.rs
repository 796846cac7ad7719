//! What each pool is doing, as the API and pending reasons show it.
//!
//! Each pool's provisioning loop publishes a fresh [`PoolView`] after every
//! pass; readers (`GET /api/v1/pools`, a pending job's reason) only read.
//! A std mutex: the critical sections copy a map entry and never await.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use super::pools::PoolSpec;

/// One provisioned worker as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolWorkerView {
    /// The worker id (`w-…`).
    pub id: String,
    /// `REQUESTED`, `STARTING`, `CONNECTED` or `DRAINING`.
    pub phase: &'static str,
    /// The provider's handle (pid, container id, pod name).
    pub handle: Option<String>,
    /// Milliseconds since its row was written.
    pub age_ms: u64,
    /// Milliseconds from its row to its agent's registration.
    pub start_latency_ms: Option<u64>,
    /// Jobs it holds now.
    pub running_jobs: usize,
}

/// Create-to-registration latency over a pool's recent workers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyView {
    /// Workers measured.
    pub count: usize,
    /// The latest one, ms.
    pub last_ms: u64,
    /// Median, ms.
    pub p50_ms: u64,
    /// Slowest, ms.
    pub max_ms: u64,
}

impl LatencyView {
    /// From samples in arrival order; `None` when there are none.
    pub fn of(samples: &[u64]) -> Option<Self> {
        let last_ms = *samples.last()?;
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Self {
            count: sorted.len(),
            last_ms,
            p50_ms: sorted[(sorted.len() - 1) / 2],
            max_ms: sorted[sorted.len() - 1],
        })
    }
}

/// What the provider says each worker offers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OfferView {
    /// Labels on top of the pool's.
    pub labels: BTreeMap<String, String>,
    /// Thousandths of a core.
    pub cpu_millis: u64,
    /// MiB.
    pub memory_mb: u64,
    /// Typical create-to-registration time, ms.
    pub startup_estimate_ms: u32,
}

/// One pool's state.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    /// The pool as configured.
    #[serde(flatten)]
    pub spec: PoolSpec,
    /// What each worker offers, once the provider answered.
    pub offer: OfferView,
    /// `starting` (its provider is being checked), `running`, `backoff`
    /// (creates fail; retrying), `stopped` (a terminal error; fix the pool
    /// and post it again) or `standby` (another host drives it).
    pub state: &'static str,
    /// Workers by phase.
    pub counts: BTreeMap<&'static str, usize>,
    /// Every worker of the pool.
    pub workers: Vec<PoolWorkerView>,
    /// Jobs waiting that this pool provisions for.
    pub demand: usize,
    /// The latest failure (create, destroy, list), if any.
    pub last_error: Option<String>,
    /// The latest failed create, if any (what a backoff or stop is about).
    pub last_create_error: Option<String>,
    /// Failed creates in a row.
    pub consecutive_failures: u32,
    /// No create before this time (RFC 3339), while backing off.
    pub retry_at: Option<String>,
    /// Create-to-registration latency of recent workers.
    pub create_latency: Option<LatencyView>,
    /// What a waiting job is told about this pool, e.g. "starting worker
    /// w-12 (2.1 s)".
    pub activity: Option<String>,
}

/// Every pool's latest view (see the module docs).
#[derive(Debug, Default)]
pub struct PoolBoard {
    pools: Mutex<BTreeMap<String, PoolView>>,
}

impl PoolBoard {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PoolView>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces a pool's view.
    pub fn publish(&self, view: PoolView) {
        self.lock().insert(view.spec.name.clone(), view);
    }

    /// Forgets a pool.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Every pool, by name.
    pub fn views(&self) -> Vec<PoolView> {
        self.lock().values().cloned().collect()
    }

    /// One pool.
    pub fn view(&self, name: &str) -> Option<PoolView> {
        self.lock().get(name).cloned()
    }

    /// The specs and offers of every pool, by name: what decides which
    /// pool provisions for a job.
    pub fn offers(&self) -> Vec<(PoolSpec, OfferView)> {
        self.lock()
            .values()
            .map(|v| (v.spec.clone(), v.offer.clone()))
            .collect()
    }

    /// What a job asking for `labels` is told about the pool that
    /// provisions for it, if any pool does and has something to say.
    pub fn explain(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        let pools = self.lock();
        let pool = pools.values().find(|v| v.serves(labels))?;
        let activity = pool.activity.as_ref()?;
        Some(format!("pool {}: {activity}", pool.spec.name))
    }
}

impl PoolView {
    /// A pool that has nothing yet: `starting`, no offer, no worker.
    pub fn empty(spec: PoolSpec) -> Self {
        Self {
            spec,
            offer: OfferView::default(),
            state: "starting",
            counts: BTreeMap::new(),
            workers: Vec::new(),
            demand: 0,
            last_error: None,
            last_create_error: None,
            consecutive_failures: 0,
            retry_at: None,
            create_latency: None,
            activity: None,
        }
    }

    /// Whether this pool provisions for a job asking for `labels`.
    pub fn serves(&self, labels: &BTreeMap<String, String>) -> bool {
        let offered: Vec<(String, String)> = self
            .offer
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.spec.serves(labels, &offered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summaries() {
        assert!(LatencyView::of(&[]).is_none());
        let v = LatencyView::of(&[300, 100, 200, 900]).unwrap();
        assert_eq!((v.count, v.last_ms, v.p50_ms, v.max_ms), (4, 900, 200, 900));
    }
}
