//! The server integrations on real servers on 127.0.0.1: a bare hyper server behind the tower
//! layer, and an actix-web app with the actix middleware. What each Request records (name,
//! url, response code, success, the caller's trace), that handler spans nest under it, and that
//! a panicking handler answers 500 with an Exception while the server goes on serving.

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
