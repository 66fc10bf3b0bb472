//! The three client integrations (reqwest, the tower layer over hyper-util's client, ureq)
//! against a real server on 127.0.0.1: what each call records (name, target, data without
//! credentials, result code, success, parent) for a 200, a 404 with a query, a POST 500, a
//! refused connection and a timeout, and the `traceparent` the server receives.

use std::time::Duration;

use crate::http_support::*;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get};
use census_runtime::export::{MemoryExporter, SpanRecord};
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_runtime::integrations::tower::ClientLayer;
use census_runtime::integrations::ureq::UreqMiddleware;
use census_runtime::span;
use census_tests::{flush, install_memory};

async fn status(Path(code): Path<u16>) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

async fn traceparent(headers: HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned()
}

async fn target() -> String {
    let addr = serve_axum(|_| {
        axum::Router::new()
            .route("/status/{code}", any(status))
            .route("/slow", get(slow))
            .route("/traceparent", get(traceparent))
    })
    .await;
    addr.to_string()
}

/// The five calls every client makes, in order, under a span named `parent`, and what the
/// server saw as `traceparent` on the last one.
struct Calls {
    host: String,
    refused: String,
}

impl Calls {
    fn urls(&self) -> [(&'static str, String); 5] {
        let (host, refused) = (&self.host, &self.refused);
        [
            ("GET", format!("http://user:secret@{host}/status/200")),
            ("GET", format!("http://{host}/status/404?x=1&y=2")),
            ("POST", format!("http://{host}/status/500")),
            ("GET", format!("http://{refused}/refused")),
            ("GET", format!("http://{host}/slow")),
        ]
    }
}

fn check(memory: &MemoryExporter, calls: &Calls, seen_traceparent: &str) {
    let parent = memory.one("parent");
    let host = &calls.host;
    let expected: [(&str, &str, String, &str, bool); 5] = [
        (
            "GET /status/200",
            host,
            format!("http://{host}/status/200"),
            "200",
            true,
        ),
        (
            "GET /status/404",
            host,
            format!("http://{host}/status/404?x=1&y=2"),
            "404",
            false,
        ),
        (
            "POST /status/500",
            host,
            format!("http://{host}/status/500"),
            "500",
            false,
        ),
        (
            "GET /refused",
            &calls.refused,
            format!("http://{}/refused", calls.refused),
            "connect",
            false,
        ),
        (
            "GET /slow",
            host,
            format!("http://{host}/slow"),
            "timeout",
            false,
        ),
    ];
    for (name, target, data, code, success) in expected {
        let call: SpanRecord = memory.one(name);
        assert_eq!(call.kind(), "HTTP", "{name}");
        assert_eq!(call.target(), Some(target), "{name}");
        assert_eq!(
            call.data(),
            Some(data.as_str()),
            "{name}: credentials removed"
        );
        assert_eq!(call.result_code(), Some(code), "{name}");
        assert_eq!(call.success(), success, "{name}");
        assert_eq!(call.parent_id(), Some(parent.span_id()), "{name} nests");
        assert_eq!(call.trace_id(), parent.trace_id(), "{name}");
    }
    let echo = memory.one("GET /traceparent");
    assert_eq!(
        seen_traceparent,
        format!("00-{}-{}-01", echo.trace_id(), echo.span_id()),
        "the server saw the dependency as its caller"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_records_statuses_connect_errors_and_timeouts_and_strips_credentials() {
    let (pipeline, memory) = install_memory();
    let calls = Calls {
        host: target().await,
        refused: format!("127.0.0.1:{}", closed_port()),
    };
    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    )
    .with(ReqwestMiddleware::new())
    .build();
    let seen = span("parent")
        .instrument(async {
            for (method, url) in calls.urls() {
                let method = method.parse().unwrap();
                let _ = client.request(method, &url).send().await;
            }
            client
                .get(format!("http://{}/traceparent", calls.host))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
        .await;
    flush(&pipeline);
    check(&memory, &calls, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_layer_records_hyper_util_client_calls_the_same_way() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::{Service, ServiceExt};

    let (pipeline, memory) = install_memory();
    let calls = Calls {
        host: target().await,
        refused: format!("127.0.0.1:{}", closed_port()),
    };
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let client = tower::ServiceBuilder::new()
        .layer(ClientLayer::new())
        // Inside the census layer, which then sees the timeout as the call's error (outside
        // it, the call would be dropped and recorded as cancelled).
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            300,
        )))
        .service(hyper_client);
    let seen = span("parent")
        .instrument(async {
            for (method, url) in calls.urls() {
                let request = http::Request::builder()
                    .method(method)
                    .uri(url)
                    .body(Full::default())
                    .unwrap();
                let _ = client.clone().ready().await.unwrap().call(request).await;
            }
            let request = http::Request::get(format!("http://{}/traceparent", calls.host))
                .body(Full::default())
                .unwrap();
            let response = client.clone().oneshot(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        })
        .await;
    flush(&pipeline);
    check(&memory, &calls, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ureq_records_blocking_calls_the_same_way() {
    let (pipeline, memory) = install_memory();
    let calls = Calls {
        host: target().await,
        refused: format!("127.0.0.1:{}", closed_port()),
    };
    let host = calls.host.clone();
    let urls = calls.urls();
    let seen = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .middleware(UreqMiddleware::new())
            .timeout_global(Some(Duration::from_millis(300)))
            .build()
            .into();
        span("parent").in_scope(|| {
            for (method, url) in urls {
                let _ = match method {
                    "POST" => agent.post(&url).send_empty(),
                    _ => agent.get(&url).call(),
                };
            }
            agent
                .get(&format!("http://{host}/traceparent"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap()
        })
    })
    .await
    .unwrap();
    flush(&pipeline);
    check(&memory, &calls, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outside_any_span_is_the_root_of_a_new_trace() {
    let (pipeline, memory) = install_memory();
    let host = target().await;
    let client = reqwest_client(ReqwestMiddleware::new());
    let seen = client
        .get(format!("http://{host}/traceparent"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    flush(&pipeline);
    let call = memory.one("GET /traceparent");
    assert_eq!(call.parent_id(), None);
    assert_eq!(
        seen,
        format!("00-{}-{}-01", call.trace_id(), call.span_id())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_caller_gives_up_on_is_recorded_as_cancelled_not_succeeded() {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::ServiceExt;

    let (pipeline, memory) = install_memory();
    let host = target().await;
    let reqwest_client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
    )
    .with(ReqwestMiddleware::new())
    .build();
    let tower_client = tower::ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>());
    let give_up = Duration::from_millis(200);
    let slow = format!("http://{host}/slow");
    let by_reqwest = tokio::time::timeout(give_up, reqwest_client.get(&slow).send()).await;
    assert!(by_reqwest.is_err(), "the caller gave up");
    let request = http::Request::get(&slow).body(Full::default()).unwrap();
    let by_tower = tokio::time::timeout(give_up, tower_client.oneshot(request)).await;
    assert!(by_tower.is_err(), "the caller gave up");
    flush(&pipeline);

    let calls = memory.named("GET /slow");
    assert_eq!(calls.len(), 2, "one call per client");
    for call in calls {
        assert_eq!(call.result_code(), Some("cancelled"));
        assert!(!call.success(), "a cancelled call is not a success");
    }
}
