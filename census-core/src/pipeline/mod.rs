//! The pipeline: configuration, installation, flush and shutdown (`mod.rs`), the export worker
//! that drains the threads' rings into the exporters (`worker.rs`), and exporters kept
//! contained when they panic (`contained.rs`). It knows exporters through the [`Exporter`]
//! trait only.

mod contained;
mod worker;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use self::contained::Contained;
use self::worker::{Command, Flushed, Worker};
pub use crate::diagnostics::{Diagnostics, diagnostics};
use crate::export::{Exporter, Resource};
pub use crate::sampler::sampling_percentage;
use crate::sampler::{self, RateLimit, Sampler};
use crate::{queue, span};

/// What can go wrong when a pipeline is installed.
///
/// ```
/// use census_runtime::export::MemoryExporter;
/// use census_runtime::pipeline::ConfigError;
/// let err = census_runtime::pipeline()
///     .exporter(MemoryExporter::new())
///     .max_batch(0)
///     .install()
///     .unwrap_err();
/// assert!(matches!(err, ConfigError::InvalidSetting { setting: "max_batch", .. }));
/// assert_eq!(err.to_string(), "max_batch must be at least 1, got 0");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A pipeline is installed already in this process.
    AlreadyInstalled,
    /// The sampler's rate is not a fraction.
    InvalidSamplingRate(f64),
    /// Nothing would receive the spans.
    NoExporter,
    /// A setting is out of range.
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// What it accepts.
        expected: &'static str,
        /// What it was given.
        got: String,
    },
    /// The export worker could not be started.
    Worker(std::io::Error),
    /// An exporter could not be built (the Azure exporter's
    #[cfg_attr(feature = "azure", doc = "[`AzureError`](crate::azure::AzureError),")]
    #[cfg_attr(not(feature = "azure"), doc = "`AzureError`,")]
    /// with the `azure` feature).
    Exporter(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::AlreadyInstalled => f.write_str(
                "a census pipeline is installed already; drop its guard before installing another",
            ),
            ConfigError::InvalidSamplingRate(rate) => {
                write!(f, "sampling rate {rate} is outside 0.0..=1.0")
            }
            ConfigError::NoExporter => f.write_str(
                "no exporter is configured: add one with .exporter(...), such as ConsoleExporter::stdout(), or AzureExporter::from_env() for APPLICATIONINSIGHTS_CONNECTION_STRING",
            ),
            ConfigError::InvalidSetting {
                setting,
                expected,
                got,
            } => write!(f, "{setting} must be {expected}, got {got}"),
            ConfigError::Worker(e) => write!(f, "could not start the export worker thread: {e}"),
            ConfigError::Exporter(e) => write!(f, "could not build an exporter: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Worker(e) => Some(e),
            ConfigError::Exporter(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A flush or shutdown that did not deliver everything.
///
/// ```
/// use census_runtime::pipeline::FlushError;
/// let late = FlushError::Timeout { timeout: std::time::Duration::from_secs(15), left: Some(512) };
/// assert_eq!(
///     late.to_string(),
///     "flush did not finish within 15s: 512 telemetry items are kept to be sent later"
/// );
/// ```
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushError {
    /// The deadline passed before everything was delivered. What is left is not lost: it is
    /// kept (in local storage, or in memory when storage is off) and sent later.
    Timeout {
        /// The time the flush was given.
        timeout: Duration,
        /// How many telemetry items are still waiting, as the exporters counted them; `None`
        /// when they did not answer in time to say.
        left: Option<u64>,
    },
    /// An exporter panicked while it was flushing; what it held may be lost. The other
    /// exporters were flushed. See [`Exporter`] for how a panicking exporter is contained.
    ExporterPanicked {
        /// The exporter's type.
        exporter: &'static str,
    },
    /// No pipeline is installed.
    NotInstalled,
}

impl std::fmt::Display for FlushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlushError::Timeout {
                timeout,
                left: Some(left),
            } => write!(
                f,
                "flush did not finish within {timeout:?}: {left} telemetry items are kept to be sent later"
            ),
            FlushError::Timeout {
                timeout,
                left: None,
            } => write!(
                f,
                "flush did not finish within {timeout:?}; the exporters did not say how much is left"
            ),
            FlushError::ExporterPanicked { exporter } => write!(
                f,
                "exporter {exporter} panicked while flushing; what it held may be lost"
            ),
            FlushError::NotInstalled => f.write_str("no census pipeline is installed"),
        }
    }
}

