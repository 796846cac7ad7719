//! [`Verdicts`]: where a policy's filter puts its answer for each worker,
//! packed as it goes into what the host reads (a number per worker, a
//! table of distinct reasons) and the list of workers to score.

use super::{Reject, Worker};

/// One decision's verdicts under construction: [`Policy::filter_all`] gives
/// one per candidate worker, in the candidates' order, with
/// [`Verdicts::accept`] or [`Verdicts::reject`].
///
/// Nothing is kept per worker but a number (0 for accepted, `k` for
/// rejected because of the `k`-th distinct reason) and, for an accepted
/// worker, its three-word [`Worker`] view for scoring: a decision over
/// thousands of workers allocates three lists, whatever the reasons.
///
/// [`Policy::filter_all`]: super::Policy::filter_all
#[derive(Debug)]
pub struct Verdicts<'w, 'a> {
    /// The candidates, in order: the next verdict is for
    /// `workers[verdicts.len()]`.
    workers: &'w [Worker<'a>],
    verdicts: Vec<u32>,
    /// Distinct reasons, in order of first use.
    reasons: Vec<Reject>,
    accepted: Vec<Worker<'a>>,
}

impl<'w, 'a> Verdicts<'w, 'a> {
    /// Verdicts for `workers`, none given yet.
    pub(crate) fn new(workers: &'w [Worker<'a>]) -> Self {
        Self {
            workers,
            verdicts: Vec::with_capacity(workers.len()),
            reasons: Vec::new(),
            accepted: Vec::with_capacity(workers.len()),
        }
    }

    /// The next worker may take the job.
    ///
    /// # Panics
    /// When every worker already has its verdict.
    #[inline]
    pub fn accept(&mut self) {
        let worker = self.next();
        self.verdicts.push(0);
        self.accepted.push(worker);
    }

    /// The next worker may not take the job, because of `reject`.
    ///
    /// # Panics
    /// When every worker already has its verdict.
    #[inline]
    pub fn reject(&mut self, reject: Reject) {
        let _ = self.next();
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
        self.verdicts.len()
    }

    /// Whether no worker has its verdict yet.
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty()
    }

    /// The worker the next verdict is for.
    #[inline]
    fn next(&self) -> Worker<'a> {
        match self.workers.get(self.verdicts.len()) {
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
    pub(crate) fn finish(self) -> (Vec<u32>, Vec<String>, Vec<Worker<'a>>) {
        assert!(
            self.verdicts.len() == self.workers.len(),
            "filter_all gave {} verdicts for {} workers",
            self.verdicts.len(),
            self.workers.len()
        );
        (
            self.verdicts,
            self.reasons.into_iter().map(Reject::into_reason).collect(),
            self.accepted,
        )
    }
}
