//! What a log record and a `tracing` span cost through census's bridges, beside formatting the
//! same message into a `String` and beside the OpenTelemetry way to Application Insights
//! (`opentelemetry-appender-log` and `tracing-opentelemetry`, each with
//! `opentelemetry-application-insights`), in the same run.
//!
//! `log` has one logger per process: `CENSUS_BENCH_LOGGER=census`, `=otel` or `=otel-tracing`
//! says which this process installs (`scripts/bench` runs each); unset, the process measures
//! the rest.
//!
//! - `logs/format-string`: `format!("order {} placed", n)`, the message alone.
//! - `logs/format-in-place`: the same message formatted into a zeroed buffer on the stack, no
//!   allocation, each piece copied with `copy_from_slice`: formatting without a `String`, as an
//!   application would write it. census formats in place too, in the record's ring slot, and
//!   writes no zeros and copies short pieces inline: its formatting of this message costs less
//!   than this (BENCHMARKS.md says how much, measured by removing it).
//! - `logs/census`: `log::info!("order {} placed", n)` inside a recorded census span, through
//!   `LogBridge`, handed to an exporter that discards it.
//! - `logs/census-in-request`: the same inside an incoming request (`census_runtime::request`,
//!   named at run time), whose operation name each record carries.
//! - `logs/otel+appinsights`: the same call inside a recorded OpenTelemetry span, through
//!   `opentelemetry-appender-log`, batched for `opentelemetry-application-insights` (posting to a
//!   loopback sink).
//! - `logs/otel-tracing+appinsights`: the same call inside a recorded OpenTelemetry span, the
//!   way a service built on `tracing` sends its `log` records: through `tracing-log`'s
//!   `LogTracer` into `opentelemetry-appender-tracing`, batched for
//!   `opentelemetry-application-insights`.
//! - `tracing-event/census-layer`: `tracing::info!("order {} placed", n)` inside a recorded
//!   census span, through census's layer.
//! - `tracing-event/otel+appinsights`: the same inside a recorded OpenTelemetry span, through
//!   `opentelemetry-appender-tracing`.
//! - `tracing-span/registry`: a `#[tracing::instrument]` function with `tracing-subscriber`'s
//!   `Registry` alone: what every layer's span costs before the layer does anything.
//! - `tracing-span/census-span`: the same span made by census's own API,
//!   `census_runtime::span("handle").property("id", id).in_scope(..)`, recorded: what the
//!   layer adds to a census span.
//! - `tracing-span/census-layer`: a `#[tracing::instrument]` function through census's layer,
//!   recorded, handed to an exporter that discards it.
//! - `tracing-span/otel+appinsights`: the same through `tracing-opentelemetry`, batched for
//!   `opentelemetry-application-insights`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use census_benches::{Behaviour, Sink};
use census_runtime::export::{Exporter, Record, Resource};
use census_runtime::integrations::log::LogBridge;
use census_runtime::integrations::tracing::CensusLayer;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;

/// Discards what it is given: census records, queues and hands over, nothing more.
struct Discard;

impl Exporter for Discard {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        black_box(batch.len());
    }
}

fn census() -> census_runtime::pipeline::Pipeline {
    census_runtime::pipeline()
        .exporter(Discard)
        .install()
        .expect("no other pipeline is installed")
}

fn otel_logger_provider(sink: &Sink) -> SdkLoggerProvider {
    SdkLoggerProvider::builder()
        .with_batch_exporter(sink.appinsights_exporter())
        .build()
}

fn otel_tracer_provider(sink: &Sink) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(sink.appinsights_exporter())
        .build()
}

/// Measures, as `name`, a `log::info!` inside a recorded OpenTelemetry span, through whichever
/// logger the process installed, then shuts the providers down.
fn log_in_otel_span(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    sink: &Sink,
    logger_provider: &SdkLoggerProvider,
) {
    let tracer_provider = otel_tracer_provider(sink);
    let tracer = tracer_provider.tracer("bench");
    tracer.in_span("request", |_cx| {
        group.bench_function(name, |b| {
            b.iter(|| log::info!("order {} placed", black_box(7u64)));
        });
    });
    let _ = logger_provider.shutdown();
    let _ = tracer_provider.shutdown();
}

/// A message formatted into a buffer of its own, as census formats a record's message in its
/// ring slot.
struct InPlace {
    bytes: [u8; 118],
    len: usize,
}

impl Default for InPlace {
    fn default() -> Self {
        InPlace {
            bytes: [0; 118],
            len: 0,
        }
    }
}

