//! MySQL (MariaDB) through `mysql_async`, against a real server (`CENSUS_TEST_MYSQL_URL`,
//! started by scripts/services).

use std::time::Duration;

use census_runtime::dependency;
use census_runtime::integrations::mysql::Conn;
use census_tests::azure::{scratch_dir, settings};
use census_tests::db::{
    assert_child_of, assert_nested_under_repository, base, envelope_with_data, outcomes_under,
    server_url, unique, with_data,
};
use census_tests::ingestion::IngestionServer;
use census_tests::{flush, install_memory};
use mysql_async::prelude::Queryable;
use serde_json::Value;

const SECRET: &str = "census-bound-secret-8846";

async fn connect() -> Conn {
    let url = server_url("CENSUS_TEST_MYSQL_URL");
    Conn::new(
        mysql_async::Conn::from_url(url)
            .await
            .expect("MariaDB accepts the connection"),
    )
}

struct Orders {
    conn: tokio::sync::Mutex<Conn>,
    table: String,
}

#[dependency(kind = "SQL", target = "orders-db")]
impl Orders {
    async fn create(&self) -> Result<(), mysql_async::Error> {
        let mut conn = self.conn.lock().await;
        conn.query_drop(format!("DROP TABLE IF EXISTS {}", self.table))
            .await?;
        conn.query_drop(format!(
            "CREATE TABLE {} (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64) UNIQUE, qty INT)",
            self.table
        ))
        .await
    }

    async fn add(&self, note: &str, qty: i32) -> Result<(), mysql_async::Error> {
        let sql = format!("INSERT INTO {} (note, qty) VALUES (?, ?)", self.table);
        self.conn
            .lock()
            .await
            .exec_drop(sql.as_str(), (note, qty))
            .await
    }

    async fn notes_above(&self, qty: i32) -> Result<Vec<String>, mysql_async::Error> {
        let mut conn = self.conn.lock().await;
        let sql = format!("SELECT note FROM {} WHERE qty > ? ORDER BY id", self.table);
        let statement = conn.prepare(&sql).await?;
        conn.exec(&statement, (qty,)).await
    }

    async fn broken(&self) -> Result<Option<i32>, mysql_async::Error> {
        self.conn
            .lock()
            .await
            .exec_first("SELECT qty FROM no_such_table WHERE note = ?", (SECRET,))
            .await
    }

    async fn after_failure(&self) -> Result<Option<i32>, mysql_async::Error> {
        self.conn.lock().await.query_first("SELECT 1").await
    }

    async fn drop_table(&self) -> Result<(), mysql_async::Error> {
        let sql = format!("DROP TABLE {}", self.table);
        self.conn.lock().await.query_drop(sql).await
    }
}

#[tokio::test]
async fn envelopes_of_statements_failures_and_nesting() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(
            settings(&server, &scratch_dir("db-mysql"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let conn = connect().await;
    let target = conn.target().to_owned();
    assert!(
        target.starts_with("127.0.0.1:") && target.ends_with(" | census_test"),
        "{target}"
    );
    let orders = Orders {
        conn: tokio::sync::Mutex::new(conn),
        table: unique("my_orders"),
    };
    let t = orders.table.clone();

    orders.create().await.unwrap();
    orders.add(SECRET, 3).await.unwrap();
    orders.add("plain", 9).await.unwrap();
    assert_eq!(orders.notes_above(5).await.unwrap(), ["plain"]);
    match orders.add("plain", 1).await.unwrap_err() {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1062),
        other => panic!("a duplicate key, got {other}"),
    }
    match orders.broken().await.unwrap_err() {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1146),
        other => panic!("a missing table, got {other}"),
    }
    assert_eq!(orders.after_failure().await.unwrap(), Some(1));
    orders.drop_table().await.unwrap();
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = server.items();
    let insert_sql = format!("INSERT INTO {t} (note, qty) VALUES (?, ?)");
    let inserts: Vec<&Value> = envelopes
        .iter()
        .filter(|e| base(e)["data"] == insert_sql.as_str())
        .collect();
    assert_eq!(inserts.len(), 3);
    for insert in &inserts {
        assert_eq!(base(insert)["type"], "mysql");
        assert_eq!(base(insert)["target"], target.as_str());
        assert_eq!(base(insert)["name"], format!("INSERT {t}"));
    }
    let duplicate = inserts
        .iter()
        .find(|e| base(e)["success"] == false)
        .expect("the duplicate insert failed");
    assert_eq!(base(duplicate)["resultCode"], "1062");

    let select = base(envelope_with_data(
        &envelopes,
        &format!("SELECT note FROM {t} WHERE qty > ? ORDER BY id"),
    ));
    assert_eq!(select["name"], format!("SELECT {t}"));
    assert_eq!(select["success"], true);

    let failed = base(envelope_with_data(
        &envelopes,
        "SELECT qty FROM no_such_table WHERE note = ?",
    ));
    assert_eq!(
        (&failed["success"], &failed["resultCode"]),
        (&Value::from(false), &Value::from("1146"))
    );

    let requests = server.requests();
    assert_nested_under_repository(
        &envelopes,
        envelopes.iter().filter(|e| base(e)["type"] == "mysql"),
        envelope_with_data(&envelopes, "SELECT 1"),
        requests.iter().map(|r| r.body.as_slice()),
        SECRET,
    );
}

