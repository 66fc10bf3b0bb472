//! What recording a span or an event allocates on the thread that records it, counted by a
//! global allocator that counts the calls each thread makes.
//!
//! An annotated call, sync or async, writes its record into the thread's ring: nothing is
//! allocated. A span with run-time values takes, in steady state, a box of them that the export
//! worker handed back, pushes its properties into the list that box kept, and writes a short
//! value inline: nothing is allocated either. A custom event's properties, a log record's
//! key-values and a `tracing` event's fields take such a box too (a `log` key, lent for the call
//! only, is interned). A value longer than the inline room is allocated, which the last step
//! counts (and so shows that the counter counts). An error event's chain is text made for each
//! event: its allocations are bounded.

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

/// Calls recorded in one measured round.
const CALLS: u64 = 4_000;

/// The measured round is flushed after this many records, uncounted: fewer than a thread's
/// first ring holds, so that none waits in the queue beyond the rings (a burst faster than the
/// worker drains is boxed there).
const BETWEEN_FLUSHES: u64 = 200;

/// The allocations this thread makes in the calls of `record` for [`CALLS`] calls, once the
/// pipeline has seen as many (the property list and the spare lists grown, the boxes handed
/// back).
fn allocations_per_round(record: impl Fn(u64)) -> usize {
    let census = census_core::pipeline()
        .exporter(Discard)
        .install()
        .expect("the only pipeline of this test binary");
    // Three rounds to warm up, the fourth counted.
    let mut allocated = 0;
    for n in 0..4 * CALLS {
        let before = ALLOCATIONS.with(Cell::get);
        record(n);
        if n >= 3 * CALLS {
            allocated += ALLOCATIONS.with(Cell::get) - before;
        }
        if (n + 1) % BETWEEN_FLUSHES == 0 {
            census.flush(Duration::from_secs(10)).expect("flushed");
        }
    }
    census.shutdown(Duration::from_secs(10)).expect("shut down");
    allocated
}

#[census_runtime::inproc]
fn checkout(n: u64) -> u64 {
    black_box(n)
}

#[census_runtime::inproc]
async fn load(n: u64) -> u64 {
    black_box(n)
}

#[census_runtime::dependency(kind = "SQL", target = "orders-db", fields(id))]
fn query(id: u64) -> u64 {
    black_box(id)
}

/// An error with a cause, whose `Debug` form is long.
#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug")]
struct Declined {
    source: std::io::Error,
}

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment declined")
    }
}

impl std::error::Error for Declined {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Polls `future` once, with a waker that does nothing: what it awaits is ready.
fn ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("nothing here waits"),
    }
}

/// Asserts that `record` allocated nothing on this thread in steady state (a few boxes that a
/// busy worker had not handed back yet are let pass: fewer than one call in a hundred).
fn allocates_nothing(what: &str, record: impl Fn(u64)) {
    let allocated = allocations_per_round(record);
    assert!(
        allocated < CALLS as usize / 100,
        "{allocated} allocations for {CALLS} calls: {what}"
    );
}

// One test, its steps in order: each installs the process's pipeline in turn.
#[test]
fn recorded_calls_allocate_nothing_on_the_calling_thread_but_a_long_property_value() {
    allocates_nothing("`#[inproc]` function", |n| {
        checkout(n);
    });
    allocates_nothing("`#[inproc]` async function", |n| {
        ready(load(n));
    });
    allocates_nothing("two async calls under an async one", |n| {
        ready(async move { load(n).await + load(n).await });
    });
    allocates_nothing("`#[dependency]` with a field", |n| {
        query(n);
    });
    allocates_nothing("span with two short properties", |n| {
        census_core::span("handle")
            .property("id", n)
            .property("tier", "gold")
            .in_scope(|| black_box(n));
    });
    // A custom event's properties are kept in such a box too, and the event travels inline.
    allocates_nothing("custom event with two short properties in a span", |n| {
        census_core::span("handle").in_scope(|| {
            census_core::event("order_placed")
                .property("order", n)
                .property("tier", "gold")
                .send();
        });
    });

    #[cfg(feature = "log")]
    {
        census_core::integrations::log::LogBridge::new()
            .level(log::LevelFilter::Info)
            .install()
            .expect("the process's logger");
        allocates_nothing("`log::info!` in a span", |n| {
            census_core::span("handle").in_scope(|| log::info!("order {n} placed"));
        });
        allocates_nothing("`log::info!` with two key-values in a span", |n| {
            census_core::span("handle")
                .in_scope(|| log::info!(order = n, tier = "gold"; "order placed"));
        });
    }

    #[cfg(feature = "tracing")]
    {
        use tracing_subscriber::layer::SubscriberExt as _;

        #[tracing::instrument]
        fn handle(id: u64, tier: &str) -> u64 {
            black_box(id)
        }

        let subscriber = || {
            tracing_subscriber::registry()
                .with(census_core::integrations::tracing::CensusLayer::new())
        };
        tracing::subscriber::with_default(subscriber(), || {
            allocates_nothing("`#[tracing::instrument]` span with two short fields", |n| {
                handle(n, "gold");
            });
        });
        // A field named with a dot that is none of the conventions' is a property as well.
        tracing::subscriber::with_default(subscriber(), || {
            allocates_nothing("`tracing` span with a dotted field", |n| {
                tracing::info_span!("handle", order.id = n).in_scope(|| black_box(n));
            });
        });
        // An event's fields are kept in a box handed back as a span's is, their short values
        // inline.
        tracing::subscriber::with_default(subscriber(), || {
            allocates_nothing("`tracing::info!` with two short fields in a span", |n| {
                census_core::span("handle").in_scope(|| {
                    tracing::info!(order = n, tier = "gold", "order placed");
                });
            });
        });
        // An error's chain is text made for each record: its list, and each error's type and
        // message (its `Debug` form read only as far as its type's name).
        tracing::subscriber::with_default(subscriber(), || {
            let error = Declined {
                source: std::io::Error::other("card expired"),
            };
            let allocated = allocations_per_round(|n| {
                census_core::span("handle").in_scope(|| {
                    tracing::error!(
                        error = &error as &dyn std::error::Error,
                        order = n,
                        "failed"
                    );
                });
            });
            // The chain's list and the box it goes in, the two errors' names and messages (17
            // when the whole `Debug` form was written out for each name).
            let most = 6 * CALLS as usize;
            assert!(
                allocated <= most + CALLS as usize / 100,
                "{allocated} allocations for {CALLS} error events with a chain of two: at most \
                 {most} expected"
            );
        });
    }

    let long = "a value longer than the room kept inline";
    let with_long = allocations_per_round(|n| {
        census_core::span("handle")
            .property("id", n)
            .property("note", long)
            .in_scope(|| black_box(n));
    });
    assert!(
        with_long >= CALLS as usize,
        "{with_long} allocations for {CALLS} spans with a long property: one each expected"
    );
}
