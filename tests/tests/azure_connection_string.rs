//! Connection strings, good and bad, and how `install()` treats them.

use census_runtime::{ConfigError, ConnectionString, ConnectionStringError};

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

#[test]
fn install_rejects_a_malformed_connection_string_set_in_code() {
    let error = census_runtime::pipeline()
        .connection_string(
            "InstrumentationKey=12345678-9abc-def0-1234-56789abcdef0;IngestionEndpoint=nope",
        )
        .install()
        .expect_err("a malformed string is an error, not a silent no-op");
    assert!(matches!(
        error,
        ConfigError::ConnectionString(ConnectionStringError::InvalidEndpoint {
            key: "IngestionEndpoint",
            ..
        })
    ));
    assert!(error.to_string().contains("IngestionEndpoint"));
    assert!(!error.to_string().contains(KEY));
}

#[test]
fn install_reads_the_environment_only_when_no_string_is_set_in_code() {
    // SAFETY: this test is alone in its process (nextest) and starts no thread before this.
    unsafe {
        std::env::set_var(
            census_runtime::CONNECTION_STRING_ENV,
            "InstrumentationKey=bad-key",
        );
    }
    let error = census_runtime::pipeline()
        .install()
        .expect_err("the environment is read");
    assert!(matches!(
        error,
        ConfigError::ConnectionString(ConnectionStringError::InvalidInstrumentationKey { .. })
    ));
    let census = census_runtime::pipeline()
        .connection_string(format!(
            "InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9"
        ))
        .azure(census_runtime::AzureExporter::builder().no_storage())
        .install()
        .expect("the string set in code wins; the environment is not read");
    drop(census.shutdown(std::time::Duration::from_millis(200)));
}

#[test]
fn no_connection_string_and_no_exporter_is_still_no_exporter() {
    let error = census_runtime::pipeline()
        .install()
        .expect_err("nothing to export to");
    assert!(matches!(error, ConfigError::NoExporter));
}
