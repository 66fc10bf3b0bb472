//! [`log`] records as Application Insights `Message` telemetry (feature `log`), each tied to the
//! span it was written in.
//!
//! `log` has one global logger: [`LogBridge`] is it, and passes every record on to the logger an
//! application already had (`env_logger`, `simplelog`, ...), so that it keeps printing.
//!
//! ```
//! use census_runtime::export::MemoryExporter;
//! use census_runtime::integrations::log::LogBridge;
//! use std::time::Duration;
//!
//! LogBridge::new().level(log::LevelFilter::Info).install()?;
//! let memory = MemoryExporter::new();
//! let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
//!
//! census_runtime::span("checkout").in_scope(|| log::info!(sku = "caviar"; "order {} placed", 7));
//! census.flush(Duration::from_secs(5))?;
//!
//! let record = &memory.logs()[0];
//! assert_eq!(record.message(), "order 7 placed");
//! assert_eq!(record.property("sku"), Some("caviar"));
//! assert_eq!(record.parent_id(), Some(memory.one("checkout").span_id()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each record becomes a `Message` with `severityLevel` from its level (trace and debug 0, info
//! 1, warn 2, error 3), its target, module, file and line, and its key-values (`log`'s `kv`) as
//! properties. A record that carries an error among its key-values (`log::error!(err:err = e;
//! "charge failed")`, `log`'s feature `kv_std`, which this feature turns on) becomes an
//! `Exception` instead, with the error and its `source()`s, outermost first. Written inside a
//! span, a record carries the span's operation id, its id as parent and the operation's name;
//! inside a trace the sampler dropped, it is dropped with it; outside any span it carries no
//! operation. [`LogBridge::filter`] chooses records by target, in `RUST_LOG`'s syntax
//! (`"info,sqlx=warn"`). census's own warnings (targets under `census_core`, and
//! anything logged on census's own threads, such as the HTTP client's) are passed on but never
//! become telemetry: a failing endpoint cannot feed itself.

use std::borrow::Cow;
use std::fmt;

use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};

use crate::record::{Correlation, ErrorDetail, LogRecord, Severity, Source};
use crate::telemetry;
use crate::text::Text;

/// The `log` logger that turns records into telemetry and passes them on; see the
/// [module](self).
///
/// ```
/// use census_runtime::integrations::log::LogBridge;
///
/// // Info and above to Application Insights; everything the application's own logger wants on.
/// LogBridge::new()
///     .filter("info,hyper=warn")?
///     .install()?;
/// log::info!("ready");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LogBridge {
    recorded: Recorded,
    forward: Option<Box<dyn Log>>,
    forward_level: LevelFilter,
}

impl fmt::Debug for LogBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBridge")
            .field("recorded", &self.recorded)
            .field("forwards", &self.forward.is_some())
            .finish()
    }
}

/// Which records become telemetry: those up to a level ([`LogBridge::level`]), or as a filter
/// by target says ([`LogBridge::filter`]); the last of the two given.
#[derive(Debug)]
enum Recorded {
    UpTo(LevelFilter),
    ByTarget(env_filter::Filter),
}

/// A [`LogBridge::filter`] that could not be read: which directives, and what is wrong.
///
/// ```
/// use census_runtime::integrations::log::LogBridge;
/// let error = LogBridge::new().filter("info,sqlx=loud").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "invalid log filter \"info,sqlx=loud\": error parsing logger filter: invalid logging spec 'loud'"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    directives: String,
    reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid log filter {:?}: {}",
            self.directives, self.reason
        )
    }
}

impl std::error::Error for FilterError {}

impl Default for LogBridge {
    fn default() -> Self {
        LogBridge::new()
    }
}

impl LogBridge {
    /// A bridge that records `Info` and above and passes nothing on.
    ///
    /// ```
    /// use census_runtime::integrations::log::LogBridge;
    ///
    /// LogBridge::new().install()?;
    /// assert_eq!(log::max_level(), log::LevelFilter::Info);
    /// # Ok::<(), log::SetLoggerError>(())
    /// ```
    pub fn new() -> Self {
        LogBridge {
            recorded: Recorded::UpTo(LevelFilter::Info),
            forward: None,
            forward_level: LevelFilter::Off,
        }
    }

