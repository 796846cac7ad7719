//! Agent identities: bootstrap tokens an admin creates, and the per-agent
//! credentials they turn into.
//!
//! `hodei agent-token create --name N --pool P --ttl 15m --uses 1` makes a
//! token of the API tokens' format (`hodei_` + random + checksum, so the
//! pattern masker recognises a leaked one); only its SHA-256 is stored, in
//! the store's records (kind `agent_tokens`). An agent presents it as its
//! bearer token. The first time an agent (an `agent_id`, proved by the
//! agent's secret, see agent.proto) presents it, the token is *redeemed*:
//! in one store transaction (a write transaction on redb, a row lock on
//! PostgreSQL, see `RecordStore::update`) the host checks expiry, uses left,
//! the bound name and pool, and binds the agent id to it. That binding is
//! the agent's credential: from then on the same token is accepted from
//! that agent id only (reconnects, failover to another host), until the
//! credential is revoked; any other agent gets UNAUTHENTICATED once the
//! uses are spent. So 32 agents racing for a one-use token get exactly one
//! credential.
//!
//! Expiry bounds redemption, not the credential: a bound agent stays until
//! revoked. Revoking a credential closes that agent's live stream: every
//! host reloads the revoked set from the store every [`REFRESH`] (at once on
//! the host that revoked) and wakes the sessions, which end with
//! UNAUTHENTICATED; the worker's jobs then follow the lost-agent rules.
//! Revoking a token stops further redemptions; agents already bound keep
//! their credentials (revoke them one by one).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::tokens::{generate, hash, well_formed};
use crate::domain::Timestamp;
use crate::store::{RecordStore, RecordUpdate, StoreError};

/// Record kind of bootstrap tokens (keyed by the token's hash).
const KIND: &str = "agent_tokens";
/// How often the revoked set is reloaded from the store.
pub const REFRESH: Duration = Duration::from_millis(500);

/// How the agent gateway authenticates agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AgentAuthMode {
    /// The shared agent token (`DATA_DIR/agent.token`), bootstrap tokens
    /// and provisioned workers' registration tokens.
    Shared,
    /// Bootstrap tokens and registration tokens only: the shared token is
    /// refused.
    Tokens,
    /// As `tokens`, and every agent must present a client certificate from
    /// `--client-ca` (mutual TLS).
    Strict,
}

/// An agent bound to a bootstrap token: its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCredential {
    /// The agent id the token was redeemed by.
    pub agent_id: String,
    /// The name the agent registered with.
    pub name: String,
    /// When it redeemed the token.
    pub bound: Timestamp,
    /// When it last connected.
    pub last_used: Timestamp,
    /// When the credential was revoked.
    pub revoked: Option<Timestamp>,
}

/// A bootstrap token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapToken {
    /// Public id, `atk_…`.
    pub id: String,
    /// The agent name it may be redeemed by, if bound to one.
    pub name: Option<String>,
    /// The pool its agents join (their `pool` label), if bound to one.
    pub pool: Option<String>,
    /// When it was created.
    pub created: Timestamp,
    /// The API token that created it.
    pub created_by: Option<String>,
    /// Redemptions after this are refused.
    pub expires: Option<Timestamp>,
    /// How many agents may redeem it.
    pub uses: u32,
    /// When it was revoked (no more redemptions).
    pub revoked: Option<Timestamp>,
    /// The agents that redeemed it.
    pub agents: Vec<AgentCredential>,
}

/// Why a token was not accepted. Shown to the agent (UNAUTHENTICATED):
/// none of it tells an attacker more than "no".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Malformed, or not a bootstrap token of this installation.
    #[error("unknown agent token")]
    Unknown,
    /// The token was revoked.
    #[error("the agent token was revoked")]
    Revoked,
    /// This agent's credential was revoked.
    #[error("this agent's credential was revoked")]
    CredentialRevoked,
    /// Past its expiry, for an agent not yet bound.
    #[error("the agent token expired")]
    Expired,
    /// Every use is spent by other agents.
    #[error("the agent token was already used")]
    Used,
    /// Bound to another agent name.
    #[error("the agent token is for another agent name")]
    WrongName,
    /// Bound to another pool.
    #[error("the agent token is for another pool")]
    WrongPool,
}

