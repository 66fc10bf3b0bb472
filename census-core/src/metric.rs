//! Metrics pre-aggregated per interval (a minute by default), as Application Insights wants
//! them: cells that recording threads update without an allocation or a system call, a
//! registry of series by name and labels with caps on both, and the collection that the export
//! worker runs once per interval and at every flush and shutdown.
//!
//! A recorder (the `metrics` facade's, in `integrations/metrics.rs`) resolves a name and labels
//! to a cell once, through [`Registry`]; recording into the cell is then one atomic operation (a
//! counter's addition, a gauge's store or addition, a histogram's busy flag). Collecting swaps
//! each cell's figures out for the next interval and turns them into [`MetricRecord`]s.

// Series are made by the `metrics` facade's recorder; without it only the collection runs.
#![cfg_attr(
    not(feature = "metrics"),
    allow(dead_code, reason = "series come from the metrics recorder")
)]

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use crate::diagnostics::COUNTERS;
use crate::record::{Distribution, MetricKind, MetricRecord, Record, SeriesId};

/// Default cap on the label sets of one metric name.
pub(crate) const DEFAULT_MAX_LABEL_SETS: usize = 1_000;
/// Default cap on the metric names of one registry.
pub(crate) const DEFAULT_MAX_NAMES: usize = 1_000;

// ---------------------------------------------------------------------------------------------
// Cells.

/// Adds `value` to the `f64` stored as bits in `cell`.
#[inline]
fn add_f64(cell: &AtomicU64, value: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(current) + value).to_bits();
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// A counter: its running total. What an interval reports is the increase since the last report.
#[derive(Debug)]
pub(crate) struct CounterCell {
    id: Arc<SeriesId>,
    total: AtomicU64,
    /// The total at the last report: the collector's alone.
    reported: AtomicU64,
}

impl CounterCell {
    fn new(id: Arc<SeriesId>) -> Self {
        CounterCell {
            id,
            total: AtomicU64::new(0),
            reported: AtomicU64::new(0),
        }
    }

    /// Adds `n`.
    #[inline]
    pub(crate) fn increment(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Raises the total to `total`, if it is lower (the `metrics` facade's `absolute`).
    #[inline]
    pub(crate) fn absolute(&self, total: u64) {
        self.total.fetch_max(total, Ordering::Relaxed);
    }

    fn collect(&self) -> Option<u64> {
        let total = self.total.load(Ordering::Relaxed);
        let reported = self.reported.swap(total, Ordering::Relaxed);
        let increase = total.wrapping_sub(reported);
        (increase > 0).then_some(increase)
    }
}

/// A gauge: its last value, reported every interval once it has been set.
#[derive(Debug)]
pub(crate) struct GaugeCell {
    id: Arc<SeriesId>,
    bits: AtomicU64,
    set: AtomicBool,
}

impl GaugeCell {
    fn new(id: Arc<SeriesId>) -> Self {
        GaugeCell {
            id,
            bits: AtomicU64::new(0f64.to_bits()),
            set: AtomicBool::new(false),
        }
    }

    /// Sets the value.
    #[inline]
    pub(crate) fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
        self.touch();
    }

    /// Adds `delta` (negative to decrease).
    #[inline]
    pub(crate) fn add(&self, delta: f64) {
        add_f64(&self.bits, delta);
        self.touch();
    }

    #[inline]
    fn touch(&self) {
        if !self.set.load(Ordering::Relaxed) {
            self.set.store(true, Ordering::Relaxed);
        }
    }

    fn collect(&self) -> Option<f64> {
        if !self.set.load(Ordering::Relaxed) {
            return None;
        }
        Some(f64::from_bits(self.bits.load(Ordering::Relaxed))).filter(|v| v.is_finite())
    }
}

/// A histogram (a distribution): count, sum, sum of squares, minimum and maximum of the values
/// recorded in the current interval, under one lock: taking it uncontended is one
/// read-modify-write, where updating five atomics one by one took three.
#[derive(Debug)]
pub(crate) struct HistogramCell {
    id: Arc<SeriesId>,
    /// Whether a thread is updating `figures`.
    busy: AtomicBool,
    figures: UnsafeCell<Moments>,
}

// SAFETY: `figures` is read and written only while `busy` is held (`HistogramCell::with`).
unsafe impl Sync for HistogramCell {}

/// What a histogram gathers in an interval.
#[derive(Debug, Clone, Copy)]
struct Moments {
    count: u64,
    sum: f64,
    sum_of_squares: f64,
    min: f64,
    max: f64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        count: 0,
        sum: 0.0,
        sum_of_squares: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };
}