    /// The most verbose level that becomes telemetry (default `Info`). Each exporter may keep
    /// less: `min_severity` on the console and Azure exporters.
    ///
    /// ```
    /// use census_runtime::integrations::log::LogBridge;
    ///
    /// LogBridge::new().level(log::LevelFilter::Warn).install()?;
    /// assert_eq!(log::max_level(), log::LevelFilter::Warn);
    /// # Ok::<(), log::SetLoggerError>(())
    /// ```
    pub fn level(mut self, level: LevelFilter) -> Self {
        self.recorded = Recorded::UpTo(level);
        self
    }

    /// Which records become telemetry, by target, in `RUST_LOG`'s syntax (`env_logger`'s,
    /// read by its parser, `env_filter`): `"info,sqlx=warn,hyper=off"` records `Info` and
    /// above, but only the warnings and errors of `sqlx` and its modules and nothing of
    /// `hyper`'s. A target no directive names is left out unless a level is given alone, as in
    /// `RUST_LOG`. In place of [`level`](Self::level) (the last of the two given applies);
    /// what is passed on to another logger is its own filter's business.
    ///
    /// A directive that is not one (`sqlx=loud`) is an error that names it; a message filter
    /// (`/pattern`) is one too, since records are chosen by target and level only.
    ///
    /// ```
    /// use census_runtime::integrations::log::LogBridge;
    /// let bridge = LogBridge::new().filter("info,sqlx=warn,hyper=off")?;
    /// # let _ = bridge;
    /// let error = LogBridge::new().filter("info,sqlx=loud").unwrap_err();
    /// assert!(error.to_string().contains("loud"), "{error}");
    /// # Ok::<(), census_runtime::integrations::log::FilterError>(())
    /// ```
    pub fn filter(mut self, directives: &str) -> Result<Self, FilterError> {
        let error = |reason: String| FilterError {
            directives: directives.to_owned(),
            reason,
        };
        if directives.contains('/') {
            return Err(error(
                "a message filter (`/...`) is not supported: records are chosen by target and \
                 level"
                    .to_owned(),
            ));
        }
        let mut builder = env_filter::Builder::new();
        builder
            .try_parse(directives)
            .map_err(|parse| error(parse.to_string()))?;
        self.recorded = Recorded::ByTarget(builder.build());
        Ok(self)
    }

    /// Passes every record on to `logger` too (the one the application had), up to `level`:
    /// `env_logger`'s own filter is then applied by it.
    ///
    /// ```no_run
    /// # struct EnvLogger;
    /// # impl log::Log for EnvLogger {
    /// #     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
    /// #     fn log(&self, _: &log::Record<'_>) {}
    /// #     fn flush(&self) {}
    /// # }
    /// use census_runtime::integrations::log::LogBridge;
    /// LogBridge::new()
    ///     .forward_to(EnvLogger, log::LevelFilter::Debug)
    ///     .install()?;
    /// # Ok::<(), log::SetLoggerError>(())
    /// ```
    pub fn forward_to(mut self, logger: impl Log + 'static, level: LevelFilter) -> Self {
        self.forward = Some(Box::new(logger));
        self.forward_level = level;
        self
    }

    /// Makes this the process's logger (`log` allows one, once), and sets `log`'s maximum level
    /// to the more verbose of the two levels.
    ///
    /// ```
    /// use census_runtime::integrations::log::LogBridge;
    ///
    /// LogBridge::new().install()?;
    /// // `log` takes one logger per process, once.
    /// assert!(LogBridge::new().install().is_err());
    /// # Ok::<(), log::SetLoggerError>(())
    /// ```
    pub fn install(self) -> Result<(), SetLoggerError> {
        let recorded = match &self.recorded {
            Recorded::UpTo(level) => *level,
            Recorded::ByTarget(filter) => filter.filter(),
        };
        let max = recorded.max(self.forward_level);
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(max);
        Ok(())
    }

    fn records(&self, metadata: &Metadata<'_>) -> bool {
        let wanted = match &self.recorded {
            Recorded::UpTo(level) => metadata.level() <= *level,
            Recorded::ByTarget(filter) => by_target(filter, metadata),
        };
        wanted && !telemetry::is_census(metadata.target())
    }
}

