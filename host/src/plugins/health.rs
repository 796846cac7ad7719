//! How a loaded plugin is doing: calls, errors, latency, the last failure,
//! and the backoff that keeps a broken plugin from being called in a tight
//! loop. Shared by every world whose calls sit on a hot path (policies,
//! maskers), so both count and back off by the same rules.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::policy::CallError;
use crate::domain::Timestamp;

/// Consecutive failures before a plugin is left out for a while.
pub const FAILURES_BEFORE_BACKOFF: u32 = 3;
/// First backoff; doubles on every further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The last failure of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// Which export failed.
    pub function: &'static str,
    /// Why.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}

#[derive(Debug)]
struct Counters {
    calls: u64,
    errors: u64,
    consecutive_failures: u32,
    /// The function of the current failure streak: only its success ends
    /// the streak (a plugin whose `configure` works and `decide` traps on
    /// every decision keeps failing).
    failing: Option<&'static str>,
    backoff: Duration,
    disabled_until: Option<Instant>,
    last_error: Option<LastError>,
    latency_us: hdrhistogram::Histogram<u64>,
}

/// A plugin's health (see the module docs), and the series it feeds in
/// `/metrics` (`world`, `plugin`), if any.
#[derive(Debug)]
pub struct Health(Mutex<Counters>, Option<(&'static str, String)>);

/// What the API shows of a plugin's health.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Milliseconds until it is tried again, when backing off.
    pub disabled_for_ms: Option<u128>,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// Median call latency, µs.
    pub p50_us: u64,
    /// 99th percentile call latency, µs.
    pub p99_us: u64,
}

impl Default for Health {
    fn default() -> Self {
        Self(
            Mutex::new(Counters {
                calls: 0,
                errors: 0,
                consecutive_failures: 0,
                failing: None,
                backoff: FIRST_BACKOFF,
                disabled_until: None,
                last_error: None,
                latency_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                    .expect("static histogram bounds are valid"),
            }),
            None,
        )
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The health of plugin `name` of `world` (`policy`, `masker`), whose
    /// calls also show in `/metrics`.
    pub fn for_plugin(world: &'static str, name: &str) -> Self {
        Self(Self::default().0, Some((world, name.to_owned())))
    }

    /// False while the plugin is backing off.
    pub fn enabled(&self) -> bool {
        self.lock()
            .disabled_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Counts a successful call of `function` that took `elapsed`.
    pub fn record_success(&self, function: &'static str, elapsed: Duration) {
        let mut health = self.lock();
        health.calls += 1;
        if health.failing.is_none_or(|failing| failing == function) {
            health.failing = None;
            health.consecutive_failures = 0;
            health.backoff = FIRST_BACKOFF;
            health.disabled_until = None;
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        health.latency_us.saturating_record(micros.max(1));
        if let Some((world, plugin)) = &self.1 {
            crate::metrics::instruments().plugin_call(world, plugin, Some(elapsed));
        }
    }

    /// Counts a failed call and keeps it as the last error; answers the
    /// backoff started by this failure, if one did.
    pub fn record_failure(&self, error: &CallError) -> Option<Duration> {
        if let Some((world, plugin)) = &self.1 {
            crate::metrics::instruments().plugin_call(world, plugin, None);
        }
        let mut health = self.lock();
        health.calls += 1;
        health.errors += 1;
        health.consecutive_failures += 1;
        health.failing = Some(error.function);
        health.last_error = Some(LastError {
            function: error.function,
            message: error.message.clone(),
            at: Timestamp::now().to_rfc3339(),
        });
        (health.consecutive_failures >= FAILURES_BEFORE_BACKOFF).then(|| {
            let backoff = health.backoff;
            health.disabled_until = Some(Instant::now() + backoff);
            health.backoff = (backoff * 2).min(MAX_BACKOFF);
            backoff
        })
    }

    /// The counters as the API shows them.
    pub fn view(&self) -> HealthView {
        let health = self.lock();
        HealthView {
            calls: health.calls,
            errors: health.errors,
            consecutive_failures: health.consecutive_failures,
            disabled_for_ms: health
                .disabled_until
                .and_then(|until| until.checked_duration_since(Instant::now()))
                .map(|left| left.as_millis()),
            last_error: health.last_error.clone(),
            p50_us: health.latency_us.value_at_quantile(0.5),
            p99_us: health.latency_us.value_at_quantile(0.99),
        }
    }
}
