//! The demo's flow, recorded in memory: the registry lists every site, and the trees are right.

use std::collections::BTreeSet;
use std::time::Duration;

use census_runtime::export::MemoryExporter;
use census_runtime::integrations::log::LogBridge;
use census_runtime::integrations::tracing::CensusLayer;
use orders::{SqliteOrders, checkout_session};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn the_registry_lists_every_site_of_the_example() {
    // Reference the library so that it is linked, then list without running anything.
    let _ = orders::price;
    let sites: BTreeSet<(String, String, Option<String>)> = census_runtime::site::sites()
        .filter(|site| site.module().starts_with("orders"))
        .map(|site| {
            (
                site.name().to_owned(),
                site.kind().to_owned(),
                site.target().map(str::to_owned),
            )
        })
        .collect();
    let sql = |name: &str| {
        (
            name.to_owned(),
            "SQL".to_owned(),
            Some("orders-db".to_owned()),
        )
    };
    let inproc = |name: &str| (name.to_owned(), "INPROC".to_owned(), None);
    let expected: BTreeSet<_> = [
        sql("SqliteOrders::insert"),
        sql("SqliteOrders::get"),
        sql("SqliteOrders::count_for"),
        sql("SqliteOrders::audit_log"),
        inproc("price"),
        inproc("place order"),
        inproc("checkout session"),
        inproc("daily_report"),
    ]
    .into_iter()
    .collect();
    assert_eq!(sites, expected);
    for site in census_runtime::site::sites().filter(|s| s.module().starts_with("orders")) {
        assert!(site.file().ends_with("src/lib.rs"), "{site}");
        assert!(site.line() > 0, "{site}");
    }
}

#[test]
fn the_checkout_flow_records_one_tree_with_its_failures() {
    let memory = MemoryExporter::new();
    let census = census_runtime::pipeline()
        .exporter(memory.clone())
        .install()
        .unwrap();
    LogBridge::new()
        .level(log::LevelFilter::Info)
        .install()
        .unwrap();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CensusLayer::new()),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repository = SqliteOrders::open_in_memory().unwrap();
    let results = runtime.block_on(checkout_session(&repository));
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    census.flush(Duration::from_secs(5)).unwrap();

    let root = memory.one("checkout session");
    assert!(root.parent_id().is_none());
    let spans = memory.spans();
    assert!(
        spans.iter().all(|s| s.trace_id() == root.trace_id()),
        "one trace"
    );

    let orders = memory.named("place order");
    assert_eq!(orders.len(), 3);
    assert!(orders.iter().all(|o| o.parent_id() == Some(root.span_id())));
    let refused = orders
        .iter()
        .find(|o| !o.success())
        .expect("the caviar order fails");
    assert_eq!(refused.error_message(), Some("no price for product caviar"));
    assert_eq!(refused.property("customer"), Some("ada"));

    let inserts = memory.named("SqliteOrders::insert");
    assert_eq!(
        inserts.len(),
        2,
        "the refused order never reached the database"
    );
    for insert in &inserts {
        assert!(
            orders
                .iter()
                .any(|o| Some(o.span_id()) == insert.parent_id())
        );
        assert_eq!(
            insert.data(),
            Some("INSERT INTO orders (customer, sku, quantity) VALUES (?1, ?2, ?3)")
        );
    }

    let audit = memory.one("SqliteOrders::audit_log");
    assert!(!audit.success());
    assert!(
        audit
            .error_message()
            .unwrap()
            .contains("no such table: audit_log")
    );
    let report = memory.one("daily_report");
    let queries = memory.one("report queries");
    assert_eq!(
        queries.parent_id(),
        Some(report.span_id()),
        "the tracing span"
    );
    assert_eq!(audit.parent_id(), Some(queries.span_id()));
    assert!(!report.success());

    // Each order's log record and event are written in its span; the warning in the pricing.
    let logs = memory.logs();
    for order in orders.iter().filter(|o| o.success()) {
        let id = order.property("order.id").unwrap();
        let placed = logs
            .iter()
            .find(|l| l.message() == format!("order {id} placed"))
            .expect("each placed order is logged");
        assert_eq!(placed.parent_id(), Some(order.span_id()));
    }
    let prices = memory.named("price");
    let refused_price = prices.iter().find(|p| !p.success()).unwrap();
    let warning = logs
        .iter()
        .find(|l| l.message() == "no price for caviar")
        .unwrap();
    assert_eq!(warning.parent_id(), Some(refused_price.span_id()));
    assert_eq!(memory.events().len(), 2, "one event per placed order");
    let counted = logs
        .iter()
        .find(|l| l.message() == "orders counted")
        .unwrap();
    assert_eq!(counted.parent_id(), Some(queries.span_id()));
}
