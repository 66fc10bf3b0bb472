//! Custom metrics through the `metrics` facade, pre-aggregated by `CensusRecorder` and sent as
//! `Metric` envelopes to the loopback ingestion server: the three kinds' figures exact against
//! what several threads recorded, labels as properties, the cap on label sets, the envelope's
//! shape against the Python reference's (`s11_logs.json`), and a flush delivering the minute so
//! far.

use std::path::PathBuf;
use std::time::Duration;

use census_runtime::integrations::metrics::CensusRecorder;
use census_runtime::pipeline::Pipeline;
use census_tests::azure::{scratch_dir, settings, shape_differences, shapes, side_by_side};
use census_tests::ingestion::IngestionServer;
use serde_json::Value;

const METRIC: &str = "Microsoft.ApplicationInsights.Metric";

/// A pipeline whose Azure exporter posts to `server`; metrics are collected once a minute (the
/// default), so that only a flush or a shutdown delivers them during a test.
fn pipeline(server: &IngestionServer, name: &str) -> Pipeline {
    census_runtime::pipeline()
        .cloud_role("orders-api")
        .cloud_role_instance("orders-1")
        .exporter(settings(server, &scratch_dir(name)).build().unwrap())
        .install()
        .unwrap()
}

/// The Metric envelopes the server received.
fn metrics(server: &IngestionServer) -> Vec<Value> {
    server
        .items()
        .into_iter()
        .filter(|item| item["name"] == METRIC)
        .collect()
}

/// The one data point of the envelope whose metric is `name` and whose properties include
/// `labels`; panics unless there is exactly one.
fn point<'a>(envelopes: &'a [Value], name: &str, labels: &[(&str, &str)]) -> &'a Value {
    let found: Vec<&Value> = envelopes
        .iter()
        .filter(|e| {
            let base = &e["data"]["baseData"];
            base["metrics"][0]["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| base["properties"][*k].as_str() == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} {labels:?} expected among {envelopes:#?}"
    );
    found[0]
}

fn figure(point: &Value, field: &str) -> f64 {
    point["data"]["baseData"]["metrics"][0][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {point}"))
}

#[test]
fn three_kinds_have_exact_figures_when_many_threads_record() {
    CensusRecorder::new().install().unwrap();
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "metrics-exact");

    const THREADS: u64 = 4;
    const CALLS: u64 = 5_000;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                let latency = metrics::histogram!("checkout_ms", "route" => "/orders");
                for i in 0..CALLS {
                    metrics::counter!("orders_placed", "route" => "/orders").increment(i % 3 + 1);
                    latency.record((t * CALLS + i) as f64);
                }
                metrics::gauge!("workers", "pool" => "checkout").increment(1.0);
            });
        }
    });
    metrics::gauge!("queue_depth").set(3.0);
    metrics::gauge!("queue_depth").set(42.0);
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = metrics(&server);
    let orders = point(&envelopes, "orders_placed", &[("route", "/orders")]);
    let expected: u64 = THREADS * (0..CALLS).map(|i| i % 3 + 1).sum::<u64>();
    assert_eq!(figure(orders, "value"), expected as f64);
    assert_eq!(figure(orders, "count"), 1.0);

    let values: Vec<f64> = (0..THREADS * CALLS).map(|v| v as f64).collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std_dev = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let checkout = point(&envelopes, "checkout_ms", &[("route", "/orders")]);
    assert_eq!(
        checkout["data"]["baseData"]["metrics"][0]["kind"],
        "Aggregation"
    );
    assert_eq!(figure(checkout, "count"), n);
    assert_eq!(figure(checkout, "value"), values.iter().sum::<f64>());
    assert_eq!(figure(checkout, "min"), 0.0);
    assert_eq!(figure(checkout, "max"), (THREADS * CALLS - 1) as f64);
    let relative = (figure(checkout, "stdDev") - std_dev).abs() / std_dev;
    assert!(relative < 1e-9, "stdDev {checkout} against {std_dev}");

    let workers = point(&envelopes, "workers", &[("pool", "checkout")]);
    assert_eq!(figure(workers, "value"), THREADS as f64);
    assert_eq!(figure(point(&envelopes, "queue_depth", &[]), "value"), 42.0);
}

