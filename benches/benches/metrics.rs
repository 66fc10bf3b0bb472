//! What recording one value into a histogram costs through census's `metrics` recorder, beside
//! the same through OpenTelemetry metrics exported by `opentelemetry-application-insights`, in
//! the same run. Each records one value with one label, `route = "/orders"`.
//!
//! - `metrics/facade-noop`: the same macro call with `metrics`' own recorder that does nothing:
//!   the floor any recorder starts from.
//! - `metrics/census-macro`: `metrics::histogram!("checkout_ms", "route" => "/orders").record(v)`,
//!   the way applications write it: the macro looks the series up at every call.
//! - `metrics/census-handle`: `.record(v)` on a `metrics::Histogram` kept from the macro.
//! - `metrics/otel+appinsights`: `histogram.record(v, &[KeyValue::new("route", "/orders")])` on
//!   an `opentelemetry` `f64_histogram` built once, read by a periodic reader for
//!   `opentelemetry-application-insights` (posting to a loopback sink).
//!
//! The values cycle through 0..256, as latencies do: most are neither a new minimum nor a new
//! maximum.

use std::hint::black_box;
use std::time::Duration;

use census_benches::{Behaviour, Sink};
use census_runtime::export::{Exporter, Record, Resource};
use census_runtime::integrations::metrics::CensusRecorder;
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

/// Discards what it is given.
struct Discard;

impl Exporter for Discard {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        black_box(batch.len());
    }
}

fn histograms(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let mut i = 0u32;
        group.bench_function("facade-noop", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let value = f64::from(i % 256);
                metrics::histogram!("checkout_ms", "route" => "/orders").record(black_box(value));
            });
        });
    });
    {
        CensusRecorder::new()
            .install()
            .expect("the process's metrics recorder");
        let pipeline = census_runtime::pipeline()
            .exporter(Discard)
            .install()
            .expect("no other pipeline is installed");
        let mut i = 0u32;
        group.bench_function("census-macro", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let value = f64::from(i % 256);
                metrics::histogram!("checkout_ms", "route" => "/orders").record(black_box(value));
            });
        });
        let histogram = metrics::histogram!("checkout_ms", "route" => "/orders");
        group.bench_function("census-handle", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let value = f64::from(i % 256);
                histogram.record(black_box(value));
            });
        });
        let _ = pipeline.shutdown(Duration::from_secs(5));
    }
    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let exporter = sink.appinsights_exporter();
        let reader = PeriodicReader::builder(exporter).build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let histogram = provider.meter("bench").f64_histogram("checkout_ms").build();
        let mut i = 0u32;
        group.bench_function("otel+appinsights", |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let value = f64::from(i % 256);
                histogram.record(black_box(value), &[KeyValue::new("route", "/orders")]);
            });
        });
        let _ = provider.shutdown();
    }
    group.finish();
}

criterion_group!(benches, histograms);
criterion_main!(benches);
