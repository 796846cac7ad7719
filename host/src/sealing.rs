//! Job secrets at rest: sealed with an AEAD before they reach the store,
//! opened only where they are used (the assignment sent to the agent, the
//! masker chain's session for the job).
//!
//! A sealed value is `hodei-sealed:v1:KID:BASE64`, where `BASE64` holds a
//! random 96-bit nonce and the ChaCha20-Poly1305 ciphertext of the value
//! (ring's implementation, already in the dependency tree through rustls),
//! with the job-independent associated data `hodei secret v1`; `KID` is the
//! first 8 hex digits of the key's SHA-256, so a host knows which of its
//! keys opens a value. A copy of the redb file or a dump of PostgreSQL holds
//! no secret value, and tampering with a sealed value makes it fail to
//! open rather than decrypt to something else.
//!
//! The key is 32 random bytes, base64, read from `--secrets-key-file`
//! (default `DATA_DIR/secrets.key`, created 0600 on first start), kept
//! outside the database. Hosts sharing PostgreSQL must share the key file.
//! Rotation: start the hosts with the new key as `--secrets-key-file` and
//! the old one in `--secrets-previous-key-files`; new secrets are sealed
//! with the new key, older ones still open, and once the jobs submitted
//! before the rotation have ended (their secrets are wiped then) the old
//! key can go.
//!
//! Values without the prefix (jobs stored before sealing existed) are
//! taken as they are.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// What every sealed value starts with.
pub const PREFIX: &str = "hodei-sealed:v1:";
const AAD: &[u8] = b"hodei secret v1";
/// Label of the key grants are signed with.
const GRANT_LABEL: &[u8] = b"hodei grant v1";

/// A sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed with a key this host does not have.
    #[error(
        "sealed with key {0}, which this host does not have (see --secrets-previous-key-files)"
    )]
    UnknownKey(String),
    /// Not a well-formed sealed value, or altered.
    #[error("a sealed secret is damaged or was altered")]
    Damaged,
}

struct Key {
    id: String,
    key: LessSafeKey,
    /// HMAC-SHA256 key for grants (see [`Sealer::grant`]), derived from
    /// the same secret under its own label, so it is never the AEAD key.
    grant: ring::hmac::Key,
}

/// The host's secrets key(s).
pub struct Sealer {
    current: Key,
    previous: Vec<Key>,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key", &self.current.id)
            .field("previous", &self.previous.len())
            .finish()
    }
}

fn key(bytes: &[u8]) -> anyhow::Result<Key> {
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .map_err(|_| anyhow::anyhow!("a secrets key must be 32 bytes (base64 in its file)"))?;
    let mut derived = Sha256::new();
    derived.update(GRANT_LABEL);
    derived.update(bytes);
    Ok(Key {
        id: format!("{:x}", Sha256::digest(bytes))[..8].to_owned(),
        key: LessSafeKey::new(unbound),
        grant: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derived.finalize()),
    })
}

fn read_key(path: &Path) -> anyhow::Result<Key> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secrets key {}", path.display()))?;
    let bytes = STANDARD
        .decode(text.trim())
        .with_context(|| format!("{} is not base64", path.display()))?;
    key(&bytes).with_context(|| format!("bad secrets key in {}", path.display()))
}

impl Sealer {
    /// The key in `path` (created, 0600, when missing) and older keys that
    /// still open values sealed before a rotation.
    pub fn load(path: &Path, previous: &[std::path::PathBuf]) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        if !path.exists() {
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| anyhow::anyhow!("no randomness for a secrets key"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create the secrets key {}", path.display()))?;
            file.write_all(STANDARD.encode(bytes).as_bytes())?;
            tracing::info!(path = %path.display(), "generated the secrets key (keep it outside backups of the store)");
        }
        Ok(Self {
            current: read_key(path)?,
            previous: previous
                .iter()
                .map(|p| read_key(p))
                .collect::<Result<_, _>>()?,
            random: SystemRandom::new(),
        })
    }

    /// A sealer with a key of its own (tests, benchmarks).
    pub fn ephemeral() -> Self {
        let mut bytes = [0u8; 32];
        let random = SystemRandom::new();
        let _ = random.fill(&mut bytes);
        Self {
            current: key(&bytes).expect("32 bytes make a key"),
            previous: Vec::new(),
            random,
        }
    }

