//! The redb adapter's own tests (the contract suite runs from here too).

use std::sync::Arc;

use redb::Database;

use super::*;
use crate::store::codec::encode_job;

fn job() -> Job {
    Job::new(
        crate::domain::JobSpec {
            name: "n".into(),
            command: crate::domain::Command::Args(vec!["true".into()]),
            env: Default::default(),
            secrets: Default::default(),
            labels: Default::default(),
            resources: Default::default(),
            priority: 0,
            queue: crate::domain::DEFAULT_QUEUE.to_owned(),
            timeout_secs: None,
            max_attempts: 1,
            artifacts: Default::default(),
        },
        Timestamp::now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_honours_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("contract.redb")).unwrap();
    super::super::ledger::contract(store.ledger().as_ref()).await;
    super::super::records::contract(store.records().as_ref()).await;
    super::super::contract::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn a_file_with_a_row_per_line_is_moved_to_chunks_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.redb");
    let id = JobId::new();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut old = txn.open_table(LOGS_V1).unwrap();
            for (seq, text) in [(1_u64, &b"first"[..]), (2, b"second")] {
                let mut row = 7_i64.to_le_bytes().to_vec();
                row.push(2);
                row.extend_from_slice(text);
                old.insert((key(id), seq), row.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let lines = store.read_logs(id, 0, 10).await.unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.sequence, l.data.as_slice(), l.timestamp.0))
            .collect::<Vec<_>>(),
        vec![(1, &b"first"[..], 7), (2, &b"second"[..], 7)]
    );
    assert!(
        lines
            .iter()
            .all(|l| l.stream == crate::domain::LogStream::Stderr)
    );
    assert_eq!(store.read_logs(id, 1, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reopen.redb");
    let job = job();
    {
        let store = RedbStore::open(&path).unwrap();
        store.insert(job.clone()).await.unwrap();
    }
    // The writer thread holds the database until its queue closes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let store = loop {
        match RedbStore::open(&path) {
            Ok(store) => break store,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(store.get(job.id).await.unwrap(), Some(job));
}

#[tokio::test]
async fn a_file_from_before_the_state_index_gets_it_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unindexed.redb");
    let (waiting, mut done) = (job(), job());
    done.schedule(crate::domain::WorkerId("w".into()), Timestamp::now())
        .unwrap();
    done.start(1, Timestamp::now()).unwrap();
    done.finish(1, crate::domain::Outcome::Exited(0), None, Timestamp::now())
        .unwrap();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut jobs = txn.open_table(JOBS).unwrap();
            for job in [&waiting, &done] {
                jobs.insert(key(job.id), encode_job(job).unwrap().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let list = |state| {
        store.list(ListQuery {
            state: Some(state),
            before: None,
            limit: 10,
        })
    };
    assert_eq!(list(JobState::Pending).await.unwrap(), vec![waiting]);
    assert_eq!(list(JobState::Succeeded).await.unwrap(), vec![done]);
    assert!(list(JobState::Running).await.unwrap().is_empty());
}
