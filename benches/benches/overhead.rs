//! The cost of one instrumented call, census beside its peers, in one criterion group per
//! variant so that the report lists them side by side:
//!
//! - `sync`: a function returning a number;
//! - `async`: the same as an `async fn`, polled once with a no-op waker (its own cost is the
//!   same for every case);
//! - `nested`: a root calling 10 instrumented children (11 spans per iteration).
//!
//! The cases, in the order they run (tracing, fastrace and census keep global state, so the
//! cases that need none come first, and `scripts/bench` runs each group in a process of its
//! own, naming it in `CENSUS_BENCH_VARIANT`):
//!
//! | id | what |
//! | --- | --- |
//! | `plain` | the function without instrumentation |
//! | `floor/two-clock-readings` | the function between two reads of the time-stamp counter: what timing a call costs at least |
//! | `census/no-pipeline` | `#[inproc]`, no pipeline installed |
//! | `tracing/no-subscriber` | `#[instrument]`, no subscriber |
//! | `fastrace/no-root` | `#[trace]` without a parent span: fastrace records nothing |
//! | `fastrace/root` | a `Span::root` per call (the call is a trace's root, as census's are), set as local parent, no reporter |
//! | `census/sampled-out` | a pipeline whose sampler drops every trace |
//! | `census/recorded` | every span recorded, into an exporter that discards them |
//! | `census/recorded-10%` | a pipeline keeping 10 % of traces (each kept one's id drawn until its score is below the rate), the same exporter |
//! | `census/rate-limited` | `Sampler::rate_limited(1000.0)`: the rate adapts to the calls made, down to its lowest steps, the same exporter |
//! | `census/sampled-out+metrics` | as `census/sampled-out`, with the standard metrics on: each call timed and counted on its thread |
//! | `census/recorded+metrics` | as `census/recorded`, with the standard metrics on: the worker counts each span |
//! | `census/recorded+azure` | every span recorded, the Azure exporter posting to a loopback sink (standard metrics off, as in earlier runs) |
//! | `tracing/registry` | a `Registry` with a layer that does nothing |
//! | `tracing-otel/sampled-out` | `tracing-opentelemetry`, a provider whose sampler drops every trace |
//! | `tracing-otel/recorded+appinsights` | `tracing-opentelemetry`, batch export by `opentelemetry-application-insights` to the sink |
//! | `fastrace/root+reporter` | as `fastrace/root`, with a reporter set and fastrace's collector running |

use std::hint::black_box;
use std::time::Duration;

use census_benches::{Behaviour, Sink, run_ready};
use census_runtime::Sampler;
use census_runtime::azure::AzureExporter;
use census_runtime::export::{Exporter, Record, Resource};
use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;

/// The same body everywhere: cheap, and kept by the optimiser.
macro_rules! body {
    ($x:expr) => {
        black_box($x) ^ 0x9e37_79b9_7f4a_7c15
    };
}

/// The functions of one case: a call, its async twin, and a root with 10 children. Each case
/// has its own, so that each library sees its own call sites.
macro_rules! functions {
    ($module:ident, #[$attr:meta]) => {
        mod $module {
            use std::hint::black_box;

            #[$attr]
            #[inline(never)]
            pub fn call(x: u64) -> u64 {
                body!(x)
            }

            #[$attr]
            #[inline(never)]
            pub async fn call_async(x: u64) -> u64 {
                body!(x)
            }

            #[$attr]
            #[inline(never)]
            pub fn nested(x: u64) -> u64 {
                let mut acc = x;
                for i in 0..10 {
                    acc = child(acc.wrapping_add(i));
                }
                acc
            }

            #[$attr]
            #[inline(never)]
            pub fn child(x: u64) -> u64 {
                body!(x)
            }
        }
    };
}

