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
//!   read when the span is made, not when recorded later). Its other fields become properties;
//!   `otel.status_code = "ERROR"`, an `error` field, or an `ERROR` event written in it (what
//!   `#[instrument(err)]` writes when the function returns an `Err`, as `tracing-opentelemetry`
//!   reads it) fails it, unless `otel.status_code = "OK"` came first: that status is final, as
//!   OpenTelemetry's. A span that `follows_from` another is linked to it (`_MS.links`, as the
//!   Azure Monitor exporters write OpenTelemetry's links).
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
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record as FieldValues};
use tracing_core::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::layer::{Context, Layer};

use crate::context::Carried;
use crate::id::SpanContext;
use crate::local::{ForeignEntry, ForeignKey, with_local};
use crate::propagation::Incoming;
use crate::record::{ErrorDetail, EventRecord, Item, LogRecord, Severity, Source};
use crate::record::{SpanExtra, SpanRecord, Value, new_property};
use crate::span::NotStarted;
use crate::text::Text;
use crate::{queue, telemetry};

mod spans;

use spans::SpanTable;

/// The layer that makes `tracing` spans census spans and events telemetry; see the
/// [module](self).
///
/// A clone is a layer of the same configuration that keeps spans of its own: each subscriber
/// is given its own layer (the spans of two subscribers may share ids). A layer keeps its open
/// spans in a table of its own, 32 KiB of slots made with it, and a map beside them for the
/// spans past those.
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
        let started = match (&incoming, explicit) {
            (Some(incoming), _) => incoming.under(builder).start_record(),
            (None, Some(None)) if attrs.is_root() => builder.root().start_record(),
            (None, Some(Some(parent))) => {
                Carried::from_context(parent).run(|| builder.start_record())
            }
            (None, _) => builder.start_record(),
        };
        let bridged = match started {
            Ok(mut record) => {
                record.set_marks(marks);
                facts.settle(&mut record);
                Bridged::Recorded(record)
            }
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
        self.spans.insert(id.into_u64(), bridged);
        with_local(|local| local.made_foreign(self.key(id), entry));
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
        // closure, measured slower (the layer's span 274-298 against 282-306 ns, alternating).
        if let Some(Bridged::Recorded(record)) = self.spans.remove(key.id) {
            crate::local::submit_ended(record, crate::clock::now());
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
// Span fields.

/// A span's fields, written into the box of run-time values its record takes (properties
/// pushed into a list whose memory the box keeps from its last span); what needs the record
/// itself is kept aside in [`Facts`].
struct SpanFields<'a> {
    extra: &'a mut SpanExtra,
    facts: Facts,
    /// `data` holds a URL, which a statement does not replace.
    url: bool,
}

/// What a span's fields say of it beyond its values: applied to its values together
/// ([`Facts::describe`]) and to the record once it exists ([`Facts::settle`]).
#[derive(Default)]
struct Facts {
    server: bool,
    status: Option<u64>,
    failed: Option<String>,
    /// `otel.kind = "producer"`: a message sent.
    producer: bool,
    /// What names a database, a queue or a remote procedure call: boxed when given (their
    /// values are `String`s already), so that the facts every span makes stay small.
    call: Option<Box<CallFacts>>,
    /// `otel.status_code = "OK"`.
    ok: bool,
    /// `server.port`, joined to the target.
    port: Option<String>,
    /// An HTTP method or URL was given: an `HTTP` call unless a kind is.
    http: bool,
    /// `traceparent` and `tracestate`: the caller's context, which the span continues.
    remote: Option<Box<RemoteFacts>>,
}

/// The W3C trace context a span was given as fields, as an incoming request carried it.
#[derive(Default)]
struct RemoteFacts {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl RemoteFacts {
    /// The caller's context, read by the rules of the headers ([`Incoming::from_values`]): a
    /// malformed `traceparent` is none, and the span starts its own trace.
    fn incoming(&self) -> Incoming {
        Incoming::from_values(
            self.traceparent.as_deref().map(str::as_bytes),
            self.tracestate.as_deref().map(str::as_bytes),
            [],
        )
    }
}

/// `db.system`, `db.name`, `messaging.system`, its destination, `rpc.system`: the type and
/// target of a call that gives no `census.kind` (nor an HTTP method or URL).
#[derive(Default)]
struct CallFacts {
    db_system: Option<String>,
    db_name: Option<String>,
    messaging: Option<String>,
    destination: Option<String>,
    rpc: Option<String>,
}

impl<'a> SpanFields<'a> {
    fn new(extra: &'a mut SpanExtra) -> Self {
        SpanFields {
            extra,
            facts: Facts::default(),
            url: false,
        }
    }

    /// A field's value, which `write` writes: a property, written where it lies in the list
    /// ([`new_property`]), unless its name is one of the conventions' (all of which but
    /// `error` hold a dot), which take it aside.
    #[inline(always)]
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Value)) {
        let name = field.name();
        let convention =
            if name.contains('.') || matches!(name, "error" | "traceparent" | "tracestate") {
                Convention::of(name)
            } else {
                None
            };
        match convention {
            Some(convention) => self.convention(convention, written(write)),
            None => write(new_property(
                &mut self.extra.properties,
                Cow::Borrowed(name),
            )),
        }
    }

    /// What a convention's field says: its value becomes a `String` only where one is kept.
    fn convention(&mut self, convention: Convention, value: Value) {
        let extra = &mut *self.extra;
        match convention {
            Convention::Name => extra.name = Some(Cow::Owned(value.into_string())),
            // What Application Insights shows as a request: a server's, or a message a
            // consumer handles (as the Azure Monitor exporters map the span kinds).
            Convention::Kind => {
                self.facts.server =
                    value.eq_ignore_ascii_case("server") || value.eq_ignore_ascii_case("consumer");
                self.facts.producer = value.eq_ignore_ascii_case("producer");
            }
            Convention::Status => {
                if value.eq_ignore_ascii_case("error") {
                    self.facts.failed.get_or_insert_with(|| "error".to_owned());
                } else if value.eq_ignore_ascii_case("ok") {
                    self.facts.ok = true;
                }
            }
            Convention::Failure => self.facts.failed = Some(value.into_string()),
            Convention::CensusKind => extra.kind = Some(Cow::Owned(value.into_string())),
            Convention::DbSystem => self.facts.call().db_system = Some(value.into_string()),
            Convention::DbName => self.facts.call().db_name = Some(value.into_string()),
            Convention::Messaging => self.facts.call().messaging = Some(value.into_string()),
            Convention::Destination => {
                self.facts.call().destination = Some(value.into_string());
            }
            Convention::Rpc => self.facts.call().rpc = Some(value.into_string()),
            Convention::Statement => {
                if !self.url {
                    extra.data = Some(Cow::Owned(value.into_string()));
                }
            }
            Convention::Address => extra.target = Some(Cow::Owned(value.into_string())),
            Convention::Port => self.facts.port = Some(value.into_string()),
            Convention::Method => self.facts.http = true,
            Convention::Url => {
                extra.data = Some(Cow::Owned(value.into_string()));
                self.url = true;
                self.facts.http = true;
            }
            Convention::StatusCode => self.facts.status = value.parse().ok(),
            Convention::Client => {
                *new_property(
                    &mut extra.properties,
                    Cow::Borrowed(crate::record::CLIENT_ADDRESS_PROPERTY),
                ) = value;
            }
            Convention::TraceParent => {
                self.facts.remote().traceparent = Some(value.into_string());
            }
            Convention::TraceState => self.facts.remote().tracestate = Some(value.into_string()),
        }
    }
}

