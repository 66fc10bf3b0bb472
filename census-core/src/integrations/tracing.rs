//! [`tracing`](https://docs.rs/tracing) spans and events in census, both ways (feature
//! `tracing`): a `tracing_subscriber` layer, [`CensusLayer`], composable with `fmt`,
//! `EnvFilter` and per-layer filters.
//!
//! - A `tracing` span becomes a census span: an `INPROC` dependency, unless its fields say
//!   otherwise, following the OpenTelemetry semantic conventions (`otel.kind = "server"` or
//!   `"consumer"` makes a `Request`; `otel.name` renames it; `db.system`, `db.name`,
//!   `db.statement` / `db.query.text`, `messaging.system`, `messaging.destination.name`,
//!   `rpc.system`, `server.address` / `server.port`, `http.request.method`, `url.full`,
//!   `http.response.status_code` describe a call, its type and target named as census's own
//!   integrations name them: `postgresql` and `db.internal:5432 | orders` for a query, `SQL` for
//!   SQL Server, `Queue Message | kafka` for a message sent) or census's own (`census.kind`,
//!   `census.target`); `client.address` or `http.client_ip` is a request's client, sent as its
//!   `ai.location.ip`; `traceparent` and `tracestate` (or `http.request.header.traceparent` and
//!   `http.request.header.tracestate`), the headers of the request a server's span is made for,
//!   continue the caller's trace, as census's own server integrations do: the span is the
//!   caller's span's child, whatever is current here, recorded as its sampled flag says, and
//!   the calls made inside it pass the `tracestate` on (a malformed `traceparent` is ignored;
//!   read when the span is made, not when recorded later); a legacy Application Insights
//!   `Request-Id` (`"http.request.header.request-id"`), from a caller that sends no
//!   `traceparent`, is continued too, its trace kept by its id's score. Its other fields become
//!   properties; `otel.status_code = "ERROR"`, an `error` field, or an `ERROR` event written in it
//!   (what `#[instrument(err)]` writes when the function returns an `Err`, as
//!   `tracing-opentelemetry` reads it) fails it, unless `otel.status_code = "OK"` came first: that
//!   status is final, as OpenTelemetry's. A span that `follows_from` another is linked to it
//!   (`_MS.links`, as the Azure Monitor exporters write OpenTelemetry's links).
//! - A value whose `Debug` or `Display` panics while the layer reads it is written
//!   `<unprintable: its formatting panicked>`, and the panic goes no further.
//! - The two worlds nest in one tree: a `#[dependency]` method called inside a
//!   `#[tracing::instrument]` function nests under its span, and a `tracing` span opened inside
//!   a census span nests under that, sync and across `.await`.
//! - A `tracing` event becomes a `Message` (severity from its level, fields as properties); one
//!   carrying an error (`error = &e as &dyn Error`, or `exception.message` / `exception.type`
//!   fields) becomes an `Exception` with the error's chain of `source()`s (its
//!   `exception.stacktrace` field, a property, is what the Azure exporter sends as the
//!   outermost exception's `stack`); one with a `census.event = "name"` field becomes a custom
//!   `Event` (numbers as measurements).
//! - A `log` record that `tracing-log`'s `LogTracer` made an event (`tracing_subscriber`'s
//!   `init()` installs it) is read by its own target, module, file and line; census's own
//!   records never become telemetry, by either way.
//!
//! ```
//! use census_runtime::export::MemoryExporter;
//! use census_runtime::integrations::tracing::CensusLayer;
//! use tracing_subscriber::layer::SubscriberExt;
//! use std::time::Duration;
//!
//! let memory = MemoryExporter::new();
//! let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
//! let subscriber = tracing_subscriber::registry().with(CensusLayer::new());
//! tracing::subscriber::with_default(subscriber, || {
//!     let _span = tracing::info_span!("load orders", db.system = "postgresql").entered();
//!     tracing::info!(count = 3, "orders loaded");
//! });
//! census.flush(Duration::from_secs(5))?;
//!
//! let span = memory.one("load orders");
//! assert_eq!(span.kind(), "postgresql");
//! assert_eq!(memory.logs()[0].parent_id(), Some(span.span_id()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A server's span made from its request's headers continues the caller's trace:
//!
//! ```
//! use census_runtime::export::MemoryExporter;
//! use census_runtime::integrations::tracing::CensusLayer;
//! use tracing_subscriber::layer::SubscriberExt;
//! use std::time::Duration;
//!
//! let memory = MemoryExporter::new();
//! let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
//! let subscriber = tracing_subscriber::registry().with(CensusLayer::new());
//! // As a server framework's `make_span_with` hook would write it, from the request.
//! let header = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! tracing::subscriber::with_default(subscriber, || {
//!     let request = tracing::info_span!("GET /orders", otel.kind = "server", traceparent = header);
//!     let _request = request.entered();
//! });
//! census.flush(Duration::from_secs(5))?;
//!
//! let request = memory.one("GET /orders");
//! assert_eq!(request.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(request.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Events are recorded at `INFO` and above by default ([`CensusLayer::event_level`]), spans at
//! `DEBUG` and above ([`CensusLayer::span_level`]): `TRACE` spans are the per-poll internals of
//! runtimes and protocol crates (`tokio`'s tasks, `h2`'s streams), which would each become a
//! dependency. A span left out is left out of the tree: what it holds nests under the span above
//! it. A per-layer filter such as `EnvFilter` chooses, beyond that, which reach the layer.

