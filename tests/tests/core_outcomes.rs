//! Outcomes: `Ok`, `Err` (through aliases too), panics (sync and async), run-time values,
//! `fields`, and impl blocks with overrides and skips; a call cancelled as its thread ends.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use census_runtime::{current_span, dependency, inproc};
use census_tests::{flush, install_memory, multi_thread_runtime};

#[derive(Debug)]
struct OutOfStock {
    sku: &'static str,
}

impl fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is out of stock", self.sku)
    }
}

#[dependency(kind = "SQL", target = "inventory-db")]
fn reserve(sku: &'static str) -> Result<u32, OutOfStock> {
    if sku == "none" {
        return Err(OutOfStock { sku });
    }
    Ok(3)
}

#[inproc]
fn read_config(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[inproc]
fn checkout(sku: &'static str) -> Result<u32, OutOfStock> {
    // `?` keeps working inside an instrumented function.
    let reserved = reserve(sku)?;
    Ok(reserved + 1)
}

#[test]
fn ok_succeeds_and_err_fails_with_message_and_result_code() {
    let (pipeline, memory) = install_memory();
    assert_eq!(reserve("apple").unwrap(), 3);
    assert!(reserve("none").is_err());
    flush(&pipeline);

    let spans = memory.named("reserve");
    let ok = spans.iter().find(|s| s.success()).expect("one success");
    assert_eq!(ok.result_code(), None);
    assert_eq!(ok.error_message(), None);
    let failed = spans.iter().find(|s| !s.success()).expect("one failure");
    assert_eq!(failed.error_message(), Some("none is out of stock"));
    assert_eq!(failed.result_code(), Some("OutOfStock"));
}

#[test]
fn err_through_an_alias_and_through_question_mark_fails_every_span_on_the_way() {
    let (pipeline, memory) = install_memory();
    assert!(read_config("/nonexistent/census/config.toml").is_err());
    assert!(checkout("none").is_err());
    assert_eq!(checkout("apple").unwrap(), 4);
    flush(&pipeline);

    let config = memory.one("read_config");
    assert!(!config.success());
    assert_eq!(config.result_code(), Some("Error"));
    assert!(config.error_message().unwrap().contains("No such file"));

    let checkouts = memory.named("checkout");
    assert_eq!(checkouts.iter().filter(|s| !s.success()).count(), 1);
    assert_eq!(checkouts.iter().filter(|s| s.success()).count(), 1);
    let failed = checkouts.iter().find(|s| !s.success()).unwrap();
    let inner = memory.children_of(failed.span_id());
    assert_eq!(inner.len(), 1);
    assert!(!inner[0].success(), "the inner dependency failed too");
}

#[inproc]
fn explodes(divisor: u32) -> u32 {
    if divisor == 0 {
        panic!("price list is empty");
    }
    100 / divisor
}

#[inproc]
fn calls_explodes() -> u32 {
    explodes(0)
}

#[test]
fn a_panic_fails_and_ends_the_span_and_keeps_unwinding() {
    let (pipeline, memory) = install_memory();
    let caught = catch_unwind(AssertUnwindSafe(calls_explodes));
    let payload = caught.expect_err("the panic continues to the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"price list is empty"));
    // The thread is usable and spans still nest after the panic.
    assert_eq!(explodes(4), 25);
    flush(&pipeline);

    let exploded = memory.named("explodes");
    assert_eq!(exploded.len(), 2);
    let failed = exploded
        .iter()
        .find(|s| !s.success())
        .expect("the panicking call failed");
    assert_eq!(failed.result_code(), Some("panic"));
    assert_eq!(failed.error_message(), Some("price list is empty"));
    let exception = failed
        .exception()
        .expect("a panic leaves exception details");
    assert_eq!(exception.message, "price list is empty");
    assert!(
        exception
            .location
            .as_deref()
            .unwrap()
            .contains("core_outcomes.rs")
    );
    let outer = memory.one("calls_explodes");
    assert!(
        !outer.success(),
        "the panic unwound through the caller's span too"
    );
    assert_eq!(failed.parent_id(), Some(outer.span_id()));
    let later = exploded.iter().find(|s| s.success()).unwrap();
    assert_eq!(
        later.parent_id(),
        None,
        "nothing is left current after the panic"
    );
}

#[dependency(kind = "HTTP", target = "payments")]
async fn charge(amount: u32) -> Result<u32, String> {
    tokio::task::yield_now().await;
    if amount > 100 {
        Err(format!("{amount} exceeds the limit"))
    } else {
        Ok(amount)
    }
}

#[inproc]
async fn async_explodes() {
    tokio::task::yield_now().await;
    panic!("async boom");
}

#[test]
fn async_err_and_async_panic_fail_their_spans() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    runtime.block_on(async {
        assert_eq!(charge(5).await, Ok(5));
        assert!(charge(500).await.is_err());
        let joined = tokio::spawn(async_explodes()).await;
        assert!(joined.unwrap_err().is_panic());
    });
    flush(&pipeline);

    let charges = memory.named("charge");
    assert_eq!(charges.len(), 2);
    let failed = charges.iter().find(|s| !s.success()).unwrap();
    assert_eq!(failed.error_message(), Some("500 exceeds the limit"));
    assert_eq!(failed.result_code(), Some("String"));
    let exploded = memory.one("async_explodes");
    assert!(!exploded.success());
    assert_eq!(exploded.error_message(), Some("async boom"));
}

#[inproc]
fn parse_quantity(text: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Ok(text.parse::<u32>()?)
}

struct Quantity;

/// An error generic over what was rejected: its type name has paths inside its arguments.
struct Rejected<T>(T);

impl<T> fmt::Display for Rejected<Vec<T>> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} quantities rejected", self.0.len())
    }
}

