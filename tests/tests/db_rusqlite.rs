//! SQLite through `rusqlite`: statements traced by SQLite's own events, failures by the call's
//! `Result`.

use census_runtime::dependency;
use census_runtime::integrations::rusqlite::Connection;
use census_tests::db::{assert_child_of, of_kind, outcomes_under, with_data};
use census_tests::{flush, install_memory};

const SECRET: &str = "census-bound-secret-5521";

struct Orders {
    conn: Connection,
}

#[dependency(kind = "SQL", target = "orders-db")]
impl Orders {
    fn create(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT UNIQUE, qty INTEGER)",
        )
    }

    fn add(&self, note: &str, qty: i64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "INSERT INTO orders (note, qty) VALUES (?1, ?2)",
            (note, qty),
        )
    }

    /// Through rusqlite's own API (`Deref`): traced by SQLite's statement and profile events.
    fn notes_above(&self, qty: i64) -> rusqlite::Result<Vec<String>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT note FROM orders WHERE qty > ?1 ORDER BY id")?;
        let notes = statement.query_map([qty], |row| row.get(0))?;
        notes.collect()
    }

    fn missing_table(&self) -> rusqlite::Result<i64> {
        self.conn.query_row(
            "SELECT qty FROM no_such_table WHERE note = ?1",
            [SECRET],
            |r| r.get(0),
        )
    }

    fn after_failure(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("SELECT 1", [], |r| r.get(0))
    }
}

#[test]
fn statements_failures_and_nesting() {
    let (pipeline, memory) = install_memory();
    let orders = Orders {
        conn: Connection::new(rusqlite::Connection::open_in_memory().unwrap()),
    };
    orders.create().unwrap();
    orders.add(SECRET, 3).unwrap();
    orders.add("plain", 9).unwrap();
    assert_eq!(orders.notes_above(5).unwrap(), ["plain"]);
    // A unique constraint: SQLITE_CONSTRAINT_UNIQUE, extended code 2067.
    let duplicate = orders.add("plain", 1).unwrap_err();
    assert_eq!(
        duplicate.sqlite_error().map(|e| e.extended_code),
        Some(2067)
    );
    assert!(orders.missing_table().is_err());
    assert_eq!(orders.after_failure().unwrap(), 1);
    flush(&pipeline);

    let spans = memory.spans();
    let sqlite = of_kind(&spans, "sqlite");
    for span in &sqlite {
        assert_eq!(span.target(), Some(":memory:"));
        let method = spans
            .iter()
            .find(|p| Some(p.span_id()) == span.parent_id())
            .unwrap_or_else(|| panic!("{} has its parent", span.name()));
        assert_eq!((method.kind(), method.target()), ("SQL", Some("orders-db")));
        assert!(method.name().starts_with("Orders::"));
        assert_child_of(span, method);
        for (_, value) in span.properties() {
            assert!(!value.contains(SECRET));
        }
        assert!(!span.data().unwrap_or_default().contains(SECRET));
        assert!(!span.error_message().unwrap_or_default().contains(SECRET));
    }
    let inserts: Vec<_> = sqlite
        .iter()
        .filter(|s| s.data() == Some("INSERT INTO orders (note, qty) VALUES (?1, ?2)"))
        .collect();
    assert_eq!(
        inserts.len(),
        3,
        "one span per call, not one per SQLite event"
    );
    assert!(inserts[0].success() && inserts[1].success());
    assert_eq!(inserts[0].name(), "INSERT orders");
    assert!(!inserts[2].success());
    assert_eq!(inserts[2].result_code(), Some("2067"));

    let select = with_data(
        &sqlite,
        "SELECT note FROM orders WHERE qty > ?1 ORDER BY id",
    );
    assert_eq!(select.name(), "SELECT orders");
    assert!(select.success());
    assert_child_of(select, &memory.one("Orders::notes_above"));

    let missing = with_data(&sqlite, "SELECT qty FROM no_such_table WHERE note = ?1");
    assert!(!missing.success());
    assert_eq!(missing.result_code(), Some("1"), "SQLITE_ERROR");
    assert!(missing.error_message().unwrap().contains("no_such_table"));
    assert_child_of(
        with_data(&sqlite, "SELECT 1"),
        &memory.one("Orders::after_failure"),
    );
}

#[test]
fn a_transaction_is_traced_statement_by_statement() {
    let (pipeline, memory) = install_memory();
    let mut conn = Connection::new(rusqlite::Connection::open_in_memory().unwrap());
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .unwrap();
    census_runtime::span("checkout").in_scope(|| {
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO t (id) VALUES (?1)", [1]).unwrap();
        assert!(tx.execute("INSERT INTO t (id) VALUES (?1)", [1]).is_err());
        tx.rollback().unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute("INSERT INTO t (id) VALUES (?1)", [2]).unwrap();
        tx.commit().unwrap();
    });
    let count: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    flush(&pipeline);

    let checkout = memory.one("checkout");
    let names: Vec<String> = outcomes_under(&memory.spans(), "sqlite", &checkout);
    assert_eq!(
        names,
        [
            "BEGIN:true",
            "INSERT t:true",
            "INSERT t:false",
            "ROLLBACK:true",
            "BEGIN:true",
            "INSERT t:true",
            "COMMIT:true"
        ]
    );
}

#[test]
fn many_threads_each_nest_under_their_own_span() {
    let (pipeline, memory) = install_memory();
    let dir = census_tests::azure::scratch_dir("db-rusqlite-threads");
    let path = dir.join("orders.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER)")
            .unwrap();
    }
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let path = path.clone();
            scope.spawn(move || {
                let conn = Connection::new(rusqlite::Connection::open(&path).unwrap());
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                census_runtime::span(format!("worker {thread}")).in_scope(|| {
                    for round in 0..5 {
                        let sql = format!("SELECT {thread} + {round} * 0 + ?1");
                        let n: i64 = conn
                            .prepare(&sql)
                            .unwrap()
                            .query_row([0], |r| r.get(0))
                            .unwrap();
                        assert_eq!(n, thread);
                    }
                });
            });
        }
    });
    flush(&pipeline);
    let spans = memory.spans();
    for thread in 0..8 {
        let worker = memory.one(&format!("worker {thread}"));
        for round in 0..5 {
            let span = with_data(&spans, &format!("SELECT {thread} + {round} * 0 + ?1"));
            assert_child_of(span, &worker);
            assert_eq!(span.target(), Some(path.to_str().unwrap()));
        }
    }
}
