//! Starting and ending spans: the guards the macros use, the records they leave, and the API for
//! code that is not a function.

mod panic;

use std::any::Any;
use std::borrow::Cow;
use std::fmt::{self, Display};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use crate::clock;
use crate::context::{
    Frame, Local, SpanContext, SpanId, TraceId, depth, hot, set_unsampled_root, unsampled_root,
    with_local,
};
use crate::pipeline;
use crate::site::{Site, SpanKind};

/// A finished span, as exporters receive it.
///
/// ```
/// # use census_runtime::{MemoryExporter, Sampler};
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
/// census_runtime::span("checkout").kind("SQL").target("orders-db").in_scope(|| {});
/// census.flush(std::time::Duration::from_secs(5)).unwrap();
/// let span = &memory.spans()[0];
/// assert_eq!((span.name(), span.kind(), span.target()), ("checkout", "SQL", Some("orders-db")));
/// assert!(span.success());
/// ```
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub(crate) site: &'static Site,
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_id: Option<SpanId>,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) sample_rate: f32,
    pub(crate) success: bool,
    /// The name the whole operation is grouped under: set on a request, inherited by its children.
    pub(crate) operation_name: Option<Arc<str>>,
    pub(crate) extra: Option<Box<SpanExtra>>,
}

/// The values of a span that are known only at run time. Most spans have none.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanExtra {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) kind: Option<&'static str>,
    pub(crate) target: Option<Cow<'static, str>>,
    pub(crate) data: Option<Cow<'static, str>>,
    pub(crate) result_code: Option<Cow<'static, str>>,
    pub(crate) error: Option<String>,
    pub(crate) properties: Vec<(Cow<'static, str>, String)>,
    pub(crate) exception: Option<ExceptionInfo>,
    /// The W3C `tracestate` that came in with a request, passed on by outgoing calls.
    pub(crate) trace_state: Option<Arc<str>>,
}

/// What is known of a panic that unwound through a span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceptionInfo {
    /// The kind of exception: `panic`.
    pub type_name: Cow<'static, str>,
    /// The panic's message.
    pub message: String,
    /// Where it panicked, `file:line:column`, when known.
    pub location: Option<String>,
}

impl SpanRecord {
    fn new(site: &'static Site, trace_id: TraceId, parent_id: Option<SpanId>, rate: f32) -> Self {
        SpanRecord {
            site,
            trace_id,
            span_id: SpanId::random(),
            parent_id,
            start: clock::now(),
            end: 0,
            sample_rate: rate,
            success: true,
            operation_name: None,
            extra: None,
        }
    }

