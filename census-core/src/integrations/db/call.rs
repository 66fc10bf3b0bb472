//! How every database integration records a call: the database it goes to ([`Target`]), the
//! span that records it ([`Call`], which also runs a driver's call inside that span and fails it
//! on error), a driver's error as result code and message ([`DriverError`]), and the spans of
//! statements a driver announces in one callback and ends in another ([`OpenSpans`]).

// Each driver uses a part: the wrappers run calls, the event handlers keep open spans.
#![cfg_attr(
    not(all(
        feature = "tokio-postgres",
        feature = "mysql_async",
        feature = "rusqlite",
        feature = "diesel",
        feature = "sqlx",
        feature = "mongodb"
    )),
    allow(dead_code)
)]

use std::borrow::{Borrow, Cow};
use std::fmt::{self, Display};
use std::future::Future;
use std::sync::Arc;

use super::statement::{operation_name, strip_binds, system_and_target};
use crate::span::{DetachedSpan, SpanBuilder, current_span, span};

/// The system (`postgresql`, `mysql`, `sqlite`) and the target (`host:port | database`) of a
/// database's dependencies. With `sqlx`, `on(executor)` records every query run through the
/// executor with them.
///
/// ```
/// use census_runtime::integrations::sqlx::Target;
///
/// let orders_db = Target::from_url("postgres://app:secret@db.internal/orders");
/// assert_eq!(orders_db.system(), "postgresql");
/// assert_eq!(orders_db.target(), "db.internal:5432 | orders");
/// ```
#[derive(Clone, Debug)]
pub struct Target {
    system: &'static str,
    target: Arc<str>,
}

impl Target {
    /// The system and target of a connection URL (`postgres://`, `mysql://`, `sqlite:` or a
    /// SQLite file); the user name and password are left out.
    ///
    /// ```
    /// use census_runtime::integrations::sqlx::Target;
    ///
    /// let target = Target::from_url("mysql://app:secret@127.0.0.1:3307/shop");
    /// assert_eq!((target.system(), target.target()), ("mysql", "127.0.0.1:3307 | shop"));
    /// ```
    pub fn from_url(url: &str) -> Target {
        let (system, target) = system_and_target(url);
        Target::new(system, target)
    }

    /// A system (`postgresql`, `mysql`, `sqlite`) and a target (`host:port | database`).
    ///
    /// ```
    /// use census_runtime::integrations::sqlx::Target;
    ///
    /// let target = Target::new("postgresql", "orders-primary:5432 | orders");
    /// assert_eq!(target.target(), "orders-primary:5432 | orders");
    /// ```
    pub fn new(system: &'static str, target: impl Into<Arc<str>>) -> Target {
        Target {
            system,
            target: target.into(),
        }
    }

    /// The dependencies' `type`.
    ///
    /// ```
    /// use census_runtime::integrations::sqlx::Target;
    ///
    /// let target = Target::from_url("mysql://app@db.internal/shop");
    /// assert_eq!(target.system(), "mysql");
    /// ```
    pub fn system(&self) -> &'static str {
        self.system
    }

    /// The dependencies' target.
    ///
    /// ```
    /// use census_runtime::integrations::sqlx::Target;
    ///
    /// let target = Target::from_url("postgres://app@db.internal:6432/orders");
    /// assert_eq!(target.target(), "db.internal:6432 | orders");
    /// ```
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether `other` is this very target (a clone of it), not only an equal one: a cheap test
    /// for code that keeps the target it saw last.
    pub(crate) fn is(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.target, &other.target) && self.system == other.system
    }

    /// A call that runs `sql` here; see [`Call::statement`].
    pub(crate) fn statement(&self, sql: &str) -> Call {
        Call::statement(self.system, self.target.to_string(), sql)
    }

    /// A call here whose statement the driver does not show: named `name`, with no data.
    pub(crate) fn named(&self, name: &'static str) -> Call {
        Call::new(self.system, self.target.to_string(), name, None)
    }
}

/// One call to a database, not started yet: the span that will record it.
pub(crate) struct Call {
    span: SpanBuilder,
}

impl Call {
    /// A call of `system` to `target`, named `name`, with `data` as its command text.
    pub(crate) fn new(
        system: &'static str,
        target: impl Into<Cow<'static, str>>,
        name: impl Into<Cow<'static, str>>,
        data: Option<String>,
    ) -> Call {
        let span = span(name).kind(system).target(target);
        Call {
            span: match data {
                Some(data) => span.data(data),
                None => span,
            },
        }
    }

    /// A call that runs `sql`: named after its operation (`SELECT orders`), the statement
    /// without the bound values an ORM appends to it as data.
    pub(crate) fn statement(
        system: &'static str,
        target: impl Into<Cow<'static, str>>,
        sql: &str,
    ) -> Call {
        let sql = strip_binds(sql);
        Call::new(system, target, operation_name(sql), Some(sql.to_owned()))
    }

