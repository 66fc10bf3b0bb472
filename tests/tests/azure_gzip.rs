//! Bodies gzipped (the default) or plain JSON.

use std::time::Duration;

use census_tests::azure::{install_azure, scratch_dir, settings, spans};
use census_tests::ingestion::IngestionServer;

#[test]
fn gzip_on_compresses_the_body() {
    let server = IngestionServer::start().unwrap();
    let census = install_azure(&server, "gzip-on");
    spans("zipped", 20);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].header("content-encoding"), Some("gzip"));
    assert!(
        requests[0].wire_len < requests[0].body.len(),
        "smaller on the wire"
    );
    assert_eq!(server.accepted_names().len(), 20);
}

#[test]
fn gzip_off_sends_plain_json() {
    let server = IngestionServer::start().unwrap();
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("gzip-off"))
                .gzip(false)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("plain", 20);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests[0].header("content-encoding"), None);
    assert_eq!(requests[0].wire_len, requests[0].body.len());
    assert_eq!(requests[0].body[0], b'[');
    assert_eq!(server.accepted_names().len(), 20);
}
