//! Carrying the current context into tasks and threads: what a spawned task or thread takes
//! with it so that its spans nest under the span current where it was made.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::id::{SpanContext, SpanId, TraceId};
use crate::local::{CarriedContext, Frame, with_local};

/// What a task or thread takes with it so that its spans nest under the span current here.
///
/// Capture it with [`Carried::current`] where the work is created and make it current where the
/// work runs, with [`Carried::run`] for a closure or [`Carried::instrument`] for a future.
///
/// ```
/// # use census_runtime::context::Carried;
/// let carried = Carried::current();
/// std::thread::spawn(move || carried.run(|| {
///     // spans started here are children of the span that was current at spawn
/// })).join().unwrap();
/// ```
///
/// In a trace that is not recorded, what is carried says so, with the trace's id (drawn now
/// for a trace the sampler dropped here, if nothing asked for it before): calls made where the
/// work runs pass the decision on with flag `00`. The `tracestate` of the trace goes with it.
#[derive(Clone, Debug)]
pub struct Carried(Option<FrameCopy>);

#[derive(Clone, Debug)]
enum FrameCopy {
    /// A recorded context: the parent, the operation name the spans under it inherit, the
    /// `tracestate`.
    Parent(CarriedContext),
    /// A trace that is not recorded, its id, and the `tracestate` its caller sent.
    Unsampled(TraceId, Option<Arc<str>>),
}

impl Carried {
    /// Captures the current context of this thread.
    ///
    /// ```
    /// use census_runtime::context::Carried;
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let carried = census_runtime::span("checkout").in_scope(Carried::current);
    /// std::thread::spawn(move || carried.run(|| census_runtime::span("charge").in_scope(|| ())))
    ///     .join()
    ///     .unwrap();
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.one("charge").parent_id(), Some(memory.one("checkout").span_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current() -> Self {
        if !crate::sampler::is_active() {
            return Carried(None);
        }
        let copy = with_local(|local| {
            let ctx = match local.top() {
                Some(Frame::Parent(carried)) if carried.ctx.is_sampled() => Some((
                    carried.ctx,
                    carried.operation_name.clone(),
                    carried.sample_rate,
                )),
                Some(frame) => frame.record().map(|record| {
                    (
                        record.context(),
                        record.shared_operation_name(),
                        Some(record.sample_percent()),
                    )
                }),
                None => None,
            };
            match ctx {
                Some((ctx, operation_name, sample_rate)) => {
                    Some(FrameCopy::Parent(CarriedContext {
                        ctx,
                        operation_name,
                        trace_state: local.trace_state(),
                        sample_rate,
                    }))
                }
                None => local
                    .unsampled_trace_id()
                    .map(|trace_id| FrameCopy::Unsampled(trace_id, local.trace_state())),
            }
        })
        .flatten();
        Carried(copy)
    }

    /// A context from a remote parent (for example a parsed `traceparent`): the spans under it
    /// are recorded when it is sampled.
    ///
    /// ```
    /// use census_runtime::context::Carried;
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let parent = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// assert_eq!(Carried::from_context(parent).context(), Some(parent));
    /// ```
    pub fn from_context(ctx: SpanContext) -> Self {
        Carried(Some(if ctx.is_sampled() {
            FrameCopy::Parent(CarriedContext {
                ctx,
                operation_name: None,
                trace_state: None,
                sample_rate: None,
            })
        } else {
            FrameCopy::Unsampled(ctx.trace_id(), None)
        }))
    }

    /// The carried context, if a recorded span was current.
    ///
    /// ```
    /// use census_runtime::context::Carried;
    ///
    /// assert_eq!(Carried::current().context(), None); // nothing is current
    /// ```
    pub fn context(&self) -> Option<SpanContext> {
        match &self.0 {
            Some(FrameCopy::Parent(carried)) => Some(carried.ctx),
            _ => None,
        }
    }

    /// The id of the carried trace, recorded or not.
    ///
    /// ```
    /// # use census_runtime::context::Carried;
    /// assert!(Carried::current().trace_id().is_none()); // nothing is current
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        match &self.0 {
            Some(FrameCopy::Parent(carried)) => Some(carried.ctx.trace_id()),
            Some(FrameCopy::Unsampled(trace_id, _)) => Some(*trace_id),
            None => None,
        }
    }

    /// The carried `tracestate`, if one came in with the trace.
    ///
    /// ```
    /// use census_runtime::context::Carried;
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let parent = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// assert_eq!(Carried::from_context(parent).trace_state(), None); // none came with it
    /// ```
    pub fn trace_state(&self) -> Option<&str> {
        match &self.0 {
            Some(FrameCopy::Parent(carried)) => carried.trace_state.as_deref(),
            Some(FrameCopy::Unsampled(_, state)) => state.as_deref(),
            None => None,
        }
    }

