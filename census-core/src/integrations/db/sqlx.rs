//! `sqlx` (feature `sqlx`): one integration for its PostgreSQL, MySQL and SQLite back ends.
//!
//! `sqlx` runs every query through an `Executor` (a pool, a connection, a transaction), so census
//! wraps the executor: [`Target::on`] gives an executor that runs each query in a dependency of
//! the back end's system (`postgresql`, `mysql`, `sqlite`), named after the operation, with the
//! statement as data and, on failure, the database's own code (SQLSTATE, MySQL error number,
//! SQLite extended result code). A query's span is a child of the span current where it is
//! run, and covers its rows until the last one is read.
//!
//! ```no_run
//! use census_runtime::integrations::sqlx::Target;
//!
//! # async fn demo() -> Result<(), sqlx::Error> {
//! let url = "postgres://app@127.0.0.1/orders";
//! let pool = sqlx::PgPool::connect(url).await?;
//! let orders_db = Target::from_url(url); // postgresql, "127.0.0.1:5432 | orders"
//!
//! let total: i64 = sqlx::query_scalar("SELECT total FROM orders WHERE id = $1")
//!     .bind(7_i64)
//!     .fetch_one(orders_db.on(&pool))
//!     .await?;
//!
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE orders SET total = $1 WHERE id = $2")
//!     .bind(total + 1)
//!     .bind(7_i64)
//!     .execute(orders_db.on(&mut *tx))
//!     .await?;
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use sqlx::error::BoxDynError;
use sqlx::{Database, Either, Error, Execute, Executor, SqlStr};

pub use super::call::Target;
use super::call::{DriverError, Failure, fail_detached};
use super::statement::redact_quoted;
use crate::span::DetachedSpan;

type BoxFuture<'e, T> = Pin<Box<dyn Future<Output = T> + Send + 'e>>;
type BoxStream<'e, T> = Pin<Box<dyn Stream<Item = T> + Send + 'e>>;

impl Target {
    /// An executor that traces every query it runs through `executor` (`&pool`,
    /// `&mut *transaction`, `&mut connection`).
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    /// let orders_db = census_runtime::integrations::sqlx::Target::from_url("sqlite:orders.db");
    /// sqlx::query("DELETE FROM orders WHERE id = ?1").bind(7_i64).execute(orders_db.on(&pool)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on<E>(&self, executor: E) -> TracedExecutor<E> {
        TracedExecutor {
            inner: executor,
            target: self.clone(),
        }
    }
}

/// An executor whose every query is a dependency; made by [`Target::on`].
///
/// ```no_run
/// use census_runtime::integrations::sqlx::Target;
///
/// # async fn demo() -> Result<(), sqlx::Error> {
/// let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/orders").await?;
/// let orders_db = Target::from_url("postgres://app@127.0.0.1/orders");
/// // A `postgresql` dependency "DELETE carts".
/// sqlx::query("DELETE FROM carts WHERE stale").execute(orders_db.on(&pool)).await?;
/// # Ok(())
/// # }
/// ```
pub struct TracedExecutor<E> {
    inner: E,
    target: Target,
}

impl<E: fmt::Debug> fmt::Debug for TracedExecutor<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedExecutor")
            .field("inner", &self.inner)
            .field("target", &self.target)
            .finish()
    }
}

/// A database's error: its own code (SQLSTATE for PostgreSQL, the error number for MySQL, the
/// extended result code for SQLite) and its message, MySQL's without the values it quotes; any
/// other error: sqlx's message.
impl DriverError for Error {
    fn failure(&self) -> Option<Failure> {
        let Error::Database(db) = self else {
            return Some(Failure::uncoded(self));
        };
        if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
            return Some(Failure::coded(
                mysql.number(),
                redact_quoted(mysql.message()),
            ));
        }
        Some(match db.code() {
            Some(code) => Failure::coded(code, self),
            None => Failure::uncoded(self),
        })
    }
}

