//! PostgreSQL through `tokio-postgres` (feature `tokio-postgres`) and the blocking `postgres`
//! crate (feature `postgres`, module [`blocking`]).
//!
//! Neither crate has a hook, so census wraps the client: [`Client`] and its [`Transaction`] have
//! the crate's query methods, and each call is a `postgresql` dependency named after its
//! operation (`SELECT orders`), with the statement as data, `host:port | database` as target,
//! and on failure the SQLSTATE as result code. The span is a child of the span current where the
//! call is awaited, and ends with the call, failed or not.
//!
//! ```no_run
//! use census_runtime::integrations::postgres::Client;
//!
//! # async fn demo() -> Result<(), tokio_postgres::Error> {
//! let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
//! let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//! let client = Client::new(client, &config);
//!
//! // A `postgresql` dependency "SELECT orders", data "SELECT total FROM orders WHERE id = $1".
//! let row = client.query_one("SELECT total FROM orders WHERE id = $1", &[&7_i64]).await?;
//! let total: i64 = row.get(0);
//! # let _ = total;
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, GenericClient, Row, SimpleQueryMessage};

use super::statement::{self, statement_span};
use crate::span::current_span;

/// The `type` of PostgreSQL dependencies.
pub const SYSTEM: &str = "postgresql";

/// The `host:port | database` target of a connection's configuration (its first host).
///
/// ```
/// let config: tokio_postgres::Config = "postgres://app:secret@db.internal:5433/orders".parse().unwrap();
/// assert_eq!(census_runtime::integrations::postgres::target(&config), "db.internal:5433 | orders");
/// ```
pub fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::from("localhost"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    statement::target(&host, Some(port), config.get_dbname())
}

/// Marks the current span failed by a PostgreSQL error: its SQLSTATE as result code (`error`
/// when the server sent none, as for a closed connection), its message (without the
/// server's `DETAIL`, which may quote bound values).
fn fail_current(error: &Error) {
    let span = current_span();
    if let Some(db) = error.as_db_error() {
        span.set_result_code(db.code().code());
        span.fail(format_args!("{}: {}", db.severity(), db.message()));
    } else {
        span.fail(error);
    }
}

mod private {
    pub trait Sealed {}
}

/// A statement census can name: SQL text, or a statement prepared through a census client
/// ([`Prepared`]), which keeps its text.
pub trait Query: private::Sealed + Sync {
    /// The statement's text.
    fn sql(&self) -> &str;
    #[doc(hidden)]
    fn prepared(&self) -> Option<&tokio_postgres::Statement>;
}

impl private::Sealed for str {}
impl Query for str {
    fn sql(&self) -> &str {
        self
    }
    fn prepared(&self) -> Option<&tokio_postgres::Statement> {
        None
    }
}

impl private::Sealed for String {}
impl Query for String {
    fn sql(&self) -> &str {
        self
    }
    fn prepared(&self) -> Option<&tokio_postgres::Statement> {
        None
    }
}

/// A prepared statement and its text, made by `prepare` on a census client.
#[derive(Clone)]
pub struct Prepared {
    statement: tokio_postgres::Statement,
    sql: Arc<str>,
}

impl Prepared {
    /// The driver's statement.
    pub fn statement(&self) -> &tokio_postgres::Statement {
        &self.statement
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared").field("sql", &self.sql).finish()
    }
}

impl private::Sealed for Prepared {}
impl Query for Prepared {
    fn sql(&self) -> &str {
        &self.sql
    }
    fn prepared(&self) -> Option<&tokio_postgres::Statement> {
        Some(&self.statement)
    }
}

/// Runs `$call` with the statement `$query` as text or prepared statement, in a span.
macro_rules! with_statement {
    ($self:ident, $query:ident, |$s:ident| $call:expr) => {{
        let sql = $query.sql();
        match $query.prepared() {
            Some($s) => $self.run(sql, async { $call.await }).await,
            None => {
                let $s = sql;
                $self.run(sql, async { $call.await }).await
            }
        }
    }};
}

/// A `tokio-postgres` client or transaction whose every call is a `postgresql` dependency.
///
/// [`Client`] and [`Transaction`] are its two forms.
pub struct Traced<C> {
    inner: C,
    target: Arc<str>,
}

/// A traced [`tokio_postgres::Client`].
pub type Client = Traced<tokio_postgres::Client>;
/// A traced [`tokio_postgres::Transaction`], made by [`Client::transaction`].
pub type Transaction<'a> = Traced<tokio_postgres::Transaction<'a>>;

