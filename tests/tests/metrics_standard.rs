//! Standard metrics (`requests/duration`, `dependencies/duration`) through the loopback
//! ingestion server: counted before sampling, so that their counts and failures are exact
//! against the calls made at any sampling rate; the dimensions the portal reads; every request
//! and dependency item marked as counted; and a switch that turns it all off.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use census_runtime::Sampler;
use census_runtime::export::{Exporter, MetricRecord, Record, Resource};
use census_runtime::pipeline::Pipeline;
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::IngestionServer;
use serde_json::Value;

const METRIC: &str = "Microsoft.ApplicationInsights.Metric";
const DEPENDENCY: &str = "Microsoft.ApplicationInsights.RemoteDependency";

#[derive(Debug)]
struct OrderError;

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the order was refused")
    }
}

impl std::error::Error for OrderError {}

/// What the calls below return: every tenth fails.
fn every_tenth_fails(i: u64) -> Result<u64, OrderError> {
    if i % 10 == 3 {
        Err(OrderError)
    } else {
        Ok(std::hint::black_box(i) + 1)
    }
}

#[census_runtime::inproc]
fn place_order(i: u64) -> u64 {
    save_order(i).unwrap_or_default()
}

/// Fails every tenth call.
#[census_runtime::dependency(kind = "SQL", target = "orders-db")]
fn save_order(i: u64) -> Result<u64, OrderError> {
    every_tenth_fails(i)
}

#[census_runtime::inproc]
async fn place_order_async(i: u64) -> u64 {
    tokio::task::yield_now().await;
    save_order_async(i).await.unwrap_or(0)
}

/// Fails every tenth call, after waiting once.
#[census_runtime::dependency(kind = "SQL", target = "orders-db")]
async fn save_order_async(i: u64) -> Result<u64, OrderError> {
    tokio::task::yield_now().await;
    every_tenth_fails(i)
}

/// Looks the order up in a cache, then again after waiting once: sync calls made inside an
/// async root's first poll, and inside a later one after its trace id was drawn (asked for by
/// `context()`, as an outgoing call's propagation asks), which the future keeps between polls.
#[census_runtime::inproc]
async fn check_order_async(i: u64) -> u64 {
    let first = look_up_order(i).unwrap_or(0);
    let _ = census_runtime::current_span().context();
    tokio::task::yield_now().await;
    first + look_up_order(i + 1).unwrap_or(0)
}

/// Fails every tenth call.
#[census_runtime::dependency(kind = "Redis", target = "orders-cache")]
fn look_up_order(i: u64) -> Result<u64, OrderError> {
    every_tenth_fails(i)
}

/// Never answers.
#[census_runtime::dependency(kind = "SQL", target = "orders-db")]
async fn stall_order() -> Result<u64, OrderError> {
    std::future::pending().await
}

/// Gives up on a stalled call: under a root the sampler mostly drops, the call is inert and
/// counted, and its cancellation is counted as such.
#[census_runtime::inproc]
async fn give_up_on_a_stalled_order() {
    let stalled = tokio::time::timeout(Duration::from_millis(1), stall_order()).await;
    assert!(stalled.is_err(), "the timeout fired");
}

fn pipeline(server: &IngestionServer, name: &str, sampler: Sampler, metrics: bool) -> Pipeline {
    census_runtime::pipeline()
        .cloud_role("orders-api")
        .cloud_role_instance("orders-1")
        .sampler(sampler)
        .exporter(
            settings(server, &scratch_dir(name))
                .standard_metrics(metrics)
                .build()
                .unwrap(),
        )
        .install()
        .unwrap()
}

/// The standard metric envelopes the server received whose `_MS.MetricId` is `id`.
fn standard(server: &IngestionServer, id: &str) -> Vec<Value> {
    server
        .items()
        .into_iter()
        .filter(|item| {
            item["name"] == METRIC && item["data"]["baseData"]["properties"]["_MS.MetricId"] == id
        })
        .collect()
}

fn property<'a>(envelope: &'a Value, key: &str) -> &'a str {
    envelope["data"]["baseData"]["properties"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {envelope}"))
}

fn figure(envelope: &Value, field: &str) -> f64 {
    envelope["data"]["baseData"]["metrics"][0][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field} in {envelope}"))
}

/// The summed count of the envelopes whose properties include `labels`.
fn count(envelopes: &[Value], labels: &[(&str, &str)]) -> f64 {
    envelopes
        .iter()
        .filter(|e| labels.iter().all(|(k, v)| property(e, k) == *v))
        .map(|e| figure(e, "count"))
        .sum()
}