/// What an accepted agent is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The bootstrap token's id.
    pub token_id: String,
    /// The pool the agent joins, if the token names one.
    pub pool: Option<String>,
}

/// What a redeeming agent says about itself.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Its id (proved by its secret before this is asked).
    pub agent_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its `pool` label, if it has one.
    pub pool: Option<&'a str>,
}

/// Bootstrap tokens and credentials, and the revoked set sessions watch.
#[derive(Debug)]
pub struct AgentTokens {
    records: Arc<dyn RecordStore>,
    revoked: RwLock<HashSet<String>>,
    changed: watch::Sender<u64>,
}

impl AgentTokens {
    /// Over `records`, with the revoked set loaded.
    pub async fn load(records: Arc<dyn RecordStore>) -> Result<Arc<Self>, StoreError> {
        let tokens = Arc::new(Self {
            records,
            revoked: RwLock::new(HashSet::new()),
            changed: watch::channel(0).0,
        });
        tokens.refresh().await?;
        Ok(tokens)
    }

    /// Creates a token; answers it (shown this once) and its record.
    pub async fn create(
        &self,
        name: Option<String>,
        pool: Option<String>,
        ttl: Option<Duration>,
        uses: u32,
        created_by: Option<String>,
        now: Timestamp,
    ) -> Result<(String, BootstrapToken), StoreError> {
        let token = generate();
        let key = hash(&token);
        let record = BootstrapToken {
            id: format!("atk_{}", &key[..12]),
            name,
            pool,
            created: now,
            created_by,
            expires: ttl.map(|ttl| now.plus(ttl)),
            uses: uses.max(1),
            revoked: None,
            agents: Vec::new(),
        };
        self.records.put(KIND, &key, encode(&record)).await?;
        Ok((token, record))
    }