    /// Seals `value` (already sealed values are left as they are).
    pub fn seal(&self, value: &str) -> String {
        if value.starts_with(PREFIX) {
            return value.to_owned();
        }
        let mut nonce = [0u8; NONCE_LEN];
        // The system RNG does not fail on Linux; a zero nonce would only
        // weaken this one value, and is still never reused with the same
        // value silently: refuse instead.
        self.random
            .fill(&mut nonce)
            .expect("the system random number generator works");
        let mut sealed = value.as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut sealed,
            )
            .expect("sealing a value under 4 GiB cannot fail");
        let mut payload = nonce.to_vec();
        payload.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(payload))
    }

    /// Opens a sealed value (a value without the prefix is returned as is).
    pub fn open(&self, value: &str) -> Result<String, OpenError> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(value.to_owned());
        };
        let (kid, data) = rest.split_once(':').ok_or(OpenError::Damaged)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == kid)
            .ok_or_else(|| OpenError::UnknownKey(kid.to_owned()))?;
        let payload = STANDARD.decode(data).map_err(|_| OpenError::Damaged)?;
        if payload.len() < NONCE_LEN {
            return Err(OpenError::Damaged);
        }
        let (nonce, sealed) = payload.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Damaged)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut sealed)
            .map_err(|_| OpenError::Damaged)?;
        String::from_utf8(plain.to_vec()).map_err(|_| OpenError::Damaged)
    }

    /// A grant for `subject`: a MAC under the current key (hex), which any
    /// host holding the key file accepts with [`Sealer::check_grant`], even
    /// after a restart (an artifact transfer's proof of its job attempt).
    pub fn grant(&self, subject: &str) -> String {
        let tag = ring::hmac::sign(&self.current.grant, subject.as_bytes());
        format!("{}.{}", self.current.id, hex(tag.as_ref()))
    }

    /// Whether `grant` was made by [`Sealer::grant`] for `subject` with the
    /// current key or a previous one.
    pub fn check_grant(&self, subject: &str, grant: &str) -> bool {
        let Some((kid, tag)) = grant.split_once('.') else {
            return false;
        };
        let Some(tag) = unhex(tag) else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(|k| k.id == kid)
            .any(|k| ring::hmac::verify(&k.grant, subject.as_bytes(), &tag).is_ok())
    }

    /// Every value of `secrets` sealed.
    pub fn seal_all(
        &self,
        secrets: std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        secrets
            .into_iter()
            .map(|(name, value)| {
                let sealed = self.seal(&value);
                (name, sealed)
            })
            .collect()
    }

    /// Every value of `secrets` opened.
    pub fn open_all(
        &self,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> Result<std::collections::BTreeMap<String, String>, OpenError> {
        secrets
            .iter()
            .map(|(name, value)| Ok((name.clone(), self.open(value)?)))
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_proves_its_subject_only() {
        let sealer = Sealer::ephemeral();
        let grant = sealer.grant("job/1");
        assert!(sealer.check_grant("job/1", &grant));
        assert!(!sealer.check_grant("job/2", &grant));
        assert!(!Sealer::ephemeral().check_grant("job/1", &grant));
        assert!(!sealer.check_grant("job/1", "garbage"));
        assert!(!sealer.check_grant("job/1", ""));
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_unaltered() {
        let sealer = Sealer::ephemeral();
        let sealed = sealer.seal("hunter2-secret");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealer.seal("hunter2-secret"),
            sealed,
            "a fresh nonce each time"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), "hunter2-secret");
        assert_eq!(sealer.seal(&sealed), sealed, "sealing twice is a no-op");
        assert_eq!(sealer.open("plain-legacy").unwrap(), "plain-legacy");
        let other = Sealer::ephemeral();
        assert!(matches!(other.open(&sealed), Err(OpenError::UnknownKey(_))));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            sealer.open(&String::from_utf8(altered).unwrap()),
            Err(OpenError::Damaged)
        );
    }

    #[test]
    fn a_rotated_host_still_opens_values_sealed_with_its_previous_key() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
        let before = Sealer::load(&old, &[]).unwrap();
        let sealed = before.seal("rotate-me-please");
        let after = Sealer::load(&new, std::slice::from_ref(&old)).unwrap();
        assert_eq!(after.open(&sealed).unwrap(), "rotate-me-please");
        assert!(after.seal("x-value-1").contains(&after.current.id));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&new).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
