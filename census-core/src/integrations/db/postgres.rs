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

use std::fmt;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, GenericClient, Row, SimpleQueryMessage};

use super::call::{Call, DriverError, Failure, Target};
use super::statement::{self, with_statement};
pub use super::statement::{Prepared, Sql};

/// The `type` of PostgreSQL dependencies.
pub const SYSTEM: &str = "postgresql";

/// The `host:port | database` target of a connection's configuration (its first host).
///
/// ```
/// let config: tokio_postgres::Config = "postgres://app:secret@db.internal:5433/orders".parse().unwrap();
/// assert_eq!(census_runtime::integrations::postgres::target(&config), "db.internal:5433 | orders");
/// ```
pub fn target(config: &tokio_postgres::Config) -> String {
    target_of(config.get_hosts(), config.get_ports(), config.get_dbname())
}

/// The target named by a configuration's parts (`postgres::Config` has the same ones).
fn target_of(
    hosts: &[tokio_postgres::config::Host],
    ports: &[u16],
    database: Option<&str>,
) -> String {
    let host = match hosts.first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::from("localhost"),
    };
    let port = ports.first().copied().unwrap_or(5432);
    statement::target(&host, Some(port), database)
}

/// A PostgreSQL error (`postgres::Error` is the same type): its SQLSTATE as result code
/// (`error` when the server sent none, as for a closed connection), its message without the
/// server's `DETAIL`, which may quote bound values.
impl DriverError for Error {
    fn failure(&self) -> Option<Failure> {
        Some(match self.as_db_error() {
            Some(db) => Failure::coded(
                db.code().code(),
                format_args!("{}: {}", db.severity(), db.message()),
            ),
            None => Failure::uncoded(self),
        })
    }
}

/// A `tokio-postgres` client or transaction whose every call is a `postgresql` dependency.
///
/// [`Client`] and [`Transaction`] are its two forms.
///
/// ```no_run
/// use census_runtime::integrations::postgres::Client;
///
/// # async fn demo() -> Result<(), tokio_postgres::Error> {
/// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
/// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
/// # tokio::spawn(connection);
/// # let client = Client::new(client, &config);
/// // A `postgresql` dependency "SELECT orders", target "127.0.0.1:5432 | orders".
/// let row = client.query_one("SELECT total FROM orders WHERE id = $1", &[&7_i64]).await?;
/// # Ok(())
/// # }
/// ```
pub struct TracedClient<C> {
    inner: C,
    target: Target,
}

/// A traced [`tokio_postgres::Client`].
pub type Client = TracedClient<tokio_postgres::Client>;
/// A traced [`tokio_postgres::Transaction`], made by [`Client::transaction`].
pub type Transaction<'a> = TracedClient<tokio_postgres::Transaction<'a>>;

impl<C> fmt::Debug for TracedClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedClient")
            .field("target", &self.target.target())
            .finish_non_exhaustive()
    }
}

impl TracedClient<tokio_postgres::Client> {
    /// Wraps a client connected with `config`, whose host, port and database name the target.
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// let client = Client::new(client, &config);
    /// assert_eq!(client.target(), "127.0.0.1:5432 | orders");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(client: tokio_postgres::Client, config: &tokio_postgres::Config) -> Client {
        Self::with_target(client, target(config))
    }

    /// Wraps a client, with the target given (`host:port | database`).
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// // Behind a pooler, the database's own name rather than the pooler's address.
    /// let client = Client::with_target(client, "orders-primary:5432 | orders");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_target(
        client: tokio_postgres::Client,
        target: impl Into<std::sync::Arc<str>>,
    ) -> Client {
        TracedClient {
            inner: client,
            target: Target::new(SYSTEM, target),
        }
    }

    /// Starts a transaction (a `BEGIN` dependency); it rolls back when dropped uncommitted.
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let mut client = Client::new(client, &config);
    /// let tx = client.transaction().await?;
    /// tx.execute("UPDATE orders SET total = total + 1 WHERE id = $1", &[&7_i64]).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let target = self.target.clone();
        let transaction = target
            .statement("BEGIN")
            .run(self.inner.transaction())
            .await?;
        Ok(TracedClient {
            inner: transaction,
            target,
        })
    }

    /// The wrapped client.
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// // Calls made on it from here are not traced.
    /// let client: tokio_postgres::Client = client.into_inner();
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_inner(self) -> tokio_postgres::Client {
        self.inner
    }
}

