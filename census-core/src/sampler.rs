//! Sampling: which traces are recorded, decided once per trace from its id with the score every
//! Application Insights SDK computes; the sampling state the pipeline installs, which the hot
//! path reads; the ids of new traces, chosen so that every service scoring them decides the
//! same (`ids.rs`); and the rate of a sampler that holds a budget, which the export worker
//! adapts (`budget.rs`).

mod budget;
mod ids;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

pub(crate) use self::budget::RateLimit;
pub(crate) use self::ids::dropped_trace_id_at;
pub use self::ids::{IdSearch, bench_kept_trace_id};
use crate::id::{TraceId, next_random};

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
/// assert_eq!(sampler.should_sample(id), Sampler::score(id) < 0.25);
/// assert!(Sampler::always().should_sample(id));
/// assert!(!Sampler::never().should_sample(id));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    rate: f64,
    /// A rate-limited sampler's budget; `None` for a fixed rate.
    traces_per_second: Option<f64>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::always()
    }
}

impl Sampler {
    /// Records every trace.
    ///
    /// ```
    /// use census_runtime::{Sampler, TraceId};
    ///
    /// assert!(Sampler::always().should_sample(TraceId::random()));
    /// ```
    pub const fn always() -> Self {
        Sampler::probability(1.0)
    }

    /// Records no trace.
    ///
    /// ```
    /// use census_runtime::{Sampler, TraceId};
    ///
    /// assert!(!Sampler::never().should_sample(TraceId::random()));
    /// ```
    pub const fn never() -> Self {
        Sampler::probability(0.0)
    }

    /// Records the traces whose score is below `rate`, a fraction in `0.0..=1.0`: about that
    /// share of all traces. A rate outside that range is refused at `install()`.
    ///
    /// ```
    /// use census_runtime::Sampler;
    /// use census_runtime::export::MemoryExporter;
    ///
    /// // A quarter of the traces, decided by their ids as every Application Insights SDK decides.
    /// let census = census_runtime::pipeline()
    ///     .sampler(Sampler::probability(0.25))
    ///     .exporter(MemoryExporter::new())
    ///     .install()?;
    /// assert_eq!(census_runtime::pipeline::sampling_percentage(), Some(25.0));
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub const fn probability(rate: f64) -> Self {
        Sampler {
            rate,
            traces_per_second: None,
        }
    }

    /// Records about `traces_per_second` new traces a second, whatever the load: the sampling
    /// percentage adapts to it, as the Azure Monitor distributions' rate-limited sampler does.
    ///
    /// Each trace is still decided once, at its root, by its id's score against the percentage
    /// in force, so that a service that samples at the percentage census reports keeps the same
    /// traces; that percentage is recorded on every item of the trace (`sampleRate`), so that
    /// the counts Application Insights estimates from the items stay right. The percentages are
    /// `100 / n` for a whole `n` (100, 50, 33.33.., 25, ... down to 0.0001 %), the item counts
    /// Application Insights expects. A trace whose caller recorded it (`traceparent` flag `01`)
    /// is recorded whatever the percentage, and counts against the budget.
    ///
    /// The export worker adapts the percentage from the traces it is handed, a few times a
    /// second: an instrumented call pays nothing more than at a fixed rate. It starts at 100 %.
    /// A budget that is not a number above zero is refused at `install()`.
    ///
    /// ```
    /// use census_runtime::Sampler;
    /// use census_runtime::export::MemoryExporter;
    /// let census = census_runtime::pipeline()
    ///     .sampler(Sampler::rate_limited(5.0))
    ///     .exporter(MemoryExporter::new())
    ///     .install()?;
    /// // The percentage new traces are decided at, now.
    /// assert_eq!(census_runtime::pipeline::sampling_percentage(), Some(100.0));
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub const fn rate_limited(traces_per_second: f64) -> Self {
        Sampler {
            rate: 1.0,
            traces_per_second: Some(traces_per_second),
        }
    }

    /// The fraction of traces kept; for a [rate-limited](Sampler::rate_limited) sampler, the
    /// one it starts at (1.0).
    ///
    /// ```
    /// use census_runtime::Sampler;
    ///
    /// assert_eq!(Sampler::probability(0.25).rate(), 0.25);
    /// assert_eq!(Sampler::rate_limited(5.0).rate(), 1.0);
    /// ```
    pub const fn rate(&self) -> f64 {
        self.rate
    }