use std::borrow::Cow;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tracing_core::span::{Attributes, Id, Record as FieldValues};
use tracing_core::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::layer::{Context, Layer};

use crate::context::Carried;
use crate::id::SpanContext;
use crate::local::{ForeignEntry, ForeignKey, Local, with_local};
use crate::record::{EventRecord, Item, LogRecord, Severity, Source, SpanExtra, SpanRecord, Value};
use crate::span::{NotStarted, Planned};
use crate::text::Text;
use crate::{queue, telemetry};

mod event_fields;
mod span_fields;
mod spans;

use event_fields::{Errors, EventFields, LogFields};
use span_fields::{SpanFields, absorb, succeeded_for_good};
use spans::SpanTable;

/// The layer that makes `tracing` spans census spans and events telemetry; see the
/// [module](self).
///
/// A clone is a layer of the same configuration that keeps spans of its own: each subscriber
/// is given its own layer (the spans of two subscribers may share ids). A layer keeps its open
/// spans in a table of its own, 32 KiB of slots made with it, and a map beside them for the
/// spans past those.
///
/// ```
/// use census_runtime::integrations::tracing::CensusLayer;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// // Beside `fmt` and under any filter, as the module's documentation shows.
/// tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CensusLayer::new()))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CensusLayer {
    event_level: Level,
    span_level: Level,
    error_events_fail_spans: bool,
    /// The spans this layer bridged, by id, from the moment they are made until they close.
    spans: Spans,
}

/// What census keeps of the open spans, in a table of the layer's own rather than in the
/// spans' extensions in the registry, where a span made and closed took two registry lookups,
/// two locks of the span's extensions and a box for the value (the layer's span took 320 ns
/// through the extensions, 278-292 ns through a sharded map).
type Spans = SpanTable<Bridged>;

impl Clone for CensusLayer {
    fn clone(&self) -> Self {
        CensusLayer {
            event_level: self.event_level,
            span_level: self.span_level,
            error_events_fail_spans: self.error_events_fail_spans,
            spans: Spans::default(),
        }
    }
}

impl fmt::Debug for CensusLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CensusLayer")
            .field("event_level", &self.event_level)
            .field("span_level", &self.span_level)
            .field("error_events_fail_spans", &self.error_events_fail_spans)
            .field("open_spans", &self.spans.len())
            .finish()
    }
}

/// A layer let go while spans it bridged are still open (replaced through a
/// `tracing_subscriber::reload` handle) sends their records as they stand, ended now: the
/// layer that takes its place does not know them, and their records would go with this one.
/// Their scope on each thread ends when they are left, as before.
impl Drop for CensusLayer {
    fn drop(&mut self) {
        let open = self.spans.drain();
        if open.is_empty() {
            return;
        }
        let end = crate::clock::now();
        for bridged in open {
            if let Some(mut record) = bridged.into_record() {
                record.set_end(end);
                crate::local::submit(record);
            }
        }
    }
}

