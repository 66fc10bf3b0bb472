//! Samplers: which traces are recorded, decided once per trace from its id.

use crate::context::TraceId;

/// Decides which traces are recorded.
///
/// The decision is made once, at the root of a trace, from the trace id alone, with the
/// sampling score every Application Insights SDK uses (DJB2 over the trace id's 32 lowercase hex
/// digits): every service that sees the same trace at the same rate keeps or drops it alike.
/// Children follow their parent's decision.
///
/// ```
/// use census_runtime::{Sampler, TraceId};
/// let sampler = Sampler::probability(0.25);
/// let id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
/// assert_eq!(sampler.should_sample(id), census_runtime::sample_score(id) < 0.25);
/// assert!(Sampler::always().should_sample(id));
/// assert!(!Sampler::never().should_sample(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    rate: f64,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::always()
    }
}

impl Sampler {
    /// Records every trace.
    pub const fn always() -> Self {
        Sampler { rate: 1.0 }
    }

    /// Records no trace.
    pub const fn never() -> Self {
        Sampler { rate: 0.0 }
    }

    /// Records the traces whose score is below `rate`, a fraction in `0.0..=1.0`: about that
    /// share of all traces. A rate outside that range is refused at `install()`.
    pub const fn probability(rate: f64) -> Self {
        Sampler { rate }
    }

    /// The fraction of traces kept.
    pub const fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the rate is a fraction in `0.0..=1.0`.
    pub(crate) fn is_valid(&self) -> bool {
        (0.0..=1.0).contains(&self.rate)
    }

    /// Whether the trace `trace_id` is recorded.
    #[inline]
    pub fn should_sample(&self, trace_id: TraceId) -> bool {
        decide(self.rate, trace_id)
    }
}

#[inline]
pub(crate) fn decide(rate: f64, trace_id: TraceId) -> bool {
    if rate >= 1.0 {
        true
    } else if rate <= 0.0 {
        false
    } else {
        sample_score(trace_id) < rate
    }
}

/// The Application Insights sampling score of a trace, in `0.0..=1.0`.
///
/// DJB2 on 32-bit signed integers over the trace id's 32 lowercase hex digits, the absolute
/// value (`i32::MIN` counts as `i32::MAX`), divided by `i32::MAX`: the same number the Azure
/// Monitor exporters compute, so that all of them agree on which traces a rate keeps.
///
/// ```
/// use census_runtime::{sample_score, TraceId};
/// let score = sample_score(TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap());
/// assert!((0.0..=1.0).contains(&score));
/// ```
pub fn sample_score(trace_id: TraceId) -> f64 {
    let mut hex = [0u8; 32];
    trace_id.write_hex(&mut hex);
    let mut hash: i32 = 5381;
    for byte in hex {
        hash = (hash << 5).wrapping_add(hash).wrapping_add(i32::from(byte));
    }
    let magnitude = if hash == i32::MIN {
        i32::MAX
    } else {
        hash.abs()
    };
    f64::from(magnitude) / f64::from(i32::MAX)
}