#[inproc]
fn check_quantities(quantities: &[u32]) -> Result<(), Rejected<Vec<Quantity>>> {
    Err(Rejected(quantities.iter().map(|_| Quantity).collect()))
}

#[test]
fn result_codes_name_error_types_without_any_module_path() {
    let (pipeline, memory) = install_memory();
    assert!(parse_quantity("seven").is_err());
    assert!(check_quantities(&[0, 1]).is_err());
    flush(&pipeline);

    let boxed = memory.one("parse_quantity");
    assert_eq!(boxed.result_code(), Some("Box<dyn Error + Send + Sync>"));
    assert_eq!(boxed.error_message(), Some("invalid digit found in string"));
    let nested = memory.one("check_quantities");
    assert_eq!(nested.result_code(), Some("Rejected<Vec<Quantity>>"));
    assert_eq!(nested.error_message(), Some("2 quantities rejected"));
}

#[test]
fn a_cancelled_async_span_did_not_succeed_and_says_why() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    runtime.block_on(async {
        tokio::select! {
            biased;
            _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            _ = charge_slowly() => unreachable!("the sleep wins"),
        }
        // A future dropped after its first poll, outside any `select!`.
        let mut dropped = Box::pin(charge_slowly());
        assert!(futures_poll_once(dropped.as_mut()).is_pending());
        drop(dropped);
    });
    flush(&pipeline);

    let cancelled = memory.named("charge_slowly");
    assert_eq!(cancelled.len(), 2);
    for span in cancelled {
        assert!(!span.success(), "a cancelled call is not a success");
        assert_eq!(span.result_code(), Some("cancelled"));
    }
}

thread_local! {
    /// A call a thread keeps pending until it ends.
    static PENDING: std::cell::RefCell<Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn a_call_cancelled_as_its_thread_ends_is_recorded_cancelled() {
    let (pipeline, memory) = install_memory();
    std::thread::spawn(|| {
        // Kept by a thread-local made before census's own state on this thread: dropped after
        // that state is let go.
        PENDING.with(|_| {});
        let mut pending = Box::pin(wait_forever());
        let polled = futures_poll_once(pending.as_mut());
        assert!(polled.is_pending());
        let unpolled = Box::pin(census_runtime::span("never polled").instrument(async {}));
        PENDING.with(|kept| kept.borrow_mut().extend([pending as _, unpolled as _]));
    })
    .join()
    .unwrap();
    flush(&pipeline);

    for name in ["wait_forever", "never polled"] {
        let span = memory.one(name);
        assert!(!span.success(), "{name}");
        assert_eq!(span.result_code(), Some("cancelled"), "{name}");
    }
}

#[inproc]
async fn wait_forever() {
    std::future::pending::<()>().await;
}

#[dependency(kind = "HTTP", target = "payments")]
async fn charge_slowly() -> Result<u32, String> {
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    Ok(1)
}

/// Polls a future once with a waker that does nothing.
fn futures_poll_once<F: std::future::Future>(
    future: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut cx)
}

#[dependency(kind = "SQL", target = "orders-db", fields(customer, limit))]
fn recent_orders(customer: &str, limit: u32, secret_token: &str) -> usize {
    let _ = secret_token;
    current_span().set_data("SELECT id FROM orders WHERE customer = $1 LIMIT $2");
    current_span().set_property("cache", "miss");
    limit as usize
}

