//! PostgreSQL through `tokio-postgres` and `postgres`, against a real server
//! (`CENSUS_TEST_POSTGRES_URL`, started by scripts/services).

use std::time::Duration;

use census_runtime::dependency;
use census_runtime::integrations::postgres::{self, Client};
use census_tests::azure::{scratch_dir, settings};
use census_tests::db::{
    assert_child_of, assert_nested_under_repository, envelope_with_data, of_kind, server_url,
    unique, with_data,
};
use census_tests::ingestion::IngestionServer;
use census_tests::{flush, install_memory};

/// A value bound to statements that must never reach an envelope.
const SECRET: &str = "census-bound-secret-7319";

async fn connect() -> (Client, String) {
    let url = server_url("CENSUS_TEST_POSTGRES_URL");
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL accepts the connection");
    tokio::spawn(connection);
    let target = postgres::target(&config);
    (Client::new(client, &config), target)
}

/// The repository an application would write: every method a `SQL` dependency on
/// `orders-db`, the driver's calls nested under it.
struct Orders {
    client: Client,
    table: String,
}

#[dependency(kind = "SQL", target = "orders-db")]
impl Orders {
    async fn create(&self) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id serial PRIMARY KEY, note text NOT NULL, qty integer)",
                t = self.table
            ))
            .await
    }

    async fn add(&self, note: &str, qty: i32) -> Result<u64, tokio_postgres::Error> {
        let sql = format!("INSERT INTO {} (note, qty) VALUES ($1, $2)", self.table);
        self.client.execute(&sql, &[&note, &qty]).await
    }

    async fn count_above(&self, qty: i32) -> Result<i64, tokio_postgres::Error> {
        let sql = format!("SELECT count(*) FROM {} WHERE qty > $1", self.table);
        let statement = self.client.prepare(&sql).await?;
        let row = self.client.query_one(&statement, &[&qty]).await?;
        Ok(row.get(0))
    }

    async fn broken(&self) -> Result<u64, tokio_postgres::Error> {
        self.client
            .execute("SELECT * FROM no_such_table WHERE note = $1", &[&SECRET])
            .await
    }

    async fn after_failure(&self) -> Result<i32, tokio_postgres::Error> {
        Ok(self.client.query_one("SELECT 1", &[]).await?.get(0))
    }

    async fn drop_table(&self) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute(&format!("DROP TABLE {}", self.table))
            .await
    }
}

