//! `log` records through census's `LogBridge`: correlated with the span they were written in,
//! across `.await`, tasks and threads; their severities and key-values; one carrying an error
//! an Exception with the error's chain; dropped with a dropped trace; those outside any span
//! kept, or sampled when the pipeline is asked to; passed on to the logger the application had;
//! chosen by target through a filter in `RUST_LOG`'s syntax, a bad one an error that names it;
//! a record written while another is formatted (by a `Display` that logs) kept as well, and one
//! written as its thread ends (by a thread-local's destructor); one written by the error that
//! fails a span, or by a field's `Display`, in that span.
//! `log` has one logger per process: every test here runs in a process of its own
//! (cargo-nextest).

use std::sync::{Arc, Mutex};

use census_runtime::Sampler;
use census_runtime::context::{FutureExt, spawn_thread};
use census_runtime::export::{LogRecord, MemoryExporter, Severity};
use census_runtime::integrations::log::LogBridge;
use census_tests::{
    PaymentDeclined, error_chain, flush, install_memory, install_memory_sampled,
    multi_thread_runtime,
};

/// A logger an application already had: keeps every line it is given.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<String>>>);

impl log::Log for Printed {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(format!(
            "{} {} {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

fn install_bridge(level: log::LevelFilter) {
    LogBridge::new()
        .level(level)
        .install()
        .expect("the first logger of this process");
}

fn by_message<'a>(logs: &'a [LogRecord], message: &str) -> &'a LogRecord {
    logs.iter()
        .find(|log| log.message() == message)
        .unwrap_or_else(|| panic!("no record {message:?} in {logs:#?}"))
}

#[test]
fn a_record_carries_its_span_s_operation_across_await_tasks_and_threads() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    runtime.block_on(
        census_runtime::request("GET /orders/{id}").instrument(async {
            log::info!("before the await");
            tokio::task::yield_now().await;
            log::info!("after the await");
            tokio::spawn(async { log::info!("in a spawned task") }.in_current_span())
                .await
                .unwrap();
            spawn_thread(|| log::info!("on another thread"))
                .join()
                .unwrap();
        }),
    );
    flush(&pipeline);

    let request = memory.one("GET /orders/{id}");
    let logs = memory.logs();
    for message in [
        "before the await",
        "after the await",
        "in a spawned task",
        "on another thread",
    ] {
        let log = by_message(&logs, message);
        assert_eq!(log.trace_id(), Some(request.trace_id()), "{message}");
        assert_eq!(log.parent_id(), Some(request.span_id()), "{message}");
        assert_eq!(log.operation_name(), Some("GET /orders/{id}"), "{message}");
    }
}

#[census_runtime::dependency(kind = "SQL", target = "orders-db")]
fn load_order(id: u64) -> u64 {
    log::debug!(order = id; "loading order {id}");
    id
}

#[test]
fn severities_sources_and_key_values_are_the_record_s() {
    install_bridge(log::LevelFilter::Trace);
    let (pipeline, memory) = install_memory();
    census_runtime::span("levels").in_scope(|| {
        log::trace!("a trace line");
        log::debug!("a debug line");
        log::info!(sku = "caviar", quantity = 2; "an info line");
        log::warn!("a warning");
        log::error!(target: "orders::payments", "an error");
        load_order(7);
    });
    flush(&pipeline);

    let logs = memory.logs();
    let severities: Vec<(&str, Severity)> = [
        "a trace line",
        "a debug line",
        "an info line",
        "a warning",
        "an error",
    ]
    .into_iter()
    .map(|message| (message, by_message(&logs, message).severity()))
    .collect();
    assert_eq!(
        severities,
        [
            ("a trace line", Severity::Verbose),
            ("a debug line", Severity::Verbose),
            ("an info line", Severity::Information),
            ("a warning", Severity::Warning),
            ("an error", Severity::Error),
        ]
    );
    let info = by_message(&logs, "an info line");
    assert_eq!(info.property("sku"), Some("caviar"));
    assert_eq!(info.property("quantity"), Some("2"));
    assert_eq!(info.target(), module_path!());
    assert_eq!(info.module_path(), Some(module_path!()));
    assert!(info.file().is_some_and(|f| f.ends_with("logs_bridge.rs")));
    assert!(info.line().is_some());
    assert_eq!(
        by_message(&logs, "an error").target(),
        "orders::payments",
        "an explicit target is kept"
    );
    let nested = by_message(&logs, "loading order 7");
    assert_eq!(nested.parent_id(), Some(memory.one("load_order").span_id()));
    assert_eq!(nested.property("order"), Some("7"));
}

/// An order that logs when it is shown: a `Display` that writes a record of its own, as an
/// application's types may.
struct Audited(u64);

