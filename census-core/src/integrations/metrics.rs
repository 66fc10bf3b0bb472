//! [`metrics`] counters, gauges and histograms as Application Insights `Metric` telemetry
//! (feature `metrics`), pre-aggregated per minute by name and labels.
//!
//! `metrics` has one global recorder: [`CensusRecorder`] is it. Every `counter!`, `gauge!` and
//! `histogram!` of the application and of its libraries then lands in census, and once a
//! minute (the pipeline's [`metric_interval`](crate::pipeline::PipelineBuilder::metric_interval))
//! each series that moved becomes one record: a `MetricData` item whose properties are the
//! labels.
//!
//! ```
//! use census_runtime::export::{MemoryExporter, MetricKind};
//! use census_runtime::integrations::metrics::CensusRecorder;
//! use std::time::Duration;
//!
//! CensusRecorder::new().install()?;
//! let memory = MemoryExporter::new();
//! let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
//!
//! metrics::counter!("orders_placed", "region" => "eu").increment(2);
//! let latency = metrics::histogram!("checkout_ms");
//! for ms in [12.0, 20.0, 16.0] {
//!     latency.record(ms);
//! }
//! metrics::gauge!("queue_depth").set(7.0);
//! census.flush(Duration::from_secs(5))?; // a flush delivers the minute so far
//!
//! let orders = &memory.metrics_named("orders_placed")[0];
//! assert_eq!((orders.kind(), orders.value()), (MetricKind::Counter, 2.0));
//! assert_eq!(orders.property("region"), Some("eu"));
//! let checkout = &memory.metrics_named("checkout_ms")[0];
//! assert_eq!((checkout.count(), checkout.value()), (3, 48.0));
//! assert_eq!((checkout.min(), checkout.max()), (12.0, 20.0));
//! assert_eq!(memory.metrics_named("queue_depth")[0].value(), 7.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What each kind reports per interval, as the Azure Monitor exporters do:
//!
//! - a **counter** its increase over the interval (`value`, `count` 1); an interval in which it
//!   did not move sends nothing;
//! - a **gauge** the last value set (`value`, `count` 1), every interval once it has been set;
//! - a **histogram** the count, sum (`value`), minimum, maximum and standard deviation of the
//!   values recorded (`kind` `Aggregation`); values that are not finite are ignored.
//!
//! Recording is cheap: a handle (`metrics::Counter`, `Gauge`, `Histogram`) points at a cell
//! updated with one atomic operation and no allocation (a histogram's figures sit behind a
//! busy flag held for a few float additions); the macros look the handle up in the calling
//! thread's cache, then by the key's precomputed hash under a shared read lock. Keep the handle
//! where a call is hot (`let latency = metrics::histogram!("checkout_ms");`) to skip the look-up.
//!
//! Bounded: at most [`max_names`](CensusRecorder::max_names) names and
//! [`max_label_sets`](CensusRecorder::max_label_sets) label sets per name (1,000 each by
//! default). A series past a cap is not made: its values are dropped, counted in
//! [`pipeline::diagnostics`](crate::pipeline::diagnostics)`().metrics_dropped`, and the first
//! refusal is said once through `log`.
//!
//! A value recorded at the very instant its interval closes may have its count in one interval
//! and its sum in the next: the cells are read field by field, not under a lock.

use std::cell::RefCell;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SetRecorderError, SharedString, Unit,
};

use crate::metric::{
    self, Collect, CounterCell, GaugeCell, HistogramCell, Limits, Registry, SeriesKey,
};
use crate::record::SeriesId;

/// The `metrics` recorder that pre-aggregates into census; see the [module](self).
///
/// ```
/// use census_runtime::integrations::metrics::CensusRecorder;
///
/// CensusRecorder::new().install()?;
/// metrics::counter!("orders_placed").increment(1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CensusRecorder {
    /// Tells this recorder's series apart in the threads' caches.
    id: u64,
    registry: Arc<Registry<Key>>,
    overflow: Arc<Overflow>,
    limits: Limits,
}

