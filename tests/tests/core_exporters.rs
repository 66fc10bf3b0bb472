//! An exporter that panics is contained: the others keep receiving everything, the panic is
//! counted and reported, a panicking exporter is switched off, and flush, shutdown and the next
//! install keep their meaning.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use census_runtime::export::{Exporter, MemoryExporter, Record, Resource};
use census_runtime::pipeline::{FlushError, Pipeline, diagnostics};

/// Panics in the calls it is told to, counting every call.
#[derive(Clone, Default)]
struct Panicky {
    exports: Arc<AtomicUsize>,
    panic_on_export: PanicWhen,
    panic_on_flush: bool,
    panic_on_shutdown: bool,
}

#[derive(Clone, Copy, Default, PartialEq)]
enum PanicWhen {
    #[default]
    Never,
    FirstCall,
    EveryCall,
}

impl Exporter for Panicky {
    fn export(&mut self, _batch: &[Record], _resource: &Resource) {
        let call = self.exports.fetch_add(1, Ordering::SeqCst);
        match self.panic_on_export {
            PanicWhen::FirstCall if call == 0 => panic!("export call {call} went wrong"),
            PanicWhen::EveryCall => panic!("export call {call} went wrong"),
            _ => {}
        }
    }

    fn flush(&mut self, _deadline: Instant) -> bool {
        assert!(!self.panic_on_flush, "flush went wrong");
        true
    }

    fn shutdown(&mut self, _deadline: Instant) -> bool {
        assert!(!self.panic_on_shutdown, "shutdown went wrong");
        true
    }
}

/// Records every `log` line census writes.
struct Lines(Mutex<Vec<String>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(format!("{} {}", record.level(), record.args()));
        }
    }
    fn flush(&self) {}
}

fn capture_log() -> &'static Lines {
    let lines: &'static Lines = Box::leak(Box::new(Lines(Mutex::new(Vec::new()))));
    log::set_logger(lines).expect("the test's logger is the first");
    log::set_max_level(log::LevelFilter::Trace);
    lines
}

fn install(panicky: &Panicky) -> (Pipeline, MemoryExporter) {
    let memory = MemoryExporter::new();
    let pipeline = census_runtime::pipeline()
        .exporter(panicky.clone())
        .exporter(memory.clone())
        .install()
        .expect("installs");
    (pipeline, memory)
}

/// One flush per round, so that each round is one export call.
fn spans_in_rounds(
    pipeline: &Pipeline,
    rounds: usize,
    per_round: usize,
) -> Vec<Result<(), FlushError>> {
    (0..rounds)
        .map(|round| {
            for i in 0..per_round {
                census_runtime::span(format!("work-{round}-{i}")).in_scope(|| {});
            }
            pipeline.flush(Duration::from_secs(5))
        })
        .collect()
}

#[test]
fn an_exporter_that_panics_once_does_not_stop_the_others() {
    let log = capture_log();
    let panicky = Panicky {
        panic_on_export: PanicWhen::FirstCall,
        ..Panicky::default()
    };
    let (pipeline, memory) = install(&panicky);
    let flushed = spans_in_rounds(&pipeline, 4, 5);

    assert!(flushed.iter().all(Result::is_ok), "{flushed:?}");
    assert_eq!(
        memory.spans().len(),
        20,
        "the exporter beside it got every span"
    );
    assert_eq!(
        panicky.exports.load(Ordering::SeqCst),
        4,
        "it kept receiving after its panic"
    );
    assert_eq!(diagnostics().exporter_panics, 1);
    let lines = log.0.lock().unwrap().clone();
    let reported: Vec<&String> = lines.iter().filter(|l| l.contains("panicked")).collect();
    assert_eq!(reported.len(), 1, "{lines:#?}");
    assert!(reported[0].starts_with("ERROR"));
    assert!(
        reported[0].contains("export call 0 went wrong"),
        "{}",
        reported[0]
    );
    assert!(
        reported[0].contains("Panicky"),
        "names the exporter: {}",
        reported[0]
    );
}

#[test]
fn an_exporter_that_always_panics_is_switched_off_and_said_so() {
    let log = capture_log();
    let panicky = Panicky {
        panic_on_export: PanicWhen::EveryCall,
        ..Panicky::default()
    };
    let (pipeline, memory) = install(&panicky);
    let flushed = spans_in_rounds(&pipeline, 6, 5);

    assert!(flushed.iter().all(Result::is_ok), "{flushed:?}");
    assert_eq!(memory.spans().len(), 30);
    assert_eq!(
        panicky.exports.load(Ordering::SeqCst),
        3,
        "switched off after its third panic"
    );
    assert_eq!(diagnostics().exporter_panics, 3);
    let lines = log.0.lock().unwrap().clone();
    assert_eq!(
        lines.iter().filter(|l| l.contains("switched off")).count(),
        1,
        "{lines:#?}"
    );
}

#[test]
fn an_exporter_that_panics_in_flush_and_shutdown_keeps_their_meaning() {
    let panicky = Panicky {
        panic_on_flush: true,
        panic_on_shutdown: true,
        ..Panicky::default()
    };
    let (pipeline, memory) = install(&panicky);
    census_runtime::span("before the flush").in_scope(|| {});

    let started = Instant::now();
    let error = pipeline.flush(Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(error, FlushError::ExporterPanicked { exporter } if exporter.ends_with("Panicky")),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(memory.spans().len(), 1, "the other exporter was flushed");

    let error = pipeline.shutdown(Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(error, FlushError::ExporterPanicked { .. }),
        "{error:?}"
    );
    assert_eq!(diagnostics().exporter_panics, 2);

    // The pipeline is gone for good: a new one installs and records.
    let (again, memory) = census_tests::install_memory();
    census_runtime::span("after").in_scope(|| {});
    census_tests::flush(&again);
    assert_eq!(memory.spans().len(), 1);
}
