//! An order service instrumented with census: a repository trait backed by SQLite and
//! annotated once at its `impl` block, a pricing function, an async checkout flow, the log
//! records it writes through `log`, and a `tracing` span around its report.

use std::fmt;
use std::sync::Mutex;

use census_runtime::{current_span, dependency, inproc};
use rusqlite::{Connection, params};

/// An order as the service stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The order's id.
    pub id: i64,
    /// Who placed it.
    pub customer: String,
    /// What was ordered.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

/// What can go wrong in the service.
#[derive(Debug)]
pub enum OrderError {
    /// The database said no.
    Database(rusqlite::Error),
    /// The product has no price.
    UnknownProduct(String),
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::Database(error) => write!(f, "database error: {error}"),
            OrderError::UnknownProduct(sku) => write!(f, "no price for product {sku}"),
        }
    }
}

impl std::error::Error for OrderError {}

impl From<rusqlite::Error> for OrderError {
    fn from(error: rusqlite::Error) -> Self {
        OrderError::Database(error)
    }
}

/// Where orders are kept. The futures are `Send`, so a repository can serve spawned tasks.
pub trait OrderRepository {
    /// Stores a new order and returns its id.
    fn insert(
        &self,
        customer: &str,
        sku: &str,
        quantity: u32,
    ) -> impl Future<Output = Result<i64, OrderError>> + Send;
    /// Loads one order.
    fn get(&self, id: i64) -> impl Future<Output = Result<Order, OrderError>> + Send;
    /// Counts a customer's orders.
    fn count_for(&self, customer: &str) -> impl Future<Output = Result<u32, OrderError>> + Send;
    /// Loads the audit log, from a table the schema forgot: this call always fails.
    fn audit_log(&self) -> impl Future<Output = Result<Vec<String>, OrderError>> + Send;
    /// The number of connections (no database call, not instrumented).
    fn pool_size(&self) -> usize;
}

/// The SQLite repository: every method is a `SQL` dependency on `orders-db`.
pub struct SqliteOrders {
    connection: Mutex<Connection>,
}

impl SqliteOrders {
    /// An in-memory database with the schema and a few products.
    pub fn open_in_memory() -> Result<Self, OrderError> {
        let connection = Connection::open_in_memory()?;
        connection.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL);",
        )?;
        Ok(SqliteOrders {
            connection: Mutex::new(connection),
        })
    }

    fn run<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, OrderError> {
        // The statement is known only here: record it on the current span.
        current_span().set_data(sql);
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(f(&connection)?)
    }
}

#[dependency(kind = "SQL", target = "orders-db")]
impl OrderRepository for SqliteOrders {
    async fn insert(&self, customer: &str, sku: &str, quantity: u32) -> Result<i64, OrderError> {
        const SQL: &str = "INSERT INTO orders (customer, sku, quantity) VALUES (?1, ?2, ?3)";
        self.run(SQL, |c| {
            c.execute(SQL, params![customer, sku, quantity])?;
            Ok(c.last_insert_rowid())
        })
    }

    async fn get(&self, id: i64) -> Result<Order, OrderError> {
        const SQL: &str = "SELECT id, customer, sku, quantity FROM orders WHERE id = ?1";
        self.run(SQL, |c| {
            c.query_row(SQL, [id], |row| {
                Ok(Order {
                    id: row.get(0)?,
                    customer: row.get(1)?,
                    sku: row.get(2)?,
                    quantity: row.get(3)?,
                })
            })
        })
    }

    async fn count_for(&self, customer: &str) -> Result<u32, OrderError> {
        const SQL: &str = "SELECT COUNT(*) FROM orders WHERE customer = ?1";
        self.run(SQL, |c| c.query_row(SQL, [customer], |row| row.get(0)))
    }

    async fn audit_log(&self) -> Result<Vec<String>, OrderError> {
        const SQL: &str = "SELECT entry FROM audit_log";
        self.run(SQL, |c| {
            let mut statement = c.prepare(SQL)?;
            let rows = statement.query_map([], |row| row.get(0))?;
            rows.collect()
        })
    }

    #[dependency(skip)]
    fn pool_size(&self) -> usize {
        1
    }
}

/// The unit price of a product, in cents.
#[inproc(fields(sku, quantity))]
pub fn price(sku: &str, quantity: u32) -> Result<u64, OrderError> {
    let unit = match sku {
        "coffee" => 450,
        "bagel" => 275,
        "tea" => 300,
        other => {
            log::warn!(sku = other; "no price for {other}");
            return Err(OrderError::UnknownProduct(other.to_owned()));
        }
    };
    Ok(unit * u64::from(quantity))
}

/// Places an order: prices it, stores it, reads it back.
#[inproc(name = "place order", fields(customer))]
pub async fn place_order(
    repository: &impl OrderRepository,
    customer: &str,
    sku: &str,
    quantity: u32,
) -> Result<(Order, u64), OrderError> {
    let total = price(sku, quantity)?;
    let id = repository.insert(customer, sku, quantity).await?;
    tokio::task::yield_now().await;
    let order = repository.get(id).await?;
    current_span().set_property("order.id", id);
    log::info!(customer, total; "order {id} placed");
    census_runtime::event("order_placed")
        .property("sku", sku)
        .measurement("total", total as f64)
        .send();
    Ok((order, total))
}

/// The demo's flow: a few orders, one for a product with no price, and a report whose audit
/// query fails.
#[inproc(name = "checkout session")]
pub async fn checkout_session(repository: &SqliteOrders) -> Vec<Result<(Order, u64), OrderError>> {
    let mut results = Vec::new();
    for (customer, sku, quantity) in [
        ("ada", "coffee", 2),
        ("grace", "bagel", 1),
        ("ada", "caviar", 1),
    ] {
        results.push(place_order(repository, customer, sku, quantity).await);
    }
    let _ = daily_report(repository).await;
    results
}

/// Counts orders and reads the audit log (which fails: the table does not exist). The queries
/// run inside a `tracing` span, as a library using `tracing` would open one: it nests under
/// the report's census span, and the repository's spans nest under it.
#[inproc]
pub async fn daily_report(repository: &SqliteOrders) -> Result<(u32, usize), OrderError> {
    use tracing::Instrument;
    async {
        let count = repository.count_for("ada").await?;
        tracing::info!(count, "orders counted");
        let audit = repository.audit_log().await?;
        Ok((count, audit.len()))
    }
    .instrument(tracing::info_span!("report queries", report = "daily"))
    .await
}
