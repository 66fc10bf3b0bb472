//! The schema's field limits, end to end: a program that sets over-long values everywhere (the
//! span API, the attributes, the HTTP and SQLite integrations, log records, tracing events with
//! errors, custom events, panics, property keys, the cloud role) with multi-byte text across
//! every cut point loses nothing against the strict ingestion server, and that server does
//! reject the uncut form, with ingestion's answer.

use std::convert::Infallible;
use std::io::Read as _;
use std::time::Duration;

use bytes::Bytes;
use census_runtime::integrations::reqwest::ReqwestMiddleware;
use census_runtime::integrations::rusqlite::Connection;
use census_runtime::{current_span, dependency, inproc};
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::{IngestionServer, schema_violations, utf16_len};
use http_body_util::Full;
use serde_json::{Value, json};

/// Text of more than `limit` UTF-16 units whose characters are 1 to 4 bytes long in UTF-8, two
/// UTF-16 units for the emoji; `shift` moves where they fall around the cut, so that the fields of
/// one program see every alignment (a surrogate pair across the limit among them).
fn over(limit: usize, shift: usize) -> String {
    let mut text = "a".repeat(limit.saturating_sub(3 + shift % 4));
    let pattern = ["😀", "é", "€", "z", "\u{10348}"];
    let mut i = shift;
    while utf16_len(&text) <= limit + 40 {
        text.push_str(pattern[i % pattern.len()]);
        i += 1;
    }
    text
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

#[derive(Debug)]
struct Huge(String);

impl std::fmt::Display for Huge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Huge {}

#[dependency(kind = "SQL", target = "orders-db")]
fn failing_query(statement: &str) -> Result<(), Huge> {
    current_span().set_data(statement.to_owned());
    Err(Huge(over(9000, 1)))
}

#[inproc]
fn panicking(message: &str) {
    panic!("{message}");
}

async fn echo(
    _request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::from("ok")))
}

/// The fields each kind of item must have brought to its limit, `(baseType, path, limit)`.
const EXERCISED: &[(&str, &str, usize)] = &[
    ("RequestData", "name", 1024),
    ("RequestData", "url", 2048),
    ("RequestData", "responseCode", 1024),
    ("RemoteDependencyData", "name", 1024),
    ("RemoteDependencyData", "data", 8192),
    ("RemoteDependencyData", "type", 1024),
    ("RemoteDependencyData", "target", 1024),
    ("RemoteDependencyData", "resultCode", 1024),
    ("MessageData", "message", 32768),
    ("EventData", "name", 512),
    ("ExceptionData", "exceptions.message", 32768),
    ("ExceptionData", "exceptions.typeName", 1024),
    ("*", "properties.key", 150),
    ("*", "properties.value", 8192),
    ("EventData", "measurements.key", 150),
    ("*", "tags.ai.cloud.role", 256),
    ("*", "tags.ai.cloud.roleInstance", 256),
    ("*", "tags.ai.operation.name", 1024),
];

/// Every string field of `item` with the limit the strict server checks it against, as
/// `(path, value, limit)`.
fn limited_fields(item: &Value) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut push = |path: String, value: &Value, limit: usize| {
        if let Some(text) = value.as_str() {
            out.push((path, text.to_owned(), limit));
        }
    };
    for (key, value) in item["tags"].as_object().into_iter().flatten() {
        let limit = match key.as_str() {
            "ai.cloud.role" | "ai.cloud.roleInstance" | "ai.device.osVersion" => 256,
            "ai.device.locale" | "ai.device.type" | "ai.internal.sdkVersion" => 64,
            "ai.operation.id" | "ai.operation.parentId" => 128,
            _ => 1024,
        };
        push(format!("tags.{key}"), value, limit);
    }
    let base = &item["data"]["baseData"];
    for (field, limit) in [
        (
            "name",
            if item["data"]["baseType"] == "EventData" {
                512
            } else {
                1024
            },
        ),
        ("url", 2048),
        ("responseCode", 1024),
        ("resultCode", 1024),
        ("data", 8192),
        ("type", 1024),
        ("target", 1024),
        ("message", 32768),
    ] {
        push(field.to_owned(), &base[field], limit);
    }
    for map in ["properties", "measurements"] {
        for (key, value) in base[map].as_object().into_iter().flatten() {
            push(format!("{map}.key"), &Value::String(key.clone()), 150);
            push(format!("{map}.value"), value, 8192);
        }
    }
    for exception in base["exceptions"].as_array().into_iter().flatten() {
        push("exceptions.message".into(), &exception["message"], 32768);
        push("exceptions.typeName".into(), &exception["typeName"], 1024);
        push("exceptions.stack".into(), &exception["stack"], 32768);
    }
    out
}

