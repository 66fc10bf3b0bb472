//! The pipeline: configuration, installation, the bounded per-thread rings of finished spans, the export
//! worker, flush and shutdown.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

mod contained;

use self::contained::{Contained, Failed};
use crate::context::{Frame, Local, TraceId, next_random};
use crate::diagnostics::COUNTERS;
use crate::export::{Exporter, Resource};
use crate::sampler::{self, Sampler};
use crate::span::{self, SpanRecord};

/// What can go wrong when a pipeline is installed.
///
/// ```
/// use census_runtime::{ConfigError, MemoryExporter};
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
    /// The Application Insights connection string is malformed; the error names the bad part.
    #[cfg(feature = "azure")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
    ConnectionString(crate::export::ConnectionStringError),
    /// The Azure exporter was configured but no connection string was given, in code or in
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING` (empty counts as not set).
    #[cfg(feature = "azure")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
    MissingConnectionString,
    /// The local storage directory for undelivered telemetry could not be made.
    #[cfg(feature = "azure")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
    Storage {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
                "no exporter is configured: add one with .exporter(...) or set APPLICATIONINSIGHTS_CONNECTION_STRING",
            ),
            ConfigError::InvalidSetting {
                setting,
                expected,
                got,
            } => write!(f, "{setting} must be {expected}, got {got}"),
            ConfigError::Worker(e) => write!(f, "could not start the export worker thread: {e}"),
            #[cfg(feature = "azure")]
            ConfigError::ConnectionString(e) => {
                write!(f, "invalid Application Insights connection string: {e}")
            }
            #[cfg(feature = "azure")]
            ConfigError::MissingConnectionString => f.write_str(
                "the Azure exporter has no connection string: call .connection_string(...) or set APPLICATIONINSIGHTS_CONNECTION_STRING",
            ),
            #[cfg(feature = "azure")]
            ConfigError::Storage { path, source } => write!(
                f,
                "could not create the local storage directory {}: {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Worker(e) => Some(e),
            #[cfg(feature = "azure")]
            ConfigError::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(feature = "azure")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
impl From<crate::export::ConnectionStringError> for ConfigError {
    fn from(error: crate::export::ConnectionStringError) -> Self {
        ConfigError::ConnectionString(error)
    }
}

/// A flush or shutdown that did not deliver everything.
///
/// ```
/// use census_runtime::FlushError;
/// assert_eq!(census_runtime::flush(std::time::Duration::from_secs(1)), Err(FlushError::NotInstalled));
///
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
// What the hot path reads.

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The sampler's rate, as the bits of an `f64`.
static RATE: AtomicU64 = AtomicU64::new(0x3ff0_0000_0000_0000); // 1.0
/// The rate as a threshold on a uniform `u64` draw: `u64::MAX` keeps everything, 0 nothing.
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);
/// The sampling percentage recorded on each span, as the bits of an `f32`.
static PERCENT: AtomicU32 = AtomicU32::new(0x42c8_0000); // 100.0

/// Whether a pipeline is installed: the one check an annotated call makes when none is.
#[inline(always)]
pub(crate) fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Whether a pipeline is installed and recording: one relaxed atomic load. Integrations and
/// hand-written instrumentation can skip building names and statements when it is `false`.
///
/// ```
/// assert!(!census_runtime::is_installed());
/// ```
#[inline]
pub fn is_installed() -> bool {
    is_active()
}

/// Whether a trace continued from elsewhere is recorded: decided from its id.
#[inline]
pub(crate) fn sampled(trace_id: TraceId) -> bool {
    sampler::decide(f64::from_bits(RATE.load(Ordering::Relaxed)), trace_id)
}

/// Decides whether a new trace is recorded and, if it is, gives it its id.
///
/// The decision costs one random draw ([`keep_new_trace`]). A recorded trace then gets an id
/// whose Application Insights score is below the rate ([`new_trace_id`]), so that every service
/// that sees the trace keeps it too: the same outcome as drawing an id first and scoring it,
/// without hashing an id for the traces that are dropped.
#[inline]
pub(crate) fn sample_root() -> Option<TraceId> {
    keep_new_trace().then(new_trace_id)
}

