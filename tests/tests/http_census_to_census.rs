//! A census client (reqwest) calls a census server (axum), on 127.0.0.1, and both send to the
//! loopback ingestion server: one operation, each span the child of the one that caused it.

use std::time::Duration;

use crate::http_support::*;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use census_runtime::integrations::axum::layer;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_runtime::{dependency, inproc};
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