/// A query taken apart so that its text can be read and it can still be run.
struct Captured<DB: Database> {
    sql: SqlStr,
    statement: Option<DB::Statement>,
    arguments: Option<Result<Option<DB::Arguments>, BoxDynError>>,
    persistent: bool,
}

impl<DB: Database> Captured<DB> {
    fn new<'q>(mut query: impl Execute<'q, DB>) -> Captured<DB> {
        let arguments = Some(query.take_arguments());
        let statement = query.statement().cloned();
        let persistent = query.persistent();
        Captured {
            sql: query.sql(),
            statement,
            arguments,
            persistent,
        }
    }
}

impl<'q, DB: Database> Execute<'q, DB> for Captured<DB> {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<DB::Arguments>, BoxDynError> {
        self.arguments.take().unwrap_or(Ok(None))
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}

/// Rows as they come, in a span that ends with the last one (or when the stream is dropped).
struct SpanStream<S> {
    inner: S,
    span: Option<DetachedSpan>,
}

impl<S: Stream<Item = Result<T, Error>> + Unpin, T> Stream for SpanStream<S> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        match &poll {
            Poll::Ready(Some(Err(error))) => {
                if let Some(span) = &self.span {
                    fail_detached(span, error);
                }
            }
            Poll::Ready(None) => {
                if let Some(span) = self.span.take() {
                    span.end();
                }
            }
            _ => {}
        }
        poll
    }
}

impl<'c, E> Executor<'c> for TracedExecutor<E>
where
    E: Executor<'c>,
{
    type Database = E::Database;

    fn execute<'e, 'q: 'e, Q>(
        self,
        query: Q,
    ) -> BoxFuture<'e, Result<<Self::Database as Database>::QueryResult, Error>>
    where
        'c: 'e,
        Q: 'q + Execute<'q, Self::Database>,
    {
        let query = Captured::new(query);
        let call = self.target.statement(query.sql.as_str());
        Box::pin(call.run(self.inner.execute(query)))
    }

    fn fetch_many<'e, 'q: 'e, Q>(
        self,
        query: Q,
    ) -> BoxStream<
        'e,
        Result<
            Either<<Self::Database as Database>::QueryResult, <Self::Database as Database>::Row>,
            Error,
        >,
    >
    where
        'c: 'e,
        Q: 'q + Execute<'q, Self::Database>,
    {
        let query = Captured::new(query);
        let span = self.target.statement(query.sql.as_str()).start_detached();
        Box::pin(SpanStream {
            inner: self.inner.fetch_many(query),
            span: Some(span),
        })
    }

    fn fetch_all<'e, 'q: 'e, Q>(
        self,
        query: Q,
    ) -> BoxFuture<'e, Result<Vec<<Self::Database as Database>::Row>, Error>>
    where
        'c: 'e,
        Q: 'q + Execute<'q, Self::Database>,
    {
        let query = Captured::new(query);
        let call = self.target.statement(query.sql.as_str());
        Box::pin(call.run(self.inner.fetch_all(query)))
    }

    fn fetch_optional<'e, 'q: 'e, Q>(
        self,
        query: Q,
    ) -> BoxFuture<'e, Result<Option<<Self::Database as Database>::Row>, Error>>
    where
        'c: 'e,
        Q: 'q + Execute<'q, Self::Database>,
    {
        let query = Captured::new(query);
        let call = self.target.statement(query.sql.as_str());
        Box::pin(call.run(self.inner.fetch_optional(query)))
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [<Self::Database as Database>::TypeInfo],
    ) -> BoxFuture<'e, Result<<Self::Database as Database>::Statement, Error>>
    where
        'c: 'e,
    {
        let call = self.target.statement(sql.as_str());
        Box::pin(call.run(self.inner.prepare_with(sql, parameters)))
    }

    fn describe<'e>(
        self,
        sql: SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Self::Database>, Error>>
    where
        'c: 'e,
    {
        self.inner.describe(sql)
    }
}
