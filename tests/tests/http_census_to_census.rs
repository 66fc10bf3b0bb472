//! A census client (reqwest) calls a census server (axum), on 127.0.0.1, and both send to the
//! loopback ingestion server: one operation, each span the child of the one that caused it.

use std::time::Duration;

use crate::http_support::*;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use census_runtime::integrations::axum::layer;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_runtime::{Sampler, SpanId, TraceId, dependency, inproc};
use census_tests::ingestion::IngestionServer;
use reqwest_middleware::ClientWithMiddleware;

#[derive(Clone)]
struct App {
    client: ClientWithMiddleware,
    base: String,
}

#[inproc]
fn price(id: u64) -> u64 {
    id * 10
}

async fn order(Path(id): Path<u64>, State(app): State<App>) -> String {
    let stock = app
        .client
        .get(format!("{}/stock/{id}", app.base))
        .send()
        .await
        .expect("the stock call answers")
        .text()
        .await
        .unwrap();
    format!("order {id}: price {}, stock {stock}", price(id))
}

async fn stock(Path(id): Path<u64>) -> String {
    format!("{}", id + 1)
}

/// The headers this server received, one `name: value` a line.
async fn headers(headers: HeaderMap) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
        .collect()
}

/// Calls the echo route of the same server, and answers what it received.
async fn forward(State(app): State<App>) -> String {
    app.client
        .get(format!("{}/headers", app.base))
        .send()
        .await
        .expect("the echo answers")
        .text()
        .await
        .unwrap()
}

async fn boom() -> String {
    panic!("the handler broke")
}

async fn start(middleware: ReqwestMiddleware) -> String {
    let addr = serve_axum(move |addr| {
        axum::Router::new()
            .route("/orders/{id}", get(order))
            .route("/stock/{id}", get(stock))
            .route("/headers", get(headers))
            .route("/forward", get(forward))
            .route("/boom", get(boom))
            .with_state(App {
                client: reqwest_client(middleware),
                base: format!("http://{addr}"),
            })
            .layer(layer())
    })
    .await;
    format!("http://{addr}")
}

struct OrdersApi {
    client: ClientWithMiddleware,
    base: String,
}