#[tokio::test]
async fn transactions_commit_roll_back_and_roll_back_when_dropped() {
    let (pipeline, memory) = install_memory();
    let mut conn = connect().await;
    let table = unique("my_tx");
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY) ENGINE=InnoDB"
    ))
    .await
    .unwrap();
    let insert = format!("INSERT INTO {table} (id) VALUES (?)");
    census_runtime::span("checkout")
        .instrument(async {
            let mut tx = conn.start_transaction().await.unwrap();
            tx.exec_drop(insert.as_str(), (1,)).await.unwrap();
            assert!(tx.exec_drop(insert.as_str(), (1,)).await.is_err());
            tx.rollback().await.unwrap();

            let mut tx = conn.start_transaction().await.unwrap();
            tx.exec_drop(insert.as_str(), (2,)).await.unwrap();
            tx.commit().await.unwrap();

            // Dropped uncommitted: rolled back before the connection's next statement.
            let mut tx = conn.start_transaction().await.unwrap();
            tx.exec_drop(insert.as_str(), (3,)).await.unwrap();
            drop(tx);
            let ids: Vec<i32> = conn
                .query(format!("SELECT id FROM {table} ORDER BY id"))
                .await
                .unwrap();
            assert_eq!(ids, [2]);
        })
        .await;
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
    flush(&pipeline);

    let checkout = memory.one("checkout");
    let names: Vec<String> = outcomes_under(&memory.spans(), "mysql", &checkout);
    let i = format!("INSERT {table}:true");
    assert_eq!(
        names,
        [
            "START:true",
            i.as_str(),
            &format!("INSERT {table}:false"),
            "ROLLBACK:true",
            "START:true",
            i.as_str(),
            "COMMIT:true",
            "START:true",
            i.as_str(),
            "ROLLBACK:true",
            &format!("SELECT {table}:true"),
        ]
    );
}

/// Generic code over `Queryable` still records each call, nested and failed, without the text
/// `mysql_async` keeps to itself.
async fn generic<Q: Queryable>(conn: &mut Q) -> Result<(), mysql_async::Error> {
    conn.exec_drop("SELECT ? FROM no_such_table", (SECRET,))
        .await
}

#[tokio::test]
async fn generic_queryable_code_is_traced_without_the_text() {
    let (pipeline, memory) = install_memory();
    let mut conn = connect().await;
    let result = census_runtime::span("caller")
        .instrument(generic(&mut conn))
        .await;
    assert!(result.is_err());
    flush(&pipeline);
    let span = memory.one("EXECUTE");
    assert_child_of(&span, &memory.one("caller"));
    assert_eq!(
        (span.kind(), span.success(), span.result_code()),
        ("mysql", false, Some("1146"))
    );
    assert_eq!(span.data(), None);
    assert!(!span.error_message().unwrap_or_default().contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_queries_from_many_tasks_keep_their_parents() {
    let (pipeline, memory) = install_memory();
    let pool = mysql_async::Pool::new(server_url("CENSUS_TEST_MYSQL_URL").as_str());
    let mut tasks = Vec::new();
    for task in 0..16_i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(
            census_runtime::span(format!("task {task}")).instrument(async move {
                let mut conn = Conn::new(pool.get_conn().await.unwrap());
                for round in 0..5 {
                    let sql = format!("SELECT ? + {task} * 0 + {round} * 0");
                    let value: Option<i64> = conn.exec_first(sql.as_str(), (task,)).await.unwrap();
                    assert_eq!(value, Some(i64::from(task)));
                    tokio::task::yield_now().await;
                }
            }),
        ));
    }
    for task in tasks {
        task.await.unwrap();
    }
    pool.disconnect().await.unwrap();
    flush(&pipeline);
    let spans = memory.spans();
    for task in 0..16 {
        let parent = memory.one(&format!("task {task}"));
        for round in 0..5 {
            assert_child_of(
                with_data(&spans, &format!("SELECT ? + {task} * 0 + {round} * 0")),
                &parent,
            );
        }
    }
}

/// MySQL quotes a duplicate value in its message: the integration's span records the message
/// with the quoted parts replaced.
#[tokio::test]
async fn a_duplicate_value_quoted_by_mysql_is_not_recorded() {
    let (pipeline, memory) = install_memory();
    let mut conn = connect().await;
    conn.query_drop("CREATE TEMPORARY TABLE notes (note VARCHAR(64) PRIMARY KEY)")
        .await
        .unwrap();
    conn.exec_drop("INSERT INTO notes (note) VALUES (?)", (SECRET,))
        .await
        .unwrap();
    let error = conn
        .exec_drop("INSERT INTO notes (note) VALUES (?)", (SECRET,))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(SECRET),
        "MySQL quotes it: {error}"
    );
    flush(&pipeline);
    let inserts = memory.named("INSERT notes");
    assert_eq!(inserts.len(), 2);
    assert_eq!(inserts[1].result_code(), Some("1062"));
    assert_eq!(
        inserts[1].error_message(),
        Some("Duplicate entry '?' for key '?'")
    );
}
