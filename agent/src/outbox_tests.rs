//! Unit tests of [`super::Outbox`]: numbering, acks, batching, resend.

use super::*;

fn push(outbox: &mut Outbox, job: &str, data: &[u8]) -> Option<u64> {
    outbox.push_line(job, 1, Stream::Stdout, data.to_vec(), 0)
}

fn result(job: &str) -> JobResult {
    JobResult {
        job_id: job.into(),
        attempt: 1,
        ..Default::default()
    }
}

fn ack(job: &str, log_sequence: u64, result_stored: bool) -> Ack {
    Ack {
        job_id: job.into(),
        attempt: 1,
        log_sequence,
        result_stored,
    }
}

/// Drains the outbox like a connection would, without acks.
fn drain(outbox: &mut Outbox) -> Vec<Msg> {
    std::iter::from_fn(|| outbox.next_message())
        .filter_map(|message| message.msg)
        .collect()
}

fn sequences(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|msg| match msg {
            Msg::LogBatch(batch) => Some(batch.entries.iter().map(|e| e.sequence)),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn sequences_start_at_first_sequence_and_are_dense() {
    let mut outbox = Outbox::default();
    assert!(outbox.admit("j", 1, 41));
    assert!(
        !outbox.admit("j", 2, 1),
        "a known job id is not admitted twice"
    );
    let got: Vec<Option<u64>> = (0..3).map(|_| push(&mut outbox, "j", b"x")).collect();
    assert_eq!(got, vec![Some(41), Some(42), Some(43)]);
    assert_eq!(push(&mut outbox, "other", b"x"), None);
}

#[test]
fn started_then_logs_then_result_with_last_sequence() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 5);
    outbox.started("j", 1, 1234);
    push(&mut outbox, "j", b"a");
    push(&mut outbox, "j", b"b");
    outbox.finish(result("j"));
    assert_eq!(
        push(&mut outbox, "j", b"late"),
        None,
        "no output after the result"
    );
    let msgs = drain(&mut outbox);
    assert!(matches!(&msgs[0], Msg::JobStarted(s) if s.pid == 1234));
    assert_eq!(sequences(&msgs), vec![5, 6]);
    assert!(matches!(&msgs[2], Msg::JobResult(r) if r.last_sequence == 6));
    assert_eq!(msgs.len(), 3, "idle means nothing more to send");
}

#[test]
fn last_sequence_is_zero_without_output() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 7);
    outbox.finish(result("j"));
    let msgs = drain(&mut outbox);
    assert!(matches!(&msgs[..], [Msg::JobResult(r)] if r.last_sequence == 0));
}

#[test]
fn ack_drops_stored_entries_and_wrong_attempts_are_ignored() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    outbox.started("j", 1, 1);
    for _ in 0..5 {
        push(&mut outbox, "j", b"x");
    }
    drain(&mut outbox);
    outbox.ack(&Ack {
        attempt: 2,
        ..ack("j", 5, false)
    });
    outbox.ack(&ack("j", 3, false));
    outbox.rewind();
    assert_eq!(sequences(&drain(&mut outbox)), vec![4, 5]);
}

#[test]
fn batches_are_capped_at_64_kib() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    outbox.started("j", 1, 1);
    drain(&mut outbox);
    let line = vec![b'x'; 16 * 1024];
    for _ in 0..9 {
        push(&mut outbox, "j", &line);
    }
    let sizes: Vec<usize> = drain(&mut outbox)
        .iter()
        .map(|msg| match msg {
            Msg::LogBatch(batch) => batch.entries.iter().map(|e| e.data.len()).sum(),
            _ => 0,
        })
        .collect();
    assert_eq!(sizes, vec![MAX_BATCH_BYTES, MAX_BATCH_BYTES, 16 * 1024]);
}

#[test]
fn entries_pile_up_into_one_batch_between_sends() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    outbox.started("j", 1, 1);
    push(&mut outbox, "j", b"first");
    assert_eq!(sequences(&drain(&mut outbox)), vec![1]);
    for _ in 0..3 {
        push(&mut outbox, "j", b"more");
    }
    let msgs = drain(&mut outbox);
    assert_eq!(msgs.len(), 1);
    assert_eq!(sequences(&msgs), vec![2, 3, 4]);
}

#[test]
fn reconnect_resends_unacked_in_order_then_the_result() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    outbox.started("j", 1, 99);
    for _ in 0..4 {
        push(&mut outbox, "j", b"x");
    }
    outbox.finish(result("j"));
    assert_eq!(drain(&mut outbox).len(), 3);
    outbox.ack(&ack("j", 2, false));
    outbox.rewind();
    let msgs = drain(&mut outbox);
    assert!(
        !msgs.iter().any(|m| matches!(m, Msg::JobStarted(_))),
        "an acked job's start is not resent"
    );
    assert_eq!(sequences(&msgs), vec![3, 4]);
    assert!(matches!(msgs.last(), Some(Msg::JobResult(_))));
    assert_eq!(outbox.held().len(), 1);
}