/// Runs the program with over-long values everywhere; the strict server's requests.
fn run_program(server: &IngestionServer) -> Vec<Value> {
    crate::bridges::install();
    // Quiet panics; census chains its own hook to this one at install.
    std::panic::set_hook(Box::new(|_| {}));
    let census = census_runtime::pipeline()
        .cloud_role(over(256, 0))
        .cloud_role_instance(over(256, 1))
        .panic_backtraces(true)
        .exporter(settings(server, &scratch_dir("limits")).build().unwrap())
        .install()
        .unwrap();

    let runtime = census_tests::multi_thread_runtime(2);
    runtime.block_on(async {
        let base = crate::http_support::serve_hyper_traced(echo).await;
        let client = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder().no_proxy().build().unwrap(),
        )
        .with(ReqwestMiddleware::new())
        .build();
        // A path of 1,500 characters and a query of 8,000: over the Request's name and url
        // limits and the dependency's name and data limits.
        let url = format!("{base}/{}?q={}", "p".repeat(1500), "é".repeat(4000));
        census_runtime::span("http caller")
            .instrument(async {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
            })
            .await;
    });

    let long_key = |shift: usize| over(150, shift);
    census_runtime::request(over(1024, 2))
        .data(over(2048, 3))
        .operation_name(over(1024, 0))
        .property(long_key(0), over(8192, 1))
        .property(format!("{}-twin", long_key(0)), "twin")
        .property(format!("{}-triplet", long_key(0)), "triplet")
        .in_scope(|| {
            current_span().set_result_code(over(1024, 1));
            census_runtime::span(over(1024, 3))
                .kind(leak(over(1024, 0)))
                .target(over(1024, 2))
                .data(over(8192, 3))
                .property(long_key(1), over(9000, 2))
                .in_scope(|| {
                    current_span().set_result_code(over(1024, 3));
                });
            let _ = failing_query(&over(8192, 0));
            let conn = Connection::new(rusqlite::Connection::open_in_memory().unwrap());
            let literal = over(9000, 2).replace('\'', "");
            let text: String = conn
                .query_row(&format!("SELECT '{literal}'"), [], |row| row.get(0))
                .unwrap();
            assert_eq!(text, literal);
            let message = over(40_000, 1);
            let _ = std::panic::catch_unwind(|| panicking(&message));
            log::error!("{}", over(32768, 3));
            let type_name = over(1024, 1);
            tracing::error!(
                error = &Huge(over(40_000, 2)) as &dyn std::error::Error,
                exception.type = type_name.as_str(),
                exception.stacktrace = over(40_000, 3).as_str(),
                "{}",
                over(100, 0)
            );
            census_runtime::event(over(512, 1))
                .property(long_key(2), over(8192, 0))
                .measurement(long_key(3), 1.5)
                .measurement(format!("{}-twin", long_key(3)), 2.5)
                .send();
        });
    census.flush(Duration::from_secs(20)).unwrap();
    drop(std::panic::take_hook());
    drop(runtime);
    server.items()
}

