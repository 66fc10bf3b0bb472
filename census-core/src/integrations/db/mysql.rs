//! MySQL and MariaDB through `mysql_async` (feature `mysql_async`).
//!
//! The crate has no hook, so census wraps the connection: [`Conn`] implements `mysql_async`'s
//! `Queryable`, and each call is a `mysql` dependency named after its operation, with the
//! statement as data, `host:port | database` as target and, on failure, MySQL's error number
//! (`1146` for a missing table, `1062` for a duplicate key) as result code.
//!
//! `mysql_async` keeps the text of a `StatementLike` to itself, so the `exec*` methods of the
//! `Queryable` trait, called through generic code, record the dependency without its text
//! (named `EXECUTE`). Called on a [`Conn`] itself, the inherent `exec*` methods, which take the
//! statement as text or as a [`Prepared`] statement, record it in full; method resolution picks
//! them first.
//!
//! ```no_run
//! use census_runtime::integrations::mysql::Conn;
//! use mysql_async::prelude::Queryable;
//!
//! # async fn demo() -> Result<(), mysql_async::Error> {
//! let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
//! // A `mysql` dependency "INSERT orders", data "INSERT INTO orders (total) VALUES (?)".
//! conn.exec_drop("INSERT INTO orders (total) VALUES (?)", (42,)).await?;
//! let totals: Vec<i64> = conn.query("SELECT total FROM orders").await?;
//! # let _ = totals;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use mysql_async::prelude::{AsQuery, FromRow, Queryable, StatementLike};
use mysql_async::{BinaryProtocol, Error, Params, QueryResult, Statement, TextProtocol};

use super::call::{Call, DriverError, Failure, Target};
use super::statement::{self, redact_quoted, with_statement};
pub use super::statement::{Prepared, Sql};

/// The `type` of MySQL (and MariaDB) dependencies.
pub const SYSTEM: &str = "mysql";

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The `host:port | database` target of a connection's options.
///
/// ```
/// let opts = mysql_async::Opts::from_url("mysql://app:secret@db.internal:3307/shop").unwrap();
/// assert_eq!(census_runtime::integrations::mysql::target(&opts), "db.internal:3307 | shop");
/// ```
pub fn target(opts: &mysql_async::Opts) -> String {
    statement::target(opts.ip_or_hostname(), Some(opts.tcp_port()), opts.db_name())
}

/// A server's error: its error number (`1146`, `1062`) and its message without the values it
/// quotes (`Duplicate entry '?' for key '?'`); any other error: the driver's message.
impl DriverError for Error {
    fn failure(&self) -> Option<Failure> {
        Some(match self {
            Error::Server(server) => Failure::coded(server.code, redact_quoted(&server.message)),
            other => Failure::uncoded(other),
        })
    }
}

fn text(query: &impl AsQuery) -> String {
    String::from_utf8_lossy(&query.as_query()).into_owned()
}