/// The span fields that say something of the span rather than being properties: the
/// OpenTelemetry semantic conventions' (the stable names and the older ones), census's own, and
/// `error`.
#[derive(Clone, Copy)]
enum Convention {
    /// `otel.name`: the span's name.
    Name,
    /// `otel.kind`: a server's or a consumer's span is a request.
    Kind,
    /// `otel.status_code`: `ERROR` fails the span, `OK` makes it a success for good.
    Status,
    /// `otel.status_message`, `otel.status_description`, `error`: fails the span with it.
    Failure,
    /// `census.kind`: the dependency's type, whatever the other fields say.
    CensusKind,
    /// `db.system`, `db.system.name`: a database call, its type ([`database_type`]).
    DbSystem,
    /// `db.name`, `db.namespace`: the database, joined to the target.
    DbName,
    /// `messaging.system`: a message sent or received, its type.
    Messaging,
    /// `messaging.destination`, `messaging.destination.name`: a message's queue or topic, the
    /// target when no server is named.
    Destination,
    /// `rpc.system`: a remote procedure call (`grpc`), its type.
    Rpc,
    /// `db.statement`, `db.query.text`: the data, unless a URL is.
    Statement,
    /// `server.address`, `net.peer.name`, `census.target`: the target.
    Address,
    /// `server.port`, `net.peer.port`: joined to the target.
    Port,
    /// `http.request.method`, `http.method`: an HTTP call.
    Method,
    /// `url.full`, `http.url`: an HTTP call's URL, its data.
    Url,
    /// `http.response.status_code`, `http.status_code`: the result code; 400 and above fail it.
    StatusCode,
    /// `client.address`, `http.client_ip` (`tracing-actix-web`'s): the client a request came
    /// from, its [`CLIENT_ADDRESS_PROPERTY`](crate::record::CLIENT_ADDRESS_PROPERTY).
    Client,
    /// `traceparent`, `http.request.header.traceparent`: the caller's span, which the span
    /// continues (its trace, its parent, its sampled flag).
    TraceParent,
    /// `tracestate`, `http.request.header.tracestate`: passed on with the caller's trace.
    TraceState,
}

