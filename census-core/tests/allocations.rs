//! What recording a span or an event allocates on the thread that records it, counted by a
//! global allocator that counts the calls each thread makes.
//!
//! In steady state a recorded span takes its box of run-time values from those the export
//! worker handed back, pushes its properties into the list that box kept, and writes a short
//! value inline: nothing is allocated. A log record's or an event's fields take such a box
//! too. A value longer than the inline room is allocated, which the last step counts (and so
//! shows that the counter counts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use census_core::export::{Exporter, Record, Resource};

struct Counting;

std::thread_local! {
    /// Allocations made by this thread (no destructor and a constant initial value: reading it
    /// allocates nothing).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only a
// thread-local `Cell`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Discards what it is given, so that the worker hands every box back.
struct Discard;

impl Exporter for Discard {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        black_box(batch.len());
    }
}

/// Spans (or events) recorded in one measured round: fewer than the worker keeps handed back,
/// so that every one can take a box that was.
const SPANS: u64 = 4_000;

/// The measured round is flushed after this many records, uncounted: fewer than a thread's
/// first ring holds, so that none waits in the queue beyond the rings (a burst faster than the
/// worker drains is boxed there).
const BETWEEN_FLUSHES: u64 = 200;

/// The allocations this thread makes in the calls of `record` for [`SPANS`] spans, once the
/// pipeline has seen as many (the property list and the spare lists grown, the boxes handed
/// back).
fn allocations_per_round(record: impl Fn(u64)) -> usize {
    let census = census_core::pipeline()
        .exporter(Discard)
        .install()
        .expect("the only pipeline of this test binary");
    for n in 0..3 * SPANS {
        record(n);
        if (n + 1) % BETWEEN_FLUSHES == 0 {
            census.flush(Duration::from_secs(10)).expect("flushed");
        }
    }
    let mut allocated = 0;
    for n in 0..SPANS {
        let before = ALLOCATIONS.with(Cell::get);
        record(n);
        allocated += ALLOCATIONS.with(Cell::get) - before;
        if (n + 1) % BETWEEN_FLUSHES == 0 {
            census.flush(Duration::from_secs(10)).expect("flushed");
        }
    }
    census.shutdown(Duration::from_secs(10)).expect("shut down");
    allocated
}

// One test, its steps in order: each installs the process's pipeline in turn.
#[test]
fn short_property_values_allocate_nothing_in_spans_or_events_and_a_long_one_allocates_once() {
    let short = allocations_per_round(|n| {
        census_core::span("handle")
            .property("id", n)
            .property("tier", "gold")
            .in_scope(|| black_box(n));
    });
    assert!(
        short < SPANS as usize / 100,
        "{short} allocations for {SPANS} spans with short properties"
    );

    #[cfg(feature = "tracing")]
    {
        use tracing_subscriber::layer::SubscriberExt as _;

        #[tracing::instrument]
        fn handle(id: u64, tier: &str) -> u64 {
            black_box(id)
        }

        let subscriber = tracing_subscriber::registry()
            .with(census_core::integrations::tracing::CensusLayer::new());
        let through_layer = tracing::subscriber::with_default(subscriber, || {
            allocations_per_round(|n| {
                handle(n, "gold");
            })
        });
        assert!(
            through_layer < SPANS as usize / 100,
            "{through_layer} allocations for {SPANS} `tracing` spans with short fields"
        );

        // An event's fields are kept in a box handed back as a span's is, their short values
        // inline.
        let subscriber = tracing_subscriber::registry()
            .with(census_core::integrations::tracing::CensusLayer::new());
        let events = tracing::subscriber::with_default(subscriber, || {
            allocations_per_round(|n| {
                census_core::span("handle").in_scope(|| {
                    tracing::info!(order = n, tier = "gold", "order placed");
                });
            })
        });
        assert!(
            events < SPANS as usize / 100,
            "{events} allocations for {SPANS} events with two short fields"
        );
    }

    let long = "a value longer than the room kept inline";
    let with_long = allocations_per_round(|n| {
        census_core::span("handle")
            .property("id", n)
            .property("note", long)
            .in_scope(|| black_box(n));
    });
    assert!(
        with_long >= SPANS as usize,
        "{with_long} allocations for {SPANS} spans with a long property: one each expected"
    );
}