    /// The budget of a [rate-limited](Sampler::rate_limited) sampler, in traces per second.
    ///
    /// ```
    /// use census_runtime::Sampler;
    /// assert_eq!(Sampler::rate_limited(5.0).traces_per_second(), Some(5.0));
    /// assert_eq!(Sampler::probability(0.5).traces_per_second(), None);
    /// ```
    pub const fn traces_per_second(&self) -> Option<f64> {
        self.traces_per_second
    }

    /// Whether the rate is a fraction in `0.0..=1.0`.
    pub(crate) fn is_valid(&self) -> bool {
        (0.0..=1.0).contains(&self.rate)
    }

    /// Whether the trace `trace_id` is recorded at [`rate`](Sampler::rate).
    ///
    /// ```
    /// use census_runtime::{Sampler, TraceId};
    ///
    /// let trace_id = TraceId::random();
    /// // The same trace is kept at any rate above its score.
    /// assert_eq!(
    ///     Sampler::probability(0.5).should_sample(trace_id),
    ///     Sampler::score(trace_id) < 0.5
    /// );
    /// ```
    #[inline]
    pub fn should_sample(&self, trace_id: TraceId) -> bool {
        decide(self.rate, trace_id)
    }

    /// The Application Insights sampling score of a trace, in `0.0..=1.0`: a rate keeps the
    /// traces scoring below it.
    ///
    /// DJB2 on 32-bit signed integers over the trace id's 32 lowercase hex digits, the absolute
    /// value (`i32::MIN` counts as `i32::MAX`), divided by `i32::MAX`: the same number the Azure
    /// Monitor exporters compute, so that all of them agree on which traces a rate keeps.
    ///
    /// ```
    /// use census_runtime::{Sampler, TraceId};
    /// let score = Sampler::score(TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap());
    /// assert!((0.0..=1.0).contains(&score));
    /// ```
    pub fn score(trace_id: TraceId) -> f64 {
        sample_score(trace_id)
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

/// `33^(31 - i)` in wrapping 32-bit arithmetic: the weight of the `i`th of 32 digits in DJB2.
const DJB2_POWERS: [u32; 32] = {
    let mut powers = [0u32; 32];
    let mut power = 1u32;
    let mut i = 32;
    while i > 0 {
        i -= 1;
        powers[i] = power;
        power = power.wrapping_mul(33);
    }
    powers
};

/// DJB2's seed carried through 32 steps, `5381 * 33^32`, plus every digit's `48` (ASCII `0`)
/// times its weight; wrapping.
const DJB2_CONSTANT: u32 = {
    let mut constant = 5381u32.wrapping_mul(33u32.wrapping_pow(32));
    let mut i = 0;
    while i < 32 {
        constant = constant.wrapping_add(48u32.wrapping_mul(DJB2_POWERS[i]));
        i += 1;
    }
    constant
};

/// See [`Sampler::score`].
pub(crate) fn sample_score(trace_id: TraceId) -> f64 {
    score_of_sum(djb2(trace_id.to_int()))
}

/// The score of a DJB2 sum: its magnitude as an `i32` over `i32::MAX`.
#[inline]
fn score_of_sum(sum: u32) -> f64 {
    let hash = sum.cast_signed();
    let magnitude = if hash == i32::MIN {
        i32::MAX
    } else {
        hash.abs()
    };
    f64::from(magnitude) / f64::from(i32::MAX)
}

/// DJB2 over the 32 lowercase hex digits of `id`, as an unsigned sum: with AVX2 where the CPU
/// has it (the same code, vectorised four times wider), else with the baseline instructions.
#[inline]
fn djb2(id: u128) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature `djb2_avx2` is compiled for.
        return unsafe { djb2_avx2(id) };
    }
    djb2_sum(id)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn djb2_avx2(id: u128) -> u32 {
    djb2_sum(id)
}

/// DJB2 is `hash * 33 + digit` in wrapping 32-bit arithmetic over the ASCII hex digits: a
/// polynomial in 33, so the hash is the seed times 33^32 plus each digit times 33 to the power
/// of the digits after it. A digit's ASCII code is its nibble plus 48, plus 39 more for a-f; the
/// 48s are folded into the constant. Independent products instead of 32 dependent steps through
/// a formatted string: the compiler vectorises it.
#[cfg_attr(not(debug_assertions), inline(always))]
fn djb2_sum(id: u128) -> u32 {
    let bytes = id.to_be_bytes();
    let mut sum = DJB2_CONSTANT;
    for (i, byte) in bytes.into_iter().enumerate() {
        for (j, nibble) in [byte >> 4, byte & 0xf].into_iter().enumerate() {
            sum = sum.wrapping_add(digit_offset(nibble).wrapping_mul(DJB2_POWERS[2 * i + j]));
        }
    }
    sum
}

/// How far a nibble's lowercase hex digit is from ASCII `0`: `0`..`9` and then, after the 39
/// characters between `9` and `a`, `a`..`f` (49..=54).
#[cfg_attr(not(debug_assertions), inline(always))]
fn digit_offset(nibble: u8) -> u32 {
    u32::from(nibble) + if nibble > 9 { 39 } else { 0 }
}

// ---------------------------------------------------------------------------------------------
// The installed sampling state: what the hot path reads, set when a pipeline installs. Each
// static on a cache line of its own, so that no counter or lock another thread writes shares a
// line with them: a static beside the dropped-span counters made every call miss the cache
// while the queue was full (an annotated call twice as slow with the Azure exporter running).

/// Whether a pipeline is installed: the one check an annotated call makes when none is.
static ACTIVE: CachePadded<AtomicBool> = CachePadded::new(AtomicBool::new(false));
/// The sampler's rate, as the bits of an `f64`.
static RATE: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(0x3ff0_0000_0000_0000)); // 1.0
/// The rate as a threshold on a uniform `u64` draw: `u64::MAX` keeps everything, 0 nothing.
static THRESHOLD: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(u64::MAX));
/// The sampling percentage recorded on each span, as the bits of an `f32`.
static PERCENT: CachePadded<AtomicU32> = CachePadded::new(AtomicU32::new(0x42c8_0000)); // 100.0
/// Whether log records and events outside any span are sampled too (read only for those).
static OUTSIDE_SPANS: CachePadded<AtomicBool> = CachePadded::new(AtomicBool::new(false));

