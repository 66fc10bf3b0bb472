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

use super::call::{Call, DriverError, Failure, OpenSpans, Target, fail_detached};

/// Diesel's `Instrumentation` for census: each query a dependency; see the [module](self).
///
/// ```
/// use census_runtime::integrations::diesel::QueryTracer;
/// use diesel::connection::{Connection, SimpleConnection};
///
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// let mut conn = diesel::SqliteConnection::establish(":memory:")?;
/// conn.set_instrumentation(QueryTracer::for_url(":memory:"));
/// conn.batch_execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")?;
/// # census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.spans()[0].kind(), "sqlite");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct QueryTracer {
    target: Option<Target>,
    /// How many queries have started and not finished: the innermost one's key (diesel
    /// finishes its queries innermost first, and its finish event names the query only as
    /// text to be formatted again).
    depth: usize,
    open: OpenSpans<usize>,
}

impl fmt::Debug for QueryTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryTracer")
            .field("system", &self.target.as_ref().map(Target::system))
            .field("target", &self.target.as_ref().map(Target::target))
            .field("open", &self.open.len())
            .finish()
    }
}

impl QueryTracer {
    /// A tracer that learns its system and target from the URL of the connection it sees
    /// established (as the one [`install`] sets for every connection).
    ///
    /// ```
    /// use census_runtime::integrations::diesel::QueryTracer;
    /// use diesel::connection::Connection;
    ///
    /// // Set before the connection is established, it learns the target from its URL.
    /// diesel::connection::set_default_instrumentation(|| Some(Box::new(QueryTracer::new())))?;
    /// let conn = diesel::SqliteConnection::establish(":memory:")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> QueryTracer {
        QueryTracer::default()
    }

    /// A tracer for a connection to `url` (`postgres://...`, `mysql://...`, or a SQLite file).
    ///
    /// ```
    /// use census_runtime::integrations::diesel::QueryTracer;
    /// use diesel::connection::Connection;
    ///
    /// let file = std::env::temp_dir().join("census-doc-orders.db");
    /// let url = file.to_str().expect("a path in UTF-8");
    /// let mut conn = diesel::SqliteConnection::establish(url)?;
    /// conn.set_instrumentation(QueryTracer::for_url(url));
    /// # drop(conn);
    /// # std::fs::remove_file(&file)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_url(url: &str) -> QueryTracer {
        QueryTracer {
            target: Some(Target::from_url(url)),
            ..QueryTracer::default()
        }
    }
}

/// Sets census's [`QueryTracer`] as diesel's default instrumentation: every connection
/// established afterwards, on any thread, is traced.
///
/// # Errors
///
/// When diesel's default instrumentation cannot be set (its lock was poisoned).
///
/// ```
/// use diesel::connection::{Connection, SimpleConnection};
///
/// census_runtime::integrations::diesel::install()?;
/// // Traced from the start, whatever thread establishes it.
/// let mut conn = diesel::SqliteConnection::establish(":memory:")?;
/// conn.batch_execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn install() -> Result<(), Error> {
    diesel::connection::set_default_instrumentation(|| Some(Box::new(QueryTracer::new())))
}

/// diesel's kind of database error (`UniqueViolation`, `ForeignKeyViolation`, ... `Unknown`),
/// as it passes on no database's code, and the database's message; any other error: diesel's
/// message. Nothing found is no failure: the database answered.
impl DriverError for Error {
    fn failure(&self) -> Option<Failure> {
        match self {
            Error::NotFound => None,
            Error::DatabaseError(kind, info) => {
                Some(Failure::coded(format_args!("{kind:?}"), info.message()))
            }
            other => Some(Failure::uncoded(other)),
        }
    }
}

impl Instrumentation for QueryTracer {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartEstablishConnection { url, .. } if self.target.is_none() => {
                self.target = Some(Target::from_url(url));
            }
            InstrumentationEvent::StartQuery { query, .. } => {
                let text = query.to_string();
                let call = match &self.target {
                    Some(target) => target.statement(&text),
                    None => Call::statement("SQL", "", &text),
                };
                self.depth += 1;
                self.open.start(self.depth, call.start_detached());
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                let finished = self.open.finish(&self.depth);
                self.depth = self.depth.saturating_sub(1);
                if let Some(span) = finished {
                    if let Some(error) = error {
                        fail_detached(&span, error);
                    }
                    span.end();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::DatabaseErrorKind;

    use super::*;

    #[test]
    fn a_failure_is_diesels_kind_of_error_and_nothing_found_is_none() {
        let duplicate = Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new(String::from("UNIQUE constraint failed: orders.note")),
        );
        assert_eq!(
            duplicate.failure(),
            Some(Failure::coded(
                "UniqueViolation",
                "UNIQUE constraint failed: orders.note"
            ))
        );
        assert_eq!(Error::NotFound.failure(), None);
        assert_eq!(
            Error::RollbackTransaction.failure(),
            Some(Failure::uncoded(Error::RollbackTransaction))
        );
    }
}
