//! The Azure exporter's own counters (what became of the envelopes it was given) and its
//! rate-limited warnings.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

/// Process-wide counters of every Azure exporter, bumped on the exporter's threads.
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) dropped_rejected: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) dropped_storage_full: AtomicU64,
    pub(crate) dropped_unstored: AtomicU64,
    pub(crate) dropped_expired: AtomicU64,
    pub(crate) export_queue_full: AtomicU64,
    pub(crate) token_refused: AtomicU64,
    pub(crate) token_unavailable: AtomicU64,
}

/// On a cache line of their own (the transport writes them while other threads run).
pub(crate) static COUNTERS: CachePadded<Counters> = CachePadded::new(Counters {
    sent: AtomicU64::new(0),
    retried: AtomicU64::new(0),
    stored: AtomicU64::new(0),
    dropped_rejected: AtomicU64::new(0),
    dropped_too_large: AtomicU64::new(0),
    dropped_storage_full: AtomicU64::new(0),
    dropped_unstored: AtomicU64::new(0),
    dropped_expired: AtomicU64::new(0),
    export_queue_full: AtomicU64::new(0),
    token_refused: AtomicU64::new(0),
    token_unavailable: AtomicU64::new(0),
});

/// A snapshot of the Azure exporter's counters since the process started.
///
/// ```
/// let diagnostics = census_runtime::azure::diagnostics();
/// assert_eq!(diagnostics.sent, 0); // envelopes accepted by Application Insights
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostics {
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
    /// Envelopes the exporter could not hand to its transport because its queue was full (they went to storage, or were dropped and counted as such too).
    pub export_queue_full: u64,
    /// Requests ingestion answered 401 or 403 although they carried a Microsoft Entra ID token
    /// (the credential was refused: the token was dropped, a new one asked for and the batch
    /// sent again).
    pub token_refused: u64,
    /// Requests not sent because the credential gave no token (the batch waits and is sent
    /// again).
    pub token_unavailable: u64,
}

/// Reads the Azure exporter's counters.
///
/// ```
/// // What the Azure exporter has done so far, for a health endpoint or a log line.
/// let azure = census_runtime::azure::diagnostics();
/// println!("{} sent, {} retried, {} kept on disk", azure.sent, azure.retried, azure.stored);
/// ```
pub fn diagnostics() -> Diagnostics {
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Diagnostics {
        sent: read(&COUNTERS.sent),
        retried: read(&COUNTERS.retried),
        stored: read(&COUNTERS.stored),
        dropped_rejected: read(&COUNTERS.dropped_rejected),
        dropped_too_large: read(&COUNTERS.dropped_too_large),
        dropped_storage_full: read(&COUNTERS.dropped_storage_full),
        dropped_unstored: read(&COUNTERS.dropped_unstored),
        dropped_expired: read(&COUNTERS.dropped_expired),
        export_queue_full: read(&COUNTERS.export_queue_full),
        token_refused: read(&COUNTERS.token_refused),
        token_unavailable: read(&COUNTERS.token_unavailable),
    }
}

/// Rate-limited warnings through `log`: at most one a minute per kind, with how many were
/// held back. Used on the exporter's threads only, never on the application's.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    last: HashMap<&'static str, (Instant, u64)>,
}

impl Warnings {
    const EVERY: Duration = Duration::from_secs(60);

    pub(crate) fn warn(&mut self, kind: &'static str, message: fmt::Arguments<'_>) {
        let now = Instant::now();
        match self.last.get_mut(kind) {
            Some((at, held)) if now.duration_since(*at) < Self::EVERY => *held += 1,
            Some((at, held)) => {
                log::warn!("{message} ({held} similar warnings held back)");
                *at = now;
                *held = 0;
            }
            None => {
                log::warn!("{message}");
                self.last.insert(kind, (now, 0));
            }
        }
    }
}