impl Convention {
    fn of(name: &str) -> Option<Convention> {
        Some(match name {
            "otel.name" => Convention::Name,
            "otel.kind" => Convention::Kind,
            "otel.status_code" => Convention::Status,
            "otel.status_message" | "otel.status_description" | "error" => Convention::Failure,
            "census.kind" => Convention::CensusKind,
            "db.system" | "db.system.name" => Convention::DbSystem,
            "db.name" | "db.namespace" => Convention::DbName,
            "messaging.system" => Convention::Messaging,
            "messaging.destination" | "messaging.destination.name" => Convention::Destination,
            "rpc.system" => Convention::Rpc,
            "db.statement" | "db.query.text" => Convention::Statement,
            "server.address" | "net.peer.name" | "census.target" => Convention::Address,
            "server.port" | "net.peer.port" => Convention::Port,
            "http.request.method" | "http.method" => Convention::Method,
            "url.full" | "http.url" => Convention::Url,
            "http.response.status_code" | "http.status_code" => Convention::StatusCode,
            "client.address" | "http.client_ip" => Convention::Client,
            "traceparent" | "http.request.header.traceparent" => Convention::TraceParent,
            "tracestate" | "http.request.header.tracestate" => Convention::TraceState,
            _ => return None,
        })
    }
}

