//! The contract's log part: lines stored once per sequence, in order,
//! up to the quota, and only from the current attempt.

use super::*;

pub(super) async fn logs_are_stored_once_per_sequence_in_order(store: &dyn JobStore) {
    let job = scheduled(store).await;
    assert_eq!(store.log_head(job.id).await.unwrap(), 0);
    let head = store
        .append_logs(
            job.id,
            1,
            (1..=3).map(|s| line(s, &format!("l{s}"))).collect(),
            NO_QUOTA,
        )
        .await
        .unwrap()
        .head;
    assert_eq!(head, 3);
    // A resend overlapping what is stored: duplicates are skipped.
    let head = store
        .append_logs(
            job.id,
            1,
            (2..=5).map(|s| line(s, &format!("l{s}"))).collect(),
            NO_QUOTA,
        )
        .await
        .unwrap()
        .head;
    assert_eq!(head, 5);
    // A batch that does not continue the log is refused whole.
    for jump in [
        vec![line(7, "gap")],
        vec![line(6, "ok"), line(1_000_000, "jump")],
    ] {
        let err = store
            .append_logs(job.id, 1, jump, NO_QUOTA)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Domain(DomainError::LogGap { .. })),
            "{err}"
        );
    }
    assert_eq!(store.log_head(job.id).await.unwrap(), 5);
    let all = store.read_logs(job.id, 0, 100).await.unwrap();
    assert_eq!(
        all,
        (1..=5)
            .map(|s| line(s, &format!("l{s}")))
            .collect::<Vec<_>>()
    );
    let page = store.read_logs(job.id, 2, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|l| l.sequence).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(store.read_logs(job.id, 5, 100).await.unwrap().is_empty());
}

pub(super) async fn a_log_past_its_quota_ends_with_a_marker(store: &dyn JobStore) {
    let job = scheduled(store).await;
    // Quota 10 bytes: "aaaa" + "bbbb" fit, "cccc" crosses it.
    let first = store
        .append_logs(job.id, 1, vec![line(1, "aaaa"), line(2, "bbbb")], 10)
        .await
        .unwrap();
    assert_eq!(first.head, 2);
    assert!(!first.quota_reached);
    let crossing = store
        .append_logs(job.id, 1, vec![line(3, "cccc"), line(4, "dddd")], 10)
        .await
        .unwrap();
    assert_eq!(crossing.head, 4);
    assert!(crossing.quota_reached);
    let later = store
        .append_logs(job.id, 1, vec![line(5, "eeee")], 10)
        .await
        .unwrap();
    assert_eq!(later.head, 5, "output past the quota is taken and dropped");
    assert!(!later.quota_reached, "the marker is stored once");
    let all = store.read_logs(job.id, 0, 100).await.unwrap();
    let texts: Vec<String> = all
        .iter()
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect();
    assert_eq!(
        texts,
        vec!["aaaa".to_owned(), "bbbb".to_owned(), quota_marker(10)]
    );
    assert_eq!(all[2].sequence, 3);
}

pub(super) async fn logs_of_a_stale_attempt_are_refused(store: &dyn JobStore) {
    let job = scheduled(store).await;
    let err = store
        .append_logs(job.id, 2, vec![line(1, "late")], NO_QUOTA)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::StaleAttempt { .. })
    ));
    assert_eq!(store.log_head(job.id).await.unwrap(), 0);
}
