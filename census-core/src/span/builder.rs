//! Spans for code that is not a function: a block, a closure, a future, a request, or an
//! operation that starts in one callback and ends in another.

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::future::{AsyncSpan, NoSite, Traced, Unjudged};
use super::parent::{self, Planned, Start, Under};
use super::sync::SpanGuard;
use crate::clock;
use crate::id::{SpanContext, SpanId, TraceId};
use crate::local::{self, Local};
use crate::record::{OperationName, SpanExtra, SpanRecord};
use crate::sampler;
use crate::site::Site;

/// Starts describing a span for a block of code; see [`SpanBuilder`].
///
/// ```
/// let total = census_runtime::span("price basket").in_scope(|| 3 * 7);
/// assert_eq!(total, 21);
/// ```
pub fn span(name: impl Into<Cow<'static, str>>) -> SpanBuilder {
    SpanBuilder {
        site: &BUILDER_SITE,
        under: Under::Current,
        operation_name: None,
        extra: crate::record::boxed_extra(Some(name.into())),
    }
}

/// Starts describing an incoming request handled by this service: a `Request` in Application
/// Insights. Its name is also the operation name of every span under it.
///
/// Server integrations use it; so can a handler of your own (a queue consumer, say):
///
/// ```
/// use census_runtime::{SpanContext, SpanId, TraceId, current_span};
/// // The caller's context, from an incoming `traceparent`.
/// let caller = SpanContext::new(
///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
///     true,
/// );
/// census_runtime::request("GET /orders/{id}")
///     .parent(caller)
///     .data("http://localhost/orders/7")
///     .in_scope(|| current_span().set_result_code(200));
/// ```
pub fn request(name: impl Into<Cow<'static, str>>) -> SpanBuilder {
    let name = name.into();
    SpanBuilder::request_named(OperationName::new(&name), name)
}

/// A builder for a span (a request when `request`) whose run-time values are written in
/// `extra` already, its name among them: the `tracing` layer's, which writes a span's fields in
/// place.
#[cfg(feature = "tracing")]
pub(crate) fn with_extra(request: bool, extra: Box<SpanExtra>) -> SpanBuilder {
    let (site, operation_name) = if request {
        (&REQUEST_SITE, extra.name.as_ref().map(OperationName::new))
    } else {
        (&BUILDER_SITE, None)
    };
    SpanBuilder {
        site,
        under: Under::Current,
        operation_name,
        extra,
    }
}

static BUILDER_SITE: Site = Site::inproc("span").at(module_path!(), file!(), line!());
static REQUEST_SITE: Site = Site::request("request").at(module_path!(), file!(), line!());

/// A span for a block, a closure or a future; made by [`span`] or [`request`].
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// let total = census_runtime::span("load orders")
///     .kind("SQL")
///     .target("orders-db")
///     .data("SELECT * FROM orders WHERE customer = $1")
///     .property("customer", "ada")
///     .in_scope(|| 3);
/// # census.flush(std::time::Duration::from_secs(5))?;
/// let span = memory.one("load orders");
/// assert_eq!((total, span.kind(), span.target()), (3, "SQL", Some("orders-db")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until started"]
pub struct SpanBuilder {
    site: &'static Site,
    under: Under,
    operation_name: Option<OperationName>,
    /// The span's run-time values, boxed from the start (a box the thread reuses): the
    /// builder's methods then move a pointer, not the values, and the record takes the box
    /// as it is.
    extra: Box<SpanExtra>,
}

impl SpanBuilder {
    /// A request named `name` whose operation is `operation_name`: [`request`]'s, and the
    /// server integrations' for a request no router matched (named by its raw path, which they
    /// share rather than intern).
    pub(crate) fn request_named(
        operation_name: OperationName,
        name: Cow<'static, str>,
    ) -> SpanBuilder {
        SpanBuilder {
            site: &REQUEST_SITE,
            under: Under::Current,
            operation_name: Some(operation_name),
            extra: crate::record::boxed_extra(Some(name)),
        }
    }

