//! Reconnect delays: exponential backoff with jitter, so that many agents
//! cut off together do not dial a recovering host in lockstep.

use std::time::Duration;

use rand::Rng;

const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(5);

/// The delay before the next reconnect attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { current: FIRST }
    }
}

impl Backoff {
    /// A delay between half and all of the current step, then doubles the
    /// step up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(CAP);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Back to the first step (after a successful registration).
    pub fn reset(&mut self) {
        self.current = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first >= FIRST / 2 && first <= FIRST, "{first:?}");
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(delay <= CAP, "{delay:?}");
        }
        let capped = backoff.next_delay();
        assert!(capped >= CAP / 2, "{capped:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }
}