#[test]
fn over_long_values_everywhere_lose_nothing_against_the_strict_server() {
    let server = IngestionServer::start().unwrap();
    server.strict();
    let items = run_program(&server);

    assert_eq!(server.item_errors(), Vec::new(), "no item was refused");
    for request in server.requests() {
        assert_eq!(request.reply.status, 200);
    }
    assert_eq!(server.accepted().len(), items.len());
    for item in &items {
        assert_eq!(schema_violations(item), Vec::<String>::new());
    }

    // Every limit was reached somewhere, with nothing cut short of it: the value is the longest
    // prefix that fits (a character of two UTF-16 units may leave one unit unused).
    for (base_type, path, limit) in EXERCISED {
        let found = items.iter().any(|item| {
            (*base_type == "*" || item["data"]["baseType"] == *base_type)
                && limited_fields(item)
                    .iter()
                    .any(|(p, value, l)| p == path && l == limit && utf16_len(value) + 1 >= *limit)
        });
        assert!(
            found,
            "no {base_type} reached the limit of {path} ({limit})"
        );
    }

    // Three keys alike in their first 150 characters: each kept, under its own key.
    let request = items
        .iter()
        .find(|i| {
            i["data"]["baseType"] == "RequestData"
                && i["data"]["baseData"]["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("aaa"))
        })
        .expect("the request");
    let properties = request["data"]["baseData"]["properties"]
        .as_object()
        .unwrap();
    let values: Vec<&str> = properties.values().filter_map(Value::as_str).collect();
    assert!(values.contains(&"twin") && values.contains(&"triplet"));
    assert_eq!(properties.len(), 3);
    let event = items
        .iter()
        .find(|i| i["data"]["baseType"] == "EventData")
        .unwrap();
    assert_eq!(
        event["data"]["baseData"]["measurements"]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // What each kind of item is: nothing lost on the way.
    let count = |base_type: &str| {
        items
            .iter()
            .filter(|i| i["data"]["baseType"] == base_type)
            .count()
    };
    // The traced server's request and the request span.
    assert_eq!(count("RequestData"), 2);
    // The HTTP call, its parent, the span, the failing query, SQLite's statement, the panic.
    assert!(
        count("RemoteDependencyData") >= 6,
        "{}",
        count("RemoteDependencyData")
    );
    // The panic and the logged error.
    assert_eq!(count("ExceptionData"), 2);
    assert_eq!(count("MessageData"), 1);
    assert_eq!(count("EventData"), 1);

    // Cut values are prefixes of what was set.
    let message = items
        .iter()
        .find(|i| i["data"]["baseType"] == "MessageData")
        .unwrap()["data"]["baseData"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(over(32768, 3).starts_with(&message));
    assert!(utf16_len(&message) >= 32767);
}

/// An envelope of the telemetry type `kind` (`RemoteDependency`, its data `{kind}Data`), as an
/// exporter would post it, for the strict server to judge.
pub(crate) fn envelope(kind: &str, tags: Value, base_data: Value) -> Value {
    json!({
        "iKey": census_tests::ingestion::IKEY,
        "tags": tags,
        "time": "2026-11-23T19:56:37.211428Z",
        "name": format!("Microsoft.ApplicationInsights.{kind}"),
        "data": {"baseType": format!("{kind}Data"), "baseData": base_data}
    })
}

/// POSTs `items` as one batch to `server`; the status and the answer's JSON.
pub(crate) fn post(server: &IngestionServer, items: &[Value]) -> (u16, Value) {
    post_body(server, &serde_json::to_vec(items).unwrap())
}

/// POSTs `body` as it is to `server`; the status and the answer's JSON.
fn post_body(server: &IngestionServer, body: &[u8]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("{}/v2.1/track", server.url()))
        .content_type("application/json")
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let mut text = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[test]
fn the_strict_server_rejects_the_uncut_form_as_ingestion_does() {
    let server = IngestionServer::start().unwrap();
    server.strict();
    let dependency = |data: &str| {
        envelope(
            "RemoteDependency",
            json!({"ai.cloud.role": "orders", "ai.operation.id": "0af7651916cd43dd8448eb211c80319c"}),
            json!({
                "ver": 2, "name": "load", "id": "b7ad6b7169203331", "resultCode": "0",
                "duration": "0.00:00:00.001000", "success": true, "type": "SQL", "data": data,
                "properties": {}
            }),
        )
    };
    // 8,191 ASCII characters and one emoji: 8,193 UTF-16 units, though 8,192 characters.
    let uncut = format!("{}😀", "a".repeat(8191));
    let (status, body) = post(&server, &[dependency("SELECT 1"), dependency(&uncut)]);
    assert_eq!(status, 206);
    assert_eq!(
        body,
        json!({
            "itemsReceived": 2,
            "itemsAccepted": 1,
            "errors": [{
                "index": 1,
                "statusCode": 400,
                "message": "Field 'data' on type 'RemoteDependencyData' is too long. Expected: 8192 characters, Actual: 8193"
            }]
        })
    );
    // The same, one unit shorter, passes.
    let fits = format!("{}😀", "a".repeat(8190));
    assert_eq!(post(&server, &[dependency(&fits)]).0, 200);
    // No item accepted: a 400 with the same body.
    let (status, body) = post(&server, &[dependency(&uncut)]);
    assert_eq!(status, 400);
    assert_eq!(body["itemsAccepted"], 0);
    assert_eq!(body["errors"][0]["index"], 0);

    // What census sent to a strict server, each field at its limit made one character longer
    // as it was before it was cut: every item refused, naming the field.
    let census = IngestionServer::start().unwrap();
    census.strict();
    let sent = run_program(&census);
    let mut uncut_items = Vec::new();
    for item in &sent {
        let mut longer = item.clone();
        let mut grew = false;
        lengthen(&mut longer, &mut grew);
        if grew {
            uncut_items.push(longer);
        }
    }
    assert!(uncut_items.len() >= 8, "{}", uncut_items.len());
    let (status, body) = post(&server, &uncut_items);
    assert_eq!(status, 400);
    assert_eq!(body["itemsReceived"], uncut_items.len());
    assert_eq!(body["itemsAccepted"], 0);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), uncut_items.len());
    for (index, error) in errors.iter().enumerate() {
        assert_eq!(error["index"], index);
        assert_eq!(error["statusCode"], 400);
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(" is too long. Expected: "), "{message}");
    }
}