/// Whether a new trace is recorded: one random draw against the rate.
#[inline]
pub(crate) fn keep_new_trace() -> bool {
    let threshold = THRESHOLD.load(Ordering::Relaxed);
    threshold == u64::MAX || next_random() < threshold
}

/// The id of a new recorded trace: one whose score keeps it at the current rate.
pub(crate) fn new_trace_id() -> TraceId {
    if THRESHOLD.load(Ordering::Relaxed) == u64::MAX {
        TraceId::random()
    } else {
        sampler::kept_trace_id(f64::from_bits(RATE.load(Ordering::Relaxed)))
    }
}

#[inline]
pub(crate) fn sample_percentage() -> f32 {
    f32::from_bits(PERCENT.load(Ordering::Relaxed))
}

/// The worker's ends of every thread's ring of finished spans.
static RINGS: Mutex<Vec<rtrb::Consumer<SpanRecord>>> = Mutex::new(Vec::new());
/// Spans per thread ring. A thread's ring starts small and doubles, up to `MAX_RING`, each time it is found half full
/// (the thread makes spans faster than the worker drains them between two wakes): a thread
/// that makes a few spans holds 96 KiB, a busy one at most 768 KiB, and a busy thread with a
/// large ring wakes the worker less often and shares fewer cache lines with it while it drains.
const FIRST_RING: usize = 1024;
const MAX_RING: usize = 8192;
/// Where spans go when a thread's ring is full (a burst faster than the worker wakes up): shared,
/// behind a lock, bounded by the pipeline's `queue_capacity`. Beyond that, spans are dropped.
static OVERFLOW: Mutex<Vec<SpanRecord>> = Mutex::new(Vec::new());
static OVERFLOW_LEN: AtomicUsize = AtomicUsize::new(0);
static OVERFLOW_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_QUEUE_CAPACITY);
const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Set when a thread woke the worker early; cleared by the worker.
static WAKE_REQUESTED: AtomicBool = AtomicBool::new(false);
static WORKER_THREAD: Mutex<Option<Thread>> = Mutex::new(None);

/// Hands a finished span to the export worker through this thread's ring: no lock, no
/// allocation, no syscall. The worker is woken early when a ring is half full; a full ring
/// spills into the shared overflow; a full overflow drops the span and counts it.
#[inline]
pub(crate) fn submit(local: &mut Local, record: SpanRecord) {
    let ring = ring_of(&mut local.ring);
    if let Err(rtrb::PushError::Full(record)) = ring.push(record) {
        spill(record);
        return;
    }
    counted(&mut local.ring, &mut local.pushed);
}

/// Ends the span on top of this thread's stack, moving its record straight from the stack into
/// the next slot of the thread's ring, stamped with `end`: one copy, no temporary.
///
/// The caller has checked that the top frame is a [`Frame::Span`] and marked it failed if a panic
/// is unwinding.
#[inline]
pub(crate) fn submit_top(local: &mut Local, end: u64) {
    let Local {
        stack,
        ring: local_ring,
        pushed,
        ..
    } = local;
    let ring = ring_of(local_ring);
    let Ok(mut chunk) = ring.write_chunk_uninit(1) else {
        // The ring is full: the record goes the slow way.
        if let Some(Frame::Span(mut record)) = stack.pop() {
            crate::context::set_depth(stack.len());
            record.end = end;
            spill(record);
        }
        return;
    };
    let top = stack.len() - 1;
    let Some(Frame::Span(record)) = stack.last() else {
        unreachable!("the caller checked the top frame");
    };
    let slot = chunk.as_mut_slices().0[0].as_mut_ptr();
    // SAFETY: the record is moved, bitwise, from the top frame into the uninitialised slot; the
    // frame is then forgotten (its length cut, nothing dropped), so the record has one owner,
    // and the slot is committed to the consumer only once written.
    unsafe {
        std::ptr::copy_nonoverlapping(std::ptr::from_ref(record), slot, 1);
        (*slot).end = end;
        stack.set_len(top);
        chunk.commit_all();
    }
    crate::context::set_depth(top);
    counted(local_ring, pushed);
}

