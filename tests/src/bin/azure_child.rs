//! A program the kill-and-restart test runs as a child process.
//!
//! `azure_child produce CONNECTION_STRING STORAGE_DIR N`: records N spans named `killed-{i}`
//! while the endpoint is down, waits until all of them are in local storage, prints `stored`,
//! then waits to be killed.
//!
//! `azure_child entra CONNECTION_STRING STORAGE_DIR N`: records N spans, flushing after each
//! (one request each), signed in as the environment says (`APPLICATIONINSIGHTS_AUTHENTICATION_STRING`
//! and the credential's variables; `CENSUS_TEST_CA_FILE` adds a root certificate to the client),
//! then prints `flushed=.. sent=.. token_refused=.. token_unavailable=..`.
//!
//! `azure_child deliver CONNECTION_STRING STORAGE_DIR N`: starts a pipeline that records
//! nothing new, waits until N envelopes were accepted (the batches the killed run left behind),
//! prints `delivered`, and exits.
//!
//! `azure_child resource CONNECTION_STRING STORAGE_DIR N`: sets no cloud role or instance in
//! code, records N spans named `resource-{i}`, flushes them and exits: the role, instance and
//! version come from the environment the test gives it.

use std::io::Write;
use std::time::{Duration, Instant};

use census_runtime::azure::AzureExporter;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, connection_string, storage, n] = &args[..] else {
        eprintln!("usage: azure_child produce|deliver CONNECTION_STRING STORAGE_DIR N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a number");
    let mut census = census_runtime::pipeline();
    if mode != "resource" {
        census = census.cloud_role("azure-child");
    }
    let mut azure = AzureExporter::builder()
        .connection_string(connection_string)
        // Its tests count the items spans make: no standard metrics among them.
        .standard_metrics(false)
        .storage_dir(storage)
        .send_interval(Duration::from_millis(20))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .timeout(Duration::from_secs(2));
    // The loopback HTTPS servers' authority (the Entra ID token endpoint of workload identity).
    if let Some(ca) = std::env::var_os("CENSUS_TEST_CA_FILE") {
        let pem = std::fs::read(ca).expect("the test authority's certificate");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the client builds");
        azure = azure.http_client(client);
    }
    let census = census
        .exporter(azure.build().expect("the Azure exporter builds"))
        .install()
        .expect("the pipeline installs");
    let deadline = Instant::now() + Duration::from_secs(60);
    match mode.as_str() {
        "produce" => {
            for i in 0..n {
                census_runtime::span(format!("killed-{i}")).in_scope(|| {});
            }
            while census_runtime::azure::diagnostics().stored < n {
                assert!(Instant::now() < deadline, "spans never reached storage");
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("stored");
            std::io::stdout().flush().expect("stdout");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "deliver" => {
            while census_runtime::azure::diagnostics().sent < n {
                assert!(Instant::now() < deadline, "stored batches never delivered");
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("delivered");
            drop(census);
        }
        "resource" => {
            for i in 0..n {
                census_runtime::span(format!("resource-{i}")).in_scope(|| {});
            }
            census
                .shutdown(Duration::from_secs(20))
                .expect("the spans are delivered");
        }
        "entra" => {
            let flush = Duration::from_millis(
                std::env::var("CENSUS_TEST_FLUSH_MS")
                    .ok()
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(10_000),
            );
            for i in 0..n {
                census_runtime::span(format!("entra-{i}")).in_scope(|| {});
                let _ = census.flush(flush);
            }
            let flushed = census.flush(flush);
            let d = census_runtime::azure::diagnostics();
            println!(
                "flushed={} sent={} token_refused={} token_unavailable={}",
                flushed.is_ok(),
                d.sent,
                d.token_refused,
                d.token_unavailable
            );
            let _ = census.shutdown(flush);
        }
        other => panic!("unknown mode {other}"),
    }
}