impl std::fmt::Display for Audited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        log::info!("order {} shown", self.0);
        write!(f, "order {}", self.0)
    }
}

#[test]
fn a_record_written_while_another_is_formatted_is_kept_as_well() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    census_runtime::span("checkout").in_scope(|| log::info!("{} placed", Audited(7)));
    flush(&pipeline);

    let checkout = memory.one("checkout").span_id();
    let logs = memory.logs();
    for message in ["order 7 placed", "order 7 shown"] {
        let log = by_message(&logs, message);
        assert_eq!(log.parent_id(), Some(checkout), "{message}");
    }
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert_eq!(
        census_runtime::pipeline::diagnostics().dropped_queue_full,
        0
    );
}

/// A refusal that logs when it is shown, as an error type may.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        log::warn!("explaining a refusal");
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

#[census_runtime::inproc]
fn reserve() -> Result<(), Refused> {
    Err(Refused)
}

#[test]
fn a_record_written_by_the_error_that_fails_a_span_is_written_in_that_span() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    let _ = reserve();
    let _ = census_runtime::span("pay").try_in_scope(|| Err::<(), _>(Refused));
    flush(&pipeline);

    let (reserve, pay) = (memory.one("reserve"), memory.one("pay"));
    for span in [&reserve, &pay] {
        assert!(!span.success());
        assert_eq!(span.error_message(), Some("refused"));
    }
    let logs = memory.logs();
    let mut parents: Vec<_> = logs
        .iter()
        .filter(|log| log.message() == "explaining a refusal")
        .map(|log| log.parent_id())
        .collect();
    parents.sort();
    let mut expected = vec![Some(reserve.span_id()), Some(pay.span_id())];
    expected.sort();
    assert_eq!(parents, expected, "{logs:#?}");
}

#[census_runtime::inproc(fields(order))]
fn ship(order: Audited) -> u64 {
    order.0
}

#[test]
fn a_record_written_by_a_field_s_display_is_written_in_the_span_it_is_recorded_on() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    ship(Audited(7));
    flush(&pipeline);

    let ship = memory.one("ship");
    assert_eq!(ship.property("order"), Some("order 7"));
    let logs = memory.logs();
    assert_eq!(
        by_message(&logs, "order 7 shown").parent_id(),
        Some(ship.span_id())
    );
}

/// A connection a thread keeps, which logs when the thread ends and it is let go.
struct Connection;

impl Drop for Connection {
    fn drop(&mut self) {
        log::info!("connection closed");
    }
}

thread_local! {
    static CONNECTION: Connection = const { Connection };
}

#[test]
fn a_record_written_as_its_thread_ends_is_kept_outside_any_span() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    std::thread::spawn(|| {
        // Made before census's own state on this thread, so let go after it.
        CONNECTION.with(|_| {});
        census_runtime::span("work").in_scope(|| log::info!("working"));
    })
    .join()
    .unwrap();
    flush(&pipeline);

    let logs = memory.logs();
    let working = by_message(&logs, "working");
    assert_eq!(working.parent_id(), Some(memory.one("work").span_id()));
    let closed = by_message(&logs, "connection closed");
    assert_eq!(
        (
            closed.trace_id(),
            closed.parent_id(),
            closed.operation_name()
        ),
        (None, None, None)
    );
}

#[test]
fn a_record_carrying_an_error_is_an_exception_with_the_error_s_chain() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    let declined = PaymentDeclined::card_expired();
    census_runtime::span("charge").in_scope(|| {
        log::error!(err:err = declined, order = 7; "charge failed");
        log::warn!(retry = 2; "retrying");
    });
    flush(&pipeline);

    let logs = memory.logs();
    let failed = by_message(&logs, "charge failed");
    assert_eq!(
        error_chain(failed),
        [
            ("PaymentDeclined", "payment declined"),
            ("Custom", "card expired")
        ]
    );
    assert_eq!(failed.severity(), Severity::Error);
    assert_eq!(failed.property("order"), Some("7"));
    assert_eq!(failed.property("err"), None, "the error is the Exception's");
    assert_eq!(failed.parent_id(), Some(memory.one("charge").span_id()));
    assert!(
        by_message(&logs, "retrying").errors().is_empty(),
        "a plain Message"
    );
}

#[test]
fn a_record_outside_any_span_has_no_operation_and_levels_below_the_bridge_s_are_left_out() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory) = install_memory();
    log::info!("outside any span");
    log::debug!("below the bridge's level");
    flush(&pipeline);

    let logs = memory.logs();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    let log = &logs[0];
    assert_eq!(log.message(), "outside any span");
    assert_eq!(
        (log.trace_id(), log.parent_id(), log.operation_name()),
        (None, None, None)
    );
    assert_eq!(log.sample_rate(), 100.0);
}

