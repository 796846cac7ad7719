//! Workers as the scheduler sees them: identity, what they offer, what they
//! report.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a worker: the agent's own id, stable across its reconnects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reservable capacity. A job's `Resources` is what it reserves; a worker's
/// is what it offers. Every job also takes one slot.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Thousandths of a CPU core (a job's: at most 2^53 − 1).
    #[serde(default, deserialize_with = "super::integral::deserialize")]
    #[schema(maximum = 9007199254740991_u64)]
    pub cpu_millis: u64,
    /// Memory in MiB (a job's: at most 2^53 − 1).
    #[serde(default, deserialize_with = "super::integral::deserialize")]
    #[schema(maximum = 9007199254740991_u64)]
    pub memory_mb: u64,
}

impl Resources {
    /// Component-wise sum, saturating.
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_mb: self.memory_mb.saturating_add(other.memory_mb),
        }
    }

    /// Component-wise difference, saturating at zero.
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
        }
    }
}

/// What an agent said about itself when it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    /// Identity.
    pub id: WorkerId,
    /// Human-readable name.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`x86_64`).
    pub arch: String,
    /// Labels jobs can require.
    pub labels: BTreeMap<String, String>,
    /// Concurrent jobs it accepts.
    pub slots: u32,
    /// Total capacity (cpu_count × 1000, memory in MiB).
    pub capacity: Resources,
    /// The pool that provisioned it (absent for agents started by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// It runs one job and is then destroyed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
}

/// Latest figures from a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WorkerMetrics {
    /// Whole-machine CPU use, 0..100.
    pub cpu_percent: f32,
    /// Memory in use, bytes.
    pub memory_used_bytes: u64,
    /// Memory installed, bytes.
    pub memory_total_bytes: u64,
    /// The agent drains (it got SIGTERM): it finishes its jobs and takes
    /// no new one, so the scheduler places nothing on it.
    pub draining: bool,
}
