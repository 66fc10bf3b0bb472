//! How a span fails: an error's type as its result code, a panic described for every span it
//! unwinds through.

use std::any::Any;
use std::borrow::Cow;
use std::error::Error;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

use super::panic;
use crate::record::{ErrorDetail, SpanRecord, is_path_byte};
use crate::site::Site;

/// Whether every `Err` that fails a span is sent as an Exception item too.
static ERRORS_AS_EXCEPTIONS: AtomicBool = AtomicBool::new(false);

/// Sends every `Err` that fails a span as an Exception item too (`true`), or only those of
/// sites with the `exception` option (`false`).
pub(crate) fn set_errors_as_exceptions(on: bool) {
    ERRORS_AS_EXCEPTIONS.store(on, Ordering::Relaxed);
}

/// Marks `record` failed by an error value: its `Display` becomes the message and `code` (the
/// error's type, unless a result code was set) the result code. When the site or the pipeline
/// asks for it, the error and its `source()`s (when it is a `std::error::Error`) are kept for an
/// Exception item.
#[cold]
pub(crate) fn fail_with_error(
    record: &mut SpanRecord,
    error: &dyn Display,
    chain: Option<&(dyn Error + 'static)>,
    code: &'static str,
) {
    Failed::read(record.site(), error, chain, code).mark(record);
}

/// What an error value says of the span it fails, read off it before the record is at hand
/// ([`Failed::mark`]): reading it runs the application's `Display` code, which may itself log
/// or make spans, and a record on the thread's stack is at hand only while that stack is
/// borrowed, which they need too.
pub(crate) struct Failed {
    type_name: Cow<'static, str>,
    message: String,
    /// The error and its `source()`s, outermost first, when an Exception item is sent.
    errors: Option<Vec<ErrorDetail>>,
}

impl Failed {
    /// Reads `error` (and its `chain`, when the span of `site` sends an Exception item).
    #[cold]
    pub(crate) fn read(
        site: &'static Site,
        error: &dyn Display,
        chain: Option<&(dyn Error + 'static)>,
        code: &'static str,
    ) -> Failed {
        let type_name = short_type_name(code);
        let message = error.to_string();
        let errors =
            (site.exception() || ERRORS_AS_EXCEPTIONS.load(Ordering::Relaxed)).then(|| {
                let mut errors = vec![ErrorDetail {
                    type_name: type_name.clone().into_owned(),
                    message: message.clone(),
                }];
                // A loop, not `ErrorDetail::chain`'s iterator, whose adapters would be in every
                // binary (1.3 KB more in the 500-function one of `benches/compile-cost.sh`).
                let mut source = chain.and_then(Error::source);
                while let Some(error) = source {
                    errors.push(ErrorDetail::of(error));
                    source = error.source();
                }
                errors
            });
        Failed {
            type_name,
            message,
            errors,
        }
    }

    /// Marks `record` failed as read.
    #[cold]
    pub(crate) fn mark(self, record: &mut SpanRecord) {
        if let Some(errors) = self.errors {
            record.extra_mut().failure_mut().errors = errors;
        }
        record.fail(self.type_name, Some(self.message));
    }
}

/// Whether `c` may be part of an identifier in a type's name. Rust's punctuation is ASCII, so
/// any other character is one of an identifier's (and the Unicode tables of
/// `char::is_alphanumeric`, 1.8 KiB, stay out of every instrumented program).
fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

/// Marks `record` failed by the panic whose payload was caught unwinding through it.
#[cold]
pub(super) fn fail_with_payload(record: &mut SpanRecord, payload: &(dyn Any + Send)) {
    let info = panic::describe_caught(record.span_id(), record.parent_id(), payload);
    record.fail_with_panic(info);
}

/// Marks `record` failed by the panic unwinding through it, unless its payload was caught and
/// described already.
#[cold]
pub(super) fn fail_on_panic(record: &mut SpanRecord) {
    if record.exception().is_none() {
        let info = panic::describe_uncaught(record.span_id());
        record.fail_with_panic(info);
    }
}

/// `std::any::type_name` without the module paths, in every path of the name:
/// `std::io::error::Error` -> `Error`, `alloc::boxed::Box<dyn core::error::Error>` ->
/// `Box<dyn Error>`, `core::result::Result<alloc::vec::Vec<my::Thing>, std::io::error::Error>`
/// -> `Result<Vec<Thing>, Error>`.
pub(crate) fn short_type_name(full: &'static str) -> Cow<'static, str> {
    // The common case, a path with no generic arguments, borrows its last segment.
    if full.bytes().all(is_path_byte) {
        // After the last `:`: a byte search, not a substring's (whose searcher's code would be
        // in every binary).
        return Cow::Borrowed(full.rfind(':').map_or(full, |at| &full[at + 1..]));
    }
    let mut short = String::with_capacity(full.len());
    // Where the path segment being copied starts in `short`: a `::` after it drops it.
    let mut segment = 0;
    let mut rest = full;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("::") {
            short.truncate(segment);
            rest = after;
            continue;
        }
        short.push(c);
        if !is_identifier_char(c) {
            segment = short.len();
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(short)
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(short_type_name("std::io::error::Error"), "Error");
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(short_type_name("u32"), "u32");
        assert_eq!(
            short_type_name("alloc::boxed::Box<dyn core::error::Error>"),
            "Box<dyn Error>"
        );
        assert_eq!(
            short_type_name(
                "core::result::Result<alloc::vec::Vec<my_app::Thing>, std::io::error::Error>"
            ),
            "Result<Vec<Thing>, Error>"
        );
        assert_eq!(
            short_type_name("alloc::boxed::Box<dyn core::error::Error + core::marker::Send>"),
            "Box<dyn Error + Send>"
        );
        assert_eq!(
            short_type_name("(u8, [my_app::Código; 4], &str)"),
            "(u8, [Código; 4], &str)"
        );
    }
}