impl Default for CensusLayer {
    fn default() -> Self {
        CensusLayer::new()
    }
}

impl CensusLayer {
    /// A layer recording the spans it is given at `DEBUG` and above, and events at `INFO` and
    /// above.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use census_runtime::integrations::tracing::CensusLayer;
    /// use std::time::Duration;
    /// use tracing_subscriber::layer::SubscriberExt;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let subscriber = tracing_subscriber::registry().with(CensusLayer::new());
    /// tracing::subscriber::with_default(subscriber, || {
    ///     tracing::debug_span!("recorded").in_scope(|| {});
    ///     tracing::trace_span!("left out").in_scope(|| {});
    ///     tracing::debug!("left out too");
    /// });
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.spans().len(), 1);
    /// assert!(memory.logs().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Self {
        CensusLayer {
            event_level: Level::INFO,
            span_level: Level::DEBUG,
            error_events_fail_spans: true,
            spans: Spans::default(),
        }
    }

    /// The most verbose level of events that become telemetry (default `INFO`).
    ///
    /// ```
    /// use census_runtime::integrations::tracing::CensusLayer;
    /// let layer = CensusLayer::new().event_level(tracing::Level::DEBUG);
    /// # let _ = layer;
    /// ```
    pub fn event_level(mut self, level: Level) -> Self {
        self.event_level = level;
        self
    }

    /// The most verbose level of spans that become census spans (default `DEBUG`). A span left
    /// out is not in the tree: the spans and records it holds nest under the span above it.
    ///
    /// ```
    /// use census_runtime::integrations::tracing::CensusLayer;
    /// // Only what the application's `#[tracing::instrument]` functions make (INFO), not the
    /// // libraries' DEBUG spans.
    /// let layer = CensusLayer::new().span_level(tracing::Level::INFO);
    /// # let _ = layer;
    /// ```
    pub fn span_level(mut self, level: Level) -> Self {
        self.span_level = level;
        self
    }

    /// Whether an `ERROR` event fails the span it is written in (default `true`: what
    /// `#[tracing::instrument(err)]` writes when the function returns an `Err`, as
    /// `tracing-opentelemetry` reads it). Off, only the span's own fields fail it
    /// (`otel.status_code = "ERROR"`, an `error` field): for a service that logs errors it
    /// recovers from inside calls that succeed.
    ///
    /// ```
    /// use census_runtime::integrations::tracing::CensusLayer;
    /// let layer = CensusLayer::new().error_events_fail_spans(false);
    /// # let _ = layer;
    /// ```
    pub fn error_events_fail_spans(mut self, on: bool) -> Self {
        self.error_events_fail_spans = on;
        self
    }

    /// Fails the `tracing` span an error event is written in (its explicit parent, or the
    /// span current here), when this layer records it.
    #[cold]
    fn fail_span_of<S: Subscriber>(&self, event: &Event<'_>, ctx: &Context<'_, S>) {
        let span = match event.parent() {
            Some(parent) => Some(parent.clone()),
            None if event.is_contextual() => ctx.current_span().id().cloned(),
            None => None,
        };
        if let Some(span) = span {
            self.spans.with(span.into_u64(), |bridged| {
                if let Some(record) = bridged.record_mut()
                    && !succeeded_for_good(record)
                {
                    record.set_success(false);
                }
            });
        }
    }

    /// What the children and events of the span `id` take as their parent, when this layer
    /// bridged it.
    fn context_of(&self, id: &Id) -> Option<SpanContext> {
        self.spans.with(id.into_u64(), |bridged| bridged.context())
    }

    /// The span `id` of this layer, as the thread's state knows it: two subscribers on one
    /// thread give out the same ids, so the layer (the address of its table, which stays where
    /// it is while the subscriber lives) says whose it is.
    #[inline]
    fn key(&self, id: &Id) -> ForeignKey {
        ForeignKey {
            owner: std::ptr::from_ref(&self.spans).addr(),
            id: id.into_u64(),
        }
    }
}

/// What census keeps of a `tracing` span while it is open.
enum Bridged {
    /// The census span's record, submitted when the span closes.
    Recorded(SpanRecord),
    /// A span of a trace that is not recorded: the context its children and events take as
    /// their parent (an unsampled one).
    Unrecorded(SpanContext),
}