    fn extra_mut(&mut self) -> &mut SpanExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// The call site that produced the span.
    pub fn site(&self) -> &'static Site {
        self.site
    }

    /// The operation's name: set at run time, else the site's.
    pub fn name(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|e| e.name.as_deref())
            .unwrap_or(self.site.name())
    }

    /// The dependency type (`INPROC`, `SQL`, `HTTP`, ...).
    pub fn kind(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|e| e.kind)
            .unwrap_or(self.site.kind())
    }

    /// Dependency or request.
    pub fn span_kind(&self) -> SpanKind {
        self.site.span_kind()
    }

    /// The target: set at run time, else the site's.
    pub fn target(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.target.as_deref())
            .or(self.site.target())
    }

    /// The command text (SQL, URL): set at run time, else the site's.
    pub fn data(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.data.as_deref())
            .or(self.site.data())
    }

    /// The result code, when one was set or the span failed.
    pub fn result_code(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.result_code.as_deref())
    }

    /// Whether the operation succeeded.
    pub fn success(&self) -> bool {
        self.success
    }

    /// The failure's message (an error's `Display`, a panic's message).
    pub fn error_message(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.error.as_deref())
    }

    /// The panic that unwound through the span, if any.
    pub fn exception(&self) -> Option<&ExceptionInfo> {
        self.extra.as_ref().and_then(|e| e.exception.as_ref())
    }

    /// The custom properties recorded on the span (fields and `set_property`), in order.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra
            .iter()
            .flat_map(|e| e.properties.iter())
            .map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// One property's value.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The operation name the whole trace is grouped under, when one was set.
    pub fn operation_name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }

    /// The trace (operation) id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span's own id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The parent span's id; `None` for the root of a trace.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// The span's context.
    pub fn context(&self) -> SpanContext {
        SpanContext::new(self.trace_id, self.span_id, true)
    }

    /// When the span started, wall clock.
    pub fn start_time(&self) -> SystemTime {
        clock::to_system_time(self.start)
    }

    /// How long it lasted.
    pub fn duration(&self) -> Duration {
        clock::between(self.start, self.end)
    }

    /// The sampling percentage in force when the trace was sampled (100 keeps everything).
    pub fn sample_rate(&self) -> f64 {
        f64::from(self.sample_rate)
    }

    fn fail(&mut self, code: Cow<'static, str>, message: Option<String>) {
        self.success = false;
        let extra = self.extra_mut();
        if extra.result_code.is_none() {
            extra.result_code = Some(code);
        }
        if message.is_some() {
            extra.error = message;
        }
    }

    fn record_fields(&mut self, values: &[&dyn Display]) {
        let names = self.site.fields();
        if values.is_empty() || names.is_empty() {
            return;
        }
        let extra = self.extra_mut();
        for (name, value) in names.iter().zip(values) {
            extra
                .properties
                .push((Cow::Borrowed(*name), value.to_string()));
        }
    }

    /// Marks the span failed by the panic described by `info`.
    fn fail_with_panic(&mut self, info: ExceptionInfo) {
        self.fail(Cow::Borrowed("panic"), Some(info.message.clone()));
        self.extra_mut().exception = Some(info);
    }

    /// Marks the span failed by the panic whose payload was caught unwinding through it.
    #[cold]
    fn fail_with_payload(&mut self, payload: &(dyn Any + Send)) {
        let info = panic::describe_caught(self.span_id, self.parent_id, payload);
        self.fail_with_panic(info);
    }

    /// Marks the span failed by the panic unwinding through it, unless its payload was caught
    /// and described already.
    #[cold]
    fn fail_on_panic(&mut self) {
        if self.exception().is_none() {
            let info = panic::describe_uncaught(self.span_id);
            self.fail_with_panic(info);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Starting a span.

/// Decides, for a new span on this thread, what frame it pushes: a recording span, the unsampled
/// root of a trace, or nothing at all (inert, under an unsampled root).
#[inline]
fn open(local: &mut Local, site: &'static Site, remote: Option<SpanContext>) -> Option<Frame> {
    let mut operation_name = None;
    let (trace_id, parent_id) = match (remote, local.stack.last()) {
        // A parent from another process: continue its trace; the sampler decides from the trace
        // id, as every Application Insights SDK does, so the services of one trace agree.
        (Some(remote), _) => {
            if !pipeline::sampled(remote.trace_id()) {
                return Some(Frame::Unsampled);
            }
            (remote.trace_id(), Some(remote.span_id()))
        }
        (None, Some(frame @ (Frame::Span(_) | Frame::Boxed(_)))) => {
            let parent = frame.record().expect("span frames hold a record");
            operation_name.clone_from(&parent.operation_name);
            (parent.trace_id, Some(parent.span_id))
        }
        (None, Some(Frame::Parent(ctx))) if ctx.is_sampled() => {
            (ctx.trace_id(), Some(ctx.span_id()))
        }
        (None, Some(Frame::Parent(_)) | Some(Frame::Unsampled)) => return None,
        (None, None) if unsampled_root() => return None,
        (None, None) => match pipeline::sample_root() {
            Some(trace_id) => (trace_id, None),
            None => return Some(Frame::Unsampled),
        },
    };
    let mut record = SpanRecord::new(site, trace_id, parent_id, pipeline::sample_percentage());
    record.operation_name = operation_name;
    Some(Frame::Span(record))
}

/// Ends a span: stamps it and puts it in this thread's ring for the export worker.
#[inline]
fn close(local: &mut Local, mut record: SpanRecord) {
    record.end = clock::now();
    pipeline::submit(local, record);
}

/// Removes the frame pushed at `depth`, wherever later frames leaked by misuse ended up.
fn take_frame(local: &mut Local, depth: usize, span_id: Option<SpanId>) -> Option<Frame> {
    let matches = |frame: &Frame| match (frame, span_id) {
        (Frame::Unsampled, None) => true,
        (frame, Some(id)) => frame.record().is_some_and(|r| r.span_id == id),
        _ => false,
    };
    if local.stack.get(depth).is_some_and(matches) {
        return Some(local.remove(depth));
    }
    let index = local.stack.iter().rposition(matches)?;
    Some(local.remove(index))
}

/// A span that is current on this thread until it is dropped.
///
/// Made by the macros for sync functions and by [`SpanBuilder::start`]. It is not `Send`: a span
/// entered on one thread ends on that thread. For async code use [`SpanBuilder::instrument`] (or
/// the attributes on an `async fn`), which make the span current only while its future is
/// polled.
///
/// **Do not hold it across `.await`.** A future that holds a guard is not `Send`, so a
/// multi-threaded executor refuses it, but `join!`, `select!`, `spawn_local` and `block_on`
/// accept it. While such a future waits, its span stays current on the thread, and every span
/// that anything else polled on that thread starts in the meantime nests under it, in the wrong
/// trace. The held span itself still ends, with the right duration, when the guard is dropped.
/// Clippy catches it at compile time with this entry in `clippy.toml`:
///
/// ```toml
/// await-holding-invalid-types = [
///     { path = "census_runtime::SpanGuard", reason = "use SpanBuilder::instrument across .await" },
/// ]
/// ```
///
/// What happens without it, under `join!` on one thread:
///
/// ```
/// # use census_runtime::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let holds = async {
///     let _guard = census_runtime::span("held").start();
///     tokio::task::yield_now().await; // the guard stays current while this waits
/// };
/// let other = async { census_runtime::span("unrelated").in_scope(|| {}) };
/// tokio::join!(holds, other);
/// # });
/// # census.flush(std::time::Duration::from_secs(5)).unwrap();
/// let (held, unrelated) = (memory.one("held"), memory.one("unrelated"));
/// assert_eq!(unrelated.parent_id(), Some(held.span_id()), "nested where it should not be");
/// ```
#[must_use = "the span ends when the guard is dropped"]
pub struct SpanGuard {
    /// Where the span's frame sits on the thread's stack; `usize::MAX` when inert.
    depth: usize,
    span_id: Option<SpanId>,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanGuard")
            .field("recording", &self.span_id.is_some())
            .finish()
    }
}

/// The `depth` of a guard for a sync root whose trace was not sampled: it took no frame.
const UNSAMPLED_ROOT_MARK: usize = usize::MAX - 1;

impl SpanGuard {
    const INERT: SpanGuard = SpanGuard {
        depth: usize::MAX,
        span_id: None,
        _not_send: PhantomData,
    };

    /// Starts a span for `site` under the current span and makes it current.
    #[inline]
    pub fn enter(site: &'static Site) -> SpanGuard {
        if !pipeline::is_active() {
            return SpanGuard::INERT;
        }
        Self::enter_site(site)
    }

    /// The macros' path: no remote parent, no values known at start. Inlined into the
    /// instrumented function: a trace the sampler drops costs a few loads and stores and no
    /// call; recording a span calls out of line.
    #[inline(always)]
    fn enter_site(site: &'static Site) -> SpanGuard {
        // Under an unsampled root, or a new trace the sampler drops: decided here, without a
        // call or the stack.
        let word = hot();
        if word == 1 {
            return SpanGuard::INERT;
        }
        if word == 0 && !pipeline::keep_new_trace() {
            crate::context::open_unsampled_root();
            return SpanGuard {
                depth: UNSAMPLED_ROOT_MARK,
                span_id: None,
                _not_send: PhantomData,
            };
        }
        Self::enter_kept(site)
    }

    /// A kept root, a child, or a span under an unsampled root.
    #[inline(never)]
    fn enter_kept(site: &'static Site) -> SpanGuard {
        match hot() {
            0 => Self::enter_root(site),
            1 => SpanGuard::INERT,
            _ => Self::enter_child(site),
        }
    }

    #[inline(never)]
    fn enter_root(site: &'static Site) -> SpanGuard {
        let trace_id = pipeline::new_trace_id();
        with_local(|local| Self::push_span(local, site, trace_id, None, None))
            .unwrap_or(SpanGuard::INERT)
    }

    #[inline(never)]
    fn enter_child(site: &'static Site) -> SpanGuard {
        with_local(|local| {
            let (trace_id, parent_id, operation_name) = match local.stack.last() {
                Some(frame @ (Frame::Span(_) | Frame::Boxed(_))) => {
                    let parent = frame.record().expect("span frames hold a record");
                    (
                        parent.trace_id,
                        parent.span_id,
                        parent.operation_name.clone(),
                    )
                }
                Some(Frame::Parent(ctx)) if ctx.is_sampled() => {
                    (ctx.trace_id(), ctx.span_id(), None)
                }
                _ => return SpanGuard::INERT,
            };
            Self::push_span(local, site, trace_id, Some(parent_id), operation_name)
        })
        .unwrap_or(SpanGuard::INERT)
    }

    /// Pushes a recording frame, its record written once, in its slot on the stack, and the
    /// clock read last so that the span starts as late as it can.
    #[inline(always)]
    fn push_span(
        local: &mut Local,
        site: &'static Site,
        trace_id: TraceId,
        parent_id: Option<SpanId>,
        operation_name: Option<Arc<str>>,
    ) -> SpanGuard {
        let span_id = SpanId::random();
        let sample_rate = pipeline::sample_percentage();
        let depth = local.push_in_place(|| {
            Frame::Span(SpanRecord {
                site,
                trace_id,
                span_id,
                parent_id,
                start: clock::now(),
                end: 0,
                sample_rate,
                success: true,
                operation_name,
                extra: None,
            })
        });
        SpanGuard {
            depth,
            span_id: Some(span_id),
            _not_send: PhantomData,
        }
    }

    #[inline(never)]
    fn enter_slow(site: &'static Site, start: Start) -> SpanGuard {
        with_local(|local| match open(local, site, start.remote) {
            None => SpanGuard::INERT,
            Some(mut frame) => {
                let span_id = match &mut frame {
                    Frame::Span(record) => {
                        start.apply(record);
                        Some(record.span_id)
                    }
                    _ => None,
                };
                SpanGuard {
                    depth: local.push(frame),
                    span_id,
                    _not_send: PhantomData,
                }
            }
        })
        .unwrap_or(SpanGuard::INERT)
    }

    /// Whether this guard records a span (the pipeline is installed and the trace sampled).
    #[inline]
    pub fn is_recording(&self) -> bool {
        self.span_id.is_some()
    }

    /// The recorded span's context.
    pub fn context(&self) -> Option<SpanContext> {
        let id = self.span_id?;
        self.with_record(|r| SpanContext::new(r.trace_id, id, true))
    }

    fn with_record<R>(&self, f: impl FnOnce(&mut SpanRecord) -> R) -> Option<R> {
        let id = self.span_id?;
        with_local(|local| local.record_mut(self.depth, id).map(f)).flatten()
    }

    /// Records the function's arguments named in the site's `fields(...)`, by `Display`.
    pub fn record_fields(&self, values: &[&dyn Display]) {
        if self.is_recording() && !values.is_empty() {
            self.with_record(|r| r.record_fields(values));
        }
    }

    /// Marks the span failed with an error: its `Display` becomes the message and `code` (the
    /// error's type, unless a result code was set) the result code.
    pub fn fail_with_error(&self, error: &dyn Display, code: &'static str) {
        if self.is_recording() {
            let message = error.to_string();
            self.with_record(|r| r.fail(short_type_name(code), Some(message)));
        }
    }

    /// Marks the span failed with a message.
    pub fn fail(&self, message: impl Display) {
        if self.is_recording() {
            let message = message.to_string();
            self.with_record(|r| r.fail(Cow::Borrowed("error"), Some(message)));
        }
    }

    /// Runs `body` inside this guard's span: a panic is caught, fails the span with the
    /// panic's own message (whatever panic hooks are set), and is resumed.
    #[inline(always)]
    pub(crate) fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(value) => value,
            Err(payload) => self.unwound(payload),
        }
    }

    /// Fails the span with the panic whose payload unwound out of its body, and resumes it.
    #[cold]
    #[inline(never)]
    fn unwound(&self, payload: Box<dyn Any + Send>) -> ! {
        if self.is_recording() {
            self.with_record(|r| r.fail_with_payload(&*payload));
        }
        std::panic::resume_unwind(payload)
    }
}

