//! Exporters: where finished spans, log records and events go. The [`Exporter`] trait the
//! pipeline knows them by, what they receive ([`Record`]: a [`SpanRecord`], a [`LogRecord`], an
//! [`EventRecord`] or a [`MetricRecord`]; and the [`Resource`]), and the console and memory
//! exporters.
#![cfg_attr(
    feature = "azure",
    doc = "The Azure exporter is in [`azure`](crate::azure)."
)]
#![cfg_attr(
    not(feature = "azure"),
    doc = "The Azure exporter is in `azure` (feature `azure`)."
)]

mod console;
mod memory;
mod resource;
mod summary;

pub use self::console::ConsoleExporter;
pub use self::memory::MemoryExporter;
pub use crate::backtrace::{PanicBacktrace, StackFrame};
pub use crate::record::{
    AUTHENTICATED_USER_PROPERTY, CLIENT_ADDRESS_PROPERTY, ErrorDetail, EventRecord, ExceptionInfo,
    LINKS_PROPERTY, LogRecord, MAX_LINKS, MetricKind, MetricRecord, Record, Severity, SpanRecord,
    USER_PROPERTY,
};

use std::borrow::Cow;
use std::time::Instant;

/// Receives telemetry (finished spans, log records, events), in batches, on the pipeline's
/// worker thread.
///
/// An exporter may take its time (the worker is not the application's thread), but it should
/// hand slow work such as network calls to a worker of its own so that the queue keeps draining.
///
/// A panic in any of its methods is contained: caught on the worker, counted in
/// [`diagnostics`](crate::pipeline::diagnostics)`().exporter_panics`, reported once through `log` with the
/// panic's message; the other exporters keep receiving everything, and after three panics this
/// one is switched off (said through `log` too). A flush during which it panicked returns
/// [`FlushError::ExporterPanicked`](crate::pipeline::FlushError::ExporterPanicked).
///
/// ```
/// use census_runtime::export::{Exporter, Record, Resource};
///
/// struct CountSpans(usize);
///
/// impl Exporter for CountSpans {
///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
///         self.0 += batch.iter().filter(|record| record.as_span().is_some()).count();
///     }
/// }
/// ```
pub trait Exporter: Send + 'static {
    /// Takes a batch of telemetry.
    ///
    /// ```
    /// use census_runtime::export::{Exporter, Record, Resource};
    ///
    /// /// Prints each span's name with the service that recorded it.
    /// struct Names;
    ///
    /// impl Exporter for Names {
    ///     fn export(&mut self, batch: &[Record], resource: &Resource) {
    ///         for span in batch.iter().filter_map(Record::as_span) {
    ///             println!("{}: {}", resource.cloud_role, span.name());
    ///         }
    ///     }
    /// }
    /// ```
    fn export(&mut self, batch: &[Record], resource: &Resource);

    /// Called on the worker at every export interval, whether or not spans came: an exporter that
    /// holds spans for a while (the console, until a tree is whole) lets go of those held long
    /// enough by `now`. Does nothing by default.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use census_runtime::export::{Exporter, Record, Resource};
    ///
    /// /// Counts records a second after they come.
    /// #[derive(Default)]
    /// struct CountLater {
    ///     waiting: Vec<Instant>,
    ///     counted: usize,
    /// }
    ///
    /// impl Exporter for CountLater {
    ///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
    ///         let now = Instant::now();
    ///         self.waiting.extend(batch.iter().map(|_| now));
    ///     }
    ///
    ///     fn tick(&mut self, now: Instant) {
    ///         let before = self.waiting.len();
    ///         self.waiting.retain(|came| now.duration_since(*came) < Duration::from_secs(1));
    ///         self.counted += before - self.waiting.len();
    ///     }
    /// }
    /// ```
    fn tick(&mut self, now: Instant) {
        let _ = now;
    }

    /// Delivers what was exported so far, before `deadline`; `false` if it could not.
    ///
    /// ```
    /// use census_runtime::export::{Exporter, Record, Resource};
    /// use std::io::Write;
    /// use std::time::Instant;
    ///
    /// /// Writes span names to a file, through a buffer.
    /// struct ToFile(std::io::BufWriter<std::fs::File>);
    ///
    /// impl Exporter for ToFile {
    ///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
    ///         for span in batch.iter().filter_map(Record::as_span) {
    ///             let _ = writeln!(self.0, "{}", span.name());
    ///         }
    ///     }
    ///
    ///     fn flush(&mut self, _deadline: Instant) -> bool {
    ///         self.0.flush().is_ok()
    ///     }
    /// }
    /// ```
    fn flush(&mut self, deadline: Instant) -> bool {
        let _ = deadline;
        true
    }

    /// Delivers what is left and stops, before `deadline`; `false` if it could not.
    ///
    /// ```
    /// use census_runtime::export::{Exporter, Record, Resource};
    /// use std::time::Instant;
    ///
    /// /// Keeps what it is given until it is shut down, then prints how much that was.
    /// #[derive(Default)]
    /// struct Tally(usize);
    ///
    /// impl Exporter for Tally {
    ///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
    ///         self.0 += batch.len();
    ///     }
    ///
    ///     fn shutdown(&mut self, _deadline: Instant) -> bool {
    ///         println!("{} records", self.0);
    ///         true
    ///     }
    /// }
    /// ```
    fn shutdown(&mut self, deadline: Instant) -> bool {
        self.flush(deadline)
    }

    /// Whether this exporter takes the standard metrics: `requests/duration` and
    /// `dependencies/duration` per interval, counted for every request and dependency before
    /// sampling (the calls of dropped traces are then timed too). While one installed exporter
    /// takes them, the worker hands them, as [`Record::Metric`]s, to the exporters that do. No
    /// by default; the Azure exporter's is yes (`AzureExporterBuilder::standard_metrics`).
    ///
    /// ```
    /// use census_runtime::export::{Exporter, Record, Resource};
    ///
    /// /// Prints the standard metrics and nothing else.
    /// struct Rates;
    ///
    /// impl Exporter for Rates {
    ///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
    ///         for metric in batch.iter().filter_map(Record::as_metric) {
    ///             println!("{}: {} calls", metric.name(), metric.count());
    ///         }
    ///     }
    ///
    ///     fn standard_metrics(&self) -> bool {
    ///         true
    ///     }
    /// }
    /// ```
    fn standard_metrics(&self) -> bool {
        false
    }

    /// How many telemetry items this exporter holds and has not delivered yet (in memory, in
    /// local storage): asked after a flush that did not finish, so that the error can say how
    /// much is left. Exporters that deliver at once hold nothing.
    ///
    /// ```
    /// use census_runtime::export::{Exporter, Record, Resource};
    /// use std::time::Instant;
    ///
    /// /// Sends batches in the background; says how many records are still on their way.
    /// #[derive(Default)]
    /// struct Background {
    ///     pending: Vec<Record>,
    /// }
    ///
    /// impl Exporter for Background {
    ///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
    ///         self.pending.extend_from_slice(batch);
    ///     }
    ///
    ///     fn undelivered(&self) -> u64 {
    ///         self.pending.len() as u64
    ///     }
    /// }
    /// ```
    fn undelivered(&self) -> u64 {
        0
    }
}

