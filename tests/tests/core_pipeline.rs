//! The pipeline: one at a time, a full queue drops and counts instead of blocking, flush sees
//! spans from idle threads, the console exporter prints trees, whole when their spans come in
//! several batches.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use census_runtime::export::{ConsoleExporter, Exporter, MemoryExporter, Record, Resource};
use census_runtime::inproc;
use census_runtime::pipeline::ConfigError;
use census_tests::{flush, install_memory};

#[inproc]
fn unit_of_work() {}

#[test]
fn a_second_install_is_refused_until_the_first_guard_is_dropped() {
    let (first, _memory) = install_memory();
    let second = census_runtime::pipeline()
        .exporter(MemoryExporter::new())
        .install();
    assert!(matches!(second, Err(ConfigError::AlreadyInstalled)));
    drop(first);
    let third = census_runtime::pipeline()
        .exporter(MemoryExporter::new())
        .install();
    assert!(third.is_ok());
}

#[test]
fn install_without_an_exporter_is_an_error_that_says_what_to_do() {
    // SAFETY: the test process is single-threaded here; nothing else reads the environment.
    unsafe { std::env::remove_var("APPLICATIONINSIGHTS_CONNECTION_STRING") };
    let error = census_runtime::pipeline().install().unwrap_err();
    assert!(matches!(error, ConfigError::NoExporter));
    assert!(
        error
            .to_string()
            .contains("APPLICATIONINSIGHTS_CONNECTION_STRING")
    );
}

/// An exporter that blocks until released: the worker is stuck, the queue fills.
struct Stuck {
    /// Told each time the worker enters `export`.
    entered: mpsc::Sender<()>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
    seen: Arc<Mutex<usize>>,
}

impl Exporter for Stuck {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        let _ = self.entered.send(());
        let _ = self.release.lock().unwrap().recv();
        *self.seen.lock().unwrap() += batch.len();
    }
}

/// A pipeline whose exporter is [`Stuck`], its queue 1,000 long, stuck exporting one span: from
/// then on nothing is drained. The pipeline, what releases the exporter, and how many records
/// it has seen.
fn install_stuck() -> (
    census_runtime::pipeline::Pipeline,
    mpsc::Sender<()>,
    Arc<Mutex<usize>>,
) {
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    let seen = Arc::new(Mutex::new(0));
    let pipeline = census_runtime::pipeline()
        .queue_capacity(1_000)
        .export_interval(Duration::from_millis(1))
        .exporter(Stuck {
            entered: entered_tx,
            release: Arc::new(Mutex::new(release_rx)),
            seen: seen.clone(),
        })
        .install()
        .unwrap();
    unit_of_work();
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker exports the first span");
    (pipeline, release_tx, seen)
}

/// After `calls` records made while the exporter of [`install_stuck`] was stuck: some were
/// dropped and counted, at least `kept` were not, and once the exporter is released every
/// record (`calls` and the first span) is either delivered or counted as dropped.
fn kept_or_dropped(
    pipeline: census_runtime::pipeline::Pipeline,
    release_tx: mpsc::Sender<()>,
    seen: Arc<Mutex<usize>>,
    calls: usize,
    what: &str,
    kept: &str,
) {
    let dropped = census_runtime::pipeline::diagnostics().dropped_queue_full as usize;
    assert!(dropped > 0, "the queue overflowed");
    assert!(
        dropped <= calls - 1_000,
        "{kept} was kept (dropped {dropped})"
    );
    // Release the exporter for as many batches as it may take.
    for _ in 0..calls {
        let _ = release_tx.send(());
    }
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let delivered = *seen.lock().unwrap();
    assert_eq!(
        delivered + dropped,
        calls + 1,
        "every {what} was either delivered or counted as dropped"
    );
}

#[test]
fn a_full_queue_drops_and_counts_and_never_blocks_the_caller() {
    // The calls below fill this thread's rings (at most 15,360 spans) and the queue.
    let (pipeline, release_tx, seen) = install_stuck();
    const CALLS: usize = 20_000;
    for _ in 0..CALLS {
        unit_of_work();
    }
    // Every call returned although the exporter is stuck; what did not fit was counted.
    kept_or_dropped(
        pipeline,
        release_tx,
        seen,
        CALLS,
        "span",
        "at least a queue's worth",
    );
}

#[test]
fn events_at_a_full_queue_are_kept_in_the_overflow_or_counted_as_dropped() {
    let (pipeline, release_tx, seen) = install_stuck();
    // Events and log records take a ring of their own (at most 7,936 of them), then the shared
    // overflow.
    const CALLS: usize = 20_000;
    for n in 0..CALLS {
        census_runtime::event("order_placed")
            .measurement("n", n as f64)
            .send();
    }
    kept_or_dropped(
        pipeline,
        release_tx,
        seen,
        CALLS,
        "event",
        "at least the overflow's worth",
    );
}

