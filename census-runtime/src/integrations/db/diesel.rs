//! `diesel` (feature `diesel`), through its `Instrumentation` trait: the counterpart of the
//! reference's SQLAlchemy integration.
//!
//! [`QueryTracer`] receives diesel's query events: a query's start opens a span (a child of the
//! span current on the calling thread) and its finish ends it, failed when diesel reports an
//! error. The system (`postgresql`, `mysql`, `sqlite`) and the target come from the connection
//! URL; the statement is diesel's SQL with its placeholders (diesel's `-- binds: [...]` is cut
//! off, so no bound value is recorded); the result code of a failure is diesel's kind of
//! database error (`UniqueViolation`, `ForeignKeyViolation`, ... `Unknown`), as diesel does not
//! pass on the database's own code.
//!
//! ```
//! use census_runtime::integrations::diesel::QueryTracer;
//! use diesel::connection::{Connection, SimpleConnection};
//!
//! // For every connection established from now on:
//! census_runtime::integrations::diesel::install().expect("diesel's default instrumentation");
//! let mut conn = diesel::SqliteConnection::establish(":memory:").expect("an in-memory database");
//! // Or for one connection:
//! conn.set_instrumentation(QueryTracer::for_url(":memory:"));
//! conn.batch_execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)").unwrap();
//! ```

use std::fmt;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::result::Error;

use super::statement::{self, statement_span};
use crate::span::DetachedSpan;

/// Diesel's `Instrumentation` for census: each query a dependency; see the [module](self).
#[derive(Default)]
pub struct QueryTracer {
    system: Option<&'static str>,
    target: Option<String>,
    /// Queries started and not finished yet, innermost last.
    open: Vec<DetachedSpan>,
}

impl fmt::Debug for QueryTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryTracer")
            .field("system", &self.system)
            .field("target", &self.target)
            .field("open", &self.open.len())
            .finish()
    }
}

impl QueryTracer {
    /// A tracer that learns its system and target from the URL of the connection it sees
    /// established (as the one [`install`] sets for every connection).
    pub fn new() -> QueryTracer {
        QueryTracer::default()
    }

    /// A tracer for a connection to `url` (`postgres://...`, `mysql://...`, or a SQLite file).
    pub fn for_url(url: &str) -> QueryTracer {
        let (system, target) = statement::system_and_target(url);
        QueryTracer {
            system: Some(system),
            target: Some(target),
            open: Vec::new(),
        }
    }
}

/// Sets census's [`QueryTracer`] as diesel's default instrumentation: every connection
/// established afterwards, on any thread, is traced.
///
/// # Errors
///
/// When diesel's default instrumentation cannot be set (its lock was poisoned).
pub fn install() -> Result<(), Error> {
    diesel::connection::set_default_instrumentation(|| Some(Box::new(QueryTracer::new())))
}

/// The result code and message of a failed query.
fn failure(error: &Error) -> Option<(String, String)> {
    match error {
        // Nothing was found: the database answered, the query did not fail.
        Error::NotFound => None,
        Error::DatabaseError(kind, info) => Some((format!("{kind:?}"), info.message().to_owned())),
        other => Some((String::from("error"), other.to_string())),
    }
}

impl Instrumentation for QueryTracer {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartEstablishConnection { url, .. } if self.target.is_none() => {
                let (system, target) = statement::system_and_target(url);
                self.system = Some(system);
                self.target = Some(target);
            }
            InstrumentationEvent::StartQuery { query, .. } => {
                let text = query.to_string();
                let system = self.system.unwrap_or("SQL");
                let target = self.target.clone().unwrap_or_default();
                self.open
                    .push(statement_span(system, target, &text).start_detached());
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                if let Some(span) = self.open.pop() {
                    if let Some((code, message)) = error.and_then(failure) {
                        span.set_result_code(code);
                        span.fail(message);
                    }
                    span.end();
                }
            }
            _ => {}
        }
    }
}
