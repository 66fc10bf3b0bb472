//! Helpers for the Azure exporter's end-to-end tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use census_runtime::azure::AzureExporter;
use census_runtime::azure::AzureExporterBuilder;
use serde_json::Value;

use crate::ingestion::IngestionServer;

/// Settings that make the exporter quick to test: short send interval and backoff, storage in
/// `storage`.
pub fn settings(server: &IngestionServer, storage: &Path) -> AzureExporterBuilder {
    AzureExporter::builder()
        .connection_string(server.connection_string())
        // The standard metrics add Metric items at every flush: their own tests turn them on.
        .standard_metrics(false)
        .storage_dir(storage)
        .send_interval(Duration::from_millis(50))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .timeout(Duration::from_secs(5))
}

/// A pipeline exporting to `server` with [`settings`], its storage in the scratch directory
/// `name`, and nothing else set.
pub fn install_azure(server: &IngestionServer, name: &str) -> census_runtime::pipeline::Pipeline {
    census_runtime::pipeline()
        .exporter(
            settings(server, &scratch_dir(name))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .expect("the pipeline installs")
}

/// A fresh, empty directory under the system's temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("census-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Every file under `dir`, recursively, with its name.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The stored batches (`.blob` files, leased or not) under `dir`.
pub fn stored_batches(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.contains(".blob"))
        })
        .collect()
}

/// Runs `n` spans named `{prefix}-{i}`, each its own trace.
pub fn spans(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            census_runtime::span(name.clone()).in_scope(|| {});
            name
        })
        .collect()
}

/// What envelopes of one kind look like: every key path with the JSON types found there.
///
/// Paths join object keys with `.` (tag names keep their own dots: `tags.ai.operation.id`),
/// array elements are `[]`, and the custom properties collapse to `data.baseData.properties.*`.
#[derive(Debug, Default, Clone)]
pub struct KindShape {
    /// How many envelopes.
    pub count: usize,
    /// Every path, with the JSON types seen there.
    pub paths: BTreeMap<String, BTreeSet<&'static str>>,
    /// The paths present in every envelope.
    pub always: BTreeSet<String>,
    /// The orders of the top-level keys.
    pub top_orders: BTreeSet<Vec<String>>,
}

/// Groups envelopes by `name` and describes each group's shape.
pub fn shapes(envelopes: &[Value]) -> BTreeMap<String, KindShape> {
    let mut out: BTreeMap<String, KindShape> = BTreeMap::new();
    for envelope in envelopes {
        let name = envelope["name"].as_str().unwrap_or("?").to_owned();
        let mut paths = BTreeMap::new();
        walk(envelope, "", &mut paths);
        let shape = out.entry(name).or_default();
        let present: BTreeSet<String> = paths.keys().cloned().collect();
        shape.always = if shape.count == 0 {
            present
        } else {
            shape.always.intersection(&present).cloned().collect()
        };
        shape.count += 1;
        for (path, types) in paths {
            shape.paths.entry(path).or_default().extend(types);
        }
        if let Some(object) = envelope.as_object() {
            shape.top_orders.insert(
                object
                    .keys()
                    .filter(|k| *k != "sampleRate")
                    .cloned()
                    .collect(),
            );
        }
    }
    out
}

fn walk(value: &Value, path: &str, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !path.is_empty() {
        out.entry(path.to_owned()).or_default().insert(kind);
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else if path == "data.baseData.properties" {
                    format!("{path}.*")
                } else {
                    format!("{path}.{key}")
                };
                walk(child, &child_path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// The differences between census's shape of a kind and the reference's, as readable lines;
/// empty when census matches. `extra` are paths census adds on purpose; `optional` are paths
/// that every reference envelope happened to carry but that census writes only when known.
pub fn shape_differences(
    census: &KindShape,
    reference: &KindShape,
    extra: &[&str],
    optional: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, types) in &census.paths {
        if extra.contains(&path.as_str()) {
            continue;
        }
        match reference.paths.get(path) {
            None => problems.push(format!(
                "{path}: census writes it, the reference never does"
            )),
            Some(reference_types) if !types.is_subset(reference_types) => problems.push(format!(
                "{path}: census writes {types:?}, the reference {reference_types:?}"
            )),
            Some(_) => {}
        }
    }
    for path in &reference.always {
        if !optional.contains(&path.as_str()) && !census.always.contains(path) {
            problems.push(format!(
                "{path}: in every reference envelope, missing from some of census's"
            ));
        }
    }
    for order in &census.top_orders {
        if !reference.top_orders.contains(order) {
            problems.push(format!(
                "top-level key order {order:?} is not the reference's"
            ));
        }
    }
    problems
}

/// Both shapes side by side, one path a line, for a failing test's output.
pub fn side_by_side(census: &KindShape, reference: &KindShape) -> String {
    let mut all: BTreeSet<&String> = census.paths.keys().collect();
    all.extend(reference.paths.keys());
    let mut out = format!("{:<48} {:<24} {}\n", "path", "census", "reference");
    for path in all {
        let show = |shape: &KindShape| {
            shape
                .paths
                .get(path)
                .map(|t| t.iter().copied().collect::<Vec<_>>().join("|"))
                .unwrap_or_else(|| "-".to_owned())
        };
        out.push_str(&format!(
            "{path:<48} {:<24} {}\n",
            show(census),
            show(reference)
        ));
    }
    out
}

static REQUEST: census_runtime::site::Site =
    census_runtime::site::Site::request("GET /orders/{id}").at(module_path!(), file!(), line!());

/// Records one span of each kind of telemetry census sends: in-process spans (nested, with a
/// property), a user-kind dependency with its command, a failed one, a panic (an Exception), and
/// a server request under a remote parent that fails with a panic of its own.
pub fn every_kind_of_span() {
    use census_runtime::context::Carried;
    use census_runtime::{SpanContext, SpanId, TraceId, current_span, span};

    span("inproc-parent").in_scope(|| {
        span("inproc-child").property("order.id", 7).in_scope(|| {});
    });
    span("load-order")
        .kind("SQL")
        .target("orders-db")
        .data("SELECT * FROM orders WHERE id = ?")
        .in_scope(|| {});
    let _ = span("charge")
        .kind("payments")
        .target("psp")
        .try_in_scope(|| Err::<(), _>("card declined"));
    let _ = std::panic::catch_unwind(|| {
        span("explodes").in_scope(|| panic!("boom from inside a span"));
    });

    let remote = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        true,
    );
    let _ = std::panic::catch_unwind(|| {
        Carried::from_context(remote).run(|| {
            // The call the attributes make of a request site; the panic ends it.
            let request = census_runtime::__private::enter(&REQUEST);
            census_runtime::__private::run(request, || {
                current_span().set_data("http://127.0.0.1:8080/orders/7");
                current_span().set_result_code(500);
                span("inproc-under-request").in_scope(|| {});
                panic!("handler failed");
            })
        })
    });
}
