//! The host's figures for Prometheus, served at `/metrics` (OpenMetrics
//! text, through `prometheus-client`).
//!
//! Counters are bumped where the thing happens, once: a durable submit
//! (`JobService::submit`), a job reaching a terminal state on this host
//! (`JobService::publish_state`), log lines stored after the masker chain
//! (the agent session). Gauges are read at scrape time from the state that
//! owns them (the queue, the cluster), so they cannot drift. Names follow
//! Prometheus' conventions (base units, `_total` on counters, added by the
//! encoder); no label carries a job id, so the series stay bounded. Each
//! host counts what it saw: with several hosts on one database, sum them.
//!
//! What lies below the job service (the store's commits, plugin calls, the
//! scheduler's rounds) records into [`instruments`], one set per process,
//! which every [`Metrics`] registry also shows.

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::domain::JobState;

/// The label of `hodei_jobs_finished_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The terminal state, lower case: `succeeded`, `failed`, `cancelled`,
    /// `timed_out`.
    pub outcome: String,
}

/// The label of the per-plugin series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// `policy` or `masker`.
    pub world: String,
    /// The plugin's name.
    pub plugin: String,
}

/// The label of the per-pool series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// The worker pool's name.
    pub pool: String,
}

/// The label of `hodei_jobs_pending`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PendingReason {
    /// `backoff` (waiting out a retry delay), `no_matching_worker` (no
    /// connected worker has its labels), `waiting_for_capacity`.
    pub reason: String,
}

/// Instruments of the layers below the job service, one set per process.
#[derive(Debug)]
pub struct Instruments {
    plugin_calls: Family<PluginLabel, Histogram, fn() -> Histogram>,
    plugin_errors: Family<PluginLabel, Counter>,
    store_commit: Histogram,
    scheduling_round: Histogram,
    provider_create: Family<PoolLabel, Histogram, fn() -> Histogram>,
    provider_failures: Family<PoolLabel, Counter>,
}

/// 10 ms to about 5 minutes, doubling.
fn long_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// 10 µs to about 5 s, quadrupling.
fn short_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

/// The process's instruments.
pub fn instruments() -> &'static Instruments {
    static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| Instruments {
        plugin_calls: Family::new_with_constructor(short_buckets),
        plugin_errors: Family::default(),
        store_commit: short_buckets(),
        scheduling_round: short_buckets(),
        provider_create: Family::new_with_constructor(long_buckets),
        provider_failures: Family::default(),
    });
    &INSTRUMENTS
}

impl Instruments {
    /// A call of `world` (`policy`, `masker`) into `plugin` answered in
    /// `elapsed`, or failed (`None`: it trapped, timed out or answered
    /// wrong).
    pub fn plugin_call(&self, world: &str, plugin: &str, elapsed: Option<std::time::Duration>) {
        let label = PluginLabel {
            world: world.to_owned(),
            plugin: plugin.to_owned(),
        };
        match elapsed {
            Some(elapsed) => self
                .plugin_calls
                .get_or_create(&label)
                .observe(elapsed.as_secs_f64()),
            None => {
                self.plugin_errors.get_or_create(&label).inc();
            }
        }
    }

    /// A store transaction (one group commit) took `elapsed` to be durable.
    pub fn store_commit(&self, elapsed: std::time::Duration) {
        self.store_commit.observe(elapsed.as_secs_f64());
    }