/// A `mysql_async` connection whose every call is a `mysql` dependency; see the
/// [module](self).
///
/// ```no_run
/// use census_runtime::integrations::mysql::Conn;
///
/// # async fn demo() -> Result<(), mysql_async::Error> {
/// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
/// // A `mysql` dependency "INSERT orders", target "127.0.0.1:3306 | shop".
/// conn.exec_drop("INSERT INTO orders (total) VALUES (?)", (42,)).await?;
/// # Ok(())
/// # }
/// ```
pub struct Conn {
    inner: mysql_async::Conn,
    target: Target,
    /// A [`Transaction`] was dropped uncommitted: the next call rolls it back first.
    rollback_pending: bool,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.target.target())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Wraps a connection; its options name the target.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// let conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// assert_eq!(conn.target(), "127.0.0.1:3306 | shop");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(conn: mysql_async::Conn) -> Conn {
        let target = Target::new(SYSTEM, target(conn.opts()));
        Conn {
            inner: conn,
            target,
            rollback_pending: false,
        }
    }

    /// The target of the dependencies.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// println!("calls go to {}", conn.target());
    /// # Ok(())
    /// # }
    /// ```
    pub fn target(&self) -> &str {
        self.target.target()
    }

    /// The wrapped connection (its calls are not traced).
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// // For what the wrapper does not offer; its calls are not traced.
    /// let id = conn.inner_mut().id();
    /// # Ok(())
    /// # }
    /// ```
    pub fn inner_mut(&mut self) -> &mut mysql_async::Conn {
        &mut self.inner
    }

    /// The wrapped connection. A transaction dropped uncommitted and not rolled back yet is
    /// rolled back by a pool's reset or by closing the connection.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// // Calls made on it from here are not traced.
    /// let conn: mysql_async::Conn = conn.into_inner();
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> mysql_async::Conn {
        self.inner
    }

    /// A call of a statement whose text `mysql_async` does not show.
    fn unknown_statement(&self) -> Call {
        self.target.named("EXECUTE")
    }

    /// Rolls back a transaction dropped uncommitted, before anything else runs (a dependency of
    /// its own, beside the call's).
    async fn settle(&mut self) -> Result<(), Error> {
        if self.rollback_pending {
            self.rollback_pending = false;
            let call = self.target.statement("ROLLBACK");
            call.run(self.inner.query_drop("ROLLBACK")).await?;
        }
        Ok(())
    }

    /// Runs `run` on the inner connection as `call`, once a transaction dropped uncommitted is
    /// rolled back.
    fn traced<'f, T: Send + 'f>(
        &'f mut self,
        call: Call,
        run: impl FnOnce(&'f mut mysql_async::Conn) -> BoxFuture<'f, T> + Send + 'f,
    ) -> BoxFuture<'f, T> {
        Box::pin(async move {
            self.settle().await?;
            call.run(run(&mut self.inner)).await
        })
    }

    /// Prepares a statement (a dependency of its own), keeping its text.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// let insert = conn.prepare("INSERT INTO orders (total) VALUES (?)").await?;
    /// for total in [42, 43] {
    ///     // Each a dependency with the statement's text as data.
    ///     conn.exec_drop(&insert, (total,)).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn prepare(&mut self, sql: &str) -> Result<Prepared<Statement>, Error> {
        let call = self.target.statement(sql);
        let owned = sql.to_owned();
        let statement = self.traced(call, move |c| Box::pin(c.prep(owned))).await?;
        Ok(Prepared::new(statement, sql))
    }

    /// Starts a transaction (a `START TRANSACTION` dependency). Dropped uncommitted, it is
    /// rolled back before the connection's next call.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// let mut tx = conn.start_transaction().await?;
    /// tx.exec_drop("UPDATE stock SET count = count - 1 WHERE sku = ?", ("caviar",)).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_transaction(&mut self) -> Result<Transaction<'_>, Error> {
        self.query_drop("START TRANSACTION").await?;
        Ok(Transaction {
            conn: self,
            open: true,
        })
    }
}

/// The statement-as-text forms of `Queryable`'s `exec*`: these record the statement.
impl Conn {
    /// Executes a statement and drops its result.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// conn.exec_drop("DELETE FROM carts WHERE id = ?", (7,)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec_drop<'a, S, P>(&'a mut self, stmt: S, params: P) -> BoxFuture<'a, ()>
    where
        S: Sql<Statement> + 'a,
        P: Into<Params> + Send + 'a,
    {
        let call = self.target.statement(stmt.sql());
        self.traced(call, move |c| {
            Box::pin(async move { with_statement!(stmt, |s| c.exec_drop(s, params).await) })
        })
    }

    /// Executes a statement and collects its first result set.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// let totals: Vec<i64> = conn.exec("SELECT total FROM orders WHERE customer = ?", ("ada",)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec<'a, T, S, P>(&'a mut self, stmt: S, params: P) -> BoxFuture<'a, Vec<T>>
    where
        T: FromRow + Send + 'static,
        S: Sql<Statement> + 'a,
        P: Into<Params> + Send + 'a,
    {
        let call = self.target.statement(stmt.sql());
        self.traced(call, move |c| {
            Box::pin(async move { with_statement!(stmt, |s| c.exec(s, params).await) })
        })
    }

