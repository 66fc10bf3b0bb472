//! The schema's required fields, end to end: a program that leaves each of them empty (an empty
//! log message, a `tracing` event without one, an event, a span, a request and a metric named
//! `""`, an error whose `Display` writes nothing, a panic with an empty message, a blank result
//! code, an empty property key) loses nothing against the strict ingestion server, which
//! refuses, as ingestion does, an item whose required field is empty; and a key given twice is
//! written once.

use std::time::Duration;

use census_runtime::integrations::metrics::CensusRecorder;
use census_runtime::{current_span, dependency, inproc};
use census_tests::azure::install_azure;
use census_tests::ingestion::{IngestionServer, schema_violations};
use serde_json::{Value, json};

/// An error that says nothing.
#[derive(Debug)]
struct Silent;

impl std::fmt::Display for Silent {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Silent {}

#[dependency(kind = "SQL", target = "orders-db", exception)]
fn silent_query() -> Result<(), Silent> {
    Err(Silent)
}

#[inproc]
fn panics_with_nothing_to_say() {
    std::panic::panic_any(String::new());
}

/// The items of `base_type` the server received.
fn of<'a>(items: &'a [Value], base_type: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|item| item["data"]["baseType"] == base_type)
        .collect()
}

#[test]
fn empty_required_fields_lose_nothing_against_the_strict_server() {
    crate::bridges::install();
    CensusRecorder::new().install().unwrap();
    // Quiet panics; census chains its own hook to this one at install.
    std::panic::set_hook(Box::new(|_| {}));
    let server = IngestionServer::start().unwrap();
    server.strict();
    let census = install_azure(&server, "required");

    census_runtime::request("").in_scope(|| {
        current_span().set_result_code(" ");
        current_span().set_property("attempt", 1);
        current_span().set_property("attempt", 2);
        census_runtime::span("").in_scope(|| {});
        let _ = silent_query();
        let _ = std::panic::catch_unwind(panics_with_nothing_to_say);
        log::info!("");
        log::warn!(level = "audit"; "with a key-value named as a property census gives");
        tracing::info!(order = 7);
        census_runtime::event("")
            .property("channel", "web")
            .property("channel", "app")
            .property("", "no key")
            .send();
    });
    metrics::counter!("").increment(1);
    census.flush(Duration::from_secs(20)).unwrap();
    drop(std::panic::take_hook());
    let items = server.items();

    assert_eq!(server.item_errors(), Vec::new(), "no item was refused");
    assert_eq!(server.accepted().len(), items.len());
    for item in &items {
        assert_eq!(schema_violations(item), Vec::<String>::new());
    }
    // What each empty field became.
    let request = of(&items, "RequestData")[0];
    assert_eq!(request["data"]["baseData"]["name"], "n/a");
    assert_eq!(request["data"]["baseData"]["responseCode"], "n/a");
    assert_eq!(request["data"]["baseData"]["properties"]["attempt"], "2");
    let dependencies = of(&items, "RemoteDependencyData");
    assert!(
        dependencies
            .iter()
            .any(|d| d["data"]["baseData"]["name"] == "n/a"),
        "the span named \"\""
    );
    let exceptions = of(&items, "ExceptionData");
    assert_eq!(exceptions.len(), 2, "the silent error and the panic");
    for exception in &exceptions {
        let first = &exception["data"]["baseData"]["exceptions"][0];
        assert_eq!(first["message"], "n/a", "{exception}");
    }
    let messages = of(&items, "MessageData");
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let said: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["data"]["baseData"]["message"].as_str())
        .collect();
    assert_eq!(said.iter().filter(|m| **m == "n/a").count(), 2, "{said:?}");
    let warning = messages
        .iter()
        .find(|m| m["data"]["baseData"]["severityLevel"] == 2)
        .unwrap();
    assert_eq!(warning["data"]["baseData"]["properties"]["level"], "audit");
    let event = of(&items, "EventData")[0];
    assert_eq!(event["data"]["baseData"]["name"], "n/a");
    assert_eq!(event["data"]["baseData"]["properties"]["channel"], "app");
    assert_eq!(event["data"]["baseData"]["properties"]["n/a"], "no key");
    let metric = of(&items, "MetricData")
        .into_iter()
        .find(|m| m["data"]["baseData"]["metrics"][0]["name"] == "n/a")
        .expect("the metric named \"\"");
    assert_eq!(metric["data"]["baseData"]["metrics"][0]["value"], 1.0);
}

#[test]
fn the_strict_server_refuses_an_empty_required_field_as_ingestion_does() {
    let server = IngestionServer::start().unwrap();
    server.strict();
    let message = |text: &str| {
        crate::azure_limits::envelope(
            "Message",
            json!({"ai.cloud.role": "orders"}),
            json!({"ver": 2, "message": text, "severityLevel": 1, "properties": {}}),
        )
    };
    let (status, answer) =
        crate::azure_limits::post(&server, &[message("order placed"), message("")]);
    assert_eq!(status, 206);
    assert_eq!(
        answer,
        json!({
            "itemsReceived": 2,
            "itemsAccepted": 1,
            "errors": [{
                "index": 1,
                "statusCode": 400,
                "message": "Field 'message' on type 'MessageData' is required but missing or empty. Expected: string, Actual: "
            }]
        })
    );
}
