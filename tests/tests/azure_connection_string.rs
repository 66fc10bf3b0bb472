//! Connection strings, good and bad, and how the Azure exporter treats them.

use std::sync::Mutex;
use std::time::Duration;

use census_runtime::azure::{
    AzureError, AzureExporter, CONNECTION_STRING_ENV, ConnectionString, ConnectionStringError,
};
use census_runtime::export::MemoryExporter;
use census_runtime::pipeline::ConfigError;

const KEY: &str = "12345678-9abc-def0-1234-56789abcdef0";

#[test]
fn good_connection_strings() {
    let cases: &[(&str, &str)] = &[
        // (connection string, the endpoint it posts to)
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0",
            "https://dc.services.visualstudio.com/v2.1/track",
        ),
        (
            "instrumentationkey = 12345678-9abc-def0-1234-56789abcdef0 ; INGESTIONENDPOINT = https://westeurope-5.in.applicationinsights.azure.com/ ;;",
            "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track",
        ),
        (
            ";InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=http://127.0.0.1:3000//;",
            "http://127.0.0.1:3000/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;EndpointSuffix=applicationinsights.azure.cn;Location=chinaeast2",
            "https://chinaeast2.dc.applicationinsights.azure.cn/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;EndpointSuffix=applicationinsights.us",
            "https://dc.applicationinsights.us/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;EndpointSuffix=ignored.example;IngestionEndpoint=https://wins.example",
            "https://wins.example/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9ABC-DEF0-1234-56789ABCDEF0;ApplicationId=abc;LiveEndpoint=https://live.example/;Authorization=ikey",
            "https://dc.services.visualstudio.com/v2.1/track",
        ),
        (
            "\n\tInstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=https://host.example/base/\n",
            "https://host.example/base/v2.1/track",
        ),
        // The endpoint as it is requested: an international host in its ASCII (punycode) form,
        // scheme and host in lowercase, the scheme's default port left out, IPv6 in brackets.
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=http://bücher.example/",
            "http://xn--bcher-kva.example/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=HTTPS://Ingest.Example:443/Base/",
            "https://ingest.example/Base/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=http://[::1]:9/",
            "http://[::1]:9/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=http://localhost:9",
            "http://localhost:9/v2.1/track",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;EndpointSuffix=bücher.example;Location=westeurope",
            "https://westeurope.dc.xn--bcher-kva.example/v2.1/track",
        ),
    ];
    for (text, track_url) in cases {
        let parsed = ConnectionString::parse(text)
            .unwrap_or_else(|e| panic!("{text:?} should parse, got: {e}"));
        assert_eq!(parsed.track_url(), *track_url, "{text:?}");
        assert_eq!(
            parsed.instrumentation_key().to_ascii_lowercase(),
            KEY,
            "{text:?}"
        );
        for shown in [parsed.to_string(), format!("{parsed:?}")] {
            assert!(
                !shown.contains(KEY) && !shown.contains("56789abcdef0"),
                "{shown}"
            );
        }
    }
}

#[test]
fn bad_connection_strings_name_the_bad_part() {
    type Check = fn(&ConnectionStringError) -> bool;
    let cases: &[(&str, Check, &str)] = &[
        // (connection string, the error expected, a word its message must contain)
        ("", |e| matches!(e, ConnectionStringError::Empty), "empty"),
        (
            " ; ;; ",
            |e| matches!(e, ConnectionStringError::Empty),
            "empty",
        ),
        (
            "IngestionEndpoint=https://x.example",
            |e| matches!(e, ConnectionStringError::MissingInstrumentationKey),
            "InstrumentationKey",
        ),
        (
            "12345678-9abc-def0-1234-56789abcdef0",
            |e| matches!(e, ConnectionStringError::NotKeyValue { position: 1, .. }),
            "segment 1",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;oops",
            |e| matches!(e, ConnectionStringError::NotKeyValue { position: 2, .. }),
            "segment 2",
        ),
        (
            "=value;InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0",
            |e| matches!(e, ConnectionStringError::NotKeyValue { position: 1, .. }),
            "Key=Value",
        ),
        (
            "InstrumentationKey=",
            |e| matches!(e, ConnectionStringError::EmptyValue { key } if key == "InstrumentationKey"),
            "InstrumentationKey",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint= ",
            |e| matches!(e, ConnectionStringError::EmptyValue { key } if key == "IngestionEndpoint"),
            "IngestionEndpoint",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;instrumentationKey=12345678-9abc-def0-1234-56789abcdef0",
            |e| matches!(e, ConnectionStringError::Duplicate { .. }),
            "more than once",
        ),
        (
            "InstrumentationKey=not-a-guid-at-all-but-long-enough",
            |e| matches!(e, ConnectionStringError::InvalidInstrumentationKey { .. }),
            "GUID",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=ftp://x.example",
            |e| {
                matches!(
                    e,
                    ConnectionStringError::InvalidEndpoint {
                        key: "IngestionEndpoint",
                        ..
                    }
                )
            },
            "IngestionEndpoint",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=https://x.example:99999",
            |e| {
                matches!(
                    e,
                    ConnectionStringError::InvalidEndpoint {
                        key: "IngestionEndpoint",
                        ..
                    }
                )
            },
            "port",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=westeurope.example",
            |e| {
                matches!(
                    e,
                    ConnectionStringError::InvalidEndpoint {
                        key: "IngestionEndpoint",
                        ..
                    }
                )
            },
            "http",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;EndpointSuffix=not a suffix!",
            |e| {
                matches!(
                    e,
                    ConnectionStringError::InvalidEndpoint {
                        key: "EndpointSuffix",
                        ..
                    }
                )
            },
            "EndpointSuffix",
        ),
        (
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;EndpointSuffix=ai.example;Location=west europe",
            |e| {
                matches!(
                    e,
                    ConnectionStringError::InvalidEndpoint {
                        key: "Location",
                        ..
                    }
                )
            },
            "Location",
        ),
    ];
    for (text, check, word) in cases {
        let error = ConnectionString::parse(text).expect_err(text);
        assert!(check(&error), "{text:?} gave {error:?}");
        let message = error.to_string();
        assert!(
            message.contains(word),
            "{text:?}: {message:?} should mention {word:?}"
        );
        for shown in [message, format!("{error:?}")] {
            assert!(!shown.contains(KEY), "the key leaked: {shown}");
        }
    }
}

