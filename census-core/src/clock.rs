//! Timestamps: a cheap monotonic counter on the hot path, turned into wall-clock time on export.
//!
//! Where the CPU has an invariant time-stamp counter (x86-64 with the `invariant TSC` CPUID bit,
//! as every server CPU of the last decade and the hypervisors that run them report), a reading is
//! one `rdtsc` instruction, inlined into the instrumented function: no call, no syscall, no
//! memory access but one flag. Elsewhere a reading is the nanoseconds since a process-wide
//! [`Instant`].
//!
//! Counter ticks become nanoseconds on the export side only. The tick rate is measured against
//! `Instant` over the whole life of the process (the baseline grows, so the estimate gets better
//! as the process runs) and never on the hot path.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;

/// Whether readings are time-stamp counter ticks. Set once, with the anchor, before any reading.
static TSC: CachePadded<AtomicBool> = CachePadded::new(AtomicBool::new(false));

/// The moment readings are measured from, on both clocks.
struct Anchor {
    /// The counter reading at `instant` (zero when readings are nanoseconds since `instant`).
    raw: u64,
    instant: Instant,
    unix_nanos: u128,
    tsc: bool,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

/// The measured tick rate: nanoseconds per tick as `f64` bits, and the baseline (ticks) it was
/// measured over, so that it is measured again when the process has run twice as long.
static NANOS_PER_TICK: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(0));
static RATE_BASELINE: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(0));

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| {
        let tsc = invariant_tsc();
        let instant = Instant::now();
        let raw = if tsc { read_tsc() } else { 0 };
        let unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        TSC.store(tsc, Ordering::Release);
        Anchor {
            raw,
            instant,
            unix_nanos,
            tsc,
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[cfg_attr(not(debug_assertions), inline(always))]
fn read_tsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86-64 CPU and has no preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[cfg_attr(not(debug_assertions), inline(always))]
fn read_tsc() -> u64 {
    0
}

/// Whether the time-stamp counter ticks at a constant rate in every power state and is
/// synchronised across cores: CPUID leaf 0x8000_0007, EDX bit 8.
#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    use core::arch::x86_64::__cpuid;
    if std::env::var_os("CENSUS_CLOCK").is_some_and(|v| v == "instant") {
        return false;
    }
    // The extended leaf is read only when the CPU says it has it.
    let max_extended = __cpuid(0x8000_0000).eax;
    max_extended >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn invariant_tsc() -> bool {
    false
}

/// Reads the counter: one `rdtsc` where the counter is the TSC.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn now() -> u64 {
    if TSC.load(Ordering::Relaxed) {
        return read_tsc();
    }
    now_slow()
}

/// Reads the time-stamp counter: for a caller that knows the counter is the clock
/// ([`uses_tsc`]).
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn tsc() -> u64 {
    read_tsc()
}

/// Whether readings are time-stamp counter ticks (the anchor is made first).
pub(crate) fn uses_tsc() -> bool {
    anchor().tsc
}

/// [`now`], out of line: for a caller that keeps its inlined path for the counter (where the
/// counter is not the clock, which is rare).
#[cold]
#[inline(never)]
pub(crate) fn now_out_of_line() -> u64 {
    now()
}

#[cold]
#[inline(never)]
fn now_slow() -> u64 {
    let anchor = anchor();
    if anchor.tsc {
        return read_tsc();
    }
    u64::try_from(anchor.instant.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Makes sure the anchor exists before the first span, so that every reading follows it.
pub(crate) fn init() {
    let _ = anchor();
}

/// Nanoseconds per tick, measured against `Instant` since the anchor. `reading` is the counter
/// value being converted, a recent one: the rate is measured again when the process has run
/// twice as long as when it was last measured, without reading the counter to find out.
fn nanos_per_tick(anchor: &Anchor, reading: u64) -> f64 {
    if !anchor.tsc {
        return 1.0;
    }
    let baseline = RATE_BASELINE.load(Ordering::Relaxed);
    let cached = f64::from_bits(NANOS_PER_TICK.load(Ordering::Relaxed));
    let ticks = reading.saturating_sub(anchor.raw);
    if baseline != 0 && ticks < baseline.saturating_mul(2) {
        return cached;
    }
    // A baseline of at least a millisecond keeps the first estimate within a few parts in 10^5.
    let mut elapsed = anchor.instant.elapsed();
    while elapsed < Duration::from_millis(1) {
        std::hint::spin_loop();
        elapsed = anchor.instant.elapsed();
    }
    let ticks = read_tsc().saturating_sub(anchor.raw);
    if ticks == 0 {
        return 1.0;
    }
    let rate = elapsed.as_nanos() as f64 / ticks as f64;
    NANOS_PER_TICK.store(rate.to_bits(), Ordering::Relaxed);
    RATE_BASELINE.store(ticks, Ordering::Relaxed);
    rate
}

fn ticks_to_nanos(anchor: &Anchor, ticks: u64, reading: u64) -> u64 {
    if !anchor.tsc {
        return ticks;
    }
    (ticks as f64 * nanos_per_tick(anchor, reading)).round() as u64
}

/// The time between two readings.
pub(crate) fn between(start: u64, end: u64) -> Duration {
    if end <= start {
        return Duration::ZERO;
    }
    Duration::from_nanos(ticks_to_nanos(anchor(), end - start, end))
}

/// The wall-clock time of a reading.
pub(crate) fn to_system_time(raw: u64) -> SystemTime {
    let anchor = anchor();
    let base = UNIX_EPOCH + Duration::from_nanos(anchor.unix_nanos as u64);
    if raw >= anchor.raw {
        base + between(anchor.raw, raw)
    } else {
        base - between(raw, anchor.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_measure_time_as_instant_does() {
        init();
        let (start, instant) = (now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (end, elapsed) = (now(), instant.elapsed());
        let measured = between(start, end);
        let diff = measured.abs_diff(elapsed);
        assert!(
            diff < Duration::from_micros(500),
            "counter says {measured:?}, Instant says {elapsed:?}"
        );
    }

    #[test]
    fn readings_map_onto_the_wall_clock() {
        init();
        let wall = to_system_time(now());
        let system = SystemTime::now();
        let diff = match system.duration_since(wall) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(diff < Duration::from_millis(5), "{wall:?} vs {system:?}");
    }

    #[test]
    fn a_reading_before_another_gives_no_negative_duration() {
        init();
        let a = now();
        let b = now();
        assert_eq!(between(b.max(a) + 1, a), Duration::ZERO);
    }
}
