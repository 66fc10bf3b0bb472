//! Records to Application Insights envelopes, written as compact JSON straight into a reused
//! buffer, one item per envelope: a span to a `RemoteDependency` or a `Request` (and an
//! `Exception` when a panic unwound through it), a log record to a `Message` (an `Exception`
//! when it carries an error), a custom event to an `Event`, a metric's interval to a `Metric`.
//!
//! Each envelope is one line of JSON with no raw newline in it, so a batch is both the body of a
//! POST (`[item,item]`) and a storage file (one item per line), and the transport can resend any
//! single item.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::limits::{self, cut, required};
use crate::export::Resource;
use crate::record::{
    AUTHENTICATED_USER_PROPERTY, CLIENT_ADDRESS_PROPERTY, Correlation, ErrorDetail, EventRecord,
    ExceptionInfo, LogRecord, MetricKind, MetricRecord, Record, Severity, SpanRecord,
    USER_PROPERTY, ip_address, last_of_each, last_value, replaced,
};
use crate::site::SpanKind;
use crate::standard::result_code;

/// Serialised envelopes, back to back, with where each one ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Items {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Items {
    /// How many envelopes.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Their size in bytes, separators not counted.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The `index`th envelope's JSON.
    pub(crate) fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends one envelope's JSON.
    pub(crate) fn push(&mut self, item: &[u8]) {
        self.bytes.extend_from_slice(item);
        self.ends.push(self.bytes.len());
    }

    /// Appends every envelope of `other`.
    pub(crate) fn append(&mut self, other: &Items) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|end| base + end));
    }

    /// The envelopes at `range`, as a new batch.
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> Items {
        let offset = |index: usize| if index == 0 { 0 } else { self.ends[index - 1] };
        let (start, end) = (offset(range.start), offset(range.end));
        Items {
            bytes: self.bytes[start..end].to_vec(),
            ends: self.ends[range].iter().map(|end| end - start).collect(),
        }
    }

    /// The envelopes as a JSON array, into `body` (cleared first).
    pub(crate) fn write_array(&self, body: &mut Vec<u8>) {
        body.clear();
        body.reserve(self.bytes.len() + self.len() + 2);
        body.push(b'[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.push(b']');
    }

    /// The envelopes one per line, as storage keeps them.
    pub(crate) fn write_lines(&self, out: &mut Vec<u8>) {
        for item in self.iter() {
            out.extend_from_slice(item);
            out.push(b'\n');
        }
    }

    /// Reads back what [`Items::write_lines`] wrote; blank lines are skipped.
    pub(crate) fn from_lines(text: &[u8]) -> Items {
        let mut items = Items::default();
        for line in lines(text) {
            items.push(line);
        }
        items
    }

    /// How many envelopes [`Items::from_lines`] would read back from `text`, without copying
    /// them.
    pub(crate) fn count_lines(text: &[u8]) -> usize {
        lines(text).count()
    }
}

/// The envelopes of text written one per line: its lines that are not blank.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
}

/// Writes envelopes for one instrumentation key; caches what every envelope of this process
/// shares (the key and the resource's tags).
#[derive(Debug)]
pub(crate) struct EnvelopeWriter {
    ikey: String,
    /// Log records less severe than this are not written.
    min_severity: Severity,
    /// Whether requests and dependencies are counted into the standard metrics: each item then
    /// says so in `_MS.ProcessedByMetricExtractors`.
    metrics_extracted: bool,
    /// `{"iKey":"...","tags":{"ai.cloud.role":"...",...` up to the per-span tags, for `resource`.
    head: Vec<u8>,
    resource: Option<Resource>,
    scratch: String,
}

const DEPENDENCY: &str = "Microsoft.ApplicationInsights.RemoteDependency";
const REQUEST: &str = "Microsoft.ApplicationInsights.Request";
const EXCEPTION: &str = "Microsoft.ApplicationInsights.Exception";
const MESSAGE: &str = "Microsoft.ApplicationInsights.Message";
const EVENT: &str = "Microsoft.ApplicationInsights.Event";
const METRIC: &str = "Microsoft.ApplicationInsights.Metric";
/// What a request counted into the standard metrics says in `_MS.ProcessedByMetricExtractors`:
/// ingestion then leaves its metrics to the ones sent.
const REQUESTS_EXTRACTED: &str = "(Name:'Requests',Ver:'1.1')";
/// What a counted dependency says in `_MS.ProcessedByMetricExtractors`.
const DEPENDENCIES_EXTRACTED: &str = "(Name:'Dependencies',Ver:'1.1')";

impl EnvelopeWriter {
    pub(crate) fn new(ikey: &str) -> EnvelopeWriter {
        EnvelopeWriter {
            ikey: ikey.to_owned(),
            min_severity: Severity::Verbose,
            metrics_extracted: false,
            head: Vec::new(),
            resource: None,
            scratch: String::new(),
        }
    }

