//! `tracing` through census's layer: spans and events in one tree with census's own spans, both
//! ways, sync and across `.await`; span fields read by the semantic conventions (a call's type
//! and target as census's own integrations name them); events as
//! messages, exceptions with their chain, and custom events; what a sampled-out trace writes is
//! dropped with it; the layer composes with per-layer filters; a value read off a span may
//! record onto that span; an error event fails the span it is written in (`#[instrument(err)]`);
//! an `OK` status is final, and error events fail no span when the layer is told so; spans
//! below the layer's level are left out of the tree;
//! `log` records that reach the layer through `tracing-log` keep their own source;
//! clones of one layer in two subscribers keep their spans apart; spans
//! made on some threads and entered and closed on others are each recorded once; more spans
//! open at once than the layer has slots are each recorded whole; the layer
//! needs no registry under it; a value whose formatting panics is written unprintable and the
//! tree goes on; a span open when its layer is replaced (a `reload` handle) is recorded; a span
//! given its caller's `traceparent` continues the caller's trace, one given a legacy
//! `Request-Id` too, kept by its trace id's score; an event written while
//! another is formatted (by a `Display` that logs) is kept as well; a span closed as its thread
//! ends is recorded.

use std::collections::HashSet;
use std::error::Error;
use std::fmt;

use census_runtime::export::{LogRecord, MemoryExporter, Severity};
use census_runtime::integrations::tracing::CensusLayer;
use census_runtime::site::SpanKind;
use census_runtime::{Sampler, dependency};
use census_tests::{
    PaymentDeclined, error_chain, flush, install_memory, install_memory_sampled,
    multi_thread_runtime,
};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// Makes census's layer the default subscriber of this test's process.
fn subscribe() {
    let subscriber = tracing_subscriber::registry().with(CensusLayer::new());
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
}

#[dependency(kind = "SQL", target = "orders-db")]
fn query(id: u64) -> u64 {
    tracing::info!(id, "querying");
    id
}

#[dependency(kind = "SQL", target = "orders-db")]
async fn query_async(id: u64) -> u64 {
    tokio::task::yield_now().await;
    tracing::info!(id, "querying async");
    id
}

#[tracing::instrument]
fn handle(id: u64) -> u64 {
    query(id)
}

#[tracing::instrument]
async fn handle_async(id: u64) -> u64 {
    tokio::task::yield_now().await;
    query_async(id).await
}

fn log<'a>(memory: &'a [LogRecord], message: &str) -> &'a LogRecord {
    memory
        .iter()
        .find(|log| log.message() == message)
        .unwrap_or_else(|| panic!("no record {message:?} in {memory:#?}"))
}

#[test]
fn a_dependency_called_inside_an_instrumented_function_nests_under_its_span() {
    subscribe();
    let (pipeline, memory) = install_memory();
    handle(7);
    multi_thread_runtime(2).block_on(handle_async(8));
    flush(&pipeline);

    for (outer, inner, message, id) in [
        ("handle", "query", "querying", "7"),
        ("handle_async", "query_async", "querying async", "8"),
    ] {
        let outer = memory.one(outer);
        let inner = memory.one(inner);
        assert_eq!(inner.parent_id(), Some(outer.span_id()), "{}", inner.name());
        assert_eq!(inner.trace_id(), outer.trace_id());
        assert_eq!(outer.property("id"), Some(id), "fields become properties");
        let logs = memory.logs();
        assert_eq!(
            log(&logs, message).parent_id(),
            Some(inner.span_id()),
            "the event inside the dependency"
        );
    }
}

#[test]
fn a_span_entered_after_another_was_made_or_on_another_thread_is_the_parent_of_what_it_holds() {
    subscribe();
    let (pipeline, memory) = install_memory();
    let first = tracing::info_span!("first");
    let second = tracing::info_span!("second");
    // Entered after `second` was made: its own context, not the last one made.
    first.in_scope(|| tracing::info!("in first"));
    second.in_scope(|| tracing::info!("in second"));
    // Made here, entered first on another thread.
    let moved = tracing::info_span!("moved");
    std::thread::spawn(move || moved.in_scope(|| tracing::info!("in moved")))
        .join()
        .unwrap();
    drop((first, second));
    flush(&pipeline);

    let logs = memory.logs();
    for (span, message) in [
        ("first", "in first"),
        ("second", "in second"),
        ("moved", "in moved"),
    ] {
        let span = memory.one(span);
        let log = log(&logs, message);
        assert_eq!(log.parent_id(), Some(span.span_id()), "{message}");
        assert_eq!(log.trace_id(), Some(span.trace_id()), "{message}");
    }
}

#[test]
fn a_tracing_span_opened_inside_a_census_span_nests_under_it() {
    subscribe();
    let (pipeline, memory) = install_memory();
    census_runtime::span("census outer").in_scope(|| {
        let _span = tracing::info_span!("tracing inner").entered();
        tracing::warn!("inside both");
    });
    multi_thread_runtime(2).block_on(census_runtime::span("census async").instrument(async {
        use tracing::Instrument;
        async {
            tokio::task::yield_now().await;
            tracing::info!("inside both, async");
        }
        .instrument(tracing::info_span!("tracing async"))
        .await;
    }));
    flush(&pipeline);

    for (outer, inner, message) in [
        ("census outer", "tracing inner", "inside both"),
        ("census async", "tracing async", "inside both, async"),
    ] {
        let outer = memory.one(outer);
        let inner = memory.one(inner);
        assert_eq!(inner.parent_id(), Some(outer.span_id()), "{}", inner.name());
        assert_eq!(inner.kind(), "INPROC");
        let logs = memory.logs();
        let log = log(&logs, message);
        assert_eq!(log.parent_id(), Some(inner.span_id()));
        assert_eq!(log.trace_id(), Some(outer.trace_id()));
    }
}