/// Endpoints that no request could ever reach, refused at parse time, each with the key, the
/// value and what is wrong with it. Parsed only: nothing is sent anywhere.
#[test]
fn endpoints_that_cannot_be_requested_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        // (key and value, the value as the error shows it, a word of the reason)
        ("IngestionEndpoint=http://[::1:9/", "http://[::1:9/", "IPv6"),
        ("IngestionEndpoint=http://[::1]x/", "http://[::1]x/", "IPv6"),
        (
            "IngestionEndpoint=http://127.0 .0.1:9/",
            "http://127.0 .0.1:9/",
            "whitespace",
        ),
        (
            "IngestionEndpoint=http://ho\tst.example/",
            "http://ho\tst.example/",
            "whitespace",
        ),
        (
            "IngestionEndpoint=http://host.example:65536/",
            "http://host.example:65536/",
            "port",
        ),
        (
            "IngestionEndpoint=http://host.example:0/",
            "http://host.example:0/",
            "port",
        ),
        (
            "IngestionEndpoint=http://host.example:-1/",
            "http://host.example:-1/",
            "port",
        ),
        (
            "IngestionEndpoint=http://user:pw@host.example/",
            "http://user:pw@host.example/",
            "password",
        ),
        (
            "IngestionEndpoint=http://user@host.example/",
            "http://user@host.example/",
            "password",
        ),
        (
            "IngestionEndpoint=https://host.example/?code=1",
            "https://host.example/?code=1",
            "query",
        ),
        (
            "IngestionEndpoint=https://host.example/#top",
            "https://host.example/#top",
            "fragment",
        ),
        ("IngestionEndpoint=http://", "http://", "no host"),
        ("IngestionEndpoint=http:///v2", "http:///v2", "no host"),
        ("IngestionEndpoint=http://:9/", "http://:9/", "no host"),
        (
            "IngestionEndpoint=http:host.example",
            "http:host.example",
            "http://",
        ),
        (
            "IngestionEndpoint=http://host.example\\base",
            "http://host.example\\base",
            "backslash",
        ),
        (
            "IngestionEndpoint=http://a..b.example/",
            "http://a..b.example/",
            "empty label",
        ),
        (
            "IngestionEndpoint=http://a*b.example/",
            "http://a*b.example/",
            "character",
        ),
        (
            "IngestionEndpoint=http://host%2Fx.example/",
            "http://host%2Fx.example/",
            "%",
        ),
        (
            "IngestionEndpoint=http://999.0.0.1/",
            "http://999.0.0.1/",
            "IPv4",
        ),
        (
            "IngestionEndpoint=http://xn--a.example/",
            "http://xn--a.example/",
            "IDNA",
        ),
        ("EndpointSuffix=ai..example", "ai..example", "empty label"),
        (
            "EndpointSuffix=ai.example:443",
            "ai.example:443",
            "character",
        ),
        ("EndpointSuffix=127.0.0.1", "127.0.0.1", "IP address"),
        (
            "EndpointSuffix=ai.example;Location=west..europe",
            "west..europe",
            "empty label",
        ),
        (
            "EndpointSuffix=ai.example;Location=west/europe",
            "west/europe",
            "character",
        ),
    ];
    for (part, value, word) in cases {
        let text = format!("InstrumentationKey={KEY};{part}");
        let key = part.split_once('=').map_or("", |(key, _)| key);
        let key = if part.contains("Location=") {
            "Location"
        } else {
            key
        };
        let error = ConnectionString::parse(&text).expect_err(&text);
        let ConnectionStringError::InvalidEndpoint {
            key: named,
            value: shown,
            reason,
        } = &error
        else {
            panic!("{text:?} gave {error:?}");
        };
        assert_eq!((*named, shown.as_str()), (key, *value), "{text:?}");
        assert!(
            reason.contains(word),
            "{text:?}: {reason:?} should mention {word:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(key) && message.contains(value) && message.contains(reason),
            "{message}"
        );
    }
}

