//! A census service the tests call over HTTP, in a process of its own (a pipeline is
//! process-wide): an axum server with census's layer, sending to an ingestion server.
//!
//! `census_service CONNECTION_STRING STORAGE_DIR RATE DOWNSTREAM_URL`: samples at RATE, serves
//! on a fresh 127.0.0.1 port and prints `listening PORT`. Routes: `/leaf` answers `leaf`;
//! `/relay` calls DOWNSTREAM_URL (`-`: none) with census's reqwest middleware and answers what
//! it answered. When its stdin closes it flushes what it recorded and exits.

use std::io::{Read, Write};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use census_runtime::Sampler;
use census_runtime::azure::AzureExporter;
use census_runtime::integrations::axum::layer;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use reqwest_middleware::ClientWithMiddleware;

#[derive(Clone)]
struct App {
    client: ClientWithMiddleware,
    downstream: Option<String>,
}

async fn leaf() -> &'static str {
    "leaf"
}

async fn relay(State(app): State<App>) -> Result<String, String> {
    let Some(url) = app.downstream else {
        return Err("no downstream".to_owned());
    };
    let response = app
        .client
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    response.text().await.map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, connection_string, storage, rate, downstream] = &args[..] else {
        eprintln!("usage: census_service CONNECTION_STRING STORAGE_DIR RATE DOWNSTREAM_URL");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("RATE is a number");
    let census = census_runtime::pipeline()
        .cloud_role("census-service")
        .sampler(Sampler::probability(rate))
        .exporter(
            AzureExporter::builder()
                .connection_string(connection_string)
                .storage_dir(storage)
                .send_interval(Duration::from_millis(100))
                .timeout(Duration::from_secs(5))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .expect("the pipeline installs");
    let runtime = census_tests::multi_thread_runtime(2);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    let app = App {
        client: reqwest_middleware::ClientBuilder::new(client)
            .with(ReqwestMiddleware::new())
            .build(),
        downstream: (downstream != "-").then(|| downstream.clone()),
    };
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binds 127.0.0.1");
    let port = listener.local_addr().expect("a local address").port();
    let router = axum::Router::new()
        .route("/leaf", get(leaf))
        .route("/relay", get(relay))
        .with_state(app)
        .layer(layer());
    runtime.spawn(async move { axum::serve(listener, router).await.expect("serves") });
    println!("listening {port}");
    std::io::stdout().flush().expect("stdout");
    // Until the test closes stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    census
        .flush(Duration::from_secs(20))
        .expect("what was recorded is delivered");
    drop(runtime);
}
