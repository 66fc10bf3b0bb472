//! Sampling agrees across services: a census service at 25 % calls a second census service (a
//! process of its own) and the Python reference (Django with `OpencensusMiddleware` and a
//! `ProbabilitySampler` at the same rate), each sending to a loopback ingestion server of its
//! own. Every trace is recorded whole by all three or by none: a trace census drops reaches the
//! others with flag `00` and an id their samplers drop too, so that no downstream-only fragment
//! appears.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http_census_to_django::start_django_sampled;
use crate::http_support::*;
use axum::extract::State;
use axum::routing::get;
use census_runtime::Sampler;
use census_runtime::integrations::axum::layer;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_tests::azure::scratch_dir;
use census_tests::ingestion::IngestionServer;
use reqwest_middleware::ClientWithMiddleware;
use serde_json::Value;

const RATE: f64 = 0.25;
const REQUESTS: usize = 2_000;
const WORKERS: usize = 8;
/// The last request, sent with flag `01` once every other one was answered: recorded by all,
/// after everything else each of them recorded.
const SENTINEL: &str = "5e471ae15e471ae15e471ae15e471ae1";

/// The second census service, stopped however the test ends.
struct CensusService(Child);

impl CensusService {
    fn start(ingestion: &IngestionServer) -> (CensusService, u16) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_census_service"))
            .args([
                ingestion.connection_string(),
                scratch_dir("census-service").display().to_string(),
                RATE.to_string(),
                "-".to_owned(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the census service starts");
        let stdout = child.stdout.take().expect("its stdout");
        let service = CensusService(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the census service says where it listens");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("not a port: {line:?}"));
        (service, port)
    }

    /// Closes its stdin: it flushes and exits.
    fn finish(mut self) {
        drop(self.0.stdin.take());
        let status = self.0.wait().expect("the census service exits");
        assert!(status.success(), "the census service failed: {status}");
    }
}

impl Drop for CensusService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone)]
struct Upstream {
    client: ClientWithMiddleware,
    leaf: String,
    django: String,
}

/// The upstream service's handler: the second census service, then Django.
async fn order(State(app): State<Upstream>) -> String {
    let mut answers = String::new();
    for url in [&app.leaf, &app.django] {
        let response = app.client.get(url).send().await.expect("answers");
        assert_eq!(response.status(), 200, "{url}");
        answers.push_str(&response.text().await.expect("a body"));
    }
    answers
}

/// The operation ids of the requests named `name`, without the sentinel's.
fn operations(items: &[Value], kind: &str, name: &str) -> BTreeSet<String> {
    items
        .iter()
        .filter(|item| item["name"] == kind && base_data(item)["name"] == name)
        .map(|item| operation(item).to_owned())
        .filter(|op| op != SENTINEL)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_25_percent_everywhere_every_trace_is_whole_in_every_service_or_absent_from_all() {
    let upstream_ingestion = IngestionServer::start().unwrap();
    let service_ingestion = IngestionServer::start().unwrap();
    let django_ingestion = IngestionServer::start().unwrap();
    let (_django, django_port) = start_django_sampled(&django_ingestion, RATE);
    let (service, service_port) = CensusService::start(&service_ingestion);
    let pipeline =
        install_azure_sampled(&upstream_ingestion, "upstream", Sampler::probability(RATE));
    let upstream = serve_axum(|_| {
        axum::Router::new()
            .route("/order", get(order))
            .with_state(Upstream {
                client: reqwest_client(ReqwestMiddleware::new()),
                leaf: format!("http://127.0.0.1:{service_port}/leaf"),
                django: format!("http://127.0.0.1:{django_port}/hello"),
            })
            .layer(layer())
    })
    .await;

    // Callers with no trace of their own: the upstream service decides each trace.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{upstream}/order");
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (plain, url) = (plain.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..REQUESTS / WORKERS {
                    let response = plain.get(&url).send().await.expect("the upstream answers");
                    assert_eq!(response.status(), 200);
                    assert_eq!(response.text().await.unwrap(), "leafhello from django");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a worker");
    }
    let sentinel = plain
        .get(&url)
        .header("traceparent", format!("00-{SENTINEL}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(sentinel.status(), 200);

    pipeline.flush(Duration::from_secs(30)).unwrap();
    service.finish();
    let has_sentinel = |items: &[Value]| items.iter().any(|item| operation(item) == SENTINEL);
    let upstream_items = wait_for(&upstream_ingestion, has_sentinel);
    let service_items = wait_for(&service_ingestion, has_sentinel);
    let django_items = wait_for(&django_ingestion, has_sentinel);

    let kept = operations(&upstream_items, REQUEST, "GET /order");
    println!(
        "kept {} of {REQUESTS}; items: upstream {}, census service {}, Django {}",
        kept.len(),
        upstream_items.len(),
        service_items.len(),
        django_items.len()
    );
    // 500 expected; the standard deviation is 19.4: within five of them.
    assert!(
        (400..=600).contains(&kept.len()),
        "{} of {REQUESTS} traces kept at {RATE}",
        kept.len()
    );
    assert_eq!(operations(&upstream_items, DEPENDENCY, "GET /leaf"), kept);
    assert_eq!(operations(&upstream_items, DEPENDENCY, "GET /hello"), kept);
    let in_service = operations(&service_items, REQUEST, "GET /leaf");
    let in_django = operations(&django_items, REQUEST, "GET /hello");
    let fragments = |downstream: &BTreeSet<String>| downstream.difference(&kept).count();
    let missing = |downstream: &BTreeSet<String>| kept.difference(downstream).count();
    assert_eq!(
        (fragments(&in_service), missing(&in_service)),
        (0, 0),
        "the census service: traces of its own, traces missing"
    );
    assert_eq!(
        (fragments(&in_django), missing(&in_django)),
        (0, 0),
        "Django: traces of its own, traces missing"
    );
    // Nothing else arrived downstream, and each downstream request is the child of its call.
    for items in [&service_items, &django_items] {
        for item in items.iter() {
            let op = operation(item);
            assert!(op == SENTINEL || kept.contains(op), "{op} only downstream");
        }
    }
    for request in service_items
        .iter()
        .filter(|item| item["name"] == REQUEST && operation(item) != SENTINEL)
    {
        let call = upstream_items
            .iter()
            .find(|item| {
                item["name"] == DEPENDENCY
                    && base_data(item)["name"] == "GET /leaf"
                    && operation(item) == operation(request)
            })
            .expect("the call");
        assert_eq!(parent(request), Some(id(call)));
    }
}