impl<'a> TracedClient<tokio_postgres::Transaction<'a>> {
    /// Commits (a `COMMIT` dependency).
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let mut client = Client::new(client, &config);
    /// let tx = client.transaction().await?;
    /// tx.batch_execute("DELETE FROM carts WHERE stale").await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn commit(self) -> Result<(), Error> {
        let TracedClient { inner, target } = self;
        target.statement("COMMIT").run(inner.commit()).await
    }

    /// Rolls back (a `ROLLBACK` dependency).
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let mut client = Client::new(client, &config);
    /// let tx = client.transaction().await?;
    /// tx.execute("UPDATE stock SET count = count - 1 WHERE sku = $1", &[&"caviar"]).await?;
    /// tx.rollback().await?; // the change is undone
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rollback(self) -> Result<(), Error> {
        let TracedClient { inner, target } = self;
        target.statement("ROLLBACK").run(inner.rollback()).await
    }
}

impl<C: GenericClient + Sync> TracedClient<C> {
    fn call(&self, sql: &str) -> Call {
        self.target.statement(sql)
    }

    /// The `host:port | database` the dependencies target.
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// assert_eq!(client.target(), "127.0.0.1:5432 | orders");
    /// # Ok(())
    /// # }
    /// ```
    pub fn target(&self) -> &str {
        self.target.target()
    }

