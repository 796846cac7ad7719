//! One-time registration tokens of provisioned workers.
//!
//! A token is handed to the provider for one worker (it goes into the
//! agent's environment), and only its SHA-256 is stored, in the worker's
//! ledger row. The first agent that presents it binds itself to the worker;
//! from then on the token proves nothing without that agent's secret (see
//! `ProvisionedWorker::redeem`), so a replayed or leaked token cannot
//! register anyone else.

use sha2::{Digest, Sha256};

/// Prefix of every registration token, so the gateway tells them from the
/// shared agent token at a glance (and a log scanner can find leaks).
pub const TOKEN_PREFIX: &str = "hwt_";

/// A fresh token: the prefix and 256 random bits.
pub fn new_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What the ledger keeps of a token: its SHA-256, hex.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_only_their_hash_is_kept() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert_eq!(token_hash(&a).len(), 64);
        assert!(!token_hash(&a).contains(&a[TOKEN_PREFIX.len()..]));
    }
}