impl Drop for SpanGuard {
    #[inline]
    fn drop(&mut self) {
        // Only the check is inlined into the instrumented function: the rest would bloat every
        // caller's frame, which costs even when nothing is recorded.
        if self.depth == UNSAMPLED_ROOT_MARK {
            set_unsampled_root(false);
        } else if self.depth != usize::MAX {
            self.exit();
        }
    }
}

impl SpanGuard {
    #[inline(never)]
    fn exit(&mut self) {
        with_local(|local| {
            // The common case: this guard's frame is on top.
            if local.stack.len() == self.depth + 1 {
                match (local.stack.last(), self.span_id) {
                    (Some(Frame::Unsampled), None) => {
                        local.pop();
                        return;
                    }
                    (Some(Frame::Span(record)), Some(id)) if record.span_id == id => {
                        let end = clock::now();
                        if std::thread::panicking() {
                            fail_top_on_panic(local);
                        }
                        pipeline::submit_top(local, end);
                        return;
                    }
                    _ => {}
                }
            }
            // Guards dropped out of order (a guard moved or leaked by the caller).
            if let Some(Frame::Span(record)) = take_frame(local, self.depth, self.span_id) {
                finish(local, record);
            }
        });
    }
}

/// Marks the span on top of the stack failed by the panic unwinding through it.
#[cold]
#[inline(never)]
fn fail_top_on_panic(local: &mut Local) {
    if let Some(Frame::Span(record)) = local.stack.last_mut() {
        record.fail_on_panic();
    }
}

