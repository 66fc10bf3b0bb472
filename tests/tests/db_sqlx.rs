//! `sqlx` on its three back ends: SQLite in memory (envelopes through the ingestion server),
//! PostgreSQL and MariaDB (the servers scripts/services starts).

use std::time::Duration;

use census_runtime::dependency;
use census_runtime::integrations::sqlx::Target;
use census_tests::azure::{scratch_dir, settings};
use census_tests::db::{
    assert_child_of, assert_nested_under_repository, base, envelope_with_data, of_kind, server_url,
    unique, with_data,
};
use census_tests::ingestion::IngestionServer;
use census_tests::{flush, install_memory};
use serde_json::Value;
use sqlx::Row;

const SECRET: &str = "census-bound-secret-3307";

struct Orders {
    pool: sqlx::SqlitePool,
    db: Target,
}

#[dependency(kind = "SQL", target = "orders-db")]
impl Orders {
    async fn create(&self) -> Result<(), sqlx::Error> {
        sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT UNIQUE, qty INTEGER)")
            .execute(self.db.on(&self.pool))
            .await
            .map(drop)
    }

    async fn add(&self, note: &str, qty: i64) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO orders (note, qty) VALUES (?1, ?2)")
            .bind(note)
            .bind(qty)
            .execute(self.db.on(&self.pool))
            .await
            .map(drop)
    }

    async fn notes_above(&self, qty: i64) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT note FROM orders WHERE qty > ?1 ORDER BY id")
            .bind(qty)
            .fetch_all(self.db.on(&self.pool))
            .await
    }

    /// Through `fetch` (a stream of rows): the span lasts until the last row.
    async fn count_rows(&self) -> Result<usize, sqlx::Error> {
        use futures_util::TryStreamExt;
        let rows: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("SELECT id FROM orders")
            .fetch(self.db.on(&self.pool))
            .try_collect()
            .await?;
        Ok(rows.len())
    }

    async fn broken(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT qty FROM no_such_table WHERE note = ?1")
            .bind(SECRET)
            .fetch_optional(self.db.on(&self.pool))
            .await
    }

    async fn after_failure(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT 1")
            .fetch_one(self.db.on(&self.pool))
            .await
    }
}

#[tokio::test]
async fn sqlite_envelopes_failures_and_nesting() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(
            settings(&server, &scratch_dir("db-sqlx"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let orders = Orders {
        pool,
        db: Target::from_url("sqlite::memory:"),
    };
    orders.create().await.unwrap();
    orders.add(SECRET, 3).await.unwrap();
    orders.add("plain", 9).await.unwrap();
    assert_eq!(orders.notes_above(5).await.unwrap(), ["plain"]);
    assert_eq!(orders.count_rows().await.unwrap(), 2);
    assert!(orders.add("plain", 1).await.is_err());
    assert!(orders.broken().await.is_err());
    assert_eq!(orders.after_failure().await.unwrap(), 1);
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = server.items();
    let inserts: Vec<&Value> = envelopes
        .iter()
        .filter(|e| base(e)["data"] == "INSERT INTO orders (note, qty) VALUES (?1, ?2)")
        .collect();
    assert_eq!(inserts.len(), 3);
    for insert in &inserts {
        assert_eq!(base(insert)["type"], "sqlite");
        assert_eq!(base(insert)["target"], ":memory:");
        assert_eq!(base(insert)["name"], "INSERT orders");
    }
    let duplicate = inserts
        .iter()
        .find(|e| base(e)["success"] == false)
        .unwrap();
    assert_eq!(
        base(duplicate)["resultCode"],
        "2067",
        "SQLITE_CONSTRAINT_UNIQUE"
    );
    let failed = base(envelope_with_data(
        &envelopes,
        "SELECT qty FROM no_such_table WHERE note = ?1",
    ));
    assert_eq!(
        (&failed["success"], &failed["resultCode"]),
        (&Value::from(false), &Value::from("1"))
    );
    let stream = base(envelope_with_data(&envelopes, "SELECT id FROM orders"));
    assert_eq!(
        (&stream["name"], &stream["success"]),
        (&Value::from("SELECT orders"), &Value::from(true))
    );

    let requests = server.requests();
    assert_nested_under_repository(
        &envelopes,
        envelopes.iter().filter(|e| base(e)["type"] == "sqlite"),
        envelope_with_data(&envelopes, "SELECT 1"),
        requests.iter().map(|r| r.body.as_slice()),
        SECRET,
    );
}

#[tokio::test]
async fn postgres_failures_transactions_and_codes() {
    let (pipeline, memory) = install_memory();
    let url = server_url("CENSUS_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let db = Target::from_url(&url);
    assert_eq!(db.system(), "postgresql");
    let table = unique("sqlx_pg");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id int PRIMARY KEY)"
    )))
    .execute(db.on(&pool))
    .await
    .unwrap();
    census_runtime::span("checkout")
        .instrument(async {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (id) VALUES ($1)"
            )))
            .bind(1_i32)
            .execute(db.on(&mut *tx))
            .await
            .unwrap();
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(db.on(&mut *tx))
                .await
                .unwrap();
            assert_eq!(row.get::<i64, _>(0), 1);
            tx.commit().await.unwrap();
            let error = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (id) VALUES ($1)"
            )))
            .bind(1_i32)
            .execute(db.on(&pool))
            .await
            .unwrap_err();
            assert_eq!(
                error.as_database_error().and_then(|e| e.code()).as_deref(),
                Some("23505")
            );
        })
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pool)
        .await
        .unwrap();
    flush(&pipeline);

    let checkout = memory.one("checkout");
    let spans: Vec<_> = of_kind(&memory.spans(), "postgresql")
        .into_iter()
        .filter(|s| s.parent_id() == Some(checkout.span_id()))
        .collect();
    let summary: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{}:{}:{}",
                s.name(),
                s.success(),
                s.result_code().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            format!("INSERT {table}:true:-"),
            format!("SELECT {table}:true:-"),
            format!("INSERT {table}:false:23505"),
        ]
    );
    assert!(spans.iter().all(|s| s.target() == Some(db.target())));
}