/// Ends a span whose record is boxed (an async span's): the record is copied from the box
/// straight into the next slot of the thread's ring, stamped with `end`, and the box freed.
pub(crate) fn submit_boxed(local: &mut Local, record: Box<SpanRecord>, end: u64) {
    let Local {
        ring: local_ring,
        pushed,
        spare,
        ..
    } = local;
    let ring = ring_of(local_ring);
    let Ok(mut chunk) = ring.write_chunk_uninit(1) else {
        let mut record = *record;
        record.end = end;
        spill(record);
        return;
    };
    let slot = chunk.as_mut_slices().0[0].as_mut_ptr();
    let raw = Box::into_raw(record);
    // SAFETY: the record is moved, bitwise, out of the box into the uninitialised slot; the box
    // is then kept (or freed) as uninitialised memory (nothing dropped), so the record has one
    // owner, and the slot is committed only once written.
    unsafe {
        std::ptr::copy_nonoverlapping(raw, slot, 1);
        (*slot).end = end;
        crate::context::keep_box(
            spare,
            Box::from_raw(raw.cast::<std::mem::MaybeUninit<SpanRecord>>()),
        );
        chunk.commit_all();
    }
    counted(local_ring, pushed);
}

/// This thread's end of its ring, made on its first span.
#[inline]
fn ring_of(ring: &mut Option<rtrb::Producer<SpanRecord>>) -> &mut rtrb::Producer<SpanRecord> {
    match ring {
        Some(ring) => ring,
        None => ring.insert(new_ring(FIRST_RING)),
    }
}

/// Counts a span put in the ring; now and then looks at how full the ring is.
#[inline]
fn counted(ring: &mut Option<rtrb::Producer<SpanRecord>>, pushed: &mut u32) {
    // Looking at how full the ring is reads the worker's side of it: every 64 spans only.
    *pushed = pushed.wrapping_add(1);
    if pushed.is_multiple_of(64) {
        check_fill(ring);
    }
}

#[cold]
fn check_fill(ring: &mut Option<rtrb::Producer<SpanRecord>>) {
    let Some(producer) = ring.as_ref() else {
        return;
    };
    let capacity = producer.buffer().capacity();
    if producer.slots() < capacity / 2 {
        request_wake();
        if capacity < MAX_RING {
            // The old ring is abandoned: the worker drains what it holds, then forgets it.
            *ring = Some(new_ring(capacity * 2));
        }
    }
}

fn request_wake() {
    // A load first: under a flood every span comes here, and a swap on the shared flag would
    // bounce its cache line between the cores for nothing once the worker is awake.
    if !WAKE_REQUESTED.load(Ordering::Relaxed) && !WAKE_REQUESTED.swap(true, Ordering::AcqRel) {
        wake_worker();
    }
}