/// What describes this process in every telemetry item: the cloud role and instance, the
/// application's version. The pipeline reads them at install: set in code, else from the
/// environment (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, App Service, Kubernetes), else
/// the executable's name and the host name; see the README's Application Insights section.
///
/// ```
/// use census_runtime::export::{MemoryExporter, Resource};
///
/// let census = census_runtime::pipeline()
///     .cloud_role("orders-api")
///     .application_version(env!("CARGO_PKG_VERSION"))
///     .exporter(MemoryExporter::new())
///     .install()?;
/// # drop(census);
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `ai.cloud.role`: the service's name.
    pub cloud_role: String,
    /// `ai.cloud.roleInstance`: this instance (the host name).
    pub cloud_role_instance: String,
    /// `ai.application.ver`: the application's version, when known.
    pub application_version: Option<String>,
    /// `ai.internal.sdkVersion`.
    pub sdk_version: String,
}

impl Resource {
    /// What was set in code, else what the process's environment says.
    pub(crate) fn new(
        role: Option<String>,
        instance: Option<String>,
        version: Option<String>,
    ) -> Self {
        let detected = resource::detect(&|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        });
        Resource {
            cloud_role: role.or(detected.role).unwrap_or_else(default_role),
            cloud_role_instance: instance.or(detected.instance).unwrap_or_else(host_name),
            application_version: version.or(detected.version),
            sdk_version: format!(
                "rust{}:census{}",
                rustc_version(),
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

fn default_role() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The host name, from the kernel where it says, else from the environment.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn rustc_version() -> &'static str {
    option_env!("CENSUS_RUSTC_VERSION").unwrap_or("")
}

/// `text` on one line ([`one_line`]), cut to `max` characters, an ellipsis marking the cut: what
/// the console and its summary print of a long name, statement or value.
fn preview(text: &str, max: usize) -> String {
    let text = one_line(text);
    if text.chars().count() <= max {
        return text.into_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// `text` as one line: when it holds a line break or a tab, each run of white space becomes one
/// space (a statement written over several lines reads `SELECT id FROM orders`); else as it
/// is. Other control characters stay, for the console to show escaped.
fn one_line(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b.is_ascii_whitespace() && b != b' ') {
        return Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len());
    for word in text.split_ascii_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    Cow::Owned(line)
}
