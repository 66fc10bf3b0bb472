//! A panic's backtrace: captured by census's panic hook when backtraces are on (`RUST_BACKTRACE`
//! or `RUST_LIB_BACKTRACE`, as `std` reads them, or
//! [`PipelineBuilder::panic_backtraces`](crate::pipeline::PipelineBuilder::panic_backtraces)),
//! and only when a recorded span is on the panicking thread's stack. Capturing walks the stack;
//! resolving it to names, files and lines, the slow part, is left to the exporter, on its own
//! thread, through the `Display` of `std`'s [`Backtrace`], which is parsed into frames here.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a backtrace is captured at every panic, whatever the environment says.
static FORCE: AtomicBool = AtomicBool::new(false);

/// Captures backtraces at every panic (`true`), or as `RUST_BACKTRACE` says (`false`).
pub(crate) fn set_forced(on: bool) {
    FORCE.store(on, Ordering::Relaxed);
}

/// A backtrace taken where a panic started. Clones share it, and it is resolved once.
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # std::panic::set_hook(Box::new(|_| {}));
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline()
///     .panic_backtraces(true)
///     .exporter(memory.clone())
///     .install()?;
/// let _ = std::panic::catch_unwind(|| census_runtime::span("risky").in_scope(|| panic!("no")));
/// census.flush(std::time::Duration::from_secs(5))?;
/// let exception = memory.spans()[0].exception().cloned().unwrap();
/// let frames = exception.backtrace.unwrap().frames();
/// // The first frame is where the panic started, in the closure given to `in_scope`.
/// assert!(frames[0].method.contains("{{closure}}"), "{frames:#?}");
/// assert_eq!(frames[0].level, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PanicBacktrace(Arc<Backtrace>);

/// One frame of a [`PanicBacktrace`]: an Application Insights `parsedStack` entry.
///
/// ```
/// use census_runtime::export::{PanicBacktrace, StackFrame};
///
/// /// A backtrace as `at method (file:line)` lines, as a stack trace is printed.
/// fn lines(backtrace: &PanicBacktrace) -> Vec<String> {
///     backtrace
///         .frames()
///         .iter()
///         .map(|StackFrame { method, file, line, .. }| match (file, line) {
///             (Some(file), Some(line)) => format!("at {method} ({file}:{line})"),
///             _ => format!("at {method}"),
///         })
///         .collect()
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFrame {
    /// Its depth: 0 where the panic started, counting outwards.
    pub level: usize,
    /// The function, demangled (`orders::price::{{closure}}`); `<unknown>` when not resolved.
    pub method: String,
    /// The source file, when known.
    pub file: Option<String>,
    /// The line in it, when known.
    pub line: Option<u32>,
}

impl PanicBacktrace {
    /// A backtrace of the calling thread, when backtraces are on.
    pub(crate) fn capture() -> Option<PanicBacktrace> {
        let backtrace = if FORCE.load(Ordering::Relaxed) {
            Backtrace::force_capture()
        } else {
            Backtrace::capture()
        };
        (backtrace.status() == BacktraceStatus::Captured)
            .then(|| PanicBacktrace(Arc::new(backtrace)))
    }

    /// The frames from where the panic started outwards: `std`'s panic machinery before it and
    /// the runtime's start-up after `main` are left out. Resolves the backtrace the first time.
    ///
    /// ```
    /// use census_runtime::export::SpanRecord;
    ///
    /// /// Where a span's panic started: the innermost frame's function.
    /// fn panicked_in(span: &SpanRecord) -> Option<String> {
    ///     let backtrace = span.exception()?.backtrace.as_ref()?;
    ///     backtrace.frames().first().map(|frame| frame.method.clone())
    /// }
    /// ```
    pub fn frames(&self) -> Vec<StackFrame> {
        parse(&self.0.to_string())
    }
}

impl fmt::Debug for PanicBacktrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PanicBacktrace(..)")
    }
}

/// The same capture, not an equal-looking one: resolving two backtraces to compare them would
/// cost more than it tells.
impl PartialEq for PanicBacktrace {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PanicBacktrace {}

/// Frames of `std`'s panic machinery, after the one where the panic entered it.
fn is_panic_machinery(method: &str) -> bool {
    method.starts_with("std::panicking::")
        || method.starts_with("core::panicking::")
        || method.starts_with("std::sys::backtrace::__rust_end_short_backtrace")
}

/// Where the frames of a backtrace taken in a panic hook (census's hook, the hooks it chains,
/// `std`'s machinery) end and the panicking code's begin; for one taken elsewhere, the first
/// frame after the capture itself.
fn first_frame_of_interest(frames: &[StackFrame]) -> usize {
    let entered = frames.iter().position(|frame| {
        frame.method.ends_with("rust_begin_unwind")
            || frame.method.starts_with("std::panicking::begin_panic")
    });
    match entered {
        Some(entered) => {
            let mut start = entered + 1;
            while frames
                .get(start)
                .is_some_and(|frame| is_panic_machinery(&frame.method))
            {
                start += 1;
            }
            start
        }
        None => frames
            .iter()
            .take_while(|frame| {
                frame.method.starts_with("std::backtrace::")
                    || frame.method.starts_with(concat!(
                        env!("CARGO_CRATE_NAME"),
                        "::backtrace::PanicBacktrace::capture"
                    ))
            })
            .count(),
    }
}

/// Parses `std`'s `Display` of a captured backtrace:
///
/// ```text
///    0: orders::price
///              at ./src/orders.rs:12:9
///    1: __rust_try
/// ```
pub(crate) fn parse(text: &str) -> Vec<StackFrame> {
    let mut frames: Vec<StackFrame> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(location) = trimmed.strip_prefix("at ") {
            if let Some(frame) = frames.last_mut()
                && frame.file.is_none()
            {
                let (file, line) = split_location(location);
                frame.file = Some(file.to_owned());
                frame.line = line;
            }
            continue;
        }
        let Some((index, method)) = trimmed.split_once(": ") else {
            continue;
        };
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        frames.push(StackFrame {
            level: 0,
            method: method.trim().to_owned(),
            file: None,
            line: None,
        });
    }
    // From where the panicking code called into `std`'s panic machinery ...
    let start = first_frame_of_interest(&frames);
    // ... to where the runtime started the thread's code.
    let end = frames
        .iter()
        .position(|frame| {
            frame
                .method
                .starts_with("std::sys::backtrace::__rust_begin_short_backtrace")
        })
        .filter(|end| *end >= start)
        .unwrap_or(frames.len());
    let mut frames: Vec<StackFrame> = frames.drain(start..end).collect();
    for (level, frame) in frames.iter_mut().enumerate() {
        frame.level = level;
    }
    frames
}

