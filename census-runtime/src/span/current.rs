//! The span current on this thread, for values known only at run time.

use std::borrow::Cow;
use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::id::SpanContext;
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

    span_values!("a span is recording here");

    /// The context of what is current here, for propagation: the recording span, or the
    /// context carried into this task or thread (see [`Carried`](crate::context::Carried)).
    ///
    /// ```
    /// assert!(census_runtime::current_span().context().is_none());
    /// ```
    pub fn context(&self) -> Option<SpanContext> {
        if !sampler::is_active() {
            return None;
        }
        with_local(|local| local.top().and_then(Frame::context)).flatten()
    }

    /// The W3C `tracestate` that came in with the request this thread is serving, if any:
    /// what outgoing calls pass on.
    ///
    /// ```
    /// assert!(census_runtime::current_span().trace_state().is_none());
    /// ```
    pub fn trace_state(&self) -> Option<Arc<str>> {
        if !sampler::is_active() {
            return None;
        }
        with_local(|local| {
            local.frames().rev().find_map(|frame| {
                frame
                    .record()
                    .and_then(SpanRecord::extra)
                    .and_then(|e| e.trace_state.clone())
            })
        })
        .flatten()
    }
}
