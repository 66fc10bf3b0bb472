//! Ids chosen by their score.
//!
//! A new root's decision is one random draw against the rate (`keep_new_trace`). A kept
//! root then needs an id that every service scoring it keeps too: where such ids are common one is
//! drawn until it scores below the rate; where they are rare one is built, its first 25 hex digits
//! drawn and its last 7 chosen so that the DJB2 sum lands where the rate keeps it. Both ways take
//! a `Window` of sums and the score's own test. A dropped trace that propagates its decision
//! takes an id the same way over the window's complement (a score at or above the rate), with
//! its lower 64 bits drawn above `rate * 2^64`, where OpenCensus's `ProbabilitySampler` drops it
//! too ([`dropped_trace_id_at`]).

use std::ops::Range;
use std::sync::OnceLock;

use super::{DJB2_POWERS, digit_offset, djb2, sample_score};
use crate::id::{TraceId, next_random};

/// The id of a trace kept at `rate`: one whose [`sample_score`] is below the rate.
///
/// Drawn, about 10 ns a draw, at rates of 10 % and above ([`DRAWN_FROM`]); constructed below
/// (see `benches/benches/sampling.rs`). A rate that keeps no id at
/// all (zero or less) is never asked for one; it gets a random id.
#[cold]
pub(crate) fn kept_trace_id(rate: f64) -> TraceId {
    match Window::kept(rate) {
        Some(window) => scored_id(window, |id| sample_score(id) < rate),
        None => TraceId::random(),
    }
}

/// The id of a trace dropped at `rate`, for the `00` `traceparent` its outgoing calls carry:
/// one that every kind of downstream sampler at the same rate drops too. Its score is at or
/// above the rate (the Application Insights SDKs' sampling), and its lower 64 bits are above
/// `rate * 2^64` (OpenCensus's `ProbabilitySampler`, which keeps an unsampled parent's trace when
/// they are at most `rate * 0xffff_ffff_ffff_ffff`); a parent-based sampler follows the flag.
///
/// Drawn at rates up to 90 % (the dropped sums are common), constructed above. At a rate of 1
/// or more no id is dropped by every sampler (none is asked for: nothing is dropped); it gets a
/// random id.
#[cold]
pub(crate) fn dropped_trace_id_at(rate: f64) -> TraceId {
    if rate >= 1.0 {
        return TraceId::random();
    }
    let low = LowBits::dropped(rate);
    let window = Window::dropped(rate);
    let accept = |id: TraceId| sample_score(id) >= rate && low.admits(id);
    if window.is_drawn_into() {
        loop {
            let id = (u128::from(next_random()) << 64) | u128::from(low.draw());
            if let Some(id) = TraceId::new(id)
                && accept(id)
            {
                return id;
            }
        }
    }
    let tails = tails();
    loop {
        // The tail is left to the construction: the bits above it already place the lower 64
        // bits above the bound, whatever the tail.
        let prefix = (u128::from(next_random()) << 64) | u128::from(low.draw_above_tail());
        if let Some(id) = tails.construct(window, prefix)
            && accept(id)
        {
            return id;
        }
    }
}

/// The lower 64 bits of the ids dropped at a rate: above `floor(rate * 2^64)`, the largest
/// value `lower <= rate * 0xffff_ffff_ffff_ffff` keeps (that product is a float: `rate * 2^64`).
#[derive(Debug, Clone, Copy)]
struct LowBits {
    /// The largest value kept.
    kept_max: u64,
}

impl LowBits {
    /// For a rate below 1, where some values are above the bound.
    fn dropped(rate: f64) -> LowBits {
        LowBits {
            kept_max: super::threshold(rate.max(0.0)),
        }
    }

    fn admits(self, id: TraceId) -> bool {
        id.to_int() as u64 > self.kept_max
    }

    /// Lower 64 bits drawn uniformly above the bound.
    fn draw(self) -> u64 {
        self.kept_max + 1 + below_u64(u64::MAX - self.kept_max)
    }

