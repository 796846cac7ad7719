//! Scheduling policies: the `hodei:scheduler` world.
//!
//! For every placement decision the host calls the component's `decide`
//! once over all candidate workers; the SDK checks the hard constraints
//! ([`hard_constraints`]) over them in one pass, runs the policy's filter
//! over the workers that keep them, then its score over those that passed,
//! and the host places the job on the highest score (ties go to the earlier
//! worker). The WIT passes workers as columns of numbers; this module turns
//! them into one [`Worker`] per candidate so a policy is written one worker
//! at a time, and turns the answers back into the WIT shape (reasons
//! deduplicated into a table, one score per accepted worker).
//!
//! Implement [`Policy`], then `hodei_plugin_sdk::export_policy!(MyPolicy);`.
//! Test with [`testing`] on the host target.

#[doc(hidden)]
pub mod bindings;
mod columns;
mod export;
mod job;
pub mod testing;
mod verdicts;
mod worker;

#[doc(hidden)]
pub use export::Exported;
pub use job::Job;
pub use verdicts::Verdicts;
pub use worker::Worker;

use std::fmt;
use std::sync::Arc;

/// A scheduling policy, written one worker at a time.
///
/// One instance lives in the component, created by [`Policy::configure`]; the
/// host calls `decide` (so `filter` and `score`) many times on it. Wasm is
/// single-threaded, so `&self` methods need no locking; keep the instance
/// immutable after `configure` so a decision depends only on its inputs.
pub trait Policy: Sized + 'static {
    /// A short, stable name, e.g. `binpack`; what the host shows.
    const NAME: &'static str;

    /// Label keys whose values the policy reads with [`Worker::label`],
    /// e.g. `&["zone"]`. The host sends the values of these keys only (as
    /// one small table per key, not a string per worker), so ask for what
    /// the policy uses. Default: none.
    const LABEL_KEYS: &'static [&'static str] = &[];

    /// Builds the policy from the operator's configuration string. `""` means
    /// "defaults" and should be accepted. An error refuses the configuration
    /// (the host keeps its previous policy), so say what is accepted.
    fn configure(config: &str) -> Result<Self, String>;

    /// Whether `worker` may take `job`, beyond the hard constraints: the
    /// SDK checks those first (the job's labels, a free slot, enough
    /// unreserved cpu and memory; see [`hard_constraints`]), over the
    /// columns in one pass, and asks `filter` only about the workers that
    /// keep them. The default accepts them all. Keep reasons short and
    /// stable: the host counts them across workers.
    ///
    /// The hard constraints are not the policy's to relax: the host itself
    /// refuses a placement on a worker without the slot, cpu or memory, and
    /// a job's labels are requirements, not preferences (prefer with
    /// `score`).
    fn filter(&self, job: &Job, worker: &Worker<'_>) -> Result<(), Reject> {
        let _ = (job, worker);
        Ok(())
    }

    /// How much this policy wants `job` on `worker`; the highest wins. Only
    /// called for workers that passed [`Policy::filter`].
    fn score(&self, job: &Job, worker: &Worker<'_>) -> i64;

    /// `filter` over all the workers that keep the hard constraints at
    /// once; override to see them together (e.g. to admit at most one
    /// worker per zone). Give `verdicts` one verdict per worker, in order
    /// (a missing or extra one fails the decision, and the host falls back
    /// to its own policy).
    fn filter_all<'a>(&self, job: &Job, workers: &[Worker<'a>], verdicts: &mut Verdicts<'_, 'a>) {
        for worker in workers {
            verdicts.push(self.filter(job, worker));
        }
    }

    /// `score` over the whole list of feasible workers at once; override to
    /// compare workers with each other (e.g. total running jobs per zone).
    /// The list holds only the workers that passed `filter` (never empty;
    /// each keeps its [`Worker::index`] in the full candidate list). Must
    /// return one score per worker, in order.
    fn score_all(&self, job: &Job, workers: &[Worker<'_>]) -> Vec<i64> {
        workers.iter().map(|w| self.score(job, w)).collect()
    }
}

/// Why a worker may not take a job, e.g. `missing label gpu=true`.
///
/// Cheap to make and clone: a policy usually rejects many workers for the
/// same few reasons, so a reason is either a `&'static str` or shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reject(Reason);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Reason {
    Fixed(&'static str),
    Shared(Arc<str>),
}

impl Reject {
    /// A rejection with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(Reason::Shared(Arc::from(reason.into())))
    }

    /// A rejection with a fixed reason; allocates nothing.
    pub const fn fixed(reason: &'static str) -> Self {
        Self(Reason::Fixed(reason))
    }

    /// A rejection sharing an existing reason.
    pub fn shared(reason: Arc<str>) -> Self {
        Self(Reason::Shared(reason))
    }

    /// The reason, as the host will show it.
    pub fn reason(&self) -> &str {
        match &self.0 {
            Reason::Fixed(reason) => reason,
            Reason::Shared(reason) => reason,
        }
    }

    /// The reason, owned.
    pub fn into_reason(self) -> String {
        self.reason().to_owned()
    }

    /// Whether both give the same reason: the same shared text (a pointer
    /// comparison, the usual case), or equal text.
    #[inline]
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        let (a, b) = (self.reason(), other.reason());
        std::ptr::eq(a, b) || a == b
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl From<&str> for Reject {
    fn from(reason: &str) -> Self {
        Self::new(reason)
    }
}