    /// The dependency type (default `INPROC`).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("publish").kind("Queue Message | kafka").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("publish").kind(), "Queue Message | kafka");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.extra.kind = Some(Cow::Borrowed(kind));
        self
    }

    /// The target.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let shard = 3;
    /// census_runtime::span("load").kind("SQL").target(format!("orders-{shard}")).in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").target(), Some("orders-3"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn target(mut self, target: impl Into<Cow<'static, str>>) -> Self {
        self.extra.target = Some(target.into());
        self
    }

    /// The command text (for a request: its URL).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("load").kind("SQL").data("SELECT 1").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").data(), Some("SELECT 1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data(mut self, data: impl Into<Cow<'static, str>>) -> Self {
        self.extra.data = Some(data.into());
        self
    }

    /// A custom property. Given again, a key takes the value given last (the item carries each
    /// key once).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("place order")
    ///     .property("items", 2)
    ///     .property("items", 3)
    ///     .in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("place order").property("items"), Some("3"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn property(mut self, key: impl Into<Cow<'static, str>>, value: impl Display) -> Self {
        crate::record::push_display(&mut self.extra.properties, key.into(), &value);
        self
    }

    /// The address of the client a request came from, sent as the Request's `ai.location.ip`
    /// tag: Application Insights shows where its users are from it (and then masks it, unless
    /// the resource keeps addresses). The HTTP server integrations set it themselves, from
    /// `X-Forwarded-For`, else the connection's peer; this is for a request census learns of
    /// otherwise (a queue's message, a protocol of the service's own). It is the span's
    /// [`CLIENT_ADDRESS_PROPERTY`](crate::export::CLIENT_ADDRESS_PROPERTY) property, never sent
    /// as a custom property.
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    /// # let memory = census_runtime::export::MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
    /// let peer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    /// census_runtime::request("PLACE order").client_address(peer).in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5)).unwrap();
    /// assert_eq!(
    ///     memory.one("PLACE order").property(census_runtime::export::CLIENT_ADDRESS_PROPERTY),
    ///     Some("203.0.113.7"),
    /// );
    /// ```
    pub fn client_address(self, address: std::net::IpAddr) -> Self {
        self.property(crate::record::CLIENT_ADDRESS_PROPERTY, address)
    }

    /// Links the span to another it relates to without being its child: the message a
    /// consumer handles, each message of a batch, the request that queued a job. Application
    /// Insights shows the linked operations beside it; the link is the span's
    /// [`LINKS_PROPERTY`](crate::export::LINKS_PROPERTY) property, as the Azure Monitor
    /// exporters write it (at most [`MAX_LINKS`](crate::export::MAX_LINKS) links).
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    /// # let memory = census_runtime::export::MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
    /// // The context a message carried (its `traceparent`), and the span that handles it.
    /// let sent = SpanContext::new(
    ///     TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
    ///     SpanId::from_hex("b7ad6b7169203331").unwrap(),
    ///     true,
    /// );
    /// census_runtime::span("handle message").link(sent).in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5)).unwrap();
    /// assert_eq!(
    ///     memory.one("handle message").property(census_runtime::export::LINKS_PROPERTY),
    ///     Some(r#"[{"operation_Id": "0af7651916cd43dd8448eb211c80319c", "id": "b7ad6b7169203331"}]"#),
    /// );
    /// ```
    pub fn link(mut self, to: SpanContext) -> Self {
        crate::record::push_link(&mut self.extra.properties, to);
        self
    }

    /// Continues a trace from another process: the span's parent is `parent` (from an incoming
    /// `traceparent`, say), not the span current here. The trace is recorded when the parent
    /// is ([`SpanContext::is_sampled`], the W3C flag), whatever the rate, so that every service
    /// of the trace keeps or drops it alike; a trace not recorded passes its id on with flag
    /// `00` to the calls made under it.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId, current_span};
    /// let caller = |sampled| SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     sampled,
    /// );
    /// # let census = census_runtime::pipeline()
    /// #     .exporter(census_runtime::export::MemoryExporter::new())
    /// #     .sampler(census_runtime::Sampler::never())
    /// #     .install()
    /// #     .unwrap();
    /// // Kept whatever the rate when the caller kept it.
    /// census_runtime::request("GET /").parent(caller(true)).in_scope(|| {
    ///     assert!(current_span().is_recording());
    /// });
    /// census_runtime::request("GET /").parent(caller(false)).in_scope(|| {
    ///     assert!(!current_span().is_recording());
    ///     let passed_on = current_span().context().unwrap();
    ///     assert_eq!(passed_on.trace_id(), caller(false).trace_id());
    ///     assert!(!passed_on.is_sampled());
    /// });
    /// ```
    pub fn parent(mut self, parent: SpanContext) -> Self {
        self.under = Under::Remote(parent);
        self
    }

    /// Continues a trace from a parent that carries no sampled flag (a legacy `Request-Id`):
    /// the trace is recorded when its id's score is below the rate, as every Application
    /// Insights SDK decides it.
    ///
    /// ```
    /// use census_runtime::{Sampler, SpanContext, SpanId, TraceId, current_span};
    /// # let census = census_runtime::pipeline()
    /// #     .exporter(census_runtime::export::MemoryExporter::new())
    /// #     .sampler(Sampler::probability(0.5))
    /// #     .install()
    /// #     .unwrap();
    /// let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    /// let caller = SpanContext::new(trace_id, SpanId::from_hex("00f067aa0ba902b7").unwrap(), true);
    /// census_runtime::request("GET /").scored_parent(caller).in_scope(|| {
    ///     assert_eq!(current_span().is_recording(), Sampler::score(trace_id) < 0.5);
    /// });
    /// ```
    pub fn scored_parent(mut self, parent: SpanContext) -> Self {
        self.under = Under::RemoteScored(parent);
        self
    }

    /// The W3C `tracestate` that came in with the parent, passed on by outgoing calls.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// use census_runtime::propagation::Outgoing;
    ///
    /// let outgoing = census_runtime::request("GET /orders")
    ///     .trace_state("congo=t61rcWkgMzE")
    ///     .in_scope(|| Outgoing::current(false))
    ///     .expect("a recorded span is current");
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert!(outgoing.headers().any(|header| header == ("tracestate", "congo=t61rcWkgMzE")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trace_state(mut self, state: impl Into<Arc<str>>) -> Self {
        self.extra.trace_state = Some(state.into());
        self
    }

    /// The name of the whole operation (`ai.operation.name`), inherited by the spans under it.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("nightly job")
    ///     .operation_name("reports")
    ///     .in_scope(|| census_runtime::span("load").in_scope(|| {}));
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").operation_name(), Some("reports"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn operation_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.operation_name = Some(OperationName::new(&name.into()));
        self
    }

    /// Starts a new trace, whatever span is current: a `tracing` span made with `parent: None`.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn root(mut self) -> Self {
        self.under = Under::Root;
        self
    }

    fn into_start(self) -> Start {
        Start {
            under: self.under,
            operation_name: self.operation_name,
            extra: Some(self.extra),
        }
    }

    /// Starts the span and makes it current until the guard is dropped.
    ///
    /// ```
    /// let _span = census_runtime::span("warm cache").start();
    /// // ... the span covers the rest of the scope
    /// ```
    pub fn start(self) -> SpanGuard {
        let site = self.site;
        SpanGuard::start(site, self.into_start())
    }

    /// Starts the span without making it current: for an operation that begins in one callback
    /// and ends in another (a database driver's events), possibly on another thread. Nothing
    /// nests under it; it ends when [`DetachedSpan::end`] is called or it is dropped.
    ///
    /// ```
    /// let query = census_runtime::span("SELECT orders").kind("postgresql").start_detached();
    /// query.set_result_code("42P01");
    /// query.fail("relation \"orders\" does not exist");
    /// query.end();
    /// ```
    pub fn start_detached(self) -> DetachedSpan {
        let state = match self.start_record() {
            Ok(record) => Detached::Recording(record),
            Err(NotStarted::Unsampled(trace_id)) => Detached::Unsampled(trace_id),
            Err(NotStarted::Inert) => Detached::Inert,
        };
        DetachedSpan {
            state: Mutex::new(state),
        }
    }

    /// Starts the span as a bare record that its caller keeps and ends (with
    /// `queue::submit`), or says why not.
    #[inline]
    pub(crate) fn start_record(self) -> Result<SpanRecord, NotStarted> {
        self.start_with(|_, planned| planned.start())
    }

    /// Decides where the span belongs and whether it is recorded, and gives what is decided to
    /// `place`, which starts its record where it keeps it ([`Planned::start`]), with the
    /// thread's state, borrowed meanwhile; or says why the span is not recorded.
    #[inline]
    pub(crate) fn start_with<R>(
        self,
        place: impl FnOnce(&mut Local, Planned) -> R,
    ) -> Result<R, NotStarted> {
        if !sampler::is_active() {
            return Err(NotStarted::Inert);
        }
        let site = self.site;
        let start = self.into_start();
        parent::with_plan(site, start, |local, plan| {
            plan.map(|planned| place(local, planned))
        })
        .unwrap_or(Err(NotStarted::Inert))
    }

    /// Runs `f` inside the span. A panic fails the span and continues.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let total = census_runtime::span("price basket").in_scope(|| {
    ///     // spans started here are its children
    ///     census_runtime::span("price item").in_scope(|| 3 * 7)
    /// });
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(total, 21);
    /// assert_eq!(memory.one("price item").parent_id(), Some(memory.one("price basket").span_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
        self.start().run(f)
    }

    /// Runs `f` inside the span; an `Err` fails it, with the error's `Display` as message.
    ///
    /// ```
    /// let parsed: Result<u8, _> = census_runtime::span("parse").try_in_scope(|| "300".parse::<u8>());
    /// assert!(parsed.is_err());
    /// ```
    pub fn try_in_scope<T, E: Display>(self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let guard = self.start();
        let result = guard.run(f);
        if let Err(error) = &result {
            guard.fail_with_error(error, None, std::any::type_name::<E>());
        }
        result
    }

    /// Runs `future` inside the span, current on each poll, ended when it completes.
    ///
    /// ```
    /// # async fn demo() {
    /// let answer = census_runtime::span("compute").instrument(async { 42 }).await;
    /// # assert_eq!(answer, 42);
    /// # }
    /// ```
    pub fn instrument<F: Future>(self, future: F) -> Instrumented<F> {
        let site = self.site;
        let span = AsyncSpan::start_with(site, self.into_start());
        Instrumented {
            inner: span.wrap(future, Unjudged, NoSite),
        }
    }
}