impl fmt::Debug for CensusRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CensusRecorder")
            .field("max_names", &self.limits.max_names)
            .field("max_label_sets", &self.limits.max_label_sets)
            .finish_non_exhaustive()
    }
}

impl Default for CensusRecorder {
    fn default() -> Self {
        CensusRecorder::new()
    }
}

impl CensusRecorder {
    /// A recorder with the default caps (1,000 names, 1,000 label sets per name). Its series
    /// are collected by the installed pipeline for as long as the recorder lives.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use census_runtime::integrations::metrics::CensusRecorder;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// // Used in a scope without being installed.
    /// let recorder = CensusRecorder::new();
    /// metrics::with_local_recorder(&recorder, || metrics::gauge!("queue_depth").set(3.0));
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.metrics_named("queue_depth")[0].value(), 3.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        CensusRecorder::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        let registry = Arc::new(Registry::new(limits));
        let source: Arc<dyn Collect> = registry.clone();
        metric::register(&source);
        static IDS: AtomicU64 = AtomicU64::new(1);
        CensusRecorder {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            registry,
            overflow: Arc::new(Overflow),
            limits,
        }
    }

    /// At most this many label sets per metric name (default 1,000); the values of a new label
    /// set past it are dropped and counted. Set it before anything is recorded.
    ///
    /// ```
    /// use census_runtime::integrations::metrics::CensusRecorder;
    /// let recorder = CensusRecorder::new().max_label_sets(100).max_names(50);
    /// # drop(recorder);
    /// ```
    pub fn max_label_sets(self, label_sets: usize) -> Self {
        CensusRecorder::with_limits(Limits {
            max_label_sets: label_sets,
            ..self.limits
        })
    }

    /// At most this many metric names (default 1,000); the values of a new name past it are
    /// dropped and counted. Set it before anything is recorded.
    ///
    /// ```
    /// use census_runtime::integrations::metrics::CensusRecorder;
    ///
    /// let recorder = CensusRecorder::new().max_names(2);
    /// let before = census_runtime::pipeline::diagnostics().metrics_dropped;
    /// metrics::with_local_recorder(&recorder, || {
    ///     metrics::counter!("first").increment(1);
    ///     metrics::counter!("second").increment(1);
    ///     metrics::counter!("third").increment(1); // past the cap: dropped and counted
    /// });
    /// assert_eq!(census_runtime::pipeline::diagnostics().metrics_dropped - before, 1);
    /// ```
    pub fn max_names(self, names: usize) -> Self {
        CensusRecorder::with_limits(Limits {
            max_names: names,
            ..self.limits
        })
    }

    /// Makes this the process's `metrics` recorder (`metrics` allows one, once). A test or a
    /// scope may use it without installing it: `metrics::with_local_recorder(&recorder, ...)`.
    ///
    /// ```
    /// use census_runtime::integrations::metrics::CensusRecorder;
    ///
    /// CensusRecorder::new().install()?;
    /// // `metrics` takes one recorder per process, once.
    /// assert!(CensusRecorder::new().install().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn install(self) -> Result<(), SetRecorderError<CensusRecorder>> {
        metrics::set_global_recorder(self)
    }

    /// The cell of `key`: from this thread's cache, else from the registry (and then cached).
    #[inline]
    fn cell<C: Cached>(&self, key: &Key) -> Option<Arc<C>> {
        let slot = (key.get_hash() as usize ^ C::KIND) % CACHE_SLOTS;
        let found = CACHE.try_with(|cache| {
            let cache = cache.try_borrow().ok()?;
            let entry = cache.get(slot)?.as_ref()?;
            if entry.recorder == self.id && entry.kind == C::KIND && entry.holds(key) {
                C::unwrap(&entry.cell).map(Arc::clone)
            } else {
                None
            }
        });
        match found {
            Ok(Some(cell)) => Some(cell),
            _ => self.look_up(key, slot),
        }
    }

    /// The cell of `key` from the registry, then kept in this thread's cache at `slot`: out of
    /// line, so that a hit in the cache is a short function.
    #[cold]
    #[inline(never)]
    fn look_up<C: Cached>(&self, key: &Key, slot: usize) -> Option<Arc<C>> {
        let cell = self.registry.cell::<C>(key, key.name(), || Self::id(key))?;
        // A cache already borrowed (a logger that records metrics, called while refusing) or
        // gone (the thread is ending) is left alone.
        let _ = CACHE.try_with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                if cache.is_empty() {
                    cache.resize_with(CACHE_SLOTS, || None);
                }
                cache[slot] = Some(Entry {
                    recorder: self.id,
                    kind: C::KIND,
                    hash: key.get_hash(),
                    at: key as *const Key as usize,
                    key: key.clone(),
                    cell: C::wrap(Arc::clone(&cell)),
                });
            }
        });
        Some(cell)
    }

    fn id(key: &Key) -> SeriesId {
        let labels = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        SeriesId::new(key.name(), labels)
    }
}

