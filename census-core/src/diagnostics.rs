//! The pipeline's own counters: what happened to the spans it was given, readable at any time.
//! Exporters count what they do with them on their own (the Azure exporter:
//! `census_runtime::azure::diagnostics()`).

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Process-wide counters, bumped off the hot path (or with one relaxed atomic add on it).
pub(crate) struct Counters {
    pub(crate) exported: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) exporter_panics: AtomicU64,
    pub(crate) metrics_dropped: AtomicU64,
    pub(crate) dropped_thread_ended: AtomicU64,
}

/// On a cache line of their own: calling threads count what they drop here while they read the
/// flags of their hot path, statics that could share its line.
pub(crate) static COUNTERS: CachePadded<Counters> = CachePadded::new(Counters {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    exporter_panics: AtomicU64::new(0),
    metrics_dropped: AtomicU64::new(0),
    dropped_thread_ended: AtomicU64::new(0),
});

/// Counts a span that could not start: its thread's census state was gone already.
#[cold]
#[inline(never)]
pub(crate) fn count_dropped_thread_ended() {
    COUNTERS
        .dropped_thread_ended
        .fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the pipeline's counters since the process started.
///
/// ```
/// let diagnostics = census_runtime::pipeline::diagnostics();
/// assert_eq!(diagnostics.dropped_queue_full, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostics {
    /// Spans handed to the exporters.
    pub exported: u64,
    /// Spans dropped because the queue to the export worker was full.
    pub dropped_queue_full: u64,
    /// Calls into an exporter (`export`, `tick`, `flush`, `shutdown`) that panicked; after three
    /// panics an exporter is switched off.
    pub exporter_panics: u64,
    /// Metric values dropped because their series was over a cap: more label sets for one name,
    /// or more names, than the recorder allows (see
    /// `integrations::metrics::CensusRecorder::max_label_sets`, feature `metrics`).
    pub metrics_dropped: u64,
    /// Spans not recorded because they started after census's state on their thread was let
    /// go, in code that a thread-local's destructor runs as its thread ends (after census's
    /// own): an instrumented sync function, or a span a builder starts there (sync, async or
    /// detached, or a `tracing` span through the layer), counted when the sampler keeps a new
    /// trace. An instrumented `async fn` started there is recorded, and so is what spans that
    /// started earlier record and end then.
    pub dropped_thread_ended: u64,
}

/// Reads the pipeline's counters.
///
/// ```
/// use census_runtime::export::MemoryExporter;
/// use std::time::Duration;
///
/// let census = census_runtime::pipeline().exporter(MemoryExporter::new()).install()?;
/// let before = census_runtime::pipeline::diagnostics();
/// census_runtime::span("checkout").in_scope(|| {});
/// census.flush(Duration::from_secs(5))?;
/// let after = census_runtime::pipeline::diagnostics();
/// assert_eq!(after.exported - before.exported, 1);
/// assert_eq!(after.dropped_queue_full, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn diagnostics() -> Diagnostics {
    Diagnostics {
        exported: COUNTERS.exported.load(Ordering::Relaxed),
        dropped_queue_full: COUNTERS.dropped_queue_full.load(Ordering::Relaxed),
        exporter_panics: COUNTERS.exporter_panics.load(Ordering::Relaxed),
        metrics_dropped: COUNTERS.metrics_dropped.load(Ordering::Relaxed),
        dropped_thread_ended: COUNTERS.dropped_thread_ended.load(Ordering::Relaxed),
    }
}