impl Bridged {
    /// What entering the span makes current. Inlined where the entry is kept, so that it is
    /// written there rather than made aside and copied.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn entry(&self) -> ForeignEntry {
        match self {
            Bridged::Recorded(record) => (
                record.context(),
                record.shared_operation_name(),
                Some(record.sample_percent()),
                record.extra().and_then(|extra| extra.trace_state.clone()),
            ),
            Bridged::Unrecorded(context) => (*context, None, None, None),
        }
    }

    /// What the span's children and events take as their parent.
    fn context(&self) -> SpanContext {
        match self {
            Bridged::Recorded(record) => record.context(),
            Bridged::Unrecorded(context) => *context,
        }
    }

    fn record_mut(&mut self) -> Option<&mut SpanRecord> {
        match self {
            Bridged::Recorded(record) => Some(record),
            Bridged::Unrecorded(_) => None,
        }
    }

    fn into_record(self) -> Option<SpanRecord> {
        match self {
            Bridged::Recorded(record) => Some(record),
            Bridged::Unrecorded(_) => None,
        }
    }
}

// Any subscriber: the layer keeps what it needs of a span itself, and asks the subscriber for
// nothing (a `Registry` is what users compose it with; `tracing_subscriber::fmt()` is one too).
impl<S: Subscriber> Layer<S> for CensusLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        if *attrs.metadata().level() > self.span_level
            || !crate::sampler::is_active()
            || crate::local::on_census_thread()
        {
            return;
        }
        // The span's fields are written straight into the box its record takes (a reused box
        // keeps its property list's memory); an `otel.name` field renames it.
        let mut extra = crate::record::boxed_extra(Some(Cow::Borrowed(attrs.metadata().name())));
        let mut fields = SpanFields::new(&mut extra);
        attrs.record(&mut fields);
        let mut facts = fields.facts;
        let mut marks = 0;
        facts.describe(&mut extra, &mut marks);
        let builder = crate::span::with_extra(facts.server, extra);
        // The caller's context, given as fields (a server's span, made from the request's
        // headers), comes before any parent in this process.
        let incoming = facts
            .remote
            .take()
            .map(|remote| remote.incoming())
            .filter(|incoming| incoming.parent().is_some());
        // Else the parent: an explicit one, none at all, or whatever is current on this thread
        // (a census span, or an entered `tracing` span's frame).
        let explicit = match &incoming {
            Some(_) => None,
            None if attrs.is_root() => Some(None),
            None => attrs.parent().map(|parent| self.context_of(parent)),
        };
        // The record is started in its slot of the table, and its facts settled there: made
        // aside and moved in, it was copied right after its fields were written, in wider
        // loads than the stores that wrote them, which the processor cannot forward (the
        // bench's `tracing-span/census-layer` measured 231 ns made aside, 212 ns started in
        // place; alternating runs). What the thread keeps for the span's entry is written in
        // the same borrow of its state.
        let key = self.key(id);
        let facts = &mut facts;
        let place = |local: &mut Local, planned: Planned| {
            self.spans.insert_with(
                key.id,
                #[inline(always)]
                || Bridged::Recorded(planned.start()),
                |bridged| {
                    if let Some(record) = bridged.record_mut() {
                        record.set_marks(marks);
                        std::mem::take(facts).settle(record);
                    }
                    local.made_foreign_with(key, || bridged.entry());
                },
            );
        };
        let started = match (&incoming, explicit) {
            (Some(incoming), _) => incoming.under(builder).start_with(place),
            (None, Some(None)) if attrs.is_root() => builder.root().start_with(place),
            (None, Some(Some(parent))) => {
                Carried::from_context(parent).run(|| builder.start_with(place))
            }
            (None, _) => builder.start_with(place),
        };
        let bridged = match started {
            Ok(()) => return,
            // A trace that is not recorded: its children are not recorded either, and the calls
            // made inside it pass its id on with flag `00` (one drawn now for a new trace the
            // sampler dropped).
            Err(NotStarted::Unsampled(trace_id)) => Bridged::Unrecorded(SpanContext::new(
                trace_id.unwrap_or_else(crate::sampler::dropped_trace_id),
                crate::SpanId::random(),
                false,
            )),
            // Under an explicit parent whose trace is not recorded: its context.
            Err(NotStarted::Inert) => match explicit {
                Some(Some(parent)) if !parent.is_sampled() => Bridged::Unrecorded(parent),
                _ => return,
            },
        };
        let entry = bridged.entry();
        self.spans.insert(key.id, bridged);
        with_local(|local| local.made_foreign(key, entry));
    }

    fn on_record(&self, id: &Id, values: &FieldValues<'_>, _ctx: Context<'_, S>) {
        // The values are read before the span's shard is locked: reading them runs the
        // application's `Debug` code, which may itself make spans.
        let mut given = SpanExtra::default();
        let mut fields = SpanFields::new(&mut given);
        values.record(&mut fields);
        let mut facts = fields.facts;
        // A server named now comes with its port, before a database's name it may go before.
        facts.join_port(&mut given);
        self.spans.with(id.into_u64(), |bridged| {
            if let Some(record) = bridged.record_mut() {
                let mut marks = record.marks();
                let extra = record.extra_mut();
                absorb(extra, given, &mut marks);
                facts.describe(extra, &mut marks);
                record.set_marks(marks);
                facts.settle(record);
            }
        });
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _ctx: Context<'_, S>) {
        // A span that follows from another is linked to it (`_MS.links`), when this layer
        // bridged both.
        if let Some(to) = self.context_of(follows) {
            self.spans.with(id.into_u64(), |bridged| {
                if let Some(record) = bridged.record_mut() {
                    crate::record::push_link(&mut record.extra_mut().properties, to);
                }
            });
        }
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        let key = self.key(id);
        // Most often the span this thread made last, entered right after: taken from there.
        if with_local(|local| local.enter_made(key)) == Some(false)
            && let Some(entry) = self.spans.with(key.id, |bridged| bridged.entry())
        {
            with_local(|local| local.enter_foreign(key, entry));
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let key = self.key(id);
        with_local(|local| local.exit_foreign(key));
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        // A span closed without being entered: what was kept for its entry is let go.
        let key = self.key(&id);
        with_local(|local| local.forget_made(key));
        // Two accesses of the thread's state, not one: one access, the record moved into its
        // closure, measured slower (the layer's span 274-298 against 282-306 ns, alternating),
        // and with the record copied from its slot no faster (235-281 against 234-277 ns).
        // The record is copied once, from its slot straight into the ring's: taken out of the
        // table and then handed on, it was copied twice (the layer's span 237-270 against
        // 223-247 ns, alternating; 265-294 against 255-300 pinned to one CPU).
        // SAFETY: the span's value is moved out once: its record copied into the ring (or
        // read out of its place for the overflow), or, not recorded, a context, which has
        // nothing to drop.
        unsafe {
            self.spans.take_with(key.id, |bridged| {
                if let Bridged::Recorded(record) = &*bridged {
                    crate::local::submit_ended_from(record, crate::clock::now());
                }
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() > self.event_level || crate::local::on_census_thread() {
            return;
        }
        // A `log` record that `tracing-log` made an event: read by its own target, module, file
        // and line, which its `log.*` fields carry (its metadata's are `tracing-log`'s).
        // Only `tracing-log`'s callsites, whose target is `log`, can be one: the test is skipped
        // for the others (it takes the callsites of `tracing-log`'s statics, 2 % of an event).
        let normalized = if metadata.target() == "log" {
            event.normalized_metadata()
        } else {
            None
        };
        let from_log = normalized.is_some();
        if normalized
            .as_ref()
            .is_some_and(|log| telemetry::is_census(log.target()))
        {
            return;
        }
        if *metadata.level() == Level::ERROR && self.error_events_fail_spans {
            self.fail_span_of(event, &ctx);
        }
        // An event given a parent explicitly takes that span's; else what is current here.
        let correlation = match event.parent() {
            Some(parent) => match self.context_of(parent) {
                Some(context) => Carried::from_context(context).run(telemetry::correlation),
                None => telemetry::correlation(),
            },
            // Explicitly outside any span: no operation, as a record written outside every span.
            None if event.is_root() => crate::sampler::is_active()
                .then(telemetry::outside_any_span)
                .flatten(),
            None => telemetry::correlation(),
        };
        let Some(correlation) = correlation else {
            return;
        };
        let source = match &normalized {
            None => Source {
                target: Cow::Borrowed(metadata.target()),
                module_path: metadata.module_path(),
                file: metadata.file(),
                line: metadata.line(),
            },
            Some(log) => Source {
                target: crate::record::interned_or_owned(log.target()),
                module_path: log.module_path().and_then(crate::record::intern),
                file: log.file().and_then(crate::record::intern),
                line: log.line(),
            },
        };
        if metadata.fields().field("census.event").is_some() {
            let mut fields = EventFields::default();
            event.record(&mut fields);
            if let Some(name) = fields.event_name {
                let record = EventRecord::new(
                    Cow::Owned(name),
                    correlation,
                    fields.values,
                    fields.measurements,
                );
                queue::submit_item(Item::Event(record));
                return;
            }
            // A `census.event` field that was not given a value: a log record after all.
            crate::record::give_back_extra(fields.values);
        }
        // A log record, made in its ring slot and its fields written there: the message
        // formatted in place, as the `log` bridge does.
        telemetry::emit_log(
            || {
                LogRecord::new(
                    severity(*metadata.level()),
                    Text::new(),
                    correlation,
                    source,
                )
            },
            |log| {
                let mut fields = LogFields {
                    log,
                    errors: Errors::default(),
                    from_log,
                };
                event.record(&mut fields);
                if let Some(errors) = fields.errors.finish() {
                    fields.log.set_errors(errors);
                }
            },
        );
    }
}

/// A `tracing` level as an Application Insights severity.
fn severity(level: Level) -> Severity {
    match level {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warning,
        Level::INFO => Severity::Information,
        _ => Severity::Verbose,
    }
}

// ---------------------------------------------------------------------------------------------
// What span and event fields share: values written as text, the application's code run guarded.

/// The value `write` writes, made aside: for the fields whose value is kept elsewhere than in
/// the property list.
fn written(write: impl FnOnce(&mut Value)) -> Value {
    let mut value = Value::new();
    write(&mut value);
    value
}

/// Writes an integer field's text, as its `Debug` and `Display` write it.
fn integer(text: &mut Value, value: impl itoa::Integer) {
    text.push_str(itoa::Buffer::new().format(value));
}

/// What is written for a value whose `Debug` or `Display` panicked.
const UNPRINTABLE: &str = "<unprintable: its formatting panicked>";

/// Runs `read`, which runs the application's `Debug` or `Display` code; `None` when that code
/// panicked, and the panic goes no further. The layer reads values the application's program
/// would not have formatted without it, and a panic out of the making of a `tracing` span
/// would lose more than the span: its parent, and every span above it, whom the registry keeps
/// open for the child it never handed out. (A `log` record's values are formatted by any logger:
/// the `log` bridge lets their panic through, as loggers do.)
fn guarded<R>(read: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(read)).ok()
}

/// Writes `value` after what `text` holds; [`UNPRINTABLE`], in place of all it holds, when the
/// application's code that writes it panics ([`guarded`]).
fn append_guarded<const N: usize>(text: &mut Text<N>, value: fmt::Arguments<'_>) {
    if guarded(|| text.append(value)).is_none() {
        *text = Text::from(UNPRINTABLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integer_field_is_written_as_its_display_and_inline() {
        for (value, display) in [
            (
                written(|text| integer(text, i64::MIN)),
                i64::MIN.to_string(),
            ),
            (
                written(|text| integer(text, u64::MAX)),
                u64::MAX.to_string(),
            ),
            (written(|text| integer(text, 0_u64)), "0".to_owned()),
        ] {
            assert_eq!(value, display.as_str());
            assert!(value.is_inline());
        }
    }

    #[test]
    fn levels_map_to_severities() {
        assert_eq!(severity(Level::TRACE), Severity::Verbose);
        assert_eq!(severity(Level::DEBUG), Severity::Verbose);
        assert_eq!(severity(Level::INFO), Severity::Information);
        assert_eq!(severity(Level::WARN), Severity::Warning);
        assert_eq!(severity(Level::ERROR), Severity::Error);
    }
}
