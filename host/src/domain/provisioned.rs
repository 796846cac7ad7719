//! A worker the host provisions through a provider, as its ledger row.
//!
//! The host owns the truth about such a worker: the row is written before
//! the provider is asked to create anything, so a host that crashes
//! mid-create still knows the worker exists (and destroys it if it never
//! shows up), and a container or pod with no row is an orphan.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Where a provisioned worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkerPhase {
    /// Row written; the provider has not been asked yet (or the host
    /// crashed before it answered).
    Requested,
    /// The provider created it; its agent has not registered yet.
    Starting,
    /// Its agent registered with its one-time token.
    Connected,
    /// Told to drain: it takes no new job and is destroyed once idle.
    Draining,
}

impl WorkerPhase {
    /// Every phase, in life order (for counting in the API).
    pub const ALL: [Self; 4] = [
        Self::Requested,
        Self::Starting,
        Self::Connected,
        Self::Draining,
    ];

    /// The wire name, e.g. `STARTING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Starting => "STARTING",
            Self::Connected => "CONNECTED",
            Self::Draining => "DRAINING",
        }
    }
}

/// One provisioned worker's ledger row. A destroyed worker has no row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedWorker {
    /// The worker id the host gave it (`w-…`); its agent is registered
    /// under this id.
    pub id: String,
    /// Its pool.
    pub pool: String,
    /// Where it is in its life.
    pub phase: WorkerPhase,
    /// The provider's handle (pid, container id, pod name) once created.
    pub handle: Option<String>,
    /// SHA-256 (hex) of its one-time registration token; the token itself
    /// is never stored.
    pub token_hash: String,
    /// The token is refused after this time unless already redeemed.
    pub token_expires: Timestamp,
    /// The agent that redeemed the token (its self-certified id): only it
    /// may register as this worker again.
    pub agent_id: Option<String>,
    /// When the row was written.
    pub created: Timestamp,
    /// When its agent first registered.
    pub connected: Option<Timestamp>,
    /// One job, then destroyed.
    pub ephemeral: bool,
}

impl ProvisionedWorker {
    /// Milliseconds from the row to its agent's registration.
    pub fn start_latency_ms(&self) -> Option<u64> {
        self.connected
            .map(|c| u64::try_from((c.0 - self.created.0) / 1000).unwrap_or(0))
    }
}

/// Why a registration token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No worker has this token.
    #[error("unknown registration token")]
    Unknown,
    /// Not redeemed before its time ran out.
    #[error("registration token expired")]
    Expired,
    /// Already redeemed by another agent.
    #[error("registration token already used by another agent")]
    Replayed,
}

impl ProvisionedWorker {
    /// The agent `agent_id` presents this worker's token at `now`. The
    /// first agent binds itself to the worker; later the same agent may
    /// register again (a reconnect), any other is refused.
    pub fn redeem(&mut self, agent_id: &str, now: Timestamp) -> Result<(), TokenRefusal> {
        match &self.agent_id {
            Some(bound) if bound == agent_id => Ok(()),
            Some(_) => Err(TokenRefusal::Replayed),
            None if now > self.token_expires => Err(TokenRefusal::Expired),
            None => {
                self.agent_id = Some(agent_id.to_owned());
                self.connected = Some(now);
                if matches!(self.phase, WorkerPhase::Requested | WorkerPhase::Starting) {
                    self.phase = WorkerPhase::Connected;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> ProvisionedWorker {
        ProvisionedWorker {
            id: "w-1".into(),
            pool: "p".into(),
            phase: WorkerPhase::Starting,
            handle: Some("h".into()),
            token_hash: "hash".into(),
            token_expires: Timestamp(1_000),
            agent_id: None,
            created: Timestamp(0),
            connected: None,
            ephemeral: false,
        }
    }

    #[test]
    fn a_token_binds_the_first_agent_and_refuses_the_rest() {
        let mut w = worker();
        assert_eq!(w.redeem("a", Timestamp(500)), Ok(()));
        assert_eq!(w.phase, WorkerPhase::Connected);
        assert_eq!(w.start_latency_ms(), Some(0));
        assert_eq!(
            w.redeem("a", Timestamp(5_000)),
            Ok(()),
            "the same agent reconnects"
        );
        assert_eq!(w.redeem("b", Timestamp(600)), Err(TokenRefusal::Replayed));
        let mut late = worker();
        assert_eq!(
            late.redeem("a", Timestamp(1_001)),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(late.agent_id, None);
    }
}