#[test]
fn labels_are_the_properties_and_tell_series_apart() {
    CensusRecorder::new().install().unwrap();
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "metrics-labels");
    let region = String::from("eu");
    metrics::counter!("orders_placed", "route" => "/orders", "region" => region.clone())
        .increment(2);
    metrics::counter!("orders_placed", "route" => "/orders", "region" => "us").increment(5);
    metrics::counter!("orders_placed", "route" => "/orders", "region" => region).increment(1);
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = metrics(&server);
    assert_eq!(envelopes.len(), 2, "{envelopes:#?}");
    let eu = point(&envelopes, "orders_placed", &[("region", "eu")]);
    assert_eq!(figure(eu, "value"), 3.0);
    assert_eq!(
        eu["data"]["baseData"]["properties"],
        serde_json::json!({"route": "/orders", "region": "eu"})
    );
    assert_eq!(
        figure(
            point(&envelopes, "orders_placed", &[("region", "us")]),
            "value"
        ),
        5.0
    );
}

#[test]
fn label_sets_over_the_cap_are_dropped_and_counted() {
    CensusRecorder::new().max_label_sets(3).install().unwrap();
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "metrics-cap");
    let before = census_runtime::pipeline::diagnostics().metrics_dropped;
    for route in 0..5 {
        for _ in 0..2 {
            metrics::histogram!("checkout_ms", "route" => route.to_string()).record(1.0);
        }
    }
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = metrics(&server);
    let routes: Vec<&str> = envelopes
        .iter()
        .filter_map(|e| e["data"]["baseData"]["properties"]["route"].as_str())
        .collect();
    assert_eq!(
        routes.len(),
        3,
        "three label sets under the cap: {routes:?}"
    );
    for route in ["0", "1", "2"] {
        assert_eq!(
            figure(
                point(&envelopes, "checkout_ms", &[("route", route)]),
                "count"
            ),
            2.0
        );
    }
    let dropped = census_runtime::pipeline::diagnostics().metrics_dropped - before;
    assert_eq!(
        dropped, 4,
        "two values for each of the two routes over the cap"
    );
}

#[test]
fn metric_envelopes_have_the_reference_shape() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/captures/s11_logs.json");
    let capture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let reference = shapes(capture["envelopes"].as_array().unwrap());

    CensusRecorder::new().install().unwrap();
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "metrics-shape");
    metrics::histogram!("orders_latency", "route" => "/orders").record(12.5);
    metrics::counter!("orders_placed", "route" => "/orders").increment(1);
    metrics::gauge!("queue_depth", "route" => "/orders").set(4.0);
    census.flush(Duration::from_secs(10)).unwrap();
    let envelopes = metrics(&server);
    assert_eq!(envelopes.len(), 3);
    let ours = &shapes(&envelopes)[METRIC];

    // census sends the aggregate's figures; the reference (OpenCensus) only a value, with a
    // namespace census has no use for.
    let extra = [
        "data.baseData.metrics[].count",
        "data.baseData.metrics[].kind",
        "data.baseData.metrics[].min",
        "data.baseData.metrics[].max",
        "data.baseData.metrics[].stdDev",
    ];
    let optional = ["data.baseData.metrics[].ns"];
    let problems = shape_differences(ours, &reference[METRIC], &extra, &optional);
    assert!(
        problems.is_empty(),
        "Metric differs from the reference:\n{}\n{}",
        problems.join("\n"),
        side_by_side(ours, &reference[METRIC])
    );
    let envelope = &envelopes[0];
    assert_eq!(envelope["iKey"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(envelope["tags"]["ai.cloud.role"], "orders-api");
    assert_eq!(envelope["tags"]["ai.cloud.roleInstance"], "orders-1");
    assert_eq!(envelope["data"]["baseType"], "MetricData");
    assert_eq!(envelope["data"]["baseData"]["ver"], 2);
}

#[test]
fn a_flush_delivers_the_minute_so_far_and_the_next_starts_empty() {
    CensusRecorder::new().install().unwrap();
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "metrics-flush");
    let latency = metrics::histogram!("checkout_ms");
    latency.record(10.0);
    latency.record(20.0);
    metrics::counter!("orders_placed").increment(2);
    census.flush(Duration::from_secs(10)).unwrap();
    let first = metrics(&server);
    assert_eq!(first.len(), 2, "the partial minute, delivered: {first:#?}");
    assert_eq!(figure(point(&first, "checkout_ms", &[]), "count"), 2.0);

    // The next interval holds only what was recorded after the flush; the counter that did not
    // move sends nothing.
    latency.record(5.0);
    census.shutdown(Duration::from_secs(10)).unwrap();
    let all = metrics(&server);
    let second = &all[first.len()..];
    assert_eq!(second.len(), 1, "{second:#?}");
    let checkout = point(second, "checkout_ms", &[]);
    assert_eq!(
        (figure(checkout, "count"), figure(checkout, "value")),
        (1.0, 5.0)
    );
}
