//! One pool's provisioning loop.
//!
//! Every pass, while this host leads the pool:
//! 1. **Settle** the ledger: a worker that never registered within its
//!    timeout, or whose agent is gone past the lease, is destroyed and its
//!    row removed (it never occupies capacity); a draining worker with no
//!    job left is destroyed.
//! 2. **Reconcile** (every few seconds): what the provider owns with no row
//!    (a create the host lost track of, a crash between create and row) is
//!    destroyed after a grace period.
//! 3. **Scale up** for demand: the waiting jobs this pool serves (and no
//!    pool before it by name), minus what starting workers will take,
//!    within min and max. The row is written before `create` is called.
//! 4. **Scale down** in two phases: an idle worker above min past its idle
//!    timeout is retired in the cluster (atomically with reservations, so
//!    never with a job on its way) and destroyed on a later pass.
//!
//! Failures: a terminal error stops the pool (shown in the API and in
//! pending reasons); transient errors and faults back off per pool,
//! doubling from 1 s to 60 s, so the loop never creates faster than its
//! backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::watch;

use super::board::{LatencyView, OfferView, PoolBoard, PoolView, PoolWorkerView};
use super::instance::PoolProvider;
use super::pools::PoolSpec;
use super::tokens::{new_token, token_hash};
use crate::bus::Event;
use crate::domain::{ProvisionedWorker, Timestamp, WorkerId, WorkerPhase};
use crate::jobs::JobService;
use crate::plugins::provider::{ProviderCallError, WorkerSpec, WorkerStatus};
use crate::scheduler::cluster::WorkerView;
use crate::store::WorkerLedger;

/// Between passes.
const PASS: Duration = Duration::from_millis(200);
/// How often the provider's own list is compared with the ledger.
const RECONCILE_EVERY: Duration = Duration::from_secs(3);
/// How long a resource with no ledger row may live (a create in flight
/// on another host's pass writes its row first, so this only has to cover
/// clock and pass skew).
const ORPHAN_GRACE: Duration = Duration::from_secs(5);
/// How long a host's lead of a pool lasts unless renewed.
const LEAD_TTL: Duration = Duration::from_secs(10);
/// First and largest delay after a failed create.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Latency samples kept per pool.
const LATENCY_SAMPLES: usize = 64;

/// What a pool's loop needs from the host.
#[derive(Debug, Clone)]
pub struct HostSide {
    /// The use cases (cluster, queue, wake-ups).
    pub jobs: Arc<JobService>,
    /// The worker ledger.
    pub ledger: Arc<dyn WorkerLedger>,
    /// Where every pool publishes its view.
    pub board: Arc<PoolBoard>,
    /// The gRPC URL(s) agents dial.
    pub server_url: String,
    /// Environment every agent gets (the CA to trust when the gateway
    /// speaks TLS).
    pub agent_env: Vec<(String, String)>,
    /// This host's id, for pool leads.
    pub host_id: String,
    /// Silence after which an agent's jobs count as lost.
    pub lease: Duration,
}

/// One pool's loop state (see the module docs).
pub struct PoolLoop {
    host: HostSide,
    spec: PoolSpec,
    offer: OfferView,
    provider: PoolProvider,
    /// When this pool's lead runs out, if this host has it.
    led_until: Option<Instant>,
    last_reconcile: Option<Instant>,
    /// Resources without a row, with when they were first seen.
    orphans: HashMap<String, Instant>,
    /// Idle workers with when they became idle.
    idle_since: HashMap<String, Instant>,
    stopped: Option<String>,
    last_error: Option<String>,
    last_create_error: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
    /// Create-to-registration latencies, oldest first.
    latencies: Vec<u64>,
    /// Workers whose latency is already in `latencies`.
    measured: HashSet<String>,
    demand: usize,
}