#[test]
fn the_strict_server_refuses_a_key_given_twice_or_empty_and_any_server_fails_its_test_on_a_repeat()
{
    let server = IngestionServer::start().unwrap();
    server.strict();
    let item = |properties: &str| {
        format!(
            r#"{{"iKey":"{}","time":"2026-11-23T19:56:37.211428Z","name":"Microsoft.ApplicationInsights.Event","tags":{{}},"data":{{"baseType":"EventData","baseData":{{"ver":2,"name":"order_placed","properties":{properties}}}}}}}"#,
            census_tests::ingestion::IKEY
        )
    };
    let body = format!(
        "[{},{},{}]",
        item(r#"{"sku":"caviar","qty":"1"}"#),
        item(r#"{"sku":"caviar","qty":"1","sku":"blini"}"#),
        item(r#"{"":"caviar"}"#)
    );
    let (status, answer) = post_body(&server, body.as_bytes());
    assert_eq!(status, 206);
    assert_eq!(
        answer,
        json!({
            "itemsReceived": 3,
            "itemsAccepted": 1,
            "errors": [
                {
                    "index": 1,
                    "statusCode": 400,
                    "message": "Field 'data.baseData.properties.sku' is given more than once"
                },
                {
                    "index": 2,
                    "statusCode": 400,
                    "message": "Field 'properties key' on type 'EventData' is required but missing or empty. Expected: string, Actual: "
                }
            ]
        })
    );
    assert_eq!(
        server.repeated_keys(),
        [(1, "data.baseData.properties.sku".to_owned())]
    );

    // A server that received a repeated key fails the test that drops it, strict or not; one
    // that received none does not.
    let plain = IngestionServer::start().unwrap();
    assert_eq!(post_body(&plain, body.as_bytes()).0, 200);
    let dropped = |server: IngestionServer| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(server)))
    };
    assert!(dropped(server).is_err());
    assert!(dropped(plain).is_err());
    let clean = IngestionServer::start().unwrap();
    assert_eq!(
        post_body(&clean, format!("[{}]", item("{}")).as_bytes()).0,
        200
    );
    assert!(dropped(clean).is_ok());
}

/// Appends a two-unit character to every string field within one unit of its limit.
fn lengthen(item: &mut Value, grew: &mut bool) {
    let fields = limited_fields(item);
    for (path, value, limit) in fields {
        if utf16_len(&value) + 1 < limit {
            continue;
        }
        *grew = true;
        let longer = format!("{value}😀");
        let base = &mut item["data"]["baseData"];
        match path.split_once('.') {
            Some(("tags", key)) => item["tags"][key] = Value::String(longer),
            Some((map @ ("properties" | "measurements"), "value")) => {
                if let Some(members) = base[map].as_object_mut() {
                    for v in members.values_mut() {
                        if v.as_str() == Some(value.as_str()) {
                            *v = Value::String(longer.clone());
                        }
                    }
                }
            }
            Some((map @ ("properties" | "measurements"), "key")) => {
                if let Some(members) = base[map].as_object_mut()
                    && let Some(v) = members.remove(&value)
                {
                    members.insert(longer, v);
                }
            }
            Some(("exceptions", field)) => {
                for exception in base["exceptions"].as_array_mut().into_iter().flatten() {
                    if exception[field].as_str() == Some(value.as_str()) {
                        exception[field] = Value::String(longer.clone());
                    }
                }
            }
            _ => base[path.as_str()] = Value::String(longer),
        }
    }
}
