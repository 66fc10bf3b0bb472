//! Export throughput, in envelopes per second.
//!
//! - `serialise/census`: the Azure exporter's serialisation alone, on one core: a batch of
//!   1,000 recorded spans (roots, SQL dependencies with a command, failures) to the JSON body
//!   of a POST. `serialise/census+gzip` adds the gzip the transport applies.
//! - `end-to-end/*`: 20,000 instrumented calls, from the call to the envelope accepted by a
//!   loopback ingestion sink: census's pipeline and Azure exporter against `tracing` with
//!   `tracing-opentelemetry` and `opentelemetry-application-insights` (batch span processor),
//!   census over reqwest, the peer over ureq (a blocking client for its batch span processor's
//!   thread), both gzipping, each with queues large enough to drop nothing.

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use census_benches::{Behaviour, Sink};
use census_runtime::Sampler;
use census_runtime::azure::AzureExporter;
use census_runtime::export::{MemoryExporter, Resource, SpanRecord};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;

/// Spans per end-to-end iteration.
const END_TO_END: u64 = 20_000;

mod shop {
    use census_runtime::{dependency, inproc};

    pub struct Orders;

    #[dependency(
        kind = "SQL",
        target = "orders-db",
        data = "SELECT * FROM orders WHERE id = $1"
    )]
    impl Orders {
        pub fn get(&self, id: u64) -> Result<u64, String> {
            if id.is_multiple_of(7) {
                Err(format!("order {id} is locked"))
            } else {
                Ok(id * 10)
            }
        }
    }

    #[inproc]
    pub fn checkout(orders: &Orders, id: u64) -> Result<u64, String> {
        let a = orders.get(id).unwrap_or(0);
        let b = orders.get(id + 1).unwrap_or(0);
        orders.get(id + 2).map(|c| a + b + c)
    }

    #[inproc]
    #[inline(never)]
    pub fn call(x: u64) -> u64 {
        std::hint::black_box(x) ^ 0x9e37_79b9_7f4a_7c15
    }
}

#[tracing::instrument(skip_all)]
#[inline(never)]
fn traced_call(x: u64) -> u64 {
    black_box(x) ^ 0x9e37_79b9_7f4a_7c15
}

/// A realistic batch of 1,000 finished spans, recorded through a real pipeline.
fn recorded_batch() -> (Vec<SpanRecord>, Resource) {
    let memory = MemoryExporter::new();
    let census = census_runtime::pipeline()
        .sampler(Sampler::always())
        .cloud_role("orders-api")
        .cloud_role_instance("bench-host")
        .exporter(memory.clone())
        .install()
        .expect("no other pipeline is installed");
    for id in 0..250 {
        let _ = shop::checkout(&shop::Orders, id);
    }
    census
        .shutdown(Duration::from_secs(10))
        .expect("the memory exporter flushes");
    let spans = memory.spans();
    assert_eq!(spans.len(), 1000);
    let resource = memory.resource().expect("the pipeline gave its resource");
    (spans, resource)
}

fn serialise(c: &mut Criterion) {
    let (batch, resource) = recorded_batch();
    let mut exporter = AzureExporter::builder()
        .connection_string(format!(
            "InstrumentationKey={};IngestionEndpoint=http://127.0.0.1:9/",
            census_benches::IKEY
        ))
        .no_storage()
        .build()
        .expect("a valid exporter");
    let mut body = Vec::new();
    let mut group = c.benchmark_group("serialise");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("census", |b| {
        b.iter(|| exporter.serialise_batch(black_box(&batch), &resource, &mut body))
    });
    let mut gzipped = Vec::new();
    group.bench_function("census+gzip", |b| {
        b.iter(|| {
            exporter.serialise_batch(black_box(&batch), &resource, &mut body);
            gzipped.clear();
            let mut encoder =
                flate2::write::GzEncoder::new(&mut gzipped, flate2::Compression::fast());
            encoder.write_all(&body).expect("writes to a Vec");
            encoder.finish().expect("writes to a Vec").len()
        })
    });
    group.finish();
}

fn end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("end-to-end");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(END_TO_END));
    let deadline = Duration::from_secs(60);

    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let census = census_runtime::pipeline()
            .queue_capacity(4 * END_TO_END as usize)
            .exporter(
                AzureExporter::builder()
                    .connection_string(sink.connection_string())
                    .no_storage()
                    .queue_batches(2 * END_TO_END as usize / 100)
                    .build()
                    .expect("the Azure exporter builds"),
            )
            .install()
            .expect("no other pipeline is installed");
        group.bench_function("census", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = sink.envelopes() + END_TO_END;
                    for i in 0..END_TO_END {
                        shop::call(black_box(i));
                    }
                    census.flush(deadline).expect("census delivers in time");
                    assert!(sink.wait_for(target, deadline), "census lost envelopes");
                }
                start.elapsed()
            })
        });
        let _ = census.shutdown(Duration::from_secs(5));
    }

    {
        let sink = Sink::start(Behaviour::Answer).expect("a loopback port");
        let exporter = sink.appinsights_exporter();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(4 * END_TO_END as usize)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let default = tracing::subscriber::set_default(subscriber);
        group.bench_function("tracing-otel-appinsights", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = sink.envelopes() + END_TO_END;
                    for i in 0..END_TO_END {
                        traced_call(black_box(i));
                    }
                    // Its flush may time out on a large queue; the sink's count is what counts.
                    let _ = provider.force_flush();
                    assert!(
                        sink.wait_for(target, deadline),
                        "opentelemetry-application-insights lost envelopes: {} of {target} in {} requests",
                        sink.envelopes(),
                        sink.requests()
                    );
                }
                start.elapsed()
            })
        });
        drop(default);
        let _ = provider.shutdown();
    }
    group.finish();
}

criterion_group!(benches, serialise, end_to_end);
criterion_main!(benches);