impl<C> fmt::Debug for Traced<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Traced<tokio_postgres::Client> {
    /// Wraps a client connected with `config`, whose host, port and database name the target.
    pub fn new(client: tokio_postgres::Client, config: &tokio_postgres::Config) -> Client {
        Self::with_target(client, target(config))
    }

    /// Wraps a client, with the target given (`host:port | database`).
    pub fn with_target(client: tokio_postgres::Client, target: impl Into<Arc<str>>) -> Client {
        Traced {
            inner: client,
            target: target.into(),
        }
    }

    /// Starts a transaction (a `BEGIN` dependency); it rolls back when dropped uncommitted.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let target = self.target.clone();
        let inner = &mut self.inner;
        let transaction = span_for(&target, "BEGIN")
            .instrument(async move { inspect(inner.transaction().await) })
            .await?;
        Ok(Traced {
            inner: transaction,
            target,
        })
    }

    /// The wrapped client.
    pub fn into_inner(self) -> tokio_postgres::Client {
        self.inner
    }
}

impl<'a> Traced<tokio_postgres::Transaction<'a>> {
    /// Commits (a `COMMIT` dependency).
    pub async fn commit(self) -> Result<(), Error> {
        let Traced { inner, target } = self;
        span_for(&target, "COMMIT")
            .instrument(async move { inspect(inner.commit().await) })
            .await
    }

    /// Rolls back (a `ROLLBACK` dependency).
    pub async fn rollback(self) -> Result<(), Error> {
        let Traced { inner, target } = self;
        span_for(&target, "ROLLBACK")
            .instrument(async move { inspect(inner.rollback().await) })
            .await
    }
}

fn span_for(target: &Arc<str>, sql: &str) -> crate::span::SpanBuilder {
    statement_span(SYSTEM, Cow::Owned(target.to_string()), sql)
}

fn inspect<T>(result: Result<T, Error>) -> Result<T, Error> {
    if let Err(error) = &result {
        fail_current(error);
    }
    result
}

impl<C: GenericClient + Sync> Traced<C> {
    async fn run<T>(
        &self,
        sql: &str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        span_for(&self.target, sql)
            .instrument(async move { inspect(call.await) })
            .await
    }

    /// The `host:port | database` the dependencies target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The wrapped client or transaction, for what census does not wrap (its calls are not
    /// traced).
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Runs a statement and returns its rows; see [`tokio_postgres::Client::query`].
    pub async fn query<Q: Query + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        with_statement!(self, query, |s| self.inner.query(s, params))
    }

    /// Runs a statement that returns exactly one row; see [`tokio_postgres::Client::query_one`].
    pub async fn query_one<Q: Query + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        with_statement!(self, query, |s| self.inner.query_one(s, params))
    }

    /// Runs a statement that returns at most one row; see [`tokio_postgres::Client::query_opt`].
    pub async fn query_opt<Q: Query + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        with_statement!(self, query, |s| self.inner.query_opt(s, params))
    }

    /// Runs a statement and returns the number of rows it changed; see
    /// [`tokio_postgres::Client::execute`].
    pub async fn execute<Q: Query + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        with_statement!(self, query, |s| self.inner.execute(s, params))
    }

    /// Runs statements separated by semicolons, without parameters: one dependency for the
    /// batch; see [`tokio_postgres::Client::batch_execute`].
    pub async fn batch_execute(&self, query: &str) -> Result<(), Error> {
        self.run(query, self.inner.batch_execute(query)).await
    }

    /// Runs statements with the simple query protocol; see
    /// [`tokio_postgres::Client::simple_query`].
    pub async fn simple_query(&self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.run(query, self.inner.simple_query(query)).await
    }

    /// Prepares a statement (a dependency of its own), keeping its text for the calls that run
    /// it.
    pub async fn prepare(&self, query: &str) -> Result<Prepared, Error> {
        let statement = self.run(query, self.inner.prepare(query)).await?;
        Ok(Prepared {
            statement,
            sql: Arc::from(query),
        })
    }
}