    /// Lower 64 bits for a constructed id, its tail's 28 bits zero: the 36 above drawn
    /// uniformly among those that stay above the bound whatever the tail (the highest, when a
    /// rate within 2^-36 of 1 leaves none).
    fn draw_above_tail(self) -> u64 {
        const HIGH_VALUES: u64 = 1 << 36;
        let first = (self.kept_max >> 28) + 1;
        let top = match HIGH_VALUES.saturating_sub(first) {
            0 => HIGH_VALUES - 1,
            count => first + below_u64(count),
        };
        top << 28
    }
}

/// How [`bench_kept_trace_id`] finds its id. Not a stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSearch {
    /// As a kept root does at that rate: drawn or constructed.
    AsKeptRoots,
    /// Drawn until one scores below the rate.
    Drawn,
    /// Constructed.
    Constructed,
}

/// An id scoring below `rate` (in `0.0 < rate < 1.0`), found as `search` says: what a kept root
/// pays for its id, for benchmarks. Not a stable API.
#[doc(hidden)]
pub fn bench_kept_trace_id(rate: f64, search: IdSearch) -> TraceId {
    let Some(window) = Window::kept(rate) else {
        return TraceId::random();
    };
    let accept = |id| sample_score(id) < rate;
    match search {
        IdSearch::AsKeptRoots => scored_id(window, accept),
        IdSearch::Drawn => drawn_id(accept),
        IdSearch::Constructed => constructed_id(window, accept),
    }
}

/// Builds, once per process, what constructing an id at `rate` takes, when it will take it: so
/// that the first kept root does not wait for it. Called at install and at every change of a
/// rate-limited sampler's rate: the tables do not depend on the rate, so that after they are
/// built a call costs two window computations.
pub(crate) fn prepare(rate: f64) {
    let kept_constructed = Window::kept(rate).is_some_and(|window| !window.is_drawn_into());
    let dropped_constructed = rate < 1.0 && !Window::dropped(rate).is_drawn_into();
    if kept_constructed || dropped_constructed {
        tails();
    }
}

/// The smallest window ids are drawn into rather than constructed for: the one a rate of 10 %
/// keeps, where a kept id takes 10 draws on average, about what a construction costs
/// (`benches/sampling.rs` measures both ways around it).
const DRAWN_FROM: u32 = 2 * (i32::MAX.cast_unsigned() / 10) + 1;

/// An id whose score `accept` (the comparison of [`sample_score`] with the rate: the one
/// definition) accepts and whose sum lies in `window`: drawn where such ids are common,
/// constructed where they are rare. Every candidate goes through `accept`, so a window computed
/// one sum too wide costs a retry, never a wrong id.
fn scored_id(window: Window, accept: impl Fn(TraceId) -> bool) -> TraceId {
    if window.is_drawn_into() {
        drawn_id(accept)
    } else {
        constructed_id(window, accept)
    }
}

fn drawn_id(accept: impl Fn(TraceId) -> bool) -> TraceId {
    loop {
        let id = TraceId::random();
        if accept(id) {
            return id;
        }
    }
}

fn constructed_id(window: Window, accept: impl Fn(TraceId) -> bool) -> TraceId {
    let tails = tails();
    loop {
        let prefix = ((u128::from(next_random()) << 64) | u128::from(next_random())) & !TAIL_MASK;
        if let Some(id) = tails.construct(window, prefix)
            && accept(id)
        {
            return id;
        }
    }
}

/// A cyclic interval of DJB2 sums (wrapping `u32`): the `len` sums from `start` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start: u32,
    len: u32,
}

impl Window {
    /// The sums whose score is below `rate`: `-max..=max` as `i32`, for the largest magnitude
    /// `max` whose score (`max / i32::MAX`, as [`sample_score`] rounds it) is below the rate.
    /// `None` when no sum is (a rate of zero or less, or NaN). Exact for rates below 1; above,
    /// `i32::MIN` (which scores 1.0) is left out, and ids are drawn there anyway.
    fn kept(rate: f64) -> Option<Window> {
        const MAX: u32 = i32::MAX.cast_unsigned();
        let below = |magnitude: u32| f64::from(magnitude) / f64::from(MAX) < rate;
        if !below(0) {
            return None;
        }
        // `rate * MAX` is never a whole number for a rate in (0, 1) (MAX is odd and the rate a
        // binary fraction), and the product and the division each round by far less than 1:
        // the largest magnitude below the rate is within 2 under to 1 over the product rounded
        // down. The magnitudes are tried from the top, each one division.
        let estimate = (rate * f64::from(MAX)).min(f64::from(MAX)) as u32;
        let max = [
            estimate.saturating_add(1).min(MAX),
            estimate,
            estimate.saturating_sub(1),
        ]
        .into_iter()
        .find(|&magnitude| below(magnitude))
        .unwrap_or(estimate.saturating_sub(2));
        // i32::MIN is left out: 2 * max + 1 <= u32::MAX.
        Some(Window {
            start: max.wrapping_neg(),
            len: 2 * max + 1,
        })
    }