    /// Executes a statement and returns its first row.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// let total: Option<i64> = conn.exec_first("SELECT total FROM orders WHERE id = ?", (7,)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec_first<'a, T, S, P>(&'a mut self, stmt: S, params: P) -> BoxFuture<'a, Option<T>>
    where
        T: FromRow + Send + 'static,
        S: Sql<Statement> + 'a,
        P: Into<Params> + Send + 'a,
    {
        let call = self.target.statement(stmt.sql());
        self.traced(call, move |c| {
            Box::pin(async move { with_statement!(stmt, |s| c.exec_first(s, params).await) })
        })
    }

    /// Executes a statement once per set of parameters: one dependency for the batch.
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// // One dependency for the three rows.
    /// conn.exec_batch("INSERT INTO orders (total) VALUES (?)", [(42,), (43,), (44,)]).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec_batch<'a, S, P, I>(&'a mut self, stmt: S, params: I) -> BoxFuture<'a, ()>
    where
        S: Sql<Statement> + 'a,
        I: IntoIterator<Item = P> + Send + 'a,
        I::IntoIter: Send,
        P: Into<Params> + Send,
    {
        let call = self.target.statement(stmt.sql());
        self.traced(call, move |c| {
            Box::pin(async move { with_statement!(stmt, |s| c.exec_batch(s, params).await) })
        })
    }
}

impl Queryable for Conn {
    fn ping(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.ping())
    }

    fn query_iter<'a, Q>(
        &'a mut self,
        query: Q,
    ) -> BoxFuture<'a, QueryResult<'a, 'static, TextProtocol>>
    where
        Q: AsQuery + 'a,
    {
        let call = self.target.statement(&text(&query));
        self.traced(call, move |c| c.query_iter(query))
    }

    fn prep<'a, Q>(&'a mut self, query: Q) -> BoxFuture<'a, Statement>
    where
        Q: AsQuery + 'a,
    {
        let call = self.target.statement(&text(&query));
        self.traced(call, move |c| c.prep(query))
    }

    fn close(&mut self, stmt: Statement) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.close(stmt))
    }

    fn exec_iter<'a: 's, 's, Q, P>(
        &'a mut self,
        stmt: Q,
        params: P,
    ) -> BoxFuture<'s, QueryResult<'a, 'static, BinaryProtocol>>
    where
        Q: StatementLike + 's,
        P: Into<Params>,
    {
        // Not `traced`: its future borrows the connection as long as it lives, while the rows
        // returned here borrow the connection longer ('a) than the statement lives ('s).
        let params = params.into();
        let call = self.unknown_statement();
        Box::pin(async move {
            let this = self;
            this.settle().await?;
            call.run(this.inner.exec_iter(stmt, params)).await
        })
    }

    fn query<'a, T, Q>(&'a mut self, query: Q) -> BoxFuture<'a, Vec<T>>
    where
        Q: AsQuery + 'a,
        T: FromRow + Send + 'static,
    {
        let call = self.target.statement(&text(&query));
        self.traced(call, move |c| c.query(query))
    }

    fn query_first<'a, T, Q>(&'a mut self, query: Q) -> BoxFuture<'a, Option<T>>
    where
        Q: AsQuery + 'a,
        T: FromRow + Send + 'static,
    {
        let call = self.target.statement(&text(&query));
        self.traced(call, move |c| c.query_first(query))
    }

    fn query_drop<'a, Q>(&'a mut self, query: Q) -> BoxFuture<'a, ()>
    where
        Q: AsQuery + 'a,
    {
        let call = self.target.statement(&text(&query));
        self.traced(call, move |c| c.query_drop(query))
    }

    fn exec_batch<'a: 'b, 'b, S, P, I>(&'a mut self, stmt: S, params_iter: I) -> BoxFuture<'b, ()>
    where
        S: StatementLike + 'b,
        I: IntoIterator<Item = P> + Send + 'b,
        I::IntoIter: Send,
        P: Into<Params> + Send,
    {
        let call = self.unknown_statement();
        self.traced(call, move |c| c.exec_batch(stmt, params_iter))
    }

    fn exec<'a: 'b, 'b, T, S, P>(&'a mut self, stmt: S, params: P) -> BoxFuture<'b, Vec<T>>
    where
        S: StatementLike + 'b,
        P: Into<Params> + Send + 'b,
        T: FromRow + Send + 'static,
    {
        let call = self.unknown_statement();
        self.traced(call, move |c| c.exec(stmt, params))
    }

    fn exec_first<'a: 'b, 'b, T, S, P>(&'a mut self, stmt: S, params: P) -> BoxFuture<'b, Option<T>>
    where
        S: StatementLike + 'b,
        P: Into<Params> + Send + 'b,
        T: FromRow + Send + 'static,
    {
        let call = self.unknown_statement();
        self.traced(call, move |c| c.exec_first(stmt, params))
    }

    fn exec_drop<'a: 'b, 'b, S, P>(&'a mut self, stmt: S, params: P) -> BoxFuture<'b, ()>
    where
        S: StatementLike + 'b,
        P: Into<Params> + Send + 'b,
    {
        let call = self.unknown_statement();
        self.traced(call, move |c| c.exec_drop(stmt, params))
    }
}