    fn frame(&self) -> Option<Frame> {
        self.0.as_ref().map(|copy| match copy {
            FrameCopy::Parent(carried) => Frame::Parent(carried.clone()),
            FrameCopy::Unsampled(trace_id, None) => Frame::Unsampled(Some(*trace_id)),
            // A context not recorded, which its calls pass the state on in.
            FrameCopy::Unsampled(trace_id, Some(state)) => Frame::Parent(CarriedContext {
                ctx: SpanContext::new(*trace_id, SpanId::random(), false),
                operation_name: None,
                trace_state: Some(Arc::clone(state)),
                sample_rate: None,
            }),
        })
    }

    /// Runs `f` with the carried context current.
    ///
    /// ```
    /// use census_runtime::context::Carried;
    /// use census_runtime::export::MemoryExporter;
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let parent = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// let total = Carried::from_context(parent).run(|| {
    ///     census_runtime::span("price basket").in_scope(|| 6 * 7)
    /// });
    /// census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(total, 42);
    /// let span = memory.one("price basket");
    /// assert_eq!((span.trace_id(), span.parent_id()), (parent.trace_id(), Some(parent.span_id())));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(frame) = self.frame() else {
            return f();
        };
        let _entered = Entered::push(frame);
        f()
    }

    /// Wraps a future so that the carried context is current each time it is polled.
    ///
    /// ```
    /// use census_runtime::context::Carried;
    /// use census_runtime::export::MemoryExporter;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// // Carried out of the span, and polled after it ended.
    /// let carried = census_runtime::span("checkout").in_scope(Carried::current);
    /// let charge = async { census_runtime::span("charge").in_scope(|| 42) };
    /// assert_eq!(runtime.block_on(runtime.spawn(carried.instrument(charge)))?, 42);
    /// census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("charge").parent_id(), Some(memory.one("checkout").span_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn instrument<F: Future>(self, future: F) -> WithContext<F> {
        WithContext {
            carried: self,
            inner: future,
        }
    }
}

/// Pops a pushed frame when dropped, unwinding included.
struct Entered {
    depth: usize,
}

impl Entered {
    fn push(frame: Frame) -> Entered {
        let depth = with_local(|local| local.push(frame)).unwrap_or(usize::MAX);
        Entered { depth }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.depth == usize::MAX {
            return;
        }
        with_local(|local| local.remove_at(self.depth));
    }
}

pin_project! {
    /// A future run with a carried context current on every poll; see [`Carried::instrument`]
    /// and [`FutureExt::in_current_span`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct WithContext<F> {
        carried: Carried,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match this.carried.frame() {
            Some(frame) => {
                let _entered = Entered::push(frame);
                this.inner.poll(cx)
            }
            None => this.inner.poll(cx),
        }
    }
}

/// Carrying the current span into futures that run elsewhere.
///
/// ```
/// use census_runtime::context::FutureExt;
/// use census_runtime::export::MemoryExporter;
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// let charge = census_runtime::span("checkout")
///     .in_scope(|| async { census_runtime::span("charge").in_scope(|| 2 + 2) }.in_current_span());
/// assert_eq!(runtime.block_on(runtime.spawn(charge))?, 4);
/// census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.one("charge").parent_id(), Some(memory.one("checkout").span_id()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait FutureExt: Future + Sized {
    /// Makes the span current here the parent of the spans this future starts, wherever it is
    /// polled: use it on futures handed to `tokio::spawn`.
    ///
    /// ```
    /// use census_runtime::context::FutureExt;
    /// # async fn work() {}
    /// # async fn demo() {
    /// tokio::spawn(work().in_current_span());
    /// # }
    /// ```
    fn in_current_span(self) -> WithContext<Self> {
        Carried::current().instrument(self)
    }
}

impl<F: Future> FutureExt for F {}

/// Spawns a thread whose spans nest under the span current here.
///
/// ```
/// use census_runtime::export::MemoryExporter;
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// let handle = census_runtime::span("checkout").in_scope(|| {
///     census_runtime::context::spawn_thread(|| census_runtime::span("charge").in_scope(|| 2 + 2))
/// });
/// assert_eq!(handle.join().unwrap(), 4);
/// census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.one("charge").parent_id(), Some(memory.one("checkout").span_id()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn_thread<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let carried = Carried::current();
    std::thread::spawn(move || carried.run(f))
}
