//! Bootstrap tokens against both real stores: redb files and PostgreSQL
//! (`scripts/postgres.sh`). The clock is the `now` each call is given.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::{JobStore, PgOptions, PgStore, RedbStore};

const T0: Timestamp = Timestamp(1_800_000_000_000_000);

fn claim<'a>(agent_id: &'a str, name: &'a str, pool: Option<&'a str>) -> Claim<'a> {
    Claim {
        agent_id,
        name,
        pool,
    }
}

async fn scenario(records: Arc<dyn RecordStore>) {
    let tokens = AgentTokens::load(records).await.unwrap();
    let minute = Some(Duration::from_secs(60));

    // One use: the first agent is bound, a second is refused, the first
    // comes back (a reconnect) and is recognised.
    let (once, record) = tokens
        .create(None, Some("gpu".into()), minute, 1, None, T0)
        .await
        .unwrap();
    assert!(record.id.starts_with("atk_"));
    let first = tokens
        .admit(&once, claim("a1", "n1", None), T0)
        .await
        .unwrap();
    assert_eq!(
        first,
        Ok(Admitted {
            token_id: record.id.clone(),
            pool: Some("gpu".into())
        })
    );
    assert_eq!(
        tokens
            .admit(&once, claim("a2", "n2", None), T0)
            .await
            .unwrap(),
        Err(Refusal::Used)
    );
    // The bound agent outlives the token's expiry.
    let later = T0.plus(Duration::from_secs(3600));
    assert!(
        tokens
            .admit(&once, claim("a1", "n1", None), later)
            .await
            .unwrap()
            .is_ok()
    );

    // Expiry (the injected clock), name and pool bindings.
    let (bound, _) = tokens
        .create(
            Some("web-1".into()),
            Some("web".into()),
            minute,
            5,
            None,
            T0,
        )
        .await
        .unwrap();
    let expired = T0.plus(Duration::from_secs(60));
    assert_eq!(
        tokens
            .admit(&bound, claim("b1", "web-1", Some("web")), expired)
            .await
            .unwrap(),
        Err(Refusal::Expired)
    );
    assert_eq!(
        tokens
            .admit(&bound, claim("b1", "web-2", Some("web")), T0)
            .await
            .unwrap(),
        Err(Refusal::WrongName)
    );
    assert_eq!(
        tokens
            .admit(&bound, claim("b1", "web-1", Some("gpu")), T0)
            .await
            .unwrap(),
        Err(Refusal::WrongPool)
    );
    assert!(
        tokens
            .admit(&bound, claim("b1", "web-1", Some("web")), T0)
            .await
            .unwrap()
            .is_ok()
    );

    // Unknown and malformed tokens.
    let stranger = crate::auth::tokens::generate();
    assert_eq!(
        tokens
            .admit(&stranger, claim("c", "c", None), T0)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );
    assert_eq!(
        tokens
            .admit("hodei_short", claim("c", "c", None), T0)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );

    // 32 agents race for one use: exactly one gets it.
    let (contested, contested_record) = tokens.create(None, None, None, 1, None, T0).await.unwrap();
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (tokens, token) = (Arc::clone(&tokens), contested.clone());
        racers.spawn(async move {
            let id = format!("racer-{i}");
            tokens
                .admit(&token, claim(&id, &id, None), T0)
                .await
                .unwrap()
        });
    }
    let mut won = 0;
    while let Some(verdict) = racers.join_next().await {
        match verdict.unwrap() {
            Ok(_) => won += 1,
            Err(refusal) => assert_eq!(refusal, Refusal::Used),
        }
    }
    assert_eq!(won, 1, "exactly one of 32 redemptions succeeds");
    let listed = tokens.list().await.unwrap();
    let contested_now = listed.iter().find(|t| t.id == contested_record.id).unwrap();
    assert_eq!(contested_now.agents.len(), 1);

    // Revoking a credential wakes the watchers and refuses that agent;
    // revoking a token refuses new agents but not the bound ones.
    let mut watch = tokens.watch();
    assert!(!tokens.is_revoked("a1"));
    assert!(tokens.revoke_agent("a1", T0).await.unwrap());
    assert!(watch.has_changed().unwrap());
    watch.borrow_and_update();
    assert!(tokens.is_revoked("a1"));
    assert_eq!(
        tokens
            .admit(&once, claim("a1", "n1", None), T0)
            .await
            .unwrap(),
        Err(Refusal::CredentialRevoked)
    );
    assert!(!tokens.revoke_agent("nobody", T0).await.unwrap());
    let (multi, multi_record) = tokens.create(None, None, None, 3, None, T0).await.unwrap();
    assert!(
        tokens
            .admit(&multi, claim("m1", "m1", None), T0)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(tokens.revoke_token(&multi_record.id, T0).await.unwrap());
    assert_eq!(
        tokens
            .admit(&multi, claim("m2", "m2", None), T0)
            .await
            .unwrap(),
        Err(Refusal::Revoked)
    );
    assert!(
        tokens
            .admit(&multi, claim("m1", "m1", None), T0)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(!tokens.revoke_token("atk_unknown", T0).await.unwrap());

    // What is stored is the hash, never the token.
    let stored = serde_json::to_string(&tokens.list().await.unwrap()).unwrap();
    for token in [&once, &bound, &contested, &multi] {
        assert!(!stored.contains(token.as_str()));
    }

    // Another view over the same store (another host) sees the revocation
    // on its refresh.
    let other = AgentTokens::load(Arc::clone(&tokens.records))
        .await
        .unwrap();
    assert!(other.is_revoked("a1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("agents.redb")).unwrap();
    scenario(store.records()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_on_postgres() {
    let Some(admin) = crate::store::test_database_url() else {
        return;
    };
    let url = PgStore::scratch_database(&admin, "hodei_agent_tokens")
        .await
        .unwrap();
    let store = PgStore::connect(&PgOptions {
        url: Some(url.clone()),
        ..PgOptions::default()
    })
    .await
    .unwrap();
    scenario(store.records()).await;
    PgStore::drop_database(&admin, &url).await.unwrap();
}