impl std::error::Error for FlushError {}

// ---------------------------------------------------------------------------------------------
// Configuration.

/// Starts configuring the census pipeline; finish with [`PipelineBuilder::install`].
///
/// ```
/// use census_runtime::Sampler;
/// use census_runtime::export::MemoryExporter;
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline()
///     .sampler(Sampler::probability(0.25))
///     .cloud_role("orders-api")
///     .exporter(memory.clone())
///     .install()?;
/// // ... the guard flushes and shuts the pipeline down when dropped
/// drop(census);
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
pub fn pipeline() -> PipelineBuilder {
    PipelineBuilder {
        sampler: Sampler::always(),
        cloud_role: None,
        cloud_role_instance: None,
        application_version: None,
        panic_backtraces: false,
        errors_as_exceptions: false,
        sample_outside_spans: false,
        exporters: Vec::new(),
        max_batch: 512,
        export_interval: Duration::from_millis(200),
        metric_interval: Duration::from_secs(60),
        queue_capacity: queue::DEFAULT_CAPACITY,
        shutdown_timeout: Duration::from_secs(5),
    }
}

/// Configuration of the census pipeline; made by [`pipeline`].
///
/// ```
/// use census_runtime::Sampler;
/// use census_runtime::export::ConsoleExporter;
///
/// let census = census_runtime::pipeline()
///     .sampler(Sampler::probability(0.25))
///     .cloud_role("orders")
///     .exporter(ConsoleExporter::stdout())
///     .install()?;
/// // ... the application runs; dropping `census` delivers what is left.
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
#[must_use = "nothing is recorded until install() is called"]
pub struct PipelineBuilder {
    sampler: Sampler,
    cloud_role: Option<String>,
    cloud_role_instance: Option<String>,
    application_version: Option<String>,
    panic_backtraces: bool,
    errors_as_exceptions: bool,
    sample_outside_spans: bool,
    exporters: Vec<Contained>,
    max_batch: usize,
    export_interval: Duration,
    metric_interval: Duration,
    queue_capacity: usize,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("sampler", &self.sampler)
            .field("cloud_role", &self.cloud_role)
            .field("cloud_role_instance", &self.cloud_role_instance)
            .field("application_version", &self.application_version)
            .field("panic_backtraces", &self.panic_backtraces)
            .field("errors_as_exceptions", &self.errors_as_exceptions)
            .field("sample_outside_spans", &self.sample_outside_spans)
            .field("exporters", &self.exporters.len())
            .field("max_batch", &self.max_batch)
            .field("export_interval", &self.export_interval)
            .field("metric_interval", &self.metric_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// Which traces are recorded (default: all).
    ///
    /// ```
    /// use census_runtime::Sampler;
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .sampler(Sampler::never())
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// census_runtime::span("dropped").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// assert!(memory.spans().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// The cloud role: the service's name on the application map. Default: `OTEL_SERVICE_NAME`,
    /// the `service.namespace` and `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, the App Service
    /// site or the Kubernetes workload, else the executable's name (see
    /// [`Resource`]).
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .cloud_role("orders")
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.resource().unwrap().cloud_role, "orders");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cloud_role(mut self, role: impl Into<String>) -> Self {
        self.cloud_role = Some(role.into());
        self
    }