/// Ends a sync span, failed if a panic is unwinding through it.
#[inline]
fn finish(local: &mut Local, mut record: SpanRecord) {
    if std::thread::panicking() {
        record.fail_on_panic();
    }
    close(local, record);
}

/// `std::any::type_name` without the module paths, in every path of the name:
/// `std::io::error::Error` -> `Error`, `alloc::boxed::Box<dyn core::error::Error>` ->
/// `Box<dyn Error>`, `core::result::Result<alloc::vec::Vec<my::Thing>, std::io::error::Error>`
/// -> `Result<Vec<Thing>, Error>`.
pub(crate) fn short_type_name(full: &'static str) -> Cow<'static, str> {
    // The common case, a path with no generic arguments, borrows its last segment.
    if full
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return Cow::Borrowed(full.rsplit("::").next().unwrap_or(full));
    }
    let mut short = String::with_capacity(full.len());
    // Where the path segment being copied starts in `short`: a `::` after it drops it.
    let mut segment = 0;
    let mut rest = full;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            short.truncate(segment);
            rest = after;
            continue;
        }
        short.push(c);
        if !(c.is_alphanumeric() || c == '_') {
            segment = short.len();
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(short)
}

// ---------------------------------------------------------------------------------------------
// Async spans.

/// What a future carries of its span between polls: small, so that an instrumented future is
/// barely larger than the one it wraps; a recorded span's record is boxed.
enum AsyncFrame {
    /// Nothing to do: no pipeline, or under a span that is not recorded.
    Inert,
    /// The root of a trace the sampler dropped: the future's children are inert.
    Unsampled,
    /// A recorded span.
    Recording(Box<SpanRecord>),
}