#[test]
fn span_fields_follow_the_semantic_conventions() {
    subscribe();
    let (pipeline, memory) = install_memory();
    {
        let request = tracing::info_span!(
            "incoming",
            otel.kind = "server",
            otel.name = "GET /orders/{id}",
            url.full = "http://localhost/orders/7",
            client.address = "203.0.113.7",
        );
        let _request = request.enter();
        let db = tracing::info_span!(
            "db",
            otel.name = "SELECT orders",
            db.system = "postgresql",
            db.query.text = "SELECT * FROM orders WHERE id = $1",
            server.address = "db.internal",
            server.port = 5432,
            tenant = "acme",
            attempt = -3,
            retried = true,
            rows = u64::MAX,
        );
        let _db = db.enter();
        drop(_db);
        let failing = tracing::info_span!("charge", otel.status_code = tracing::field::Empty);
        failing.record("otel.status_code", "ERROR");
        drop(failing);
        // Fields recorded after the span opened describe it as those given at once do.
        let call = tracing::info_span!(
            "call",
            url.full = tracing::field::Empty,
            server.address = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        call.record("url.full", "http://inventory.internal/stock/7");
        call.record("server.address", "inventory.internal");
        call.record("http.response.status_code", 503);
        drop(call);
        // A message a consumer handles is a request too.
        drop(tracing::info_span!(
            "orders process",
            otel.kind = "consumer"
        ));
        // The client's address by `tracing-actix-web`'s older name.
        drop(tracing::info_span!(
            "HTTP request",
            otel.kind = "server",
            otel.name = "GET /stock",
            http.client_ip = "198.51.100.4",
        ));
    }
    flush(&pipeline);

    let request = memory.one("GET /orders/{id}");
    assert_eq!(request.span_kind(), SpanKind::Request);
    // What the Azure exporter sends as the request's `ai.location.ip`.
    assert_eq!(
        request.property(census_runtime::export::CLIENT_ADDRESS_PROPERTY),
        Some("203.0.113.7")
    );
    let stock = memory.one("GET /stock");
    assert_eq!(
        stock.property(census_runtime::export::CLIENT_ADDRESS_PROPERTY),
        Some("198.51.100.4")
    );
    assert_eq!(stock.property("http.client_ip"), None);
    let db = memory.one("SELECT orders");
    assert_eq!(db.kind(), "postgresql");
    assert_eq!(db.target(), Some("db.internal:5432"));
    assert_eq!(db.data(), Some("SELECT * FROM orders WHERE id = $1"));
    assert_eq!(db.property("tenant"), Some("acme"));
    // Numbers and booleans, as their `Debug` writes them.
    assert_eq!(db.property("attempt"), Some("-3"));
    assert_eq!(db.property("retried"), Some("true"));
    assert_eq!(db.property("rows"), Some("18446744073709551615"));
    assert_eq!(db.parent_id(), Some(request.span_id()));
    assert_eq!(
        db.operation_name(),
        Some("GET /orders/{id}"),
        "the request's name is the operation's"
    );
    assert!(!memory.one("charge").success(), "otel.status_code = ERROR");
    let call = memory.one("call");
    assert_eq!(call.kind(), "HTTP");
    assert_eq!(call.data(), Some("http://inventory.internal/stock/7"));
    assert_eq!(call.target(), Some("inventory.internal"));
    assert_eq!(call.result_code(), Some("503"));
    assert!(!call.success(), "a 5xx status fails the call");
    assert_eq!(
        memory.one("orders process").span_kind(),
        SpanKind::Request,
        "otel.kind = consumer"
    );
}

#[test]
fn databases_queues_and_remote_calls_are_typed_as_census_integrations_type_them() {
    subscribe();
    let (pipeline, memory) = install_memory();
    for (name, system) in [
        ("sqlite", "sqlite"),
        ("sql server", "microsoft.sql_server"),
        ("mariadb", "mariadb"),
        ("oracle", "oracle.db"),
    ] {
        drop(tracing::info_span!(
            "query",
            otel.name = name,
            db.system.name = system
        ));
    }
    drop(tracing::info_span!(
        "orders query",
        db.system = "postgresql",
        db.namespace = "orders",
        server.address = "db.internal",
        server.port = 5432,
    ));
    drop(tracing::info_span!("cache", db.system = "redis"));
    drop(tracing::info_span!(
        "documents",
        db.system = "couchdb",
        db.name = "docs"
    ));
    drop(tracing::info_span!(
        "publish",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = "orders",
    ));
    drop(tracing::info_span!(
        "receive",
        messaging.system = "rabbitmq"
    ));
    drop(tracing::info_span!(
        "GetStock",
        rpc.system = "grpc",
        rpc.service = "inventory.Stock",
        server.address = "inventory.internal",
    ));
    // Recorded after the span opened: a database's name replaces the system's name that stood
    // in for a server, and a server named later still goes before it.
    let late = tracing::info_span!(
        "late name",
        db.system = "postgresql",
        db.name = tracing::field::Empty,
    );
    late.record("db.name", "orders");
    drop(late);
    let later = tracing::info_span!(
        "late server",
        db.system = "postgresql",
        db.name = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
    );
    later.record("db.name", "orders");
    later.record("server.address", "db.internal");
    later.record("server.port", 5432);
    drop(later);
    // census's own kind wins over every convention.
    drop(tracing::info_span!(
        "legacy",
        census.kind = "Ledger",
        db.system = "postgresql"
    ));
    flush(&pipeline);

    let typed = |name: &str| {
        let span = memory.one(name);
        (span.kind().to_owned(), span.target().map(str::to_owned))
    };
    let typed = |name: &str, kind: &str, target: Option<&str>| {
        assert_eq!(
            typed(name),
            (kind.to_owned(), target.map(str::to_owned)),
            "{name}"
        );
    };
    // As census's own integrations type them (the rusqlite, diesel and sqlx hooks' `sqlite`, the
    // MySQL hooks' `mysql` for MariaDB), and SQL Server as Application Insights does.
    typed("sqlite", "sqlite", Some("sqlite"));
    typed("sql server", "SQL", Some("microsoft.sql_server"));
    typed("mariadb", "mysql", Some("mariadb"));
    typed("oracle", "oracle", Some("oracle.db"));
    typed(
        "orders query",
        "postgresql",
        Some("db.internal:5432 | orders"),
    );
    typed("cache", "redis", Some("redis"));
    typed("documents", "couchdb", Some("docs"));
    typed("publish", "Queue Message | kafka", Some("orders"));
    typed("receive", "rabbitmq", Some("rabbitmq"));
    typed("GetStock", "grpc", Some("inventory.internal"));
    typed("late name", "postgresql", Some("orders"));
    typed(
        "late server",
        "postgresql",
        Some("db.internal:5432 | orders"),
    );
    typed("legacy", "Ledger", Some("postgresql"));
    // The conventions' fields are not properties; others are.
    let call = memory.one("GetStock");
    assert_eq!(call.property("rpc.system"), None);
    assert_eq!(call.property("rpc.service"), Some("inventory.Stock"));
}

#[test]
fn events_become_messages_exceptions_with_their_chain_and_custom_events() {
    subscribe();
    let (pipeline, memory) = install_memory();
    census_runtime::span("checkout").in_scope(|| {
        tracing::debug!("below the layer's level");
        tracing::info!(sku = "caviar", quantity = 2, total = 12.5, "order placed");
        tracing::warn!("stock low");
        let error = PaymentDeclined::card_expired();
        tracing::error!(
            error = &error as &dyn Error,
            exception.stacktrace = "at payments::charge (src/payments.rs:40)",
            "charging failed"
        );
        tracing::error!(
            exception.r#type = "TimeoutError",
            exception.message = "no answer",
            "gateway"
        );
        tracing::warn!(
            exception.stacktrace = "at main (src/main.rs:3)",
            "slow checkout"
        );
        tracing::info!(census.event = "order_placed", total = 12.5, sku = "caviar");
        // Declared a custom event, but given no name: a log record after all.
        tracing::info!(
            census.event = tracing::field::Empty,
            count = 3,
            "unnamed event"
        );
    });
    flush(&pipeline);

    let checkout = memory.one("checkout");
    let logs = memory.logs();
    assert!(
        !logs
            .iter()
            .any(|l| l.message() == "below the layer's level")
    );
    let placed = log(&logs, "order placed");
    assert_eq!(placed.severity(), Severity::Information);
    assert_eq!(placed.property("sku"), Some("caviar"));
    assert_eq!(placed.property("quantity"), Some("2"));
    assert_eq!(placed.property("total"), Some("12.5"));
    assert_eq!(placed.parent_id(), Some(checkout.span_id()));
    assert_eq!(log(&logs, "stock low").severity(), Severity::Warning);
    let failed = log(&logs, "charging failed");
    assert_eq!(failed.severity(), Severity::Error);
    assert_eq!(
        error_chain(failed),
        [
            ("PaymentDeclined", "payment declined"),
            ("Custom", "card expired")
        ]
    );
    // The conventions' stack is kept as given, for the exporter (Azure's sends it as the
    // outermost exception's `stack`); given alone, it describes no error.
    assert_eq!(
        failed.property("exception.stacktrace"),
        Some("at payments::charge (src/payments.rs:40)")
    );
    let slow = log(&logs, "slow checkout");
    assert!(slow.errors().is_empty());
    assert_eq!(
        slow.property("exception.stacktrace"),
        Some("at main (src/main.rs:3)")
    );
    let unnamed = log(&logs, "unnamed event");
    assert_eq!(unnamed.property("count"), Some("3"));
    let gateway = log(&logs, "gateway");
    assert_eq!(gateway.errors()[0].type_name, "TimeoutError");
    assert_eq!(gateway.errors()[0].message, "no answer");
    let events = memory.events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.name(), "order_placed");
    assert_eq!(event.property("sku"), Some("caviar"));
    assert_eq!(event.measurements().collect::<Vec<_>>(), [("total", 12.5)]);
    assert_eq!(event.parent_id(), Some(checkout.span_id()));
}