    /// The cloud role instance. Default: the `service.instance.id` or `k8s.pod.name` of
    /// `OTEL_RESOURCE_ATTRIBUTES`, the App Service instance or the Kubernetes pod, else the
    /// host name.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .cloud_role_instance("orders-7f9c")
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// census.flush(Duration::from_secs(5))?;
    /// assert_eq!(memory.resource().unwrap().cloud_role_instance, "orders-7f9c");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cloud_role_instance(mut self, instance: impl Into<String>) -> Self {
        self.cloud_role_instance = Some(instance.into());
        self
    }

    /// The application's version, sent as `ai.application.ver` with every item; default: the
    /// `service.version` of `OTEL_RESOURCE_ATTRIBUTES`, else none. Give it your package's
    /// version, read where your code is compiled:
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// let census = census_runtime::pipeline()
    ///     .application_version(env!("CARGO_PKG_VERSION"))
    ///     # .exporter(MemoryExporter::new())
    ///     .install()?;
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn application_version(mut self, version: impl Into<String>) -> Self {
        self.application_version = Some(version.into());
        self
    }

    /// Captures a backtrace at every panic that unwinds through a recorded span, whatever
    /// `RUST_BACKTRACE` says (default: only when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` asks
    /// for backtraces, as `std` reads them). The panic's Exception then carries its frames; see
    /// [`PanicBacktrace`](crate::export::PanicBacktrace). Capturing costs the panicking thread a
    /// walk of its stack, never a call that does not panic.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// let census = census_runtime::pipeline()
    ///     .panic_backtraces(true)
    ///     # .exporter(MemoryExporter::new())
    ///     .install()?;
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn panic_backtraces(mut self, always: bool) -> Self {
        self.panic_backtraces = always;
        self
    }

    /// Sends every `Err` that fails an instrumented function as an Exception item too, with the
    /// error's chain of `source()`s (default: only the functions whose attribute has the
    /// `exception` option, as in `#[dependency(kind = "SQL", exception)]`). The span itself is
    /// failed either way.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// let census = census_runtime::pipeline()
    ///     .errors_as_exceptions(true)
    ///     # .exporter(MemoryExporter::new())
    ///     .install()?;
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn errors_as_exceptions(mut self, on: bool) -> Self {
        self.errors_as_exceptions = on;
        self
    }

    /// Samples the log records and events written outside any span too (default: they are kept
    /// whatever the rate, as they belong to no trace the sampler decided on). Each is then kept
    /// at the sampling percentage in force, drawn at random, and says so (`sampleRate`), so that
    /// the portal's counts stay right: as the Application Insights SDKs sample telemetry that
    /// has no operation. A background job that logs outside any span then sends a share of its
    /// records, not all of them.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// let census = census_runtime::pipeline()
    ///     .sampler(census_runtime::Sampler::probability(0.25))
    ///     .sample_outside_spans(true)
    ///     # .exporter(MemoryExporter::new())
    ///     .install()?;
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn sample_outside_spans(mut self, on: bool) -> Self {
        self.sample_outside_spans = on;
        self
    }

    /// Adds an exporter; every finished span goes to every exporter.
    ///
    /// An exporter that panics does not take the others down: the panic is caught, counted in
    /// [`diagnostics`]`().exporter_panics` and reported through `log`, and
    /// after three panics that exporter is switched off.
    ///
    /// ```
    /// use census_runtime::export::{ConsoleExporter, MemoryExporter};
    ///
    /// // Two exporters: each gets every span.
    /// let census = census_runtime::pipeline()
    ///     .exporter(ConsoleExporter::stdout())
    ///     .exporter(MemoryExporter::new())
    ///     .install()?;
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn exporter<E: Exporter>(mut self, exporter: E) -> Self {
        self.exporters.push(Contained::new(
            Box::new(exporter),
            std::any::type_name::<E>(),
        ));
        self
    }

    /// The most spans handed to an exporter at once (default 512).
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .max_batch(100)
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_batch(mut self, spans: usize) -> Self {
        self.max_batch = spans;
        self
    }

    /// How long finished spans may wait before they are exported (default 200 ms).
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .export_interval(Duration::from_millis(50))
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_interval(mut self, interval: Duration) -> Self {
        self.export_interval = interval;
        self
    }

    /// How long metrics are pre-aggregated before one record per series is exported (default
    /// a minute, the grain Application Insights charts metrics at). A flush or a shutdown
    /// closes the interval early: it delivers the part of the minute recorded so far.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # use std::time::Duration;
    /// let census = census_runtime::pipeline()
    ///     .metric_interval(Duration::from_secs(30))
    ///     # .exporter(MemoryExporter::new())
    ///     .install()?;
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn metric_interval(mut self, interval: Duration) -> Self {
        self.metric_interval = interval;
        self
    }

    /// How many finished spans may wait for the export worker beyond what each thread's own ring
    /// holds (1,024 spans) before new ones are dropped and counted (default 65,536). Each thread
    /// hands its spans over without locks; this shared overflow takes bursts the worker has not
    /// yet woken up for.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .queue_capacity(1 << 20)
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_capacity(mut self, spans: usize) -> Self {
        self.queue_capacity = spans;
        self
    }

    /// How long dropping the guard waits for the exporters (default 5 s).
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .shutdown_timeout(Duration::from_secs(2))
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// // Dropping the guard waits at most two seconds for the exporters.
    /// drop(census);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Starts the pipeline: from now on annotated calls are recorded and exported.
    ///
    /// Returns a guard that flushes and shuts the pipeline down when dropped. One pipeline at a
    /// time per process.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use census_runtime::pipeline::ConfigError;
    ///
    /// let census = census_runtime::pipeline().exporter(MemoryExporter::new()).install()?;
    /// // One pipeline at a time.
    /// let again = census_runtime::pipeline().exporter(MemoryExporter::new()).install();
    /// assert!(matches!(again, Err(ConfigError::AlreadyInstalled)));
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn install(self) -> Result<Pipeline, ConfigError> {
        if !self.sampler.is_valid() {
            return Err(ConfigError::InvalidSamplingRate(self.sampler.rate()));
        }
        if let Some(budget) = self.sampler.traces_per_second()
            && !(budget.is_finite() && budget > 0.0)
        {
            return Err(invalid(
                "rate_limited",
                "a number of traces per second above zero",
                budget,
            ));
        }
        if self.max_batch == 0 {
            return Err(invalid("max_batch", "at least 1", self.max_batch));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "at least 1", self.queue_capacity));
        }
        if self.export_interval.is_zero() {
            return Err(invalid(
                "export_interval",
                "longer than zero",
                format!("{:?}", self.export_interval),
            ));
        }
        if self.metric_interval < Duration::from_secs(1) {
            return Err(invalid(
                "metric_interval",
                "at least a second",
                format!("{:?}", self.metric_interval),
            ));
        }
        if self.exporters.is_empty() {
            return Err(ConfigError::NoExporter);
        }
        if INSTALLED
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ConfigError::AlreadyInstalled);
        }
        match self.start() {
            Ok(pipeline) => Ok(pipeline),
            Err(error) => {
                INSTALLED.store(false, Ordering::Release);
                Err(error)
            }
        }
    }

    fn start(self) -> Result<Pipeline, ConfigError> {
        crate::clock::init();
        crate::backtrace::set_forced(self.panic_backtraces);
        span::set_errors_as_exceptions(self.errors_as_exceptions);
        span::install_panic_hook();
        queue::set_capacity(self.queue_capacity);
        let resource = Resource::new(
            self.cloud_role,
            self.cloud_role_instance,
            self.application_version,
        );
        let (control_tx, control_rx) = mpsc::channel();
        let worker = Worker::new(
            self.exporters,
            resource,
            self.max_batch,
            self.export_interval,
            self.metric_interval,
            control_rx,
            RateLimit::new(&self.sampler, Instant::now()),
        );
        crate::standard::set_counting(worker.counts_standard_metrics());
        let handle = thread::Builder::new()
            .name("census-export".into())
            .spawn(move || {
                crate::local::mark_census_thread();
                worker.run();
            })
            .map_err(ConfigError::Worker)?;
        queue::set_worker(Some(handle.thread().clone()));
        if let Ok(mut slot) = CONTROL.lock() {
            *slot = Some(control_tx);
        }
        sampler::start(self.sampler, self.sample_outside_spans);
        Ok(Pipeline {
            worker: Some(handle),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

fn invalid(setting: &'static str, expected: &'static str, got: impl ToString) -> ConfigError {
    ConfigError::InvalidSetting {
        setting,
        expected,
        got: got.to_string(),
    }
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static CONTROL: Mutex<Option<mpsc::Sender<Command>>> = Mutex::new(None);

/// The installed pipeline. Dropping it flushes what is queued (within the shutdown timeout) and
/// stops recording.
///
/// ```
/// use census_runtime::export::MemoryExporter;
/// use std::time::Duration;
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// census_runtime::span("checkout").in_scope(|| {});
/// census.shutdown(Duration::from_secs(5))?; // or drop it
/// assert_eq!(memory.spans().len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping the guard shuts the pipeline down at once"]
pub struct Pipeline {
    worker: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Pipeline {
    /// Delivers every span finished so far to the exporters, waiting at most `timeout`.
    ///
    /// Spans still open are not waited for; every span finished before the call is delivered,
    /// whichever thread it finished on, idle or busy.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # use std::time::Duration;
    /// let census = census_runtime::pipeline().exporter(MemoryExporter::new()).install()?;
    /// census.flush(Duration::from_secs(5))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        send(timeout, |deadline, done| Command::Flush { deadline, done })
    }

    /// Stops recording, delivers what is queued within `timeout`, and stops the worker.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use std::time::Duration;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// census.shutdown(Duration::from_secs(5))?;
    /// // Stopped: nothing more is recorded.
    /// census_runtime::span("after").in_scope(|| {});
    /// assert_eq!(memory.spans().len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), FlushError> {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> Result<(), FlushError> {
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        sampler::stop();
        crate::standard::set_counting(false);
        let result = send(timeout, |deadline, done| Command::Shutdown {
            deadline,
            done,
        });
        // Joined whenever the worker answered (it returns after answering a shutdown); a
        // worker stuck in an exporter past the deadline is left behind.
        if !matches!(
            result,
            Err(FlushError::Timeout { left: None, .. } | FlushError::NotInstalled)
        ) {
            let _ = worker.join();
        }
        if let Ok(mut slot) = CONTROL.lock() {
            *slot = None;
        }
        queue::set_worker(None);
        INSTALLED.store(false, Ordering::Release);
        result
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let timeout = self.shutdown_timeout;
        if let Err(error) = self.stop(timeout) {
            log::warn!("census: shutdown incomplete: {error}");
        }
    }
}

fn send(
    timeout: Duration,
    command: impl FnOnce(Instant, mpsc::Sender<Flushed>) -> Command,
) -> Result<(), FlushError> {
    let deadline = Instant::now() + timeout;
    let (done_tx, done_rx) = mpsc::channel();
    {
        let control = CONTROL.lock().map_err(|_| FlushError::NotInstalled)?;
        let sender = control.as_ref().ok_or(FlushError::NotInstalled)?;
        sender
            .send(command(deadline, done_tx))
            .map_err(|_| FlushError::NotInstalled)?;
    }
    queue::wake_worker();
    match done_rx.recv_timeout(timeout) {
        Ok(Flushed::All) => Ok(()),
        Ok(Flushed::Late { left }) => Err(FlushError::Timeout {
            timeout,
            left: Some(left),
        }),
        Ok(Flushed::Panicked { exporter }) => Err(FlushError::ExporterPanicked { exporter }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout {
            timeout,
            left: None,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::NotInstalled),
    }
}