#[test]
fn a_malformed_connection_string_set_in_code_fails_the_exporter_s_build() {
    let error = AzureExporter::builder()
        .connection_string(
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=nope",
        )
        .build()
        .expect_err("a malformed string is an error, not a silent no-op");
    assert!(matches!(
        error,
        AzureError::ConnectionString(ConnectionStringError::InvalidEndpoint {
            key: "IngestionEndpoint",
            ..
        })
    ));
    // A program whose `main` returns `ConfigError` says the same.
    let error = ConfigError::from(error);
    assert!(error.to_string().contains("IngestionEndpoint"));
    assert!(!error.to_string().contains(KEY));
}

#[test]
fn the_environment_is_read_only_when_no_string_is_set_in_code() {
    // SAFETY: this test is alone in its process (nextest) and starts no thread before this.
    unsafe {
        std::env::set_var(
            census_runtime::azure::CONNECTION_STRING_ENV,
            "InstrumentationKey=bad-key",
        );
    }
    for error in [
        AzureExporter::from_env().expect_err("the environment is read"),
        AzureExporter::builder()
            .build()
            .expect_err("the environment is read"),
    ] {
        assert!(matches!(
            error,
            AzureError::ConnectionString(ConnectionStringError::InvalidInstrumentationKey { .. })
        ));
    }
    let exporter = AzureExporter::builder()
        .connection_string(format!(
            "InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9"
        ))
        .no_storage()
        .build()
        .expect("the string set in code wins; the environment is not read");
    let census = census_runtime::pipeline()
        .exporter(exporter)
        .install()
        .expect("installs");
    drop(census.shutdown(std::time::Duration::from_millis(200)));
}

/// Keeps what census logs, for the tests that look at it.
struct Recorded(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Recorded {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut records) = self.0.lock() {
            records.push((record.level(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

static LOGGED: Recorded = Recorded(Mutex::new(Vec::new()));

#[census_runtime::inproc]
fn work() {}

/// An empty or blank variable is not set, as in the Azure SDKs: a pipeline with its own
/// exporter installs without the Azure one, says so at debug level, and one that asks for the
/// Azure exporter is told it has no connection string.
fn a_blank_variable_means_no_connection_string(value: &str) {
    // SAFETY: each test is alone in its process (nextest) and sets the variable before it
    // starts any thread.
    unsafe { std::env::set_var(CONNECTION_STRING_ENV, value) };
    log::set_logger(&LOGGED).expect("the first logger of this process");
    log::set_max_level(log::LevelFilter::Debug);

    assert!(
        AzureExporter::from_env()
            .expect("a blank variable is no connection string, not a malformed one")
            .is_none(),
        "no Azure exporter from a blank variable"
    );
    let memory = MemoryExporter::new();
    let census = census_runtime::pipeline()
        .exporter(memory.clone())
        .install()
        .expect("installs");
    work();
    census.flush(Duration::from_secs(5)).expect("flushed");
    assert_eq!(
        memory.named("work").len(),
        1,
        "the memory exporter got the span"
    );
    drop(census);
    let notes = LOGGED.0.lock().unwrap().clone();
    assert!(
        notes
            .iter()
            .any(|(level, message)| *level == log::Level::Debug
                && message.contains(CONNECTION_STRING_ENV)),
        "a debug note names the variable: {notes:?}"
    );

    let error = AzureExporter::builder()
        .no_storage()
        .build()
        .expect_err("the Azure exporter asked for, with no connection string");
    assert!(
        matches!(error, AzureError::MissingConnectionString),
        "{error:?}"
    );
    let error = census_runtime::pipeline()
        .install()
        .expect_err("nothing to export to");
    assert!(matches!(error, ConfigError::NoExporter), "{error:?}");
}

#[test]
fn an_empty_variable_means_no_connection_string() {
    a_blank_variable_means_no_connection_string("");
}

#[test]
fn a_whitespace_only_variable_means_no_connection_string() {
    a_blank_variable_means_no_connection_string(" \t\n ");
}

#[test]
fn a_malformed_variable_is_still_an_error() {
    // SAFETY: alone in its process (nextest), before any thread.
    unsafe { std::env::set_var(CONNECTION_STRING_ENV, " ;InstrumentationKey= ; ") };
    let error = AzureExporter::from_env().expect_err("not blank: parsed, and refused");
    assert!(
        matches!(
            error,
            AzureError::ConnectionString(ConnectionStringError::EmptyValue { .. })
        ),
        "{error:?}"
    );
}

#[test]
fn no_connection_string_and_no_exporter_is_still_no_exporter() {
    let error = census_runtime::pipeline()
        .install()
        .expect_err("nothing to export to");
    assert!(matches!(error, ConfigError::NoExporter));
}