    /// A worker of `pool` went from requested to registered in `elapsed`.
    pub fn provider_created(&self, pool: &str, elapsed: std::time::Duration) {
        self.provider_create
            .get_or_create(&PoolLabel {
                pool: pool.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A provider's `create` for `pool` failed.
    pub fn provider_create_failed(&self, pool: &str) {
        self.provider_failures
            .get_or_create(&PoolLabel {
                pool: pool.to_owned(),
            })
            .inc();
    }

    /// One scheduling round took `elapsed`.
    pub fn scheduling_round(&self, elapsed: std::time::Duration) {
        self.scheduling_round.observe(elapsed.as_secs_f64());
    }
}

/// Pending jobs by why they wait, and the oldest one's age.
#[derive(Debug, Clone, Copy, Default)]
pub struct PendingSummary {
    /// Waiting out a retry delay.
    pub backoff: u64,
    /// No connected worker has the labels they ask for.
    pub no_matching_worker: u64,
    /// A matching worker exists: waiting for a slot or capacity (or the
    /// next round).
    pub waiting_for_capacity: u64,
    /// Seconds since the oldest queued job was submitted.
    pub oldest_age_seconds: f64,
}

/// What the scrape reads from the rest of the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Jobs waiting in this host's queue.
    pub queued: u64,
    /// Agents connected to this host.
    pub agents_connected: u64,
    /// Of those, the ones draining.
    pub agents_draining: u64,
    /// The queue by reason.
    pub pending: PendingSummary,
}

/// Every metric of the host, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    jobs_submitted: Counter,
    jobs_finished: Family<Outcome, Counter>,
    log_lines: Counter,
    log_bytes: Counter,
    queue_wait: Histogram,
    queued: Gauge,
    agents_connected: Gauge,
    agents_draining: Gauge,
    pending: Family<PendingReason, Gauge>,
    oldest_pending: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let (jobs_submitted, log_lines, log_bytes) =
            (Counter::default(), Counter::default(), Counter::default());
        let jobs_finished = Family::<Outcome, Counter>::default();
        // 1 ms to about 33 s, doubling.
        let queue_wait = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let (queued, agents_connected, agents_draining) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        let mut registry = Registry::with_prefix("hodei");
        registry.register(
            "jobs_submitted",
            "Jobs accepted durably by this host",
            jobs_submitted.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs this host saw reach a terminal state, by outcome",
            jobs_finished.clone(),
        );
        registry.register(
            "log_lines_ingested",
            "Log lines taken in: masked, in batches the store accepted (lines an agent resends after a reconnect count again)",
            log_lines.clone(),
        );
        registry.register_with_unit(
            "log_ingested",
            "Bytes of those log lines",
            Unit::Bytes,
            log_bytes.clone(),
        );
        registry.register_with_unit(
            "job_queue_wait",
            "From an attempt becoming eligible (submit, or the end of its retry backoff) to its placement being stored",
            Unit::Seconds,
            queue_wait.clone(),
        );
        registry.register(
            "jobs_queued",
            "Jobs waiting in this host's queue",
            queued.clone(),
        );
        registry.register(
            "agents_connected",
            "Agents connected to this host",
            agents_connected.clone(),
        );
        registry.register(
            "agents_draining",
            "Connected agents that are draining",
            agents_draining.clone(),
        );
        let pending = Family::<PendingReason, Gauge>::default();
        registry.register(
            "jobs_pending",
            "Jobs in this host's queue by why they wait",
            pending.clone(),
        );
        let oldest_pending = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "oldest_pending_job_age",
            "Time since the oldest job in this host's queue was submitted (0 when none waits)",
            Unit::Seconds,
            oldest_pending.clone(),
        );
        let below = instruments();
        registry.register_with_unit(
            "plugin_call_duration",
            "Calls into Wasm plugins (policies, maskers), by plugin",
            Unit::Seconds,
            below.plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_errors",
            "Plugin calls that trapped, timed out or answered wrong, by plugin",
            below.plugin_errors.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "From a store transaction's start to its durable commit (redb: one group commit; PostgreSQL: one job change)",
            Unit::Seconds,
            below.store_commit.clone(),
        );
        registry.register_with_unit(
            "scheduling_round_duration",
            "One scheduling round: the queue walked against the cluster",
            Unit::Seconds,
            below.scheduling_round.clone(),
        );
        registry.register_with_unit(
            "provider_create_duration",
            "From a pool asking its provider for a worker to that worker's agent registering, by pool",
            Unit::Seconds,
            below.provider_create.clone(),
        );
        registry.register(
            "provider_create_failures",
            "Provider create calls that failed, by pool",
            below.provider_failures.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            pending,
            oldest_pending,
            jobs_submitted,
            jobs_finished,
            log_lines,
            log_bytes,
            queue_wait,
            queued,
            agents_connected,
            agents_draining,
        }
    }
}

impl Metrics {
    /// A job was accepted durably.
    pub fn submitted(&self) {
        self.jobs_submitted.inc();
    }

    /// `count` jobs were accepted at once (a batch).
    pub fn submitted_many(&self, count: usize) {
        self.jobs_submitted
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// A job reached `state` (counted only when it is terminal).
    pub fn finished(&self, state: JobState) {
        if state.is_terminal() {
            self.jobs_finished
                .get_or_create(&Outcome {
                    outcome: state.as_str().to_ascii_lowercase(),
                })
                .inc();
        }
    }

    /// An attempt was placed `wait` after it became eligible.
    pub fn placed(&self, wait: std::time::Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    /// `lines` log lines of `bytes` bytes were stored.
    pub fn logs_stored(&self, lines: u64, bytes: u64) {
        self.log_lines.inc_by(lines);
        self.log_bytes.inc_by(bytes);
    }

    /// The OpenMetrics text of every metric, gauges set from `now`.
    pub fn encode(&self, now: Snapshot) -> String {
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.queued, now.queued);
        gauge(&self.agents_connected, now.agents_connected);
        gauge(&self.agents_draining, now.agents_draining);
        for (reason, count) in [
            ("backoff", now.pending.backoff),
            ("no_matching_worker", now.pending.no_matching_worker),
            ("waiting_for_capacity", now.pending.waiting_for_capacity),
        ] {
            gauge(
                &self.pending.get_or_create(&PendingReason {
                    reason: reason.to_owned(),
                }),
                count,
            );
        }
        self.oldest_pending.set(now.pending.oldest_age_seconds);
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_appear_with_their_conventional_names() {
        let metrics = Metrics::default();
        metrics.submitted();
        metrics.submitted();
        metrics.finished(JobState::Running);
        metrics.finished(JobState::TimedOut);
        metrics.logs_stored(3, 120);
        metrics.placed(std::time::Duration::from_millis(3));
        let text = metrics.encode(Snapshot {
            queued: 4,
            agents_connected: 2,
            agents_draining: 1,
            pending: PendingSummary {
                backoff: 1,
                no_matching_worker: 2,
                waiting_for_capacity: 1,
                oldest_age_seconds: 2.5,
            },
        });
        for line in [
            "hodei_jobs_submitted_total 2",
            "hodei_jobs_finished_total{outcome=\"timed_out\"} 1",
            "hodei_log_lines_ingested_total 3",
            "hodei_log_ingested_bytes_total 120",
            "hodei_jobs_queued 4",
            "hodei_agents_connected 2",
            "hodei_agents_draining 1",
            "hodei_jobs_pending{reason=\"no_matching_worker\"} 2",
            "hodei_oldest_pending_job_age_seconds 2.5",
            "hodei_job_queue_wait_seconds_count 1",
            "hodei_job_queue_wait_seconds_bucket{le=\"0.004\"} 1",
            "hodei_job_queue_wait_seconds_bucket{le=\"0.002\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(!text.contains("outcome=\"running\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