functions!(plain, #[doc = "not instrumented"]);
functions!(census_fns, #[census_runtime::inproc]);
functions!(tracing_none, #[tracing::instrument(skip_all)]);
functions!(tracing_registry, #[tracing::instrument(skip_all)]);
functions!(tracing_otel_dropped, #[tracing::instrument(skip_all)]);
functions!(tracing_otel, #[tracing::instrument(skip_all)]);
functions!(fastrace_fns, #[fastrace::trace]);

/// fastrace records a span only under a root: these make each call a root, as a census call
/// without a parent is.
mod fastrace_rooted {
    use fastrace::prelude::*;
    use std::hint::black_box;

    #[inline(never)]
    pub fn call(x: u64) -> u64 {
        let root = Span::root("call", SpanContext::random());
        let _guard = root.set_local_parent();
        body!(x)
    }

    #[inline(never)]
    pub async fn call_async(x: u64) -> u64 {
        async move { body!(x) }
            .in_span(Span::root("call_async", SpanContext::random()))
            .await
    }

    #[inline(never)]
    pub fn nested(x: u64) -> u64 {
        let root = Span::root("nested", SpanContext::random());
        let _guard = root.set_local_parent();
        let mut acc = x;
        for i in 0..10 {
            acc = super::fastrace_fns::child(acc.wrapping_add(i));
        }
        acc
    }
}

/// The floor of any recorder that times each call: the body between two readings of the
/// time-stamp counter, the clock census reads (and fastrace, through `minstant`), and nothing
/// else. What a recorded span costs above this is the recorder's own work.
mod clock_floor {
    use std::hint::black_box;

    #[inline(always)]
    fn read() -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `rdtsc` exists on every x86-64 CPU and has no preconditions.
            unsafe { core::arch::x86_64::_rdtsc() }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            std::time::Instant::now().elapsed().as_nanos() as u64
        }
    }

    #[inline(never)]
    pub fn call(x: u64) -> u64 {
        let start = read();
        let out = body!(x);
        black_box(read().wrapping_sub(start));
        out
    }

    #[inline(never)]
    pub async fn call_async(x: u64) -> u64 {
        call(x)
    }

    #[inline(never)]
    pub fn nested(x: u64) -> u64 {
        let start = read();
        let mut acc = x;
        for i in 0..10 {
            acc = call(acc.wrapping_add(i));
        }
        black_box(read().wrapping_sub(start));
        acc
    }
}

/// Which shape of call a group measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Sync,
    Async,
    Nested,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Sync => "sync",
            Variant::Async => "async",
            Variant::Nested => "nested",
        }
    }
}

/// Benchmarks one case's functions in the shape of `variant`.
macro_rules! bench {
    ($group:expr, $variant:expr, $id:expr, $module:ident) => {
        match $variant {
            Variant::Sync => $group.bench_function($id, |b| b.iter(|| $module::call(black_box(7)))),
            Variant::Async => $group.bench_function($id, |b| {
                b.iter(|| run_ready($module::call_async(black_box(7))))
            }),
            Variant::Nested => {
                $group.bench_function($id, |b| b.iter(|| $module::nested(black_box(7))))
            }
        }
    };
}

/// An exporter that discards every batch: spans are recorded, queued and handed over, and go
/// nowhere.
struct Discard;

impl Exporter for Discard {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        black_box(batch.len());
    }
}

/// [`Discard`] taking the standard metrics: every call is counted before sampling, the calls of
/// dropped traces timed on their thread.
struct DiscardCounting;

impl Exporter for DiscardCounting {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        black_box(batch.len());
    }

    fn standard_metrics(&self) -> bool {
        true
    }
}

/// A no-op layer: what a `Registry` costs without any work of a layer's own.
struct NoopLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoopLayer {}

/// A fastrace reporter that drops what its collector hands it.
struct DiscardReporter;

impl fastrace::collector::Reporter for DiscardReporter {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        black_box(spans.len());
    }
}

fn otel_provider(sink: &Sink, sampler: opentelemetry_sdk::trace::Sampler) -> SdkTracerProvider {
    let exporter = sink.appinsights_exporter();
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_batch_exporter(exporter)
        .build()
}

fn census_pipeline(sampler: Sampler) -> census_runtime::pipeline::Pipeline {
    census_runtime::pipeline()
        .sampler(sampler)
        .exporter(Discard)
        .install()
        .expect("no other pipeline is installed")
}

/// [`census_pipeline`] with the standard metrics on.
fn census_counting(sampler: Sampler) -> census_runtime::pipeline::Pipeline {
    census_runtime::pipeline()
        .sampler(sampler)
        .exporter(DiscardCounting)
        .install()
        .expect("no other pipeline is installed")
}

/// `tracing-opentelemetry` over [`otel_provider`] as this thread's default subscriber.
fn otel_default(
    sink: &Sink,
    sampler: opentelemetry_sdk::trace::Sampler,
) -> (SdkTracerProvider, tracing::subscriber::DefaultGuard) {
    let provider = otel_provider(sink, sampler);
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    let subscriber = tracing_subscriber::registry().with(layer);
    (provider, tracing::subscriber::set_default(subscriber))
}

fn shut(census: census_runtime::pipeline::Pipeline) {
    let _ = census.shutdown(Duration::from_secs(5));
}