/// Whether `filter` records what `metadata` describes. Out of line: inlined, the directives'
/// walk made every record's call slower, filter or not (`log::info!` 77-81 against 91-98 ns,
/// alternating runs).
#[inline(never)]
fn by_target(filter: &env_filter::Filter, metadata: &Metadata<'_>) -> bool {
    filter.enabled(metadata)
}

/// A `log` level as an Application Insights severity.
pub(crate) fn severity(level: log::Level) -> Severity {
    match level {
        log::Level::Error => Severity::Error,
        log::Level::Warn => Severity::Warning,
        log::Level::Info => Severity::Information,
        log::Level::Debug | log::Level::Trace => Severity::Verbose,
    }
}

impl Log for LogBridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.records(metadata)
            || self
                .forward
                .as_ref()
                .is_some_and(|forward| forward.enabled(metadata))
    }

    fn log(&self, record: &Record<'_>) {
        if let Some(forward) = &self.forward
            && record.level() <= self.forward_level
            && forward.enabled(record.metadata())
        {
            forward.log(record);
        }
        if !self.records(record.metadata()) {
            return;
        }
        // Inside a dropped trace, or on census's own threads: nothing to format.
        let Some(Correlation {
            trace_id,
            parent_id,
            mut operation_name,
            sample_rate,
        }) = telemetry::correlation()
        else {
            return;
        };
        let mut source = Source {
            // The same text, most often: `log`'s macros give the module's path as both, and a
            // crate's equal literals are one (compared by address first: comparing the bytes
            // called `memcmp`, 5 % of the call in a profile).
            target: match record.module_path_static() {
                Some(module)
                    if std::ptr::eq(module, record.target()) || module == record.target() =>
                {
                    Cow::Borrowed(module)
                }
                _ => Cow::Owned(record.target().to_owned()),
            },
            module_path: record.module_path_static(),
            file: record.file_static(),
            line: record.line(),
        };
        // The record is made in its ring slot with an empty message, which is formatted there.
        // The closures borrow what they move into it: moved into them, it would be copied
        // once more on the way to the slot.
        telemetry::emit_log(
            || {
                LogRecord::new(
                    severity(record.level()),
                    Text::new(),
                    // Rebuilt field by field: copied whole, the correlation just returned
                    // would be read back in wider loads than the stores that wrote it, which
                    // the processor cannot forward (a stall of a sixth of the call).
                    Correlation {
                        trace_id,
                        parent_id,
                        operation_name: operation_name.take(),
                        sample_rate,
                    },
                    std::mem::take(&mut source),
                )
            },
            // A value whose formatting panics panics here, as in any logger (a guard around the
            // formatting, as the `tracing` layer has, cost 5 of the call's 79 ns).
            |log| {
                log.message_mut().append(*record.args());
                // Counted first: most records carry no key-values, and the count of none is a
                // call that stores nothing, where the visit saves six registers, its stores
                // waiting behind the record's. `log`'s macros give a source that counts
                // without visiting; one that does not is visited twice (`Source::count`'s
                // default visits it).
                let key_values = record.key_values();
                if key_values.count() > 0 {
                    let _ = key_values.visit(&mut Properties(log));
                }
            },
        );
    }

    fn flush(&self) {
        if let Some(forward) = &self.forward {
            forward.flush();
        }
    }
}

/// Collects a record's key-values as properties.
struct Properties<'a>(&'a mut LogRecord);

impl<'kvs> log::kv::VisitSource<'kvs> for Properties<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        // An error (`log::error!(err:err = e; ...)`): the record becomes an Exception, with
        // the error's chain; the first error a record carries is its.
        if let Some(error) = value.to_borrowed_error()
            && self.0.errors().is_empty()
        {
            self.0.set_errors(ErrorDetail::chain(error).collect());
            return Ok(());
        }
        // `log` lends a key for the record's call only. The keys are the names a program's
        // macros give, few and reused: interned, a key is no allocation (past the table's
        // bound, a copy).
        let key = crate::record::interned_or_owned(key.as_str());
        self.0.new_property(key).append(format_args!("{value}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_severities() {
        assert_eq!(severity(log::Level::Trace), Severity::Verbose);
        assert_eq!(severity(log::Level::Debug), Severity::Verbose);
        assert_eq!(severity(log::Level::Info), Severity::Information);
        assert_eq!(severity(log::Level::Warn), Severity::Warning);
        assert_eq!(severity(log::Level::Error), Severity::Error);
    }
}