#[test]
fn counts_and_failures_are_exact_at_one_percent_over_100_000_calls() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-exact", Sampler::probability(0.01), true);
    const THREADS: u64 = 2;
    const CALLS: u64 = 50_000;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for i in 0..CALLS {
                    place_order(t * CALLS + i);
                }
            });
        }
    });
    census.flush(Duration::from_secs(10)).unwrap();

    let calls = (THREADS * CALLS) as f64;
    let failures = calls / 10.0;
    let dependencies = standard(&server, "dependencies/duration");
    let sql = [
        ("Dependency.Type", "SQL"),
        ("dependency/target", "orders-db"),
    ];
    assert_eq!(count(&dependencies, &sql), calls, "every SQL call counted");
    let failed = [
        ("Dependency.Type", "SQL"),
        ("Dependency.Success", "False"),
        ("dependency/resultCode", "OrderError"),
    ];
    assert_eq!(
        count(&dependencies, &failed),
        failures,
        "every failure counted"
    );
    let inproc = [
        ("Dependency.Type", "INPROC"),
        ("Dependency.Success", "True"),
    ];
    assert_eq!(count(&dependencies, &inproc), calls, "every root counted");

    // Sampling kept about 1 % of the traces as items: the metrics did not come from them.
    let kept = server
        .items()
        .iter()
        .filter(|item| item["name"] == DEPENDENCY)
        .count() as f64;
    assert!(
        kept > 0.0 && kept < calls * 2.0 * 0.05,
        "{kept} dependency items kept at 1 %"
    );
    // Each series' figures hold together.
    for envelope in &dependencies {
        let (n, sum) = (figure(envelope, "count"), figure(envelope, "value"));
        let (min, max) = (figure(envelope, "min"), figure(envelope, "max"));
        assert!(n >= 1.0 && min >= 0.0 && min <= max, "{envelope}");
        assert!(
            sum >= min * n * 0.999 && sum <= max * n * 1.001,
            "{envelope}"
        );
    }
}

#[test]
fn async_calls_are_counted_exactly_too_cancelled_ones_as_failures() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-async", Sampler::probability(0.01), true);
    const CALLS: u64 = 20_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                tokio::spawn(async move {
                    for i in 0..CALLS / 4 {
                        place_order_async(t * CALLS / 4 + i).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // Sync calls inside the polls of async roots.
        for i in 0..CALLS / 4 {
            check_order_async(i).await;
        }
        // Given up on after its first poll: cancelled, a failure; as a root, then under one.
        for _ in 0..10 {
            let stalled = tokio::time::timeout(Duration::from_millis(1), stall_order());
            assert!(stalled.await.is_err(), "the timeout fired");
        }
        for _ in 0..10 {
            give_up_on_a_stalled_order().await;
        }
    });
    census.flush(Duration::from_secs(10)).unwrap();

    let dependencies = standard(&server, "dependencies/duration");
    let sql = [
        ("Dependency.Type", "SQL"),
        ("dependency/target", "orders-db"),
    ];
    assert_eq!(count(&dependencies, &sql), (CALLS + 20) as f64);
    let failed = [
        ("Dependency.Type", "SQL"),
        ("dependency/resultCode", "OrderError"),
    ];
    assert_eq!(count(&dependencies, &failed), (CALLS / 10) as f64);
    let cancelled = [
        ("Dependency.Type", "SQL"),
        ("dependency/resultCode", "cancelled"),
    ];
    assert_eq!(count(&dependencies, &cancelled), 20.0);
    let cache = [("Dependency.Type", "Redis")];
    assert_eq!(count(&dependencies, &cache), (CALLS / 2) as f64);
    let cache_failed = [
        ("Dependency.Type", "Redis"),
        ("dependency/resultCode", "OrderError"),
    ];
    assert_eq!(count(&dependencies, &cache_failed), (CALLS / 20) as f64);
    let roots = [("Dependency.Type", "INPROC")];
    assert_eq!(
        count(&dependencies, &roots),
        (CALLS + CALLS / 4 + 10) as f64
    );
}