    fn head_for(&mut self, resource: &Resource) {
        if self.resource.as_ref() == Some(resource) {
            return;
        }
        let out = &mut self.head;
        out.clear();
        out.extend_from_slice(b"{\"iKey\":");
        string(out, &self.ikey);
        out.extend_from_slice(b",\"tags\":{");
        let device = device();
        let tags: [(&str, &str); 7] = [
            ("ai.cloud.role", &resource.cloud_role),
            ("ai.cloud.roleInstance", &resource.cloud_role_instance),
            ("ai.device.id", &resource.cloud_role_instance),
            ("ai.device.locale", &device.locale),
            ("ai.device.osVersion", &device.os_version),
            ("ai.device.type", "Other"),
            ("ai.internal.sdkVersion", &resource.sdk_version),
        ];
        let version = resource
            .application_version
            .as_deref()
            .map(|version| ("ai.application.ver", version));
        for (i, (key, value)) in version.iter().chain(&tags).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, key);
            out.push(b':');
            string(out, cut(value, limits::tag(key)));
        }
        self.resource = Some(resource.clone());
    }

    /// Log records less severe than `severity` are not written.
    pub(crate) fn set_min_severity(&mut self, severity: Severity) {
        self.min_severity = severity;
    }

    /// Marks every request and dependency as counted into the standard metrics.
    pub(crate) fn set_metrics_extracted(&mut self, on: bool) {
        self.metrics_extracted = on;
    }

    /// Whether requests and dependencies are counted into the standard metrics.
    pub(crate) fn metrics_extracted(&self) -> bool {
        self.metrics_extracted
    }

    /// Appends the envelopes of `record` to `items`.
    pub(crate) fn write(&mut self, record: &Record, resource: &Resource, items: &mut Items) {
        match record {
            Record::Span(span) => self.write_span(span, resource, items),
            Record::Log(log) if log.severity() >= self.min_severity => {
                self.write_log(log, resource, items);
            }
            Record::Log(_) => {}
            Record::Event(event) => self.write_event(event, resource, items),
            Record::Metric(metric) => self.write_metric(metric, resource, items),
        }
    }

    /// How many envelopes [`write`](Self::write) makes of `record`, without making them.
    pub(crate) fn envelopes(&self, record: &Record) -> u64 {
        match record {
            Record::Span(span) => {
                1 + u64::from(span.exception().is_some() || !span.errors().is_empty())
            }
            Record::Log(log) => u64::from(log.severity() >= self.min_severity),
            Record::Event(_) | Record::Metric(_) => 1,
        }
    }

    /// A log record's `Message`, or its `Exception` when it carries an error.
    fn write_log(&mut self, log: &LogRecord, resource: &Resource, items: &mut Items) {
        self.head_for(resource);
        let out = &mut items.bytes;
        out.extend_from_slice(&self.head);
        correlation_tags(out, &log.correlation, || log.properties());
        out.extend_from_slice(b",\"time\":");
        time(out, &mut self.scratch, log.time());
        out.extend_from_slice(b",\"name\":");
        if log.errors().is_empty() {
            string(out, MESSAGE);
            out.extend_from_slice(b",\"data\":{\"baseData\":{\"message\":");
            string(out, cut(required(log.message()), limits::MESSAGE));
        } else {
            string(out, EXCEPTION);
            out.extend_from_slice(b",\"data\":{\"baseData\":{\"exceptions\":[");
            // The outermost error's item says what was logged too, and has the stack given.
            let stack = last_value(log.properties(), STACK_PROPERTY);
            exception_details(
                out,
                &mut self.scratch,
                log.errors(),
                stack,
                Some(log.message()),
            );
            out.push(b']');
        }
        self.scratch.clear();
        let _ = write!(
            self.scratch,
            ",\"severityLevel\":{}",
            log.severity().level()
        );
        out.extend_from_slice(self.scratch.as_bytes());
        out.extend_from_slice(b",\"properties\":{");
        let line = log.line().map(|line| line.to_string());
        let source = [
            Some(("target", log.target())),
            log.module_path().map(|module| ("module", module)),
            log.file().map(|file| ("fileName", file)),
            line.as_deref().map(|line| ("lineNumber", line)),
            Some(("level", log.severity().name())),
        ];
        // A stack sent as the exception's is not sent again as a property.
        let exception = !log.errors().is_empty();
        let given = || {
            log.properties()
                .filter(move |(key, _)| !(names_user(key) || exception && *key == STACK_PROPERTY))
        };
        properties(out, || source.into_iter().flatten().chain(given()));
        out.extend_from_slice(b"},\"ver\":2},\"baseType\":");
        string(
            out,
            if log.errors().is_empty() {
                "MessageData"
            } else {
                "ExceptionData"
            },
        );
        out.push(b'}');
        correlation_sample_rate(out, &mut self.scratch, &log.correlation);
        out.push(b'}');
        items.ends.push(out.len());
    }

    /// A custom event's `Event`.
    fn write_event(&mut self, event: &EventRecord, resource: &Resource, items: &mut Items) {
        self.head_for(resource);
        let out = &mut items.bytes;
        out.extend_from_slice(&self.head);
        correlation_tags(out, &event.correlation, || event.properties());
        out.extend_from_slice(b",\"time\":");
        time(out, &mut self.scratch, event.time());
        out.extend_from_slice(b",\"name\":");
        string(out, EVENT);
        out.extend_from_slice(b",\"data\":{\"baseData\":{\"name\":");
        string(out, cut(required(event.name()), limits::EVENT_NAME));
        out.extend_from_slice(b",\"properties\":{");
        properties(out, || {
            event.properties().filter(|(key, _)| !names_user(key))
        });
        out.extend_from_slice(b"},\"measurements\":{");
        // JSON has no NaN or infinity: such a measurement is left out.
        let scratch = &mut self.scratch;
        object(
            out,
            || event.measurements().filter(|(_, value)| value.is_finite()),
            |out, value| {
                scratch.clear();
                let _ = write!(scratch, "{value}");
                out.extend_from_slice(scratch.as_bytes());
            },
        );
        out.extend_from_slice(b"},\"ver\":2},\"baseType\":\"EventData\"}");
        correlation_sample_rate(out, &mut self.scratch, &event.correlation);
        out.push(b'}');
        items.ends.push(out.len());
    }

    /// A metric's interval as a `Metric` (`MetricData`) with one data point: a counter's increase
    /// or a gauge's value as a measurement (`value`, `count` 1, as the Azure Monitor exporters
    /// send a sum or a gauge), a histogram's figures as an aggregation (`value` the sum, `count`,
    /// `min`, `max`, `stdDev`); the labels are its properties. It belongs to no operation.
    fn write_metric(&mut self, metric: &MetricRecord, resource: &Resource, items: &mut Items) {
        self.head_for(resource);
        let out = &mut items.bytes;
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"},\"time\":");
        time(out, &mut self.scratch, metric.start_time());
        out.extend_from_slice(b",\"name\":");
        string(out, METRIC);
        out.extend_from_slice(b",\"data\":{\"baseData\":{\"metrics\":[{\"name\":");
        string(out, cut(required(metric.name()), limits::NAME));
        self.scratch.clear();
        if metric.kind() == MetricKind::Histogram {
            let _ = write!(
                self.scratch,
                ",\"kind\":\"Aggregation\",\"value\":{},\"count\":{},\"min\":{},\"max\":{},\"stdDev\":{}",
                metric.value(),
                metric.count(),
                metric.min(),
                metric.max(),
                metric.std_dev()
            );
        } else {
            let _ = write!(self.scratch, ",\"value\":{},\"count\":1", metric.value());
        }
        out.extend_from_slice(self.scratch.as_bytes());
        out.extend_from_slice(b"}],\"properties\":{");
        properties(out, || metric.properties());
        out.extend_from_slice(b"},\"ver\":2},\"baseType\":\"MetricData\"}}");
        items.ends.push(out.len());
    }

    /// The start of an `Exception` envelope tied to `record`'s span: head, operation tags, the
    /// time the span ended, the name.
    fn exception_start(
        &mut self,
        out: &mut Vec<u8>,
        record: &SpanRecord,
        span_id: &[u8],
        operation_name: Option<&str>,
        tags: Option<SpanTags>,
    ) {
        out.extend_from_slice(&self.head);
        operation_tags(out, record, Some(span_id), operation_name, tags);
        out.extend_from_slice(b",\"time\":");
        time(
            out,
            &mut self.scratch,
            record.start_time() + record.duration(),
        );
        out.extend_from_slice(b",\"name\":");
        string(out, EXCEPTION);
    }

    /// Appends the envelopes of a span to `items`: its RemoteDependency or Request, then an
    /// Exception when a panic unwound through it or it failed with an error.
    pub(crate) fn write_span(
        &mut self,
        record: &SpanRecord,
        resource: &Resource,
        items: &mut Items,
    ) {
        self.head_for(resource);
        let operation_name = match record.span_kind() {
            SpanKind::Request => Some(record.operation_name().unwrap_or(record.name())),
            _ => record.operation_name(),
        };
        let out = &mut items.bytes;
        let mut span_id = [0u8; 16];
        record.span_id().write_hex(&mut span_id);
        let span_id = &span_id[..];
        let mut parent_hex = [0u8; 16];
        let parent = record.parent_id().map(|p| {
            p.write_hex(&mut parent_hex);
            &parent_hex[..]
        });
        out.extend_from_slice(&self.head);
        let tags = SpanTags::of(record);
        operation_tags(out, record, parent, operation_name, tags);
        out.extend_from_slice(b",\"time\":");
        time(out, &mut self.scratch, record.start_time());
        let request = record.span_kind() == SpanKind::Request;
        out.extend_from_slice(b",\"name\":");
        string(out, if request { REQUEST } else { DEPENDENCY });
        if request {
            out.extend_from_slice(b",\"data\":{\"baseData\":{\"id\":");
            quoted(out, span_id);
            out.extend_from_slice(b",\"duration\":");
            duration(out, record.duration());
            out.extend_from_slice(b",\"responseCode\":");
            string(out, cut(required(result_code(record)), limits::CODE));
            write_common(
                out,
                record,
                self.metrics_extracted.then_some(REQUESTS_EXTRACTED),
                tags,
            );
            out.extend_from_slice(b",\"name\":");
            string(out, cut(required(record.name()), limits::NAME));
            if let Some(url) = record.data() {
                out.extend_from_slice(b",\"url\":");
                string(out, cut(url, limits::URL));
            }
            out.extend_from_slice(b"},\"baseType\":\"RequestData\"}");
        } else {
            out.extend_from_slice(b",\"data\":{\"baseData\":{\"name\":");
            string(out, cut(required(record.name()), limits::NAME));
            out.extend_from_slice(b",\"id\":");
            quoted(out, span_id);
            out.extend_from_slice(b",\"resultCode\":");
            string(out, cut(required(result_code(record)), limits::CODE));
            out.extend_from_slice(b",\"duration\":");
            duration(out, record.duration());
            write_common(
                out,
                record,
                self.metrics_extracted.then_some(DEPENDENCIES_EXTRACTED),
                tags,
            );
            out.extend_from_slice(b",\"type\":");
            string(out, cut(record.kind(), limits::CODE));
            if let Some(data) = record.data() {
                out.extend_from_slice(b",\"data\":");
                string(out, cut(data, limits::DATA));
            }
            if let Some(target) = record.target() {
                out.extend_from_slice(b",\"target\":");
                string(out, cut(target, limits::CODE));
            }
            out.extend_from_slice(b"},\"baseType\":\"RemoteDependencyData\"}");
        }
        sample_rate(out, &mut self.scratch, record);
        out.push(b'}');
        items.ends.push(out.len());

        if record.exception().is_none() && !record.errors().is_empty() {
            let out = &mut items.bytes;
            self.exception_start(out, record, span_id, operation_name, tags);
            out.extend_from_slice(b",\"data\":{\"baseData\":{\"exceptions\":[");
            exception_details(out, &mut self.scratch, record.errors(), None, None);
            out.extend_from_slice(
                b"],\"severityLevel\":3,\"ver\":2},\"baseType\":\"ExceptionData\"}",
            );
            sample_rate(out, &mut self.scratch, record);
            out.push(b'}');
            items.ends.push(out.len());
        }

        if let Some(exception) = record.exception() {
            let out = &mut items.bytes;
            self.exception_start(out, record, span_id, operation_name, tags);
            out.extend_from_slice(
                b",\"data\":{\"baseData\":{\"exceptions\":[{\"id\":1,\"outerId\":0,\"typeName\":",
            );
            string(out, cut(required(&exception.type_name), limits::TYPE_NAME));
            out.extend_from_slice(b",\"message\":");
            string(out, cut(required(&exception.message), limits::MESSAGE));
            stack(out, &mut self.scratch, record.name(), exception);
            out.extend_from_slice(b"}],\"ver\":2},\"baseType\":\"ExceptionData\"}");
            sample_rate(out, &mut self.scratch, record);
            out.push(b'}');
            items.ends.push(out.len());
        }
    }
}