/// The error `charge` returns.
#[derive(Debug)]
struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("card declined")
    }
}

impl Error for Declined {}

#[tracing::instrument(err)]
fn charge(amount: u64) -> Result<u64, Declined> {
    if amount > 100 {
        Err(Declined)
    } else {
        Ok(amount)
    }
}

#[tracing::instrument(err)]
async fn charge_async(amount: u64) -> Result<u64, Declined> {
    tokio::task::yield_now().await;
    charge(amount)
}

#[test]
fn an_error_event_fails_the_span_it_is_written_in() {
    subscribe();
    let (pipeline, memory) = install_memory();
    assert!(charge(50).is_ok());
    assert!(charge(500).is_err());
    assert!(multi_thread_runtime(2).block_on(charge_async(700)).is_err());
    tracing::info_span!("warned").in_scope(|| tracing::warn!("slow"));
    let parent = tracing::info_span!("given as parent");
    tracing::info_span!("current").in_scope(|| tracing::error!(parent: &parent, "elsewhere"));
    drop(parent);
    flush(&pipeline);

    let charged = |name: &str, amount: &str| {
        let spans = memory.named(name);
        spans
            .into_iter()
            .find(|span| span.property("amount") == Some(amount))
            .unwrap_or_else(|| panic!("no {name} of {amount}"))
    };
    assert!(charged("charge", "50").success());
    let declined = charged("charge", "500");
    assert!(!declined.success(), "#[instrument(err)] returning an Err");
    assert!(
        !charged("charge_async", "700").success(),
        "and across .await"
    );
    assert!(!charged("charge", "700").success());
    // What `err` writes is a record of the failed span.
    let logs = memory.logs();
    let written = logs
        .iter()
        .find(|log| log.parent_id() == Some(declined.span_id()))
        .expect("the error event of the declined charge");
    assert_eq!(written.severity(), Severity::Error);
    assert_eq!(written.property("error"), Some("card declined"));
    // A warning fails nothing; an error given a parent fails that one, not the current span.
    assert!(memory.one("warned").success());
    assert!(!memory.one("given as parent").success());
    assert!(memory.one("current").success());
}

