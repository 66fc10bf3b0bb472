//! `diesel` through its `Instrumentation`: SQLite (bundled), queries built by diesel's DSL and
//! raw SQL, failures, a transaction, nesting and threads.

use census_runtime::dependency;
use census_runtime::integrations::diesel::{QueryTracer, install};
use census_tests::db::{assert_child_of, of_kind, outcomes_under, with_data};
use census_tests::{flush, install_memory};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

const SECRET: &str = "census-bound-secret-6004";

diesel::table! {
    orders (id) {
        id -> BigInt,
        note -> Text,
        qty -> BigInt,
    }
}

struct Orders {
    conn: std::cell::RefCell<SqliteConnection>,
}

#[dependency(kind = "SQL", target = "orders-db")]
impl Orders {
    fn create(&self) -> QueryResult<()> {
        self.conn.borrow_mut().batch_execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL UNIQUE, qty INTEGER NOT NULL)",
        )
    }

    fn add(&self, id: i64, note: &str, qty: i64) -> QueryResult<usize> {
        diesel::insert_into(orders::table)
            .values((
                orders::id.eq(id),
                orders::note.eq(note),
                orders::qty.eq(qty),
            ))
            .execute(&mut *self.conn.borrow_mut())
    }

    fn notes_above(&self, qty: i64) -> QueryResult<Vec<String>> {
        orders::table
            .filter(orders::qty.gt(qty))
            .select(orders::note)
            .order(orders::id)
            .load(&mut *self.conn.borrow_mut())
    }

    fn missing_table(&self) -> QueryResult<usize> {
        diesel::sql_query("SELECT qty FROM no_such_table WHERE note = ?")
            .bind::<Text, _>(SECRET)
            .execute(&mut *self.conn.borrow_mut())
    }

    fn after_failure(&self) -> QueryResult<usize> {
        diesel::sql_query("SELECT 1").execute(&mut *self.conn.borrow_mut())
    }
}

#[test]
fn queries_failures_and_nesting() {
    let (pipeline, memory) = install_memory();
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.set_instrumentation(QueryTracer::for_url(":memory:"));
    let orders = Orders {
        conn: std::cell::RefCell::new(conn),
    };
    orders.create().unwrap();
    orders.add(1, SECRET, 3).unwrap();
    orders.add(2, "plain", 9).unwrap();
    assert_eq!(orders.notes_above(5).unwrap(), ["plain"]);
    let duplicate = orders.add(3, "plain", 1).unwrap_err();
    assert!(matches!(
        duplicate,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    ));
    assert!(orders.missing_table().is_err());
    assert_eq!(orders.after_failure().unwrap(), 0);
    flush(&pipeline);

    let spans = memory.spans();
    let sqlite = of_kind(&spans, "sqlite");
    for span in &sqlite {
        assert_eq!(span.target(), Some(":memory:"));
        let parent = spans
            .iter()
            .find(|p| Some(p.span_id()) == span.parent_id())
            .unwrap_or_else(|| panic!("{} has its parent", span.name()));
        assert!(parent.name().starts_with("Orders::"), "{}", parent.name());
        let data = span.data().unwrap();
        assert!(!data.contains("binds") && !data.contains(SECRET), "{data}");
        assert!(!span.error_message().unwrap_or_default().contains(SECRET));
    }
    let inserts: Vec<_> = sqlite
        .iter()
        .filter(|s| s.name() == "INSERT orders")
        .collect();
    assert_eq!(inserts.len(), 3);
    assert_eq!(
        inserts[0].data(),
        Some("INSERT INTO `orders` (`id`, `note`, `qty`) VALUES (?, ?, ?)")
    );
    assert!(!inserts[2].success());
    assert_eq!(inserts[2].result_code(), Some("UniqueViolation"));
    let select = sqlite.iter().find(|s| s.name() == "SELECT orders").unwrap();
    assert!(
        select
            .data()
            .unwrap()
            .contains("WHERE (`orders`.`qty` > ?)")
    );
    assert_child_of(select, &memory.one("Orders::notes_above"));
    let missing = with_data(&sqlite, "SELECT qty FROM no_such_table WHERE note = ?");
    assert!(!missing.success());
    assert_eq!(missing.result_code(), Some("Unknown"));
    assert!(missing.error_message().unwrap().contains("no_such_table"));
    assert_child_of(
        with_data(&sqlite, "SELECT 1"),
        &memory.one("Orders::after_failure"),
    );
}

#[test]
fn a_transaction_and_connections_installed_by_default_on_many_threads() {
    let (pipeline, memory) = install_memory();
    install().unwrap();
    let dir = census_tests::azure::scratch_dir("db-diesel");
    let url = dir.join("orders.db").to_string_lossy().into_owned();
    let mut conn = SqliteConnection::establish(&url).unwrap();
    conn.batch_execute("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
        .unwrap();
    census_runtime::span("checkout").in_scope(|| {
        let result: QueryResult<()> = conn.transaction(|conn| {
            diesel::sql_query("INSERT INTO t (n) VALUES (?)")
                .bind::<BigInt, _>(1)
                .execute(conn)?;
            diesel::sql_query("INSERT INTO t (n) VALUES (?)")
                .bind::<BigInt, _>(1)
                .execute(conn)?;
            Ok(())
        });
        assert!(result.is_err(), "the duplicate rolls the transaction back");
    });
    std::thread::scope(|scope| {
        for thread in 0..6 {
            let url = url.clone();
            scope.spawn(move || {
                let mut conn = SqliteConnection::establish(&url).unwrap();
                census_runtime::span(format!("worker {thread}")).in_scope(|| {
                    conn.batch_execute(&format!("SELECT {thread}")).unwrap();
                });
            });
        }
    });
    flush(&pipeline);

    let checkout = memory.one("checkout");
    let names: Vec<String> = outcomes_under(&memory.spans(), "sqlite", &checkout);
    assert_eq!(
        names,
        [
            "BEGIN:true",
            "INSERT t:true",
            "INSERT t:false",
            "ROLLBACK:true"
        ]
    );
    let spans = memory.spans();
    for thread in 0..6 {
        let span = with_data(&spans, &format!("SELECT {thread}"));
        assert_child_of(span, &memory.one(&format!("worker {thread}")));
        assert_eq!(span.target(), Some(url.as_str()));
    }
}
