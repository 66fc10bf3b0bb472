//! The server integrations on real servers on 127.0.0.1: a bare hyper server behind the tower
//! layer, an axum app, and an actix-web app with the actix middleware. What each Request records
//! (name, url, response code, success, the caller's trace, the client's address), that handler
//! spans nest under it, and that a panicking handler answers 500 with an Exception while the
//! server goes on serving.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use census_runtime::integrations::actix_web::ActixMiddleware;
use census_runtime::site::SpanKind;
use census_runtime::{current_span, inproc};
use census_tests::{flush, install_memory};
use http_body_util::Full;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[inproc]
fn look_up(id: &str) -> String {
    format!(
        "order {id}, state {:?}",
        current_span().trace_state().as_deref()
    )
}

async fn hyper_handler(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    match req.uri().path().strip_prefix("/orders/") {
        Some(id) => Ok(http::Response::new(Full::from(look_up(id)))),
        None => Ok(http::Response::builder()
            .status(404)
            .body(Full::default())
            .unwrap()),
    }
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// GETs `url` as a call inside the trace of `TRACEPARENT`, with a `tracestate`; the body.
async fn get_in_trace(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "congo=t61rcWkgMzE")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_server_continues_the_callers_trace_and_names_requests_by_path() {
    let (pipeline, memory) = install_memory();
    let base = crate::http_support::serve_hyper_traced(hyper_handler).await;
    let client = plain_client();
    let body = get_in_trace(&client, &format!("{base}/orders/7?full=1")).await;
    assert_eq!(body, "order 7, state Some(\"congo=t61rcWkgMzE\")");
    let missing = client.get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    flush(&pipeline);

    let request = memory.one("GET /orders/7");
    assert_eq!(request.span_kind(), SpanKind::Request);
    assert_eq!(request.trace_id().to_string(), TRACE);
    assert_eq!(request.parent_id().unwrap().to_string(), CALLER);
    assert_eq!(
        request.data(),
        Some(format!("{base}/orders/7?full=1").as_str())
    );
    assert_eq!(request.result_code(), Some("200"));
    assert!(request.success());
    let child = memory.one("look_up");
    assert_eq!(child.parent_id(), Some(request.span_id()));
    assert_eq!(child.operation_name(), Some("GET /orders/7"));

    let missing = memory.one("GET /nothing");
    assert_eq!(missing.result_code(), Some("404"));
    assert!(!missing.success());
    assert_eq!(missing.parent_id(), None, "no caller: a new trace");
}

mod actix {
    use super::*;
    use actix_web::{App, HttpServer, web};

    async fn order(id: web::Path<String>) -> String {
        look_up(&id)
    }

    async fn boom() -> String {
        panic!("the actix handler broke")
    }

    /// Runs the app on its own thread and actix system; stops it when dropped.
    pub struct Server {
        pub base: String,
        handle: actix_web::dev::ServerHandle,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let handle = self.handle.clone();
            let _ = std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(handle.stop(false))
            })
            .join();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    pub fn start() -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(|| {
                    App::new()
                        .wrap(ActixMiddleware::new())
                        .route("/orders/{id}", web::get().to(order))
                        .route("/boom", web::get().to(boom))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
                .expect("listens")
                .run();
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            })
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server starts");
        Server {
            base,
            handle,
            thread: Some(thread),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actix_app_names_requests_by_route_and_continues_traceparent_and_request_id() {
    let (pipeline, memory) = install_memory();
    let server = actix::start();
    let base = &server.base;
    let client = plain_client();
    let body = get_in_trace(&client, &format!("{base}/orders/7")).await;
    assert_eq!(body, "order 7, state Some(\"congo=t61rcWkgMzE\")");
    let legacy = client
        .get(format!("{base}/orders/8"))
        .header(
            "Request-Id",
            "|0af7651916cd43dd8448eb211c80319c.b7ad6b7169203331.",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 200);
    let missing = client.get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    flush(&pipeline);

    let requests = memory.named("GET /orders/{id}");
    assert_eq!(requests.len(), 2);
    let first = requests
        .iter()
        .find(|r| r.data() == Some(&format!("{base}/orders/7")))
        .expect("the first request");
    assert_eq!(first.span_kind(), SpanKind::Request);
    assert_eq!(first.trace_id().to_string(), TRACE);
    assert_eq!(first.parent_id().unwrap().to_string(), CALLER);
    assert_eq!(first.result_code(), Some("200"));
    assert!(first.success());
    let second = requests
        .iter()
        .find(|r| r.span_id() != first.span_id())
        .unwrap();
    assert_eq!(
        second.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(second.parent_id().unwrap().to_string(), "b7ad6b7169203331");
    for child in memory.named("look_up") {
        assert!(
            requests
                .iter()
                .any(|r| child.parent_id() == Some(r.span_id())),
            "the handler's span nests under its request"
        );
    }
    let missing = memory.one("GET /nothing");
    assert_eq!(missing.result_code(), Some("404"));
    assert!(!missing.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actix_handler_answers_500_with_an_exception_and_the_app_keeps_serving() {
    let (pipeline, memory) = install_memory();
    let server = actix::start();
    let base = &server.base;
    let client = plain_client();
    let status = client
        .get(format!("{base}/boom"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 500);
    let after = client.get(format!("{base}/orders/1")).send().await.unwrap();
    assert_eq!(after.status(), 200, "the app still serves");
    flush(&pipeline);
    let request = memory.one("GET /boom");
    assert_eq!(request.result_code(), Some("500"));
    assert!(!request.success());
    let exception = request.exception().expect("the panic is an exception");
    assert_eq!(exception.message, "the actix handler broke");
    memory.one("GET /orders/{id}");
}

/// GETs `url`, with `X-Forwarded-For: forwarded` when given; the status.
async fn get_forwarded(client: &reqwest::Client, url: &str, forwarded: Option<&str>) -> u16 {
    let mut request = client.get(url);
    if let Some(forwarded) = forwarded {
        request = request.header("X-Forwarded-For", forwarded);
    }
    request.send().await.unwrap().status().as_u16()
}

/// The client address each of the requests named `name` recorded, in the order of their
/// `case` query parameter.
fn clients(memory: &census_runtime::export::MemoryExporter, name: &str) -> Vec<Option<String>> {
    let mut requests = memory.named(name);
    requests.sort_by_key(|r| r.data().unwrap_or_default().to_owned());
    requests
        .iter()
        .map(|r| {
            r.property(census_runtime::export::CLIENT_ADDRESS_PROPERTY)
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_records_the_client_from_x_forwarded_for_else_the_peer() {
    let (pipeline, memory) = install_memory();
    let client = plain_client();
    let cases = [
        None,
        Some("203.0.113.7, 10.0.0.2"),
        Some("[2001:db8::7]:443"),
        Some("not an address"),
    ];
    // actix: the connection's peer is known to the middleware.
    let server = actix::start();
    for (case, forwarded) in cases.iter().enumerate() {
        let url = format!("{}/orders/{case}?case={case}", server.base);
        assert_eq!(get_forwarded(&client, &url, *forwarded).await, 200);
    }
    // axum, made with its connection info: the peer too.
    let addr = {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .layer(census_runtime::integrations::axum::layer());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap()
        });
        addr
    };
    for (case, forwarded) in cases.iter().enumerate() {
        let url = format!("http://{addr}/items/{case}?case={case}");
        assert_eq!(get_forwarded(&client, &url, *forwarded).await, 200);
    }
    // A bare hyper server behind the tower layer: no peer is known, the header alone says.
    let base = crate::http_support::serve_hyper_traced(hyper_handler).await;
    for (case, forwarded) in cases.iter().enumerate() {
        let url = format!("{base}/orders/{case}?case={case}");
        assert_eq!(get_forwarded(&client, &url, *forwarded).await, 200);
    }
    flush(&pipeline);

    let with_peer = [
        Some("127.0.0.1".to_owned()),
        Some("203.0.113.7".to_owned()),
        Some("2001:db8::7".to_owned()),
        Some("127.0.0.1".to_owned()),
    ];
    assert_eq!(clients(&memory, "GET /orders/{id}"), with_peer, "actix");
    assert_eq!(clients(&memory, "GET /items/{id}"), with_peer, "axum");
    let hyper: Vec<Option<String>> = (0..cases.len())
        .flat_map(|case| clients(&memory, &format!("GET /orders/{case}")))
        .collect();
    assert_eq!(
        hyper,
        [
            None,
            Some("203.0.113.7".to_owned()),
            Some("2001:db8::7".to_owned()),
            None
        ],
        "tower"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_sent_as_the_requests_location_not_as_a_property() {
    use census_tests::ingestion::IngestionServer;

    let server = IngestionServer::start().unwrap();
    let pipeline = crate::http_support::install_azure(&server, "location");
    let app = actix::start();
    let client = plain_client();
    let url = format!("{}/orders/7", app.base);
    assert_eq!(get_forwarded(&client, &url, Some("203.0.113.7")).await, 200);
    pipeline.flush(Duration::from_secs(20)).unwrap();
    let items = server.items();
    let request =
        crate::http_support::one(&items, crate::http_support::REQUEST, "GET /orders/{id}");
    assert_eq!(request["tags"]["ai.location.ip"], "203.0.113.7");
    let properties = &request["data"]["baseData"]["properties"];
    assert!(
        properties
            .get(census_runtime::export::CLIENT_ADDRESS_PROPERTY)
            .is_none(),
        "{request}"
    );
    // Its children are the service's calls, from no client.
    let children = items
        .iter()
        .filter(|item| item["name"] != crate::http_support::REQUEST);
    for child in children {
        assert!(child["tags"].get("ai.location.ip").is_none(), "{child}");
    }
}