impl AsyncFrame {
    fn from_frame(local: &mut Local, frame: Option<Frame>) -> AsyncFrame {
        match frame {
            Some(Frame::Span(record)) => AsyncFrame::Recording(local.boxed(record)),
            Some(Frame::Boxed(record)) => AsyncFrame::Recording(record),
            Some(Frame::Unsampled) => AsyncFrame::Unsampled,
            Some(Frame::Parent(_)) | None => AsyncFrame::Inert,
        }
    }
}

/// A span for a future: current while the future is polled, ended when it completes (or is
/// dropped before completing, which counts as cancelled).
#[must_use = "futures do nothing unless polled"]
pub struct Instrumented<F, O> {
    inner: F,
    frame: AsyncFrame,
    outcome: Option<O>,
}

impl<F: fmt::Debug, O> fmt::Debug for Instrumented<F, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("inner", &self.inner)
            .field("recording", &matches!(self.frame, AsyncFrame::Recording(_)))
            .finish()
    }
}

/// Starts an async span for `site` under the current span. The span starts now and is made
/// current on each poll of the future given to [`AsyncSpan::instrument`].
pub struct AsyncSpan {
    frame: AsyncFrame,
}

impl fmt::Debug for AsyncSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSpan")
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl AsyncSpan {
    const INERT: AsyncSpan = AsyncSpan {
        frame: AsyncFrame::Inert,
    };

    /// Opens a span for `site` under the span current on this thread.
    #[inline]
    pub fn start(site: &'static Site) -> AsyncSpan {
        if !pipeline::is_active() {
            return AsyncSpan::INERT;
        }
        Self::start_site(site)
    }

    /// The macros' path, with the same fast decisions as the sync one.
    #[inline(never)]
    fn start_site(site: &'static Site) -> AsyncSpan {
        if depth() == 0 {
            if unsampled_root() {
                return AsyncSpan::INERT;
            }
            if !pipeline::keep_new_trace() {
                return AsyncSpan {
                    frame: AsyncFrame::Unsampled,
                };
            }
            let trace_id = pipeline::new_trace_id();
            let span_id = SpanId::random();
            let sample_rate = pipeline::sample_percentage();
            // A spare box of this thread's, or a new one.
            let slot = with_local(Local::take_slot).unwrap_or_else(Box::new_uninit);
            // Written once, in the box, the clock read last.
            let record = Box::write(
                slot,
                SpanRecord {
                    site,
                    trace_id,
                    span_id,
                    parent_id: None,
                    start: clock::now(),
                    end: 0,
                    sample_rate,
                    success: true,
                    operation_name: None,
                    extra: None,
                },
            );
            return AsyncSpan {
                frame: AsyncFrame::Recording(record),
            };
        }
        Self::start_slow(site, Start::default())
    }

    #[inline(never)]
    fn start_slow(site: &'static Site, start: Start) -> AsyncSpan {
        let frame = with_local(|local| {
            let frame = open(local, site, start.remote).map(|mut frame| {
                if let Frame::Span(record) = &mut frame {
                    start.apply(record);
                }
                frame
            });
            AsyncFrame::from_frame(local, frame)
        });
        AsyncSpan {
            frame: frame.unwrap_or(AsyncFrame::Inert),
        }
    }

    /// Whether the span is recorded.
    pub fn is_recording(&self) -> bool {
        matches!(self.frame, AsyncFrame::Recording(_))
    }

    /// Records the arguments named in the site's `fields(...)`.
    pub fn record_fields(&mut self, values: &[&dyn Display]) {
        if let AsyncFrame::Recording(record) = &mut self.frame {
            record.record_fields(values);
        }
    }

    /// Runs `future` inside the span; `outcome` looks at its output to mark the span.
    pub fn instrument<F, O>(self, future: F, outcome: O) -> Instrumented<F, O>
    where
        F: Future,
        O: FnOnce(&F::Output, &mut Outcome<'_>),
    {
        Instrumented {
            inner: future,
            frame: self.frame,
            outcome: Some(outcome),
        }
    }
}

/// The outcome of a call, as the generated code reports it.
pub struct Outcome<'a> {
    record: Option<&'a mut SpanRecord>,
}