/// Adds the values a span was given after it was made ([`SpanFields`] writes the name, the
/// kind, the target, the data and properties) to those it has. A server named now replaces a
/// system's name standing in for it, and goes before a database's name given alone
/// (`server | database`); `marks` says which the target is.
fn absorb(into: &mut SpanExtra, given: SpanExtra, marks: &mut u8) {
    // Every field, by name: one that `SpanFields` comes to write cannot be left out unseen.
    let SpanExtra {
        name,
        kind,
        target,
        data,
        properties,
        result_code: _,
        error: _,
        failure: _,
        trace_state: _,
    } = given;
    if let Some(server) = target {
        into.target = Some(match into.target.take() {
            Some(database) if *marks & marks::TARGET_IS_DATABASE != 0 => {
                Cow::Owned(on_server(server, &database))
            }
            _ => server,
        });
        *marks &= !marks::STANDING_IN;
    }
    for (value, slot) in [
        (name, &mut into.name),
        (kind, &mut into.kind),
        (data, &mut into.data),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    into.properties.extend(properties);
}

impl Facts {
    /// What the fields say together, read in the Azure Monitor exporters' order: the call's
    /// type (an HTTP method or URL first, then a database, a message, a remote procedure call),
    /// its target (the server and its port, the database's name after a ` | `; else the queue,
    /// or the system's name). `marks` says whether the target is a system's name standing in
    /// for a server, or a database's name alone, and is kept up to date.
    fn describe(&mut self, extra: &mut SpanExtra, marks: &mut u8) {
        if self.http && extra.kind.is_none() {
            extra.kind = Some(Cow::Borrowed("HTTP"));
        }
        if *marks & marks::STANDING_IN == 0 {
            self.join_port(extra);
        }
        // A producer's span is a message sent even when it names no messaging system.
        if self.call.is_some() || self.producer {
            let call = self
                .call
                .take()
                .map_or_else(CallFacts::default, |call| *call);
            call.describe(extra, self.producer, marks);
        }
    }

    /// Joins the port given to the server the target names (`server:port`, before the
    /// ` | database` the server may have been given already).
    fn join_port(&mut self, extra: &mut SpanExtra) {
        if let Some(target) = extra.target.as_mut()
            && let Some(port) = self.port.take()
        {
            *target = Cow::Owned(match target.split_once(DATABASE_ON_SERVER) {
                Some((server, database)) => on_server(format_args!("{server}:{port}"), database),
                None => format!("{target}:{port}"),
            });
        }
    }

    /// The caller's context given as fields, made on first use.
    fn remote(&mut self) -> &mut RemoteFacts {
        self.remote.get_or_insert_default()
    }

    /// The facts of a database, queue or remote call, made on first use.
    fn call(&mut self) -> &mut CallFacts {
        self.call.get_or_insert_with(Box::default)
    }

    /// Records a status or failure the fields gave. `OK` is final, as OpenTelemetry's status:
    /// the application says the call succeeded whatever its result code, and neither a later
    /// `error` field nor an `ERROR` event fails it.
    fn settle(self, record: &mut SpanRecord) {
        if self.ok {
            record.set_success(true);
            record.set_marks(record.marks() | marks::OK);
        }
        let ok = succeeded_for_good(record);
        if let Some(status) = self.status {
            record.extra_mut().result_code = Some(Cow::Owned(status.to_string()));
            if status >= 400 && !ok {
                record.set_success(false);
            }
        }
        if let Some(message) = self.failed
            && !ok
        {
            record.fail(Cow::Borrowed("error"), Some(message));
        }
    }
}

impl CallFacts {
    /// The call's type (a database, a message sent or received, a remote procedure call), and
    /// its target: the database's name after the server's and a ` | `, else the queue, else the
    /// system's name, which `marks` notes as standing in for a server (as it notes a database's
    /// name alone), so that a value given later replaces it or joins it rightly.
    fn describe(self, extra: &mut SpanExtra, producer: bool, marks: &mut u8) {
        let CallFacts {
            db_system,
            db_name,
            messaging,
            destination,
            rpc,
        } = self;
        if extra.kind.is_none() {
            extra.kind = if let Some(system) = &db_system {
                Some(database_type(system))
            } else if producer {
                Some(match &messaging {
                    Some(system) => Cow::Owned(format!("Queue Message | {system}")),
                    None => Cow::Borrowed("Queue Message"),
                })
            } else {
                messaging.clone().or_else(|| rpc.clone()).map(Cow::Owned)
            };
        }
        if let Some(database) = db_name {
            let server = extra
                .target
                .take()
                .filter(|_| *marks & marks::STANDING_IN == 0);
            *marks &= !marks::STANDING_IN;
            extra.target = Some(Cow::Owned(match server {
                Some(server) => on_server(server, &database),
                None => {
                    *marks |= marks::TARGET_IS_DATABASE;
                    database
                }
            }));
        }
        if extra.target.is_none() {
            extra.target = db_system
                .or(destination)
                .or(messaging)
                .or(rpc)
                .map(Cow::Owned);
            if extra.target.is_some() {
                *marks |= marks::TARGET_IS_SYSTEM;
            }
        }
    }
}

/// What separates a server from the database named on it in a target (`db.internal:5432 |
/// orders`), as census's own database integrations write it.
const DATABASE_ON_SERVER: &str = " | ";

/// The target of the database `database` on `server`.
fn on_server(server: impl fmt::Display, database: &str) -> String {
    format!("{server}{DATABASE_ON_SERVER}{database}")
}

/// The marks the layer keeps in a record it made ([`SpanRecord::marks`]).
mod marks {
    /// `otel.status_code = "OK"`: the instrumentation said the call succeeded, for good (final,
    /// as OpenTelemetry's status): neither a later `error` field nor an `ERROR` event fails it.
    pub(super) const OK: u8 = 1;
    /// The target is a system's name, standing in for the server no field named.
    pub(super) const TARGET_IS_SYSTEM: u8 = 1 << 1;
    /// The target is a database's name alone, given without a server.
    pub(super) const TARGET_IS_DATABASE: u8 = 1 << 2;
    /// The target names no server: a server given later replaces it or goes before it, and a
    /// port given later has nothing to join.
    pub(super) const STANDING_IN: u8 = TARGET_IS_SYSTEM | TARGET_IS_DATABASE;
}

/// Whether the instrumentation said the call succeeded, for good: what would fail the span
/// afterwards does not.
fn succeeded_for_good(record: &SpanRecord) -> bool {
    record.marks() & marks::OK != 0
}

/// A database call's type, from its `db.system` (or `db.system.name`): the system's name, as
/// census's own database integrations write it (`postgresql`, `mysql`, `sqlite`, `mongodb`),
/// so that a database shows under one type whichever way its calls are recorded; `SQL` for
/// Microsoft SQL Server (Application Insights' own type for it) and for a relational database
/// the conventions have no name for (`other_sql`); MariaDB under `mysql`, as census's MySQL
/// integrations type it; the newer names of `db.system.name` as the older ones.
fn database_type(system: &str) -> Cow<'static, str> {
    Cow::Borrowed(match system {
        "postgresql" => "postgresql",
        "mysql" | "mariadb" => "mysql",
        "sqlite" => "sqlite",
        "mongodb" => "mongodb",
        "redis" => "redis",
        "mssql" | "microsoft.sql_server" | "other_sql" => "SQL",
        "oracle" | "oracle.db" => "oracle",
        "db2" | "ibm.db2" => "db2",
        other => return Cow::Owned(other.to_owned()),
    })
}

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