#[tokio::test]
async fn mysql_failures_carry_the_error_number() {
    let (pipeline, memory) = install_memory();
    let url = server_url("CENSUS_TEST_MYSQL_URL");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let db = Target::from_url(&url);
    census_runtime::span("report")
        .instrument(async {
            let n: i64 = sqlx::query_scalar("SELECT ? + 1")
                .bind(41_i64)
                .fetch_one(db.on(&pool))
                .await
                .unwrap();
            assert_eq!(n, 42);
            let error = sqlx::query("SELECT * FROM no_such_table WHERE note = ?")
                .bind(SECRET)
                .execute(db.on(&pool))
                .await
                .unwrap_err();
            assert!(error.as_database_error().is_some());
            // MySQL quotes a duplicate value in its message; census does not record it.
            sqlx::query("CREATE TEMPORARY TABLE notes (note VARCHAR(64) PRIMARY KEY)")
                .execute(db.on(&mut *conn))
                .await
                .unwrap();
            for _ in 0..2 {
                let _ = sqlx::query("INSERT INTO notes (note) VALUES (?)")
                    .bind(SECRET)
                    .execute(db.on(&mut *conn))
                    .await;
            }
        })
        .await;
    flush(&pipeline);
    let report = memory.one("report");
    let spans = of_kind(&memory.spans(), "mysql");
    assert_eq!(spans.len(), 5);
    for span in &spans {
        assert_child_of(span, &report);
        assert_eq!(span.target(), Some(db.target()));
        assert!(!span.error_message().unwrap_or_default().contains(SECRET));
    }
    let duplicate = spans.last().unwrap();
    assert_eq!(
        (duplicate.success(), duplicate.result_code()),
        (false, Some("1062"))
    );
    assert_eq!(
        duplicate.error_message(),
        Some("Duplicate entry '?' for key '?'")
    );
    let failed = with_data(&spans, "SELECT * FROM no_such_table WHERE note = ?");
    assert_eq!(
        (failed.success(), failed.result_code()),
        (false, Some("1146"))
    );
    assert!(!failed.error_message().unwrap_or_default().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_from_many_tasks_keep_their_parents() {
    let (pipeline, memory) = install_memory();
    let url = server_url("CENSUS_TEST_POSTGRES_URL");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let db = Target::from_url(&url);
    let mut tasks = Vec::new();
    for task in 0..24_i32 {
        let (pool, db) = (pool.clone(), db.clone());
        tasks.push(tokio::spawn(
            census_runtime::span(format!("task {task}")).instrument(async move {
                for round in 0..4 {
                    let sql = format!("SELECT $1::int + {task} * 0 + {round} * 0");
                    let value: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(task)
                        .fetch_one(db.on(&pool))
                        .await
                        .unwrap();
                    assert_eq!(value, task);
                }
            }),
        ));
    }
    for task in tasks {
        task.await.unwrap();
    }
    flush(&pipeline);
    let spans = memory.spans();
    for task in 0..24 {
        let parent = memory.one(&format!("task {task}"));
        for round in 0..4 {
            assert_child_of(
                with_data(
                    &spans,
                    &format!("SELECT $1::int + {task} * 0 + {round} * 0"),
                ),
                &parent,
            );
        }
    }
}