#[test]
fn error_events_fail_no_span_when_the_layer_is_told_so() {
    let (pipeline, memory) = install_memory();
    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(CensusLayer::new().error_events_fail_spans(false)),
        || {
            assert!(charge(500).is_err());
            tracing::info_span!("recovered").in_scope(|| tracing::error!("retrying"));
            tracing::info_span!("failed", error = "gave up").in_scope(|| {});
        },
    );
    flush(&pipeline);

    let declined = memory.one("charge");
    assert!(declined.success(), "the error event failed nothing");
    assert!(memory.one("recovered").success());
    assert!(
        !memory.one("failed").success(),
        "the span's own field still does"
    );
    let logs = memory.logs();
    let retrying = log(&logs, "retrying");
    assert_eq!(retrying.severity(), Severity::Error, "still recorded");
    assert_eq!(
        retrying.parent_id(),
        Some(memory.one("recovered").span_id())
    );
    assert!(
        logs.iter()
            .any(|log| log.parent_id() == Some(declined.span_id())),
        "what `err` wrote is recorded too"
    );
}

#[test]
fn an_ok_status_is_final() {
    subscribe();
    let (pipeline, memory) = install_memory();
    // Retried inside, and said to have succeeded: the error written on the way fails nothing.
    tracing::info_span!("retried", otel.status_code = "OK")
        .in_scope(|| tracing::error!("the first attempt failed"));
    // Recorded later, then an error field: the status stays.
    let later = tracing::info_span!(
        "said later",
        otel.status_code = tracing::field::Empty,
        error = tracing::field::Empty
    );
    later.record("otel.status_code", "OK");
    later.record("error", "too late");
    later.in_scope(|| tracing::error!("nor an event"));
    drop(later);
    // A 404 the application expects: its result code kept, not a failure.
    tracing::info_span!(
        "lookup",
        http.response.status_code = 404,
        otel.status_code = "OK"
    )
    .in_scope(|| {});
    tracing::info_span!("plain").in_scope(|| tracing::error!("fails it"));
    tracing::info_span!("said to fail", otel.status_code = "ERROR").in_scope(|| {});
    flush(&pipeline);

    assert!(memory.one("retried").success());
    let later = memory.one("said later");
    assert!(later.success());
    assert_eq!(
        later.error_message(),
        None,
        "the error field came after the status"
    );
    let lookup = memory.one("lookup");
    assert!(lookup.success());
    assert_eq!(lookup.result_code(), Some("404"));
    assert!(!memory.one("plain").success());
    assert!(!memory.one("said to fail").success());
}

#[test]
fn spans_below_the_span_level_are_left_out_and_what_they_hold_nests_above_them() {
    let (pipeline, memory) = install_memory();
    let work = || {
        tracing::info_span!("request").in_scope(|| {
            tracing::debug_span!("library call").in_scope(|| {});
            tracing::trace_span!("poll").in_scope(|| query(3));
        })
    };
    // By default, DEBUG and above.
    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(CensusLayer::new()),
        work,
    );
    flush(&pipeline);
    let request = memory.one("request");
    assert_eq!(
        memory.one("library call").parent_id(),
        Some(request.span_id())
    );
    assert!(memory.named("poll").is_empty(), "TRACE spans are left out");
    let query = memory.one("query");
    assert_eq!(query.parent_id(), Some(request.span_id()));
    let logs = memory.logs();
    assert_eq!(log(&logs, "querying").parent_id(), Some(query.span_id()));
    memory.clear();

    // Only INFO and above; and everything.
    for (level, recorded) in [
        (tracing::Level::INFO, ["request", "query"].as_slice()),
        (
            tracing::Level::TRACE,
            ["request", "library call", "poll", "query"].as_slice(),
        ),
    ] {
        tracing::subscriber::with_default(
            tracing_subscriber::registry().with(CensusLayer::new().span_level(level)),
            work,
        );
        flush(&pipeline);
        let mut names: Vec<String> = memory.spans().iter().map(|s| s.name().to_owned()).collect();
        names.sort();
        let mut expected: Vec<&str> = recorded.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected, "at {level}");
        memory.clear();
    }
}

