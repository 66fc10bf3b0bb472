//! Spans for code that is not a function: a block, a closure, a future, a request, or an
//! operation that starts in one callback and ends in another.

use std::borrow::Cow;
use std::fmt::{self, Display};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::future::{AsyncSpan, Traced, Unjudged};
use super::parent::{self, Decision, Start, Under};
use super::sync::SpanGuard;
use crate::clock;
use crate::id::{SpanContext, SpanId};
use crate::local::with_local;
use crate::queue;
use crate::record::{SpanExtra, SpanRecord};
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
        extra: SpanExtra {
            name: Some(name.into()),
            ..SpanExtra::default()
        },
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
    SpanBuilder {
        site: &REQUEST_SITE,
        under: Under::Current,
        operation_name: Some(Arc::from(name.as_ref())),
        extra: SpanExtra {
            name: Some(name),
            ..SpanExtra::default()
        },
    }
}

static BUILDER_SITE: Site = Site::inproc("span").at(module_path!(), file!(), line!());
static REQUEST_SITE: Site = Site::request("request").at(module_path!(), file!(), line!());

/// A span for a block, a closure or a future; made by [`span`] or [`request`].
#[derive(Debug)]
#[must_use = "a builder does nothing until started"]
pub struct SpanBuilder {
    site: &'static Site,
    under: Under,
    operation_name: Option<Arc<str>>,
    extra: SpanExtra,
}

impl SpanBuilder {
    /// The dependency type (default `INPROC`).
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.extra.kind = Some(Cow::Borrowed(kind));
        self
    }

    /// The dependency type, when it is known only at run time.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn kind_owned(mut self, kind: Cow<'static, str>) -> Self {
        self.extra.kind = Some(kind);
        self
    }

    /// The target.
    pub fn target(mut self, target: impl Into<Cow<'static, str>>) -> Self {
        self.extra.target = Some(target.into());
        self
    }

    /// The command text (for a request: its URL).
    pub fn data(mut self, data: impl Into<Cow<'static, str>>) -> Self {
        self.extra.data = Some(data.into());
        self
    }

    /// A custom property.
    pub fn property(mut self, key: impl Into<Cow<'static, str>>, value: impl Display) -> Self {
        self.extra.properties.push((key.into(), value.to_string()));
        self
    }

    /// Continues a trace from another process: the span's parent is `parent` (from an incoming
    /// `traceparent`, say), not the span current here. Whether the trace is recorded is decided
    /// from its trace id, as every Application Insights SDK decides it.
    pub fn parent(mut self, parent: SpanContext) -> Self {
        self.under = Under::Remote(parent);
        self
    }

    /// The W3C `tracestate` that came in with the parent, passed on by outgoing calls.
    pub fn trace_state(mut self, state: impl Into<Arc<str>>) -> Self {
        self.extra.trace_state = Some(state.into());
        self
    }

    /// The name of the whole operation (`ai.operation.name`), inherited by the spans under it.
    pub fn operation_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.operation_name = Some(name.into());
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
            extra: Some(Box::new(self.extra)),
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
        DetachedSpan {
            record: Mutex::new(self.start_record().ok()),
        }
    }

    /// Starts the span as a bare record that its caller keeps and ends (with
    /// `queue::submit`): `Err(true)` when its trace is not recorded (the spans under it must
    /// not be either), `Err(false)` when nothing is (no pipeline, or under a dropped trace).
    pub(crate) fn start_record(self) -> Result<SpanRecord, bool> {
        if !sampler::is_active() {
            return Err(false);
        }
        let site = self.site;
        let start = self.into_start();
        with_local(|local| match parent::decide(local, start.under) {
            Decision::Record(parent) => {
                let mut record = parent.start(site, SpanId::random());
                start.apply(&mut record);
                Ok(record)
            }
            Decision::Unsampled => Err(true),
            Decision::Inert => Err(false),
        })
        .unwrap_or(Err(false))
    }

    /// Runs `f` inside the span. A panic fails the span and continues.
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
            inner: span.wrap(future, Unjudged),
        }
    }
}

/// A span that is not current anywhere: started in one place, ended in another, possibly on
/// another thread. Made by [`SpanBuilder::start_detached`].
#[derive(Debug)]
pub struct DetachedSpan {
    record: Mutex<Option<SpanRecord>>,
}

impl DetachedSpan {
    fn with<R>(&self, f: impl FnOnce(&mut SpanRecord) -> R) -> Option<R> {
        let mut slot = self.record.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_mut().map(f)
    }

    span_values!("the span is recorded");

    /// The span's context, for propagation.
    pub fn context(&self) -> Option<SpanContext> {
        self.with(|r| r.context())
    }

    /// Ends the span now.
    pub fn end(self) {}
}

impl Drop for DetachedSpan {
    fn drop(&mut self) {
        let record = self
            .record
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut record) = record {
            record.set_end(clock::now());
            queue::submit(record);
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
        inner: Traced<F, Unjudged>,
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
