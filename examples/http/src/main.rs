//! census's HTTP integrations, end to end on 127.0.0.1: an axum server behind the census layer,
//! called by a reqwest client, hyper-util's client behind the census tower layer, and ureq from
//! a blocking thread. The server itself calls out (to its own `/stock` route), so each client's
//! trace crosses two services' worth of hops. Every operation is printed as a tree.
//!
//! ```text
//! cargo run -p http-demo
//! ```

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use census_runtime::azure::AzureExporter;
use census_runtime::export::ConsoleExporter;
use census_runtime::integrations::axum::layer;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_runtime::integrations::tower::ClientLayer;
use census_runtime::integrations::ureq::UreqMiddleware;
use census_runtime::{Sampler, dependency, inproc};
use reqwest_middleware::ClientWithMiddleware;
use tower::ServiceExt;

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
    let stock = match app
        .client
        .get(format!("{}/stock/{id}", app.base))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(error) => format!("unknown ({error})"),
    };
    format!("order {id}: price {}, stock {stock}", price(id))
}

async fn stock(Path(id): Path<u64>) -> String {
    (id % 3).to_string()
}

fn reqwest_client() -> ClientWithMiddleware {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    reqwest_middleware::ClientBuilder::new(client)
        .with(ReqwestMiddleware::new())
        .build()
}

/// A repository whose methods call the orders API: each call nests inside its method.
struct OrdersApi {
    client: ClientWithMiddleware,
    base: String,
}

#[dependency(kind = "API", target = "orders-api")]
impl OrdersApi {
    async fn fetch(&self, id: u64) -> Result<String, reqwest_middleware::Error> {
        let url = format!("{}/orders/{id}", self.base);
        Ok(self.client.get(url).send().await?.text().await?)
    }
}

#[inproc]
async fn with_hyper(base: &str) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = tower::ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>());
    let request = http::Request::get(format!("{base}/orders/3")).body(Empty::new())?;
    Ok(client.oneshot(request).await?.status().as_u16())
}

#[inproc]
fn with_ureq(base: &str) -> Result<String, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .middleware(UreqMiddleware::new())
        .build()
        .into();
    agent
        .get(&format!("{base}/orders/4"))
        .call()?
        .body_mut()
        .read_to_string()
}

fn main() -> ExitCode {
    // An error (a bad connection string, say) is printed as its message, which names the part
    // that is wrong, rather than as a `Debug` value.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http-demo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut census = census_runtime::pipeline()
        .sampler(Sampler::always())
        .cloud_role("http-demo")
        .exporter(ConsoleExporter::stdout());
    // With APPLICATIONINSIGHTS_CONNECTION_STRING set, the spans go to Application Insights too.
    if let Some(azure) = AzureExporter::from_env()? {
        census = census.exporter(azure);
    }
    let census = census.install()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/orders/{id}", get(order))
            .route("/stock/{id}", get(stock))
            .with_state(App {
                client: reqwest_client(),
                base: base.clone(),
            })
            .layer(layer());
        tokio::spawn(async move { axum::serve(listener, app).await });

        println!("== reqwest, from a #[dependency] method");
        let api = OrdersApi {
            client: reqwest_client(),
            base: base.clone(),
        };
        println!("{}", api.fetch(7).await?);
        census.flush(Duration::from_secs(5))?;

        println!("\n== hyper-util's client behind the census tower layer");
        let status = with_hyper(&base).await.map_err(|e| e.to_string())?;
        println!("status {status}");
        census.flush(Duration::from_secs(5))?;

        println!("\n== ureq, from a blocking thread");
        let blocking_base = base.clone();
        let body = tokio::task::spawn_blocking(move || with_ureq(&blocking_base)).await??;
        println!("{body}");
        census.flush(Duration::from_secs(5))?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
