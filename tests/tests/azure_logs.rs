//! Log records, exceptions and custom events as Application Insights envelopes, through the
//! loopback ingestion server: the shapes of the Python reference's (`s11_logs.json`) where census
//! does not deliberately differ, their values, the user an item names sent as its user tags, a
//! `tracing` request given its caller's `traceparent` sent in the caller's operation, and
//! census's own warnings never sent, even while the endpoint fails.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use census_runtime::integrations::log::LogBridge;
use census_tests::azure::{scratch_dir, settings, shape_differences, shapes, side_by_side};
use census_tests::ingestion::{IngestionServer, Reply};
use serde_json::Value;

const MESSAGE: &str = "Microsoft.ApplicationInsights.Message";
const EXCEPTION: &str = "Microsoft.ApplicationInsights.Exception";
const EVENT: &str = "Microsoft.ApplicationInsights.Event";
const REQUEST: &str = "Microsoft.ApplicationInsights.Request";
/// The stack the `tracing` error event gives, as the OpenTelemetry conventions' field.
const STACK: &str = "at orders::price (src/price.rs:12)\nat orders::main (src/main.rs:3)";

/// The reference's log, exception and event envelopes.
fn reference() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/captures/s11_logs.json");
    let capture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    capture["envelopes"].as_array().unwrap().clone()
}

#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("card declined")
    }
}

impl std::error::Error for Declined {}

/// What the scenario of the reference writes, through census: a record outside any span, a
/// span with a record, an error (a `tracing` event's and a `log` record's) and an event in it.
fn census_envelopes(name: &str) -> (Vec<Value>, String) {
    crate::bridges::install();
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(settings(&server, &scratch_dir(name)).build().unwrap())
        .install()
        .unwrap();
    log::warn!("outside any span");
    let span_id = census_runtime::request("GET /orders").in_scope(|| {
        log::info!(sku = "caviar"; "pricing");
        tracing::error!(
            error = &Declined as &dyn std::error::Error,
            exception.stacktrace = STACK,
            "pricing failed"
        );
        log::error!(err:err = Declined, order = 7; "charging failed");
        census_runtime::event("order_placed")
            .property("sku", "caviar")
            .measurement("total", 12.5)
            .send();
        census_runtime::current_span().context().unwrap().span_id()
    });
    census.flush(Duration::from_secs(10)).unwrap();
    (server.items(), span_id.to_string())
}

fn by_name<'a>(envelopes: &'a [Value], name: &str) -> Vec<&'a Value> {
    envelopes.iter().filter(|e| e["name"] == name).collect()
}

#[test]
fn logs_exceptions_and_events_have_the_reference_shape() {
    let reference = shapes(&reference());
    let (envelopes, _) = census_envelopes("logs-shape");
    let census = shapes(&envelopes);
    // On purpose (reference README): a record outside any span carries no operation, and the
    // parent is the bare span id; the operation name is added where known; the reference's
    // exception has a parsed Python stack, which a Rust error value has not.
    // A stack given as text is sent as `stack`, which the reference's parsed Python stacks
    // leave out.
    let extra = [
        "tags.ai.operation.name",
        "sampleRate",
        "data.baseData.exceptions[].stack",
    ];
    let optional = [
        "tags.ai.operation.id",
        "tags.ai.operation.parentId",
        "data.baseData.exceptions[].parsedStack",
        "data.baseData.exceptions[].parsedStack[]",
        "data.baseData.exceptions[].parsedStack[].level",
        "data.baseData.exceptions[].parsedStack[].method",
        "data.baseData.exceptions[].parsedStack[].fileName",
        "data.baseData.exceptions[].parsedStack[].line",
    ];
    // The reference puts an event's number among its properties, which the schema types as
    // strings: census sends it as a measurement, and properties as strings.
    let event_extra = [
        extra.as_slice(),
        &[
            "data.baseData.measurements.total",
            "data.baseData.properties.*",
        ],
    ]
    .concat();
    for kind in [MESSAGE, EXCEPTION, EVENT] {
        let ours = census
            .get(kind)
            .unwrap_or_else(|| panic!("census sent no {kind}"));
        let extra = if kind == EVENT {
            &event_extra[..]
        } else {
            &extra[..]
        };
        let problems = shape_differences(ours, &reference[kind], extra, &optional);
        assert!(
            problems.is_empty(),
            "{kind} differs from the reference:\n{}\n{}",
            problems.join("\n"),
            side_by_side(ours, &reference[kind])
        );
    }
}

