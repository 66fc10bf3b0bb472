//! The Python reference (opencensus with opencensus-ext-requests, from PyPI, in the venv
//! `scripts/pyref-venv` makes) calls a census axum server; both send to the same loopback
//! ingestion server. census's Request continues the Python trace.

use std::process::Command;

use crate::http_support::*;
use axum::extract::Path;
use axum::routing::get;
use census_runtime::inproc;
use census_runtime::integrations::axum::layer;
use census_tests::azure::scratch_dir;
use census_tests::ingestion::IngestionServer;
use census_tests::python::{reference_python, repo};

#[inproc]
fn look_up(id: u64) -> u64 {
    id + 1
}

async fn order(Path(id): Path<u64>) -> String {
    format!("order {}", look_up(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_opencensus_client_is_continued_by_a_census_server() {
    let python = reference_python();
    let ingestion = IngestionServer::start().unwrap();
    let pipeline = install_azure(&ingestion, "census-server");
    let addr = serve_axum(|_| {
        axum::Router::new()
            .route("/orders/{id}", get(order))
            .layer(layer())
    })
    .await;

    let url = format!("http://{addr}/orders/7");
    let status = Command::new(&python)
        .arg(repo().join("tests/python/requests_client.py"))
        .arg(ingestion.port().to_string())
        .arg(&url)
        .arg(scratch_dir("python-client-storage"))
        .status()
        .expect("the Python client runs");
    assert!(status.success(), "the Python client failed");
    pipeline.flush(std::time::Duration::from_secs(10)).unwrap();

    let items = wait_for(&ingestion, |items| {
        items.iter().any(|i| i["name"] == REQUEST)
            && items
                .iter()
                .any(|i| i["data"]["baseData"]["name"] == "GET /orders/7")
    });
    println!("{}", summary(&items));
    let python_call = one(&items, DEPENDENCY, "GET /orders/7");
    let python_span = one(&items, DEPENDENCY, "python-caller");
    let request = one(&items, REQUEST, "GET /orders/{id}");
    let child = one(&items, DEPENDENCY, "look_up");

    assert_ne!(python_call["tags"]["ai.cloud.role"], "census-server");
    assert_eq!(request["tags"]["ai.cloud.role"], "census-server");
    assert_eq!(base_data(python_call)["type"], "HTTP");
    assert_eq!(parent(python_call), Some(id(python_span)));
    // The Python trace id is census's operation id; the Python dependency its parent.
    assert_eq!(operation(request), operation(python_call));
    assert_eq!(parent(request), Some(id(python_call)));
    assert_eq!(base_data(request)["url"], url);
    assert_eq!(base_data(request)["responseCode"], "200");
    assert_eq!(operation(child), operation(python_call));
    assert_eq!(parent(child), Some(id(request)));
}