fn run_variant(c: &mut Criterion, variant: Variant) {
    // The libraries keep global state (a subscriber once set, a reporter), so a process runs
    // one variant when told which: a filter alone would still set them up.
    if let Ok(only) = std::env::var("CENSUS_BENCH_VARIANT")
        && only != variant.name()
    {
        return;
    }
    let mut group: BenchmarkGroup<'_, WallTime> = c.benchmark_group(variant.name());

    // Nothing installed anywhere yet.
    bench!(group, variant, "plain", plain);
    bench!(group, variant, "floor/two-clock-readings", clock_floor);
    bench!(group, variant, "census/no-pipeline", census_fns);
    bench!(group, variant, "tracing/no-subscriber", tracing_none);
    bench!(group, variant, "fastrace/no-root", fastrace_fns);
    bench!(group, variant, "fastrace/root", fastrace_rooted);

    let census = census_pipeline(Sampler::never());
    bench!(group, variant, "census/sampled-out", census_fns);
    shut(census);

    let census = census_pipeline(Sampler::always());
    bench!(group, variant, "census/recorded", census_fns);
    shut(census);

    let census = census_pipeline(Sampler::probability(0.1));
    bench!(group, variant, "census/recorded-10%", census_fns);
    shut(census);

    // A budget far below the calls made: the rate adapts down to the steps near 1e-6, so that
    // this is the sampled-out path of a rate-limited sampler, with its few kept roots.
    let census = census_pipeline(Sampler::rate_limited(1_000.0));
    bench!(group, variant, "census/rate-limited", census_fns);
    shut(census);

    let census = census_counting(Sampler::never());
    bench!(group, variant, "census/sampled-out+metrics", census_fns);
    shut(census);

    let census = census_counting(Sampler::always());
    bench!(group, variant, "census/recorded+metrics", census_fns);
    shut(census);

    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let before = census_runtime::pipeline::diagnostics();
        let behind_before = census_runtime::azure::diagnostics();
        let census = census_runtime::pipeline()
            .exporter(
                AzureExporter::builder()
                    .connection_string(sink.connection_string())
                    .no_storage()
                    // The figure compares with earlier runs, before the standard metrics:
                    // their cost is `census/recorded+metrics`'s.
                    .standard_metrics(false)
                    .build()
                    .expect("the Azure exporter builds"),
            )
            .install()
            .expect("no other pipeline is installed");
        bench!(group, variant, "census/recorded+azure", census_fns);
        shut(census);
        let after = census_runtime::pipeline::diagnostics();
        let behind = census_runtime::azure::diagnostics();
        eprintln!(
            "census/recorded+azure: {} envelopes delivered, {} spans dropped at the full queue, {} envelopes dropped behind the transport",
            sink.envelopes(),
            after.dropped_queue_full - before.dropped_queue_full,
            (behind.dropped_unstored + behind.dropped_storage_full)
                - (behind_before.dropped_unstored + behind_before.dropped_storage_full),
        );
    }

    {
        let subscriber = tracing_subscriber::registry().with(NoopLayer);
        let _default = tracing::subscriber::set_default(subscriber);
        bench!(group, variant, "tracing/registry", tracing_registry);
    }

    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let (provider, default) = otel_default(&sink, opentelemetry_sdk::trace::Sampler::AlwaysOff);
        bench!(
            group,
            variant,
            "tracing-otel/sampled-out",
            tracing_otel_dropped
        );
        drop(default);
        let _ = provider.shutdown();
    }

    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let (provider, default) = otel_default(&sink, opentelemetry_sdk::trace::Sampler::AlwaysOn);
        bench!(
            group,
            variant,
            "tracing-otel/recorded+appinsights",
            tracing_otel
        );
        drop(default);
        let _ = provider.shutdown();
        eprintln!(
            "tracing-otel/recorded+appinsights: {} envelopes delivered",
            sink.envelopes()
        );
    }

    fastrace::set_reporter(DiscardReporter, fastrace::collector::Config::default());
    bench!(group, variant, "fastrace/root+reporter", fastrace_rooted);
    fastrace::flush();

    group.finish();
}

fn sync(c: &mut Criterion) {
    run_variant(c, Variant::Sync);
}

fn asynchronous(c: &mut Criterion) {
    run_variant(c, Variant::Async);
}

fn nested(c: &mut Criterion) {
    run_variant(c, Variant::Nested);
}

criterion_group!(benches, sync, asynchronous, nested);
criterion_main!(benches);
