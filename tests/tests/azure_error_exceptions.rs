//! An `Err` as an Exception item too: with the attribute's `exception` option, or for every
//! function with the pipeline's `errors_as_exceptions`, carrying the error's chain of
//! `source()`s, tied to the span it failed; without either, the span alone is failed.

use std::time::Duration;

use census_runtime::{dependency, inproc};
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::IngestionServer;
use serde_json::Value;

#[derive(Debug)]
struct Timeout;

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no answer in 5 s")
    }
}

impl std::error::Error for Timeout {}

#[derive(Debug)]
struct QueryFailed {
    source: Timeout,
}

impl std::fmt::Display for QueryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loading the order failed")
    }
}

impl std::error::Error for QueryFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[dependency(kind = "SQL", target = "orders-db", exception)]
fn load_order() -> Result<(), QueryFailed> {
    Err(QueryFailed { source: Timeout })
}

#[inproc(exception)]
async fn price() -> Result<u32, String> {
    Err("no price for caviar".to_owned())
}

#[dependency(kind = "SQL", target = "orders-db")]
fn load_quietly() -> Result<(), QueryFailed> {
    Err(QueryFailed { source: Timeout })
}

/// The accepted items after `run`, through a strict server.
fn items(name: &str, everywhere: bool, run: impl FnOnce()) -> Vec<Value> {
    let server = IngestionServer::start().unwrap();
    server.strict();
    let census = census_runtime::pipeline()
        .errors_as_exceptions(everywhere)
        .exporter(settings(&server, &scratch_dir(name)).build().unwrap())
        .install()
        .unwrap();
    run();
    census.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(server.item_errors(), Vec::new());
    server.accepted()
}

fn span_named<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["data"]["baseData"]["name"] == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

fn exceptions_under<'a>(items: &'a [Value], span: &Value) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|i| {
            i["data"]["baseType"] == "ExceptionData"
                && i["tags"]["ai.operation.parentId"] == span["data"]["baseData"]["id"]
        })
        .collect()
}

#[test]
fn the_exception_option_sends_the_error_and_its_sources() {
    let items = items("errors-option", false, || {
        let _ = load_order();
        let _ = load_quietly();
        let runtime = census_tests::multi_thread_runtime(1);
        let _ = runtime.block_on(price());
    });

    let load = span_named(&items, "load_order");
    assert_eq!(load["data"]["baseData"]["success"], false);
    assert_eq!(load["data"]["baseData"]["resultCode"], "QueryFailed");
    let found = exceptions_under(&items, load);
    assert_eq!(found.len(), 1);
    let exception = found[0];
    assert_eq!(
        exception["tags"]["ai.operation.id"],
        load["tags"]["ai.operation.id"]
    );
    assert_eq!(exception["data"]["baseData"]["severityLevel"], 3);
    let chain = exception["data"]["baseData"]["exceptions"]
        .as_array()
        .unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0]["typeName"], "QueryFailed");
    assert_eq!(chain[0]["message"], "loading the order failed");
    assert_eq!(
        (chain[0]["id"].as_u64(), chain[0]["outerId"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(chain[1]["typeName"], "Timeout");
    assert_eq!(chain[1]["message"], "no answer in 5 s");
    assert_eq!(
        (chain[1]["id"].as_u64(), chain[1]["outerId"].as_u64()),
        (Some(2), Some(1))
    );

    // An error that is only `Display`: itself alone.
    let price = span_named(&items, "price");
    let found = exceptions_under(&items, price);
    assert_eq!(found.len(), 1);
    let chain = found[0]["data"]["baseData"]["exceptions"]
        .as_array()
        .unwrap();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0]["typeName"], "String");
    assert_eq!(chain[0]["message"], "no price for caviar");

    // Without the option, the span is failed and nothing more.
    let quiet = span_named(&items, "load_quietly");
    assert_eq!(quiet["data"]["baseData"]["success"], false);
    assert!(exceptions_under(&items, quiet).is_empty());
}

#[test]
fn the_pipeline_setting_sends_every_err() {
    let items = items("errors-everywhere", true, || {
        let _ = load_quietly();
    });
    let quiet = span_named(&items, "load_quietly");
    let found = exceptions_under(&items, quiet);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["data"]["baseData"]["exceptions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