/// The property that holds, as text, the stack of the error a log record carries: the
/// OpenTelemetry conventions' field (`tracing::error!(error = .., exception.stacktrace = ..)`),
/// which Application Insights takes as the outermost exception's `stack`.
const STACK_PROPERTY: &str = "exception.stacktrace";

/// The `exceptions` of an error and its causes, outermost first: `{id, outerId, typeName,
/// message, hasFullStack}` each, and the outermost's `stack` when it was given one. `said`,
/// when given and not the error's own message, is put before the outermost error's message
/// (what a log record said of it).
fn exception_details(
    out: &mut Vec<u8>,
    scratch: &mut String,
    errors: &[ErrorDetail],
    stack: Option<&str>,
    said: Option<&str>,
) {
    for (i, error) in errors.iter().enumerate() {
        scratch.clear();
        let _ = write!(scratch, "{{\"id\":{},\"outerId\":{i}", i + 1);
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(scratch.as_bytes());
        out.extend_from_slice(b",\"typeName\":");
        string(out, cut(required(&error.type_name), limits::TYPE_NAME));
        out.extend_from_slice(b",\"message\":");
        match said {
            Some(said) if i == 0 && !said.is_empty() && said != error.message => {
                scratch.clear();
                let _ = write!(scratch, "{said}: {}", error.message);
                string(out, cut(scratch, limits::MESSAGE));
            }
            _ => string(out, cut(required(&error.message), limits::MESSAGE)),
        }
        match stack.filter(|_| i == 0) {
            // Whole unless it had to be cut to the schema's length.
            Some(stack) => {
                let sent = cut(stack, limits::MESSAGE);
                out.extend_from_slice(if sent.len() == stack.len() {
                    b",\"hasFullStack\":true,\"stack\":"
                } else {
                    b",\"hasFullStack\":false,\"stack\":"
                });
                string(out, sent);
                out.push(b'}');
            }
            None => out.extend_from_slice(b",\"hasFullStack\":false}"),
        }
    }
}

/// An exception's `hasFullStack` and its stack. With a backtrace: its frames as `parsedStack`
/// (the first 100, `hasFullStack` false when there were more) and as `stack` text. Without one,
/// the panic's location as the one frame of `parsedStack` (in the function the span is named
/// for, as far as census knows), or as `stack` text when it is not `file:line:column`.
fn stack(out: &mut Vec<u8>, scratch: &mut String, method: &str, exception: &ExceptionInfo) {
    if let Some(backtrace) = &exception.backtrace {
        let frames = backtrace.frames();
        if !frames.is_empty() {
            let full = frames.len() <= limits::STACK_FRAMES;
            out.extend_from_slice(if full {
                b",\"hasFullStack\":true,\"parsedStack\":["
            } else {
                b",\"hasFullStack\":false,\"parsedStack\":["
            });
            for (i, frame) in frames.iter().take(limits::STACK_FRAMES).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scratch.clear();
                let _ = write!(scratch, "{{\"level\":{},\"method\":", frame.level);
                out.extend_from_slice(scratch.as_bytes());
                string(out, cut(required(&frame.method), limits::TYPE_NAME));
                if let Some(file) = &frame.file {
                    out.extend_from_slice(b",\"fileName\":");
                    string(out, cut(file, limits::TYPE_NAME));
                }
                if let Some(line) = frame.line {
                    scratch.clear();
                    let _ = write!(scratch, ",\"line\":{line}");
                    out.extend_from_slice(scratch.as_bytes());
                }
                out.push(b'}');
            }
            out.extend_from_slice(b"],\"stack\":");
            scratch.clear();
            for frame in &frames {
                let _ = write!(scratch, "at {}", frame.method);
                match (&frame.file, frame.line) {
                    (Some(file), Some(line)) => {
                        let _ = writeln!(scratch, " ({file}:{line})");
                    }
                    (Some(file), None) => {
                        let _ = writeln!(scratch, " ({file})");
                    }
                    _ => scratch.push('\n'),
                }
                if scratch.len() > 4 * limits::MESSAGE {
                    break;
                }
            }
            string(out, cut(scratch, limits::MESSAGE));
            return;
        }
    }
    out.extend_from_slice(b",\"hasFullStack\":false");
    let location = exception.location.as_deref();
    let parsed = location.and_then(|location| {
        let mut parts = location.rsplitn(3, ':');
        let _column = parts.next()?;
        let line: u32 = parts.next()?.parse().ok()?;
        Some((parts.next()?, line))
    });
    match parsed {
        Some((file, line)) => {
            out.extend_from_slice(b",\"parsedStack\":[{\"level\":0,\"method\":");
            string(out, cut(required(method), limits::TYPE_NAME));
            out.extend_from_slice(b",\"fileName\":");
            string(out, cut(file, limits::TYPE_NAME));
            scratch.clear();
            let _ = write!(scratch, ",\"line\":{line}}}]");
            out.extend_from_slice(scratch.as_bytes());
        }
        None => {
            out.extend_from_slice(b",\"stack\":");
            scratch.clear();
            let _ = write!(
                scratch,
                "at {method} ({})",
                location.unwrap_or("unknown location")
            );
            string(out, cut(scratch, limits::MESSAGE));
        }
    }
}

/// The per-span tags, closing the `tags` object; `tags`: what of its properties is sent as tags.
fn operation_tags(
    out: &mut Vec<u8>,
    record: &SpanRecord,
    parent: Option<&[u8]>,
    operation_name: Option<&str>,
    tags: Option<SpanTags>,
) {
    out.extend_from_slice(b",\"ai.operation.id\":");
    let mut trace_hex = [0u8; 32];
    record.trace_id().write_hex(&mut trace_hex);
    quoted(out, &trace_hex);
    if let Some(parent) = parent {
        out.extend_from_slice(b",\"ai.operation.parentId\":");
        quoted(out, parent);
    }
    if let Some(name) = operation_name {
        out.extend_from_slice(b",\"ai.operation.name\":");
        string(out, cut(name, limits::tag("ai.operation.name")));
    }
    let Some(tags) = tags else {
        out.push(b'}');
        return;
    };
    user_tags(out, || record.properties());
    if let Some(client) = tags.client {
        out.extend_from_slice(b",\"ai.location.ip\":\"");
        let _ = std::io::Write::write_fmt(out, format_args!("{client}"));
        out.push(b'"');
    }
    out.push(b'}');
}

/// What of a span's properties is sent as tags rather than as properties, read once for all
/// the items the span makes.
#[derive(Clone, Copy)]
struct SpanTags {
    /// The client's address, sent as `ai.location.ip` ([`client_address`]).
    client: Option<IpAddr>,
}

impl SpanTags {
    /// `None` when no property may be sent as a tag (the client's address, the user): one pass
    /// over the properties, most often all there is to it.
    fn of(record: &SpanRecord) -> Option<SpanTags> {
        record
            .properties()
            .any(|(key, _)| names_user(key) || key == CLIENT_ADDRESS_PROPERTY)
            .then(|| SpanTags {
                client: client_address(record),
            })
    }
}

/// The address of the client a request came from ([`CLIENT_ADDRESS_PROPERTY`]), when it is
/// one ([`ip_address`]). A Request and its Exception
/// items carry it as `ai.location.ip`, as the Azure Monitor exporters send it.
fn client_address(record: &SpanRecord) -> Option<IpAddr> {
    if record.span_kind() != SpanKind::Request {
        return None;
    }
    ip_address(record.property(CLIENT_ADDRESS_PROPERTY)?)
}