#[cold]
#[inline(never)]
fn spill(record: SpanRecord) {
    request_wake();
    // A full overflow is seen with a load; the span is then dropped (and counted) without
    // touching the shared length.
    let capacity = OVERFLOW_CAPACITY.load(Ordering::Relaxed);
    if OVERFLOW_LEN.load(Ordering::Relaxed) >= capacity {
        COUNTERS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if OVERFLOW_LEN.fetch_add(1, Ordering::AcqRel) >= capacity {
        OVERFLOW_LEN.fetch_sub(1, Ordering::AcqRel);
        COUNTERS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        return;
    }
    OVERFLOW
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(record);
}

#[cold]
fn new_ring(capacity: usize) -> rtrb::Producer<SpanRecord> {
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    RINGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(consumer);
    producer
}

fn wake_worker() {
    if let Ok(worker) = WORKER_THREAD.lock()
        && let Some(thread) = worker.as_ref()
    {
        thread.unpark();
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration.

/// Starts configuring the census pipeline; finish with [`PipelineBuilder::install`].
///
/// ```
/// use census_runtime::{MemoryExporter, Sampler};
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline()
///     .sampler(Sampler::probability(0.25))
///     .cloud_role("orders-api")
///     .exporter(memory.clone())
///     .install()?;
/// // ... the guard flushes and shuts the pipeline down when dropped
/// drop(census);
/// # Ok::<(), census_runtime::ConfigError>(())
/// ```
pub fn pipeline() -> PipelineBuilder {
    PipelineBuilder {
        sampler: Sampler::always(),
        cloud_role: None,
        cloud_role_instance: None,
        exporters: Vec::new(),
        max_batch: 512,
        export_interval: Duration::from_millis(200),
        queue_capacity: DEFAULT_QUEUE_CAPACITY,
        shutdown_timeout: Duration::from_secs(5),
        #[cfg(feature = "azure")]
        connection_string: None,
        #[cfg(feature = "azure")]
        azure: None,
    }
}

/// Configuration of the census pipeline; made by [`pipeline`].
#[must_use = "nothing is recorded until install() is called"]
pub struct PipelineBuilder {
    sampler: Sampler,
    cloud_role: Option<String>,
    cloud_role_instance: Option<String>,
    exporters: Vec<Contained>,
    max_batch: usize,
    export_interval: Duration,
    queue_capacity: usize,
    shutdown_timeout: Duration,
    #[cfg(feature = "azure")]
    connection_string: Option<String>,
    #[cfg(feature = "azure")]
    azure: Option<crate::export::AzureExporterBuilder>,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("sampler", &self.sampler)
            .field("cloud_role", &self.cloud_role)
            .field("cloud_role_instance", &self.cloud_role_instance)
            .field("exporters", &self.exporters.len())
            .field("max_batch", &self.max_batch)
            .field("export_interval", &self.export_interval)
            .field("queue_capacity", &self.queue_capacity)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// Which traces are recorded (default: all).
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// The cloud role: the service's name on the application map (default: the executable's name).
    pub fn cloud_role(mut self, role: impl Into<String>) -> Self {
        self.cloud_role = Some(role.into());
        self
    }

    /// The cloud role instance (default: the host name).
    pub fn cloud_role_instance(mut self, instance: impl Into<String>) -> Self {
        self.cloud_role_instance = Some(instance.into());
        self
    }

    /// Adds an exporter; every finished span goes to every exporter.
    ///
    /// An exporter that panics does not take the others down: the panic is caught, counted in
    /// [`diagnostics`](crate::diagnostics)`().exporter_panics` and reported through `log`, and
    /// after three panics that exporter is switched off.
    pub fn exporter<E: Exporter>(mut self, exporter: E) -> Self {
        self.exporters.push(Contained::new(
            Box::new(exporter),
            std::any::type_name::<E>(),
        ));
        self
    }

    /// The most spans handed to an exporter at once (default 512).
    pub fn max_batch(mut self, spans: usize) -> Self {
        self.max_batch = spans;
        self
    }

    /// How long finished spans may wait before they are exported (default 200 ms).
    pub fn export_interval(mut self, interval: Duration) -> Self {
        self.export_interval = interval;
        self
    }

    /// How many finished spans may wait for the export worker beyond what each thread's own ring
    /// holds (1,024 spans) before new ones are dropped and counted (default 65,536). Each thread
    /// hands its spans over without locks; this shared overflow takes bursts the worker has not
    /// yet woken up for.
    pub fn queue_capacity(mut self, spans: usize) -> Self {
        self.queue_capacity = spans;
        self
    }

    /// How long dropping the guard waits for the exporters (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sends the spans to Azure Application Insights with this connection string (read from
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING` when not set here), in addition to any
    /// [`exporter`](Self::exporter). A malformed string fails [`install`](Self::install); the
    /// variable set but empty (or only whitespace) counts as not set: no Azure exporter, and a
    /// debug note through `log`.
    ///
    /// ```
    /// use census_runtime::{ConfigError, ConnectionStringError};
    /// let error = census_runtime::pipeline()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=ftp://x")
    ///     .install()
    ///     .unwrap_err();
    /// assert!(matches!(
    ///     error,
    ///     ConfigError::ConnectionString(ConnectionStringError::InvalidEndpoint { key: "IngestionEndpoint", .. })
    /// ));
    /// ```
    #[cfg(feature = "azure")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
    pub fn connection_string(mut self, connection_string: impl Into<String>) -> Self {
        self.connection_string = Some(connection_string.into());
        self
    }

    /// Settings of the Azure exporter (gzip, local storage and its limits, timeouts, batching);
    /// see [`AzureExporterBuilder`](crate::AzureExporterBuilder). Its connection string, when it
    /// has one, wins over [`connection_string`](Self::connection_string).
    #[cfg(feature = "azure")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
    pub fn azure(mut self, settings: crate::export::AzureExporterBuilder) -> Self {
        self.azure = Some(settings);
        self
    }

    /// The Azure exporter to build at install, with its parsed connection string, if any.
    #[cfg(feature = "azure")]
    fn azure_exporter(
        &mut self,
    ) -> Result<
        Option<(
            crate::export::AzureExporterBuilder,
            crate::export::ConnectionString,
        )>,
        ConfigError,
    > {
        let settings = self.azure.take();
        let text = match (&settings, &self.connection_string) {
            (Some(settings), _) if settings.has_connection_string() => {
                let exporter = settings.clone().build_parsed()?;
                return Ok(Some(exporter));
            }
            (_, Some(text)) => Some(text.clone()),
            _ => crate::export::azure::connection_string_from_env(),
        };
        match text {
            Some(text) => {
                let connection = crate::export::ConnectionString::parse(&text)?;
                Ok(Some((settings.unwrap_or_default(), connection)))
            }
            None if settings.is_some() => Err(ConfigError::MissingConnectionString),
            None => Ok(None),
        }
    }

    /// Starts the pipeline: from now on annotated calls are recorded and exported.
    ///
    /// Returns a guard that flushes and shuts the pipeline down when dropped. One pipeline at a
    /// time per process.
    #[cfg_attr(not(feature = "azure"), allow(unused_mut))]
    pub fn install(mut self) -> Result<Pipeline, ConfigError> {
        if !self.sampler.is_valid() {
            return Err(ConfigError::InvalidSamplingRate(self.sampler.rate()));
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
        #[cfg(feature = "azure")]
        let azure = self.azure_exporter()?;
        #[cfg(not(feature = "azure"))]
        let azure: Option<()> = None;
        if self.exporters.is_empty() && azure.is_none() {
            return Err(ConfigError::NoExporter);
        }
        if INSTALLED
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(ConfigError::AlreadyInstalled);
        }
        #[cfg(feature = "azure")]
        if let Some((settings, connection)) = azure {
            match settings.build_with(connection) {
                Ok(exporter) => self.exporters.push(Contained::new(
                    Box::new(exporter),
                    std::any::type_name::<crate::export::AzureExporter>(),
                )),
                Err(error) => {
                    INSTALLED.store(false, Ordering::Release);
                    return Err(error);
                }
            }
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
        span::install_panic_hook();
        OVERFLOW_CAPACITY.store(self.queue_capacity, Ordering::Relaxed);
        let resource = Resource::new(self.cloud_role, self.cloud_role_instance);
        let (control_tx, control_rx) = mpsc::channel();
        let worker = Worker {
            exporters: self.exporters,
            resource,
            max_batch: self.max_batch,
            interval: self.export_interval,
            control: control_rx,
            pending: Vec::new(),
            drained: 0,
        };
        let handle = thread::Builder::new()
            .name("census-export".into())
            .spawn(move || worker.run())
            .map_err(ConfigError::Worker)?;
        if let Ok(mut slot) = WORKER_THREAD.lock() {
            *slot = Some(handle.thread().clone());
        }
        if let Ok(mut slot) = CONTROL.lock() {
            *slot = Some(control_tx);
        }
        // Before the rate is in force: a kept root never waits for what its id is built from.
        sampler::prepare_ids(self.sampler.rate());
        RATE.store(self.sampler.rate().to_bits(), Ordering::Relaxed);
        THRESHOLD.store(threshold(self.sampler.rate()), Ordering::Relaxed);
        PERCENT.store(
            ((self.sampler.rate() * 100.0) as f32).to_bits(),
            Ordering::Relaxed,
        );
        ACTIVE.store(true, Ordering::Release);
        Ok(Pipeline {
            worker: Some(handle),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// A rate as a threshold on a uniform `u64`: a draw below it keeps the trace.
fn threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else if rate <= 0.0 {
        0
    } else {
        (rate * 18_446_744_073_709_551_616.0) as u64
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

enum Command {
    Flush {
        deadline: Instant,
        done: mpsc::Sender<Flushed>,
    },
    Shutdown {
        deadline: Instant,
        done: mpsc::Sender<Flushed>,
    },
}

/// What a flush or shutdown came to, as the worker answers it.
enum Flushed {
    /// Every exporter has everything.
    All,
    /// The deadline passed first; the exporters hold this many items still.
    Late { left: u64 },
    /// This exporter panicked while flushing.
    Panicked { exporter: &'static str },
}

/// The installed pipeline. Dropping it flushes what is queued (within the shutdown timeout) and
/// stops recording.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the pipeline down at once"]
pub struct Pipeline {
    worker: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl Pipeline {
    /// Delivers every span finished so far to the exporters, waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        flush(timeout)
    }

    /// Stops recording, delivers what is queued within `timeout`, and stops the worker.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), FlushError> {
        self.stop(timeout)
    }

    fn stop(&mut self, timeout: Duration) -> Result<(), FlushError> {
        let Some(worker) = self.worker.take() else {
            return Ok(());
        };
        ACTIVE.store(false, Ordering::Release);
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
        if let Ok(mut slot) = WORKER_THREAD.lock() {
            *slot = None;
        }
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

/// Delivers every span finished so far to the exporters, waiting at most `timeout`.
///
/// Spans still open are not waited for; every span finished before the call is delivered,
/// whichever thread it finished on, idle or busy.
///
/// ```
/// # use census_runtime::{FlushError, MemoryExporter};
/// # use std::time::Duration;
/// assert_eq!(census_runtime::flush(Duration::from_secs(1)), Err(FlushError::NotInstalled));
/// let _census = census_runtime::pipeline().exporter(MemoryExporter::new()).install().unwrap();
/// census_runtime::flush(Duration::from_secs(5)).unwrap();
/// ```
pub fn flush(timeout: Duration) -> Result<(), FlushError> {
    send(timeout, |deadline, done| Command::Flush { deadline, done })
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
    wake_worker();
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

// ---------------------------------------------------------------------------------------------
// The worker.

struct Worker {
    exporters: Vec<Contained>,
    resource: Resource,
    max_batch: usize,
    interval: Duration,
    control: mpsc::Receiver<Command>,
    pending: Vec<SpanRecord>,
    /// Spans the last drain found: many means the threads produce faster than the worker parks.
    drained: usize,
}

/// A drain that finds this many spans keeps the worker awake.
const BUSY_DRAIN: usize = 256;

impl Worker {
    fn run(mut self) {
        let mut last_export = Instant::now();
        let mut last_tick = last_export;
        loop {
            let mut command = self.control.try_recv().ok();
            // Drain after looking for a command: a flush must see every span finished before it
            // was asked for.
            self.drain_queue();
            if command.is_none() {
                command = self.control.try_recv().ok();
                if command.is_some() {
                    self.drain_queue();
                }
            }
            let due = last_export.elapsed() >= self.interval;
            if command.is_some() || due || self.pending.len() >= self.max_batch {
                self.export_pending();
                last_export = Instant::now();
            }
            // Ticks keep their pace under load too, when batches fill before the interval ends.
            if last_tick.elapsed() >= self.interval {
                last_tick = Instant::now();
                for exporter in &mut self.exporters {
                    exporter.tick(last_tick);
                }
            }
            match command {
                Some(Command::Flush { deadline, done }) => {
                    let flushed = self.deliver(deadline, Contained::flush);
                    let _ = done.send(flushed);
                }
                Some(Command::Shutdown { deadline, done }) => {
                    // Spans that finished on other threads while shutting down.
                    self.drain_queue();
                    self.export_pending();
                    let flushed = self.deliver(deadline, Contained::shutdown);
                    let _ = done.send(flushed);
                    return;
                }
                None => {
                    WAKE_REQUESTED.store(false, Ordering::Release);
                    // Under a steady stream of spans keep draining; park only when it runs dry.
                    if self.drained < BUSY_DRAIN {
                        let wait = self.interval.saturating_sub(last_export.elapsed());
                        thread::park_timeout(wait.max(Duration::from_millis(1)));
                    } else {
                        thread::yield_now();
                    }
                }
            }
        }
    }

    /// Flushes (or shuts down) every exporter before `deadline`, each whatever the others did.
    fn deliver(
        &mut self,
        deadline: Instant,
        call: impl Fn(&mut Contained, Instant) -> Result<(), Failed>,
    ) -> Flushed {
        let mut late = false;
        let mut panicked = None;
        for exporter in &mut self.exporters {
            match call(exporter, deadline) {
                Ok(()) => {}
                Err(Failed::Late) => late = true,
                Err(Failed::Panicked) => panicked = panicked.or(Some(exporter.name)),
            }
        }
        if let Some(exporter) = panicked {
            return Flushed::Panicked { exporter };
        }
        if late || Instant::now() > deadline {
            let left = self.exporters.iter().map(Contained::undelivered).sum();
            return Flushed::Late { left };
        }
        Flushed::All
    }

    /// Takes every finished span out of every thread's ring; forgets the rings of threads that
    /// have exited once they are empty.
    fn drain_queue(&mut self) {
        let before = self.pending.len();
        let mut rings = RINGS.lock().unwrap_or_else(|p| p.into_inner());
        for ring in rings.iter_mut() {
            let ready = ring.slots();
            if ready > 0
                && let Ok(chunk) = ring.read_chunk(ready)
            {
                self.pending.extend(chunk);
            }
        }
        rings.retain(|ring| !(ring.is_abandoned() && ring.is_empty()));
        drop(rings);
        if OVERFLOW_LEN.load(Ordering::Acquire) > 0 {
            let mut overflow = OVERFLOW.lock().unwrap_or_else(|p| p.into_inner());
            OVERFLOW_LEN.fetch_sub(overflow.len(), Ordering::AcqRel);
            self.pending.append(&mut overflow);
        }
        self.drained = self.pending.len() - before;
    }

    fn export_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for chunk in self.pending.chunks(self.max_batch) {
            for exporter in &mut self.exporters {
                exporter.export(chunk, &self.resource);
            }
            COUNTERS
                .exported
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Site;

    static SITE: Site = Site::inproc("ring");

    fn record() -> SpanRecord {
        SpanRecord {
            site: &SITE,
            trace_id: TraceId::random(),
            span_id: crate::context::SpanId::random(),
            parent_id: None,
            start: 1,
            end: 2,
            sample_rate: 100.0,
            success: true,
            operation_name: None,
            extra: None,
        }
    }

    #[test]
    fn a_busy_thread_s_ring_grows_instead_of_spilling() {
        let mut local = Local {
            stack: Vec::new(),
            ring: None,
            pushed: 0,
            spare: Vec::new(),
        };
        submit(&mut local, record());
        let first = local.ring.as_ref().map(|r| r.buffer().capacity());
        assert_eq!(first, Some(FIRST_RING));
        let spilled = OVERFLOW_LEN.load(Ordering::Relaxed);
        // No worker drains here: each ring fills until it is found half full and replaced.
        for _ in 0..10_000 {
            submit(&mut local, record());
        }
        let ring = local.ring.as_ref().expect("a ring");
        assert_eq!(ring.buffer().capacity(), MAX_RING);
        assert_eq!(
            OVERFLOW_LEN.load(Ordering::Relaxed),
            spilled,
            "nothing went to the shared overflow"
        );
        // The abandoned rings still hold their spans for the worker.
        let held: usize = RINGS
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.buffer().capacity() < MAX_RING)
            .map(rtrb::Consumer::slots)
            .sum();
        assert_eq!(held + (MAX_RING - ring.slots()), 10_001);
    }
}
