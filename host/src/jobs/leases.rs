//! Leases: the monitor that renews the leases of this host's agents'
//! attempts, learns of cancels and settled attempts from the store, and
//! loses attempts whose lease ran out, whichever host they were on.

use std::sync::Arc;
use std::time::Duration;

use super::JobService;
use crate::agents::CANCELLED_BY_USER;
use crate::bus::Event;
use crate::domain::{EventKind, Timestamp};
use crate::scheduler::cluster::CancelSend;

/// How often leases are renewed and checked.
const MONITOR_TICK: Duration = Duration::from_millis(500);

impl JobService {
    /// Leases: renews those of the attempts on this host's agents, learns
    /// of cancels and settled attempts from the store, and loses attempts
    /// whose lease ran out, whichever host they were on. A host that just
    /// started waits one lease before losing anything, so agents have time
    /// to come back.
    pub async fn run_monitor(self: Arc<Self>) {
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(MONITOR_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for info in self.cluster().expire(self.lease) {
                tracing::warn!(worker = %info.id, "worker forgotten (silent past the lease)");
                self.record_worker_event(EventKind::WorkerLost, &info.id, info.labels);
                self.bus.publish(Event::WorkerDisconnected(info.id));
            }
            self.renew_leases().await;
            if started.elapsed() < self.lease {
                continue;
            }
            let lease_us = i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX);
            let cutoff = Timestamp(Timestamp::now().0.saturating_sub(lease_us));
            match self.store.expired_leases(cutoff).await {
                Ok(expired) => {
                    for (id, attempt) in expired {
                        self.attempt_lost(id, attempt, "agent lost").await;
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot look for expired leases"),
            }
        }
    }

    async fn renew_leases(&self) {
        for held in self.cluster().held() {
            let renewal = match self.store.renew_leases(held.attempts, held.seen).await {
                Ok(renewal) => renewal,
                Err(err) => {
                    tracing::warn!(worker = %held.worker, %err, "cannot renew leases");
                    continue;
                }
            };
            for (id, attempt) in renewal.cancel_requested {
                if let Some(link) =
                    self.cluster()
                        .cancel(&held.worker, id, attempt, CancelSend::IfNew)
                {
                    let _ = link.cancel(id, attempt, CANCELLED_BY_USER).await;
                }
            }
            for (id, attempt) in renewal.gone {
                tracing::info!(job = %id, attempt, worker = %held.worker, "attempt settled elsewhere; dropping it");
                self.drop_attempt(id, attempt, "attempt no longer current")
                    .await;
            }
        }
    }
}
