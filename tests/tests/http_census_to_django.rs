//! A census client (reqwest) calls a Django app traced by the reference `OpencensusMiddleware`
//! (opencensus-ext-django, from PyPI, in the venv `scripts/pyref-venv` makes); both send to the
//! same loopback ingestion server. Django's Request continues census's trace.

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::http_support::*;
use census_runtime::inproc;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_tests::azure::scratch_dir;
use census_tests::ingestion::IngestionServer;
use census_tests::python::{reference_python, repo};
use reqwest_middleware::ClientWithMiddleware;

/// Stops the Django server however the test ends.
pub(crate) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_django(ingestion: &IngestionServer) -> (Server, u16) {
    start_django_sampled(ingestion, 1.0)
}

/// The Django app, its `ProbabilitySampler` at `rate`, sending to `ingestion`; and its port.
pub(crate) fn start_django_sampled(ingestion: &IngestionServer, rate: f64) -> (Server, u16) {
    let python = reference_python();
    let port = closed_port();
    let child = Command::new(&python)
        .arg(repo().join("tests/python/django_app.py"))
        .args(["runserver", &format!("127.0.0.1:{port}"), "--noreload"])
        .env("CENSUS_INGESTION_PORT", ingestion.port().to_string())
        .env("CENSUS_STORAGE", scratch_dir("django-storage"))
        .env("CENSUS_SAMPLING_RATE", rate.to_string())
        .spawn()
        .expect("the Django app starts");
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("the Django app exited: {status}");
        }
        assert!(Instant::now() < deadline, "the Django app never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, port)
}

#[inproc]
async fn checkout(
    client: &ClientWithMiddleware,
    url: &str,
) -> Result<String, reqwest_middleware::Error> {
    Ok(client.get(url).send().await?.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_app_with_the_reference_middleware_continues_a_census_trace() {
    let ingestion = IngestionServer::start().unwrap();
    let (_django, port) = start_django(&ingestion);
    let pipeline = install_azure(&ingestion, "census-client");
    let client = reqwest_client(ReqwestMiddleware::new());
    let url = format!("http://127.0.0.1:{port}/hello");
    let body = checkout(&client, &url).await.unwrap();
    assert_eq!(body, "hello from django");
    pipeline.flush(Duration::from_secs(10)).unwrap();

    let items = wait_for(&ingestion, |items| {
        items.iter().any(|i| i["name"] == REQUEST) && items.len() >= 3
    });
    println!("{}", summary(&items));
    let outer = one(&items, DEPENDENCY, "checkout");
    let call = one(&items, DEPENDENCY, "GET /hello");
    let django = one(&items, REQUEST, "GET /hello");

    assert_eq!(call["tags"]["ai.cloud.role"], "census-client");
    assert_ne!(django["tags"]["ai.cloud.role"], "census-client");
    assert_eq!(parent(call), Some(id(outer)));
    assert_eq!(base_data(call)["resultCode"], "200");
    // Django's Request carries census's trace id and the census dependency as its parent.
    assert_eq!(operation(django), operation(call));
    assert_eq!(parent(django), Some(id(call)));
    assert_eq!(base_data(django)["responseCode"], "200");
}
