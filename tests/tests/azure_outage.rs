//! An outage of the endpoint: connections refused, then the endpoint comes back; nothing is lost.

use std::collections::HashSet;
use std::time::Duration;

use census_runtime::azure::diagnostics;
use census_tests::azure::{scratch_dir, settings, spans, stored_batches};
use census_tests::ingestion::IngestionServer;

#[test]
fn every_envelope_is_delivered_after_an_outage() {
    let mut server = IngestionServer::start().unwrap();
    server.stop();
    let dir = scratch_dir("outage");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &dir)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let mut sent = Vec::new();
    for round in 0..3 {
        sent.extend(spans(&format!("outage{round}"), 10));
        assert!(
            census.flush(Duration::from_secs(2)).is_err(),
            "nothing can be delivered while connections are refused"
        );
    }
    // A flush that timed out before the last round reached the exporter (a loaded machine)
    // leaves it to be stored right after: every envelope is on disk, none delivered.
    for _ in 0..200 {
        if diagnostics().stored >= 30 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(diagnostics().stored, 30);
    assert_eq!(diagnostics().sent, 0);
    assert!(!stored_batches(&dir).is_empty(), "kept on disk");

    server.restart().unwrap();
    assert!(
        server.wait_for_accepted(30, Duration::from_secs(30)),
        "stored batches are resent once the endpoint is back"
    );
    let accepted = server.accepted_names();
    assert_eq!(accepted.len(), 30, "no duplicate");
    let expected: HashSet<String> = sent.into_iter().collect();
    assert_eq!(accepted.into_iter().collect::<HashSet<_>>(), expected);
    // The batch is deleted right after the endpoint accepted it.
    let mut empty = false;
    for _ in 0..100 {
        if stored_batches(&dir).is_empty() {
            empty = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(empty, "delivered batches leave storage");
    drop(census);
}

#[test]
fn without_storage_an_outage_is_bridged_from_memory() {
    let mut server = IngestionServer::start().unwrap();
    server.stop();
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("outage-memory"))
                .no_storage()
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let sent = spans("memory", 10);
    assert!(census.flush(Duration::from_secs(1)).is_err());
    assert_eq!(diagnostics().stored, 0);
    server.restart().unwrap();
    assert!(server.wait_for_accepted(10, Duration::from_secs(30)));
    let accepted: HashSet<String> = server.accepted_names().into_iter().collect();
    assert_eq!(accepted, sent.into_iter().collect::<HashSet<_>>());
    assert_eq!(diagnostics().dropped_unstored, 0);
}
