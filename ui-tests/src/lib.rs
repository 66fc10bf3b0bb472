//! Compile-pass and compile-fail cases of the census attributes.
//!
//! The cases live in `tests/ui/`; this library holds what the passing cases share: a pipeline
//! that keeps spans in memory, so that each case can check what its functions recorded.

use census_runtime::Sampler;
use census_runtime::export::{MemoryExporter, SpanRecord};
use census_runtime::pipeline::Pipeline;
use std::time::Duration;

/// A pipeline that records every span in memory.
///
/// ```
/// let capture = census_ui_tests::Capture::install();
/// census_runtime::span("work").in_scope(|| {});
/// assert_eq!(capture.one("work").kind(), "INPROC");
/// ```
pub struct Capture {
    memory: MemoryExporter,
    pipeline: Pipeline,
}

impl Capture {
    /// Installs the pipeline; keep the value alive while spans are recorded.
    pub fn install() -> Capture {
        let memory = MemoryExporter::new();
        let pipeline = census_runtime::pipeline()
            .sampler(Sampler::always())
            .exporter(memory.clone())
            .install()
            .expect("a pipeline with a memory exporter installs");
        Capture { memory, pipeline }
    }

    /// Every span finished so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.flush();
        self.memory.spans()
    }

    /// The one span named `name`; panics unless there is exactly one.
    pub fn one(&self, name: &str) -> SpanRecord {
        self.flush();
        self.memory.one(name)
    }

    fn flush(&self) {
        self.pipeline
            .flush(Duration::from_secs(5))
            .expect("spans are flushed within 5 s");
    }
}