#[test]
fn log_records_that_reach_the_layer_as_events_keep_their_own_source() {
    use tracing_subscriber::util::SubscriberInitExt as _;
    // `init` installs `tracing-log`'s `LogTracer` as `log`'s logger too.
    tracing_subscriber::registry()
        .with(CensusLayer::new())
        .init();
    let (pipeline, memory) = install_memory();
    let line = line!() + 2;
    tracing::info_span!("load").in_scope(|| {
        log::info!(target: "orders::db", "loaded {} orders", 3);
        log::warn!(target: "census_core::azure::transport", "census's own, never telemetry");
    });
    flush(&pipeline);

    let logs = memory.logs();
    let messages: Vec<&str> = logs.iter().map(|log| log.message()).collect();
    assert_eq!(messages, ["loaded 3 orders"]);
    let loaded = &logs[0];
    assert_eq!(loaded.target(), "orders::db");
    assert_eq!(loaded.module_path(), Some(module_path!()));
    assert_eq!(loaded.file(), Some(file!()));
    assert_eq!(loaded.line(), Some(line));
    assert_eq!(loaded.severity(), Severity::Information);
    assert_eq!(loaded.properties().count(), 0, "no log.* fields");
    assert_eq!(loaded.parent_id(), Some(memory.one("load").span_id()));
}

#[test]
fn what_a_sampled_out_trace_writes_is_dropped_with_it() {
    subscribe();
    let (pipeline, memory): (_, MemoryExporter) = install_memory_sampled(Sampler::never());
    {
        let _span = tracing::info_span!("dropped root").entered();
        tracing::info!("inside a dropped trace");
        // Put outside every span explicitly: kept, as a record written outside any trace.
        tracing::info!(parent: None, "explicitly outside any trace");
        query(1);
    }
    tracing::info!("outside any trace");
    flush(&pipeline);

    assert!(memory.spans().is_empty(), "{:#?}", memory.spans());
    let logs = memory.logs();
    let messages: Vec<&str> = logs.iter().map(|l| l.message()).collect();
    assert_eq!(
        messages,
        ["explicitly outside any trace", "outside any trace"]
    );
    assert!(logs.iter().all(|l| l.trace_id().is_none()));
}

#[test]
fn the_layer_composes_with_per_layer_filters_and_other_layers() {
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let printed = printed.clone();
        move || Writer(printed.clone())
    };
    let subscriber = tracing_subscriber::registry()
        .with(
            CensusLayer::new()
                .event_level(tracing::Level::TRACE)
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false),
        );
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (pipeline, memory) = install_memory();
    tracing::info!("printed, not recorded");
    tracing::warn!("printed and recorded");
    flush(&pipeline);

    let recorded: Vec<String> = memory
        .logs()
        .iter()
        .map(|l| l.message().to_owned())
        .collect();
    assert_eq!(recorded, ["printed and recorded"]);
    let printed = String::from_utf8(printed.lock().unwrap().clone()).unwrap();
    assert!(printed.contains("printed, not recorded"), "{printed}");
    assert!(printed.contains("printed and recorded"), "{printed}");
}

/// A writer into a shared buffer, for the `fmt` layer.
struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A value whose `Debug` records another field onto the span it is recorded onto.
struct RecordsOnto(tracing::Span);

impl fmt::Debug for RecordsOnto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.record("inner", "written while outer was read");
        f.write_str("outer value")
    }
}

#[test]
fn a_value_recorded_onto_a_span_may_itself_record_onto_that_span() {
    subscribe();
    let (pipeline, memory) = install_memory();
    // Run aside, so that a lock held while the value is read fails the test rather than
    // hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let span = tracing::info_span!(
            "reads its values unlocked",
            outer = tracing::field::Empty,
            inner = tracing::field::Empty
        );
        span.record("outer", tracing::field::debug(RecordsOnto(span.clone())));
        drop(span);
        let _ = done.send(());
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("recording a value that records onto its span returns");
    flush(&pipeline);

    let span = memory.one("reads its values unlocked");
    assert_eq!(span.property("outer"), Some("outer value"));
    assert_eq!(span.property("inner"), Some("written while outer was read"));
}

/// An order that writes an event when it is shown: a `Display` that logs, as an application's
/// types may.
struct Audited(u64);

impl fmt::Display for Audited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        tracing::info!(order = self.0, "order shown");
        write!(f, "order {}", self.0)
    }
}

#[test]
fn an_event_written_while_another_is_formatted_is_kept_as_well() {
    subscribe();
    let (pipeline, memory) = install_memory();
    census_runtime::span("checkout").in_scope(|| {
        tracing::info!(order = %Audited(7), "{} placed", Audited(7));
    });
    flush(&pipeline);

    let checkout = memory.one("checkout").span_id();
    let logs = memory.logs();
    let placed = log(&logs, "order 7 placed");
    assert_eq!(placed.parent_id(), Some(checkout));
    assert_eq!(placed.property("order"), Some("order 7"));
    let shown: Vec<&LogRecord> = logs
        .iter()
        .filter(|record| record.message() == "order shown")
        .collect();
    assert_eq!(
        shown.len(),
        2,
        "one for the message, one for the field: {logs:#?}"
    );
    for record in shown {
        assert_eq!(record.parent_id(), Some(checkout));
        assert_eq!(record.property("order"), Some("7"));
    }
}