impl From<String> for Reject {
    fn from(reason: String) -> Self {
        Self::new(reason)
    }
}

/// The constraints every policy keeps, checked in the same order and with
/// the same reasons as the host's built-in policy: the first missing label
/// (`missing label k=v`), then `no free slot`, `not enough cpu`, `not
/// enough memory`. The SDK applies them to every worker before
/// [`Policy::filter`] (over the columns, not through this function), so a
/// filter need not call it; it is here for tests and for a policy that
/// reasons about them.
#[inline]
pub fn hard_constraints(job: &Job, worker: &Worker<'_>) -> Result<(), Reject> {
    if let Some(reason) = worker
        .missing_label_index()
        .and_then(|index| job.missing_reason(index))
    {
        Err(Reject::shared(reason))
    } else if worker.slots_free() == 0 {
        Err(Reject::fixed(columns::HARD_SLOT))
    } else if worker.cpu_free_millis() < job.cpu_millis() {
        Err(Reject::fixed(columns::HARD_CPU))
    } else if worker.memory_free_mb() < job.memory_mb() {
        Err(Reject::fixed(columns::HARD_MEMORY))
    } else {
        Ok(())
    }
}

/// Parses the common weights configuration: `""` gives `default`, and
/// `weights=<a>,<b>,...` gives one non-negative integer (0..=65535) per
/// term named in `names`. Anything else is refused with a message naming the
/// policy and the expected form.
///
/// ```
/// use hodei_plugin_sdk::policy::weights;
/// assert_eq!(weights("p", "", ["cpu", "memory"], [2, 1]), Ok([2, 1]));
/// assert_eq!(weights("p", "weights=3,4", ["cpu", "memory"], [2, 1]), Ok([3, 4]));
/// assert!(weights("p", "weights=3", ["cpu", "memory"], [2, 1]).is_err());
/// ```
pub fn weights<const N: usize>(
    policy: &str,
    config: &str,
    names: [&str; N],
    default: [i64; N],
) -> Result<[i64; N], String> {
    let config = config.trim();
    if config.is_empty() {
        return Ok(default);
    }
    config
        .strip_prefix("weights=")
        .and_then(|list| {
            list.split(',')
                .map(|w| w.trim().parse::<u16>().ok().map(i64::from))
                .collect::<Option<Vec<i64>>>()
        })
        .and_then(|w| <[i64; N]>::try_from(w).ok())
        .ok_or_else(|| {
            let form: Vec<String> = names.iter().map(|n| format!("<{n}>")).collect();
            format!(
                "{policy}: unknown configuration {config:?}; expected \"\" or \"weights={}\" (integers 0..=65535)",
                form.join(",")
            )
        })
}

/// `part / total` in thousandths, capped at 1000 (0 when `total` is 0): the
/// usual way to turn capacities of different units into comparable terms.
///
/// ```
/// use hodei_plugin_sdk::policy::per_mille;
/// assert_eq!(per_mille(1, 4), 250);
/// assert_eq!(per_mille(5, 4), 1000);
/// assert_eq!(per_mille(3, 0), 0);
/// assert_eq!(per_mille(u64::MAX / 3, u64::MAX), 333);
/// assert_eq!(per_mille(u64::MAX, u64::MAX), 1000);
/// ```
#[inline]
pub fn per_mille(part: u64, total: u64) -> i64 {
    let part = part.min(total);
    // Not `saturating_mul`: an overflow-checked u64 multiply is a 128-bit
    // one, which Wasm makes a call (`__multi3`) per use.
    let share = if total == 0 {
        0
    } else if part <= u64::MAX / 1000 {
        part * 1000 / total
    } else {
        // Both are above 2^53 here, so `total / 1000` is not 0.
        (part / (total / 1000)).min(1000)
    };
    i64::try_from(share).unwrap_or(1000)
}

/// Exports `$policy` (a type implementing [`Policy`]) as the component's
/// `hodei:scheduler/policy@0.3.0` interface. Use once, in the plugin crate's
/// `lib.rs`:
///
/// ```
/// # use hodei_plugin_sdk::policy::{Job, Policy, Worker};
/// # struct MyPolicy;
/// # impl Policy for MyPolicy {
/// #     const NAME: &'static str = "mine";
/// #     fn configure(_: &str) -> Result<Self, String> { Ok(Self) }
/// #     fn score(&self, _: &Job, _: &Worker<'_>) -> i64 { 0 }
/// # }
/// hodei_plugin_sdk::export_policy!(MyPolicy);
/// ```
///
/// `configure` replaces the stored instance on success (and keeps the old
/// one on error); a `decide` called before any successful `configure`
/// first runs `configure("")`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        // Only a Wasm build exports anything: the export names
        // (`hodei:scheduler/policy@0.3.0#decide`) are not valid native
        // symbols, and a native build is for tests.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __HodeiExportedPolicy = $crate::policy::Exported<$policy>;
            $crate::policy::bindings::export!(
                __HodeiExportedPolicy with_types_in $crate::policy::bindings
            );
        };
        // Natively, still check that the type is a policy.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_policy<P: $crate::policy::Policy>() {}
            is_policy::<$policy>();
        };
    };
}
