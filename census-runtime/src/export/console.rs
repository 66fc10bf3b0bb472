//! An exporter that prints each finished operation as an indented tree.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::{Exporter, Resource};
use crate::context::{SpanId, TraceId};
use crate::site::SpanKind;
use crate::span::SpanRecord;

/// Spans kept while waiting for their operation's root; past this, everything is printed.
const MAX_WAITING: usize = 10_000;

/// Prints every finished operation as a tree: name, type, target, duration, outcome.
///
/// An operation is printed when its root span ends; spans whose root never comes (their parent
/// is in another process) are printed on flush.
///
/// ```text
/// place_order  INPROC  1.204 ms  ok
///   PgOrders::get  SQL -> orders-db  0.310 ms  ok
///   price  INPROC  0.002 ms  FAILED (panic: price list is empty)
/// ```
///
/// ```
/// let census = census_runtime::pipeline()
///     .exporter(census_runtime::ConsoleExporter::stdout())
///     .install()
///     .unwrap();
/// # drop(census);
/// ```
pub struct ConsoleExporter {
    out: Box<dyn Write + Send>,
    waiting: HashMap<TraceId, Vec<SpanRecord>>,
    waiting_count: usize,
}

impl std::fmt::Debug for ConsoleExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleExporter")
            .field("waiting", &self.waiting_count)
            .finish()
    }
}

impl ConsoleExporter {
    /// Prints to standard output.
    pub fn stdout() -> Self {
        Self::to_writer(io::stdout())
    }

    /// Prints to any writer.
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        ConsoleExporter {
            out: Box::new(out),
            waiting: HashMap::new(),
            waiting_count: 0,
        }
    }

    fn print_trace(&mut self, trace: TraceId, roots: &[SpanId]) {
        let Some(mut spans) = self.waiting.remove(&trace) else {
            return;
        };
        self.waiting_count -= spans.len();
        spans.sort_by_key(|s| s.start);
        let mut text = String::new();
        for root in roots {
            if let Some(index) = spans.iter().position(|s| s.span_id == *root) {
                let root = spans.remove(index);
                render(&mut text, &root, &mut spans, 0);
            }
        }
        // Whatever is left has its parent elsewhere: print each as a tree of its own.
        while let Some(orphan) = next_orphan(&mut spans) {
            render(&mut text, &orphan, &mut spans, 0);
        }
        let _ = self.out.write_all(text.as_bytes());
    }

    fn print_all(&mut self) {
        let traces: Vec<TraceId> = self.waiting.keys().copied().collect();
        for trace in traces {
            self.print_trace(trace, &[]);
        }
        let _ = self.out.flush();
    }
}

fn is_local_root(span: &SpanRecord) -> bool {
    span.parent_id.is_none() || span.span_kind() == SpanKind::Request
}

fn next_orphan(spans: &mut Vec<SpanRecord>) -> Option<SpanRecord> {
    let index = spans
        .iter()
        .position(|s| !spans.iter().any(|p| Some(p.span_id) == s.parent_id))?;
    Some(spans.remove(index))
}

fn render(text: &mut String, span: &SpanRecord, rest: &mut Vec<SpanRecord>, depth: usize) {
    let _ = write!(
        text,
        "{:indent$}{}  {}",
        "",
        span.name(),
        span.kind(),
        indent = depth * 2
    );
    if span.span_kind() == SpanKind::Request {
        text.push_str("Request");
    }
    if let Some(target) = span.target() {
        let _ = write!(text, " -> {target}");
    }
    let _ = write!(text, "  {}", format_duration(span.duration()));
    if span.success() {
        text.push_str("  ok");
    } else {
        let code = span.result_code().unwrap_or("error");
        match span.error_message() {
            Some(message) => {
                let _ = write!(text, "  FAILED ({code}: {message})");
            }
            None => {
                let _ = write!(text, "  FAILED ({code})");
            }
        }
    }
    if let Some(data) = span.data() {
        let _ = write!(text, "  [{}]", truncate(data, 80));
    }
    let mut properties = span.properties().peekable();
    if properties.peek().is_some() {
        text.push_str("  {");
        for (i, (key, value)) in properties.enumerate() {
            let _ = write!(
                text,
                "{}{key}={}",
                if i > 0 { ", " } else { "" },
                truncate(value, 40)
            );
        }
        text.push('}');
    }
    text.push('\n');
    while let Some(index) = rest.iter().position(|s| s.parent_id == Some(span.span_id)) {
        let child = rest.remove(index);
        render(text, &child, rest, depth + 1);
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn format_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros >= 1_000_000 {
        format!("{:.3} s", duration.as_secs_f64())
    } else {
        format!("{:.3} ms", micros as f64 / 1000.0)
    }
}

impl Exporter for ConsoleExporter {
    fn export(&mut self, batch: &[SpanRecord], _resource: &Resource) {
        let mut complete: Vec<(TraceId, SpanId)> = Vec::new();
        for span in batch {
            if is_local_root(span) {
                complete.push((span.trace_id, span.span_id));
            }
            self.waiting
                .entry(span.trace_id)
                .or_default()
                .push(span.clone());
            self.waiting_count += 1;
        }
        for (trace, root) in complete {
            self.print_trace(trace, &[root]);
        }
        if self.waiting_count > MAX_WAITING {
            self.print_all();
        }
        let _ = self.out.flush();
    }

    fn flush(&mut self, _deadline: Instant) -> bool {
        self.print_all();
        true
    }
}
