//! Telemetry that is not a span: log records and custom events, tied to the span current where
//! they are written. A record written inside a trace the sampler dropped goes with it (the
//! Application Insights SDKs sample by operation id); one written outside any trace is kept.

use std::borrow::Cow;
use std::fmt::Display;

use crate::local::{Frame, on_census_thread, unsampled_root, with_local};
use crate::queue;
use crate::record::{Correlation, EventRecord, Item, LogRecord, SpanExtra};
use crate::sampler;

/// The crates whose targets are census's own: this one, whose modules write census's warnings,
/// and the one applications name. What they write never becomes telemetry (no feedback loop
/// when the endpoint fails), whichever bridge it reaches.
#[cfg(any(feature = "log", feature = "tracing"))]
const OWN_CRATES: [&str; 2] = [env!("CARGO_CRATE_NAME"), "census_runtime"];

/// Whether a target is census's own: its warnings never become telemetry.
#[cfg(any(feature = "log", feature = "tracing"))]
pub(crate) fn is_census(target: &str) -> bool {
    OWN_CRATES.iter().any(|own| {
        target
            .strip_prefix(own)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Where a record written now on this thread belongs: the span current here, or no operation
/// at all outside any span (as when the thread is ending and its state is gone). `None` when it
/// is not recorded: no pipeline, a trace the sampler dropped, or one of census's own threads.
/// Inlined into the callers, so that what it returns is not read back from memory in wider
/// loads than the stores that wrote it (a trace id is one 16-byte field), which the processor
/// cannot forward.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn correlation() -> Option<Correlation> {
    if !sampler::is_active() || on_census_thread() {
        return None;
    }
    with_local(
        #[inline(always)]
        |local| match local.top() {
            Some(Frame::Parent(carried)) if carried.ctx.is_sampled() => Some(Correlation {
                trace_id: Some(carried.ctx.trace_id()),
                parent_id: Some(carried.ctx.span_id()),
                operation_name: carried.operation_name.clone(),
                sample_rate: carried.sample_rate.unwrap_or_else(sampler::percentage),
            }),
            Some(frame) => frame.record().map(|span| Correlation {
                trace_id: Some(span.trace_id()),
                parent_id: Some(span.span_id()),
                operation_name: span.shared_operation_name(),
                sample_rate: span.sample_rate() as f32,
            }),
            None if unsampled_root() => None,
            None => outside_any_span(),
        },
    )
    // The thread's state is gone: a record written by a thread-local's destructor as the
    // thread ends, when no span is open any more.
    .unwrap_or_else(outside_any_span)
}

/// Where a record written outside any span belongs, when it is kept: no operation, at the
/// percentage it was kept at (always, at 100, unless the pipeline samples those records too).
#[inline]
pub(crate) fn outside_any_span() -> Option<Correlation> {
    sampler::keep_outside_spans().map(Correlation::outside_any_span)
}

/// Hands the log record `make` returns to the export worker, built in place and completed
/// there by `fill`.
#[cfg_attr(
    not(any(feature = "log", feature = "tracing")),
    allow(
        dead_code,
        reason = "log records come from the log and tracing bridges"
    )
)]
#[inline]
pub(crate) fn emit_log(make: impl FnOnce() -> LogRecord, fill: impl FnOnce(&mut LogRecord)) {
    queue::submit_item_with(
        || Item::Log(make()),
        |item| {
            if let Item::Log(log) = item {
                fill(log);
            }
        },
    );
}

/// Starts a custom event: an `Event` in Application Insights (`customEvents`), tied to the span
/// current here. Send it with [`EventBuilder::send`].
///
/// ```
/// use census_runtime::export::MemoryExporter;
/// use std::time::Duration;
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// census_runtime::span("checkout").in_scope(|| {
///     census_runtime::event("order_placed")
///         .property("sku", "caviar")
///         .measurement("total", 12.5)
///         .send();
/// });
/// census.flush(Duration::from_secs(5))?;
/// let event = &memory.events()[0];
/// assert_eq!((event.name(), event.property("sku")), ("order_placed", Some("caviar")));
/// assert_eq!(event.parent_id(), Some(memory.one("checkout").span_id()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn event(name: impl Into<Cow<'static, str>>) -> EventBuilder {
    EventBuilder {
        name: name.into(),
        values: crate::record::boxed_extra(None),
        measurements: Vec::new(),
    }
}

/// A custom event being described; made by [`event`].
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// census_runtime::event("cart_abandoned")
///     .property("items", 3)
///     .measurement("value", 41.5)
///     .send();
/// # census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.events()[0].name(), "cart_abandoned");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "an event is sent by .send()"]
pub struct EventBuilder {
    name: Cow<'static, str>,
    /// The properties, in a box of run-time values the export worker hands back (a property
    /// with a short value allocates nothing).
    values: Box<SpanExtra>,
    measurements: Vec<(Cow<'static, str>, f64)>,
}

impl std::fmt::Debug for EventBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBuilder")
            .field("name", &self.name)
            .field("properties", &self.values.properties)
            .field("measurements", &self.measurements)
            .finish()
    }
}

impl EventBuilder {
    /// A property (a dimension to filter and group by), by `Display`. Given again, a key takes
    /// the value given last (the item carries each key once).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").property("sku", "caviar").property("items", 3).send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].property("items"), Some("3"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn property(mut self, key: impl Into<Cow<'static, str>>, value: impl Display) -> Self {
        crate::record::push_display(&mut self.values.properties, key.into(), &value);
        self
    }

    /// A measurement (a number to chart and aggregate). Given again, a key takes the value
    /// given last.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").measurement("total", 12.5).send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// let events = memory.events();
    /// assert_eq!(events[0].measurements().collect::<Vec<_>>(), [("total", 12.5)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn measurement(mut self, key: impl Into<Cow<'static, str>>, value: f64) -> Self {
        self.measurements.push((key.into(), value));
        self
    }

    /// Sends the event: to the exporters, with the span current here, unless that span's trace
    /// was not sampled (or no pipeline is installed).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").send(); // outside any span: kept
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(self) {
        match correlation() {
            Some(correlation) => {
                let record =
                    EventRecord::new(self.name, correlation, self.values, self.measurements);
                queue::submit_item(Item::Event(record));
            }
            None => crate::record::give_back_extra(self.values),
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(any(feature = "log", feature = "tracing"))]
    #[test]
    fn census_s_own_targets_are_told_apart() {
        use super::is_census;
        assert!(is_census("census_runtime"));
        assert!(is_census("census_core::azure::transport"));
        assert!(is_census(module_path!()));
        assert!(!is_census("census_runtimes"));
        assert!(!is_census("orders::census_runtime"));
    }
}
