//! API tokens: their format, their records, and the view every request is
//! checked against.
//!
//! A token is `hodei_` + 30 random base62 characters + a 6-character
//! checksum of those (from their SHA-256), so a token cut or mistyped is
//! refused without a lookup and the pattern masker's `hodei-api-token` rule
//! recognises one in a job's output. Only the token's SHA-256 is stored (in
//! the store's records, kind `api_tokens`, keyed by that hash); the token
//! itself is shown once, when it is created.
//!
//! Every host keeps the tokens in memory and reloads them from the store
//! every [`REFRESH`], so a token created or revoked on another host sharing
//! PostgreSQL counts here within that time; a revocation on this host
//! counts at once. A revoked token's open SSE streams are ended (see
//! [`Authorized::revoked`]). Last use is kept in memory and written to the
//! store at most once per [`TOUCH_EVERY`] per token.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::Scope;
use crate::domain::Timestamp;
use crate::store::{RecordStore, RecordUpdate, StoreError};

/// Prefix of every API token.
pub const TOKEN_PREFIX: &str = "hodei_";
/// Record kind of API tokens.
const KIND: &str = "api_tokens";
/// Random characters after the prefix.
const RANDOM_CHARS: usize = 30;
/// Checksum characters at the end.
const CHECKSUM_CHARS: usize = 6;
/// How often the view is reloaded from the store.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How often a token's last use is written to the store.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether the REST API asks for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every route but the public ones needs a token with its scope.
    Tokens,
    /// No checks: anyone who reaches the port may do anything. Only for a
    /// host on loopback, tests, and benchmarks.
    Off,
}

/// A token as stored (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id, `tok_…`: what lists show and what revocation names.
    pub id: String,
    /// What the creator called it.
    pub name: String,
    /// What it allows.
    pub scopes: BTreeSet<Scope>,
    /// When it was created.
    pub created: Timestamp,
    /// The id of the token that created it (none for the host's own).
    pub created_by: Option<String>,
    /// When it stops working, if ever.
    pub expires: Option<Timestamp>,
    /// When it was last used (to the minute).
    pub last_used: Option<Timestamp>,
    /// When it was revoked.
    pub revoked: Option<Timestamp>,
}

impl ApiToken {
    /// Whether this token's scopes include `scope` (`admin` includes all).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// A request's proof of who it is, put in the request's extensions by the
/// guard.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The token's public id (`tok_…`), `None` when auth is off.
    pub token_id: Option<String>,
    /// Its scopes.
    pub scopes: BTreeSet<Scope>,
    /// Turns `true` when the token is revoked: streams end then.
    pub revoked: Option<watch::Receiver<bool>>,
}

impl Authorized {
    /// A caller with every scope (auth off).
    pub fn anyone() -> Self {
        Self {
            token_id: None,
            scopes: Scope::ALL.into_iter().collect(),
            revoked: None,
        }
    }

    /// Whether the caller may `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// Why a request's token was not accepted (the message says which).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this route needs an API token: send `Authorization: Bearer hodei_…`")]
    Missing,
    /// Not a token of this format.
    #[error("malformed API token (expected hodei_ followed by 36 characters)")]
    Malformed,
    /// A well-formed token this installation does not know.
    #[error("unknown API token")]
    Unknown,
    /// Past its expiry.
    #[error("API token {0} has expired")]
    Expired(String),
    /// Revoked.
    #[error("API token {0} was revoked")]
    Revoked(String),
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The creator lacks a scope it asked to grant.
    #[error("a token cannot grant the scope {0} that its creator lacks")]
    NotAllowed(Scope),
    /// Nothing to grant, or a bad name.
    #[error("{0}")]
    Invalid(String),
    /// The store failed; nothing was created.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn checksum(random: &[u8]) -> String {
    let digest = Sha256::digest(random);
    let mut n = u64::from(u32::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]));
    (0..CHECKSUM_CHARS)
        .map(|_| {
            let c = BASE62[usize::try_from(n % 62).unwrap_or(0)];
            n /= 62;
            char::from(c)
        })
        .collect()
}

/// A fresh token.
pub(crate) fn generate() -> String {
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_CHARS)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect();
    format!("{TOKEN_PREFIX}{random}{}", checksum(random.as_bytes()))
}

/// Whether `token` has the format and a matching checksum.
pub fn well_formed(token: &str) -> bool {
    let Some(body) = token.strip_prefix(TOKEN_PREFIX) else {
        return false;
    };
    body.len() == RANDOM_CHARS + CHECKSUM_CHARS
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
        && checksum(&body.as_bytes()[..RANDOM_CHARS]) == body[RANDOM_CHARS..]
}