thread_local! {
    /// A span a thread keeps until it ends.
    static HELD: std::cell::RefCell<Option<tracing::Span>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_span_closed_as_its_thread_ends_is_recorded() {
    subscribe();
    let (pipeline, memory) = install_memory();
    std::thread::spawn(|| {
        // Kept by a thread-local made before census's own state on this thread: closed after
        // that state is let go.
        HELD.with(|_| {});
        let span = tracing::info_span!("held until the thread ends");
        span.in_scope(|| tracing::info!("inside"));
        HELD.with(|held| *held.borrow_mut() = Some(span));
    })
    .join()
    .unwrap();
    flush(&pipeline);

    let span = memory.one("held until the thread ends");
    assert_eq!(
        log(&memory.logs(), "inside").parent_id(),
        Some(span.span_id())
    );
}

/// A subscriber that only numbers spans: no registry, no span data to look up.
struct Numbering(std::sync::atomic::AtomicU64);

impl tracing::Subscriber for Numbering {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let next = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::span::Id::from_u64(next)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
    fn try_close(&self, _: tracing::span::Id) -> bool {
        true
    }
}

#[test]
fn the_layer_needs_no_registry_under_it() {
    let (pipeline, memory) = install_memory();
    let subscriber = CensusLayer::new().with_subscriber(Numbering(1.into()));
    tracing::subscriber::with_default(subscriber, || handle(9));
    flush(&pipeline);

    let (outer, inner) = (memory.one("handle"), memory.one("query"));
    assert_eq!(inner.parent_id(), Some(outer.span_id()));
    assert_eq!(outer.property("id"), Some("9"));
    let logs = memory.logs();
    let querying = log(&logs, "querying");
    assert_eq!(querying.parent_id(), Some(inner.span_id()));
    assert_eq!(querying.trace_id(), Some(outer.trace_id()));
}

#[test]
fn clones_of_one_layer_in_two_subscribers_keep_their_spans_apart() {
    let (pipeline, memory) = install_memory();
    let layer = CensusLayer::new();
    let first = tracing_subscriber::registry().with(layer.clone());
    let second = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(first, || {
        let outer = tracing::info_span!("in the first subscriber");
        tracing::subscriber::with_default(second, || {
            let inner = tracing::info_span!("in the second subscriber");
            // The premise: two registries give out the same ids.
            assert_eq!(inner.id(), outer.id());
            drop(inner);
        });
        drop(outer);
    });
    flush(&pipeline);

    let first = memory.one("in the first subscriber");
    let second = memory.one("in the second subscriber");
    assert_ne!(first.span_id(), second.span_id());
    assert_eq!(first.parent_id(), None);
    assert_eq!(second.parent_id(), None);
}

#[test]
fn a_span_entered_right_after_another_subscriber_made_one_of_its_id_keeps_its_own_parent() {
    let (pipeline, memory) = install_memory();
    let layer = CensusLayer::new();
    let first = tracing::Dispatch::new(tracing_subscriber::registry().with(layer.clone()));
    let second = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let mine = tracing::dispatcher::with_default(&first, || tracing::info_span!("mine"));
    // The second subscriber makes a span of the same id on this thread, last, in another trace.
    let theirs = census_runtime::span("elsewhere")
        .in_scope(|| tracing::dispatcher::with_default(&second, || tracing::info_span!("theirs")));
    assert_eq!(theirs.id(), mine.id(), "the premise: the same id");
    mine.in_scope(|| census_runtime::span("child").in_scope(|| {}));
    drop(theirs);
    drop(mine);
    flush(&pipeline);

    let mine = memory.one("mine");
    let child = memory.one("child");
    assert_eq!(child.parent_id(), Some(mine.span_id()));
    assert_eq!(child.trace_id(), mine.trace_id());
}

#[test]
fn spans_made_on_some_threads_and_entered_and_closed_on_others_are_each_recorded_once() {
    subscribe();
    let (pipeline, memory) = install_memory();
    const MAKERS: u64 = 4;
    const EACH: u64 = 250;
    let (handed, received) = std::sync::mpsc::channel::<tracing::Span>();
    let received = std::sync::Arc::new(std::sync::Mutex::new(received));
    // Two threads enter and close what the makers hand them, a child span inside each.
    let takers: Vec<_> = (0..2)
        .map(|_| {
            let received = received.clone();
            std::thread::spawn(move || {
                loop {
                    let next = received.lock().unwrap().recv();
                    let Ok(span) = next else { break };
                    span.in_scope(|| drop(tracing::info_span!("child").entered()));
                }
            })
        })
        .collect();
    let makers: Vec<_> = (0..MAKERS)
        .map(|maker| {
            let handed = handed.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let n = maker * EACH + i;
                    let span = tracing::info_span!("made", n);
                    // One in three stays on the thread that made it.
                    if n.is_multiple_of(3) {
                        span.in_scope(|| drop(tracing::info_span!("child").entered()));
                    } else {
                        handed.send(span).unwrap();
                    }
                }
            })
        })
        .collect();
    for maker in makers {
        maker.join().unwrap();
    }
    drop(handed);
    for taker in takers {
        taker.join().unwrap();
    }
    flush(&pipeline);

    let made = memory.named("made");
    let mut numbers: Vec<u64> = made
        .iter()
        .map(|span| span.property("n").unwrap().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..MAKERS * EACH).collect::<Vec<_>>());
    let made_ids: HashSet<_> = made.iter().map(|span| span.span_id()).collect();
    let children = memory.named("child");
    assert_eq!(children.len(), made.len());
    let parents: HashSet<_> = children
        .iter()
        .map(|child| child.parent_id().expect("a child has its parent"))
        .collect();
    assert_eq!(parents, made_ids, "one child under each span");
}

