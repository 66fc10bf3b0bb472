//! What the database tests share: the servers' URLs, and checks on the spans and envelopes.

use census_runtime::export::SpanRecord;
use serde_json::Value;

/// The URL of a database server `scripts/services` started, from `var`
/// (`CENSUS_TEST_POSTGRES_URL`, `CENSUS_TEST_MYSQL_URL`, `CENSUS_TEST_MONGODB_URL`).
///
/// # Panics
///
/// When the variable is unset: these tests need the servers and are never skipped.
pub fn server_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{var} is not set: run the tests with scripts/test, which starts the database \
             servers, or start them with `scripts/services start` and source the env file it \
             writes (DIR/env) before `cargo nextest run`"
        ),
    }
}

/// A name unique to this test process, for tables that tests running at once must not share.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", std::process::id())
}

/// Asserts that `child` is a child of `parent`, in its trace.
pub fn assert_child_of(child: &SpanRecord, parent: &SpanRecord) {
    assert_eq!(
        child.trace_id(),
        parent.trace_id(),
        "{} shares the trace of {}",
        child.name(),
        parent.name()
    );
    assert_eq!(
        child.parent_id(),
        Some(parent.span_id()),
        "{} ({:?}) is a child of {}",
        child.name(),
        child.data(),
        parent.name()
    );
}

/// The spans of one kind (`postgresql`, ...), in the order they started.
pub fn of_kind(spans: &[SpanRecord], kind: &str) -> Vec<SpanRecord> {
    let mut out: Vec<SpanRecord> = spans.iter().filter(|s| s.kind() == kind).cloned().collect();
    out.sort_by_key(SpanRecord::start_time);
    out
}

/// The one span whose data is `data`.
pub fn with_data<'a>(spans: &'a [SpanRecord], data: &str) -> &'a SpanRecord {
    let found: Vec<&SpanRecord> = spans.iter().filter(|s| s.data() == Some(data)).collect();
    assert_eq!(
        found.len(),
        1,
        "one span with data {data:?} among {:#?}",
        spans
            .iter()
            .map(|s| (s.name(), s.data()))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// The envelope whose `baseData.data` is `data`.
pub fn envelope_with_data<'a>(envelopes: &'a [Value], data: &str) -> &'a Value {
    envelopes
        .iter()
        .find(|e| e["data"]["baseData"]["data"] == data)
        .unwrap_or_else(|| panic!("no envelope with data {data:?}"))
}

/// Asserts that `needle` appears nowhere in `bytes` (a request body as sent).
pub fn assert_absent(bytes: &[u8], needle: &str) {
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "{needle:?} was sent: {}",
        String::from_utf8_lossy(bytes)
    );
}

/// "name:success" of each span of `kind` (`sqlite`, `mysql`, ...) whose parent is `parent`, in
/// the order they started.
pub fn outcomes_under(spans: &[SpanRecord], kind: &str, parent: &SpanRecord) -> Vec<String> {
    of_kind(spans, kind)
        .into_iter()
        .filter(|s| s.parent_id() == Some(parent.span_id()))
        .map(|s| format!("{}:{}", s.name(), s.success()))
        .collect()
}

/// An envelope's `data.baseData`.
pub fn base(envelope: &Value) -> &Value {
    &envelope["data"]["baseData"]
}

/// The envelope whose `baseData.id` is `id`.
pub fn envelope_by_id<'a>(envelopes: &'a [Value], id: &Value) -> &'a Value {
    envelopes
        .iter()
        .find(|e| base(e)["id"] == *id)
        .unwrap_or_else(|| panic!("no envelope with id {id}"))
}

/// What every database test checks of the envelopes sent while a `#[dependency(kind = "SQL",
/// target = "orders-db")]` repository called the driver: each of the `driver` envelopes is a
/// child of a repository method, the driver call made after a failure (`after_failure`) is a
/// child of `Orders::after_failure`, and no request body holds `secret` (a bound value).
pub fn assert_nested_under_repository<'a>(
    envelopes: &[Value],
    driver: impl IntoIterator<Item = &'a Value>,
    after_failure: &Value,
    bodies: impl IntoIterator<Item = &'a [u8]>,
    secret: &str,
) {
    let parent_of =
        |envelope: &Value| envelope_by_id(envelopes, &envelope["tags"]["ai.operation.parentId"]);
    for envelope in driver {
        let parent = base(parent_of(envelope));
        assert_eq!(
            (&parent["type"], &parent["target"]),
            (&Value::from("SQL"), &Value::from("orders-db")),
            "{envelope:#}"
        );
        assert!(
            parent["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Orders::"),
            "{envelope:#}"
        );
    }
    assert_eq!(
        base(parent_of(after_failure))["name"],
        "Orders::after_failure"
    );
    for body in bodies {
        assert_absent(body, secret);
    }
}