impl Outcome<'_> {
    /// Marks the span failed by an error value.
    pub fn fail_with_error(&mut self, error: &dyn Display, code: &'static str) {
        if let Some(record) = self.record.as_deref_mut() {
            record.fail(short_type_name(code), Some(error.to_string()));
        }
    }
}

/// A future's span made current for one poll, and put back into the future after it, unwinding
/// included. Not generic: the code that runs around every poll is shared by every async fn.
struct PollScope<'a> {
    slot: &'a mut AsyncFrame,
    /// Where the frame sits on the stack; `None` when the poll runs under the unsampled-root flag.
    depth: Option<usize>,
    span_id: Option<SpanId>,
}

impl<'a> PollScope<'a> {
    #[inline(never)]
    fn enter(slot: &'a mut AsyncFrame) -> Option<PollScope<'a>> {
        // `with_local` is `None` while the thread is torn down: the future is then polled
        // without its span.
        match std::mem::replace(slot, AsyncFrame::Inert) {
            AsyncFrame::Inert => None,
            AsyncFrame::Unsampled => {
                *slot = AsyncFrame::Unsampled;
                // A dropped trace's root with nothing current: the flag, not a frame.
                if hot() == 0 {
                    set_unsampled_root(true);
                    return Some(PollScope {
                        slot,
                        depth: None,
                        span_id: None,
                    });
                }
                with_local(|local| local.push(Frame::Unsampled)).map(|depth| PollScope {
                    slot,
                    depth: Some(depth),
                    span_id: None,
                })
            }
            AsyncFrame::Recording(record) => {
                let span_id = record.span_id;
                with_local(|local| local.push_boxed(record)).map(|depth| PollScope {
                    slot,
                    depth: Some(depth),
                    span_id: Some(span_id),
                })
            }
        }
    }
}

impl PollScope<'_> {
    /// Fails the span with the panic whose payload unwound out of the poll, and resumes it.
    #[cold]
    #[inline(never)]
    fn unwound(&self, payload: Box<dyn Any + Send>) -> ! {
        if let (Some(depth), Some(span_id)) = (self.depth, self.span_id) {
            with_local(|local| {
                if let Some(record) = local.record_mut(depth, span_id) {
                    record.fail_with_payload(&*payload);
                }
            });
        }
        std::panic::resume_unwind(payload)
    }
}

impl Drop for PollScope<'_> {
    #[inline(never)]
    fn drop(&mut self) {
        let Some(depth) = self.depth else {
            set_unsampled_root(false);
            return;
        };
        let panicking = std::thread::panicking();
        with_local(|local| {
            // Usually the frame is on top: its box is taken back alone.
            let record = match self.span_id.and_then(|id| local.pop_boxed(depth, id)) {
                Some(record) => Some(record),
                None => match take_frame(local, depth, self.span_id) {
                    Some(Frame::Boxed(record)) => Some(record),
                    // The unsampled frame stays in the future; anything else was not ours.
                    _ => None,
                },
            };
            match record {
                Some(mut record) if panicking => {
                    record.fail_on_panic();
                    pipeline::submit_boxed(local, record, clock::now());
                }
                Some(record) => *self.slot = AsyncFrame::Recording(record),
                None => {}
            }
        });
    }
}

/// Ends an async span that completed.
#[inline(never)]
fn finish_async(record: Box<SpanRecord>) {
    let end = clock::now();
    with_local(|local| pipeline::submit_boxed(local, record, end));
}