    /// Every token, newest first.
    pub async fn list(&self) -> Result<Vec<BootstrapToken>, StoreError> {
        let mut all: Vec<BootstrapToken> = self
            .records
            .list(KIND)
            .await?
            .into_iter()
            .filter_map(|(_, doc)| serde_json::from_slice(&doc).ok())
            .collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// Accepts `token` from the agent of `claim` at `now`: redeems it on
    /// first use, recognises the bound agent afterwards. One store
    /// transaction either way.
    pub async fn admit(
        &self,
        token: &str,
        claim: Claim<'_>,
        now: Timestamp,
    ) -> Result<Result<Admitted, Refusal>, StoreError> {
        if !well_formed(token) {
            return Ok(Err(Refusal::Unknown));
        }
        let outcome: Arc<Mutex<Option<Result<Admitted, Refusal>>>> = Arc::default();
        let (agent_id, name, pool) = (
            claim.agent_id.to_owned(),
            claim.name.to_owned(),
            claim.pool.map(str::to_owned),
        );
        let decided = Arc::clone(&outcome);
        self.records
            .update(
                KIND,
                &hash(token),
                Box::new(move |doc| {
                    let Some(mut record) =
                        doc.and_then(|d| serde_json::from_slice::<BootstrapToken>(d).ok())
                    else {
                        *lock(&decided) = Some(Err(Refusal::Unknown));
                        return RecordUpdate::Keep;
                    };
                    let claim = Claim {
                        agent_id: &agent_id,
                        name: &name,
                        pool: pool.as_deref(),
                    };
                    let verdict = redeem(&mut record, claim, now);
                    let update = if verdict.is_ok() {
                        RecordUpdate::Put(encode(&record))
                    } else {
                        RecordUpdate::Keep
                    };
                    *lock(&decided) = Some(verdict);
                    update
                }),
            )
            .await?;
        let verdict = lock(&outcome).take().unwrap_or(Err(Refusal::Unknown));
        Ok(verdict)
    }

    /// Revokes the token `id`: no more redemptions. False when unknown.
    pub async fn revoke_token(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.change_where(move |record| {
            if record.id != id {
                return false;
            }
            record.revoked.get_or_insert(now);
            true
        })
        .await
    }

    /// Revokes the credential of `agent_id` and closes its live stream.
    /// False when no token was redeemed by that agent.
    pub async fn revoke_agent(&self, agent_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let agent_id = agent_id.to_owned();
        let found = self
            .change_where(move |record| {
                let Some(agent) = record.agents.iter_mut().find(|a| a.agent_id == agent_id) else {
                    return false;
                };
                agent.revoked.get_or_insert(now);
                true
            })
            .await?;
        if found {
            self.refresh().await?;
        }
        Ok(found)
    }

    /// Whether `agent_id`'s credential is revoked (as of the last refresh).
    pub fn is_revoked(&self, agent_id: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(agent_id)
    }

    /// Changes whenever the revoked set grows: sessions wait on it.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Reloads the revoked set from the store; wakes the sessions when it
    /// changed.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let revoked: HashSet<String> = self
            .list()
            .await?
            .into_iter()
            .flat_map(|t| t.agents)
            .filter(|a| a.revoked.is_some())
            .map(|a| a.agent_id)
            .collect();
        let grew = {
            let mut current = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
            let grew = !revoked.is_subset(&current);
            *current = revoked;
            grew
        };
        if grew {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Reloads every [`REFRESH`] while `self` lives, so a revocation on
    /// another host sharing the store closes streams here.
    pub fn spawn_refresh(self: &Arc<Self>) {
        super::spawn_refresh(self, REFRESH, "agent credentials", |tokens| async move {
            tokens.refresh().await
        });
    }

    /// Applies `change` to the first record it accepts, in that record's
    /// own transaction.
    async fn change_where(
        &self,
        change: impl Fn(&mut BootstrapToken) -> bool + Send + Sync + Clone + 'static,
    ) -> Result<bool, StoreError> {
        for (key, doc) in self.records.list(KIND).await? {
            let Ok(mut record) = serde_json::from_slice::<BootstrapToken>(&doc) else {
                continue;
            };
            if !change.clone()(&mut record) {
                continue;
            }
            let change = change.clone();
            self.records
                .update(
                    KIND,
                    &key,
                    Box::new(move |doc| {
                        let Some(mut record) =
                            doc.and_then(|d| serde_json::from_slice::<BootstrapToken>(d).ok())
                        else {
                            return RecordUpdate::Keep;
                        };
                        if change(&mut record) {
                            RecordUpdate::Put(encode(&record))
                        } else {
                            RecordUpdate::Keep
                        }
                    }),
                )
                .await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The decision of one admission, on the record as it is inside the
/// transaction; changes `record` when the agent is accepted.
fn redeem(
    record: &mut BootstrapToken,
    claim: Claim<'_>,
    now: Timestamp,
) -> Result<Admitted, Refusal> {
    let admitted = Admitted {
        token_id: record.id.clone(),
        pool: record.pool.clone(),
    };
    if let Some(agent) = record
        .agents
        .iter_mut()
        .find(|a| a.agent_id == claim.agent_id)
    {
        if agent.revoked.is_some() {
            return Err(Refusal::CredentialRevoked);
        }
        agent.last_used = now;
        return Ok(admitted);
    }
    if record.revoked.is_some() {
        return Err(Refusal::Revoked);
    }
    if record.expires.is_some_and(|at| now >= at) {
        return Err(Refusal::Expired);
    }
    if record.agents.len() >= record.uses as usize {
        return Err(Refusal::Used);
    }
    if record.name.as_deref().is_some_and(|n| n != claim.name) {
        return Err(Refusal::WrongName);
    }
    if let (Some(bound), Some(claimed)) = (record.pool.as_deref(), claim.pool)
        && bound != claimed
    {
        return Err(Refusal::WrongPool);
    }
    record.agents.push(AgentCredential {
        agent_id: claim.agent_id.to_owned(),
        name: claim.name.to_owned(),
        bound: now,
        last_used: now,
        revoked: None,
    });
    Ok(admitted)
}

fn encode(record: &BootstrapToken) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