/// A transaction on a census [`Conn`]: use it as the connection (it dereferences to it), then
/// [`commit`](Transaction::commit) or [`rollback`](Transaction::rollback).
///
/// ```no_run
/// use census_runtime::integrations::mysql::Conn;
///
/// # async fn demo() -> Result<(), mysql_async::Error> {
/// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
/// let mut tx = conn.start_transaction().await?;
/// tx.exec_drop("INSERT INTO orders (total) VALUES (?)", (42,)).await?;
/// tx.exec_drop("UPDATE stock SET count = count - 1 WHERE sku = ?", ("caviar",)).await?;
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
pub struct Transaction<'c> {
    conn: &'c mut Conn,
    open: bool,
}

impl fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("target", &self.conn.target())
            .field("open", &self.open)
            .finish()
    }
}

impl Transaction<'_> {
    /// Commits (a `COMMIT` dependency).
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// let mut tx = conn.start_transaction().await?;
    /// tx.exec_drop("INSERT INTO orders (total) VALUES (?)", (42,)).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn commit(mut self) -> Result<(), Error> {
        self.open = false;
        self.conn.query_drop("COMMIT").await
    }

    /// Rolls back (a `ROLLBACK` dependency).
    ///
    /// ```no_run
    /// use census_runtime::integrations::mysql::Conn;
    ///
    /// # async fn demo() -> Result<(), mysql_async::Error> {
    /// # let mut conn = Conn::new(mysql_async::Conn::from_url("mysql://app@127.0.0.1/shop").await?);
    /// let mut tx = conn.start_transaction().await?;
    /// tx.exec_drop("INSERT INTO orders (total) VALUES (?)", (42,)).await?;
    /// tx.rollback().await?; // the row is not kept
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.open = false;
        self.conn.query_drop("ROLLBACK").await
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl std::ops::DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            self.conn.rollback_pending = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use mysql_async::{DriverError as MysqlDriverError, ServerError};

    use super::*;

    #[test]
    fn a_server_error_is_its_number_and_its_message_without_quoted_values() {
        let duplicate = Error::Server(ServerError {
            code: 1062,
            message: String::from("Duplicate entry 'gift' for key 'orders.note'"),
            state: String::from("23000"),
        });
        assert_eq!(
            duplicate.failure(),
            Some(Failure::coded(1062, "Duplicate entry '?' for key '?'"))
        );
        let closed = Error::Driver(MysqlDriverError::ConnectionClosed);
        assert_eq!(closed.failure(), Some(Failure::uncoded(&closed)));
    }
}
