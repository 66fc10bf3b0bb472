//! The span current on this thread, for values known only at run time.

use std::borrow::Cow;
use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::id::{SpanContext, SpanId};
use crate::local::{Frame, with_local};
use crate::record::SpanRecord;
use crate::sampler;

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
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// #[census_runtime::dependency(kind = "HTTP", target = "payments")]
/// fn charge(cents: u64) -> u16 {
///     let status = if cents > 0 { 200 } else { 400 };
///     census_runtime::current_span().set_result_code(status);
///     status
/// }
/// charge(1250);
/// # census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.one("charge").result_code(), Some("200"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CurrentSpan {
    _not_send: PhantomData<*const ()>,
}

impl CurrentSpan {
    fn with<R>(&self, f: impl FnOnce(&mut SpanRecord) -> R) -> Option<R> {
        if !sampler::is_active() {
            return None;
        }
        with_local(|local| local.top_mut().and_then(Frame::record_mut).map(f)).flatten()
    }

    span_values!(
        "a span is recording here",
        "census_runtime::span(\"load\").in_scope(|| {
    let span = census_runtime::current_span();",
        "    ",
        "});"
    );

    /// The context of what is current here, for propagation: the recording span, or the
    /// context carried into this task or thread (see [`Carried`](crate::context::Carried)).
    ///
    /// In a trace that is not recorded, a context that says so (not sampled) with the trace's
    /// id and a fresh span id, so that the services called from here drop it too: the id of a
    /// caller's trace with flag `00`, or, for a trace the sampler dropped here, one drawn now
    /// (the first time it is asked for) that every downstream sampler at the same rate drops.
    ///
    /// ```
    /// use census_runtime::{Sampler, current_span, inproc};
    /// assert!(current_span().context().is_none()); // no pipeline
    /// # let census = census_runtime::pipeline()
    /// #     .exporter(census_runtime::export::MemoryExporter::new())
    /// #     .sampler(Sampler::probability(0.25))
    /// #     .install()
    /// #     .unwrap();
    /// #[inproc]
    /// fn handle() -> Option<census_runtime::SpanContext> {
    ///     current_span().context()
    /// }
    /// let ctx = handle().unwrap();
    /// if !ctx.is_sampled() {
    ///     assert!(Sampler::score(ctx.trace_id()) >= 0.25);
    /// }
    /// ```
    pub fn context(&self) -> Option<SpanContext> {
        if !sampler::is_active() {
            return None;
        }
        with_local(|local| match local.top().and_then(Frame::context) {
            Some(ctx) => Some(ctx),
            None => local
                .unsampled_trace_id()
                .map(|trace_id| SpanContext::new(trace_id, SpanId::random(), false)),
        })
        .flatten()
    }

    /// The W3C `tracestate` of the trace current here, if one came in with it: what outgoing
    /// calls pass on. It comes from the request this thread is serving, or with the context
    /// carried into this task or thread.
    ///
    /// ```
    /// assert!(census_runtime::current_span().trace_state().is_none());
    /// ```
    pub fn trace_state(&self) -> Option<Arc<str>> {
        if !sampler::is_active() {
            return None;
        }
        with_local(|local| local.trace_state()).flatten()
    }
}