impl HistogramCell {
    fn new(id: Arc<SeriesId>) -> Self {
        HistogramCell {
            id,
            busy: AtomicBool::new(false),
            figures: UnsafeCell::new(Moments::EMPTY),
        }
    }

    /// Records one value; a value that is not finite (NaN, infinity) is ignored: Application
    /// Insights' JSON has no place for it.
    #[inline]
    pub(crate) fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    /// Records `value` `times` times.
    #[inline]
    pub(crate) fn record_many(&self, value: f64, times: u64) {
        if !value.is_finite() || times == 0 {
            return;
        }
        let n = times as f64;
        self.with(|figures| {
            figures.count += times;
            figures.sum += value * n;
            figures.sum_of_squares += value * value * n;
            figures.min = figures.min.min(value);
            figures.max = figures.max.max(value);
        });
    }

    /// Runs `update` on the figures, holding `busy`. `update` is a few float operations and
    /// cannot panic; a thread that finds `busy` held spins a little, then yields.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn with<R>(&self, update: impl FnOnce(&mut Moments) -> R) -> R {
        if self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.wait();
        }
        // SAFETY: `busy` is held: no other thread reads or writes `figures` until it is
        // released below.
        let result = update(unsafe { &mut *self.figures.get() });
        self.busy.store(false, Ordering::Release);
        result
    }

    /// Takes `busy` from another thread.
    #[cold]
    #[inline(never)]
    fn wait(&self) {
        let mut spins = 0u32;
        loop {
            while self.busy.load(Ordering::Relaxed) {
                if spins < 64 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .busy
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Takes the interval's figures and starts the next interval empty.
    fn collect(&self) -> Option<Distribution> {
        let figures = self.with(|figures| std::mem::replace(figures, Moments::EMPTY));
        (figures.count > 0).then(|| {
            Distribution::new(
                figures.count,
                figures.sum,
                figures.sum_of_squares,
                figures.min,
                figures.max,
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The registry.

/// Caps on what a registry holds: past them a new series is refused (its values are dropped
/// and counted) rather than memory growing with whatever labels an application invents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_names: usize,
    pub(crate) max_label_sets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_names: DEFAULT_MAX_NAMES,
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
        }
    }
}

/// Series by key (`K`: what the recorder looks them up by), each a cell of one kind.
pub(crate) struct Registry<K: SeriesKey> {
    inner: RwLock<Series<K>>,
    limits: Limits,
    /// Whether the first refusal was said through `log`.
    warned: AtomicBool,
}

pub(crate) struct Series<K: SeriesKey> {
    counters: HashMap<K, Arc<CounterCell>, K::Build>,
    gauges: HashMap<K, Arc<GaugeCell>, K::Build>,
    histograms: HashMap<K, Arc<HistogramCell>, K::Build>,
    /// Label sets per name, over the three kinds.
    label_sets: HashMap<Arc<str>, usize>,
}

/// What a registry looks its series up by, and how it is hashed.
pub(crate) trait SeriesKey: Hash + Eq + Clone {
    /// The hasher (a key may carry its hash already).
    type Build: std::hash::BuildHasher + Default;
}

/// A cell of one kind, as the registry makes and keeps it.
pub(crate) trait Cell: Sized {
    fn new(id: Arc<SeriesId>) -> Self;
    fn map<K: SeriesKey>(series: &Series<K>) -> &HashMap<K, Arc<Self>, K::Build>;
    fn map_mut<K: SeriesKey>(series: &mut Series<K>) -> &mut HashMap<K, Arc<Self>, K::Build>;
}

macro_rules! cell {
    ($cell:ty, $field:ident) => {
        impl Cell for $cell {
            fn new(id: Arc<SeriesId>) -> Self {
                <$cell>::new(id)
            }
            fn map<K: SeriesKey>(series: &Series<K>) -> &HashMap<K, Arc<Self>, K::Build> {
                &series.$field
            }
            fn map_mut<K: SeriesKey>(
                series: &mut Series<K>,
            ) -> &mut HashMap<K, Arc<Self>, K::Build> {
                &mut series.$field
            }
        }
    };
}

cell!(CounterCell, counters);
cell!(GaugeCell, gauges);
cell!(HistogramCell, histograms);

impl<K: SeriesKey> Registry<K> {
    pub(crate) fn new(limits: Limits) -> Self {
        Registry {
            inner: RwLock::new(Series {
                counters: HashMap::default(),
                gauges: HashMap::default(),
                histograms: HashMap::default(),
                label_sets: HashMap::new(),
            }),
            limits,
            warned: AtomicBool::new(false),
        }
    }

    /// The cell of the series `key`, made on first use with the name and labels `id` gives;
    /// `None` when a cap refuses a new series (the caller then drops and counts its values).
    pub(crate) fn cell<C: Cell>(
        &self,
        key: &K,
        name: &str,
        id: impl FnOnce() -> SeriesId,
    ) -> Option<Arc<C>> {
        {
            let series = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(cell) = C::map(&series).get(key) {
                return Some(Arc::clone(cell));
            }
            // Refused without taking the write lock: a series over the cap is looked up again
            // at every record through the facade's macros.
            if self.over_cap(&series, name) {
                drop(series);
                self.refuse(name);
                return None;
            }
        }
        let mut series = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = C::map(&series).get(key) {
            return Some(Arc::clone(cell));
        }
        if self.over_cap(&series, name) {
            drop(series);
            self.refuse(name);
            return None;
        }
        let id = Arc::new(id());
        let count = series.label_sets.entry(Arc::clone(&id.name)).or_insert(0);
        *count += 1;
        let cell = Arc::new(C::new(id));
        C::map_mut(&mut series).insert(key.clone(), Arc::clone(&cell));
        Some(cell)
    }

    fn over_cap(&self, series: &Series<K>, name: &str) -> bool {
        match series.label_sets.get(name) {
            Some(&sets) => sets >= self.limits.max_label_sets,
            None => series.label_sets.len() >= self.limits.max_names,
        }
    }

    fn refuse(&self, name: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "census: metric {name:?} is over a cap ({} names, {} label sets per name): values of new series are dropped and counted in pipeline::diagnostics().metrics_dropped; this is said once",
                self.limits.max_names,
                self.limits.max_label_sets
            );
        }
    }

    /// Appends the records of the interval that started at `start` and lasted `interval`, and
    /// starts the next one.
    pub(crate) fn collect(&self, start: SystemTime, interval: Duration, out: &mut Vec<Record>) {
        let series = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let record = |id: &Arc<SeriesId>, kind, figures: Distribution| {
            Record::Metric(Box::new(MetricRecord::new(
                Arc::clone(id),
                kind,
                start,
                interval,
                figures,
            )))
        };
        for cell in series.counters.values() {
            if let Some(increase) = cell.collect() {
                let value = increase as f64;
                out.push(record(&cell.id, MetricKind::Counter, single(value)));
            }
        }
        for cell in series.gauges.values() {
            if let Some(value) = cell.collect() {
                out.push(record(&cell.id, MetricKind::Gauge, single(value)));
            }
        }
        for cell in series.histograms.values() {
            match cell.collect() {
                Some(figures) if figures.sum.is_finite() => {
                    out.push(record(&cell.id, MetricKind::Histogram, figures));
                }
                // Values summing past f64's range: no figure JSON can carry.
                Some(figures) => dropped(figures.count),
                None => {}
            }
        }
    }
}

/// One measurement's figures.
fn single(value: f64) -> Distribution {
    Distribution {
        count: 1,
        sum: value,
        min: value,
        max: value,
        std_dev: 0.0,
    }
}

/// Counts one value dropped because its series was refused.
#[inline]
pub(crate) fn dropped(values: u64) {
    COUNTERS
        .metrics_dropped
        .fetch_add(values, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// Collection.

/// What the export worker collects from: a registry, whatever its key.
pub(crate) trait Collect: Send + Sync {
    fn collect(&self, start: SystemTime, interval: Duration, out: &mut Vec<Record>);
}

impl<K: SeriesKey + Send + Sync> Collect for Registry<K>
where
    K::Build: Send + Sync,
{
    fn collect(&self, start: SystemTime, interval: Duration, out: &mut Vec<Record>) {
        Registry::collect(self, start, interval, out);
    }
}

/// Every live registry: the worker collects from each. A registry leaves when it is dropped.
static SOURCES: Mutex<Vec<Weak<dyn Collect>>> = Mutex::new(Vec::new());

/// Makes `source` collected by the export worker for as long as it lives.
pub(crate) fn register(source: &Arc<dyn Collect>) {
    let mut sources = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    sources.retain(|source| source.strong_count() > 0);
    sources.push(Arc::downgrade(source));
}

/// Appends the records of every registry for the interval from `start` to now.
pub(crate) fn collect(start: SystemTime, interval: Duration, out: &mut Vec<Record>) {
    let sources: Vec<Arc<dyn Collect>> = {
        let sources = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
        sources.iter().filter_map(Weak::upgrade).collect()
    };
    for source in sources {
        source.collect(start, interval, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    struct Name(&'static str, &'static str);

    impl SeriesKey for Name {
        type Build = std::collections::hash_map::RandomState;
    }

    fn id(name: &'static str, label: &'static str) -> SeriesId {
        SeriesId::new(name, vec![("k".to_owned(), label.to_owned())])
    }

    fn registry(limits: Limits) -> Registry<Name> {
        Registry::new(limits)
    }

    fn collect(registry: &Registry<Name>) -> Vec<MetricRecord> {
        let mut out = Vec::new();
        registry.collect(SystemTime::UNIX_EPOCH, Duration::from_secs(60), &mut out);
        out.into_iter()
            .map(|record| match record {
                Record::Metric(metric) => *metric,
                _ => unreachable!("a registry collects metrics"),
            })
            .collect()
    }

    #[test]
    fn a_histogram_s_figures_are_exact() {
        let registry = registry(Limits::default());
        let cell: Arc<HistogramCell> = registry
            .cell(&Name("latency", "a"), "latency", || id("latency", "a"))
            .unwrap();
        for value in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            cell.record(value);
        }
        cell.record(f64::NAN);
        let records = collect(&registry);
        assert_eq!(records.len(), 1);
        let metric = &records[0];
        assert_eq!(metric.kind(), MetricKind::Histogram);
        assert_eq!((metric.count(), metric.value()), (8, 40.0));
        assert_eq!((metric.min(), metric.max()), (2.0, 9.0));
        assert_eq!(metric.std_dev(), 2.0);
        assert_eq!(metric.property("k"), Some("a"));
        // The next interval starts empty, and an empty interval reports nothing.
        assert!(collect(&registry).is_empty());
        cell.record_many(3.0, 4);
        let metric = &collect(&registry)[0];
        assert_eq!(
            (metric.count(), metric.value(), metric.std_dev()),
            (4, 12.0, 0.0)
        );
        assert_eq!((metric.min(), metric.max()), (3.0, 3.0));
    }

    #[test]
    fn a_counter_reports_its_increase_and_a_gauge_its_last_value() {
        let registry = registry(Limits::default());
        let counter: Arc<CounterCell> = registry
            .cell(&Name("orders", "a"), "orders", || id("orders", "a"))
            .unwrap();
        let gauge: Arc<GaugeCell> = registry
            .cell(&Name("depth", "a"), "depth", || id("depth", "a"))
            .unwrap();
        assert!(collect(&registry).is_empty(), "nothing recorded yet");
        counter.increment(3);
        counter.increment(4);
        gauge.set(10.0);
        gauge.add(-2.5);
        let mut records = collect(&registry);
        records.sort_by(|a, b| a.name().cmp(b.name()));
        assert_eq!((records[0].name(), records[0].value()), ("depth", 7.5));
        assert_eq!((records[1].name(), records[1].value()), ("orders", 7.0));
        assert_eq!(records[1].kind(), MetricKind::Counter);
        // The counter reports only its increase; the gauge its value, every interval.
        counter.absolute(20);
        counter.absolute(5);
        let mut records = collect(&registry);
        records.sort_by(|a, b| a.name().cmp(b.name()));
        assert_eq!((records[0].name(), records[0].value()), ("depth", 7.5));
        assert_eq!((records[1].name(), records[1].value()), ("orders", 13.0));
        gauge.set(1.0);
        let records = collect(&registry);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value(), 1.0);
    }

    #[test]
    fn caps_refuse_new_label_sets_and_names() {
        let registry = registry(Limits {
            max_names: 2,
            max_label_sets: 2,
        });
        let cell = |name, label| {
            registry.cell::<CounterCell>(&Name(name, label), name, || id(name, label))
        };
        assert!(cell("a", "1").is_some());
        assert!(cell("a", "2").is_some());
        assert!(cell("a", "3").is_none(), "a third label set of a");
        assert!(cell("a", "1").is_some(), "a known series stays");
        assert!(cell("b", "1").is_some());
        assert!(cell("c", "1").is_none(), "a third name");
        // Kinds share a name's label sets.
        assert!(
            registry
                .cell::<HistogramCell>(&Name("a", "9"), "a", || id("a", "9"))
                .is_none()
        );
    }

    #[test]
    fn many_threads_record_exactly() {
        let registry = registry(Limits::default());
        let cell: Arc<HistogramCell> = registry
            .cell(&Name("latency", "a"), "latency", || id("latency", "a"))
            .unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let cell = &cell;
                scope.spawn(move || {
                    for i in 0..10_000u32 {
                        cell.record(f64::from(t * 10_000 + i));
                    }
                });
            }
        });
        let metric = &collect(&registry)[0];
        assert_eq!(metric.count(), 40_000);
        assert_eq!(metric.value(), (0..40_000u32).map(f64::from).sum::<f64>());
        assert_eq!((metric.min(), metric.max()), (0.0, 39_999.0));
    }
}