impl Recorder for CensusRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.cell::<CounterCell>(key) {
            Some(cell) => Counter::from_arc(cell),
            None => Counter::from_arc(Arc::clone(&self.overflow)),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.cell::<GaugeCell>(key) {
            Some(cell) => Gauge::from_arc(cell),
            None => Gauge::from_arc(Arc::clone(&self.overflow)),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.cell::<HistogramCell>(key) {
            Some(cell) => Histogram::from_arc(cell),
            None => Histogram::from_arc(Arc::clone(&self.overflow)),
        }
    }
}

/// How many series each thread keeps at hand: the macros look a key up at every call, and a
/// hit in this direct-mapped cache takes no lock and touches no shared line but the cell's.
const CACHE_SLOTS: usize = 128;

thread_local! {
    static CACHE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// A series this thread looked up last in its slot.
struct Entry {
    recorder: u64,
    kind: usize,
    /// The key's hash and address: a macro's literal key is a `static`, recognised by its
    /// address without reading the entry's own key.
    hash: u64,
    at: usize,
    key: Key,
    cell: AnyCell,
}

impl Entry {
    /// Whether `key` is this entry's: the same key (by address and hash), or else equal names
    /// and labels. A key built at run time may sit where another one did: its hash tells them
    /// apart, and the comparison of the keys themselves settles the rest.
    #[inline]
    fn holds(&self, key: &Key) -> bool {
        self.hash == key.get_hash()
            && (self.at == key as *const Key as usize || same_key(&self.key, key))
    }
}

enum AnyCell {
    Counter(Arc<CounterCell>),
    Gauge(Arc<GaugeCell>),
    Histogram(Arc<HistogramCell>),
}

/// Whether two keys of the same hash are the same: keys made from the same static strings are
/// compared by address, not byte by byte.
#[cold]
fn same_key(a: &Key, b: &Key) -> bool {
    #[inline]
    fn same(a: &str, b: &str) -> bool {
        (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
    }
    if !same(a.name(), b.name()) {
        return false;
    }
    let (a, b) = (a.labels(), b.labels());
    // A macro's literal labels are one static array: the same address is the same labels.
    if std::ptr::eq(a.as_slice(), b.as_slice()) {
        return true;
    }
    a.len() == b.len()
        && a.zip(b)
            .all(|(a, b)| same(a.key(), b.key()) && same(a.value(), b.value()))
}

/// A cell the threads' caches can hold.
trait Cached: metric::Cell {
    const KIND: usize;
    fn wrap(cell: Arc<Self>) -> AnyCell;
    fn unwrap(cell: &AnyCell) -> Option<&Arc<Self>>;
}

macro_rules! cached {
    ($cell:ty, $variant:ident, $kind:expr) => {
        impl Cached for $cell {
            const KIND: usize = $kind;
            fn wrap(cell: Arc<Self>) -> AnyCell {
                AnyCell::$variant(cell)
            }
            fn unwrap(cell: &AnyCell) -> Option<&Arc<Self>> {
                match cell {
                    AnyCell::$variant(cell) => Some(cell),
                    _ => None,
                }
            }
        }
    };
}

cached!(CounterCell, Counter, 0);
cached!(GaugeCell, Gauge, 1);
cached!(HistogramCell, Histogram, 2);

/// A `metrics::Key` carries its hash, computed once (at compile time for the macros' literal
/// keys): the registry's map uses it as is.
impl SeriesKey for Key {
    type Build = BuildHasherDefault<KeyHash>;
}

/// Passes a `Key`'s own hash through (`Key` hashes as one `write_u64` of it).
#[derive(Default)]
pub(crate) struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Never called for a `Key`; kept correct for anything else.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        CounterCell::increment(self, value);
    }

    fn absolute(&self, value: u64) {
        CounterCell::absolute(self, value);
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        GaugeCell::set(self, value);
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        HistogramCell::record(self, value);
    }

    fn record_many(&self, value: f64, count: usize) {
        HistogramCell::record_many(self, value, count as u64);
    }
}