/// The layer keeps 256 spans in slots of their own and the others in a map beside them: with
/// eight times as many open at once, both are used, and every span keeps its values, its
/// children and its end, however it is reached.
#[test]
fn more_spans_open_at_once_than_the_layer_has_slots_are_each_recorded_whole() {
    subscribe();
    let (pipeline, memory) = install_memory();
    const OPEN: u64 = 2_048;
    let spans: Vec<_> = (0..OPEN)
        .map(|n| tracing::info_span!("open", n, late = tracing::field::Empty))
        .collect();
    for (n, span) in (0..OPEN).zip(&spans) {
        span.record("late", n + 1);
        span.in_scope(|| drop(tracing::info_span!("child", of = n).entered()));
    }
    // Closed in another order than they were made: the odd ones first, from the last.
    let (odd, even): (Vec<_>, Vec<_>) = (0..OPEN).zip(spans).partition(|(n, _)| n % 2 == 1);
    drop(odd.into_iter().rev().collect::<Vec<_>>());
    drop(even);
    flush(&pipeline);

    let open = memory.named("open");
    assert_eq!(open.len() as u64, OPEN);
    let mut by_number = std::collections::HashMap::new();
    for span in &open {
        let n: u64 = span.property("n").unwrap().parse().unwrap();
        assert_eq!(span.property("late"), Some((n + 1).to_string().as_str()));
        by_number.insert(n, span.span_id());
    }
    assert_eq!(by_number.len() as u64, OPEN, "each span once");
    let children = memory.named("child");
    assert_eq!(children.len() as u64, OPEN);
    for child in &children {
        let of: u64 = child.property("of").unwrap().parse().unwrap();
        assert_eq!(
            child.parent_id(),
            by_number.get(&of).copied(),
            "child of {of}"
        );
    }
}

/// A value whose `Debug` and `Display` panic.
struct Unprintable;

impl fmt::Debug for Unprintable {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("this value cannot be printed")
    }
}

impl fmt::Display for Unprintable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Error for Unprintable {}

/// An error whose cause cannot be printed.
#[derive(Debug)]
struct CausedByUnprintable;

impl fmt::Display for CausedByUnprintable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("charge failed")
    }
}

impl Error for CausedByUnprintable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&Unprintable)
    }
}

#[test]
fn a_value_whose_formatting_panics_is_written_unprintable_and_the_tree_goes_on() {
    const UNPRINTABLE: &str = "<unprintable: its formatting panicked>";
    subscribe();
    let (pipeline, memory) = install_memory();
    let outer = tracing::info_span!("outer");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _outer = outer.enter();
        drop(tracing::info_span!("unprintable span", value = ?Unprintable, kept = 1));
        tracing::info!(value = ?Unprintable, kept = 2, "unprintable field");
        tracing::info!("unprintable message {:?}", Unprintable);
        tracing::info!(census.event = "unprintable event", value = %Unprintable, kept = 3);
        tracing::error!(
            error = &CausedByUnprintable as &dyn Error,
            "unprintable cause"
        );
        let later = tracing::info_span!("later", value = tracing::field::Empty);
        later.record("value", tracing::field::debug(Unprintable));
        drop(later);
        tracing::info_span!("after").in_scope(|| tracing::info!("written after"));
    }));
    assert!(caught.is_ok(), "no panic reaches the application's calls");
    drop(outer);
    flush(&pipeline);

    // The span whose field could not be read is made, so the registry closes its parent.
    let outer = memory.one("outer");
    for name in ["unprintable span", "later", "after"] {
        assert_eq!(
            memory.one(name).parent_id(),
            Some(outer.span_id()),
            "{name}"
        );
    }
    let span = memory.one("unprintable span");
    assert_eq!(span.property("value"), Some(UNPRINTABLE));
    assert_eq!(
        span.property("kept"),
        Some("1"),
        "the fields after it are read"
    );
    assert_eq!(memory.one("later").property("value"), Some(UNPRINTABLE));
    let logs = memory.logs();
    let field = log(&logs, "unprintable field");
    assert_eq!(field.property("value"), Some(UNPRINTABLE));
    assert_eq!(field.property("kept"), Some("2"));
    log(&logs, UNPRINTABLE);
    let cause = log(&logs, "unprintable cause");
    assert_eq!(
        error_chain(cause),
        [
            ("CausedByUnprintable", "charge failed"),
            ("Error", UNPRINTABLE)
        ]
    );
    let events = memory.events();
    let event = events
        .iter()
        .find(|event| event.name() == "unprintable event")
        .expect("the custom event");
    assert_eq!(event.property("value"), Some(UNPRINTABLE));
    assert_eq!(
        log(&logs, "written after").parent_id(),
        Some(memory.one("after").span_id())
    );
}

#[test]
fn a_span_open_when_its_layer_is_replaced_is_recorded_and_its_scope_ends_when_it_is_left() {
    let (pipeline, memory) = install_memory();
    let (layer, handle) = tracing_subscriber::reload::Layer::new(CensusLayer::new());
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let open = tracing::info_span!("open when replaced");
        let entered = open.enter();
        handle
            .reload(CensusLayer::new())
            .expect("the subscriber is there");
        census_runtime::span("inside").in_scope(|| {});
        drop(entered);
        drop(open);
        census_runtime::span("after").in_scope(|| {});
        tracing::info_span!("made by the new layer").in_scope(|| {});
    });
    flush(&pipeline);

    let open = memory.one("open when replaced");
    assert_eq!(memory.one("inside").parent_id(), Some(open.span_id()));
    assert_eq!(memory.one("after").parent_id(), None);
    assert_eq!(memory.one("made by the new layer").parent_id(), None);
}