impl Visit for SpanFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, |text| {
            append_guarded(text, format_args!("{value:?}"))
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, |text| text.push_str(value));
    }

    // Integers and booleans are written as `Debug` would write them, without the formatting
    // machinery.
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.text(field, |text| integer(text, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.text(field, |text| integer(text, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.text(field, |text| {
            text.push_str(if value { "true" } else { "false" })
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        if field.name() == "error" {
            self.facts.failed =
                Some(written(|text| append_guarded(text, format_args!("{value}"))).into_string());
        } else {
            self.text(field, |text| append_guarded(text, format_args!("{value}")));
        }
    }
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

// ---------------------------------------------------------------------------------------------
// Event fields.

/// An event's fields written straight into the log record it becomes: the message formatted
/// in place, the others as properties (numbers and booleans as `Debug` writes them), the error
/// aside.
struct LogFields<'a> {
    log: &'a mut LogRecord,
    errors: Errors,
    /// A `log` record's event, whose `log.*` fields are its source, not properties.
    from_log: bool,
}

impl LogFields<'_> {
    /// A field's value, which `write` writes: a property, written in place, or the error's.
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Value)) {
        let kept = match field.name() {
            "exception.type" => &mut self.errors.exception_type,
            "exception.message" => &mut self.errors.exception_message,
            name if self.from_log && name.starts_with("log.") => return,
            name => return write(self.log.new_property(name)),
        };
        *kept = Some(written(write).into_string());
    }
}

impl Visit for LogFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            append_guarded(self.log.message_mut(), format_args!("{value:?}"));
        } else {
            self.text(field, |text| {
                append_guarded(text, format_args!("{value:?}"))
            });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.log.message_mut().push_str(value);
        } else {
            self.text(field, |text| text.push_str(value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_debug(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "message" {
            self.record_debug(field, &value);
        } else {
            self.text(field, |text| integer(text, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "message" {
            self.record_debug(field, &value);
        } else {
            self.text(field, |text| integer(text, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        if field.name() == "error" {
            self.errors.push_chain(value);
        } else {
            self.text(field, |text| append_guarded(text, format_args!("{value}")));
        }
    }
}

/// What the fields of an event that asks to be a custom event (`census.event`) say: its name,
/// its properties and its measurements. Its message and its error have no place in a custom
/// event and are left out.
struct EventFields {
    /// `census.event`: the event's name.
    event_name: Option<String>,
    /// The properties, in a box the export worker hands back.
    values: Box<SpanExtra>,
    measurements: Vec<(Cow<'static, str>, f64)>,
}

impl Default for EventFields {
    fn default() -> Self {
        EventFields {
            event_name: None,
            values: crate::record::boxed_extra(None),
            measurements: Vec::new(),
        }
    }
}

/// The error an event carries: from an `error` field (with its causes), or from
/// `exception.*` fields.
#[derive(Default)]
struct Errors {
    chain: Vec<ErrorDetail>,
    exception_type: Option<String>,
    exception_message: Option<String>,
}

impl Errors {
    /// An error and its `source()`s, outermost first; the chain ends at an error whose
    /// `Debug`, `Display` or `source` panics ([`guarded`]), written as [`UNPRINTABLE`].
    fn push_chain(&mut self, error: &(dyn Error + 'static)) {
        let mut current = Some(error);
        while let Some(error) = current {
            let Some((detail, source)) = guarded(|| (ErrorDetail::of(error), error.source()))
            else {
                self.chain.push(ErrorDetail {
                    type_name: "Error".to_owned(),
                    message: UNPRINTABLE.to_owned(),
                });
                return;
            };
            self.chain.push(detail);
            current = source;
        }
    }

    /// The chain to send as an Exception, if the event carries an error. Most carry none, and
    /// are told so inline (the whole function, called out of line, was 3 % of an event).
    #[inline]
    fn finish(self) -> Option<Vec<ErrorDetail>> {
        if self.chain.is_empty()
            && self.exception_type.is_none()
            && self.exception_message.is_none()
        {
            return None;
        }
        Some(self.finish_error())
    }

    /// The chain of an event that carries an error: its `error` field's, the outermost error
    /// named by `exception.type` when given; else the one its `exception.*` fields describe.
    #[cold]
    fn finish_error(self) -> Vec<ErrorDetail> {
        let mut chain = self.chain;
        match chain.first_mut() {
            None => chain.push(ErrorDetail {
                type_name: self.exception_type.unwrap_or_else(|| "Error".to_owned()),
                message: self.exception_message.unwrap_or_default(),
            }),
            Some(first) => {
                if let Some(type_name) = self.exception_type {
                    first.type_name = type_name;
                }
            }
        }
        chain
    }
}

/// The fields a custom event leaves out: those of the log record it is not.
fn log_only(name: &str) -> bool {
    matches!(name, "message" | "exception.type" | "exception.message")
}

impl EventFields {
    /// A field's value, which `write` writes: the event's name, or a property written in place.
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Value)) {
        match field.name() {
            "census.event" => self.event_name = Some(written(write).into_string()),
            name if log_only(name) => {}
            name => write(new_property(
                &mut self.values.properties,
                Cow::Borrowed(name),
            )),
        }
    }

    fn number(&mut self, field: &Field, value: f64) {
        // A number given as the message is left out with the message, whatever the order.
        if !log_only(field.name()) {
            self.measurements.push((Cow::Borrowed(field.name()), value));
        }
    }
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, |text| {
            append_guarded(text, format_args!("{value:?}"))
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, |text| text.push_str(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value as f64);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value as f64);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        if field.name() != "error" {
            self.text(field, |text| append_guarded(text, format_args!("{value}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_event_leaves_out_its_message_even_a_number_and_whatever_the_order() {
        struct Probe;
        impl tracing_core::Callsite for Probe {
            fn set_interest(&self, _: tracing_core::Interest) {}
            fn metadata(&self) -> &tracing_core::Metadata<'_> {
                &PROBE
            }
        }
        static PROBE: tracing_core::Metadata<'static> = tracing_core::metadata! {
            name: "probe",
            target: "probe",
            level: Level::INFO,
            fields: &["message", "census.event", "items"],
            callsite: &Probe,
            kind: tracing_core::metadata::Kind::EVENT,
        };
        let fields = PROBE.fields();
        let [message, name, items] = ["message", "census.event", "items"]
            .map(|name| fields.field(name).expect("a field of the probe"));
        // The name given after the message, then before it.
        let mut after = EventFields::default();
        after.record_u64(&message, 5);
        after.record_str(&name, "order_placed");
        after.record_u64(&items, 3);
        let mut before = EventFields::default();
        before.record_str(&name, "order_placed");
        before.record_u64(&message, 5);
        before.record_u64(&items, 3);
        for fields in [after, before] {
            assert_eq!(fields.event_name.as_deref(), Some("order_placed"));
            assert_eq!(fields.measurements, [(Cow::Borrowed("items"), 3.0)]);
            assert!(fields.values.properties.is_empty());
        }
    }

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