    /// The sums whose score is at or above `rate`: the complement of [`Window::kept`], all
    /// but one sum when no sum is kept.
    fn dropped(rate: f64) -> Window {
        match Window::kept(rate) {
            Some(kept) => Window {
                start: kept.start.wrapping_add(kept.len),
                len: kept.len.wrapping_neg(),
            },
            None => Window {
                start: 0,
                len: u32::MAX,
            },
        }
    }

    fn contains(self, sum: u32) -> bool {
        sum.wrapping_sub(self.start) < self.len
    }

    /// Whether ids are common enough in the window to be drawn until one falls in it.
    fn is_drawn_into(self) -> bool {
        self.len >= DRAWN_FROM
    }
}

/// The last 7 hex digits of a constructed id (28 bits), chosen rather than drawn. DJB2 sums an
/// id's digits times powers of 33, so the sum of an id is the sum of its first 25 digits (the
/// tail's digits `0`) plus what the tail adds: the 4 digits 25 to 28 (weights 33^6 to 33^3,
/// which spread their 65,536 values over all of `u32`) and the 3 last (weights 33^2, 33, 1,
/// whose 4,096 values add 0 to [`LOW_SUM_MAX`]). Meeting in the middle, with both halves
/// sorted by what they add, finds a tail for a drawn prefix with two short searches.
const TAIL_MASK: u128 = (1 << 28) - 1;
/// The most the last 3 digits add to the sum: `fff`, 54 times 33^2 + 33 + 1.
const LOW_SUM_MAX: u32 = 54 * (33 * 33 + 33 + 1);
/// High parts tried for one prefix before another prefix is drawn. At small windows one or
/// two high parts fit a prefix at all; at large ones nearly any that fits has a low part.
const HIGHS_PER_PREFIX: usize = 8;

/// Both halves of the tail, each sorted by what it adds to the sum: 183 KiB, built once per
/// process when a rate needs it (a few milliseconds).
struct Tails {
    /// Digits 25 to 28, as 16 bits, by [`high_sum`]; 8 to a range of 2^19 sums.
    high: SortedHalf,
    /// Digits 29 to 31, as 12 bits, by [`low_sum`]; about 1 to a range of 16 sums.
    low: SortedHalf,
}

static TAILS: OnceLock<Tails> = OnceLock::new();

fn tails() -> &'static Tails {
    TAILS.get_or_init(|| Tails {
        high: SortedHalf::new(0..=u16::MAX, high_sum, 19),
        low: SortedHalf::new(0..1 << 12, low_sum, 4),
    })
}

/// What digits 25 to 28 add to the sum, their nibbles the bits of `high`.
#[inline]
fn high_sum(high: u16) -> u32 {
    let digit = |shift: u32| digit_offset(((high >> shift) & 0xf) as u8);
    (digit(12).wrapping_mul(DJB2_POWERS[25]))
        .wrapping_add(digit(8).wrapping_mul(DJB2_POWERS[26]))
        .wrapping_add(digit(4).wrapping_mul(DJB2_POWERS[27]))
        .wrapping_add(digit(0).wrapping_mul(DJB2_POWERS[28]))
}

/// What digits 29 to 31 add to the sum, their nibbles the low 12 bits of `low`.
#[inline]
fn low_sum(low: u16) -> u32 {
    let digit = |shift: u32| digit_offset(((low >> shift) & 0xf) as u8);
    digit(8) * DJB2_POWERS[29] + digit(4) * DJB2_POWERS[30] + digit(0) * DJB2_POWERS[31]
}

