//! Who may call the REST API: API tokens with scopes, and the one
//! middleware that decides for every route.
//!
//! - [`Scope`]: what a token allows. `admin` allows everything.
//! - [`tokens`]: the tokens themselves: format (`hodei_` + random +
//!   checksum, so the pattern masker and a person recognise one), stored
//!   hashed in the store's records, an in-memory view refreshed from the
//!   store (revocations on another host sharing PostgreSQL take effect
//!   within a refresh), last use, expiry, revocation (which also ends the
//!   token's open SSE streams).
//! - [`guard`]: the axum side: every route is declared with the
//!   [`Access`] it needs ([`guard::Routes`] takes no other kind of route,
//!   so an undeclared route does not compile), and one middleware answers
//!   401 (no or bad token) or 403 (scope missing) in the API's one error
//!   shape.

pub mod agents;
pub mod guard;
pub mod tokens;

use serde::{Deserialize, Serialize};

pub use tokens::{ApiTokens, AuthMode, Authorized};

/// What a token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    /// Read jobs (list, get).
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// Submit jobs.
    #[serde(rename = "jobs:submit")]
    JobsSubmit,
    /// Cancel jobs.
    #[serde(rename = "jobs:cancel")]
    JobsCancel,
    /// Read and follow job logs.
    #[serde(rename = "logs:read")]
    LogsRead,
    /// Read workers and pools.
    #[serde(rename = "workers:read")]
    WorkersRead,
    /// Change workers (drain, pools).
    #[serde(rename = "workers:manage")]
    WorkersManage,
    /// Everything: policies, maskers, pools, tokens, and every other scope.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 7] = [
        Self::JobsRead,
        Self::JobsSubmit,
        Self::JobsCancel,
        Self::LogsRead,
        Self::WorkersRead,
        Self::WorkersManage,
        Self::Admin,
    ];

    /// The scope's name on the wire (`jobs:read`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobsRead => "jobs:read",
            Self::JobsSubmit => "jobs:submit",
            Self::JobsCancel => "jobs:cancel",
            Self::LogsRead => "logs:read",
            Self::WorkersRead => "workers:read",
            Self::WorkersManage => "workers:manage",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope {s:?}; known: {}", all.join(", "))
            })
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (liveness, the dashboard's static assets).
    Public,
    /// Any valid token, whatever its scopes (creating a token: what it may
    /// grant is checked against the creator's own scopes).
    Authenticated,
    /// A token with this scope (or `admin`).
    Scope(Scope),
}

pub use hodei_cli::token::local_token_path;

/// Calls `refresh` on the value behind `target` every `period` while that
/// value lives (a weak reference: the task does not keep it alive), so
/// changes made by another host sharing the store count here. A failed
/// refresh keeps the previous view and is logged as about `what`.
pub(crate) fn spawn_refresh<T, F, Fut>(
    target: &std::sync::Arc<T>,
    period: std::time::Duration,
    what: &'static str,
    refresh: F,
) where
    T: Send + Sync + 'static,
    F: Fn(std::sync::Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), crate::store::StoreError>> + Send,
{
    let target = std::sync::Arc::downgrade(target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(target) = target.upgrade() else {
                return;
            };
            if let Err(err) = refresh(target).await {
                tracing::warn!(%err, "cannot reload {what}; keeping the previous view");
            }
        }
    });
}