/// The blocking `postgres` crate (feature `postgres`): the same wrapper, with sync calls.
///
/// ```no_run
/// use census_runtime::integrations::postgres::blocking::Client;
///
/// # fn demo() -> Result<(), postgres::Error> {
/// let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
/// let mut client = Client::new(config.connect(postgres::NoTls)?, &config);
/// client.execute("UPDATE orders SET total = $1 WHERE id = $2", &[&10_i64, &7_i64])?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod blocking {
    use std::fmt;
    use std::sync::Arc;

    use postgres::types::ToSql;
    use postgres::{Error, GenericClient, Row, SimpleQueryMessage};

    use super::{Prepared, Query, SYSTEM, inspect};
    use crate::integrations::db::statement::{self, statement_span};

    /// A `postgres` client or transaction whose every call is a `postgresql` dependency.
    pub struct Traced<C> {
        inner: C,
        target: Arc<str>,
    }

    /// A traced [`postgres::Client`].
    pub type Client = Traced<postgres::Client>;
    /// A traced [`postgres::Transaction`], made by [`Client::transaction`].
    pub type Transaction<'a> = Traced<postgres::Transaction<'a>>;

    impl<C> fmt::Debug for Traced<C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Traced")
                .field("target", &self.target)
                .finish_non_exhaustive()
        }
    }

    /// The `host:port | database` target of a connection's configuration (its first host).
    pub fn target(config: &postgres::Config) -> String {
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => String::from("localhost"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        statement::target(&host, Some(port), config.get_dbname())
    }

    fn run<T>(
        target: &str,
        sql: &str,
        call: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let _span = statement_span(SYSTEM, target.to_owned(), sql).start();
        inspect(call())
    }

    impl Traced<postgres::Client> {
        /// Wraps a client connected with `config`, whose host, port and database name the
        /// target.
        pub fn new(client: postgres::Client, config: &postgres::Config) -> Client {
            Self::with_target(client, target(config))
        }

        /// Wraps a client, with the target given (`host:port | database`).
        pub fn with_target(client: postgres::Client, target: impl Into<Arc<str>>) -> Client {
            Traced {
                inner: client,
                target: target.into(),
            }
        }

        /// Starts a transaction (a `BEGIN` dependency); it rolls back when dropped uncommitted.
        pub fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
            let target = self.target.clone();
            let transaction = run(&target, "BEGIN", || self.inner.transaction())?;
            Ok(Traced {
                inner: transaction,
                target,
            })
        }

        /// The wrapped client.
        pub fn into_inner(self) -> postgres::Client {
            self.inner
        }
    }

    impl Traced<postgres::Transaction<'_>> {
        /// Commits (a `COMMIT` dependency).
        pub fn commit(self) -> Result<(), Error> {
            let Traced { inner, target } = self;
            run(&target, "COMMIT", || inner.commit())
        }

        /// Rolls back (a `ROLLBACK` dependency).
        pub fn rollback(self) -> Result<(), Error> {
            let Traced { inner, target } = self;
            run(&target, "ROLLBACK", || inner.rollback())
        }
    }

    macro_rules! with_statement {
        ($self:ident, $query:ident, |$s:ident| $call:expr) => {{
            let sql = $query.sql();
            let target = $self.target.clone();
            match $query.prepared() {
                Some($s) => run(&target, sql, || $call),
                None => {
                    let $s = sql;
                    run(&target, sql, || $call)
                }
            }
        }};
    }

    impl<C: GenericClient> Traced<C> {
        /// The `host:port | database` the dependencies target.
        pub fn target(&self) -> &str {
            &self.target
        }

        /// The wrapped client or transaction (its calls are not traced).
        pub fn inner_mut(&mut self) -> &mut C {
            &mut self.inner
        }

        /// Runs a statement and returns its rows; see [`postgres::Client::query`].
        pub fn query<Q: Query + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<Row>, Error> {
            with_statement!(self, query, |s| self.inner.query(s, params))
        }

        /// Runs a statement that returns exactly one row; see [`postgres::Client::query_one`].
        pub fn query_one<Q: Query + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Row, Error> {
            with_statement!(self, query, |s| self.inner.query_one(s, params))
        }

        /// Runs a statement that returns at most one row; see [`postgres::Client::query_opt`].
        pub fn query_opt<Q: Query + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<Row>, Error> {
            with_statement!(self, query, |s| self.inner.query_opt(s, params))
        }

        /// Runs a statement and returns the number of rows it changed; see
        /// [`postgres::Client::execute`].
        pub fn execute<Q: Query + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<u64, Error> {
            with_statement!(self, query, |s| self.inner.execute(s, params))
        }

        /// Runs statements separated by semicolons: one dependency for the batch.
        pub fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
            let target = self.target.clone();
            run(&target, query, || self.inner.batch_execute(query))
        }

        /// Runs statements with the simple query protocol.
        pub fn simple_query(&mut self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
            let target = self.target.clone();
            run(&target, query, || self.inner.simple_query(query))
        }

        /// Prepares a statement (a dependency of its own), keeping its text.
        pub fn prepare(&mut self, query: &str) -> Result<Prepared, Error> {
            let target = self.target.clone();
            let statement = run(&target, query, || self.inner.prepare(query))?;
            Ok(Prepared {
                statement,
                sql: Arc::from(query),
            })
        }
    }
}