impl<F: Future, O: FnOnce(&F::Output, &mut Outcome<'_>)> Future for Instrumented<F, O> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved; the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        if matches!(this.frame, AsyncFrame::Inert) {
            return inner.poll(cx);
        }
        let poll = {
            let scope = PollScope::enter(&mut this.frame);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(poll) => poll,
                Err(payload) => match &scope {
                    Some(scope) => scope.unwound(payload),
                    None => std::panic::resume_unwind(payload),
                },
            }
        };
        if let Poll::Ready(output) = &poll
            && let AsyncFrame::Recording(mut record) =
                std::mem::replace(&mut this.frame, AsyncFrame::Inert)
        {
            if let Some(outcome) = this.outcome.take() {
                outcome(
                    output,
                    &mut Outcome {
                        record: Some(&mut record),
                    },
                );
            }
            finish_async(record);
        }
        poll
    }
}

impl<F, O> Drop for Instrumented<F, O> {
    fn drop(&mut self) {
        if let AsyncFrame::Recording(record) = std::mem::replace(&mut self.frame, AsyncFrame::Inert)
        {
            cancel(record);
        }
    }
}

/// Ends the span of a future dropped before it completed: the caller gave up on it (a timeout,
/// a lost `select!`). The call did not succeed, and its result code says why: `cancelled`.
#[inline(never)]
fn cancel(mut record: Box<SpanRecord>) {
    record.success = false;
    let extra = record.extra_mut();
    if extra.result_code.is_none() {
        extra.result_code = Some(Cow::Borrowed("cancelled"));
    }
    with_local(|local| pipeline::submit_boxed(local, record, clock::now()));
}

pub(crate) use panic::{install_hook as install_panic_hook, payload_message};