/// Answers 500 for every fifth order, after saving it.
async fn serve_order(
    axum::extract::Path(i): axum::extract::Path<u64>,
) -> (axum::http::StatusCode, String) {
    let saved = save_order_async(i).await.unwrap_or(0);
    if i % 5 == 0 {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new())
    } else {
        (axum::http::StatusCode::OK, saved.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_served_over_http_are_counted_exactly_with_their_status_at_one_percent() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-http", Sampler::probability(0.01), true);
    let addr = crate::http_support::serve_axum(|_| {
        axum::Router::new()
            .route("/orders/{i}", axum::routing::get(serve_order))
            .layer(census_runtime::integrations::axum::layer())
    })
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    const REQUESTS: u64 = 1_000;
    for i in 0..REQUESTS {
        let response = client
            .get(format!("http://{addr}/orders/{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status() == 500, i % 5 == 0);
    }
    tokio::task::spawn_blocking(move || census.flush(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();

    let requests = standard(&server, "requests/duration");
    assert_eq!(count(&requests, &[]), REQUESTS as f64, "{requests:#?}");
    let failed = [("request/resultCode", "500"), ("Request.Success", "False")];
    assert_eq!(count(&requests, &failed), (REQUESTS / 5) as f64);
    let ok = [("request/resultCode", "200"), ("Request.Success", "True")];
    assert_eq!(count(&requests, &ok), (REQUESTS * 4 / 5) as f64);
    // The dependencies inside them are counted under the dropped traces too.
    let dependencies = standard(&server, "dependencies/duration");
    let sql = [("Dependency.Type", "SQL")];
    assert_eq!(count(&dependencies, &sql), REQUESTS as f64);

    // Only the kept traces' requests were sent as items: the dropped ones' shadows were not.
    let items = server.items();
    let sent = items
        .iter()
        .filter(|item| item["name"] == "Microsoft.ApplicationInsights.Request")
        .count();
    assert!(sent < 50, "{sent} request items at 1 %");
    for item in items.iter().filter(|item| item["name"] != METRIC) {
        assert_eq!(item["sampleRate"], 1.0, "{item}");
    }
}

#[test]
fn spans_built_at_run_time_are_counted_with_their_values_at_one_percent() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-built", Sampler::probability(0.01), true);
    const CALLS: u64 = 5_000;
    for i in 0..CALLS {
        census_runtime::request("POST /charge").in_scope(|| {
            let charged = census_runtime::span("charge")
                .kind("payments")
                .target(format!("psp-{}", i % 2))
                .try_in_scope(|| if i % 4 == 0 { Err("declined") } else { Ok(()) });
            if charged.is_err() {
                census_runtime::current_span().set_result_code(402);
                census_runtime::current_span().set_success(false);
            }
        });
    }
    census.flush(Duration::from_secs(10)).unwrap();

    let dependencies = standard(&server, "dependencies/duration");
    for target in ["psp-0", "psp-1"] {
        let calls = [
            ("Dependency.Type", "payments"),
            ("dependency/target", target),
        ];
        assert_eq!(count(&dependencies, &calls), (CALLS / 2) as f64, "{target}");
    }
    let declined = [
        ("Dependency.Type", "payments"),
        ("Dependency.Success", "False"),
    ];
    assert_eq!(count(&dependencies, &declined), (CALLS / 4) as f64);
    let requests = standard(&server, "requests/duration");
    assert_eq!(count(&requests, &[]), CALLS as f64);
    let refused = [("request/resultCode", "402"), ("Request.Success", "False")];
    assert_eq!(count(&requests, &refused), (CALLS / 4) as f64);
}

/// Takes the standard metrics, and holds the worker up at every batch, so that the queue fills.
struct Slow {
    metrics: Arc<Mutex<Vec<MetricRecord>>>,
}

impl Exporter for Slow {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        let metrics = batch.iter().filter_map(Record::as_metric).cloned();
        self.metrics.lock().unwrap().extend(metrics);
        std::thread::sleep(Duration::from_millis(5));
    }

    fn standard_metrics(&self) -> bool {
        true
    }
}

#[test]
fn spans_dropped_at_the_full_queue_are_still_counted() {
    let metrics = Arc::new(Mutex::new(Vec::new()));
    let census = census_runtime::pipeline()
        .queue_capacity(16)
        .exporter(Slow {
            metrics: Arc::clone(&metrics),
        })
        .install()
        .unwrap();
    let dropped_before = census_runtime::pipeline::diagnostics().dropped_queue_full;
    const CALLS: u64 = 200_000;
    for i in 0..CALLS {
        place_order(i);
    }
    census.flush(Duration::from_secs(30)).unwrap();

    let dropped = census_runtime::pipeline::diagnostics().dropped_queue_full - dropped_before;
    assert!(dropped > 0, "the queue was full: spans were dropped");
    let metrics = metrics.lock().unwrap();
    // The summed count of the series whose `key` is `value`.
    let counted = |key: &str, value: &str| -> u64 {
        metrics
            .iter()
            .filter(|m| m.properties().any(|(k, v)| k == key && v == value))
            .map(MetricRecord::count)
            .sum()
    };
    assert_eq!(
        counted("Dependency.Type", "SQL"),
        CALLS,
        "{dropped} spans dropped, every call counted"
    );
    assert_eq!(counted("dependency/resultCode", "OrderError"), CALLS / 10);
}

#[test]
fn series_carry_the_dimensions_the_portal_reads() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-dimensions", Sampler::always(), true);
    for i in 0..20 {
        place_order(i);
    }
    let request = census_runtime::request("GET /orders");
    request.in_scope(|| place_order(1));
    census.flush(Duration::from_secs(10)).unwrap();

    let dependencies = standard(&server, "dependencies/duration");
    let failed: Vec<&Value> = dependencies
        .iter()
        .filter(|e| property(e, "Dependency.Success") == "False")
        .collect();
    assert_eq!(failed.len(), 1, "{dependencies:#?}");
    let failed = failed[0];
    assert_eq!(
        failed["data"]["baseData"]["metrics"][0]["name"],
        "dependencies/duration"
    );
    assert_eq!(
        failed["data"]["baseData"]["metrics"][0]["kind"],
        "Aggregation"
    );
    assert_eq!(
        failed["data"]["baseData"]["properties"],
        serde_json::json!({
            "_MS.MetricId": "dependencies/duration",
            "_MS.IsAutocollected": "True",
            "Dependency.Type": "SQL",
            "Dependency.Success": "False",
            "dependency/target": "orders-db",
            "dependency/resultCode": "OrderError",
            "cloud/roleName": "orders-api",
            "cloud/roleInstance": "orders-1",
            "operation/synthetic": "False",
        })
    );
    assert_eq!(figure(failed, "count"), 2.0, "calls 3 and 13 failed");

    let requests = standard(&server, "requests/duration");
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        requests[0]["data"]["baseData"]["properties"],
        serde_json::json!({
            "_MS.MetricId": "requests/duration",
            "_MS.IsAutocollected": "True",
            "Request.Success": "True",
            "request/resultCode": "0",
            "cloud/roleName": "orders-api",
            "cloud/roleInstance": "orders-1",
            "operation/synthetic": "False",
        })
    );
    assert_eq!(figure(&requests[0], "count"), 1.0);
}

#[test]
fn every_request_and_dependency_item_says_it_was_counted() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-mark", Sampler::always(), true);
    census_runtime::request("GET /orders").in_scope(|| place_order(3));
    census.flush(Duration::from_secs(10)).unwrap();

    let items: Vec<Value> = server
        .items()
        .into_iter()
        .filter(|item| item["name"] != METRIC)
        .collect();
    let spans: Vec<&Value> = items
        .iter()
        .filter(|item| {
            item["name"] == DEPENDENCY || item["name"] == "Microsoft.ApplicationInsights.Request"
        })
        .collect();
    assert_eq!(spans.len(), 3, "{items:#?}");
    for span in spans {
        let expected = if span["name"] == DEPENDENCY {
            "(Name:'Dependencies',Ver:'1.1')"
        } else {
            "(Name:'Requests',Ver:'1.1')"
        };
        assert_eq!(
            span["data"]["baseData"]["properties"]["_MS.ProcessedByMetricExtractors"], expected,
            "{span}"
        );
    }
}

#[test]
fn the_switch_turns_metrics_and_marks_off() {
    let server = IngestionServer::start().unwrap();
    let census = pipeline(&server, "standard-off", Sampler::probability(0.5), false);
    for i in 0..200 {
        place_order(i);
    }
    census.flush(Duration::from_secs(10)).unwrap();

    let items = server.items();
    assert!(
        items.iter().all(|item| item["name"] != METRIC),
        "no metrics: {items:#?}"
    );
    let spans: Vec<&Value> = items.iter().filter(|i| i["name"] == DEPENDENCY).collect();
    assert!(!spans.is_empty());
    assert!(
        spans.iter().all(|s| s["data"]["baseData"]["properties"]
            .get("_MS.ProcessedByMetricExtractors")
            .is_none()),
        "no marks"
    );
}
