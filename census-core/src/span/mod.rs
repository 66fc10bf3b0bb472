//! Spans: starting and ending them (sync, async, built by hand, detached), the current span,
//! and how a span fails.
//!
//! - `parent.rs`: where a new span belongs and whether it is recorded, decided in one place;
//! - `sync.rs`: [`SpanGuard`], the sync span [`SpanBuilder::start`] makes, and the attributes'
//!   call of a sync function, which the generated code ends itself;
//! - `future.rs`: async spans, current on every poll of their future;
//! - `builder.rs`: [`span`], [`request`], [`SpanBuilder`], [`DetachedSpan`];
//! - `current.rs`: [`current_span`], for what is known only at run time;
//! - `outcome.rs` and `panic.rs`: a span failed by an error or by a panic.

/// The methods that record what is known only at run time, shared by [`CurrentSpan`] and
/// [`DetachedSpan`]; each type supplies `with`, which runs a closure on its record if any. Their
/// examples are made from `$open` (the code that holds the span as `span` from the next line
/// on, a line of its own), `$indent` (that of the lines that use it) and `$close` (the lines
/// that end it).
macro_rules! span_values {
    ($recording:literal, $open:literal, $indent:literal, $close:literal) => {
        #[doc = concat!("Whether ", $recording, ".")]
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "assert!(span.is_recording()); // a pipeline records every trace")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.spans().len(), 1);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn is_recording(&self) -> bool {
            self.with(|r| !r.is_shadow()).unwrap_or(false)
        }

        /// Whether a record takes values here: a recorded span's, or the shadow of a span of a
        /// dropped trace, counted into the standard metrics with its result code and outcome.
        fn takes_values(&self) -> bool {
            self.with(|_| ()).is_some()
        }

        /// Sets the command text: the SQL statement, the URL, the command line.
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.set_data(\"SELECT * FROM orders\");")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.one("load").data(), Some("SELECT * FROM orders"));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn set_data(&self, data: impl Into<Cow<'static, str>>) {
            let data = data.into();
            self.with(|r| r.extra_mut().data = Some(data));
        }

        /// Sets the target (when the attribute leaves it to run time).
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.set_target(\"orders-replica-2\");")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.one("load").target(), Some("orders-replica-2"));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn set_target(&self, target: impl Into<Cow<'static, str>>) {
            let target = target.into();
            self.with(|r| r.extra_mut().target = Some(target));
        }

        /// Renames the operation.
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.set_name(\"load orders\");")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.spans()[0].name(), "load orders");
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn set_name(&self, name: impl Into<Cow<'static, str>>) {
            let name = name.into();
            self.with(|r| r.extra_mut().name = Some(name));
        }

        /// Sets the result code (a status code, an error number).
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.set_result_code(404);")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.one("load").result_code(), Some("404"));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn set_result_code(&self, code: impl Display) {
            if self.takes_values() {
                let code = code.to_string();
                self.with(|r| r.extra_mut().result_code = Some(Cow::Owned(code)));
            }
        }

        /// Adds a custom property. Given again, a key takes the value given last (the item
        /// carries each key once).
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.set_property(\"rows\", 12);")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.one("load").property("rows"), Some("12"));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn set_property(&self, key: impl Into<Cow<'static, str>>, value: impl Display) {
            if self.is_recording() {
                let entry = (key.into(), crate::record::to_value(&value));
                self.with(|r| r.extra_mut().properties.push(entry));
            }
        }

        /// Links the span to another it relates to without being its child (see
        /// [`SpanBuilder::link`](crate::span::SpanBuilder::link)), for a link known only once it
        /// has started.
        ///
        /// ```
        /// use census_runtime::{SpanContext, SpanId, TraceId};
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.add_link(SpanContext::new(TraceId::random(), SpanId::random(), true));")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert!(memory.one("load").property("_MS.links").is_some());
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn add_link(&self, to: SpanContext) {
            if self.is_recording() {
                self.with(|r| crate::record::push_link(&mut r.extra_mut().properties, to));
            }
        }

        /// Sets whether the operation succeeded.
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.set_success(false);")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert!(!memory.one("load").success());
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn set_success(&self, success: bool) {
            self.with(|r| r.set_success(success));
        }

        /// Marks the operation failed, with a message.
        ///
        /// ```
        /// # use census_runtime::export::MemoryExporter;
        /// # let memory = MemoryExporter::new();
        /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
        #[doc = $open]
        #[doc = concat!($indent, "span.fail(\"the cache was cold\");")]
        #[doc = $close]
        /// # census.flush(std::time::Duration::from_secs(5))?;
        /// assert_eq!(memory.one("load").error_message(), Some("the cache was cold"));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn fail(&self, message: impl Display) {
            if self.takes_values() {
                let message = message.to_string();
                self.with(|r| r.fail(Cow::Borrowed("error"), Some(message)));
            }
        }
    };
}

/// Marks the branch that calls it as rarely taken, so that the compiler tests the others first
/// and keeps this one out of their way (what `std::hint::cold_path` does from Rust 1.95).
#[cold]
#[inline(always)]
fn cold_path() {}

mod builder;
mod current;
mod future;
mod outcome;
mod panic;
mod parent;
mod sync;

#[cfg(feature = "tracing")]
pub(crate) use self::builder::NotStarted;
#[cfg(feature = "tracing")]
pub(crate) use self::builder::with_extra;
pub use self::builder::{DetachedSpan, Instrumented, SpanBuilder, request, span};
pub use self::current::{CurrentSpan, current_span};
#[doc(hidden)]
pub use self::future::{AsyncSpan, Judge, Outcome, SiteOf, Traced};
pub(crate) use self::outcome::set_errors_as_exceptions;
pub(crate) use self::panic::{install_hook as install_panic_hook, payload_message};
#[cfg(feature = "tracing")]
pub(crate) use self::parent::Planned;
pub use self::sync::{Call, SpanGuard};
pub use crate::telemetry::EventBuilder;