#[test]
fn a_span_that_follows_from_another_is_linked_to_it() {
    subscribe();
    let (pipeline, memory) = install_memory();
    let first = tracing::info_span!("first message");
    let second = tracing::info_span!("second message");
    let batch = tracing::info_span!("batch");
    batch.follows_from(&first);
    batch.follows_from(second.id());
    // A span the layer left out (below its level) links nothing.
    let left_out = tracing::trace_span!("left out");
    let single = tracing::info_span!("single");
    single.follows_from(&left_out);
    drop((batch, single, left_out, second, first));
    flush(&pipeline);

    let (first, second) = (memory.one("first message"), memory.one("second message"));
    let links: serde_json::Value = serde_json::from_str(
        memory
            .one("batch")
            .property(census_runtime::export::LINKS_PROPERTY)
            .expect("the batch's links"),
    )
    .expect("a JSON array");
    let linked: Vec<(&str, &str)> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|link| {
            (
                link["operation_Id"].as_str().unwrap(),
                link["id"].as_str().unwrap(),
            )
        })
        .collect();
    let (first_trace, first_span) = (first.trace_id().to_string(), first.span_id().to_string());
    let (second_trace, second_span) = (second.trace_id().to_string(), second.span_id().to_string());
    assert_eq!(
        linked,
        [
            (first_trace.as_str(), first_span.as_str()),
            (second_trace.as_str(), second_span.as_str()),
        ]
    );
    assert_eq!(
        memory
            .one("single")
            .property(census_runtime::export::LINKS_PROPERTY),
        None
    );
}

#[test]
fn a_span_given_the_callers_traceparent_continues_its_trace() {
    use census_runtime::propagation::Outgoing;

    subscribe();
    let (pipeline, memory) = install_memory();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut outgoing = Vec::new();
    {
        // Made inside a span of this process: the caller's context comes first.
        let _local = tracing::info_span!("accept loop").entered();
        let request = tracing::info_span!(
            "request",
            otel.kind = "server",
            traceparent = format!("00-{caller_trace}-00f067aa0ba902b7-01"),
            tracestate = "congo=t61rcWkgMzE",
        );
        request.in_scope(|| {
            query(1);
            outgoing.push(Outgoing::current(false).expect("the request's context"));
        });
        // The caller did not record its trace (flag 00): neither does this service, and its
        // calls pass the caller's trace on as not recorded, with its state. By the headers'
        // semantic convention's names this time.
        let unsampled = tracing::info_span!(
            "unsampled request",
            otel.kind = "server",
            http.request.header.traceparent =
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            http.request.header.tracestate = "rojo=00f067aa0ba902b7",
        );
        unsampled.in_scope(|| {
            query(2);
            outgoing.push(Outgoing::current(false).expect("the trace's context"));
        });
        // A malformed one is ignored: the span is the accept loop's child, as if none came.
        tracing::info_span!(
            "broken request",
            otel.kind = "server",
            traceparent = "00-zz"
        )
        .in_scope(|| query(3));
    }
    flush(&pipeline);

    let request = memory.one("request");
    assert_eq!(request.trace_id().to_string(), caller_trace);
    assert_eq!(
        request.parent_id().map(|id| id.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(request.property("traceparent"), None, "not a property");
    assert_eq!(request.property("tracestate"), None, "not a property");
    let queries: Vec<_> = memory
        .spans()
        .into_iter()
        .filter(|span| span.name() == "query")
        .collect();
    assert_eq!(
        queries.len(),
        2,
        "the unsampled request's call is not recorded"
    );
    assert_eq!(queries[0].parent_id(), Some(request.span_id()));
    assert_eq!(queries[0].trace_id().to_string(), caller_trace);

    let headers: Vec<Vec<(&str, &str)>> = outgoing.iter().map(|o| o.headers().collect()).collect();
    assert_eq!(
        headers[0],
        [
            (
                "traceparent",
                format!("00-{caller_trace}-{}-01", request.span_id()).as_str()
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]
    );
    assert_eq!(headers[1].len(), 2);
    assert_eq!(headers[1][1], ("tracestate", "rojo=00f067aa0ba902b7"));
    assert!(memory.named("unsampled request").is_empty());
    assert!(
        headers[1][0]
            .1
            .starts_with("00-0af7651916cd43dd8448eb211c80319c-")
            && headers[1][0].1.ends_with("-00"),
        "{headers:?}"
    );

    let broken = memory.one("broken request");
    let accept_loop = memory.one("accept loop");
    assert_eq!(broken.parent_id(), Some(accept_loop.span_id()));
    assert_eq!(broken.property("traceparent"), None, "not a property");
    assert_eq!(queries[1].parent_id(), Some(broken.span_id()));
}

#[test]
fn a_span_given_a_legacy_request_id_continues_its_trace_kept_by_its_score() {
    subscribe();
    let legacy = "|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.";
    let request = |id| {
        tracing::info_span!(
            "legacy request",
            otel.kind = "server",
            "http.request.header.request-id" = legacy,
        )
        .in_scope(|| query(id))
    };
    // The caller's trace id scores 0.33: dropped at 0.25, with what is made inside it.
    let (pipeline, memory) = install_memory_sampled(Sampler::probability(0.25));
    request(1);
    flush(&pipeline);
    assert!(memory.spans().is_empty(), "{:#?}", memory.spans());
    drop(pipeline);

    let (pipeline, memory) = install_memory_sampled(Sampler::probability(0.5));
    request(2);
    // A `traceparent` wins over a `Request-Id` that came with it.
    tracing::info_span!(
        "both headers",
        otel.kind = "server",
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        http.request.header.request_id = legacy,
    )
    .in_scope(|| ());
    flush(&pipeline);

    let request = memory.one("legacy request");
    assert_eq!(request.span_kind(), SpanKind::Request);
    assert_eq!(
        request.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        request.parent_id().map(|id| id.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_eq!(
        request.property("http.request.header.request-id"),
        None,
        "not a property"
    );
    assert_eq!(memory.one("query").parent_id(), Some(request.span_id()));
    let both = memory.one("both headers");
    assert_eq!(
        both.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(
        both.property("http.request.header.request_id"),
        None,
        "not a property"
    );
}
