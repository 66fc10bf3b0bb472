//! SQLite through `rusqlite` (feature `rusqlite`).
//!
//! [`Connection`] wraps a `rusqlite::Connection` and registers SQLite's `trace_v2` statement and
//! profile events on it, so every statement it runs is a `sqlite` dependency: a statement
//! starts a span (a child of the span current on the calling thread) and its profile event ends
//! it, whichever rusqlite API ran it (`prepare` and `query_map`, `prepare_cached`, a
//! transaction's `commit`, ...). SQLite's events carry no error, so the calls that return the
//! statement's own `Result` ([`Connection::execute`], [`Connection::execute_batch`],
//! [`Connection::query_row`], [`Connection::prepare`] and the same on [`Transaction`]) own their
//! span instead, and a failure marks it failed with SQLite's extended result code (`1` for
//! `SQLITE_ERROR`, `2067` for a unique constraint, ...).
//!
//! The statement recorded is the one SQLite prepared, with its placeholders: never the values
//! bound to it. The target is the database file (`:memory:` for an in-memory database).
//!
//! ```
//! use census_runtime::integrations::rusqlite::Connection;
//!
//! let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
//! conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
//! // A `sqlite` dependency "INSERT orders", data "INSERT INTO orders (total) VALUES (?1)".
//! conn.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
//! // Any other rusqlite call goes through `Deref` and is traced by SQLite's events.
//! let mut statement = conn.prepare_cached("SELECT total FROM orders")?;
//! let totals: Vec<i64> = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
//! assert_eq!(totals, [42]);
//! # Ok::<(), rusqlite::Error>(())
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;

use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{Params, Row};

use super::call::{Call, DriverError, Failure, OpenSpans, Target};

/// The `type` of SQLite dependencies.
pub const SYSTEM: &str = "sqlite";

thread_local! {
    /// The target of the connection last used on this thread: SQLite's events do not say which
    /// connection they come from.
    static TARGET: RefCell<Option<Target>> = const { RefCell::new(None) };
    /// How many calls that own their span are running on this thread; their statements'
    /// events are not spans of their own.
    static OWNED: Cell<usize> = const { Cell::new(0) };
    /// The statements started on this thread and not finished yet, by their text: SQLite
    /// announces a statement and reports its end in two events that carry only the statement.
    static OPEN: RefCell<OpenSpans<String>> = const { RefCell::new(OpenSpans::new()) };
}

fn remember_target(target: &Target) {
    TARGET.with(|t| {
        let mut t = t.borrow_mut();
        if t.as_ref().is_none_or(|old| !old.is(target)) {
            *t = Some(target.clone());
        }
    });
}

fn on_trace(event: TraceEvent<'_>) {
    if OWNED.with(Cell::get) > 0 {
        return;
    }
    match event {
        TraceEvent::Stmt(statement, _) => {
            let sql = statement.sql();
            // A trigger's sub-program is announced by a comment; it is part of its statement.
            if sql.trim_start().starts_with("--") {
                return;
            }
            let call = TARGET.with(|t| match t.borrow().as_ref() {
                Some(target) => target.statement(&sql),
                None => Call::statement(SYSTEM, SYSTEM, &sql),
            });
            let span = call.start_detached();
            OPEN.with(|open| open.borrow_mut().start(sql, span));
        }
        TraceEvent::Profile(statement, _) => {
            let sql = statement.sql();
            let finished = OPEN.with(|open| open.borrow_mut().finish(&*sql));
            if let Some(span) = finished {
                span.end();
            }
        }
        _ => {}
    }
}

/// SQLite's extended result code (`1` for `SQLITE_ERROR`, `2067` for a unique constraint) and
/// its message. A query that found no row ran fine: it is no failure of the database.
impl DriverError for rusqlite::Error {
    fn failure(&self) -> Option<Failure> {
        match self {
            rusqlite::Error::QueryReturnedNoRows => None,
            rusqlite::Error::SqliteFailure(failure, message) => Some(match message {
                Some(message) => Failure::coded(failure.extended_code, message),
                None => Failure::coded(failure.extended_code, failure),
            }),
            other => Some(Failure::uncoded(other)),
        }
    }
}

