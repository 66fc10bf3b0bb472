//! How a span fails: an error's type as its result code, a panic described for every span it
//! unwinds through.

use std::any::Any;
use std::borrow::Cow;

use super::panic;
use crate::record::SpanRecord;

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
    if full
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    {
        return Cow::Borrowed(full.rsplit("::").next().unwrap_or(full));
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
        if !(c.is_alphanumeric() || c == '_') {
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