    /// Runs a driver's async call inside the call's span, which starts now, is current while the
    /// call is polled, and ends when it completes (failed by its error, see [`DriverError`]) or
    /// is dropped before (not succeeded, result code `cancelled`).
    pub(crate) fn run<T, E: DriverError>(
        self,
        call: impl Future<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, E>> {
        self.span.instrument(async move {
            let result = call.await;
            fail_current(&result);
            result
        })
    }

    /// Runs a driver's blocking call inside the call's span, current until the call returns,
    /// failed by its error.
    pub(crate) fn run_blocking<T, E: DriverError>(
        self,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let _span = self.span.start();
        let result = call();
        fail_current(&result);
        result
    }

    /// Starts the call's span without making it current: for a call that a driver announces in
    /// one callback and ends in another, or whose rows are read after it returns.
    pub(crate) fn start_detached(self) -> DetachedSpan {
        self.span.start_detached()
    }
}

/// Fails the current span (the call's own, while it runs) by the call's error.
fn fail_current<T, E: DriverError>(result: &Result<T, E>) {
    let span = current_span();
    // The failure is described only when it will be kept.
    if let Err(error) = result
        && span.is_recording()
        && let Some(failure) = error.failure()
    {
        if let Some(code) = failure.code {
            span.set_result_code(code);
        }
        span.fail(failure.message);
    }
}

/// Fails a detached call's span by the call's error.
pub(crate) fn fail_detached(span: &DetachedSpan, error: &impl DriverError) {
    if span.is_recording()
        && let Some(failure) = error.failure()
    {
        failure.record_on(span);
    }
}

/// What a failed call records: the database's own code for the error when it gave one
/// (SQLSTATE, MySQL's error number, SQLite's extended result code, MongoDB's code; else the
/// result code is `error`), and a message that quotes no bound value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    code: Option<String>,
    message: String,
}

impl Failure {
    /// A failure the database gave a code for.
    pub(crate) fn coded(code: impl Display, message: impl Display) -> Failure {
        Failure {
            code: Some(code.to_string()),
            message: message.to_string(),
        }
    }

    /// A failure with no code of the database's (a closed connection, a timeout, a driver's
    /// own error): result code `error`.
    pub(crate) fn uncoded(message: impl Display) -> Failure {
        Failure {
            code: None,
            message: message.to_string(),
        }
    }

    /// Fails `span` with this failure.
    pub(crate) fn record_on(self, span: &DetachedSpan) {
        if let Some(code) = self.code {
            span.set_result_code(code);
        }
        span.fail(self.message);
    }
}

/// A driver's error, as a failed call records it.
pub(crate) trait DriverError {
    /// The failure to record; none when the error is no failure of the database (a query
    /// that found no row: the database answered).
    fn failure(&self) -> Option<Failure>;
}

/// The spans of statements a driver announced and has not finished yet, innermost last, each
/// found again by a key that its finishing event carries too (SQLite's statement text, diesel's
/// query depth, MongoDB's request id). Only spans that record are kept: one that does not ends
/// with nothing to send, and keeping it would cost for nothing.
pub(crate) struct OpenSpans<K, S = DetachedSpan> {
    open: Vec<(K, S)>,
}

impl<K, S> OpenSpans<K, S> {
    pub(crate) const fn new() -> Self {
        OpenSpans { open: Vec::new() }
    }

    /// How many spans are open.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    fn keep(&mut self, key: K, span: S) {
        self.open.push((key, span));
    }

    /// The innermost open span started with `key`, taken out to be ended.
    pub(crate) fn finish<Q>(&mut self, key: &Q) -> Option<S>
    where
        K: Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        let index = self.open.iter().rposition(|(k, _)| k.borrow() == key)?;
        Some(self.open.remove(index).1)
    }
}

impl<K> OpenSpans<K> {
    /// Keeps a started span, when it records, until [`finish`](Self::finish) with its key (made
    /// only then).
    pub(crate) fn start(&mut self, key: impl Into<K>, span: DetachedSpan) {
        if span.is_recording() {
            self.keep(key.into(), span);
        }
    }
}

impl<K, S> Default for OpenSpans<K, S> {
    fn default() -> Self {
        OpenSpans::new()
    }
}

impl<K, S> fmt::Debug for OpenSpans<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSpans")
            .field("open", &self.open.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_span_of_a_key_is_finished_first() {
        let mut open: OpenSpans<String, &str> = OpenSpans::new();
        open.keep("SELECT 1".to_owned(), "outer select");
        open.keep("UPDATE orders".to_owned(), "update");
        open.keep("SELECT 1".to_owned(), "inner select");
        assert_eq!(open.finish("SELECT 1"), Some("inner select"));
        assert_eq!(open.finish("SELECT 2"), None);
        assert_eq!(open.finish("SELECT 1"), Some("outer select"));
        assert_eq!(open.len(), 1);
        assert_eq!(open.finish("UPDATE orders"), Some("update"));
        assert_eq!(open.finish("UPDATE orders"), None);
    }

    #[test]
    fn a_span_that_does_not_record_is_not_kept() {
        // No pipeline is installed in unit tests: nothing records.
        let mut open: OpenSpans<i32> = OpenSpans::new();
        open.start(7, crate::span::span("find orders").start_detached());
        assert_eq!(open.len(), 0);
        assert!(open.finish(&7).is_none());
    }

    #[test]
    fn a_target_is_the_very_one_only_when_cloned() {
        let target = Target::from_url("mysql://app:secret@127.0.0.1/shop");
        assert!(target.is(&target.clone()));
        assert!(!target.is(&Target::new("mysql", "127.0.0.1:3306 | shop")));
        assert!(!target.is(&Target::new("sqlite", target.target.clone())));
    }
}
