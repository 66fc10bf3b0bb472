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
//! Recording is cheap and never blocks: a handle (`metrics::Counter`, `Gauge`, `Histogram`)
//! points at a cell of atomics, updated without a lock or an allocation; the macros look the
//! handle up by the key's precomputed hash under a shared read lock. Keep the handle where a
//! call is hot (`let latency = metrics::histogram!("checkout_ms");`) to skip the look-up.
//!
//! Bounded: at most [`max_names`](CensusRecorder::max_names) names and
//! [`max_label_sets`](CensusRecorder::max_label_sets) label sets per name (1,000 each by
//! default). A series past a cap is not made: its values are dropped, counted in
//! [`pipeline::diagnostics`](crate::pipeline::diagnostics)`().metrics_dropped`, and the first
//! refusal is said once through `log`.
//!
//! A value recorded at the very instant its interval closes may have its count in one interval
//! and its sum in the next: the cells are read field by field, not under a lock.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SetRecorderError, SharedString, Unit,
};

use crate::metric::{
    self, Collect, CounterCell, GaugeCell, HistogramCell, Limits, Registry, SeriesKey,
};
use crate::record::SeriesId;

/// The `metrics` recorder that pre-aggregates into census; see the [module](self).
pub struct CensusRecorder {
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
    pub fn new() -> Self {
        CensusRecorder::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        let registry = Arc::new(Registry::new(limits));
        let source: Arc<dyn Collect> = registry.clone();
        metric::register(&source);
        CensusRecorder {
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
    pub fn max_names(self, names: usize) -> Self {
        CensusRecorder::with_limits(Limits {
            max_names: names,
            ..self.limits
        })
    }

    /// Makes this the process's `metrics` recorder (`metrics` allows one, once). A test or a
    /// scope may use it without installing it: `metrics::with_local_recorder(&recorder, ...)`.
    pub fn install(self) -> Result<(), SetRecorderError<CensusRecorder>> {
        metrics::set_global_recorder(self)
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
        match self
            .registry
            .cell::<CounterCell>(key, key.name(), || Self::id(key))
        {
            Some(cell) => Counter::from_arc(cell),
            None => Counter::from_arc(Arc::clone(&self.overflow)),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self
            .registry
            .cell::<GaugeCell>(key, key.name(), || Self::id(key))
        {
            Some(cell) => Gauge::from_arc(cell),
            None => Gauge::from_arc(Arc::clone(&self.overflow)),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self
            .registry
            .cell::<HistogramCell>(key, key.name(), || Self::id(key))
        {
            Some(cell) => Histogram::from_arc(cell),
            None => Histogram::from_arc(Arc::clone(&self.overflow)),
        }
    }
}

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
            [("/a".to_owned(), 4, 5.0), ("/b".to_owned(), 1, 5.0)]
        );
    }
}
