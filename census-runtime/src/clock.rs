//! Timestamps: a cheap monotonic counter on the hot path, turned into wall-clock time on export.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The process clock: a fast counter (the TSC where it is invariant) anchored to the wall clock
/// once, so that spans read one counter at start and one at end, and nothing else.
struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    unix_nanos: u128,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| {
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        let unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Anchor {
            clock,
            raw,
            unix_nanos,
        }
    })
}

/// Reads the counter. Cheap: no syscall where the counter is the TSC.
#[inline]
pub(crate) fn now() -> u64 {
    anchor().clock.raw()
}

/// Makes sure the anchor exists before the first span, so that every reading follows it.
pub(crate) fn init() {
    let _ = anchor();
}

/// The time between two readings.
pub(crate) fn between(start: u64, end: u64) -> Duration {
    if end <= start {
        return Duration::ZERO;
    }
    Duration::from_nanos(anchor().clock.delta_as_nanos(start, end))
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