/// Why [`SpanBuilder::start_record`] started no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStarted {
    /// Nothing is recorded: no pipeline, or under a trace that is not recorded already.
    Inert,
    /// The span starts a trace that is not recorded (the spans under it must not be either):
    /// a new one the sampler dropped (`None`), or a remote parent's (its id).
    Unsampled(Option<TraceId>),
}

/// A span that is not current anywhere: started in one place, ended in another, possibly on
/// another thread. Made by [`SpanBuilder::start_detached`].
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// // Started in one callback...
/// let query = census_runtime::span("SELECT").kind("SQL").start_detached();
/// // ...ended in another, on any thread.
/// std::thread::spawn(move || query.end()).join().unwrap();
/// # census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.one("SELECT").kind(), "SQL");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DetachedSpan {
    state: Mutex<Detached>,
}

/// What a detached span holds.
#[derive(Debug)]
enum Detached {
    /// The record of a recorded span.
    Recording(SpanRecord),
    /// The root of a trace that is not recorded, and its id once known.
    Unsampled(Option<TraceId>),
    /// Nothing: no pipeline, or a span under a trace that is not recorded.
    Inert,
}

impl DetachedSpan {
    fn state(&self) -> std::sync::MutexGuard<'_, Detached> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<R>(&self, f: impl FnOnce(&mut SpanRecord) -> R) -> Option<R> {
        match &mut *self.state() {
            Detached::Recording(record) => Some(f(record)),
            _ => None,
        }
    }

    span_values!(
        "the span is recorded",
        "let span = census_runtime::span(\"load\").start_detached();",
        "",
        "span.end();"
    );

    /// The span's context, for propagation. For a span that starts a trace not recorded (a new
    /// one the sampler dropped, or a remote parent's with flag `00`), a context that says so:
    /// the trace's id (drawn the first time it is asked for, one that every downstream sampler
    /// at the same rate drops) and a fresh span id. `None` under a trace that is not recorded
    /// already (ask [`current_span`](crate::current_span) there) or without a pipeline.
    ///
    /// ```
    /// let call = census_runtime::span("GET /orders").kind("HTTP").start_detached();
    /// assert!(call.context().is_none()); // no pipeline
    /// ```
    pub fn context(&self) -> Option<SpanContext> {
        match &mut *self.state() {
            Detached::Recording(record) => Some(record.context()),
            Detached::Unsampled(trace_id) => Some(SpanContext::new(
                *trace_id.get_or_insert_with(sampler::dropped_trace_id),
                SpanId::random(),
                false,
            )),
            Detached::Inert => None,
        }
    }

    /// Ends the span now.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let call = census_runtime::span("GET /stock").kind("HTTP").start_detached();
    /// call.set_result_code(200);
    /// call.end();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("GET /stock").result_code(), Some("200"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn end(self) {}
}

impl Drop for DetachedSpan {
    fn drop(&mut self) {
        let state = std::mem::replace(
            self.state.get_mut().unwrap_or_else(|p| p.into_inner()),
            Detached::Inert,
        );
        if let Detached::Recording(mut record) = state {
            record.set_end(clock::now());
            local::submit(record);
        }
    }
}

pin_project! {
    /// A future inside its span: current while the future is polled, ended when it completes,
    /// when it is dropped before completing (not succeeded, result code `cancelled`) or when it
    /// panics. Made by [`SpanBuilder::instrument`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Instrumented<F> {
        #[pin]
        inner: Traced<F, Unjudged, NoSite>,
    }
}

impl<F: fmt::Debug> fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}
