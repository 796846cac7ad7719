//! [`Verdicts`]: where a policy's filter puts its answer for each worker,
//! packed as it goes into what the host reads (a number per worker, a
//! table of distinct reasons) and the list of workers to score.

use super::{Reject, Worker};

/// One decision's verdicts under construction: [`Policy::filter_all`] gives
/// one per candidate worker, in the candidates' order, with
/// [`Verdicts::accept`] or [`Verdicts::reject`].
///
/// Nothing is kept per worker until the first rejection: while every
/// worker is accepted, the candidates themselves are what gets scored.
/// From then on a number per worker (0 for accepted, `k` for rejected
/// because of the `k`-th distinct reason) and, for an accepted worker, its
/// [`Worker`] view for scoring: a decision over thousands of workers
/// allocates at most three lists, whatever the reasons.
///
/// [`Policy::filter_all`]: super::Policy::filter_all
#[derive(Debug)]
pub struct Verdicts<'w, 'a> {
    /// The candidates, in order: the next verdict is for
    /// `workers[given]`.
    workers: &'w [Worker<'a>],
    given: usize,
    /// Distinct reasons, in order of first use: empty while no worker was
    /// rejected.
    reasons: Vec<Reject>,
    /// Once a worker was rejected, one per verdict given; empty before.
    verdicts: Vec<u32>,
    /// Once a worker was rejected, the accepted ones; empty before.
    accepted: Vec<Worker<'a>>,
}

/// What [`Verdicts`] made of a decision.
#[derive(Debug)]
pub(crate) enum Filtered<'a> {
    /// Every worker was accepted.
    All,
    /// Some were not: a verdict per worker, the reasons they name, and the
    /// accepted workers in order.
    Some {
        verdicts: Vec<u32>,
        reasons: Vec<String>,
        accepted: Vec<Worker<'a>>,
    },
}

impl<'w, 'a> Verdicts<'w, 'a> {
    /// Verdicts for `workers`, none given yet.
    pub(crate) fn new(workers: &'w [Worker<'a>]) -> Self {
        Self {
            workers,
            given: 0,
            reasons: Vec::new(),
            verdicts: Vec::new(),
            accepted: Vec::new(),
        }
    }

    /// The next worker may take the job.
    ///
    /// # Panics
    /// When every worker already has its verdict.
    #[inline]
    pub fn accept(&mut self) {
        let worker = self.next();
        self.given += 1;
        if !self.reasons.is_empty() {
            self.verdicts.push(0);
            self.accepted.push(worker);
        }
    }

    /// The next worker may not take the job, because of `reject`.
    ///
    /// # Panics
    /// When every worker already has its verdict.
    #[inline]
    pub fn reject(&mut self, reject: Reject) {
        let _ = self.next();
        if self.reasons.is_empty() {
            // The first rejection: every verdict before it accepted.
            let (all, given) = (self.workers.len(), self.given);
            self.verdicts.reserve_exact(all);
            self.verdicts.resize(given, 0);
            self.accepted.reserve_exact(all - given);
            self.accepted.extend_from_slice(&self.workers[..given]);
        }
        self.given += 1;
        // A policy gives few distinct reasons, usually shared (`&'static`
        // or one `Arc` per decision): a linear scan of them, pointer first,
        // beats any map, and a reason is kept once, not once per worker.
        let reasons = &mut self.reasons;
        let index = match reasons.iter().position(|r| r.same_as(&reject)) {
            Some(index) => index,
            None => {
                reasons.push(reject);
                reasons.len() - 1
            }
        };
        self.verdicts
            .push(u32::try_from(index + 1).expect("fewer than 2^32 distinct reasons"));
    }

    /// [`Verdicts::accept`] or [`Verdicts::reject`], as `verdict` says.
    #[inline]
    pub fn push(&mut self, verdict: Result<(), Reject>) {
        match verdict {
            Ok(()) => self.accept(),
            Err(reject) => self.reject(reject),
        }
    }

    /// How many workers have their verdict.
    pub fn len(&self) -> usize {
        self.given
    }

    /// Whether no worker has its verdict yet.
    pub fn is_empty(&self) -> bool {
        self.given == 0
    }

    /// The worker the next verdict is for.
    #[inline]
    fn next(&self) -> Worker<'a> {
        match self.workers.get(self.given) {
            Some(worker) => *worker,
            None => panic!(
                "filter_all gave more verdicts than the {} workers",
                self.workers.len()
            ),
        }
    }

    /// The verdicts, the reasons table and the accepted workers.
    ///
    /// # Panics
    /// When a worker has no verdict (the call traps and the host falls
    /// back, which beats placing on a guess).
    pub(crate) fn finish(self) -> Filtered<'a> {
        assert!(
            self.given == self.workers.len(),
            "filter_all gave {} verdicts for {} workers",
            self.given,
            self.workers.len()
        );
        if self.reasons.is_empty() {
            return Filtered::All;
        }
        Filtered::Some {
            verdicts: self.verdicts,
            reasons: self.reasons.into_iter().map(Reject::into_reason).collect(),
            accepted: self.accepted,
        }
    }
}