/// Puts `sampler` in force (on the records outside any span too when `outside_spans`) and
/// starts recording. The pipeline calls it last, once its worker runs.
pub(crate) fn start(sampler: Sampler, outside_spans: bool) {
    OUTSIDE_SPANS.store(outside_spans, Ordering::Relaxed);
    if sampler.traces_per_second().is_some() {
        // The tables a low rate builds its ids from, now rather than at the first change.
        budget::prepare();
    }
    put_in_force(sampler.rate());
    ACTIVE.store(true, Ordering::Release);
}

/// Makes `rate` the rate new traces are decided at: at install, and when the export worker
/// adapts a rate-limited sampler's.
pub(crate) fn put_in_force(rate: f64) {
    // Before the rate is in force: a kept root never waits for what its id is built from.
    // Cheap after the first call in a process (see `ids::prepare`).
    ids::prepare(rate);
    RATE.store(rate.to_bits(), Ordering::Relaxed);
    THRESHOLD.store(threshold(rate), Ordering::Relaxed);
    PERCENT.store(percent_of(rate).to_bits(), Ordering::Relaxed);
}

/// Stops recording: from now on every span is inert.
pub(crate) fn stop() {
    ACTIVE.store(false, Ordering::Release);
}

/// Whether a pipeline is installed and recording.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The sampling percentage new traces are decided at now, and recorded with as `sampleRate`;
/// `None` when no pipeline is installed. Fixed for [`Sampler::probability`]; for
/// [`Sampler::rate_limited`], the one the export worker set last.
///
/// ```
/// use census_runtime::Sampler;
/// use census_runtime::export::MemoryExporter;
/// assert_eq!(census_runtime::pipeline::sampling_percentage(), None);
/// let census = census_runtime::pipeline()
///     .sampler(Sampler::probability(0.25))
///     .exporter(MemoryExporter::new())
///     .install()?;
/// assert_eq!(census_runtime::pipeline::sampling_percentage(), Some(25.0));
/// # drop(census);
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
pub fn sampling_percentage() -> Option<f64> {
    is_active().then(|| f64::from(percentage()))
}

/// A rate as a threshold on a uniform `u64`: a draw below it keeps the trace.
fn threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else if rate <= 0.0 {
        0
    } else {
        (rate * 18_446_744_073_709_551_616.0) as u64
    }
}