/// The key a token is stored under.
pub(crate) fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tokens of this installation (see the module docs).
#[derive(Debug)]
pub struct ApiTokens {
    mode: AuthMode,
    records: Arc<dyn RecordStore>,
    /// By hash.
    view: RwLock<HashMap<String, ApiToken>>,
    /// By token id: fires when the token is revoked.
    revocations: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// By token id: when its last use was last written.
    touched: Mutex<HashMap<String, Instant>>,
    /// Submits per second allowed to one token (0: no limit), and the
    /// buckets that enforce it.
    submit_rate: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A token bucket: `level` submits available, refilled at the rate, up
/// to one second's worth (the burst).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl ApiTokens {
    /// Loads the tokens from `records`.
    pub async fn load(mode: AuthMode, records: Arc<dyn RecordStore>) -> Result<Self, StoreError> {
        let tokens = Self {
            mode,
            records,
            view: RwLock::default(),
            revocations: Mutex::default(),
            touched: Mutex::default(),
            submit_rate: 0,
            buckets: Mutex::default(),
        };
        tokens.refresh().await?;
        Ok(tokens)
    }

    /// Limits each token to `per_second` submits (a burst of one second's
    /// worth); 0: no limit.
    #[must_use]
    pub fn with_submit_rate(mut self, per_second: u32) -> Self {
        self.submit_rate = per_second;
        self
    }

