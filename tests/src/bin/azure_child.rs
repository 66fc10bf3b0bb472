//! A program the kill-and-restart test runs as a child process.
//!
//! `azure_child produce CONNECTION_STRING STORAGE_DIR N`: records N spans named `killed-{i}`
//! while the endpoint is down, waits until all of them are in local storage, prints `stored`,
//! then waits to be killed.
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
    let census = census
        .exporter(
            AzureExporter::builder()
                .connection_string(connection_string)
                .storage_dir(storage)
                .send_interval(Duration::from_millis(20))
                .retry_backoff(Duration::from_millis(50), Duration::from_millis(300))
                .timeout(Duration::from_secs(2))
                .build()
                .expect("the Azure exporter builds"),
        )
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
        other => panic!("unknown mode {other}"),
    }
}