/// Runs a call that returns its statement's `Result` in a span of its own: the statement's
/// events, which carry no error, are not spans while it runs.
fn owned_call<T>(
    target: &Target,
    sql: &str,
    f: impl FnOnce() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    struct Owned;
    impl Drop for Owned {
        fn drop(&mut self) {
            OWNED.with(|o| o.set(o.get().saturating_sub(1)));
        }
    }
    target.statement(sql).run_blocking(|| {
        OWNED.with(|o| o.set(o.get() + 1));
        let _owned = Owned;
        f()
    })
}

/// The target of a connection: its database file, `:memory:` for an in-memory database.
fn target_of(conn: &rusqlite::Connection) -> Target {
    match conn.path() {
        Some(path) if !path.is_empty() => Target::new(SYSTEM, path),
        _ => Target::new(SYSTEM, ":memory:"),
    }
}

/// The calls [`Connection`] and [`Transaction`] both trace, on their `inner` (a connection, or a
/// transaction, which derefs to one) and their `target`.
macro_rules! traced_calls {
    () => {
        /// Runs one statement; see [`rusqlite::Connection::execute`].
        ///
        /// ```
        /// use census_runtime::integrations::rusqlite::Connection;
        ///
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
        /// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
        /// conn.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// let insert = memory.one("INSERT orders");
        /// assert_eq!((insert.kind(), insert.data()), ("sqlite", Some("INSERT INTO orders (total) VALUES (?1)")));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn execute<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
            remember_target(&self.target);
            owned_call(&self.target, sql, || self.inner.execute(sql, params))
        }

        /// Runs statements separated by semicolons, without parameters: one dependency for the
        /// batch; see [`rusqlite::Connection::execute_batch`].
        ///
        /// ```
        /// use census_runtime::integrations::rusqlite::Connection;
        ///
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
        /// // One dependency for the batch.
        /// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY); CREATE TABLE carts (id INTEGER)")?;
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.spans().len(), 1);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn execute_batch(&self, sql: &str) -> rusqlite::Result<()> {
            remember_target(&self.target);
            owned_call(&self.target, sql, || self.inner.execute_batch(sql))
        }

        /// Runs a query for its first row; see [`rusqlite::Connection::query_row`].
        ///
        /// ```
        /// use census_runtime::integrations::rusqlite::Connection;
        ///
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
        /// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
        /// conn.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
        /// let total: i64 = conn.query_row("SELECT total FROM orders WHERE id = ?1", [1], |row| row.get(0))?;
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(total, 42);
        /// assert_eq!(memory.one("SELECT orders").data(), Some("SELECT total FROM orders WHERE id = ?1"));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
        where
            P: Params,
            F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
        {
            remember_target(&self.target);
            owned_call(&self.target, sql, || self.inner.query_row(sql, params, f))
        }

        /// Prepares a statement; when SQLite refuses it (a syntax error, a missing table), that is a
        /// failed dependency. Running the statement is traced by SQLite's events.
        ///
        /// ```
        /// use census_runtime::integrations::rusqlite::Connection;
        ///
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
        /// // Refused by SQLite: a failed dependency.
        /// assert!(conn.prepare("SELECT total FROM missing").is_err());
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert!(!memory.one("SELECT missing").success());
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn prepare(&self, sql: &str) -> rusqlite::Result<rusqlite::Statement<'_>> {
            remember_target(&self.target);
            match self.inner.prepare(sql) {
                Ok(statement) => Ok(statement),
                Err(error) => owned_call(&self.target, sql, || Err(error)),
            }
        }
    };
}

