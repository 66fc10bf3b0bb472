//! The envelopes census sends have the shape of the reference exporter's, kind by kind: the same
//! key paths with the same JSON types as the captures of opencensus-ext-azure
//! (`tests/reference/captures/`), with the documented deliberate differences; a span's links are
//! written as the reference writes them.

use std::path::PathBuf;
use std::time::Duration;

use census_runtime::{Sampler, SpanContext, SpanId, TraceId};
use census_tests::azure::{
    KindShape, every_kind_of_span, install_azure, scratch_dir, settings, shape_differences, shapes,
    side_by_side, spans,
};
use census_tests::ingestion::IngestionServer;
use serde_json::Value;

/// Paths census writes that the reference does not, on purpose (reference README): the
/// sampling rate when sampling is below 100 %, the parent of an Exception (its span), and the
/// operation name on any item of an operation whose name is known.
const EXTRA: &[&str] = &[
    "sampleRate",
    // The reference (opencensus-ext-django) writes its traceback as a string in `parsedStack`;
    // census writes the schema's frames.
    "data.baseData.exceptions[].parsedStack",
    "data.baseData.exceptions[].parsedStack[]",
    "data.baseData.exceptions[].parsedStack[].level",
    "data.baseData.exceptions[].parsedStack[].method",
    "data.baseData.exceptions[].parsedStack[].fileName",
    "data.baseData.exceptions[].parsedStack[].line",
    // With a captured backtrace (RUST_BACKTRACE), its text too.
    "data.baseData.exceptions[].stack",
    "tags.ai.operation.parentId",
    "tags.ai.operation.name",
];
/// Paths every reference envelope of a kind had (they all came from a web framework or an
/// HTTP call) that census writes only when it knows them.
const OPTIONAL: &[&str] = &["tags.ai.operation.name", "tags.ai.operation.parentId"];

fn reference_envelopes() -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/captures");
    let mut envelopes = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the reference captures are in the repository") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with('s') && name.ends_with(".json")) {
            continue;
        }
        let capture: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        envelopes.extend(capture["envelopes"].as_array().unwrap().iter().cloned());
    }
    assert!(
        envelopes.len() > 100,
        "the captures hold the reference's envelopes"
    );
    envelopes
}