impl std::fmt::Write for InPlace {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[tracing::instrument]
fn handle(id: u64) -> u64 {
    black_box(id)
}

fn logs(c: &mut Criterion) {
    let mut group = c.benchmark_group("logs");
    match std::env::var("CENSUS_BENCH_LOGGER").as_deref() {
        Ok("census") => {
            LogBridge::new()
                .level(log::LevelFilter::Info)
                .install()
                .expect("the process's logger");
            let pipeline = census();
            census_runtime::span("request").in_scope(|| {
                group.bench_function("census", |b| {
                    b.iter(|| log::info!("order {} placed", black_box(7u64)));
                });
            });
            // Inside an incoming request, whose name (made at run time, as the server
            // integrations make it from the route) every record under it carries.
            census_runtime::request(String::from("GET /orders/{id}")).in_scope(|| {
                group.bench_function("census-in-request", |b| {
                    b.iter(|| log::info!("order {} placed", black_box(7u64)));
                });
            });
            let _ = pipeline.shutdown(Duration::from_secs(5));
        }
        Ok("otel") => {
            let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
            let logger_provider = otel_logger_provider(&sink);
            let bridge = opentelemetry_appender_log::OpenTelemetryLogBridge::new(&logger_provider);
            log::set_boxed_logger(Box::new(bridge)).expect("the process's logger");
            log::set_max_level(log::LevelFilter::Info);
            log_in_otel_span(&mut group, "otel+appinsights", &sink, &logger_provider);
        }
        Ok("otel-tracing") => {
            let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
            let logger_provider = otel_logger_provider(&sink);
            let bridge = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                &logger_provider,
            );
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(bridge))
                .expect("the process's subscriber");
            tracing_log::LogTracer::init_with_filter(log::LevelFilter::Info)
                .expect("the process's logger");
            log_in_otel_span(
                &mut group,
                "otel-tracing+appinsights",
                &sink,
                &logger_provider,
            );
        }
        _ => {
            group.bench_function("format-string", |b| {
                b.iter(|| black_box(format!("order {} placed", black_box(7u64))));
            });
            group.bench_function("format-in-place", |b| {
                b.iter(|| {
                    let mut message = InPlace::default();
                    let _ = write!(message, "order {} placed", black_box(7u64));
                    black_box(message.len);
                });
            });
        }
    }
    group.finish();
}

fn tracing_events(c: &mut Criterion) {
    if std::env::var("CENSUS_BENCH_LOGGER").is_ok_and(|logger| !logger.is_empty()) {
        return;
    }
    let mut group = c.benchmark_group("tracing-event");
    {
        let pipeline = census();
        let subscriber = tracing_subscriber::registry().with(CensusLayer::new());
        let _default = tracing::subscriber::set_default(subscriber);
        census_runtime::span("request").in_scope(|| {
            group.bench_function("census-layer", |b| {
                b.iter(|| tracing::info!("order {} placed", black_box(7u64)));
            });
        });
        drop(_default);
        let _ = pipeline.shutdown(Duration::from_secs(5));
    }
    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let logger_provider = otel_logger_provider(&sink);
        let bridge = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
            &logger_provider,
        );
        let subscriber = tracing_subscriber::registry().with(bridge);
        let _default = tracing::subscriber::set_default(subscriber);
        let tracer_provider = otel_tracer_provider(&sink);
        let tracer = tracer_provider.tracer("bench");
        tracer.in_span("request", |_cx| {
            group.bench_function("otel+appinsights", |b| {
                b.iter(|| tracing::info!("order {} placed", black_box(7u64)));
            });
        });
        drop(_default);
        let _ = logger_provider.shutdown();
        let _ = tracer_provider.shutdown();
    }
    group.finish();
}

fn tracing_spans(c: &mut Criterion) {
    if std::env::var("CENSUS_BENCH_LOGGER").is_ok_and(|logger| !logger.is_empty()) {
        return;
    }
    let mut group = c.benchmark_group("tracing-span");
    {
        let subscriber = tracing_subscriber::registry();
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("registry", |b| b.iter(|| handle(black_box(7))));
    }
    {
        let pipeline = census();
        // The same span made by census's own API: what the layer adds to a census span.
        group.bench_function("census-span", |b| {
            b.iter(|| {
                census_runtime::span("handle")
                    .property("id", black_box(7u64))
                    .in_scope(|| black_box(7u64))
            });
        });
        let _ = pipeline.shutdown(Duration::from_secs(5));
    }
    {
        let pipeline = census();
        let subscriber = tracing_subscriber::registry().with(CensusLayer::new());
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("census-layer", |b| b.iter(|| handle(black_box(7))));
        drop(_default);
        let _ = pipeline.shutdown(Duration::from_secs(5));
    }
    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let provider = otel_tracer_provider(&sink);
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("otel+appinsights", |b| b.iter(|| handle(black_box(7))));
        drop(_default);
        let _ = provider.shutdown();
    }
    group.finish();
}

criterion_group!(benches, logs, tracing_events, tracing_spans);
criterion_main!(benches);