impl Tails {
    /// An id of `prefix` (its last 28 bits zero) and a tail whose sum lies in `window`, or
    /// `None` when no tail fits the prefix (then the caller draws another).
    fn construct(&self, window: Window, prefix: u128) -> Option<TraceId> {
        // The tail's digits are `0` in `prefix` and add nothing: the tail must add `need + k`,
        // for some k in 0..window.len.
        let need = window.start.wrapping_sub(djb2(prefix));
        // The high parts that leave the low part something it can add, 0..=LOW_SUM_MAX.
        let highs = self.high.find(
            need.wrapping_sub(LOW_SUM_MAX),
            u64::from(window.len) + u64::from(LOW_SUM_MAX),
            high_sum,
        );
        let found = highs.len();
        if found == 0 {
            return None;
        }
        // From a random one on, so that any fitting tail may come out.
        let first = below(found);
        for i in 0..found.min(HIGHS_PER_PREFIX) {
            let high = self.high.parts[highs.nth((first + i) % found)];
            let lows = self.low.find(
                need.wrapping_sub(high_sum(high)),
                u64::from(window.len),
                low_sum,
            );
            if lows.len() > 0 {
                let low = self.low.parts[lows.nth(below(lows.len()))];
                let id = prefix | (u128::from(high) << 12) | u128::from(low);
                debug_assert!(window.contains(djb2(id)));
                return TraceId::new(id);
            }
        }
        None
    }
}

/// One half of the tail: its values sorted by what they add to the sum (computed again where
/// compared: cheaper in memory than keeping them, and as fast), with an index of where each
/// range of `2^shift` sums starts among them, so that a search looks at a few parts only.
struct SortedHalf {
    parts: Box<[u16]>,
    /// `starts[b]`: how many parts add less than `b << shift`; the last is `parts.len()`.
    starts: Box<[u32]>,
    shift: u32,
}

impl SortedHalf {
    /// Sorts `parts` by (sum, part): counted into their ranges of sums first, then each range's
    /// handful sorted by insertion. No general-purpose sort, whose code (8 KiB) would sit in
    /// every instrumented program, since any root may need a constructed id.
    fn new(
        parts: impl Iterator<Item = u16> + Clone,
        sum: fn(u16) -> u32,
        shift: u32,
    ) -> SortedHalf {
        let range_of = |part: u16| (sum(part) >> shift) as usize;
        let ranges = parts.clone().map(range_of).max().map_or(0, |last| last + 1);
        // `starts[r + 1]` counts the parts in range r, then, summed, those below range r + 1.
        let mut starts = vec![0u32; ranges + 1];
        for part in parts.clone() {
            starts[range_of(part) + 1] += 1;
        }
        for range in 1..=ranges {
            starts[range] += starts[range - 1];
        }
        let mut sorted = vec![0u16; starts[ranges] as usize];
        let mut next = starts.clone();
        for part in parts {
            let slot = &mut next[range_of(part)];
            sorted[*slot as usize] = part;
            *slot += 1;
        }
        for range in starts.windows(2) {
            insertion_sort(&mut sorted[range[0] as usize..range[1] as usize], |part| {
                (sum(part), part)
            });
        }
        SortedHalf {
            parts: sorted.into_boxed_slice(),
            starts: starts.into_boxed_slice(),
            shift,
        }
    }

    /// How many parts add less than `bound`; `sum` is the one the parts are sorted by.
    #[inline]
    fn count_below(&self, bound: u64, sum: impl Fn(u16) -> u32) -> usize {
        let range = (bound >> self.shift) as usize;
        let (Some(&first), Some(&end)) = (self.starts.get(range), self.starts.get(range + 1))
        else {
            // Past the last range: every part adds less.
            return self.parts.len();
        };
        let (first, end) = (first as usize, end as usize);
        // A handful of parts: counted without branches rather than searched.
        first
            + self.parts[first..end]
                .iter()
                .filter(|&&part| u64::from(sum(part)) < bound)
                .count()
    }

    /// The parts that add one of the `width` sums from `from` on, wrapping past `u32::MAX`.
    #[inline]
    fn find(&self, from: u32, width: u64, sum: impl Fn(u16) -> u32 + Copy) -> Matches {
        const ALL: u64 = 1 << 32;
        if width >= ALL {
            return Matches {
                end: 0..self.parts.len(),
                start: 0..0,
            };
        }
        let from = u64::from(from);
        let to = from + width;
        let first = self.count_below(from, sum);
        if to <= ALL {
            Matches {
                end: first..self.count_below(to, sum),
                start: 0..0,
            }
        } else {
            Matches {
                end: first..self.parts.len(),
                start: 0..self.count_below(to - ALL, sum),
            }
        }
    }
}

