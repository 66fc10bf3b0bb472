//! End-to-end tests of census, and what they share.
//!
//! Every test installs its own pipeline; a pipeline is process-wide, so the suite runs under
//! `cargo nextest run`, which gives each test a process of its own.

use std::time::Duration;

use census_runtime::Sampler;
use census_runtime::export::{LogRecord, MemoryExporter};
use census_runtime::pipeline::Pipeline;

/// A pipeline that keeps every span in memory, sampling everything.
pub fn install_memory() -> (Pipeline, MemoryExporter) {
    install_memory_sampled(Sampler::always())
}

/// A pipeline that keeps every sampled span in memory.
pub fn install_memory_sampled(sampler: Sampler) -> (Pipeline, MemoryExporter) {
    let memory = MemoryExporter::new();
    let pipeline = census_runtime::pipeline()
        .sampler(sampler)
        .cloud_role("census-tests")
        .exporter(memory.clone())
        .install()
        .expect("the pipeline installs");
    (pipeline, memory)
}

/// The error a log record carries and its causes, outermost first: each one's type and message.
pub fn error_chain(log: &LogRecord) -> Vec<(&str, &str)> {
    log.errors()
        .iter()
        .map(|error| (error.type_name.as_str(), error.message.as_str()))
        .collect()
}

/// An error with a cause: a payment declined ("payment declined") because the card expired
/// ("card expired", a `std::io::Error` whose `Debug` form names it `Custom`).
#[derive(Debug)]
pub struct PaymentDeclined {
    source: std::io::Error,
}

impl PaymentDeclined {
    /// Declined because the card expired.
    pub fn card_expired() -> Self {
        PaymentDeclined {
            source: std::io::Error::other("card expired"),
        }
    }
}

impl std::fmt::Display for PaymentDeclined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment declined")
    }
}

impl std::error::Error for PaymentDeclined {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Delivers everything finished so far to the exporters.
pub fn flush(pipeline: &Pipeline) {
    pipeline
        .flush(Duration::from_secs(10))
        .expect("flush completes in time");
}

pub mod azure;
pub mod db;
pub mod identity;
pub mod ingestion;
pub mod python;

/// A multi-threaded tokio runtime with `workers` threads and its timers and I/O enabled.
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}