#[test]
fn start_is_resent_until_the_host_acks_anything() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    outbox.started("j", 1, 99);
    drain(&mut outbox);
    outbox.rewind();
    assert!(matches!(&drain(&mut outbox)[..], [Msg::JobStarted(_)]));
}

#[test]
fn result_is_kept_until_result_stored() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    push(&mut outbox, "j", b"x");
    outbox.ack(&ack("j", 1, true));
    assert!(
        !outbox.is_empty(),
        "no result yet: result_stored cannot apply"
    );
    outbox.finish(result("j"));
    drain(&mut outbox);
    outbox.ack(&ack("j", 1, false));
    assert_eq!(outbox.running_job_ids(), Vec::<String>::new());
    assert_eq!(outbox.held().len(), 1, "result not stored yet");
    outbox.ack(&ack("j", 1, true));
    assert!(outbox.is_empty());
}

#[test]
fn jobs_take_turns() {
    let mut outbox = Outbox::default();
    for job in ["a", "b"] {
        outbox.admit(job, 1, 1);
        outbox.started(job, 1, 1);
    }
    let line = vec![b'x'; MAX_BATCH_BYTES];
    for _ in 0..2 {
        push(&mut outbox, "a", &line);
        push(&mut outbox, "b", &line);
    }
    let order: Vec<String> = drain(&mut outbox)
        .into_iter()
        .filter_map(|msg| match msg {
            Msg::LogBatch(batch) => Some(batch.job_id),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["a", "b", "a", "b"]);
}

#[test]
fn forget_drops_everything() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    push(&mut outbox, "j", b"x");
    assert!(!outbox.forget("j", 2));
    assert!(outbox.forget("j", 1));
    assert!(outbox.is_empty() && !outbox.has_pending());
}

#[test]
fn lines_read_before_the_start_is_known_wait_for_job_started() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    push(&mut outbox, "j", b"early");
    assert!(
        drain(&mut outbox).is_empty(),
        "nothing goes before JobStarted"
    );
    outbox.started("j", 1, 7);
    let msgs = drain(&mut outbox);
    assert!(matches!(msgs.first(), Some(Msg::JobStarted(_))), "{msgs:?}");
    assert_eq!(sequences(&msgs), vec![1]);
}

#[test]
fn a_job_that_never_started_still_delivers_its_lines_with_its_result() {
    let mut outbox = Outbox::default();
    outbox.admit("j", 1, 1);
    push(&mut outbox, "j", b"partial");
    outbox.finish(result("j"));
    let msgs = drain(&mut outbox);
    assert_eq!(sequences(&msgs), vec![1]);
    assert!(matches!(msgs.last(), Some(Msg::JobResult(_))));
}

#[test]
fn beyond_the_budget_entries_spill_to_disk_and_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 4 * 1024;
    let mut outbox = Outbox::new(dir.path().to_owned(), budget);
    outbox.admit("j", 1, 1);
    outbox.started("j", 1, 1);
    let line = |seq: u64| format!("line {seq:06} {}", "x".repeat(90)).into_bytes();
    for seq in 1..=5_000 {
        assert_eq!(push(&mut outbox, "j", &line(seq)), Some(seq));
    }
    outbox.finish(result("j"));
    let job = &outbox.jobs["j"];
    assert!(job.memory_bytes <= budget, "{} in memory", job.memory_bytes);
    assert!(job.spill.as_ref().is_some_and(|spill| spill.len() > 4_000));

    // A connection that drops everything it was handed once, then one
    // that acks every batch: each entry arrives, in order, once acked.
    let mut got = Vec::new();
    drain(&mut outbox);
    outbox.rewind();
    let mut result_seen = false;
    while let Some(msg) = outbox.next_message().and_then(|m| m.msg) {
        match msg {
            Msg::LogBatch(batch) => {
                let last = batch.entries.last().unwrap().sequence;
                got.extend(batch.entries.into_iter().map(|e| e.data));
                outbox.ack(&ack("j", last, false));
                // Refilling may pass the budget by less than one entry.
                assert!(outbox.jobs["j"].memory_bytes < budget + 200);
            }
            Msg::JobResult(result) => {
                assert_eq!(got.len(), 5_000, "the result goes after every entry");
                assert_eq!(result.last_sequence, 5_000);
                result_seen = true;
                outbox.ack(&ack("j", 5_000, true));
            }
            Msg::JobStarted(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(result_seen);
    assert_eq!(got, (1..=5_000).map(line).collect::<Vec<_>>());
    assert!(outbox.is_empty());
}
