//! One job attempt's masking: its secrets, the native fallback built from
//! them, and the session it holds in each link of the chain.

use std::sync::{Arc, PoisonError};
use std::time::Instant;

use hodei_mask::SecretMasker;

use super::registry::{Chain, Link};
use crate::domain::{JobId, LogRecord};
use crate::plugins::engine::PluginEngine;
use crate::plugins::masker::{Origin, SessionHandle};
use crate::plugins::policy::CallError;

/// What replaces a line that could not be masked at all.
pub const WITHHELD: &[u8] = b"[hodei: line withheld: it could not be masked]";

/// A session open in one lane of one link.
#[derive(Debug)]
struct Opened {
    link: Arc<Link>,
    lane: usize,
    epoch: u64,
    handle: SessionHandle,
}

/// How one batch went.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Outcome {
    /// Links whose part the native masker did.
    pub fallbacks: u64,
    /// Lines withheld.
    pub withheld: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct JobMask {
    job: JobId,
    attempt: u32,
    secrets: Vec<String>,
    /// Built on first need; `Err` when it cannot be built.
    native: Option<Result<Option<SecretMasker>, ()>>,
    /// When set, every line is withheld (the secrets could not be read).
    withhold: bool,
    opened: Vec<Opened>,
    engine: Option<PluginEngine>,
    pub(super) last_used: Instant,
}

impl JobMask {
    /// The attempt's masking with the job's secret values.
    pub fn new(job: JobId, attempt: u32, secrets: Vec<String>) -> Self {
        Self {
            job,
            attempt,
            secrets,
            native: None,
            withhold: false,
            opened: Vec::new(),
            engine: None,
            last_used: Instant::now(),
        }
    }

    /// An attempt whose secrets are unknown: nothing it sends is kept.
    pub fn withholding(job: JobId, attempt: u32) -> Self {
        let mut mask = Self::new(job, attempt, Vec::new());
        mask.withhold = true;
        mask
    }

    /// Masks `lines` (job output) through `chain`.
    pub(super) fn run(
        &mut self,
        engine: &PluginEngine,
        chain: &Chain,
        lines: &mut [LogRecord],
    ) -> Outcome {
        let origins: Vec<Origin> = lines.iter().map(|l| Origin::Output(l.stream)).collect();
        self.run_with(engine, chain, lines, &origins)
    }

    /// Masks `lines` through `chain`, all as coming from `origin`.
    pub(super) fn run_as(
        &mut self,
        engine: &PluginEngine,
        chain: &Chain,
        lines: &mut [LogRecord],
        origin: Origin,
    ) -> Outcome {
        let origins = vec![origin; lines.len()];
        self.run_with(engine, chain, lines, &origins)
    }

    fn run_with(
        &mut self,
        engine: &PluginEngine,
        chain: &Chain,
        lines: &mut [LogRecord],
        origins: &[Origin],
    ) -> Outcome {
        self.last_used = Instant::now();
        self.engine.get_or_insert_with(|| engine.clone());
        self.close_outside(chain);
        let mut outcome = Outcome::default();
        if self.withhold {
            for line in lines.iter_mut() {
                line.data = WITHHELD.to_vec();
            }
            outcome.withheld = lines.len() as u64;
            return outcome;
        }
        for link in &chain.links {
            let started = Instant::now();
            let masked = if link.plugin.health.enabled() {
                self.call(engine, link, lines, origins)
            } else {
                Err(None)
            };
            match masked {
                Ok(masked) => {
                    link.plugin.health.record_success("mask", started.elapsed());
                    // `None`: the line is as it was.
                    for (line, data) in lines.iter_mut().zip(masked) {
                        if let Some(data) = data {
                            line.data = data;
                        }
                    }
                }
                Err(failure) => {
                    if let Some(error) = failure {
                        let backoff = link.plugin.health.record_failure(&error);
                        tracing::warn!(
                            plugin = %link.plugin.name, job = %self.job, attempt = self.attempt,
                            function = error.function, error = %error.message, ?backoff,
                            "masker failed; its part of this batch is masked by the host's literal masker"
                        );
                    }
                    outcome.fallbacks += 1;
                    outcome.withheld += self.mask_natively(lines);
                }
            }
        }
        outcome
    }