/// `file:line:column` (or `file:line`) to the file and the line.
fn split_location(location: &str) -> (&str, Option<u32>) {
    let numeric = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let mut parts = location.rsplitn(3, ':');
    let last = parts.next().unwrap_or_default();
    let middle = parts.next();
    let rest = parts.next();
    match (middle, rest) {
        (Some(line), Some(file)) if numeric(line) && numeric(last) => (file, line.parse().ok()),
        (Some(_), _) if numeric(last) => {
            let (file, line) = location.rsplit_once(':').unwrap_or((location, ""));
            (file, line.parse().ok())
        }
        _ => (location, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = "   0: census_core::span::panic::note
             at ./census-core/src/span/panic.rs:170:20
   1: std::panicking::panic_with_hook
             at /rustc/x/library/std/src/panicking.rs:833:13
   2: __rustc::rust_begin_unwind
             at /rustc/x/library/std/src/panicking.rs:689:5
   3: core::panicking::panic_fmt
             at /rustc/x/library/core/src/panicking.rs:80:14
   4: core::panicking::panic_bounds_check
             at /rustc/x/library/core/src/panicking.rs:271:5
   5: <usize as core::slice::index::SliceIndex<[T]>>::index
             at /rustc/x/library/core/src/slice/index.rs:272:10
   6: orders::price::{{closure}}
             at ./src/orders.rs:6:69
   7: __rust_try
   8: orders::main
             at ./src/main.rs:6:13
   9: std::sys::backtrace::__rust_begin_short_backtrace
             at /rustc/x/library/std/src/sys/backtrace.rs:166:18
  10: std::rt::lang_start::{{closure}}
             at /rustc/x/library/std/src/rt.rs:206:18
";

    #[test]
    fn frames_start_where_the_panic_did_and_stop_at_the_runtime() {
        let frames = parse(HOOK);
        let methods: Vec<&str> = frames.iter().map(|f| f.method.as_str()).collect();
        assert_eq!(
            methods,
            [
                "<usize as core::slice::index::SliceIndex<[T]>>::index",
                "orders::price::{{closure}}",
                "__rust_try",
                "orders::main"
            ]
        );
        assert_eq!(
            frames[1],
            StackFrame {
                level: 1,
                method: "orders::price::{{closure}}".into(),
                file: Some("./src/orders.rs".into()),
                line: Some(6),
            }
        );
        assert_eq!((frames[2].file.as_deref(), frames[2].line), (None, None));
        assert_eq!(frames[3].level, 3);
    }

    #[test]
    fn a_panic_with_any_payload_starts_at_its_caller() {
        let text = "   0: census_core::span::panic::note
   1: std::panicking::rust_panic_with_hook
   2: std::panicking::begin_panic::{{closure}}
   3: std::sys::backtrace::__rust_end_short_backtrace
   4: std::panicking::begin_panic
   5: orders::main
   6: census_core::span::builder::SpanBuilder::in_scope
";
        let methods: Vec<String> = parse(text).into_iter().map(|f| f.method).collect();
        assert_eq!(
            methods,
            [
                "orders::main",
                "census_core::span::builder::SpanBuilder::in_scope"
            ]
        );
    }

    #[test]
    fn locations_of_every_form() {
        assert_eq!(split_location("./a.rs:12:9"), ("./a.rs", Some(12)));
        assert_eq!(
            split_location("C:\\src\\a.rs:12:9"),
            ("C:\\src\\a.rs", Some(12))
        );
        assert_eq!(split_location("./a.rs:12"), ("./a.rs", Some(12)));
        assert_eq!(split_location("./a.rs"), ("./a.rs", None));
        assert_eq!(split_location(""), ("", None));
    }

    #[test]
    fn anything_else_parses_to_what_it_can_without_a_panic() {
        assert!(parse("disabled backtrace").is_empty());
        assert!(parse("").is_empty());
        assert_eq!(parse("  0: only\n  x: not a frame\n at nowhere").len(), 1);
    }

    #[test]
    fn a_real_backtrace_names_this_test() {
        set_forced(true);
        let captured = PanicBacktrace::capture().expect("forced");
        set_forced(false);
        let frames = captured.frames();
        assert!(
            frames
                .iter()
                .any(|f| f.method.contains("a_real_backtrace_names_this_test")),
            "{frames:#?}"
        );
    }
}