#[test]
fn a_sampled_out_trace_s_records_are_dropped_with_it_and_others_are_kept() {
    install_bridge(log::LevelFilter::Info);
    let (pipeline, memory): (_, MemoryExporter) = install_memory_sampled(Sampler::never());
    census_runtime::span("dropped").in_scope(|| log::info!("inside a dropped trace"));
    load_order(3);
    log::info!("outside any trace");
    flush(&pipeline);

    let messages: Vec<String> = memory
        .logs()
        .iter()
        .map(|log| log.message().to_owned())
        .collect();
    assert_eq!(messages, ["outside any trace"]);
}

#[test]
fn records_outside_any_span_are_sampled_at_the_rate_when_asked_and_say_so() {
    install_bridge(log::LevelFilter::Info);
    let memory = MemoryExporter::new();
    let pipeline = census_runtime::pipeline()
        .sampler(Sampler::probability(0.25))
        .sample_outside_spans(true)
        .exporter(memory.clone())
        .install()
        .expect("the pipeline installs");
    const WRITTEN: usize = 4_000;
    for n in 0..WRITTEN {
        log::info!("background job step {n}");
        census_runtime::event("step").property("n", n).send();
    }
    flush(&pipeline);

    // A quarter of each, drawn at random: 1,000 expected, a standard deviation of 27.
    let logs = memory.logs();
    let events = memory.events();
    for (what, kept) in [("log records", logs.len()), ("events", events.len())] {
        assert!(
            (850..=1_150).contains(&kept),
            "{kept} {what} of {WRITTEN} kept at 25 %"
        );
    }
    assert!(logs.iter().all(|log| log.sample_rate() == 25.0));
    assert!(events.iter().all(|event| event.sample_rate() == 25.0));
    // Each record drawn on its own: the kept ones are spread over the whole run.
    let steps: Vec<usize> = logs
        .iter()
        .filter_map(|log| log.message().strip_prefix("background job step "))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(steps.iter().any(|&n| n < WRITTEN / 4) && steps.iter().any(|&n| n >= WRITTEN * 3 / 4));
}

#[test]
fn the_logger_the_application_had_keeps_printing_everything_at_its_own_level() {
    let printed = Printed::default();
    LogBridge::new()
        .level(log::LevelFilter::Warn)
        .forward_to(printed.clone(), log::LevelFilter::Debug)
        .install()
        .unwrap();
    let (pipeline, memory) = install_memory();
    census_runtime::span("both").in_scope(|| {
        log::debug!("printed only");
        log::warn!("printed and recorded");
        log::trace!("neither");
    });
    flush(&pipeline);

    let lines = printed.0.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.ends_with("printed only")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.ends_with("printed and recorded")));
    assert!(!lines.iter().any(|l| l.ends_with("neither")));
    let recorded: Vec<String> = memory
        .logs()
        .iter()
        .map(|log| log.message().to_owned())
        .collect();
    assert_eq!(recorded, ["printed and recorded"]);
}

#[test]
fn a_filter_in_rust_log_syntax_chooses_records_by_target_and_the_forward_keeps_its_own() {
    let printed = Printed::default();
    LogBridge::new()
        .filter("info,noisy=warn,noisy::quiet=off,silent=off")
        .expect("directives in RUST_LOG's syntax")
        .forward_to(printed.clone(), log::LevelFilter::Debug)
        .install()
        .unwrap();
    let (pipeline, memory) = install_memory();
    census_runtime::span("filtered").in_scope(|| {
        log::info!(target: "app", "app info");
        log::debug!(target: "app", "app debug");
        log::info!(target: "noisy::pool", "noisy info");
        log::warn!(target: "noisy::pool", "noisy warning");
        log::error!(target: "noisy::quiet", "quiet error");
        log::error!(target: "silent", "silent error");
    });
    flush(&pipeline);

    let mut recorded: Vec<String> = memory
        .logs()
        .iter()
        .map(|log| log.message().to_owned())
        .collect();
    recorded.sort();
    assert_eq!(recorded, ["app info", "noisy warning"]);
    // What is passed on is the other logger's to choose: every record at Debug and above.
    assert_eq!(printed.0.lock().unwrap().len(), 6);
}

#[test]
fn a_filter_that_is_not_one_is_an_error_that_names_the_directive() {
    let error = LogBridge::new()
        .filter("info,sqlx=loud")
        .expect_err("`loud` is no level");
    let said = error.to_string();
    assert!(
        said.contains("info,sqlx=loud") && said.contains("'loud'"),
        "{said}"
    );
    let error = LogBridge::new()
        .filter("info/order placed")
        .expect_err("a message filter");
    assert!(error.to_string().contains("message filter"), "{error}");
}
