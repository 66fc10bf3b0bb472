//! Every database integration, printed as operation trees.
//!
//! ```sh
//! cargo run -p census-runtime --example databases --features rusqlite,diesel,sqlx,tokio-postgres,postgres,mysql_async,mongodb
//! ```
//!
//! SQLite (rusqlite, diesel, sqlx) runs in memory. PostgreSQL, MySQL and MongoDB run when their
//! URLs are set (`CENSUS_TEST_POSTGRES_URL`, `CENSUS_TEST_MYSQL_URL`, `CENSUS_TEST_MONGODB_URL`,
//! as `scripts/services start` writes them), and are skipped otherwise.

use std::time::Duration;

use census_runtime::dependency;
use census_runtime::export::ConsoleExporter;
use census_runtime::integrations;
use diesel::RunQueryDsl;
use diesel::connection::{Connection as _, SimpleConnection};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Shop;

#[dependency(kind = "SQL", target = "orders-db")]
impl Shop {
    fn rusqlite(&self) -> Result<(), rusqlite::Error> {
        let conn = integrations::rusqlite::Connection::new(rusqlite::Connection::open_in_memory()?);
        conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
        conn.execute("INSERT INTO orders (total) VALUES (?1)", [42])?;
        let total: i64 =
            conn.query_row("SELECT total FROM orders WHERE id = ?1", [1], |r| r.get(0))?;
        assert_eq!(total, 42);
        // A failure: SQLite's extended code (1) on the span.
        assert!(conn.execute("DELETE FROM no_such_table", []).is_err());
        Ok(())
    }

    fn diesel(&self) -> Result<(), diesel::result::Error> {
        let mut conn = diesel::SqliteConnection::establish(":memory:")
            .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
        conn.set_instrumentation(integrations::diesel::QueryTracer::for_url(":memory:"));
        conn.batch_execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")?;
        diesel::sql_query("INSERT INTO orders (total) VALUES (?)")
            .bind::<diesel::sql_types::BigInt, _>(42)
            .execute(&mut conn)?;
        Ok(())
    }

    async fn sqlx(&self) -> Result<(), sqlx::Error> {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await?;
        let db = integrations::sqlx::Target::from_url("sqlite::memory:");
        sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
            .execute(db.on(&pool))
            .await?;
        let total: i64 = sqlx::query_scalar("SELECT ?1 + 1")
            .bind(41_i64)
            .fetch_one(db.on(&pool))
            .await?;
        assert_eq!(total, 42);
        Ok(())
    }

    async fn postgres(&self, url: &str) -> Result<(), Error> {
        let config: tokio_postgres::Config = url.parse()?;
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let client = integrations::postgres::Client::new(client, &config);
        let row = client.query_one("SELECT $1::int + 1", &[&41_i32]).await?;
        assert_eq!(row.get::<_, i32>(0), 42);
        // A failure: SQLSTATE 42P01 on the span.
        assert!(
            client
                .execute("SELECT * FROM no_such_table", &[])
                .await
                .is_err()
        );
        Ok(())
    }

    async fn mysql(&self, url: &str) -> Result<(), Error> {
        let mut conn = integrations::mysql::Conn::new(mysql_async::Conn::from_url(url).await?);
        let total: Option<i64> = conn.exec_first("SELECT ? + 1", (41,)).await?;
        assert_eq!(total, Some(42));
        conn.into_inner().disconnect().await?;
        Ok(())
    }

    async fn mongodb(&self, url: &str) -> Result<(), Error> {
        let mut options = mongodb::options::ClientOptions::parse(url).await?;
        options.server_selection_timeout = Some(Duration::from_secs(5));
        integrations::mongodb::install(&mut options);
        let client = mongodb::Client::with_options(options)?;
        let orders = client
            .database("census_example")
            .collection::<mongodb::bson::Document>("orders");
        orders
            .insert_one(mongodb::bson::doc! { "total": 42 })
            .await?;
        orders.drop().await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let census = census_runtime::pipeline()
        .cloud_role("databases-example")
        .exporter(ConsoleExporter::stdout())
        .install()?;
    let shop = Shop;
    shop.rusqlite()?;
    shop.diesel()?;
    shop.sqlx().await?;
    for (var, system) in [
        ("CENSUS_TEST_POSTGRES_URL", "PostgreSQL"),
        ("CENSUS_TEST_MYSQL_URL", "MySQL"),
        ("CENSUS_TEST_MONGODB_URL", "MongoDB"),
    ] {
        let Ok(url) = std::env::var(var) else {
            println!("{system}: {var} is not set, skipped");
            continue;
        };
        match system {
            "PostgreSQL" => shop.postgres(&url).await?,
            "MySQL" => shop.mysql(&url).await?,
            _ => shop.mongodb(&url).await?,
        }
    }
    census.flush(Duration::from_secs(10))?;
    Ok(())
}