#[test]
fn flush_delivers_spans_finished_on_threads_that_are_now_idle() {
    let (pipeline, memory) = install_memory();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                unit_of_work();
                // The thread stays alive and idle while the test flushes.
                std::thread::sleep(Duration::from_millis(300));
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    flush(&pipeline);
    assert_eq!(memory.named("unit_of_work").len(), 8);
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn dropping_the_guard_delivers_what_is_queued() {
    let memory = MemoryExporter::new();
    let pipeline = census_runtime::pipeline()
        .export_interval(Duration::from_secs(3600))
        .exporter(memory.clone())
        .install()
        .unwrap();
    for _ in 0..10 {
        unit_of_work();
    }
    drop(pipeline);
    assert_eq!(memory.named("unit_of_work").len(), 10);
}

#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[inproc]
fn place_order() -> Result<(), String> {
    load_order();
    price_order()
}

#[census_runtime::dependency(kind = "SQL", target = "orders-db")]
fn load_order() {}

#[inproc]
fn price_order() -> Result<(), String> {
    Err("no price for sku-9".into())
}

#[test]
fn the_console_exporter_prints_each_operation_as_an_indented_tree() {
    let out = SharedBuffer::default();
    let pipeline = census_runtime::pipeline()
        .exporter(ConsoleExporter::to_writer(out.clone()))
        .install()
        .unwrap();
    let _ = place_order();
    pipeline.flush(Duration::from_secs(5)).unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("place_order  INPROC  "), "{text}");
    assert!(
        lines[0].ends_with("FAILED (String: no price for sku-9)"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("  load_order  SQL -> orders-db  "),
        "{text}"
    );
    assert!(lines[1].ends_with("  ok"), "{text}");
    assert!(lines[2].starts_with("  price_order  INPROC  "), "{text}");
    assert!(
        lines[2].contains(" ms  FAILED (String: no price for sku-9)"),
        "{text}"
    );
}

/// Waits until `done` holds, for at most ten seconds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In one process, a server's request continues the trace of the client call that caused it and
/// ends, on the server's thread, before that call: as in the HTTP demo, where the request used to
/// be printed alone above the tree of its caller.
#[test]
fn the_console_prints_a_request_that_ended_before_its_caller_inside_the_caller_s_tree() {
    let out = SharedBuffer::default();
    let pipeline = census_runtime::pipeline()
        .export_interval(Duration::from_millis(5))
        // However slow this machine, the request waits for its caller here.
        .exporter(ConsoleExporter::to_writer(out.clone()).wait_for_caller(Duration::from_secs(60)))
        .install()
        .unwrap();
    census_runtime::span("fetch").in_scope(|| {
        census_runtime::span("GET /stock/7")
            .kind("HTTP")
            .in_scope(|| {
                let call = census_runtime::current_span()
                    .context()
                    .expect("the call's span is current");
                std::thread::spawn(move || {
                    census_runtime::request("GET /stock/{id}")
                        .parent(call)
                        .in_scope(|| {});
                })
                .join()
                .unwrap();
                // The request reaches the exporter in a batch of its own, before its caller ends.
                wait_until("the request is exported", || {
                    census_runtime::pipeline::diagnostics().exported >= 1
                });
            });
    });
    pipeline.flush(Duration::from_secs(5)).unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("fetch  INPROC  "), "{text}");
    assert!(lines[1].starts_with("  GET /stock/7  HTTP  "), "{text}");
    assert!(
        lines[2].starts_with("    GET /stock/{id}  Request  "),
        "{text}"
    );
}

/// A request whose caller is in another process is printed once it has waited for its caller,
/// without a flush or any other span to wake the exporter: the worker ticks it.
#[test]
fn the_console_prints_a_request_from_another_process_after_waiting_for_its_caller() {
    let out = SharedBuffer::default();
    let _pipeline = census_runtime::pipeline()
        .export_interval(Duration::from_millis(5))
        .exporter(
            ConsoleExporter::to_writer(out.clone()).wait_for_caller(Duration::from_millis(50)),
        )
        .install()
        .unwrap();
    let remote_caller = census_runtime::SpanContext::new(
        census_runtime::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        census_runtime::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        true,
    );
    census_runtime::request("GET /orders/{id}")
        .parent(remote_caller)
        .in_scope(|| {});
    wait_until("the request is printed", || {
        !out.0.lock().unwrap().is_empty()
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.starts_with("GET /orders/{id}  Request  "),
        "printed as the top of its tree, with no note: {text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}
