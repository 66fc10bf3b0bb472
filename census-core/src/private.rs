//! What the attribute macros expand to: a function's span started, its body run inside it, its
//! outcome judged. Not a public API: it changes without notice. The logic lives in the runtime,
//! so that each annotated function carries little code.

use std::fmt::Display;
use std::future::Future;

pub use crate::sampler::{IdSearch, bench_kept_trace_id};
pub use crate::site::{Registered, Site};
pub use crate::span::{AsyncSpan, Call, Judge, Outcome, SiteOf, Traced};
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub use inventory;

/// Starts a sync function's span and makes it current until [`end`].
#[cfg_attr(not(debug_assertions), inline(always))]
pub fn enter(site: &'static Site) -> Call {
    Call::enter(site)
}

/// Runs a sync function's body inside its span: a panic fails the span with its own message,
/// ends the call and is resumed. Taking the body as an `FnOnce` (instead of calling a closure
/// in place, which infers `FnMut`) lets it return borrows of its captured arguments, as
/// `&mut self` getters do.
#[cfg_attr(not(debug_assertions), inline(always))]
pub fn run<R>(call: Call, body: impl FnOnce() -> R) -> R {
    call.run(body)
}

/// Ends a sync function's call, after its body returned and its outcome was judged.
#[cfg_attr(not(debug_assertions), inline(always))]
pub fn end(call: Call) {
    call.end();
}

/// Records the arguments named in the site's `fields(...)`, by `Display`.
#[cfg_attr(not(debug_assertions), inline(always))]
pub fn record_fields(call: &Call, values: &[&dyn Display]) {
    call.record_fields(values);
}

/// Starts an async function's span; it is current on each poll of the future given to
/// [`instrument`].
#[inline]
pub fn start_async(site: &'static Site) -> AsyncSpan {
    AsyncSpan::start(site)
}

/// Records the arguments named in the site's `fields(...)`, by `Display`.
#[inline]
pub fn record_async_fields(span: &mut AsyncSpan, values: &[&dyn Display]) {
    if span.is_recording() {
        span.record_fields(values);
    }
}

/// Runs an async function's body future inside its span; `judge` marks the span from the
/// output; `site` returns the function's site (a closure that captures nothing, so that the
/// future does not store it).
#[inline]
pub fn instrument<F, O, S>(span: AsyncSpan, future: F, judge: O, site: S) -> Traced<F, O, S>
where
    F: Future,
    O: FnOnce(&F::Output, &mut Outcome<'_>),
    S: Fn() -> &'static Site,
{
    span.wrap(future, judge, site)
}

/// Wraps a function's return value so that method resolution can tell a `Result` whose error
/// is a `std::error::Error` (the span fails on `Err`, with the error's `source()`s at hand) from
/// one whose error is only `Display` (the span fails on `Err`) and from any other value (the
/// span succeeds). The generated code calls the methods on `&&&Probe`: the impl for
/// `&&Probe` is found first, then the one for `&Probe`, then the one for `Probe`.
pub struct Probe<'a, T: ?Sized>(pub &'a T);

/// Chosen for `Result<T, E: std::error::Error>`.
pub trait ErrorOutcome {
    /// Ends the sync call, failed on `Err`.
    fn census_end(&self, call: Call);
    /// Fails the async span on `Err`.
    fn census_async(&self, outcome: &mut Outcome<'_>);
}

impl<T, E: std::error::Error + 'static> ErrorOutcome for &&Probe<'_, Result<T, E>> {
    #[inline]
    fn census_end(&self, call: Call) {
        match self.0 {
            Err(error) => call.end_with_error(error),
            Ok(_) => call.end(),
        }
    }

    #[inline]
    fn census_async(&self, outcome: &mut Outcome<'_>) {
        if let Err(error) = self.0 {
            outcome.fail_with_error(error, Some(error), std::any::type_name::<E>());
        }
    }
}

/// Chosen for `Result<T, E: Display>`.
pub trait ResultOutcome {
    /// Ends the sync call, failed on `Err`.
    fn census_end(&self, call: Call);
    /// Fails the async span on `Err`.
    fn census_async(&self, outcome: &mut Outcome<'_>);
}

impl<T, E: Display> ResultOutcome for &Probe<'_, Result<T, E>> {
    #[inline]
    fn census_end(&self, call: Call) {
        match self.0 {
            Err(error) => call.end_with_display(error),
            Ok(_) => call.end(),
        }
    }

    #[inline]
    fn census_async(&self, outcome: &mut Outcome<'_>) {
        if let Err(error) = self.0 {
            outcome.fail_with_error(error, None, std::any::type_name::<E>());
        }
    }
}

/// Chosen for every other return type: nothing to look at.
pub trait PlainOutcome {
    /// Ends the sync call.
    fn census_end(&self, call: Call);
    /// Does nothing.
    fn census_async(&self, outcome: &mut Outcome<'_>);
}

impl<T: ?Sized> PlainOutcome for Probe<'_, T> {
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn census_end(&self, call: Call) {
        call.end();
    }

    #[cfg_attr(not(debug_assertions), inline(always))]
    fn census_async(&self, _outcome: &mut Outcome<'_>) {}
}