#[dependency(kind = "API", target = "orders-api")]
impl OrdersApi {
    async fn fetch(&self, id: u64) -> Result<String, reqwest_middleware::Error> {
        self.client
            .get(format!("{}/orders/{id}", self.base))
            .send()
            .await?
            .text()
            .await
            .map_err(Into::into)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_client_and_a_census_server_share_one_operation_with_correct_parents() {
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure(&ingestion, "census-http");
    let base = start(ReqwestMiddleware::new()).await;
    let api = OrdersApi {
        client: reqwest_client(ReqwestMiddleware::new()),
        base: base.clone(),
    };
    let body = api.fetch(7).await.unwrap();
    assert_eq!(body, "order 7: price 70, stock 8");
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let items = wait_for(&ingestion, |items| items.len() >= 6);
    println!("{}", summary(&items));

    let repository = one(&items, DEPENDENCY, "OrdersApi::fetch");
    let call = one(&items, DEPENDENCY, "GET /orders/7");
    let request = one(&items, REQUEST, "GET /orders/{id}");
    let priced = one(&items, DEPENDENCY, "price");
    let stock_call = one(&items, DEPENDENCY, "GET /stock/7");
    let stock_request = one(&items, REQUEST, "GET /stock/{id}");

    // One operation.
    let op = operation(repository);
    for item in &items {
        assert_eq!(operation(item), op, "{}", summary(&items));
    }
    // Each span the child of the one that caused it.
    assert_eq!(parent(repository), None);
    assert_eq!(
        parent(call),
        Some(id(repository)),
        "the call nests in the method"
    );
    assert_eq!(
        parent(request),
        Some(id(call)),
        "the server continues the call"
    );
    assert_eq!(parent(priced), Some(id(request)));
    assert_eq!(parent(stock_call), Some(id(request)));
    assert_eq!(parent(stock_request), Some(id(stock_call)));

    // What each says.
    let host = base.trim_start_matches("http://");
    assert_eq!(base_data(call)["type"], "HTTP");
    assert_eq!(base_data(call)["target"], host);
    assert_eq!(base_data(call)["data"], format!("{base}/orders/7"));
    assert_eq!(base_data(call)["resultCode"], "200");
    assert_eq!(base_data(call)["success"], true);
    assert_eq!(base_data(request)["url"], format!("{base}/orders/7"));
    assert_eq!(base_data(request)["responseCode"], "200");
    assert_eq!(base_data(request)["success"], true);
    assert_eq!(request["tags"]["ai.operation.name"], "GET /orders/{id}");
    assert_eq!(priced["tags"]["ai.operation.name"], "GET /orders/{id}");
}

fn header<'a>(echo: &'a str, name: &str) -> Option<&'a str> {
    echo.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracestate_and_the_legacy_request_id_are_passed_on_to_the_next_call() {
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure(&ingestion, "census-http");
    let base = start(ReqwestMiddleware::new().with_request_id(true)).await;
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let echo = plain
        .get(format!("{base}/forward"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let items = wait_for(&ingestion, |items| items.len() >= 3);
    let call = one(&items, DEPENDENCY, "GET /headers");
    let traceparent = header(&echo, "traceparent").expect("a traceparent");
    assert_eq!(
        traceparent,
        format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", id(call))
    );
    assert_eq!(header(&echo, "tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(
        header(&echo, "request-id"),
        Some(format!("|4bf92f3577b34da6a3ce929d0e0e4736.{}.", id(call)).as_str())
    );
    let forward = one(&items, REQUEST, "GET /forward");
    assert_eq!(operation(forward), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(parent(forward), Some("00f067aa0ba902b7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_alone_continues_the_callers_trace() {
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure(&ingestion, "census-http");
    let base = start(ReqwestMiddleware::new()).await;
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = plain
        .get(format!("{base}/stock/1"))
        .header(
            "Request-Id",
            "|0af7651916cd43dd8448eb211c80319c.b7ad6b7169203331.",
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let items = wait_for(&ingestion, |items| !items.is_empty());
    let request = one(&items, REQUEST, "GET /stock/{id}");
    assert_eq!(operation(request), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(parent(request), Some("b7ad6b7169203331"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_with_an_exception_and_the_server_keeps_serving() {
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure(&ingestion, "census-http");
    let base = start(ReqwestMiddleware::new()).await;
    let client = reqwest_client(ReqwestMiddleware::new());
    let status = client
        .get(format!("{base}/boom"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 500);
    let after = client.get(format!("{base}/stock/1")).send().await.unwrap();
    assert_eq!(after.status(), 200, "the server still serves");
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let items = wait_for(&ingestion, |items| items.len() >= 5);
    let request = one(&items, REQUEST, "GET /boom");
    assert_eq!(base_data(request)["responseCode"], "500");
    assert_eq!(base_data(request)["success"], false);
    let exceptions = all(&items, EXCEPTION);
    assert_eq!(exceptions.len(), 1, "{}", summary(&items));
    let exception = &base_data(exceptions[0])["exceptions"][0];
    assert_eq!(exception["message"], "the handler broke");
    assert_eq!(parent(exceptions[0]), Some(id(request)));
    assert_eq!(operation(exceptions[0]), operation(request));
    let call = one(&items, DEPENDENCY, "GET /boom");
    assert_eq!(base_data(call)["resultCode"], "500");
    assert_eq!(base_data(call)["success"], false);
    one(&items, REQUEST, "GET /stock/{id}");
}

/// A trace id scoring 0.33: a rate of 0.25 drops it by its score.
const SCORED_ABOVE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Another, for the trace that is kept.
const KEPT_BY_FLAG: &str = "0af7651916cd43dd8448eb211c80319c";

/// Whether OpenCensus's `ProbabilitySampler` keeps a trace whose parent has flag `00`: the
/// trace id's lower 64 bits at most `rate * 0xffffffffffffffff` (a float, compared exactly).
fn probability_sampler_keeps(trace_id: &str, rate: f64) -> bool {
    let lower = u64::from_str_radix(&trace_id[16..], 16).unwrap();
    u128::from(lower) <= (rate * 18_446_744_073_709_551_615.0) as u128
}

/// A `traceparent`'s trace id, span id and flags.
fn fields(traceparent: &str) -> (&str, &str, &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    (parts[1], parts[2], parts[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_00_parent_is_not_recorded_and_its_calls_pass_the_trace_on_with_00_and_01_is_kept() {
    assert!(Sampler::score(TraceId::from_hex(SCORED_ABOVE).unwrap()) >= 0.25);
    assert!(Sampler::score(TraceId::from_hex(KEPT_BY_FLAG).unwrap()) >= 0.25);
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure_sampled(&ingestion, "census-http", Sampler::probability(0.25));
    let base = start(ReqwestMiddleware::new().with_request_id(true)).await;
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let forward = |trace: &str, flags: &str| {
        plain
            .get(format!("{base}/forward"))
            .header(
                "traceparent",
                format!("00-{trace}-00f067aa0ba902b7-{flags}"),
            )
            .header("tracestate", "congo=t61rcWkgMzE")
            .send()
    };

    let echo = forward(SCORED_ABOVE, "00")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let traceparent = header(&echo, "traceparent").expect("a traceparent");
    let (trace, span, flags) = fields(traceparent);
    assert_eq!((trace, flags), (SCORED_ABOVE, "00"), "{traceparent}");
    assert!(SpanId::from_hex(span).is_some() && span != "00f067aa0ba902b7");
    assert_eq!(
        header(&echo, "request-id"),
        Some(format!("|{SCORED_ABOVE}.{span}.").as_str())
    );
    assert_eq!(header(&echo, "tracestate"), Some("congo=t61rcWkgMzE"));

    let echo = forward(KEPT_BY_FLAG, "01")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let traceparent = header(&echo, "traceparent")
        .expect("a traceparent")
        .to_owned();
    assert_eq!(header(&echo, "tracestate"), Some("congo=t61rcWkgMzE"));

    pipeline.flush(Duration::from_secs(10)).unwrap();
    // The kept trace: the request, its call and the call's request. Sent after the dropped
    // one's would have been, so that everything is in once these are.
    let items = wait_for(&ingestion, |items| items.len() >= 3);
    println!("{}", summary(&items));
    assert_eq!(items.len(), 3, "{}", summary(&items));
    for item in &items {
        assert_eq!(operation(item), KEPT_BY_FLAG, "{}", summary(&items));
    }
    let call = one(&items, DEPENDENCY, "GET /headers");
    assert_eq!(traceparent, format!("00-{KEPT_BY_FLAG}-{}-01", id(call)));
    assert_eq!(
        parent(one(&items, REQUEST, "GET /forward")),
        Some("00f067aa0ba902b7")
    );
}

#[inproc]
async fn dropped_or_kept_root(client: &ClientWithMiddleware, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_root_s_calls_carry_00_with_an_id_every_sampler_at_the_rate_drops() {
    const RATE: f64 = 0.25;
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure_sampled(&ingestion, "census-http", Sampler::probability(RATE));
    // An echo server without census, so that only the roots here decide.
    let echo = serve_axum(|_| axum::Router::new().route("/headers", get(headers))).await;
    let url = format!("http://{echo}/headers");
    let client = reqwest_client(ReqwestMiddleware::new().with_request_id(true));
    let (mut dropped, mut kept) = (Vec::new(), Vec::new());
    for i in 0..80 {
        // The call as a root itself, and inside an instrumented root.
        let echo = if i % 2 == 0 {
            client.get(&url).send().await.unwrap().text().await.unwrap()
        } else {
            dropped_or_kept_root(&client, &url).await
        };
        let traceparent = header(&echo, "traceparent").expect("always a traceparent");
        let (trace, span, flags) = fields(traceparent);
        assert_eq!(
            header(&echo, "request-id"),
            Some(format!("|{trace}.{span}.").as_str())
        );
        let score = Sampler::score(TraceId::from_hex(trace).unwrap());
        match flags {
            "00" => {
                assert!(score >= RATE, "{traceparent} scores {score}");
                assert!(
                    !probability_sampler_keeps(trace, RATE),
                    "{traceparent}: the probability sampler keeps it"
                );
                dropped.push(trace.to_owned());
            }
            "01" => {
                assert!(score < RATE, "{traceparent} scores {score}");
                kept.push(trace.to_owned());
            }
            other => panic!("flags {other}"),
        }
    }
    assert!(
        !dropped.is_empty() && !kept.is_empty(),
        "{dropped:?} {kept:?}"
    );
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let items = wait_for(&ingestion, |items| {
        kept.iter()
            .all(|trace| items.iter().any(|item| operation(item) == trace))
    });
    for item in &items {
        assert!(
            !dropped.iter().any(|trace| operation(item) == trace),
            "{}",
            summary(&items)
        );
    }
}