/// The operation tags of a log record or an event, closing the `tags` object: none at all
/// outside any span.
fn correlation_tags<'a, I>(out: &mut Vec<u8>, correlation: &Correlation, properties: impl Fn() -> I)
where
    I: Iterator<Item = (&'a str, &'a str)>,
{
    if let Some(trace_id) = correlation.trace_id {
        out.extend_from_slice(b",\"ai.operation.id\":");
        let mut trace_hex = [0u8; 32];
        trace_id.write_hex(&mut trace_hex);
        quoted(out, &trace_hex);
    }
    if let Some(parent) = correlation.parent_id {
        out.extend_from_slice(b",\"ai.operation.parentId\":");
        let mut parent_hex = [0u8; 16];
        parent.write_hex(&mut parent_hex);
        quoted(out, &parent_hex);
    }
    if let Some(name) = &correlation.operation_name {
        out.extend_from_slice(b",\"ai.operation.name\":");
        string(out, cut(name, limits::tag("ai.operation.name")));
    }
    user_tags(out, properties);
    out.push(b'}');
}

/// The properties that name an item's user, and the tags they are sent as.
const USER_TAGS: [(&str, &str); 2] = [
    (AUTHENTICATED_USER_PROPERTY, "ai.user.authUserId"),
    (USER_PROPERTY, "ai.user.id"),
];

/// Whether `key` is one of [`USER_TAGS`]' properties, sent as a tag and not as a property.
fn names_user(key: &str) -> bool {
    key.starts_with("enduser.") && USER_TAGS.iter().any(|(property, _)| *property == key)
}

/// The user tags of an item whose properties are `properties`: each from the value its
/// property was given last, when it is not blank.
fn user_tags<'a, I>(out: &mut Vec<u8>, properties: impl Fn() -> I)
where
    I: Iterator<Item = (&'a str, &'a str)>,
{
    if !properties().any(|(key, _)| names_user(key)) {
        return;
    }
    for (property, tag) in USER_TAGS {
        let user = last_value(properties(), property).filter(|user| !limits::blank(user));
        if let Some(user) = user {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(b"\":");
            string(out, cut(user, limits::tag(tag)));
        }
    }
}

fn correlation_sample_rate(out: &mut Vec<u8>, scratch: &mut String, correlation: &Correlation) {
    write_sample_rate(out, scratch, correlation.sample_rate);
}

/// `success`, `properties` and `ver`, shared by requests and dependencies; `extracted`: the
/// item was counted into the standard metrics, by this extractor; `tags`: what of its
/// properties is sent as tags, and not again as properties.
fn write_common(
    out: &mut Vec<u8>,
    record: &SpanRecord,
    extracted: Option<&'static str>,
    tags: Option<SpanTags>,
) {
    out.extend_from_slice(if record.success() {
        b",\"success\":true"
    } else {
        b",\"success\":false"
    });
    out.extend_from_slice(b",\"properties\":{");
    let error = record
        .error_message()
        .filter(|_| !record.success())
        .map(|m| ("error.message", m));
    let extracted = extracted.map(|by| ("_MS.ProcessedByMetricExtractors", by));
    if let Some(tags) = tags {
        // The client's address sent as the location tag is not sent again, unmasked, as a
        // property; the user's neither.
        let located = tags.client.is_some();
        let given = || {
            record.properties().filter(move |(key, _)| {
                !(names_user(key) || located && *key == CLIENT_ADDRESS_PROPERTY)
            })
        };
        properties(out, || given().chain(error).chain(extracted));
    } else {
        properties(out, || record.properties().chain(error).chain(extracted));
    }
    out.extend_from_slice(b"},\"ver\":2");
}

/// The members of a `properties` object, their values text cut to its limit ([`object`]).
fn properties<'a, I>(out: &mut Vec<u8>, pairs: impl Fn() -> I)
where
    I: Iterator<Item = (&'a str, &'a str)>,
{
    object(out, pairs, |out, value| {
        string(out, cut(value, limits::PROPERTY_VALUE));
    });
}

/// The members of a JSON object of `properties` or `measurements`, each written by `value`: a
/// key given more than once written once, with the value given last ([`replaced`]); keys cut
/// to their limit, a cut key that would repeat another numbered (see
/// [`limits::property_keys`]). `pairs` is asked again when two keys are the same or a key does
/// not fit.
fn object<'a, V, I>(out: &mut Vec<u8>, pairs: impl Fn() -> I, value: impl FnMut(&mut Vec<u8>, V))
where
    I: Iterator<Item = (&'a str, V)>,
{
    match replaced(|| pairs().map(|(key, _)| key)) {
        None => members(out, pairs, value),
        Some(replaced) => members(out, || last_of_each(pairs(), &replaced), value),
    }
}

/// The members of an object, each key once.
fn members<'a, V, I>(
    out: &mut Vec<u8>,
    pairs: impl Fn() -> I,
    mut value: impl FnMut(&mut Vec<u8>, V),
) where
    I: Iterator<Item = (&'a str, V)>,
{
    let keys = limits::property_keys(|| pairs().map(|(key, _)| key));
    for (i, (key, given)) in pairs().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, keys.as_ref().map_or(key, |keys| &keys[i]));
        out.push(b':');
        value(out, given);
    }
}

fn sample_rate(out: &mut Vec<u8>, scratch: &mut String, record: &SpanRecord) {
    write_sample_rate(out, scratch, record.sample_rate() as f32);
}

/// `sampleRate`, when sampling kept less than everything: the percentage as recorded, in the
/// fewest digits that read back as it (`33.333332`, `0.0001`), so that the item count
/// Application Insights derives from it (`100 / sampleRate`) and a service sampling at it agree
/// with census at low percentages too, where three decimals would not.
fn write_sample_rate(out: &mut Vec<u8>, scratch: &mut String, rate: f32) {
    if rate < 100.0 && rate.is_finite() {
        scratch.clear();
        let _ = write!(scratch, "{rate}");
        out.extend_from_slice(b",\"sampleRate\":");
        out.extend_from_slice(scratch.as_bytes());
    }
}

/// Bytes that need no escape (hex digits) as a JSON string.
fn quoted(out: &mut Vec<u8>, plain: &[u8]) {
    out.reserve(plain.len() + 2);
    out.push(b'"');
    out.extend_from_slice(plain);
    out.push(b'"');
}

/// Whether a byte is escaped in a JSON string: a control character, a quote, a backslash, or
/// DEL (which the reference escapes too).
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Whether any byte of `bytes` is [`escaped`]. Eight bytes at a time, tested together with
/// integer arithmetic: a byte-by-byte scan was a third of a batch's serialisation.
fn needs_escape(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| escaped(b));
    }
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        if word_needs_escape(word) {
            return true;
        }
    }
    // The last, partial word: the string's last eight bytes, some of them tested already (a
    // copy into a padded word instead stalled the load that followed it).
    !words.remainder().is_empty() && word_needs_escape(&bytes[bytes.len() - 8..])
}

/// Whether any of the eight bytes is [`escaped`]. Each test is exact for "any byte": a
/// borrow that crosses into the next byte only follows a byte that matched already, and a byte
/// of 0x80 or more (a UTF-8 sequence's) never matches, its high bit being clear in `!word`.
fn word_needs_escape(eight: &[u8]) -> bool {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(eight);
    let word = u64::from_le_bytes(bytes);
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let equal = |byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    (below(word, 0x20) | equal(b'"') | equal(b'\\') | equal(0x7f)) != 0
}