impl std::fmt::Debug for PoolLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolLoop")
            .field("pool", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl PoolLoop {
    /// A loop for a started provider.
    pub fn new(host: HostSide, spec: PoolSpec, offer: OfferView, provider: PoolProvider) -> Self {
        Self {
            host,
            spec,
            offer,
            provider,
            led_until: None,
            last_reconcile: None,
            orphans: HashMap::new(),
            idle_since: HashMap::new(),
            stopped: None,
            last_error: None,
            last_create_error: None,
            failures: 0,
            retry_at: None,
            latencies: Vec::new(),
            measured: HashSet::new(),
            demand: 0,
        }
    }

    /// Runs passes until `stop` turns true: every [`PASS`], and at once
    /// when a job is submitted or a worker comes or goes, so a cold start
    /// does not wait for the next tick.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut events = self.host.jobs.bus().subscribe();
        loop {
            // What else arrived meanwhile is covered by this pass: a burst
            // of submits makes one pass, not one per job.
            while !matches!(
                events.try_recv(),
                Err(TryRecvError::Empty | TryRecvError::Closed)
            ) {}
            let leads = self.lead().await;
            if leads {
                self.pass().await;
            }
            self.publish(leads).await;
            let tick = tokio::time::sleep(PASS);
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    () = &mut tick => break,
                    _ = stop.wait_for(|s| *s) => return,
                    event = events.recv() => match event.as_deref() {
                        Ok(Event::JobCreated(_) | Event::WorkerConnected(_)) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
        }
    }

    async fn lead(&mut self) -> bool {
        let now = Instant::now();
        if self
            .led_until
            .is_some_and(|until| until > now + LEAD_TTL / 2)
        {
            return true;
        }
        let wall = Timestamp::now();
        let until = Timestamp(wall.0 + micros(LEAD_TTL));
        match self
            .host
            .ledger
            .lead(&self.spec.name, &self.host.host_id, wall, until)
            .await
        {
            Ok(true) => {
                self.led_until = Some(now + LEAD_TTL);
                true
            }
            Ok(false) => {
                self.led_until = None;
                false
            }
            Err(err) => {
                tracing::warn!(pool = %self.spec.name, %err, "cannot take the pool's lead");
                self.led_until.is_some_and(|until| until > now)
            }
        }
    }

    async fn pass(&mut self) {
        let rows = match self.host.ledger.list(Some(&self.spec.name)).await {
            Ok(rows) => rows,
            Err(err) => {
                self.note_error(format!("cannot read the worker ledger: {err}"));
                return;
            }
        };
        let views = self.worker_views();
        let rows = self.settle(rows, &views).await;
        let rows = if self
            .last_reconcile
            .is_none_or(|at| at.elapsed() >= RECONCILE_EVERY)
        {
            self.last_reconcile = Some(Instant::now());
            self.reconcile(&rows).await;
            match self.host.ledger.list(Some(&self.spec.name)).await {
                Ok(rows) => rows,
                Err(err) => {
                    self.note_error(format!("cannot read the worker ledger: {err}"));
                    return;
                }
            }
        } else {
            rows
        };
        if self.stopped.is_none() {
            self.scale_up(&rows, &views).await;
        }
        self.scale_down(&rows, &views).await;
    }

    /// The cluster's view of this pool's workers, by id.
    fn worker_views(&self) -> HashMap<String, WorkerView> {
        self.host
            .jobs
            .cluster()
            .views()
            .into_iter()
            .filter(|v| v.info.pool.as_deref() == Some(self.spec.name.as_str()))
            .map(|v| (v.info.id.0.clone(), v))
            .collect()
    }

    /// Step 1: destroys what failed, is lost or has drained; returns the
    /// rows that remain.
    async fn settle(
        &mut self,
        rows: Vec<ProvisionedWorker>,
        views: &HashMap<String, WorkerView>,
    ) -> Vec<ProvisionedWorker> {
        let now = Timestamp::now();
        let registration = micros(Duration::from_secs(self.spec.registration_timeout_secs));
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let view = views.get(&row.id);
            let lost = view
                .is_none_or(|v| !v.connected && v.last_seen_ms > self.host.lease.as_millis())
                && row
                    .connected
                    .is_some_and(|c| now.0 - c.0 > micros(self.host.lease));
            let failure = match row.phase {
                WorkerPhase::Requested | WorkerPhase::Starting
                    if now.0 - row.created.0 > registration =>
                {
                    Some(format!(
                        "worker {} did not register within {} s",
                        row.id, self.spec.registration_timeout_secs
                    ))
                }
                WorkerPhase::Connected | WorkerPhase::Draining if lost => {
                    Some(format!("worker {} lost its agent", row.id))
                }
                _ => None,
            };
            let drained = row.phase == WorkerPhase::Draining
                && view.is_none_or(|v| v.running_jobs.is_empty());
            if let Some(failure) = &failure {
                tracing::warn!(pool = %self.spec.name, "{failure}; destroying it");
                self.note_error(failure.clone());
            }
            if failure.is_some() || drained {
                self.destroy(&row.id).await;
            } else {
                kept.push(row);
            }
        }
        kept
    }

    /// Step 2: destroys resources the ledger does not know, after a grace,
    /// and forgets rows whose resource is gone or has exited (a host
    /// restart took its local agents, a container died): the next scale-up
    /// replaces them at once instead of waiting out the lease.
    async fn reconcile(&mut self, rows: &[ProvisionedWorker]) {
        let owned = match self.provider.call(|p| p.list()).await {
            Ok(owned) => owned,
            Err(err) => {
                self.note_error(format!("list: {err}"));
                return;
            }
        };
        for row in rows {
            let alive = owned.iter().any(|w| {
                w.worker_id == row.id
                    && matches!(w.status, WorkerStatus::Starting | WorkerStatus::Running)
            });
            if !alive {
                tracing::info!(pool = %self.spec.name, worker = %row.id, "worker gone from its provider");
                self.destroy(&row.id).await;
            }
        }
        let now = Instant::now();
        let mut seen = HashMap::new();
        for worker in owned {
            if rows.iter().any(|r| r.id == worker.worker_id) {
                continue;
            }
            let first = self.orphans.get(&worker.worker_id).copied().unwrap_or(now);
            if now.duration_since(first) >= ORPHAN_GRACE {
                tracing::warn!(pool = %self.spec.name, worker = %worker.worker_id, handle = %worker.handle, "destroying a worker the ledger does not know");
                let id = worker.worker_id.clone();
                if let Err(err) = self.provider.call(move |p| p.destroy(&id)).await {
                    self.note_error(format!("destroy of orphan {}: {err}", worker.worker_id));
                }
            } else {
                seen.insert(worker.worker_id, first);
            }
        }
        self.orphans = seen;
    }

    /// Step 3: creates workers for demand and for `min`.
    async fn scale_up(&mut self, rows: &[ProvisionedWorker], views: &HashMap<String, WorkerView>) {
        let slots = usize::try_from(self.spec.slots.max(1)).unwrap_or(1);
        // Registered workers with room will take waiting jobs on the next
        // scheduling round: a job still queued between a registration and
        // its placement is not demand for another worker.
        let free_slots: usize = views
            .values()
            .filter(|v| v.connected && !v.retiring && !v.metrics.draining)
            .map(|v| usize::try_from(v.info.slots.saturating_sub(v.used_slots)).unwrap_or(0))
            .sum();
        self.demand = self.my_demand();
        let starting = rows
            .iter()
            .filter(|r| matches!(r.phase, WorkerPhase::Requested | WorkerPhase::Starting))
            .count();
        let serving = rows
            .iter()
            .filter(|r| r.phase != WorkerPhase::Draining)
            .count();
        let for_demand = self
            .demand
            .saturating_sub(starting * slots + free_slots)
            .div_ceil(slots);
        let for_min = usize::try_from(self.spec.min)
            .unwrap_or(0)
            .saturating_sub(serving);
        let room = usize::try_from(self.spec.max)
            .unwrap_or(0)
            .saturating_sub(rows.len());
        let wanted = for_demand.max(for_min).min(room);
        if wanted == 0 || self.retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        for _ in 0..wanted {
            if !self.create().await {
                break;
            }
        }
    }

    /// The waiting jobs this pool provisions for: those whose labels it
    /// serves that no pool before it (by name) serves. Resources are not
    /// matched: an agent registers what its machine really has, which the
    /// provider's offer only estimates.
    fn my_demand(&self) -> usize {
        let pools = self.host.board.offers();
        let serves = |spec: &PoolSpec, offer: &OfferView, labels| {
            let offered: Vec<(String, String)> = offer
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            spec.serves(labels, &offered)
        };
        self.host
            .jobs
            .scheduler()
            .pending_demands()
            .iter()
            .filter(|(labels, _)| {
                serves(&self.spec, &self.offer, labels)
                    && !pools.iter().any(|(spec, offer)| {
                        spec.name < self.spec.name && serves(spec, offer, labels)
                    })
            })
            .map(|(_, jobs)| jobs)
            .sum()
    }

    /// Creates one worker: the row first, then the provider. False when it
    /// failed (the pool backs off or stops).
    async fn create(&mut self) -> bool {
        let id = format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let token = new_token();
        let now = Timestamp::now();
        let registration = Duration::from_secs(self.spec.registration_timeout_secs);
        let row = ProvisionedWorker {
            id: id.clone(),
            pool: self.spec.name.clone(),
            phase: WorkerPhase::Requested,
            handle: None,
            token_hash: token_hash(&token),
            token_expires: Timestamp(now.0 + micros(registration)),
            agent_id: None,
            created: now,
            connected: None,
            ephemeral: self.spec.ephemeral,
        };
        if let Err(err) = self.host.ledger.put(&row).await {
            self.note_error(format!("cannot write the worker ledger: {err}"));
            return false;
        }
        let mut labels: Vec<(String, String)> = self
            .spec
            .labels
            .iter()
            .chain(&self.offer.labels)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        let spec = WorkerSpec {
            server_url: self.host.server_url.clone(),
            token,
            labels,
            slots: self.spec.slots,
            ephemeral: self.spec.ephemeral,
            env: self.host.agent_env.clone(),
        };
        let worker = id.clone();
        match self.provider.call(move |p| p.create(&worker, &spec)).await {
            Ok(handle) => {
                // Atomically: the agent may be registering this very moment.
                let started = self
                    .host
                    .ledger
                    .update(
                        &id,
                        Box::new(move |row| {
                            if row.phase == WorkerPhase::Requested {
                                row.phase = WorkerPhase::Starting;
                            }
                            row.handle = Some(handle);
                        }),
                    )
                    .await;
                if let Err(err) = started {
                    self.note_error(format!("cannot write the worker ledger: {err}"));
                }
                tracing::info!(pool = %self.spec.name, worker = %id, "worker created");
                self.failures = 0;
                self.retry_at = None;
                true
            }
            Err(err) => {
                self.create_failed(&id, &err).await;
                false
            }
        }
    }

    async fn create_failed(&mut self, id: &str, err: &ProviderCallError) {
        let message = format!("create {id}: {err}");
        tracing::warn!(pool = %self.spec.name, "{message}");
        crate::metrics::instruments().provider_create_failed(&self.spec.name);
        self.destroy(id).await;
        // The create's error says more than the cleanup's.
        self.note_error(message.clone());
        self.last_create_error = Some(message.clone());
        if err.is_terminal() {
            self.stopped = Some(message);
            return;
        }
        self.failures += 1;
        let delay = BACKOFF_FIRST
            .saturating_mul(1 << self.failures.saturating_sub(1).min(6))
            .min(BACKOFF_MAX);
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Step 4: retires idle workers above min, and ephemeral ones that took
    /// their job.
    async fn scale_down(
        &mut self,
        rows: &[ProvisionedWorker],
        views: &HashMap<String, WorkerView>,
    ) {
        let now = Instant::now();
        let idle_timeout = Duration::from_secs(self.spec.idle_timeout_secs);
        let mut serving = rows
            .iter()
            .filter(|r| r.phase != WorkerPhase::Draining)
            .count();
        let min = usize::try_from(self.spec.min).unwrap_or(0);
        for row in rows.iter().filter(|r| r.phase == WorkerPhase::Connected) {
            let Some(view) = views.get(&row.id).filter(|v| v.connected) else {
                continue;
            };
            let retire = if view.retiring {
                true
            } else if view.running_jobs.is_empty() {
                let since = *self.idle_since.entry(row.id.clone()).or_insert(now);
                serving > min && now.duration_since(since) >= idle_timeout
            } else {
                self.idle_since.remove(&row.id);
                false
            };
            if retire
                && self
                    .host
                    .jobs
                    .cluster()
                    .retire_if_idle(&WorkerId(row.id.clone()))
            {
                serving -= 1;
                self.idle_since.remove(&row.id);
                let draining = self
                    .host
                    .ledger
                    .update(&row.id, Box::new(|row| row.phase = WorkerPhase::Draining))
                    .await;
                if let Err(err) = draining {
                    self.note_error(format!("cannot write the worker ledger: {err}"));
                }
                tracing::info!(pool = %self.spec.name, worker = %row.id, "worker retired");
            }
        }
    }

    /// Destroys a worker and removes its row. The row goes even when the
    /// provider fails: a failed worker never holds a place in the pool,
    /// and whatever is left of it has no row, so reconciliation destroys
    /// it once the provider answers again.
    async fn destroy(&mut self, id: &str) {
        let worker = id.to_owned();
        match self.provider.call(move |p| p.destroy(&worker)).await {
            Ok(()) => tracing::info!(pool = %self.spec.name, worker = %id, "worker destroyed"),
            Err(err) => self.note_error(format!("destroy {id}: {err}")),
        }
        if let Err(err) = self.host.ledger.remove(id).await {
            self.note_error(format!("cannot write the worker ledger: {err}"));
        }
        self.idle_since.remove(id);
    }

    fn note_error(&mut self, error: String) {
        self.last_error = Some(error);
    }

    async fn publish(&mut self, leads: bool) {
        let rows = self
            .host
            .ledger
            .list(Some(&self.spec.name))
            .await
            .unwrap_or_default();
        let views = self.worker_views();
        let now = Timestamp::now();
        for row in &rows {
            if let Some(ms) = row.start_latency_ms()
                && self.measured.insert(row.id.clone())
            {
                crate::metrics::instruments()
                    .provider_created(&self.spec.name, Duration::from_millis(ms));
                if self.latencies.len() == LATENCY_SAMPLES {
                    self.latencies.remove(0);
                }
                self.latencies.push(ms);
            }
        }
        self.measured.retain(|id| rows.iter().any(|r| &r.id == id));
        let mut counts: BTreeMap<&'static str, usize> =
            WorkerPhase::ALL.iter().map(|p| (p.as_str(), 0)).collect();
        let workers: Vec<PoolWorkerView> = rows
            .iter()
            .map(|r| {
                *counts.entry(r.phase.as_str()).or_default() += 1;
                PoolWorkerView {
                    id: r.id.clone(),
                    phase: r.phase.as_str(),
                    handle: r.handle.clone(),
                    age_ms: u64::try_from((now.0 - r.created.0) / 1000).unwrap_or(0),
                    start_latency_ms: r.start_latency_ms(),
                    running_jobs: views.get(&r.id).map_or(0, |v| v.running_jobs.len()),
                }
            })
            .collect();
        let retry_at = self.retry_at.filter(|at| *at > Instant::now());
        let state = match (leads, &self.stopped, retry_at) {
            (false, _, _) => "standby",
            (true, Some(_), _) => "stopped",
            (true, None, Some(_)) => "backoff",
            (true, None, None) => "running",
        };
        let activity = self.activity(&workers, retry_at, leads);
        self.host.board.publish(PoolView {
            spec: self.spec.clone(),
            offer: self.offer.clone(),
            state,
            counts,
            workers,
            demand: self.demand,
            last_error: self.last_error.clone(),
            last_create_error: self.last_create_error.clone(),
            consecutive_failures: self.failures,
            retry_at: retry_at.map(|at| {
                let wait = at.saturating_duration_since(Instant::now());
                Timestamp(now.0 + micros(wait)).to_rfc3339()
            }),
            create_latency: LatencyView::of(&self.latencies),
            activity,
        });
    }

    fn activity(
        &self,
        workers: &[PoolWorkerView],
        retry_at: Option<Instant>,
        leads: bool,
    ) -> Option<String> {
        if !leads {
            return Some("driven by another host".to_owned());
        }
        if let Some(stopped) = &self.stopped {
            return Some(format!("stopped: {stopped}"));
        }
        if let Some(at) = retry_at {
            let wait = at.saturating_duration_since(Instant::now()).as_secs_f64();
            let error = self.last_create_error.as_deref().unwrap_or("create failed");
            return Some(format!("{error}; retry in {wait:.0} s"));
        }
        if let Some(starting) = workers
            .iter()
            .filter(|w| w.phase == "REQUESTED" || w.phase == "STARTING")
            .max_by_key(|w| w.age_ms)
        {
            #[allow(clippy::cast_precision_loss)] // milliseconds, shown to a person
            let secs = starting.age_ms as f64 / 1000.0;
            return Some(format!("starting worker {} ({secs:.1} s)", starting.id));
        }
        if self.demand > 0 && workers.len() >= usize::try_from(self.spec.max).unwrap_or(0) {
            return Some(format!("at its maximum of {} workers", self.spec.max));
        }
        None
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
