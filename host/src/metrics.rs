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

use std::sync::Mutex;

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

/// What the scrape reads from the rest of the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Jobs waiting in this host's queue.
    pub queued: u64,
    /// Agents connected to this host.
    pub agents_connected: u64,
    /// Of those, the ones draining.
    pub agents_draining: u64,
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
        Self {
            registry: Mutex::new(registry),
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
        });
        for line in [
            "hodei_jobs_submitted_total 2",
            "hodei_jobs_finished_total{outcome=\"timed_out\"} 1",
            "hodei_log_lines_ingested_total 3",
            "hodei_log_ingested_bytes_total 120",
            "hodei_jobs_queued 4",
            "hodei_agents_connected 2",
            "hodei_agents_draining 1",
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