    /// Takes one submit from `token_id`'s bucket; `Err` with how long until
    /// one is available when it is empty. Other tokens, and reads, are not
    /// affected.
    pub fn take_submit(&self, token_id: &str) -> Result<(), Duration> {
        if self.submit_rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.submit_rate);
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(token_id.to_owned()).or_insert(Bucket {
            level: rate,
            at: now,
        });
        bucket.level =
            (bucket.level + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.level >= 1.0 {
            bucket.level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.level) / rate))
        }
    }

    /// Whether requests are checked at all.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Reloads the view from the store; ends the streams of tokens revoked
    /// meanwhile (on any host).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut fresh = HashMap::new();
        for (key, doc) in self.records.list(KIND).await? {
            match serde_json::from_slice::<ApiToken>(&doc) {
                Ok(token) => {
                    fresh.insert(key, token);
                }
                Err(err) => tracing::error!(%err, "unreadable API token record; ignored"),
            }
        }
        let mut view = self.view.write().unwrap_or_else(PoisonError::into_inner);
        // Merged, never replaced: a token created or revoked here while the
        // list was read must not vanish or come back. Tokens are never
        // deleted, only revoked, so nothing is lost by keeping extras.
        for (key, mut token) in fresh {
            if let Some(known) = view.get(&key) {
                token.last_used = token.last_used.max(known.last_used);
                token.revoked = token.revoked.or(known.revoked);
            }
            view.insert(key, token);
        }
        let live: BTreeSet<&str> = view
            .values()
            .filter(|t| t.revoked.is_none())
            .map(|t| t.id.as_str())
            .collect();
        let mut revocations = lock(&self.revocations);
        revocations.retain(|id, sender| {
            if live.contains(id.as_str()) {
                true
            } else {
                let _ = sender.send(true);
                false
            }
        });
        Ok(())
    }

    /// Reloads every [`REFRESH`] until the process ends.
    pub fn spawn_refresh(self: &Arc<Self>) {
        super::spawn_refresh(self, REFRESH, "the API tokens", |tokens| async move {
            tokens.refresh().await
        });
    }

    /// Checks a bearer token at `now`.
    pub fn authenticate(
        self: &Arc<Self>,
        bearer: Option<&str>,
        now: Timestamp,
    ) -> Result<Authorized, AuthError> {
        let token = bearer.ok_or(AuthError::Missing)?;
        if !well_formed(token) {
            return Err(AuthError::Malformed);
        }
        let key = hash(token);
        let found = {
            let mut view = self.view.write().unwrap_or_else(PoisonError::into_inner);
            let found = view.get_mut(&key).ok_or(AuthError::Unknown)?;
            if found.revoked.is_some() {
                return Err(AuthError::Revoked(found.id.clone()));
            }
            if found.expires.is_some_and(|at| at <= now) {
                return Err(AuthError::Expired(found.id.clone()));
            }
            found.last_used = Some(now);
            found.clone()
        };
        self.touch(&key, &found);
        let revoked = lock(&self.revocations)
            .entry(found.id.clone())
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        Ok(Authorized {
            token_id: Some(found.id),
            scopes: found.scopes,
            revoked: Some(revoked),
        })
    }

    /// Writes a token's last use, at most once per [`TOUCH_EVERY`].
    fn touch(self: &Arc<Self>, key: &str, token: &ApiToken) {
        {
            let mut touched = lock(&self.touched);
            let due = touched
                .get(&token.id)
                .is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
            if !due {
                return;
            }
            touched.insert(token.id.clone(), Instant::now());
        }
        let (records, key, used) = (Arc::clone(&self.records), key.to_owned(), token.last_used);
        tokio::spawn(async move {
            let change = Box::new(move |old: Option<&[u8]>| {
                let Some(mut stored) = old.and_then(|d| serde_json::from_slice::<ApiToken>(d).ok())
                else {
                    return RecordUpdate::Keep;
                };
                stored.last_used = stored.last_used.max(used);
                serde_json::to_vec(&stored).map_or(RecordUpdate::Keep, RecordUpdate::Put)
            });
            if let Err(err) = records.update(KIND, &key, change).await {
                tracing::debug!(%err, "cannot record a token's last use");
            }
        });
    }

    /// Longest lifetime a token may be given.
    pub const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

    /// Creates a token for `by` (the caller; `None` for the host itself)
    /// with `scopes`, valid for `ttl` when given. Answers the token (shown
    /// once) and its record. Durable when it returns.
    pub async fn create(
        &self,
        by: Option<&Authorized>,
        name: &str,
        scopes: BTreeSet<Scope>,
        ttl: Option<Duration>,
    ) -> Result<(String, ApiToken), CreateError> {
        if scopes.is_empty() {
            return Err(CreateError::Invalid(
                "a token needs at least one scope".into(),
            ));
        }
        if name.is_empty() || name.chars().count() > 128 {
            return Err(CreateError::Invalid(
                "a token's name is 1 to 128 characters".into(),
            ));
        }
        if ttl.is_some_and(|ttl| ttl.is_zero() || ttl.as_secs() > Self::MAX_TTL_SECS) {
            // Past that, its expiry is no time RFC 3339 can write.
            return Err(CreateError::Invalid(format!(
                "a token's ttl_secs is 1 to {} (100 years)",
                Self::MAX_TTL_SECS
            )));
        }
        if let Some(by) = by
            && let Some(lacking) = scopes.iter().find(|s| !by.allows(**s))
        {
            return Err(CreateError::NotAllowed(*lacking));
        }
        let token = generate();
        let now = Timestamp::now();
        let record = ApiToken {
            id: format!("tok_{}", &hash(&token)[..12]),
            name: name.to_owned(),
            scopes,
            created: now,
            created_by: by.and_then(|b| b.token_id.clone()),
            expires: ttl.map(|ttl| now.plus(ttl)),
            last_used: None,
            revoked: None,
        };
        let key = hash(&token);
        let doc = serde_json::to_vec(&record).map_err(StoreError::backend)?;
        self.records.put(KIND, &key, doc).await?;
        self.view
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, record.clone());
        Ok((token, record))
    }

    /// Every token, newest first (revoked ones included, marked).
    pub fn list(&self) -> Vec<ApiToken> {
        let mut all: Vec<ApiToken> = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        all
    }

    /// Revokes token `id`: refused from now on, here at once and on other
    /// hosts within [`REFRESH`]; its open streams end. `false` when no
    /// such token exists.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let key = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(key, _)| key.clone());
        let Some(key) = key else {
            return Ok(false);
        };
        let now = Timestamp::now();
        let change = Box::new(move |old: Option<&[u8]>| {
            let Some(mut stored) = old.and_then(|d| serde_json::from_slice::<ApiToken>(d).ok())
            else {
                return RecordUpdate::Keep;
            };
            stored.revoked.get_or_insert(now);
            serde_json::to_vec(&stored).map_or(RecordUpdate::Keep, RecordUpdate::Put)
        });
        self.records.update(KIND, &key, change).await?;
        if let Some(token) = self
            .view
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&key)
        {
            token.revoked.get_or_insert(now);
        }
        if let Some(sender) = lock(&self.revocations).remove(id) {
            let _ = sender.send(true);
        }
        Ok(true)
    }

    /// The token in `path` if it is still valid, else a new admin token
    /// written there (0600). How a host on loopback lets the CLI on the
    /// same machine in with no token handling by the user.
    pub async fn ensure_admin_file(self: &Arc<Self>, path: &std::path::Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Ok(existing) = std::fs::read_to_string(path)
            && self
                .authenticate(Some(existing.trim()), Timestamp::now())
                .is_ok_and(|a| a.allows(Scope::Admin))
        {
            return Ok(());
        }
        let (token, record) = self
            .create(None, "local admin (data dir)", [Scope::Admin].into(), None)
            .await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(token.as_bytes())?;
        tracing::info!(path = %path.display(), token = %record.id, "wrote an admin API token");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_a_checksum_that_catches_a_changed_character() {
        let token = generate();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 36);
        assert!(well_formed(&token));
        let mut bytes = token.clone().into_bytes();
        let i = TOKEN_PREFIX.len() + 3;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&String::from_utf8(bytes).unwrap()));
        assert!(!well_formed(&token[..token.len() - 1]));
        assert!(!well_formed("hodei_"));
        assert_ne!(generate(), token);
    }

    #[test]
    fn admin_allows_every_scope_and_scopes_parse_from_their_names() {
        let admin = Authorized {
            token_id: None,
            scopes: [Scope::Admin].into(),
            revoked: None,
        };
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("jobs:write".parse::<Scope>().is_err());
    }
}