#[test]
fn log_envelopes_carry_their_severity_source_properties_and_operation() {
    let (envelopes, span_id) = census_envelopes("logs-values");
    let messages = by_name(&envelopes, MESSAGE);
    let outside = messages
        .iter()
        .find(|e| e["data"]["baseData"]["message"] == "outside any span")
        .expect("the record outside any span");
    assert_eq!(outside["data"]["baseData"]["severityLevel"], 2);
    assert!(
        outside["tags"].get("ai.operation.id").is_none(),
        "no operation outside any span: {outside}"
    );
    let pricing = messages
        .iter()
        .find(|e| e["data"]["baseData"]["message"] == "pricing")
        .expect("the record in the request");
    let base = &pricing["data"]["baseData"];
    assert_eq!(base["severityLevel"], 1);
    assert_eq!(base["properties"]["sku"], "caviar");
    assert_eq!(base["properties"]["level"], "INFO");
    assert_eq!(base["properties"]["target"], module_path!());
    assert!(
        base["properties"]["fileName"]
            .as_str()
            .is_some_and(|f| f.ends_with("azure_logs.rs"))
    );
    assert_eq!(pricing["tags"]["ai.operation.parentId"], span_id.as_str());
    assert_eq!(pricing["tags"]["ai.operation.name"], "GET /orders");

    let exceptions = by_name(&envelopes, EXCEPTION);
    for (message, property) in [
        ("pricing failed: card declined", None),
        ("charging failed: card declined", Some("7")),
    ] {
        let exception = exceptions
            .iter()
            .find(|e| e["data"]["baseData"]["exceptions"][0]["message"] == message)
            .unwrap_or_else(|| panic!("no Exception {message:?} in {exceptions:#?}"));
        let base = &exception["data"]["baseData"];
        assert_eq!(base["exceptions"][0]["typeName"], "Declined");
        // The `tracing` event gave its stack; the `log` record none.
        let stack = property.is_none().then_some(STACK);
        assert_eq!(base["exceptions"][0]["stack"].as_str(), stack);
        assert_eq!(base["exceptions"][0]["hasFullStack"], stack.is_some());
        assert!(base["properties"].get("exception.stacktrace").is_none());
        assert_eq!(base["severityLevel"], 3);
        assert_eq!(
            base["properties"].get("order").and_then(|v| v.as_str()),
            property
        );
        assert_eq!(exception["tags"]["ai.operation.parentId"], span_id.as_str());
    }

    let event = by_name(&envelopes, EVENT)[0];
    let base = &event["data"]["baseData"];
    assert_eq!(base["name"], "order_placed");
    assert_eq!(base["properties"]["sku"], "caviar");
    assert_eq!(base["measurements"]["total"], 12.5);
    assert_eq!(event["tags"]["ai.operation.parentId"], span_id.as_str());
}

/// A logger the application had: keeps what it is given.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<String>>>);

impl log::Log for Printed {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

#[test]
fn census_s_own_warnings_are_printed_but_never_sent_while_the_endpoint_fails() {
    let printed = Printed::default();
    LogBridge::new()
        .level(log::LevelFilter::Trace)
        .forward_to(printed.clone(), log::LevelFilter::Trace)
        .install()
        .unwrap();
    let server = IngestionServer::start().unwrap();
    server.set_default(Reply::status(503));
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("logs-feedback"))
                .build()
                .unwrap(),
        )
        .install()
        .unwrap();
    for round in 0..5 {
        log::info!("the application's line {round}");
        let _ = census.flush(Duration::from_millis(300));
    }
    assert!(
        printed
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.starts_with("census_core")),
        "census warned about the failing endpoint"
    );
    server.set_default(Reply::ok());
    census.flush(Duration::from_secs(10)).unwrap();

    let sent: Vec<String> = server
        .items()
        .iter()
        .filter(|e| e["name"] == MESSAGE)
        .map(|e| {
            e["data"]["baseData"]["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        sent.iter().all(|m| m.starts_with("the application's line")),
        "only the application's records were sent: {sent:#?}"
    );
    let accepted = server
        .accepted()
        .iter()
        .filter(|e| e["name"] == MESSAGE)
        .count();
    assert_eq!(accepted, 5, "every application record is delivered once");
}

#[test]
fn the_user_an_item_names_is_sent_as_its_user_tag() {
    crate::bridges::install();
    let server = IngestionServer::start().unwrap();
    let census = census_tests::azure::install_azure(&server, "users");
    {
        let request = tracing::info_span!(
            "checkout",
            otel.kind = "server",
            enduser.id = "ada@example.com",
            enduser.pseudo.id = "a-1",
        );
        let _request = request.enter();
        tracing::info!(enduser.id = "ada@example.com", "order placed");
        // `log`'s macros take a key with dots as a literal.
        log::info!("enduser.id" = "ada@example.com"; "order paid");
        census_runtime::event("order_placed")
            .property(
                census_runtime::export::AUTHENTICATED_USER_PROPERTY,
                "ada@example.com",
            )
            .send();
    }
    census.flush(Duration::from_secs(20)).unwrap();
    let items = server.items();
    let request = by_name(&items, REQUEST)[0];
    assert_eq!(request["tags"]["ai.user.id"], "a-1");
    for (name, count) in [(REQUEST, 1), (MESSAGE, 2), (EVENT, 1)] {
        let named = by_name(&items, name);
        assert_eq!(named.len(), count, "{name}");
        for item in named {
            assert_eq!(
                item["tags"]["ai.user.authUserId"], "ada@example.com",
                "{item}"
            );
            let properties = item["data"]["baseData"]["properties"].as_object().unwrap();
            assert!(
                properties.keys().all(|key| !key.starts_with("enduser.")),
                "{item}"
            );
        }
    }
}

#[test]
fn a_tracing_request_given_its_callers_traceparent_is_sent_in_the_callers_operation() {
    crate::bridges::install();
    let server = IngestionServer::start().unwrap();
    let census = census_tests::azure::install_azure(&server, "traceparent-field");
    {
        let request = tracing::info_span!(
            "GET /orders",
            otel.kind = "server",
            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let _request = request.enter();
        tracing::info!("listing orders");
    }
    census.flush(Duration::from_secs(20)).unwrap();
    let items = server.items();
    let one = |name: &str| {
        by_name(&items, name)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {items:#?}"))
    };
    let (request, message) = (one(REQUEST), one(MESSAGE));
    assert_eq!(
        request["tags"]["ai.operation.id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(request["tags"]["ai.operation.parentId"], "00f067aa0ba902b7");
    assert_eq!(
        message["tags"]["ai.operation.id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        message["tags"]["ai.operation.parentId"],
        request["data"]["baseData"]["id"]
    );
    let properties = request["data"]["baseData"]["properties"].as_object();
    assert!(
        properties.is_none_or(|properties| !properties.contains_key("traceparent")),
        "{request}"
    );
}