/// Where the values of a refused series go: counted, then dropped.
struct Overflow;

impl CounterFn for Overflow {
    fn increment(&self, _: u64) {
        metric::dropped(1);
    }

    fn absolute(&self, _: u64) {
        metric::dropped(1);
    }
}

impl GaugeFn for Overflow {
    fn increment(&self, _: f64) {
        metric::dropped(1);
    }

    fn decrement(&self, _: f64) {
        metric::dropped(1);
    }

    fn set(&self, _: f64) {
        metric::dropped(1);
    }
}

impl HistogramFn for Overflow {
    fn record(&self, _: f64) {
        metric::dropped(1);
    }

    fn record_many(&self, _: f64, count: usize) {
        metric::dropped(count as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(recorder: &CensusRecorder) -> Vec<u64> {
        let mut out = Vec::new();
        recorder.registry.collect(
            std::time::SystemTime::UNIX_EPOCH,
            std::time::Duration::from_secs(60),
            &mut out,
        );
        out.iter()
            .filter_map(|r| r.as_metric())
            .map(|m| m.count())
            .collect()
    }

    #[test]
    fn the_thread_s_cache_keeps_recorders_and_kinds_apart() {
        let (a, b) = (CensusRecorder::new(), CensusRecorder::new());
        for _ in 0..3 {
            metrics::with_local_recorder(&a, || metrics::histogram!("latency").record(1.0));
        }
        metrics::with_local_recorder(&b, || metrics::histogram!("latency").record(1.0));
        // The same name as a counter is a series of its own.
        metrics::with_local_recorder(&b, || metrics::counter!("latency").increment(1));
        assert_eq!(counts(&a), [3]);
        let mut b_counts = counts(&b);
        b_counts.sort_unstable();
        assert_eq!(b_counts, [1, 1]);
    }

    #[test]
    fn the_same_key_finds_the_same_cell_and_labels_tell_series_apart() {
        let recorder = CensusRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                metrics::histogram!("latency", "route" => "/a").record(1.0);
            }
            metrics::histogram!("latency", "route" => "/b").record(5.0);
            let route = String::from("/a");
            metrics::histogram!("latency", "route" => route).record(2.0);
            // A key made at the same place at every turn, with other labels each time.
            for (route, value) in [("/c", 1.0), ("/d", 2.0), ("/c", 3.0)] {
                let key = Key::from_parts("latency", vec![metrics::Label::new("route", route)]);
                metrics::with_recorder(|r| {
                    r.register_histogram(&key, &Metadata::new("t", metrics::Level::INFO, None))
                })
                .record(value);
            }
        });
        let mut out = Vec::new();
        recorder.registry.collect(
            std::time::SystemTime::UNIX_EPOCH,
            std::time::Duration::from_secs(60),
            &mut out,
        );
        let mut figures: Vec<_> = out
            .iter()
            .filter_map(|r| r.as_metric())
            .map(|m| {
                (
                    m.property("route").unwrap().to_owned(),
                    m.count(),
                    m.value(),
                )
            })
            .collect();
        figures.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            figures,
            [
                ("/a".to_owned(), 4, 5.0),
                ("/b".to_owned(), 1, 5.0),
                ("/c".to_owned(), 2, 4.0),
                ("/d".to_owned(), 1, 2.0)
            ]
        );
    }
}
