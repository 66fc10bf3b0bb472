//! The runtime of census: spans and the sampling of their traces, the export pipeline and its
//! exporters (Application Insights among them), context propagation, and the integrations with
//! HTTP, database, `log`, `tracing` and `metrics` crates.
//!
//! Applications depend on [census-runtime](https://docs.rs/census-runtime) instead, which
//! re-exports everything here beside the attributes (`#[inproc]`, `#[dependency]`), and where it
//! is documented: the examples in this crate's docs are written against it. The runtime is a
//! crate of its own so that it compiles beside the attributes' parser (syn) rather than after it.
//!
//! ```
//! // The same items, under the name applications use.
//! use census_runtime::{Sampler, SpanId, TraceId, pipeline};
//!
//! let builder = pipeline().sampler(Sampler::probability(0.25));
//! # let _ = (builder, TraceId::random(), SpanId::random());
//! ```

#![warn(missing_docs)]
// docs.rs builds with `--cfg docsrs` and marks what each feature adds.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The hot path is `#[inline(always)]` in optimised builds only, as
// `#[cfg_attr(not(debug_assertions), inline(always))]`: in a debug build the attribute copied the
// whole start and end of a call into every instrumented function (600 lines of LLVM IR each, where
// a call is 114), and building a crate of 500 such functions took 2.5 s instead of 1.8 to 2.1 s.

mod backtrace;
mod clock;
mod diagnostics;
mod hot;
mod id;
mod local;
mod metric;
mod queue;
mod record;
mod sampler;
mod standard;
mod telemetry;
mod text;

#[cfg(feature = "azure")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub mod azure;
pub mod context;
pub mod export;
pub mod integrations;
pub mod pipeline;
pub mod propagation;
pub mod site;
pub mod span;

/// What the attribute macros expand to. Not a public API: it changes without notice.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use crate::id::{SpanContext, SpanId, TraceId};
pub use crate::pipeline::pipeline;
pub use crate::sampler::Sampler;
pub use crate::span::{current_span, request, span};
pub use crate::telemetry::event;