/// The methods that record what is known only at run time, shared by [`CurrentSpan`] and
/// [`DetachedSpan`]; each type supplies `with`, which runs a closure on its record if any.
macro_rules! span_values {
    ($recording:literal) => {
        #[doc = concat!("Whether ", $recording, ".")]
        pub fn is_recording(&self) -> bool {
            self.with(|_| ()).is_some()
        }

        /// The span's context, for propagation.
        pub fn context(&self) -> Option<SpanContext> {
            self.with(|r| r.context())
        }

        /// Sets the command text: the SQL statement, the URL, the command line.
        pub fn set_data(&self, data: impl Into<Cow<'static, str>>) {
            let data = data.into();
            self.with(|r| r.extra_mut().data = Some(data));
        }

        /// Sets the target (when the attribute leaves it to run time).
        pub fn set_target(&self, target: impl Into<Cow<'static, str>>) {
            let target = target.into();
            self.with(|r| r.extra_mut().target = Some(target));
        }

        /// Renames the operation.
        pub fn set_name(&self, name: impl Into<Cow<'static, str>>) {
            let name = name.into();
            self.with(|r| r.extra_mut().name = Some(name));
        }

        /// Sets the result code (a status code, an error number).
        pub fn set_result_code(&self, code: impl Display) {
            if self.is_recording() {
                let code = code.to_string();
                self.with(|r| r.extra_mut().result_code = Some(Cow::Owned(code)));
            }
        }

        /// Adds a custom property.
        pub fn set_property(&self, key: impl Into<Cow<'static, str>>, value: impl Display) {
            if self.is_recording() {
                let entry = (key.into(), value.to_string());
                self.with(|r| r.extra_mut().properties.push(entry));
            }
        }

        /// Sets whether the operation succeeded.
        pub fn set_success(&self, success: bool) {
            self.with(|r| r.success = success);
        }

        /// Marks the operation failed, with a message.
        pub fn fail(&self, message: impl Display) {
            if self.is_recording() {
                let message = message.to_string();
                self.with(|r| r.fail(Cow::Borrowed("error"), Some(message)));
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The current span, for values known only at run time.

/// The span current on this thread, to record what is known only at run time.
///
/// Every method is a no-op when no span is recording, and cheap: values are formatted only
/// when they will be kept.
///
/// ```
/// use census_runtime::{current_span, dependency};
///
/// #[dependency(kind = "SQL", target = "orders-db")]
/// fn load(id: u64) -> Result<(), std::fmt::Error> {
///     current_span().set_data("SELECT * FROM orders WHERE id = ?");
///     current_span().set_property("order.id", id);
///     Ok(())
/// }
/// # load(7).unwrap();
/// ```
pub fn current_span() -> CurrentSpan {
    CurrentSpan {
        _not_send: PhantomData,
    }
}

/// A handle on the span current on this thread; see [`current_span`].
#[derive(Debug, Clone, Copy)]
pub struct CurrentSpan {
    _not_send: PhantomData<*const ()>,
}

impl CurrentSpan {
    fn with<R>(&self, f: impl FnOnce(&mut SpanRecord) -> R) -> Option<R> {
        if !pipeline::is_active() {
            return None;
        }
        with_local(|local| local.stack.last_mut().and_then(Frame::record_mut).map(f)).flatten()
    }

    span_values!("a span is recording here");
}

// ---------------------------------------------------------------------------------------------
// Spans for code that is not a function.

/// What a builder adds to a span when it starts.
#[derive(Default)]
struct Start {
    remote: Option<SpanContext>,
    operation_name: Option<Arc<str>>,
    extra: Option<Box<SpanExtra>>,
}

impl Start {
    fn apply(self, record: &mut SpanRecord) {
        if self.operation_name.is_some() {
            record.operation_name = self.operation_name;
        }
        record.extra = self.extra;
    }
}

/// Starts describing a span for a block of code; see [`SpanBuilder`].
///
/// ```
/// let total = census_runtime::span("price basket").in_scope(|| 3 * 7);
/// assert_eq!(total, 21);
/// ```
pub fn span(name: impl Into<Cow<'static, str>>) -> SpanBuilder {
    SpanBuilder {
        site: &BUILDER_SITE,
        remote: None,
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
        remote: None,
        operation_name: Some(Arc::from(name.as_ref())),
        extra: SpanExtra {
            name: Some(name),
            ..SpanExtra::default()
        },
    }
}

static BUILDER_SITE: Site = Site::inproc("span").at(module_path!(), file!(), line!());
static REQUEST_SITE: Site = Site::request("request").at(module_path!(), file!(), line!());

/// The `tracestate` that came in with the request this thread is serving, if any.
///
/// ```
/// assert!(census_runtime::current_trace_state().is_none());
/// ```
pub fn current_trace_state() -> Option<Arc<str>> {
    if !pipeline::is_active() {
        return None;
    }
    with_local(|local| {
        local.stack.iter().rev().find_map(|frame| {
            frame
                .record()
                .and_then(|r| r.extra.as_ref())
                .and_then(|e| e.trace_state.clone())
        })
    })
    .flatten()
}

/// A span for a block, a closure or a future; made by [`span`] or [`request`].
#[derive(Debug)]
#[must_use = "a builder does nothing until started"]
pub struct SpanBuilder {
    site: &'static Site,
    remote: Option<SpanContext>,
    operation_name: Option<Arc<str>>,
    extra: SpanExtra,
}

impl SpanBuilder {
    /// The dependency type (default `INPROC`).
    pub fn kind(mut self, kind: &'static str) -> Self {
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
        self.remote = Some(parent);
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

    fn into_start(self) -> Start {
        Start {
            remote: self.remote,
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
        if !pipeline::is_active() {
            return SpanGuard::INERT;
        }
        let site = self.site;
        SpanGuard::enter_slow(site, self.into_start())
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
        if !pipeline::is_active() {
            return DetachedSpan {
                record: Mutex::new(None),
            };
        }
        let site = self.site;
        let start = self.into_start();
        let record = with_local(|local| open(local, site, start.remote))
            .flatten()
            .and_then(|frame| match frame {
                Frame::Span(mut record) => {
                    start.apply(&mut record);
                    Some(record)
                }
                _ => None,
            });
        DetachedSpan {
            record: Mutex::new(record),
        }
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
            guard.fail_with_error(error, std::any::type_name::<E>());
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
    pub fn instrument<F: Future>(
        self,
        future: F,
    ) -> Instrumented<F, impl FnOnce(&F::Output, &mut Outcome<'_>)> {
        let span = if pipeline::is_active() {
            let site = self.site;
            AsyncSpan::start_slow(site, self.into_start())
        } else {
            AsyncSpan::INERT
        };
        span.instrument(future, |_, _| {})
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
        if let Some(record) = record {
            with_local(|local| {
                close(local, record);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("std::io::error::Error"), "Error");
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(short_type_name("u32"), "u32");
        assert_eq!(
            short_type_name("alloc::boxed::Box<dyn core::error::Error>"),
            "Box<dyn Error>"
        );
        assert_eq!(
            short_type_name(
                "core::result::Result<alloc::vec::Vec<my_app::Thing>, std::io::error::Error>"
            ),
            "Result<Vec<Thing>, Error>"
        );
        assert_eq!(
            short_type_name("alloc::boxed::Box<dyn core::error::Error + core::marker::Send>"),
            "Box<dyn Error + Send>"
        );
        assert_eq!(
            short_type_name("(u8, [my_app::Código; 4], &str)"),
            "(u8, [Código; 4], &str)"
        );
    }
}