fn census_envelopes() -> Vec<Value> {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(
            settings(&server, &scratch_dir("envelopes"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    every_kind_of_span();
    census.flush(Duration::from_secs(10)).unwrap();
    server.items()
}

fn check(kind: &str, census: &KindShape, reference: &KindShape) {
    let problems = shape_differences(census, reference, EXTRA, OPTIONAL);
    assert!(
        problems.is_empty(),
        "{kind} differs from the reference:\n{}\n{}",
        problems.join("\n"),
        side_by_side(census, reference)
    );
}

#[test]
fn every_kind_census_sends_has_the_reference_shape() {
    let reference = shapes(&reference_envelopes());
    let envelopes = census_envelopes();
    let census = shapes(&envelopes);
    for kind in [
        "Microsoft.ApplicationInsights.RemoteDependency",
        "Microsoft.ApplicationInsights.Request",
        "Microsoft.ApplicationInsights.Exception",
    ] {
        let ours = census
            .get(kind)
            .unwrap_or_else(|| panic!("census sent no {kind}"));
        check(kind, ours, &reference[kind]);
    }
    assert_eq!(census.len(), 3, "no other kind: {:?}", census.keys());
}

fn base(envelope: &Value) -> &Value {
    &envelope["data"]["baseData"]
}

fn named<'a>(envelopes: &'a [Value], name: &str) -> &'a Value {
    envelopes
        .iter()
        .find(|e| base(e)["name"] == name)
        .unwrap_or_else(|| panic!("no envelope named {name}"))
}

fn is_hex(value: &Value, digits: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn envelope_values_follow_the_specification() {
    let envelopes = census_envelopes();
    for envelope in &envelopes {
        assert_eq!(envelope["iKey"], "00000000-0000-0000-0000-000000000001");
        let time = envelope["time"].as_str().unwrap();
        assert_eq!(time.len(), 27, "{time}: RFC 3339, microseconds, Z");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T');
        let tags = &envelope["tags"];
        assert_eq!(tags["ai.cloud.role"], "orders-api");
        assert!(
            tags["ai.internal.sdkVersion"]
                .as_str()
                .unwrap()
                .starts_with("rust")
        );
        assert!(is_hex(&tags["ai.operation.id"], 32));
        assert_eq!(base(envelope)["ver"], 2);
        assert!(envelope.get("sampleRate").is_none(), "sampling is 100 %");
    }

    let parent = named(&envelopes, "inproc-parent");
    let child = named(&envelopes, "inproc-child");
    assert_eq!(base(parent)["type"], "INPROC");
    assert!(is_hex(&base(parent)["id"], 16));
    assert!(parent["tags"].get("ai.operation.parentId").is_none());
    assert_eq!(child["tags"]["ai.operation.parentId"], base(parent)["id"]);
    assert_eq!(
        child["tags"]["ai.operation.id"],
        parent["tags"]["ai.operation.id"]
    );
    assert_eq!(base(child)["properties"]["order.id"], "7");
    let duration = base(child)["duration"].as_str().unwrap();
    assert!(
        duration.starts_with("0.00:00:") && duration.len() == 17,
        "{duration}"
    );

    let sql = base(named(&envelopes, "load-order"));
    assert_eq!(
        (&sql["type"], &sql["target"], &sql["data"]),
        (
            &Value::from("SQL"),
            &Value::from("orders-db"),
            &Value::from("SELECT * FROM orders WHERE id = ?")
        )
    );
    assert_eq!(
        (&sql["success"], &sql["resultCode"]),
        (&Value::from(true), &Value::from("0"))
    );

    let charge = base(named(&envelopes, "charge"));
    assert_eq!(charge["success"], false, "an Err fails the span");
    assert_eq!(charge["properties"]["error.message"], "card declined");

    let explodes = named(&envelopes, "explodes");
    assert_eq!(
        base(explodes)["success"],
        false,
        "a panic fails the span, unlike the reference"
    );
    assert_eq!(base(explodes)["resultCode"], "panic");
    let exception = envelopes
        .iter()
        .find(|e| {
            e["name"] == "Microsoft.ApplicationInsights.Exception"
                && e["tags"]["ai.operation.parentId"] == base(explodes)["id"]
        })
        .expect("the panic is an Exception too");
    let detail = &exception["data"]["baseData"]["exceptions"][0];
    assert_eq!(detail["message"], "boom from inside a span");
    // The schema's frames, where the reference writes its Python traceback as one string.
    assert!(
        detail["parsedStack"][0]["fileName"]
            .as_str()
            .unwrap()
            .ends_with("azure.rs")
    );
    assert!(detail["parsedStack"][0]["line"].as_u64().unwrap() > 0);

    let request = envelopes
        .iter()
        .find(|e| e["name"] == "Microsoft.ApplicationInsights.Request")
        .unwrap();
    assert_eq!(
        request["tags"]["ai.operation.id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(request["tags"]["ai.operation.parentId"], "00f067aa0ba902b7");
    assert_eq!(request["tags"]["ai.operation.name"], "GET /orders/{id}");
    assert_eq!(base(request)["name"], "GET /orders/{id}");
    assert_eq!(base(request)["url"], "http://127.0.0.1:8080/orders/7");
    assert_eq!(base(request)["responseCode"], "500");
    assert_eq!(base(request)["success"], false);
    let under = named(&envelopes, "inproc-under-request");
    assert_eq!(under["tags"]["ai.operation.parentId"], base(request)["id"]);

    // The exporter's own HTTP calls are not instrumented: nothing but these spans arrived.
    assert!(envelopes.iter().all(|e| base(e)["type"] != "HTTP"));
    assert_eq!(envelopes.len(), 9, "seven spans and two Exceptions");
}

#[test]
fn sample_rate_is_sent_when_sampling_is_below_100_percent() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .sampler(Sampler::probability(0.5))
        .exporter(
            settings(&server, &scratch_dir("sample-rate"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("sampled", 200);
    census.flush(Duration::from_secs(10)).unwrap();
    let items = server.items();
    assert!(
        !items.is_empty() && items.len() < 200,
        "about half: {}",
        items.len()
    );
    for item in &items {
        assert_eq!(item["sampleRate"], 50.0);
    }
}

/// The reference's span linked to another (`with_link`, in `s01_inproc`): the span it links
/// to, and its `_MS.links` property as sent.
fn reference_link() -> (SpanContext, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/captures/s01_inproc.json");
    let capture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let linked = capture["envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| base(e)["name"] == "with_link")
        .expect("the reference linked a span");
    let links = base(linked)["properties"]["_MS.links"]
        .as_str()
        .expect("its links, a string")
        .to_owned();
    let parsed: Value = serde_json::from_str(&links).expect("a JSON array");
    let to = SpanContext::new(
        TraceId::from_hex(parsed[0]["operation_Id"].as_str().unwrap()).unwrap(),
        SpanId::from_hex(parsed[0]["id"].as_str().unwrap()).unwrap(),
        true,
    );
    (to, links)
}

#[test]
fn a_span_is_linked_to_another_as_the_reference_links_it() {
    let (to, reference) = reference_link();
    let server = IngestionServer::start().unwrap();
    let census = install_azure(&server, "links");
    census_runtime::span("with_link").link(to).in_scope(|| {});
    census_runtime::span("linked_once_started")
        .in_scope(|| census_runtime::current_span().add_link(to));
    census_runtime::span("not_linked").in_scope(|| {});
    census.flush(Duration::from_secs(10)).unwrap();

    let envelopes = server.items();
    for name in ["with_link", "linked_once_started"] {
        let links = &base(named(&envelopes, name))["properties"]["_MS.links"];
        assert_eq!(links.as_str(), Some(reference.as_str()), "{name}");
    }
    assert!(base(named(&envelopes, "not_linked"))["properties"]["_MS.links"].is_null());
}
