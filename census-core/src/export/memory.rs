//! An exporter that keeps what it is given in memory, for tests (the user's too).

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Exporter, Resource};
use crate::id::SpanId;
use crate::record::{EventRecord, LogRecord, MetricRecord, Record, SpanRecord};

/// Keeps every exported span, log record, event and metric in memory; clones share the same store.
///
/// ```
/// use census_runtime::inproc;
/// use census_runtime::export::MemoryExporter;
/// use std::time::Duration;
///
/// #[inproc]
/// fn price() -> u32 { 42 }
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
/// price();
/// census.flush(Duration::from_secs(5)).unwrap();
/// assert_eq!(memory.spans()[0].name(), "price");
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryExporter {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    logs: Arc<Mutex<Vec<LogRecord>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
    metrics: Arc<Mutex<Vec<MetricRecord>>>,
    resource: Arc<Mutex<Option<Resource>>>,
}

fn locked<T>(store: &Mutex<Vec<T>>) -> MutexGuard<'_, Vec<T>> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryExporter {
    /// An empty store.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.spans().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<SpanRecord>> {
        locked(&self.spans)
    }

    /// Every span exported so far, in the order they were exported.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| census_runtime::span("charge").in_scope(|| {}));
    /// census.flush(Duration::from_secs(5))?;
    /// // A span is exported when it ends: the child first.
    /// let names: Vec<_> = memory.spans().iter().map(|span| span.name().to_owned()).collect();
    /// assert_eq!(names, ["charge", "checkout"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.lock().clone()
    }

    /// The spans named `name`.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// for _ in 0..3 {
    ///     census_runtime::span("poll").in_scope(|| {});
    /// }
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.named("poll").len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn named(&self, name: &str) -> Vec<SpanRecord> {
        self.lock()
            .iter()
            .filter(|s| s.name() == name)
            .cloned()
            .collect()
    }

    /// The one span named `name`; panics when there is not exactly one (meant for tests).
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").kind("HTTP").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.one("checkout").kind(), "HTTP");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn one(&self, name: &str) -> SpanRecord {
        let mut found = self.named(name);
        assert_eq!(
            found.len(),
            1,
            "expected exactly one span named {name:?}, found {}",
            found.len()
        );
        found.remove(0)
    }

    /// The spans whose parent is `parent`.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| {
    ///     census_runtime::span("price").in_scope(|| {});
    ///     census_runtime::span("charge").in_scope(|| {});
    /// });
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.children_of(memory.one("checkout").span_id()).len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn children_of(&self, parent: SpanId) -> Vec<SpanRecord> {
        self.lock()
            .iter()
            .filter(|s| s.parent_id() == Some(parent))
            .cloned()
            .collect()
    }

    /// The resource the pipeline described itself with, once a batch arrived.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .cloud_role("orders")
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// assert_eq!(memory.resource(), None); // nothing exported yet
    /// census_runtime::span("checkout").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.resource().map(|resource| resource.cloud_role), Some("orders".to_owned()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resource(&self) -> Option<Resource> {
        self.resource.lock().ok().and_then(|r| r.clone())
    }

    /// Every log record (and `tracing` event) exported so far, in order.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// let memory = MemoryExporter::new();
    /// assert!(memory.logs().is_empty());
    /// ```
    pub fn logs(&self) -> Vec<LogRecord> {
        locked(&self.logs).clone()
    }

    /// Every custom event exported so far, in order.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").send();
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].name(), "order_placed");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn events(&self) -> Vec<EventRecord> {
        locked(&self.events).clone()
    }

    /// Every metric record exported so far (one per series and interval), in order.
    #[cfg_attr(
        feature = "metrics",
        doc = r#"
```
use census_runtime::export::MemoryExporter;
use census_runtime::integrations::metrics::CensusRecorder;
use std::time::Duration;

let memory = MemoryExporter::new();
let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
let recorder = CensusRecorder::new();
metrics::with_local_recorder(&recorder, || {
    metrics::counter!("orders_placed").increment(2);
    metrics::gauge!("queue_depth").set(7.0);
});
census.flush(Duration::from_secs(5))?; // a flush delivers the interval so far
assert_eq!(memory.metrics().len(), 2);
# Ok::<(), Box<dyn std::error::Error>>(())
```
"#
    )]
    pub fn metrics(&self) -> Vec<MetricRecord> {
        locked(&self.metrics).clone()
    }

    /// The metric records of the series named `name`, in order.
    #[cfg_attr(
        feature = "metrics",
        doc = r#"
```
use census_runtime::export::MemoryExporter;
use census_runtime::integrations::metrics::CensusRecorder;
use std::time::Duration;

let memory = MemoryExporter::new();
let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
let recorder = CensusRecorder::new();
metrics::with_local_recorder(&recorder, || {
    metrics::counter!("orders_placed").increment(2);
    metrics::counter!("orders_refused").increment(1);
});
census.flush(Duration::from_secs(5))?;
assert_eq!(memory.metrics_named("orders_placed")[0].value(), 2.0);
# Ok::<(), Box<dyn std::error::Error>>(())
```
"#
    )]
    pub fn metrics_named(&self, name: &str) -> Vec<MetricRecord> {
        locked(&self.metrics)
            .iter()
            .filter(|m| m.name() == name)
            .cloned()
            .collect()
    }

    /// Forgets everything.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("warm up").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// memory.clear();
    /// assert!(memory.spans().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) {
        self.lock().clear();
        locked(&self.logs).clear();
        locked(&self.events).clear();
        locked(&self.metrics).clear();
    }
}

impl Exporter for MemoryExporter {
    fn export(&mut self, batch: &[Record], resource: &Resource) {
        for record in batch {
            match record {
                Record::Span(span) => self.lock().push(span.clone()),
                Record::Log(log) => locked(&self.logs).push(LogRecord::clone(log)),
                Record::Event(event) => locked(&self.events).push((**event).clone()),
                Record::Metric(metric) => locked(&self.metrics).push((**metric).clone()),
            }
        }
        if let Ok(mut slot) = self.resource.lock()
            && slot.is_none()
        {
            *slot = Some(resource.clone());
        }
    }
}