    /// The wrapped client or transaction, for what census does not wrap (its calls are not
    /// traced).
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// // For what the wrapper does not offer; its calls are not traced.
    /// let closed = client.inner().is_closed();
    /// # Ok(())
    /// # }
    /// ```
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Runs a statement and returns its rows; see [`tokio_postgres::Client::query`].
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// let rows = client.query("SELECT id, total FROM orders WHERE customer = $1", &[&"ada"]).await?;
    /// let totals: Vec<i64> = rows.iter().map(|row| row.get(1)).collect();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn query<Q: Sql<tokio_postgres::Statement> + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let call = self.call(query.sql());
        with_statement!(query, |s| call.run(self.inner.query(s, params)).await)
    }

    /// Runs a statement that returns exactly one row; see [`tokio_postgres::Client::query_one`].
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// let row = client.query_one("SELECT total FROM orders WHERE id = $1", &[&7_i64]).await?;
    /// let total: i64 = row.get(0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn query_one<Q: Sql<tokio_postgres::Statement> + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        let call = self.call(query.sql());
        with_statement!(query, |s| call.run(self.inner.query_one(s, params)).await)
    }

    /// Runs a statement that returns at most one row; see [`tokio_postgres::Client::query_opt`].
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// let row = client.query_opt("SELECT total FROM orders WHERE id = $1", &[&7_i64]).await?;
    /// let total: Option<i64> = row.map(|row| row.get(0));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn query_opt<Q: Sql<tokio_postgres::Statement> + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let call = self.call(query.sql());
        with_statement!(query, |s| call.run(self.inner.query_opt(s, params)).await)
    }

    /// Runs a statement and returns the number of rows it changed; see
    /// [`tokio_postgres::Client::execute`].
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// let updated = client
    ///     .execute("UPDATE orders SET total = $1 WHERE id = $2", &[&43_i64, &7_i64])
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn execute<Q: Sql<tokio_postgres::Statement> + ?Sized>(
        &self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        let call = self.call(query.sql());
        with_statement!(query, |s| call.run(self.inner.execute(s, params)).await)
    }

    /// Runs statements separated by semicolons, without parameters: one dependency for the
    /// batch; see [`tokio_postgres::Client::batch_execute`].
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// client.batch_execute("CREATE TABLE IF NOT EXISTS carts (id BIGINT); TRUNCATE carts").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn batch_execute(&self, query: &str) -> Result<(), Error> {
        self.call(query).run(self.inner.batch_execute(query)).await
    }

    /// Runs statements with the simple query protocol; see
    /// [`tokio_postgres::Client::simple_query`].
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// let messages = client.simple_query("SELECT count(*) FROM orders").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn simple_query(&self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.call(query).run(self.inner.simple_query(query)).await
    }

    /// Prepares a statement (a dependency of its own), keeping its text for the calls that run
    /// it.
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::Client;
    ///
    /// # async fn demo() -> Result<(), tokio_postgres::Error> {
    /// # let config: tokio_postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    /// # tokio::spawn(connection);
    /// # let client = Client::new(client, &config);
    /// // Prepared once: each call with it is a dependency with the statement's text as data.
    /// let by_id = client.prepare("SELECT total FROM orders WHERE id = $1").await?;
    /// for id in [7_i64, 8] {
    ///     let row = client.query_one(&by_id, &[&id]).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn prepare(&self, query: &str) -> Result<Prepared<tokio_postgres::Statement>, Error> {
        let statement = self.call(query).run(self.inner.prepare(query)).await?;
        Ok(Prepared::new(statement, query))
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

    use super::{Prepared, SYSTEM, Sql, target_of};
    use crate::integrations::db::call::{Call, Target};
    use crate::integrations::db::statement::with_statement;

    /// A `postgres` client or transaction whose every call is a `postgresql` dependency.
    ///
    /// [`Client`] and [`Transaction`] are its two forms.
    ///
    /// ```no_run
    /// use census_runtime::integrations::postgres::blocking::Client;
    ///
    /// # fn demo() -> Result<(), postgres::Error> {
    /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
    /// # let client = config.connect(postgres::NoTls)?;
    /// # let mut client = Client::new(client, &config);
    /// // A `postgresql` dependency "SELECT orders", target "127.0.0.1:5432 | orders".
    /// let row = client.query_one("SELECT total FROM orders WHERE id = $1", &[&7_i64])?;
    /// # Ok(())
    /// # }
    /// ```
    pub struct TracedClient<C> {
        inner: C,
        target: Target,
    }

    /// A traced [`postgres::Client`].
    pub type Client = TracedClient<postgres::Client>;
    /// A traced [`postgres::Transaction`], made by [`Client::transaction`].
    pub type Transaction<'a> = TracedClient<postgres::Transaction<'a>>;

    impl<C> fmt::Debug for TracedClient<C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TracedClient")
                .field("target", &self.target.target())
                .finish_non_exhaustive()
        }
    }

    /// The `host:port | database` target of a connection's configuration (its first host).
    ///
    /// ```
    /// let config: postgres::Config = "postgres://app:secret@db.internal:5433/orders".parse().unwrap();
    /// assert_eq!(
    ///     census_runtime::integrations::postgres::blocking::target(&config),
    ///     "db.internal:5433 | orders"
    /// );
    /// ```
    pub fn target(config: &postgres::Config) -> String {
        target_of(config.get_hosts(), config.get_ports(), config.get_dbname())
    }

    impl TracedClient<postgres::Client> {
        /// Wraps a client connected with `config`, whose host, port and database name the
        /// target.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// let client = Client::new(client, &config);
        /// assert_eq!(client.target(), "127.0.0.1:5432 | orders");
        /// # Ok(())
        /// # }
        /// ```
        pub fn new(client: postgres::Client, config: &postgres::Config) -> Client {
            Self::with_target(client, target(config))
        }

        /// Wraps a client, with the target given (`host:port | database`).
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// let client = Client::with_target(client, "orders-primary:5432 | orders");
        /// # Ok(())
        /// # }
        /// ```
        pub fn with_target(client: postgres::Client, target: impl Into<Arc<str>>) -> Client {
            TracedClient {
                inner: client,
                target: Target::new(SYSTEM, target),
            }
        }

        /// Starts a transaction (a `BEGIN` dependency); it rolls back when dropped uncommitted.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let mut tx = client.transaction()?;
        /// tx.execute("UPDATE orders SET total = total + 1 WHERE id = $1", &[&7_i64])?;
        /// tx.commit()?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
            let target = self.target.clone();
            let transaction = target
                .statement("BEGIN")
                .run_blocking(|| self.inner.transaction())?;
            Ok(TracedClient {
                inner: transaction,
                target,
            })
        }

        /// The wrapped client.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// // Calls made on it from here are not traced.
        /// let client: postgres::Client = client.into_inner();
        /// # Ok(())
        /// # }
        /// ```
        pub fn into_inner(self) -> postgres::Client {
            self.inner
        }
    }

    impl TracedClient<postgres::Transaction<'_>> {
        /// Commits (a `COMMIT` dependency).
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let mut tx = client.transaction()?;
        /// tx.batch_execute("DELETE FROM carts WHERE stale")?;
        /// tx.commit()?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn commit(self) -> Result<(), Error> {
            let TracedClient { inner, target } = self;
            target.statement("COMMIT").run_blocking(|| inner.commit())
        }

        /// Rolls back (a `ROLLBACK` dependency).
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let mut tx = client.transaction()?;
        /// tx.execute("UPDATE stock SET count = count - 1 WHERE sku = $1", &[&"caviar"])?;
        /// tx.rollback()?; // the change is undone
        /// # Ok(())
        /// # }
        /// ```
        pub fn rollback(self) -> Result<(), Error> {
            let TracedClient { inner, target } = self;
            target
                .statement("ROLLBACK")
                .run_blocking(|| inner.rollback())
        }
    }

    impl<C: GenericClient> TracedClient<C> {
        fn call(&self, sql: &str) -> Call {
            self.target.statement(sql)
        }

        /// The `host:port | database` the dependencies target.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// assert_eq!(client.target(), "127.0.0.1:5432 | orders");
        /// # Ok(())
        /// # }
        /// ```
        pub fn target(&self) -> &str {
            self.target.target()
        }

        /// The wrapped client or transaction (its calls are not traced).
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// // For what the wrapper does not offer; its calls are not traced.
        /// let closed = client.inner_mut().is_closed();
        /// # Ok(())
        /// # }
        /// ```
        pub fn inner_mut(&mut self) -> &mut C {
            &mut self.inner
        }

        /// Runs a statement and returns its rows; see [`postgres::Client::query`].
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let rows = client.query("SELECT id, total FROM orders WHERE customer = $1", &[&"ada"])?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn query<Q: Sql<postgres::Statement> + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<Row>, Error> {
            let call = self.call(query.sql());
            call.run_blocking(|| with_statement!(query, |s| self.inner.query(s, params)))
        }

        /// Runs a statement that returns exactly one row; see [`postgres::Client::query_one`].
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let row = client.query_one("SELECT total FROM orders WHERE id = $1", &[&7_i64])?;
        /// let total: i64 = row.get(0);
        /// # Ok(())
        /// # }
        /// ```
        pub fn query_one<Q: Sql<postgres::Statement> + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Row, Error> {
            let call = self.call(query.sql());
            call.run_blocking(|| with_statement!(query, |s| self.inner.query_one(s, params)))
        }

        /// Runs a statement that returns at most one row; see [`postgres::Client::query_opt`].
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let row = client.query_opt("SELECT total FROM orders WHERE id = $1", &[&7_i64])?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn query_opt<Q: Sql<postgres::Statement> + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<Row>, Error> {
            let call = self.call(query.sql());
            call.run_blocking(|| with_statement!(query, |s| self.inner.query_opt(s, params)))
        }

        /// Runs a statement and returns the number of rows it changed; see
        /// [`postgres::Client::execute`].
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let updated = client.execute("UPDATE orders SET total = $1 WHERE id = $2", &[&43_i64, &7_i64])?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn execute<Q: Sql<postgres::Statement> + ?Sized>(
            &mut self,
            query: &Q,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<u64, Error> {
            let call = self.call(query.sql());
            call.run_blocking(|| with_statement!(query, |s| self.inner.execute(s, params)))
        }

        /// Runs statements separated by semicolons: one dependency for the batch.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// client.batch_execute("CREATE TABLE IF NOT EXISTS carts (id BIGINT); TRUNCATE carts")?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
            let call = self.call(query);
            call.run_blocking(|| self.inner.batch_execute(query))
        }

        /// Runs statements with the simple query protocol.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let messages = client.simple_query("SELECT count(*) FROM orders")?;
        /// # Ok(())
        /// # }
        /// ```
        pub fn simple_query(&mut self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
            let call = self.call(query);
            call.run_blocking(|| self.inner.simple_query(query))
        }

        /// Prepares a statement (a dependency of its own), keeping its text.
        ///
        /// ```no_run
        /// use census_runtime::integrations::postgres::blocking::Client;
        ///
        /// # fn demo() -> Result<(), postgres::Error> {
        /// # let config: postgres::Config = "postgres://app@127.0.0.1/orders".parse()?;
        /// # let client = config.connect(postgres::NoTls)?;
        /// # let mut client = Client::new(client, &config);
        /// let by_id = client.prepare("SELECT total FROM orders WHERE id = $1")?;
        /// for id in [7_i64, 8] {
        ///     let row = client.query_one(&by_id, &[&id])?;
        /// }
        /// # Ok(())
        /// # }
        /// ```
        pub fn prepare(&mut self, query: &str) -> Result<Prepared<postgres::Statement>, Error> {
            let call = self.call(query);
            let statement = call.run_blocking(|| self.inner.prepare(query))?;
            Ok(Prepared::new(statement, query))
        }
    }
}