#[tokio::test]
async fn envelopes_of_statements_failures_and_nesting() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(
            settings(&server, &scratch_dir("db-postgres"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let (client, target) = connect().await;
    let orders = Orders {
        client,
        table: unique("pg_orders"),
    };
    let t = orders.table.clone();

    orders.create().await.unwrap();
    assert_eq!(orders.add(SECRET, 3).await.unwrap(), 1);
    assert_eq!(orders.add("plain", 9).await.unwrap(), 1);
    assert_eq!(orders.count_above(5).await.unwrap(), 1);
    let error = orders.broken().await.unwrap_err();
    assert_eq!(error.code().map(|c| c.code()), Some("42P01"));
    assert_eq!(orders.after_failure().await.unwrap(), 1);
    orders.drop_table().await.unwrap();

    census.flush(Duration::from_secs(10)).unwrap();
    let envelopes = server.items();
    let base = |e: &serde_json::Value| e["data"]["baseData"].clone();

    let insert = base(envelope_with_data(
        &envelopes,
        &format!("INSERT INTO {t} (note, qty) VALUES ($1, $2)"),
    ));
    assert_eq!(insert["type"], "postgresql");
    assert_eq!(insert["target"], target.as_str());
    assert!(
        target.starts_with("127.0.0.1:") && target.ends_with(" | census_test"),
        "{target}"
    );
    assert_eq!(insert["name"], format!("INSERT {t}"));
    assert_eq!(insert["success"], true);

    let select = base(envelope_with_data(
        &envelopes,
        &format!("SELECT count(*) FROM {t} WHERE qty > $1"),
    ));
    assert_eq!(select["name"], format!("SELECT {t}"));

    let failed = envelope_with_data(&envelopes, "SELECT * FROM no_such_table WHERE note = $1");
    assert_eq!(base(failed)["success"], false);
    assert_eq!(base(failed)["resultCode"], "42P01");
    assert_eq!(base(failed)["name"], "SELECT no_such_table");

    // Every driver call is a child of the repository method that made it, the one after the
    // failure included (the reference loses its parent there).
    let requests = server.requests();
    assert_nested_under_repository(
        &envelopes,
        envelopes
            .iter()
            .filter(|e| e["data"]["baseData"]["type"] == "postgresql"),
        envelope_with_data(&envelopes, "SELECT 1"),
        requests.iter().map(|r| r.body.as_slice()),
        SECRET,
    );
    // The repository's failing method failed too.
    let broken = envelopes
        .iter()
        .find(|e| e["data"]["baseData"]["name"] == "Orders::broken")
        .unwrap();
    assert_eq!(broken["data"]["baseData"]["success"], false);
}

#[tokio::test]
async fn a_transaction_is_begin_statements_commit_or_rollback() {
    let (pipeline, memory) = install_memory();
    let (mut client, _) = connect().await;
    let table = unique("pg_tx");
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY)"
        ))
        .await
        .unwrap();

    let work = async {
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {table} (id) VALUES ($1)"), &[&1_i32])
            .await
            .unwrap();
        // A duplicate key: the statement fails with 23505 and the transaction rolls back.
        let error = tx
            .execute(&format!("INSERT INTO {table} (id) VALUES ($1)"), &[&1_i32])
            .await
            .unwrap_err();
        assert_eq!(error.code().map(|c| c.code()), Some("23505"));
        tx.rollback().await.unwrap();

        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("INSERT INTO {table} (id) VALUES ($1)"), &[&2_i32])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };
    census_runtime::span("checkout").instrument(work).await;
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        count, 1,
        "the first transaction rolled back, the second committed"
    );
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    flush(&pipeline);

    let spans = memory.spans();
    let checkout = memory.one("checkout");
    let statements: Vec<_> = of_kind(&spans, "postgresql")
        .into_iter()
        .filter(|s| s.parent_id() == Some(checkout.span_id()))
        .collect();
    let names: Vec<&str> = statements.iter().map(|s| s.name()).collect();
    let insert = format!("INSERT {table}");
    assert_eq!(
        names,
        [
            "BEGIN", &insert, &insert, "ROLLBACK", "BEGIN", &insert, "COMMIT"
        ],
        "each statement of both transactions, in order, under the caller's span"
    );
    let duplicate = &statements[2];
    assert!(!duplicate.success());
    assert_eq!(duplicate.result_code(), Some("23505"));
    assert!(
        statements
            .iter()
            .enumerate()
            .all(|(i, s)| i == 2 || s.success())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_from_many_tasks_keep_their_parents() {
    let (pipeline, memory) = install_memory();
    let (client, _) = connect().await;
    let client = std::sync::Arc::new(client);
    let mut tasks = Vec::new();
    for task in 0..24_i32 {
        let client = client.clone();
        tasks.push(tokio::spawn(
            census_runtime::span(format!("task {task}")).instrument(async move {
                for round in 0..5_i32 {
                    let sql = format!("SELECT $1::int + {task} * 0 + {round} * 0");
                    let value: i32 = client.query_one(&sql, &[&task]).await.unwrap().get(0);
                    assert_eq!(value, task);
                    tokio::task::yield_now().await;
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
        for round in 0..5 {
            let sql = format!("SELECT $1::int + {task} * 0 + {round} * 0");
            assert_child_of(with_data(&spans, &sql), &parent);
        }
    }
}

/// The blocking client: the same spans, from sync code.
#[test]
fn the_blocking_client_records_the_same_dependencies() {
    let (pipeline, memory) = install_memory();
    let url = server_url("CENSUS_TEST_POSTGRES_URL");
    let config: ::postgres::Config = url.parse().unwrap();
    let client = config.connect(::postgres::NoTls).unwrap();
    let mut client = postgres::blocking::Client::new(client, &config);
    census_runtime::span("report").in_scope(|| {
        let row = client.query_one("SELECT $1::text", &[&SECRET]).unwrap();
        assert_eq!(row.get::<_, String>(0), SECRET);
        let error = client.execute("SELEC 1", &[]).unwrap_err();
        assert_eq!(error.code().map(|c| c.code()), Some("42601"));
        let mut tx = client.transaction().unwrap();
        tx.query("SELECT 2", &[]).unwrap();
        tx.commit().unwrap();
    });
    flush(&pipeline);

    let report = memory.one("report");
    let spans = of_kind(&memory.spans(), "postgresql");
    let names: Vec<&str> = spans.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["SELECT", "SELEC", "BEGIN", "SELECT", "COMMIT"]);
    for span in &spans {
        assert_child_of(span, &report);
        assert!(!span.properties().any(|(_, v)| v.contains(SECRET)));
    }
    assert_eq!(spans[0].data(), Some("SELECT $1::text"));
    assert_eq!(
        (spans[1].success(), spans[1].result_code()),
        (false, Some("42601"))
    );
}