/// A rate as the percentage recorded for it (`sampleRate`).
#[cfg_attr(not(debug_assertions), inline(always))]
fn percent_of(rate: f64) -> f32 {
    (rate * 100.0) as f32
}

/// Whether a trace continued from a caller that carries no sampled flag is recorded: decided
/// from its id. Kept, the percentage it was kept at, from the same reading of the rate.
#[inline]
pub(crate) fn continued(trace_id: TraceId) -> Option<f32> {
    let rate = f64::from_bits(RATE.load(Ordering::Relaxed));
    decide(rate, trace_id).then(|| percent_of(rate))
}

/// Whether a log record or an event written outside any span is kept, and the percentage it
/// says it was kept at: always, at 100, unless the pipeline samples those too; then one random
/// draw against the rate in force, as the Application Insights SDKs decide for telemetry that
/// has no operation.
pub(crate) fn keep_outside_spans() -> Option<f32> {
    if !OUTSIDE_SPANS.load(Ordering::Relaxed) {
        return Some(100.0);
    }
    let rate = f64::from_bits(RATE.load(Ordering::Relaxed));
    drawn_below(threshold(rate)).then(|| percent_of(rate))
}

/// One random draw against `threshold` (none when it keeps everything): whether it keeps.
#[cfg_attr(not(debug_assertions), inline(always))]
fn drawn_below(threshold: u64) -> bool {
    threshold == u64::MAX || next_random() < threshold
}

/// Whether a new trace is recorded: one random draw against the rate. A kept trace then takes
/// its id from [`new_root`]: the same outcome as drawing an id first and scoring it, without
/// hashing an id for the traces that are dropped.
#[inline]
pub(crate) fn keep_new_trace() -> bool {
    drawn_below(THRESHOLD.load(Ordering::Relaxed))
}

/// The id of a new recorded trace and the percentage it is recorded at, from one reading of the
/// rate in force (which a rate-limited sampler changes): an id whose score keeps it at that
/// rate, so that every service that sees the trace at the percentage recorded keeps it too.
#[inline]
pub(crate) fn new_root() -> (TraceId, f32) {
    let rate = f64::from_bits(RATE.load(Ordering::Relaxed));
    let trace_id = if rate >= 1.0 {
        TraceId::random()
    } else {
        ids::kept_trace_id(rate)
    };
    (trace_id, percent_of(rate))
}

/// The id of a trace dropped at the rate in force, drawn when something asks for its context:
/// see [`dropped_trace_id_at`].
#[cold]
#[inline(never)]
pub(crate) fn dropped_trace_id() -> TraceId {
    dropped_trace_id_at(f64::from_bits(RATE.load(Ordering::Relaxed)))
}

/// The sampling percentage in force: recorded (`sampleRate`) on new roots, and on the spans,
/// log records and events under a recorded caller or a carried context that says none (those
/// outside any span say 100: they are kept whatever the rate).
#[inline]
pub(crate) fn percentage() -> f32 {
    f32::from_bits(PERCENT.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DJB2 step by step, as the other Application Insights SDKs write it.
    fn djb2_stepwise(trace_id: TraceId) -> i32 {
        let mut hex = [0u8; 32];
        trace_id.write_hex(&mut hex);
        let mut hash: i32 = 5381;
        for byte in hex {
            hash = (hash << 5).wrapping_add(hash).wrapping_add(i32::from(byte));
        }
        hash
    }

    #[test]
    fn the_summed_djb2_equals_the_stepwise_one() {
        let mut ids: Vec<TraceId> = (0..100_000).map(|_| TraceId::random()).collect();
        ids.push(TraceId::from_hex("ffffffffffffffffffffffffffffffff").unwrap());
        ids.push(TraceId::from_hex("00000000000000000000000000000001").unwrap());
        for id in ids {
            let hash = djb2_stepwise(id);
            // Both paths, whichever this CPU takes in `sample_score`.
            assert_eq!(djb2_sum(id.to_int()).cast_signed(), hash, "{id}");
            assert_eq!(djb2(id.to_int()).cast_signed(), hash, "{id}");
            let magnitude = if hash == i32::MIN {
                i32::MAX
            } else {
                hash.abs()
            };
            assert_eq!(
                sample_score(id),
                f64::from(magnitude) / f64::from(i32::MAX),
                "{id}"
            );
        }
    }
}
