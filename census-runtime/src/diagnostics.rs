//! Self-diagnostics: what census did with the spans it was given, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters, bumped off the hot path (or with one relaxed atomic add on it).
pub(crate) struct Counters {
    pub(crate) exported: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) dropped_rejected: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) dropped_storage_full: AtomicU64,
    pub(crate) dropped_unstored: AtomicU64,
    pub(crate) dropped_expired: AtomicU64,
    pub(crate) export_queue_full: AtomicU64,
    pub(crate) exporter_panics: AtomicU64,
}

pub(crate) static COUNTERS: Counters = Counters {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    sent: AtomicU64::new(0),
    retried: AtomicU64::new(0),
    stored: AtomicU64::new(0),
    dropped_rejected: AtomicU64::new(0),
    dropped_too_large: AtomicU64::new(0),
    dropped_storage_full: AtomicU64::new(0),
    dropped_unstored: AtomicU64::new(0),
    dropped_expired: AtomicU64::new(0),
    export_queue_full: AtomicU64::new(0),
    exporter_panics: AtomicU64::new(0),
};

/// A snapshot of census's own counters since the process started.
///
/// ```
/// let diagnostics = census_runtime::diagnostics();
/// assert_eq!(diagnostics.dropped_queue_full, 0);
/// assert_eq!(diagnostics.sent, 0); // envelopes accepted by Application Insights
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostics {
    /// Spans handed to the exporters.
    pub exported: u64,
    /// Spans dropped because the queue to the export worker was full.
    pub dropped_queue_full: u64,
    /// Envelopes the ingestion endpoint accepted.
    pub sent: u64,
    /// Envelopes sent again after a retryable answer (a whole batch, or the failed items of a 206).
    pub retried: u64,
    /// Envelopes written to local storage because they could not be delivered yet.
    pub stored: u64,
    /// Envelopes the service refused for good (400, 402, 404, 439, other 4xx, or a non-retryable item of a 206).
    pub dropped_rejected: u64,
    /// Envelopes refused with 413 even in a batch of one.
    pub dropped_too_large: u64,
    /// Envelopes that could not be delivered yet and found local storage full.
    pub dropped_storage_full: u64,
    /// Envelopes that could not be delivered yet and could not be kept: storage off or failing, or the in-memory retry queue full.
    pub dropped_unstored: u64,
    /// Envelopes deleted unsent from local storage because they were older than its maximum age.
    pub dropped_expired: u64,
    /// Envelopes the Azure exporter could not hand to its transport because its queue was full (they went to storage, or were dropped and counted as such too).
    pub export_queue_full: u64,
    /// Calls into an exporter (`export`, `flush`, `shutdown`) that panicked; after three panics
    /// an exporter is switched off.
    pub exporter_panics: u64,
}

/// Reads census's own counters.
pub fn diagnostics() -> Diagnostics {
    Diagnostics {
        exported: COUNTERS.exported.load(Ordering::Relaxed),
        dropped_queue_full: COUNTERS.dropped_queue_full.load(Ordering::Relaxed),
        sent: COUNTERS.sent.load(Ordering::Relaxed),
        retried: COUNTERS.retried.load(Ordering::Relaxed),
        stored: COUNTERS.stored.load(Ordering::Relaxed),
        dropped_rejected: COUNTERS.dropped_rejected.load(Ordering::Relaxed),
        dropped_too_large: COUNTERS.dropped_too_large.load(Ordering::Relaxed),
        dropped_storage_full: COUNTERS.dropped_storage_full.load(Ordering::Relaxed),
        dropped_unstored: COUNTERS.dropped_unstored.load(Ordering::Relaxed),
        dropped_expired: COUNTERS.dropped_expired.load(Ordering::Relaxed),
        export_queue_full: COUNTERS.export_queue_full.load(Ordering::Relaxed),
        exporter_panics: COUNTERS.exporter_panics.load(Ordering::Relaxed),
    }
}