    /// One link's answer for `lines`, in the attempt's session of that
    /// link (opened, or re-opened after its instance was replaced, first).
    fn call(
        &mut self,
        engine: &PluginEngine,
        link: &Arc<Link>,
        lines: &[LogRecord],
        origins: &[Origin],
    ) -> Result<Vec<Option<Vec<u8>>>, Option<CallError>> {
        let key = lane_key(self.job, self.attempt);
        let (lane_index, mut lane) = link.lane(key);
        let existing = self
            .opened
            .iter()
            .position(|o| Arc::ptr_eq(&o.link, link) && o.lane == lane_index);
        let result = (|| {
            let epoch = lane.epoch;
            let handle = match existing.map(|i| &self.opened[i]) {
                Some(opened) if opened.epoch == epoch && lane.instance.is_some() => opened.handle,
                _ => {
                    let instance = link.instance(engine, &mut lane)?;
                    let handle = instance.open(engine, &self.secrets)?;
                    if let Some(i) = existing {
                        self.opened.swap_remove(i);
                    }
                    self.opened.push(Opened {
                        link: Arc::clone(link),
                        lane: lane_index,
                        epoch,
                        handle,
                    });
                    handle
                }
            };
            let refs: Vec<(Origin, &[u8])> = origins
                .iter()
                .zip(lines)
                .map(|(origin, line)| (*origin, line.data.as_slice()))
                .collect();
            link.instance(engine, &mut lane)?
                .mask(engine, handle, &refs)
        })();
        if result.is_err() {
            // A failed instance is never reused: its sessions go with it.
            lane.instance = None;
            lane.epoch += 1;
        }
        result.map_err(Some)
    }

    /// Masks `lines` with the native literal masker; answers how many had
    /// to be withheld instead.
    fn mask_natively(&mut self, lines: &mut [LogRecord]) -> u64 {
        let native = self.native.get_or_insert_with(|| {
            SecretMasker::new(&self.secrets).map_err(|err| {
                tracing::error!(job = %self.job, %err, "cannot build the native secret masker; lines are withheld");
            })
        });
        match native {
            Ok(None) => 0,
            Ok(Some(masker)) => {
                for line in lines.iter_mut() {
                    line.data = masker.mask(&line.data);
                }
                0
            }
            Err(()) => {
                for line in lines.iter_mut() {
                    line.data = WITHHELD.to_vec();
                }
                lines.len() as u64
            }
        }
    }
}

impl JobMask {
    /// Closes the sessions held in links that are no longer in `chain`
    /// (the chain was swapped), so their instances can go.
    fn close_outside(&mut self, chain: &Chain) {
        let (keep, gone): (Vec<Opened>, Vec<Opened>) = self
            .opened
            .drain(..)
            .partition(|o| chain.links.iter().any(|l| Arc::ptr_eq(l, &o.link)));
        self.opened = keep;
        self.close(gone);
    }

    fn close(&self, opened: Vec<Opened>) {
        let Some(engine) = &self.engine else {
            return;
        };
        for opened in opened {
            let mut lane = opened.link.lanes[opened.lane]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if lane.epoch == opened.epoch
                && let Some(instance) = lane.instance.as_mut()
            {
                instance.close(engine, opened.handle);
            }
        }
    }
}

/// Which lane an attempt's sessions live in.
fn lane_key(job: JobId, attempt: u32) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (job, attempt).hash(&mut hasher);
    hasher.finish()
}

impl Drop for JobMask {
    /// Closes the sessions still open in their instances.
    fn drop(&mut self) {
        let opened = std::mem::take(&mut self.opened);
        self.close(opened);
        for secret in &mut self.secrets {
            secret.clear();
        }
    }
}
