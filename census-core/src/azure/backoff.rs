//! How long the transport waits after a failed delivery: from a minimum, doubling with each
//! failure in a row up to a maximum, with jitter; a `Retry-After` from the service wins.

use std::time::Duration;

/// Failures in a row, and the wait they call for.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// Counts a failure; how long to wait before the next attempt: `retry_after` when the
    /// service gave one, else the backoff.
    pub(crate) fn failed(&mut self, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let draw = crate::id::next_random() % 1000;
        retry_after.unwrap_or_else(|| self.wait(draw))
    }

    /// Counts a success; whether it ends a run of failures.
    pub(crate) fn succeeded(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }

    /// The backoff after the failures so far, with `draw` (0 to 999) placing it in the upper
    /// half of the exponential step: full jitter over that half spreads out many instances
    /// failing together, and never retries sooner than half the step.
    fn wait(&self, draw: u64) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
            .min(self.max);
        let jitter = draw.min(999) as f64 / 1000.0;
        step.mul_f64(0.5 + jitter / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_within_the_upper_half() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        // The exponential step after each failure in a row: 1 s, 2 s, 4 s, then the maximum.
        for step in [1000, 2000, 4000, 5000, 5000] {
            backoff.failed(None);
            let step = Duration::from_millis(step);
            assert_eq!(backoff.wait(0), step / 2);
            let highest = backoff.wait(999);
            assert!(
                highest < step && highest > step.mul_f64(0.99),
                "{highest:?}"
            );
        }
    }

    #[test]
    fn retry_after_wins_and_a_success_starts_over() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(
            backoff.failed(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        let wait = backoff.failed(None);
        assert!(wait >= Duration::from_secs(1) && wait < Duration::from_secs(2));
        assert!(backoff.succeeded(), "ends a run of failures");
        assert!(!backoff.succeeded());
        let wait = backoff.failed(None);
        assert!(wait >= Duration::from_millis(500) && wait < Duration::from_secs(1));
    }
}