/// A JSON string, escaped.
pub(crate) fn string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.as_bytes();
    // Most strings need no escape: one scan, then one copy.
    if !needs_escape(bytes) {
        quoted(out, bytes);
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `"2026-11-23T19:56:37.211428Z"`: UTC, microseconds.
fn time(out: &mut Vec<u8>, scratch: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    if !(0..=9999).contains(&year) {
        scratch.clear();
        let _ = write!(
            scratch,
            "\"{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z\"",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            since.subsec_micros()
        );
        out.extend_from_slice(scratch.as_bytes());
        return;
    }
    // Written into a fixed buffer and copied once: a push per character, each checking the
    // vector's capacity, was a tenth of a batch's serialisation.
    let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
    fixed_digits(&mut text[1..5], year as u64);
    fixed_digits(&mut text[6..8], u64::from(month));
    fixed_digits(&mut text[9..11], u64::from(day));
    text[12..27].copy_from_slice(&time_of_day(rem, since.subsec_micros()));
    out.extend_from_slice(&text);
}

/// `hh:mm:ss.ffffff` of `secs` (taken modulo a day) and `micros`.
fn time_of_day(secs: u64, micros: u32) -> [u8; 15] {
    let mut text = *b"00:00:00.000000";
    fixed_digits(&mut text[0..2], secs / 3600 % 24);
    fixed_digits(&mut text[3..5], secs / 60 % 60);
    fixed_digits(&mut text[6..8], secs % 60);
    fixed_digits(&mut text[9..15], u64::from(micros));
    text
}

/// The last `digits.len()` decimal digits of `value`, zero-padded, into `digits`.
fn fixed_digits(digits: &mut [u8], mut value: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    while value > 0 || buf.len() - at < width {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&buf[at..]);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `"0.00:00:00.010123"`: days, hours, minutes, seconds, microseconds.
fn duration(out: &mut Vec<u8>, d: Duration) {
    let secs = d.as_secs();
    out.push(b'"');
    digits(out, secs / 86_400, 1);
    out.push(b'.');
    out.extend_from_slice(&time_of_day(secs, d.subsec_micros()));
    out.push(b'"');
}

/// What the `ai.device.*` tags say, read once.
struct Device {
    locale: String,
    os_version: String,
}

fn device() -> &'static Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE.get_or_init(|| {
        let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|v| !v.is_empty())
            .map(|v| v.split(['.', '@']).next().unwrap_or("C").to_owned())
            .unwrap_or_else(|| "C".to_owned());
        let os_version = std::fs::read_to_string("/proc/sys/kernel/version")
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        Device { locale, os_version }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::limits::NOT_GIVEN;
    use crate::id::{SpanId, TraceId};
    use crate::record::{AUTHENTICATED_USER_PROPERTY, USER_PROPERTY};
    use crate::record::{Failure, SpanExtra};
    use crate::site::Site;
    use std::borrow::Cow;

    static REQUEST_SITE: Site = Site::request("GET /orders/{id}");
    static SQL_SITE: Site = Site::dependency("load", "SQL").with_target("orders-db");

    fn record(site: &'static Site, parent: Option<u64>) -> SpanRecord {
        crate::clock::init();
        let start = crate::clock::now();
        let mut record = SpanRecord::start(
            site,
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            parent.and_then(SpanId::new),
            None,
            100.0,
        );
        record.set_ticks(start, start + 1);
        record
    }

    fn resource() -> Resource {
        Resource {
            cloud_role: "orders \"api\"".into(),
            cloud_role_instance: "host-1".into(),
            application_version: Some("2.4.1".into()),
            sdk_version: "rust1.95:census0.1.0".into(),
        }
    }

    fn json(items: &Items, index: usize) -> serde_json::Value {
        serde_json::from_slice(items.get(index)).expect("valid JSON")
    }

    #[test]
    fn dependency_envelope() {
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let mut rec = record(&SQL_SITE, Some(0x42));
        rec.set_success(false);
        rec.set_extra(Some(Box::new(SpanExtra {
            data: Some(Cow::Borrowed("SELECT 1\n-- \"quoted\"\u{1}")),
            result_code: Some(Cow::Borrowed("DbError")),
            error: Some("boom".into()),
            properties: vec![(Cow::Borrowed("order.id"), "7".into())],
            ..SpanExtra::default()
        })));
        writer.write_span(&rec, &resource(), &mut items);
        assert_eq!(items.len(), 1);
        assert!(!items.get(0).contains(&b'\n'));
        let v = json(&items, 0);
        assert_eq!(v["iKey"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(v["name"], DEPENDENCY);
        assert_eq!(v["tags"]["ai.cloud.role"], "orders \"api\"");
        assert_eq!(v["tags"]["ai.application.ver"], "2.4.1");
        assert_eq!(
            v["tags"]["ai.operation.id"],
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(v["tags"]["ai.operation.parentId"], "0000000000000042");
        let base = &v["data"]["baseData"];
        assert_eq!(v["data"]["baseType"], "RemoteDependencyData");
        assert_eq!(base["type"], "SQL");
        assert_eq!(base["target"], "orders-db");
        assert_eq!(base["data"], "SELECT 1\n-- \"quoted\"\u{1}");
        assert_eq!(base["success"], false);
        assert_eq!(base["resultCode"], "DbError");
        assert_eq!(base["properties"]["order.id"], "7");
        assert_eq!(base["properties"]["error.message"], "boom");
        assert_eq!(base["ver"], 2);
        assert!(v.get("sampleRate").is_none());
    }

    #[test]
    fn metric_envelopes_of_the_three_kinds() {
        use crate::record::Distribution;
        use crate::record::SeriesId;
        use std::sync::Arc;

        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = Arc::new(SeriesId::new(
            "checkout_ms",
            vec![
                ("route".to_owned(), "/orders".to_owned()),
                ("k".repeat(200), "v".to_owned()),
            ],
        ));
        let histogram = MetricRecord::new(
            Arc::clone(&id),
            MetricKind::Histogram,
            start,
            Duration::from_secs(60),
            Distribution::new(8, 40.0, 232.0, 2.0, 9.0),
        );
        let counter = MetricRecord::new(
            id,
            MetricKind::Counter,
            start,
            Duration::from_secs(60),
            Distribution::new(1, 3.0, 9.0, 3.0, 3.0),
        );
        for metric in [histogram, counter] {
            writer.write(&Record::Metric(Box::new(metric)), &resource(), &mut items);
        }
        let v = json(&items, 0);
        assert_eq!(v["name"], METRIC);
        assert_eq!(v["time"], "2027-01-15T08:00:00.000000Z");
        assert_eq!(v["tags"]["ai.cloud.role"], "orders \"api\"");
        assert_eq!(v["tags"]["ai.cloud.roleInstance"], "host-1");
        assert!(v["tags"].get("ai.operation.id").is_none());
        assert_eq!(v["data"]["baseType"], "MetricData");
        let base = &v["data"]["baseData"];
        assert_eq!(base["ver"], 2);
        assert_eq!(
            base["metrics"],
            serde_json::json!([{"name": "checkout_ms", "kind": "Aggregation", "value": 40,
                "count": 8, "min": 2, "max": 9, "stdDev": 2}])
        );
        assert_eq!(base["properties"]["route"], "/orders");
        // A key over its limit is cut.
        assert_eq!(base["properties"]["k".repeat(150)], "v");
        let v = json(&items, 1);
        assert_eq!(
            v["data"]["baseData"]["metrics"],
            serde_json::json!([{"name": "checkout_ms", "value": 3, "count": 1}])
        );
    }

    #[test]
    fn request_envelope_with_panic_and_sampling() {
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let mut rec = record(&REQUEST_SITE, Some(0x99));
        rec.set_sample_rate(25.0);
        rec.set_success(false);
        rec.set_extra(Some(Box::new(SpanExtra {
            data: Some(Cow::Borrowed("http://127.0.0.1/orders/7")),
            result_code: Some(Cow::Borrowed("500")),
            failure: Some(Box::new(Failure {
                exception: Some(ExceptionInfo {
                    type_name: Cow::Borrowed("panic"),
                    message: "index out of bounds".into(),
                    location: Some("src/main.rs:3:5".into()),
                    backtrace: None,
                }),
                errors: Vec::new(),
            })),
            ..SpanExtra::default()
        })));
        writer.write_span(&rec, &resource(), &mut items);
        assert_eq!(items.len(), 2);
        let v = json(&items, 0);
        assert_eq!(v["name"], REQUEST);
        assert_eq!(v["sampleRate"], 25.0);
        assert_eq!(v["tags"]["ai.operation.name"], "GET /orders/{id}");
        let base = &v["data"]["baseData"];
        assert_eq!(base["responseCode"], "500");
        assert_eq!(base["url"], "http://127.0.0.1/orders/7");
        assert_eq!(base["id"], "b7ad6b7169203331");
        let e = json(&items, 1);
        assert_eq!(e["name"], EXCEPTION);
        assert_eq!(e["tags"]["ai.operation.parentId"], "b7ad6b7169203331");
        let ex = &e["data"]["baseData"]["exceptions"][0];
        assert_eq!(ex["typeName"], "panic");
        assert_eq!(ex["message"], "index out of bounds");
        assert_eq!(ex["parsedStack"][0]["fileName"], "src/main.rs");
        assert_eq!(ex["parsedStack"][0]["line"], 3);
        assert_eq!(ex["parsedStack"][0]["method"], "GET /orders/{id}");
    }

    #[test]
    fn a_low_sample_rate_is_written_in_full() {
        // 1 in 30,000: three decimals would write 0.003, an item count of 33,333.
        let percent = (100.0 / 30_000.0) as f32;
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let mut rec = record(&REQUEST_SITE, None);
        rec.set_sample_rate(percent);
        writer.write_span(&rec, &resource(), &mut items);
        let written = json(&items, 0)["sampleRate"].as_f64().unwrap();
        assert_eq!(written as f32, percent);
        assert!((100.0 / written - 30_000.0).abs() < 0.01, "{written}");
    }

    #[test]
    fn every_field_is_cut_to_its_limit_and_keys_stay_apart() {
        let units = |v: &serde_json::Value| v.as_str().unwrap().encode_utf16().count();
        let long = |n: usize| "😀é".repeat(n);
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let mut rec = record(&SQL_SITE, Some(0x42));
        rec.set_success(false);
        let key = "k".repeat(200);
        rec.set_extra(Some(Box::new(SpanExtra {
            name: Some(Cow::Owned(long(2000))),
            kind: Some(Cow::Owned(long(2000))),
            target: Some(Cow::Owned(long(2000))),
            data: Some(Cow::Owned(long(10_000))),
            result_code: Some(Cow::Owned(long(2000))),
            error: Some(long(10_000)),
            properties: vec![
                (Cow::Owned(format!("{key}a")), long(10_000).into()),
                (Cow::Owned(format!("{key}b")), "b".into()),
            ],
            ..SpanExtra::default()
        })));
        let resource = Resource {
            cloud_role: long(500),
            ..resource()
        };
        writer.write_span(&rec, &resource, &mut items);
        let v = json(&items, 0);
        let base = &v["data"]["baseData"];
        // A two-unit emoji and a one-unit letter, alternating: each cut ends a unit short of
        // the limit or at it.
        for (field, limit) in [
            ("name", 1024),
            ("type", 1024),
            ("target", 1024),
            ("resultCode", 1024),
            ("data", 8192),
        ] {
            let n = units(&base[field]);
            assert!(n == limit || n + 1 == limit, "{field}: {n}");
        }
        assert!(units(&v["tags"]["ai.cloud.role"]) <= 256);
        let properties = base["properties"].as_object().unwrap();
        assert_eq!(properties.len(), 3);
        assert!(properties.keys().all(|k| k.encode_utf16().count() <= 150));
        assert!(properties.values().all(|v| units(v) <= 8192));
        // 2,730 pairs and one more emoji: 8,192 units exactly.
        assert_eq!(units(&properties[&"k".repeat(150)]), 8192);
        assert_eq!(properties[&format!("{}001", "k".repeat(147))], "b");
    }

    #[test]
    fn times_and_durations() {
        let mut out = Vec::new();
        let mut s = String::new();
        time(
            &mut out,
            &mut s,
            UNIX_EPOCH + Duration::new(1_795_463_797, 211_428_000),
        );
        assert_eq!(out, b"\"2026-11-23T19:56:37.211428Z\"");
        out.clear();
        time(
            &mut out,
            &mut s,
            UNIX_EPOCH + Duration::from_secs(951_782_400),
        );
        assert_eq!(out, b"\"2000-02-29T00:00:00.000000Z\"");
        out.clear();
        duration(&mut out, Duration::new(90_061, 10_123_000));
        assert_eq!(out, b"\"1.01:01:01.010123\"");
        out.clear();
        duration(&mut out, Duration::from_nanos(999));
        assert_eq!(out, b"\"0.00:00:00.000000\"");
    }

    #[test]
    fn strings_are_escaped_only_where_json_needs_it() {
        let mut out = Vec::new();
        string(&mut out, "GET /orders/{id} ünïcode");
        assert_eq!(out, "\"GET /orders/{id} ünïcode\"".as_bytes());
        out.clear();
        string(&mut out, "a\"b\\c\nd\u{1}e\u{7f}");
        assert_eq!(out, b"\"a\\\"b\\\\c\\nd\\u0001e\\u007f\"");
    }

    #[test]
    fn the_envelopes_of_a_record_are_counted_as_many_as_are_written() {
        use crate::record::{Distribution, SeriesId, Source};
        use crate::text::Text;
        use std::sync::Arc;

        let log = |severity, errors: Vec<ErrorDetail>| {
            let mut log = LogRecord::new(
                severity,
                Text::format(format_args!("order placed")),
                Correlation::default(),
                Source::default(),
            );
            log.set_errors(errors);
            Record::Log(Box::new(log))
        };
        let error = || ErrorDetail {
            type_name: "io::Error".into(),
            message: "refused".into(),
        };
        let failed = {
            let mut span = record(&SQL_SITE, Some(7));
            span.set_extra(Some(Box::new(SpanExtra {
                failure: Some(Box::new(Failure {
                    exception: None,
                    errors: vec![error(), error()],
                })),
                ..SpanExtra::default()
            })));
            span
        };
        let panicked = {
            let mut span = record(&REQUEST_SITE, None);
            span.set_extra(Some(Box::new(SpanExtra {
                failure: Some(Box::new(Failure {
                    exception: Some(ExceptionInfo {
                        type_name: Cow::Borrowed("panic"),
                        message: "index out of bounds".into(),
                        location: None,
                        backtrace: None,
                    }),
                    errors: vec![error()],
                })),
                ..SpanExtra::default()
            })));
            span
        };
        let records = [
            Record::Span(record(&SQL_SITE, None)),
            Record::Span(failed),
            Record::Span(panicked),
            log(Severity::Information, Vec::new()),
            log(Severity::Verbose, Vec::new()),
            log(Severity::Error, vec![error()]),
            Record::Event(Box::new(EventRecord::new(
                Cow::Borrowed("order_placed"),
                Correlation::default(),
                Box::default(),
                vec![(Cow::Borrowed("total"), 9.5)],
            ))),
            Record::Metric(Box::new(MetricRecord::new(
                Arc::new(SeriesId::new("checkout_ms", Vec::new())),
                MetricKind::Histogram,
                UNIX_EPOCH,
                Duration::from_secs(60),
                Distribution::new(2, 3.0, 5.0, 1.0, 2.0),
            ))),
        ];
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        writer.set_min_severity(Severity::Information);
        let mut written = Vec::new();
        for record in &records {
            let mut items = Items::default();
            writer.write(record, &resource(), &mut items);
            written.push(items.len() as u64);
        }
        // A failed span and a panicked one have their Exception; a log record under the
        // exporter's level has nothing.
        assert_eq!(written, [1, 2, 2, 1, 0, 1, 1, 1]);
        let counted: Vec<u64> = records.iter().map(|r| writer.envelopes(r)).collect();
        assert_eq!(counted, written);
    }

    #[test]
    fn a_required_field_left_empty_is_sent_as_not_given() {
        use crate::record::{Distribution, SeriesId, Source};
        use crate::text::Text;
        use std::sync::Arc;

        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        // A request named "" with a blank response code, failed by a panic whose message and
        // kind are empty (an exception that panics with "" has no other).
        let mut request = record(&REQUEST_SITE, None);
        request.set_success(false);
        request.set_extra(Some(Box::new(SpanExtra {
            name: Some(Cow::Borrowed("")),
            result_code: Some(Cow::Borrowed(" ")),
            failure: Some(Box::new(Failure {
                exception: Some(ExceptionInfo {
                    type_name: Cow::Borrowed(""),
                    message: String::new(),
                    location: Some("src/main.rs:3:5".into()),
                    backtrace: None,
                }),
                errors: Vec::new(),
            })),
            ..SpanExtra::default()
        })));
        writer.write_span(&request, &resource(), &mut items);
        let base = &json(&items, 0)["data"]["baseData"];
        assert_eq!(base["name"], NOT_GIVEN);
        assert_eq!(base["responseCode"], NOT_GIVEN);
        let panic = &json(&items, 1)["data"]["baseData"]["exceptions"][0];
        assert_eq!(panic["typeName"], NOT_GIVEN);
        assert_eq!(panic["message"], NOT_GIVEN);
        assert_eq!(panic["parsedStack"][0]["method"], NOT_GIVEN);

        // A dependency named "" failed by an error whose Display writes nothing.
        let mut dependency = record(&SQL_SITE, Some(7));
        dependency.set_success(false);
        dependency.set_extra(Some(Box::new(SpanExtra {
            name: Some(Cow::Borrowed("")),
            failure: Some(Box::new(Failure {
                exception: None,
                errors: vec![ErrorDetail {
                    type_name: "".into(),
                    message: "".into(),
                }],
            })),
            ..SpanExtra::default()
        })));
        writer.write_span(&dependency, &resource(), &mut items);
        assert_eq!(json(&items, 2)["data"]["baseData"]["name"], NOT_GIVEN);
        assert_eq!(json(&items, 2)["data"]["baseData"]["type"], "SQL");
        let error = &json(&items, 3)["data"]["baseData"]["exceptions"][0];
        assert_eq!(error["typeName"], NOT_GIVEN);
        assert_eq!(error["message"], NOT_GIVEN);

        // `log::info!("")`, an event named "", a metric named "".
        let log = LogRecord::new(
            Severity::Information,
            Text::format(format_args!("")),
            Correlation::default(),
            Source::default(),
        );
        writer.write(&Record::Log(Box::new(log)), &resource(), &mut items);
        assert_eq!(json(&items, 4)["data"]["baseData"]["message"], NOT_GIVEN);
        // Its property keys empty or blank: written as n/a, numbered beside a key of that name.
        let event = EventRecord::new(
            Cow::Borrowed(""),
            Correlation::default(),
            Box::new(SpanExtra {
                properties: vec![
                    (Cow::Borrowed(""), "empty".into()),
                    (Cow::Borrowed("n/a"), "named so".into()),
                    (Cow::Borrowed(" "), "blank".into()),
                ],
                ..SpanExtra::default()
            }),
            vec![(Cow::Borrowed(""), 1.5)],
        );
        writer.write(&Record::Event(Box::new(event)), &resource(), &mut items);
        let base = &json(&items, 5)["data"]["baseData"];
        assert_eq!(base["name"], NOT_GIVEN);
        assert_eq!(
            base["properties"],
            serde_json::json!({"n/a001": "empty", "n/a": "named so", "n/a002": "blank"})
        );
        assert_eq!(base["measurements"], serde_json::json!({"n/a": 1.5}));
        let metric = MetricRecord::new(
            Arc::new(SeriesId::new("", Vec::new())),
            MetricKind::Counter,
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Duration::from_secs(60),
            Distribution::new(1, 1.0, 1.0, 1.0, 1.0),
        );
        writer.write(&Record::Metric(Box::new(metric)), &resource(), &mut items);
        assert_eq!(
            json(&items, 6)["data"]["baseData"]["metrics"][0]["name"],
            NOT_GIVEN
        );
        // What is given is sent as it is.
        assert_eq!(required(" a "), " a ");
    }

    #[test]
    fn a_requests_client_address_is_its_location_tag_not_a_property() {
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let with_client = |site: &'static Site, client: &str, failed: bool| {
            let mut span = record(site, None);
            span.set_success(!failed);
            span.set_extra(Some(Box::new(SpanExtra {
                properties: vec![
                    (Cow::Borrowed("order.id"), "7".into()),
                    (Cow::Borrowed(CLIENT_ADDRESS_PROPERTY), client.into()),
                ],
                failure: failed.then(|| {
                    Box::new(Failure {
                        exception: None,
                        errors: vec![ErrorDetail {
                            type_name: "Declined".into(),
                            message: "card declined".into(),
                        }],
                    })
                }),
                ..SpanExtra::default()
            })));
            span
        };
        writer.write_span(
            &with_client(&REQUEST_SITE, "203.0.113.7", true),
            &resource(),
            &mut items,
        );
        assert_eq!(items.len(), 2, "the request and its exception");
        for index in 0..2 {
            let item = json(&items, index);
            assert_eq!(item["tags"]["ai.location.ip"], "203.0.113.7", "{item}");
            let properties = &item["data"]["baseData"]["properties"];
            assert!(properties.get(CLIENT_ADDRESS_PROPERTY).is_none(), "{item}");
        }
        assert_eq!(
            json(&items, 0)["data"]["baseData"]["properties"]["order.id"],
            "7"
        );
        // A socket address's port is left out; an IPv6 address is written as such.
        writer.write_span(
            &with_client(&REQUEST_SITE, "[2001:db8::7]:443", false),
            &resource(),
            &mut items,
        );
        assert_eq!(json(&items, 2)["tags"]["ai.location.ip"], "2001:db8::7");
        // What is not an address stays a property, and is no tag.
        writer.write_span(
            &with_client(&REQUEST_SITE, "behind the proxy", false),
            &resource(),
            &mut items,
        );
        let unknown = json(&items, 3);
        assert!(unknown["tags"].get("ai.location.ip").is_none());
        assert_eq!(
            unknown["data"]["baseData"]["properties"][CLIENT_ADDRESS_PROPERTY],
            "behind the proxy"
        );
        // A dependency's is its own property: no client of the service's.
        writer.write_span(
            &with_client(&SQL_SITE, "203.0.113.7", false),
            &resource(),
            &mut items,
        );
        let dependency = json(&items, 4);
        assert!(dependency["tags"].get("ai.location.ip").is_none());
        assert_eq!(
            dependency["data"]["baseData"]["properties"][CLIENT_ADDRESS_PROPERTY],
            "203.0.113.7"
        );
    }

    #[test]
    fn the_user_an_item_names_is_its_user_tags_not_properties() {
        use crate::record::Source;
        use crate::text::Text;

        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        let users = |authenticated: &str, pseudo: &str| {
            vec![
                (Cow::Borrowed("order.id"), "7".into()),
                (
                    Cow::Borrowed(AUTHENTICATED_USER_PROPERTY),
                    authenticated.into(),
                ),
                (Cow::Borrowed(USER_PROPERTY), pseudo.into()),
            ]
        };
        let mut request = record(&REQUEST_SITE, None);
        request.set_extra(Some(Box::new(SpanExtra {
            properties: users("ada@example.com", "a-1"),
            ..SpanExtra::default()
        })));
        writer.write_span(&request, &resource(), &mut items);
        let mut log = LogRecord::new(
            Severity::Information,
            Text::format(format_args!("order placed")),
            Correlation::default(),
            Source::default(),
        );
        for (key, value) in users(&"u".repeat(2000), &"p".repeat(200)) {
            log.new_property(key).append(format_args!("{value}"));
        }
        writer.write(&Record::Log(Box::new(log)), &resource(), &mut items);
        let event = EventRecord::new(
            Cow::Borrowed("order_placed"),
            Correlation::default(),
            Box::new(SpanExtra {
                properties: users("ada@example.com", " "),
                ..SpanExtra::default()
            }),
            Vec::new(),
        );
        writer.write(&Record::Event(Box::new(event)), &resource(), &mut items);

        for index in 0..3 {
            let item = json(&items, index);
            let properties = item["data"]["baseData"]["properties"].as_object().unwrap();
            assert_eq!(properties["order.id"], "7");
            assert!(
                !properties.contains_key(AUTHENTICATED_USER_PROPERTY)
                    && !properties.contains_key(USER_PROPERTY),
                "{item}"
            );
        }
        let tags = |index| json(&items, index)["tags"].clone();
        assert_eq!(tags(0)["ai.user.authUserId"], "ada@example.com");
        assert_eq!(tags(0)["ai.user.id"], "a-1");
        // Cut to the tags' limits.
        assert_eq!(tags(1)["ai.user.authUserId"], "u".repeat(1024));
        assert_eq!(tags(1)["ai.user.id"], "p".repeat(128));
        // A blank one is no tag.
        assert_eq!(tags(2)["ai.user.authUserId"], "ada@example.com");
        assert!(tags(2).get("ai.user.id").is_none());
    }

    /// The members of the `properties` (or `measurements`) object of item `index` whose key is
    /// `key`, as written: `serde_json` would keep one of a repeated key's members only.
    fn members(items: &Items, index: usize, object: &str, key: &str) -> Vec<String> {
        let text = std::str::from_utf8(items.get(index)).unwrap();
        let start = text.find(&format!("\"{object}\":{{")).unwrap() + object.len() + 4;
        let end = start + text[start..].find('}').unwrap();
        let member = format!("\"{key}\":");
        text[start..end]
            .split(',')
            .filter_map(|pair| pair.strip_prefix(member.as_str()))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_key_given_twice_is_written_once_with_the_value_given_last() {
        use crate::record::{Distribution, SeriesId, Source};
        use crate::text::Text;
        use std::sync::Arc;

        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        // A span: a property set twice, and one named as the property a failed span's error
        // message is written in.
        let mut span = record(&SQL_SITE, Some(7));
        span.set_success(false);
        span.set_extra(Some(Box::new(SpanExtra {
            error: Some("refused".into()),
            properties: vec![
                (Cow::Borrowed("attempt"), "1".into()),
                (Cow::Borrowed("order.id"), "7".into()),
                (Cow::Borrowed("error.message"), "mine".into()),
                (Cow::Borrowed("attempt"), "2".into()),
            ],
            ..SpanExtra::default()
        })));
        writer.write_span(&span, &resource(), &mut items);
        assert_eq!(members(&items, 0, "properties", "attempt"), ["\"2\""]);
        assert_eq!(members(&items, 0, "properties", "order.id"), ["\"7\""]);
        assert_eq!(
            members(&items, 0, "properties", "error.message"),
            ["\"refused\""]
        );
        assert_eq!(
            json(&items, 0)["data"]["baseData"]["properties"]
                .as_object()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            span.property("attempt"),
            Some("2"),
            "the record says the same"
        );

        // A log record whose own key-value is named as one of the properties census gives it.
        let mut log = LogRecord::new(
            Severity::Information,
            Text::format(format_args!("order placed")),
            Correlation::default(),
            Source {
                target: Cow::Borrowed("orders"),
                ..Source::default()
            },
        );
        log.new_property("level").append(format_args!("audit"));
        writer.write(&Record::Log(Box::new(log)), &resource(), &mut items);
        assert_eq!(members(&items, 1, "properties", "level"), ["\"audit\""]);
        assert_eq!(members(&items, 1, "properties", "target"), ["\"orders\""]);

        // An event: a property and a measurement each given twice.
        let event = EventRecord::new(
            Cow::Borrowed("order_placed"),
            Correlation::default(),
            Box::new(SpanExtra {
                properties: vec![
                    (Cow::Borrowed("channel"), "web".into()),
                    (Cow::Borrowed("channel"), "app".into()),
                ],
                ..SpanExtra::default()
            }),
            vec![(Cow::Borrowed("total"), 1.0), (Cow::Borrowed("total"), 2.5)],
        );
        writer.write(&Record::Event(Box::new(event)), &resource(), &mut items);
        assert_eq!(members(&items, 2, "properties", "channel"), ["\"app\""]);
        assert_eq!(members(&items, 2, "measurements", "total"), ["2.5"]);

        // A metric whose labels repeat a key, among more keys than are compared one by one.
        let mut labels: Vec<(String, String)> = (0..20)
            .map(|i| (format!("label{i}"), i.to_string()))
            .collect();
        labels.push(("label3".to_owned(), "again".to_owned()));
        let metric = MetricRecord::new(
            Arc::new(SeriesId::new("queue_depth", labels)),
            MetricKind::Gauge,
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            Duration::from_secs(60),
            Distribution::new(1, 4.0, 16.0, 4.0, 4.0),
        );
        writer.write(&Record::Metric(Box::new(metric)), &resource(), &mut items);
        assert_eq!(members(&items, 3, "properties", "label3"), ["\"again\""]);
        assert_eq!(members(&items, 3, "properties", "label4"), ["\"4\""]);
        let written = json(&items, 3)["data"]["baseData"]["properties"]
            .as_object()
            .unwrap()
            .len();
        assert_eq!(written, 20);
    }

    #[test]
    fn a_stack_given_as_a_property_is_the_outermost_exception_s_whole_or_cut_and_said_so() {
        use crate::record::Source;
        use crate::text::Text;

        let detail = |type_name: &str| ErrorDetail {
            type_name: type_name.into(),
            message: "refused".into(),
        };
        let stack = "at gateway::call (src/gateway.rs:12)\nat main (src/main.rs:3)\n";
        let mut writer = EnvelopeWriter::new("00000000-0000-0000-0000-000000000001");
        let mut items = Items::default();
        for (errors, stack) in [
            (
                vec![detail("Timeout"), detail("io::Error")],
                stack.to_owned(),
            ),
            (vec![detail("Timeout")], "é".repeat(40_000)),
            (Vec::new(), stack.to_owned()),
        ] {
            let mut log = LogRecord::new(
                Severity::Error,
                Text::format(format_args!("gateway")),
                Correlation::default(),
                Source::default(),
            );
            log.new_property("exception.stacktrace").push_str(&stack);
            log.new_property("order").push_str("7");
            if !errors.is_empty() {
                log.set_errors(errors);
            }
            writer.write(&Record::Log(Box::new(log)), &resource(), &mut items);
        }
        let whole = json(&items, 0);
        let base = &whole["data"]["baseData"];
        assert_eq!(base["exceptions"][0]["hasFullStack"], true);
        assert_eq!(base["exceptions"][0]["stack"], stack);
        // The stack is the outermost error's, not its cause's, and not a property again.
        assert_eq!(base["exceptions"][1]["hasFullStack"], false);
        assert!(base["exceptions"][1].get("stack").is_none());
        assert!(base["properties"].get("exception.stacktrace").is_none());
        assert_eq!(base["properties"]["order"], "7");
        // Cut to the schema's 32,768 UTF-16 units (one each, two bytes in UTF-8).
        let cut = json(&items, 1);
        let exception = &cut["data"]["baseData"]["exceptions"][0];
        assert_eq!(exception["hasFullStack"], false);
        assert_eq!(exception["stack"], "é".repeat(32_768));
        // No error: a message, whose stack is one of its properties.
        let message = json(&items, 2);
        assert_eq!(message["name"], MESSAGE);
        assert_eq!(
            message["data"]["baseData"]["properties"]["exception.stacktrace"],
            stack
        );
    }

    #[test]
    fn a_character_to_escape_is_found_at_any_place_of_any_length() {
        let mut out = Vec::new();
        for len in 1..=50 {
            let plain = "x".repeat(len);
            out.clear();
            string(&mut out, &plain);
            assert_eq!(out, format!("\"{plain}\"").as_bytes());
            let unicode = "\u{e9}\u{7ff}\u{ffff}\u{10ffff} !#[]~".repeat(len);
            out.clear();
            string(&mut out, &unicode);
            assert_eq!(out, format!("\"{unicode}\"").as_bytes());
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}'] {
                    let mut value = plain.clone();
                    value.replace_range(at..=at, special.encode_utf8(&mut [0; 4]));
                    out.clear();
                    string(&mut out, &value);
                    assert!(out.contains(&b'\\'), "{value:?} at {at}: {out:?}");
                    let back: String = serde_json::from_slice(&out).unwrap();
                    assert_eq!(back, value);
                }
            }
        }
    }

    #[test]
    fn items_round_trip_through_lines() {
        let mut items = Items::default();
        items.push(b"{\"a\":1}");
        items.push(b"{\"b\":2}");
        let mut lines = Vec::new();
        items.write_lines(&mut lines);
        assert_eq!(Items::from_lines(&lines), items);
        assert_eq!(Items::count_lines(&lines), items.len());
        // Blank lines (a file cut short, or written by hand) are not envelopes.
        let padded = b"\n{\"a\":1}\r\n  \n{\"b\":2}";
        assert_eq!(Items::from_lines(padded), items);
        assert_eq!(Items::count_lines(padded), 2);
        let mut body = Vec::new();
        items.write_array(&mut body);
        assert_eq!(body, b"[{\"a\":1},{\"b\":2}]");
        assert_eq!(items.slice(1..2).get(0), b"{\"b\":2}");
    }

    #[test]
    fn a_slice_holds_exactly_the_envelopes_of_its_range() {
        let mut items = Items::default();
        for n in 0..5 {
            items.push(format!("{{\"n\":{}}}", n * 100).as_bytes());
        }
        for (start, end) in [(0, 0), (0, 1), (0, 5), (1, 4), (2, 3), (4, 5), (5, 5)] {
            let slice = items.slice(start..end);
            let expected: Vec<&[u8]> = items.iter().skip(start).take(end - start).collect();
            assert_eq!(slice.iter().collect::<Vec<_>>(), expected, "{start}..{end}");
            assert_eq!(
                slice.byte_len(),
                expected.iter().map(|e| e.len()).sum::<usize>()
            );
        }
    }
}
