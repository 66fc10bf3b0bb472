//! # census
//!
//! Compile-time instrumentation for Rust services, shipped as Azure Application Insights
//! telemetry.
//!
//! Annotate a function, a method or a whole `impl` block, and every call becomes a span: it opens
//! and closes around the call, nests under the caller's span (across `.await` too), and fails on
//! `Err` or panic. A lightweight runtime samples whole traces, records spans on a per-thread hot
//! path and exports them on a worker of its own.
//!
//! ```
//! use census_runtime::{dependency, inproc, MemoryExporter, Sampler};
//! use std::time::Duration;
//!
//! struct Orders;
//!
//! #[dependency(kind = "SQL", target = "orders-db")]
//! impl Orders {
//!     fn get(&self, id: u64) -> Result<u64, String> {
//!         if id == 0 { Err("no order 0".into()) } else { Ok(id * 10) }
//!     }
//! }
//!
//! #[inproc]
//! fn checkout(orders: &Orders) -> Result<u64, String> {
//!     orders.get(7)
//! }
//!
//! let memory = MemoryExporter::new();
//! let census = census_runtime::pipeline()
//!     .sampler(Sampler::always())
//!     .cloud_role("orders-api")
//!     .exporter(memory.clone())
//!     .install()?;
//!
//! checkout(&Orders).unwrap();
//! census.flush(Duration::from_secs(5)).unwrap();
//!
//! let parent = memory.one("checkout");
//! let child = memory.one("Orders::get");
//! assert_eq!(child.parent_id(), Some(parent.span_id()));
//! assert_eq!((child.kind(), child.target()), ("SQL", Some("orders-db")));
//! # Ok::<(), census_runtime::ConfigError>(())
//! ```
//!
//! ## The attributes
//!
//! - `#[inproc]`, `#[inproc(name = "...")]`: an in-process dependency (`type` `INPROC`).
//! - `#[dependency(kind = "...", target = "...")]`, with `name = "..."`, `data = "..."` (a static
//!   command text), `fields(arg, ...)` (record those arguments as properties, by `Display`),
//!   and `crate = path` (where census is renamed).
//! - On an `impl` block, every method is instrumented; a method may carry its own attribute to
//!   override the block's, or `#[dependency(skip)]` / `#[inproc(skip)]` to opt out.
//!
//! What is known only at run time goes through [`current_span`].
//!
//! ## Without a pipeline
//!
//! Until [`pipeline()`]`.install()` is called, an annotated call costs one relaxed atomic load:
//! no clock read, no id, no allocation.

#![warn(missing_docs)]

mod clock;
mod context;
mod diagnostics;
mod export;
pub mod integrations;
mod pipeline;
pub mod propagation;
mod sampler;
mod site;
mod span;

pub use census_macros::{dependency, inproc};
pub use context::{
    Carried, FutureExt, SpanContext, SpanId, TraceId, WithContext, current_context, spawn_thread,
};
pub use diagnostics::{Diagnostics, diagnostics};
#[cfg(feature = "azure")]
pub use export::{
    AzureExporter, AzureExporterBuilder, CONNECTION_STRING_ENV, ConnectionString,
    ConnectionStringError,
};
pub use export::{ConsoleExporter, Exporter, MemoryExporter, Resource};
pub use pipeline::{
    ConfigError, FlushError, Pipeline, PipelineBuilder, flush, is_installed, pipeline,
};
pub use sampler::{Sampler, sample_score};
pub use site::{INPROC, Site, SpanKind, sites};
pub use span::{
    CurrentSpan, DetachedSpan, ExceptionInfo, Instrumented, SpanBuilder, SpanGuard, SpanRecord,
    current_span, current_trace_state, request, span,
};

/// What the attribute macros expand to. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::site::{Registered, Site};
    pub use crate::span::{AsyncSpan, Instrumented, Outcome, SpanGuard};
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub use inventory;

    use std::fmt::Display;

    /// Runs a sync function's body inside its span: a panic fails the span with its own
    /// message and is resumed. Taking the body as an `FnOnce` (instead of calling a closure in
    /// place, which infers `FnMut`) lets it return borrows of its captured arguments, as
    /// `&mut self` getters do.
    #[inline(always)]
    pub fn run<R>(guard: &SpanGuard, body: impl FnOnce() -> R) -> R {
        guard.run(body)
    }

    /// Wraps a function's return value so that method resolution can tell a `Result` whose error
    /// is `Display` (the span fails on `Err`) from any other value (the span succeeds).
    pub struct Probe<'a, T: ?Sized>(pub &'a T);

    /// Chosen for `Result<T, E: Display>`.
    pub trait ResultOutcome {
        /// Fails the sync span on `Err`.
        fn census_sync(&self, guard: &SpanGuard);
        /// Fails the async span on `Err`.
        fn census_async(&self, outcome: &mut Outcome<'_>);
    }

    impl<T, E: Display> ResultOutcome for Probe<'_, Result<T, E>> {
        #[inline]
        fn census_sync(&self, guard: &SpanGuard) {
            if let Err(error) = self.0 {
                guard.fail_with_error(error, std::any::type_name::<E>());
            }
        }

        #[inline]
        fn census_async(&self, outcome: &mut Outcome<'_>) {
            if let Err(error) = self.0 {
                outcome.fail_with_error(error, std::any::type_name::<E>());
            }
        }
    }

    /// Chosen for every other return type: nothing to look at.
    pub trait PlainOutcome {
        /// Does nothing.
        fn census_sync(&self, guard: &SpanGuard);
        /// Does nothing.
        fn census_async(&self, outcome: &mut Outcome<'_>);
    }

    impl<T: ?Sized> PlainOutcome for &Probe<'_, T> {
        #[inline(always)]
        fn census_sync(&self, _guard: &SpanGuard) {}

        #[inline(always)]
        fn census_async(&self, _outcome: &mut Outcome<'_>) {}
    }
}