#[test]
fn named_fields_and_run_time_values_are_recorded_and_nothing_else() {
    let (pipeline, memory) = install_memory();
    recent_orders("ada", 5, "s3cr3t");
    flush(&pipeline);
    let span = memory.one("recent_orders");
    let properties: Vec<_> = span.properties().collect();
    assert_eq!(
        properties,
        [("customer", "ada"), ("limit", "5"), ("cache", "miss")]
    );
    assert!(
        !format!("{span:?}").contains("s3cr3t"),
        "an argument not named is never recorded"
    );
    assert_eq!(
        span.data(),
        Some("SELECT id FROM orders WHERE customer = $1 LIMIT $2")
    );
}

struct PgOrders;

trait OrderRepository {
    fn get(&self, id: u64) -> Result<u64, String>;
    fn save(&mut self, id: u64) -> Result<(), String>;
    fn price(&self, id: u64) -> u64;
    fn pool_size(&self) -> usize;
}

#[dependency(kind = "SQL", target = "orders-db")]
impl OrderRepository for PgOrders {
    fn get(&self, id: u64) -> Result<u64, String> {
        Ok(id)
    }

    #[dependency(name = "orders.save", data = "INSERT INTO orders VALUES ($1)")]
    fn save(&mut self, id: u64) -> Result<(), String> {
        let _ = id;
        Err("unique violation".into())
    }

    #[inproc]
    fn price(&self, id: u64) -> u64 {
        id * 2
    }

    #[dependency(skip)]
    fn pool_size(&self) -> usize {
        4
    }
}

#[test]
fn impl_block_instruments_every_method_with_overrides_and_skips() {
    let (pipeline, memory) = install_memory();
    let mut repo = PgOrders;
    repo.get(1).unwrap();
    repo.save(1).unwrap_err();
    repo.price(1);
    assert_eq!(repo.pool_size(), 4);
    flush(&pipeline);

    let get = memory.one("PgOrders::get");
    assert_eq!((get.kind(), get.target()), ("SQL", Some("orders-db")));
    let save = memory.one("orders.save");
    assert_eq!((save.kind(), save.target()), ("SQL", Some("orders-db")));
    assert_eq!(save.data(), Some("INSERT INTO orders VALUES ($1)"));
    assert!(!save.success());
    let price = memory.one("PgOrders::price");
    assert_eq!((price.kind(), price.target()), ("INPROC", None));
    assert_eq!(
        memory.spans().len(),
        3,
        "the skipped method records nothing"
    );
}

/// Runs instrumented code when its thread ends, after census's own state there is let go.
struct RunsAtThreadEnd;

impl Drop for RunsAtThreadEnd {
    fn drop(&mut self) {
        // Each counted: no frame can hold a sync span any more.
        at_thread_end();
        census_runtime::span("builder at thread end").in_scope(at_thread_end);
        let mut builder =
            Box::pin(census_runtime::span("async builder at thread end").instrument(async {}));
        assert!(futures_poll_once(builder.as_mut()).is_ready());
        // Recorded: an async call keeps its record in its future.
        let mut call = Box::pin(async_at_thread_end());
        assert!(futures_poll_once(call.as_mut()).is_ready());
    }
}

thread_local! {
    static AT_THREAD_END: RunsAtThreadEnd = const { RunsAtThreadEnd };
}

#[inproc]
fn at_thread_end() {}

#[inproc]
async fn async_at_thread_end() {}

#[test]
fn code_run_as_its_thread_ends_records_async_calls_and_counts_the_spans_it_cannot_start() {
    let (pipeline, memory) = install_memory();
    let before = census_runtime::pipeline::diagnostics();
    std::thread::spawn(|| {
        // Made before census's own state on this thread, so let go after it.
        AT_THREAD_END.with(|_| {});
        census_runtime::span("while the thread runs").in_scope(|| {});
    })
    .join()
    .unwrap();
    flush(&pipeline);
    let after = census_runtime::pipeline::diagnostics();

    let spans = memory.spans();
    let mut names: Vec<&str> = spans.iter().map(|span| span.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["async_at_thread_end", "while the thread runs"]);
    // `at_thread_end` twice, the sync builder's span and the async builder's.
    assert_eq!(after.dropped_thread_ended - before.dropped_thread_ended, 4);
    assert_eq!(after.dropped_queue_full, before.dropped_queue_full);
}