/// A `rusqlite::Connection` whose every statement is a `sqlite` dependency; see the
/// [module](self).
///
/// ```
/// use census_runtime::integrations::rusqlite::Connection;
///
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
/// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
/// # census.flush(std::time::Duration::from_secs(5))?;
///
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    inner: rusqlite::Connection,
    target: Target,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target.target())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps a connection and registers census's statement and profile events on it
    /// (replacing any `trace_v2` callback it had).
    ///
    /// ```
    /// use census_runtime::integrations::rusqlite::Connection;
    ///
    /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
    /// assert_eq!(conn.target(), ":memory:");
    ///
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(conn: rusqlite::Connection) -> Connection {
        let target = target_of(&conn);
        conn.trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT | TraceEventCodes::SQLITE_TRACE_PROFILE,
            Some(on_trace),
        );
        Connection {
            inner: conn,
            target,
        }
    }

    /// The target of the dependencies (the database file).
    ///
    /// ```
    /// use census_runtime::integrations::rusqlite::Connection;
    ///
    /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
    /// assert_eq!(conn.target(), ":memory:"); // the database file's path, for a file
    ///
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn target(&self) -> &str {
        self.target.target()
    }

    traced_calls!();

    /// Starts a transaction (its `BEGIN`, `COMMIT`, `ROLLBACK` are traced by SQLite's events).
    ///
    /// ```
    /// use census_runtime::integrations::rusqlite::Connection;
    ///
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
    /// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
    /// let mut conn = conn;
    /// let tx = conn.transaction()?;
    /// tx.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
    /// tx.commit()?;
    /// # census.flush(std::time::Duration::from_secs(5))?;
    ///
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transaction(&mut self) -> rusqlite::Result<Transaction<'_>> {
        remember_target(&self.target);
        let target = self.target.clone();
        Ok(Transaction {
            inner: self.inner.transaction()?,
            target,
        })
    }

    /// The wrapped connection, its events still registered.
    ///
    /// ```
    /// use census_runtime::integrations::rusqlite::Connection;
    ///
    /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
    /// // Its statements are still traced by SQLite's events.
    /// let conn: rusqlite::Connection = conn.into_inner();
    ///
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> rusqlite::Connection {
        self.inner
    }
}

/// Every rusqlite method not wrapped here; statements run through them are traced by SQLite's
/// events.
impl Deref for Connection {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        remember_target(&self.target);
        &self.inner
    }
}

/// A transaction on a census [`Connection`]: the same wrapped calls.
///
/// ```
/// use census_runtime::integrations::rusqlite::Connection;
///
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
/// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
/// let mut conn = conn;
/// let tx = conn.transaction()?;
/// tx.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
/// tx.execute("INSERT INTO orders (total) VALUES (?1)", [43])?;
/// tx.commit()?;
/// # census.flush(std::time::Duration::from_secs(5))?;
/// assert_eq!(memory.named("INSERT orders").len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Transaction<'c> {
    inner: rusqlite::Transaction<'c>,
    target: Target,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("target", &self.target.target())
            .finish_non_exhaustive()
    }
}

impl Transaction<'_> {
    traced_calls!();

    /// Commits (a `COMMIT` dependency).
    ///
    /// ```
    /// use census_runtime::integrations::rusqlite::Connection;
    ///
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
    /// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
    /// let mut conn = conn;
    /// let tx = conn.transaction()?;
    /// tx.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
    /// tx.commit()?;
    /// # census.flush(std::time::Duration::from_secs(5))?;
    ///
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn commit(self) -> rusqlite::Result<()> {
        remember_target(&self.target);
        let Transaction { inner, target } = self;
        owned_call(&target, "COMMIT", || inner.commit())
    }

    /// Rolls back (a `ROLLBACK` dependency).
    ///
    /// ```
    /// use census_runtime::integrations::rusqlite::Connection;
    ///
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let conn = Connection::new(rusqlite::Connection::open_in_memory()?);
    /// conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
    /// let mut conn = conn;
    /// let tx = conn.transaction()?;
    /// tx.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
    /// tx.rollback()?;
    /// let count: i64 = conn.query_row("SELECT count(*) FROM orders", [], |row| row.get(0))?;
    /// assert_eq!(count, 0);
    /// # census.flush(std::time::Duration::from_secs(5))?;
    ///
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollback(self) -> rusqlite::Result<()> {
        remember_target(&self.target);
        let Transaction { inner, target } = self;
        owned_call(&target, "ROLLBACK", || inner.rollback())
    }
}

impl Deref for Transaction<'_> {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        remember_target(&self.target);
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_the_extended_code_and_no_row_is_none() {
        let conn = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        conn.execute_batch(
            "CREATE TABLE orders (note TEXT UNIQUE); INSERT INTO orders VALUES ('a')",
        )
        .expect("a table");
        let duplicate = conn
            .execute("INSERT INTO orders VALUES ('a')", [])
            .expect_err("a unique constraint");
        let failure = duplicate.failure().expect("a failure");
        assert_eq!(
            failure,
            Failure::coded(2067, "UNIQUE constraint failed: orders.note")
        );
        let missing = conn
            .query_row("SELECT note FROM orders WHERE note = 'b'", [], |r| {
                r.get::<_, String>(0)
            })
            .expect_err("no row");
        assert_eq!(missing.failure(), None);
    }
}
