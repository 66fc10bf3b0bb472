//! What the HTTP integration tests share: servers on 127.0.0.1, a pipeline to the ingestion
//! server, the Python reference venv, and looking envelopes up.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use census_runtime::pipeline::Pipeline;
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::IngestionServer;
use serde_json::Value;

pub const DEPENDENCY: &str = "Microsoft.ApplicationInsights.RemoteDependency";
pub const REQUEST: &str = "Microsoft.ApplicationInsights.Request";
pub const EXCEPTION: &str = "Microsoft.ApplicationInsights.Exception";

/// A hyper HTTP/1 server on 127.0.0.1 behind census's tower server layer, serving `handler`
/// (request heads up to 1 MiB, for over-long URLs); its base URL.
pub async fn serve_hyper_traced<F, Fut>(handler: F) -> String
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<
                http::Response<http_body_util::Full<bytes::Bytes>>,
                std::convert::Infallible,
            >,
        > + Send
        + 'static,
{
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(census_runtime::integrations::tower::ServerLayer::new())
        .service(tower::service_fn(handler));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(1 << 20)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A pipeline that sends every span to `server`.
pub fn install_azure(server: &IngestionServer, role: &str) -> Pipeline {
    install_azure_sampled(server, role, census_runtime::Sampler::always())
}

/// A pipeline that sends the spans `sampler` keeps to `server`, with the standard metrics on
/// (the Azure exporter's default): spans of dropped traces are then recorded as shadows, and
/// these tests check that none of them is sent or changes what is propagated.
pub fn install_azure_sampled(
    server: &IngestionServer,
    role: &str,
    sampler: census_runtime::Sampler,
) -> Pipeline {
    census_runtime::pipeline()
        .cloud_role(role)
        .sampler(sampler)
        .exporter(
            settings(server, &scratch_dir(role))
                .standard_metrics(true)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .expect("the pipeline installs")
}

/// Serves the app `make` builds for its own address, on a fresh 127.0.0.1 port, on the current
/// tokio runtime.
pub async fn serve_axum(make: impl FnOnce(SocketAddr) -> axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    let app = make(addr);
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    addr
}

/// A reqwest client with the census middleware, no proxy.
pub fn reqwest_client(
    middleware: census_runtime::integrations::reqwest::ReqwestMiddleware,
) -> reqwest_middleware::ClientWithMiddleware {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    reqwest_middleware::ClientBuilder::new(client)
        .with(middleware)
        .build()
}

/// A 127.0.0.1 port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The one envelope of type `kind` whose `baseData.name` is `name`.
pub fn one<'a>(items: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = items
        .iter()
        .filter(|i| i["name"] == kind && i["data"]["baseData"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} named {name:?} among:\n{}",
        summary(items)
    );
    found[0]
}

/// Every envelope of type `kind`.
pub fn all<'a>(items: &'a [Value], kind: &str) -> Vec<&'a Value> {
    items.iter().filter(|i| i["name"] == kind).collect()
}

/// One line per envelope: type, name, ids, codes.
pub fn summary(items: &[Value]) -> String {
    items
        .iter()
        .map(|i| {
            let b = &i["data"]["baseData"];
            format!(
                "{} {:?} id={} op={} parent={} code={} role={}",
                i["name"]
                    .as_str()
                    .unwrap_or("?")
                    .rsplit('.')
                    .next()
                    .unwrap_or("?"),
                b["name"].as_str().unwrap_or(""),
                b["id"],
                i["tags"]["ai.operation.id"],
                i["tags"]["ai.operation.parentId"],
                b.get("resultCode")
                    .or(b.get("responseCode"))
                    .unwrap_or(&Value::Null),
                i["tags"]["ai.cloud.role"],
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn base_data(item: &Value) -> &Value {
    &item["data"]["baseData"]
}

pub fn id(item: &Value) -> &str {
    base_data(item)["id"].as_str().expect("an id")
}

pub fn operation(item: &Value) -> &str {
    item["tags"]["ai.operation.id"]
        .as_str()
        .expect("an operation id")
}

pub fn parent(item: &Value) -> Option<&str> {
    item["tags"]["ai.operation.parentId"].as_str()
}

/// Waits until the server accepted envelopes that satisfy `done`, then returns them all, but
/// the standard metrics (which belong to no trace).
pub fn wait_for(server: &IngestionServer, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let spans = |items: Vec<Value>| -> Vec<Value> {
        items
            .into_iter()
            .filter(|item| item["name"] != "Microsoft.ApplicationInsights.Metric")
            .collect()
    };
    let ok = server.wait_until(Duration::from_secs(30), |requests| {
        done(&spans(requests.iter().flat_map(|r| r.accepted()).collect()))
    });
    let items = spans(server.accepted());
    assert!(
        ok,
        "timed out waiting for envelopes; got:\n{}",
        summary(&items)
    );
    items
}