/// Sorts a few parts by `key`, in place.
fn insertion_sort(parts: &mut [u16], key: impl Fn(u16) -> (u32, u16)) {
    for i in 1..parts.len() {
        let part = parts[i];
        let mut at = i;
        while at > 0 && key(parts[at - 1]) > key(part) {
            parts[at] = parts[at - 1];
            at -= 1;
        }
        parts[at] = part;
    }
}

/// Where a [`SortedHalf`]'s matches lie: one run of its parts, or two when the sums wrap past
/// `u32::MAX` (a run at the end, then one at the start).
struct Matches {
    end: Range<usize>,
    start: Range<usize>,
}

impl Matches {
    fn len(&self) -> usize {
        self.end.len() + self.start.len()
    }

    /// The index among the parts of the `n`th match, `n < len()`.
    fn nth(&self, n: usize) -> usize {
        if n < self.end.len() {
            self.end.start + n
        } else {
            self.start.start + (n - self.end.len())
        }
    }
}

/// A uniform random number in `0..n`, `n > 0`.
fn below(n: usize) -> usize {
    below_u64(n as u64) as usize
}

/// A uniform random number in `0..n`, `n > 0`.
fn below_u64(n: u64) -> u64 {
    ((u128::from(next_random()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::score_of_sum;

    use std::collections::HashSet;

    const RATES: [f64; 7] = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.3];

    #[test]
    fn kept_ids_score_below_the_rate_at_every_rate() {
        for rate in RATES {
            let mut seen = HashSet::new();
            for _ in 0..3_000 {
                let id = kept_trace_id(rate);
                let score = sample_score(id);
                assert!(score < rate, "{id} scores {score} at rate {rate}");
                assert!(seen.insert(id), "{id} twice at rate {rate}");
            }
        }
    }

    /// `count` ids constructed for the window `rate` keeps, however many prefixes it takes.
    fn constructed(rate: f64, count: usize) -> Vec<TraceId> {
        let window = Window::kept(rate).unwrap();
        let tails = tails();
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            let prefix = TraceId::random().to_int() & !TAIL_MASK;
            ids.extend(tails.construct(window, prefix));
        }
        ids
    }

    #[test]
    fn every_constructed_id_scores_below_the_rate_and_none_repeats() {
        // 0.3 is drawn in service; constructed here all the same.
        for rate in RATES {
            let mut seen = HashSet::new();
            for id in constructed(rate, 3_000) {
                let score = sample_score(id);
                assert!(score < rate, "{id} scores {score} at rate {rate}");
                assert!(seen.insert(id), "{id} twice at rate {rate}");
            }
        }
    }

    #[test]
    fn rates_far_below_a_millionth_still_get_ids_below_them() {
        // The smallest window of all: the one sum 0, about one id in 4 billion.
        for rate in [1e-9, 1e-12, 1.0 / f64::from(i32::MAX)] {
            let window = Window::kept(rate).unwrap();
            for _ in 0..20 {
                let id = kept_trace_id(rate);
                assert!(sample_score(id) < rate, "{id} at rate {rate}");
                assert!(window.contains(djb2(id.to_int())));
            }
        }
        for rate in [1e-12, 1e-300] {
            assert_eq!(Window::kept(rate), Some(Window { start: 0, len: 1 }));
        }
    }

    /// OpenCensus's `ProbabilitySampler` for a parent with flag `00`:
    /// `lower_long <= rate * 0xffffffffffffffff`, an integer against a float, compared exactly.
    fn probability_sampler_keeps(id: TraceId, rate: f64) -> bool {
        let bound = rate * 18_446_744_073_709_551_615.0;
        let lower = id.to_int() as u64;
        bound >= 18_446_744_073_709_551_616.0 || u128::from(lower) <= bound as u128
    }

    #[test]
    fn dropped_ids_are_dropped_by_the_score_and_by_the_probability_sampler() {
        // Drawn up to 90 %, constructed above; the bound on the lower bits near both ends.
        for rate in [
            0.0,
            1e-9,
            0.01,
            0.25,
            0.5,
            0.9,
            0.900_01,
            0.99,
            0.999_999,
            0.999_999_999_99,
        ] {
            let mut seen = HashSet::new();
            for _ in 0..1_000 {
                let id = dropped_trace_id_at(rate);
                let score = sample_score(id);
                assert!(score >= rate, "{id} scores {score} at rate {rate}");
                assert!(
                    !crate::sampler::decide(rate, id),
                    "{id} kept at rate {rate}"
                );
                assert!(
                    !probability_sampler_keeps(id, rate),
                    "{id} kept by the probability sampler at rate {rate}"
                );
                assert!(seen.insert(id), "{id} twice at rate {rate}");
            }
        }
        // The bound itself: the largest lower bits kept, and the next.
        let rate = 0.25;
        let kept_max = LowBits::dropped(rate).kept_max;
        assert_eq!(kept_max, 1 << 62);
        let at = |low: u64| TraceId::new((1 << 64) | u128::from(low)).unwrap();
        assert!(probability_sampler_keeps(at(kept_max), rate));
        assert!(!probability_sampler_keeps(at(kept_max + 1), rate));
        assert!(LowBits::dropped(rate).admits(at(kept_max + 1)));
        assert!(!LowBits::dropped(rate).admits(at(kept_max)));
        // Nothing is dropped at a rate of 1: any id.
        let _ = dropped_trace_id_at(1.0);
    }

    #[test]
    fn dropped_ids_vary_in_every_digit_above_the_tail() {
        for rate in [0.25, 0.99] {
            let ids: Vec<TraceId> = (0..2_000).map(|_| dropped_trace_id_at(rate)).collect();
            for digit in 0..16 {
                let values: HashSet<u128> = ids
                    .iter()
                    .map(|id| (id.to_int() >> (4 * (31 - digit))) & 0xf)
                    .collect();
                assert_eq!(values.len(), 16, "digit {digit} at rate {rate}");
            }
        }
    }

    #[test]
    fn the_digits_before_the_tail_are_uniform_and_tails_vary() {
        const IDS: usize = 16_000;
        let ids = constructed(1e-6, IDS);
        // 16 values per digit: 1,000 each expected, 31 the standard deviation; 6 of them allowed.
        for digit in 0..25 {
            let mut counts = [0usize; 16];
            for id in &ids {
                counts[((id.to_int() >> (4 * (31 - digit))) & 0xf) as usize] += 1;
            }
            for (value, count) in counts.into_iter().enumerate() {
                assert!(
                    (810..=1190).contains(&count),
                    "digit {digit} is {value:x} in {count} of {IDS} ids"
                );
            }
        }
        let tails: HashSet<u128> = ids.iter().map(|id| id.to_int() & TAIL_MASK).collect();
        assert!(tails.len() > IDS * 9 / 10, "{} distinct tails", tails.len());
    }

    #[test]
    fn an_id_s_sum_is_its_prefix_s_plus_what_its_tail_adds() {
        for _ in 0..10_000 {
            let id = TraceId::random().to_int();
            let high = ((id >> 12) & 0xffff) as u16;
            let low = (id & 0xfff) as u16;
            assert_eq!(
                djb2(id),
                djb2(id & !TAIL_MASK)
                    .wrapping_add(high_sum(high))
                    .wrapping_add(low_sum(low)),
                "{id:032x}"
            );
        }
        let tails = tails();
        assert_eq!(tails.high.parts.len(), 1 << 16);
        assert_eq!(tails.low.parts.len(), 1 << 12);
        assert!(tails.high.parts.is_sorted_by_key(|&t| (high_sum(t), t)));
        assert!(tails.low.parts.is_sorted_by_key(|&t| (low_sum(t), t)));
        // Each range's start is the number of parts that add less than its first sum.
        for (half, sum) in [
            (&tails.high, high_sum as fn(u16) -> u32),
            (&tails.low, low_sum),
        ] {
            assert_eq!(half.starts.last().copied(), Some(half.parts.len() as u32));
            for (range, &start) in half.starts.iter().enumerate() {
                let below = half
                    .parts
                    .partition_point(|&t| u64::from(sum(t)) < (range as u64) << half.shift);
                assert_eq!(start as usize, below, "range {range}");
            }
        }
        assert_eq!(
            tails.high.parts.iter().collect::<HashSet<_>>().len(),
            1 << 16
        );
        assert_eq!(
            tails.low.parts.iter().map(|&t| low_sum(t)).max(),
            Some(LOW_SUM_MAX)
        );
    }

    #[test]
    fn the_kept_window_is_exactly_the_sums_scoring_below_the_rate() {
        for rate in RATES.into_iter().chain([
            1e-9,
            0.5,
            0.999_999_9,
            1.0 / f64::from(i32::MAX),
            1.5 / f64::from(i32::MAX),
        ]) {
            let window = Window::kept(rate).unwrap();
            let first = window.start;
            let last = window.start.wrapping_add(window.len - 1);
            for inside in [first, last, 0] {
                assert!(score_of_sum(inside) < rate, "{inside} at rate {rate}");
                assert!(window.contains(inside));
            }
            for outside in [
                first.wrapping_sub(1),
                last.wrapping_add(1),
                i32::MIN.cast_unsigned(),
            ] {
                assert!(score_of_sum(outside) >= rate, "{outside} at rate {rate}");
                assert!(!window.contains(outside));
            }
        }
        // Rates spread evenly over the orders of magnitude: the window against the definition,
        // one sum either side of its edges.
        for _ in 0..100_000 {
            let rate = 10f64.powf(-10.0 * (next_random() >> 11) as f64 / (1u64 << 53) as f64);
            if rate >= 1.0 {
                continue;
            }
            let window = Window::kept(rate).unwrap();
            let last = window.start.wrapping_add(window.len - 1);
            assert!(score_of_sum(last) < rate, "{rate}");
            assert!(score_of_sum(last.wrapping_add(1)) >= rate, "{rate}");
        }
        for rate in [0.0, -0.1, f64::NAN] {
            assert_eq!(Window::kept(rate), None, "{rate}");
        }
        // Drawn from 10 % on, as documented.
        assert!(Window::kept(0.1).unwrap().is_drawn_into());
        assert!(!Window::kept(0.099_999_999).unwrap().is_drawn_into());
    }

    #[test]
    fn matches_wrap_past_the_end_of_u32() {
        // Sums 0, 2^30, 2^31, 3 * 2^30, one to a range of 2^29.
        let sum = |part: u16| u32::from(part) << 30;
        let half = SortedHalf::new([2, 0, 3, 1].into_iter(), sum, 29);
        assert_eq!(&*half.parts, &[0, 1, 2, 3]);
        let wrapped = half.find(3 << 30, 1 << 31, sum);
        assert_eq!((wrapped.end.clone(), wrapped.start.clone()), (3..4, 0..1));
        assert_eq!((wrapped.len(), wrapped.nth(0), wrapped.nth(1)), (2, 3, 0));
        let inside = half.find(1, 1 << 31, sum);
        assert_eq!((inside.len(), inside.nth(0), inside.nth(1)), (2, 1, 2));
        assert_eq!(half.find(1, 5, sum).len(), 0);
        assert_eq!(half.find(1 << 30, 1, sum).len(), 1);
        assert_eq!(half.find(7, 1 << 32, sum).len(), 4);
    }

    #[test]
    fn a_half_s_index_counts_the_parts_below_any_sum() {
        let tails = tails();
        for (half, sum) in [
            (&tails.high, high_sum as fn(u16) -> u32),
            (&tails.low, low_sum),
        ] {
            let sums: Vec<u64> = half
                .parts
                .iter()
                .map(|&part| u64::from(sum(part)))
                .collect();
            assert!(sums.is_sorted());
            let mut bounds: Vec<u64> = (0..2_000).map(|_| next_random() >> 32).collect();
            bounds.extend([
                0,
                1,
                u64::from(LOW_SUM_MAX),
                u64::from(LOW_SUM_MAX) + 1,
                1 << 32,
            ]);
            for _ in 0..1_000 {
                let at = sums[below(sums.len())];
                bounds.extend([at.saturating_sub(1), at, at + 1]);
            }
            for bound in bounds {
                let expected = sums.partition_point(|&s| s < bound);
                assert_eq!(half.count_below(bound, sum), expected, "below {bound}");
            }
        }
    }
}
