//! Flush and shutdown deliver what local storage holds too, within their deadline, and say how
//! much is left when they cannot.

use std::time::{Duration, Instant};

use census_runtime::pipeline::FlushError;
use census_tests::azure::{scratch_dir, settings, spans, stored_batches};
use census_tests::ingestion::{IngestionServer, Reply};

/// Waits until a batch of the first attempt is in storage.
fn wait_until_stored(dir: &std::path::Path) {
    let start = Instant::now();
    while stored_batches(dir).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the refused batch was stored"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[test]
fn a_flush_during_a_backoff_waits_for_it_and_delivers_the_stored_batch() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(500)]);
    let dir = scratch_dir("flush-backoff");
    let census = census_runtime::pipeline()
        .exporter(
            // Two to four seconds in storage before the loop's own retry: time for the test,
            // polling, to see the batch there on a loaded machine.
            settings(&server, &dir)
                .retry_backoff(Duration::from_secs(4), Duration::from_secs(4))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let sent = spans("backoff", 10);
    wait_until_stored(&dir);

    census
        .flush(Duration::from_secs(15))
        .expect("the backoff ends before the deadline: everything goes");
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    assert!(stored_batches(&dir).is_empty(), "nothing left in storage");
}

#[test]
fn a_retry_after_beyond_the_deadline_is_a_timeout_that_says_how_much_is_left() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(429).retry_after(30)]);
    let dir = scratch_dir("flush-retry-after");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &dir)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("throttled", 7);
    wait_until_stored(&dir);

    let error = census.flush(Duration::from_secs(15)).unwrap_err();
    assert_eq!(
        error,
        FlushError::Timeout {
            timeout: Duration::from_secs(15),
            left: Some(7)
        }
    );
    assert!(error.to_string().contains("7 telemetry items are kept"));
    assert!(server.accepted().is_empty(), "Retry-After is honoured");
    assert!(!stored_batches(&dir).is_empty(), "kept for later");
}

#[test]
fn what_a_too_short_flush_left_is_delivered_by_the_next_one() {
    let server = IngestionServer::start().unwrap();
    // Healthy, and slow enough that a flush of one millisecond cannot finish.
    server.set_default(Reply::ok().delay(Duration::from_millis(100)));
    let dir = scratch_dir("flush-short");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &dir)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let sent = spans("short", 20);

    let short = census.flush(Duration::from_millis(1));
    assert!(
        matches!(short, Err(FlushError::Timeout { .. })),
        "{short:?}"
    );
    census
        .flush(Duration::from_secs(10))
        .expect("the second flush delivers everything");
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
}

#[test]
fn dropping_the_guard_delivers_the_stored_batches_before_the_process_ends() {
    let server = IngestionServer::start().unwrap();
    // The loop's own retry waits two seconds: the batch stays in storage until the guard is
    // dropped (a backoff of milliseconds could deliver it before the test sees it stored).
    server.script([Reply::status(503).retry_after(2)]);
    let dir = scratch_dir("flush-shutdown");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &dir)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let sent = spans("shutdown", 12);
    wait_until_stored(&dir);

    drop(census);
    assert_eq!(sorted(server.accepted_names()), sorted(sent));
    assert!(stored_batches(&dir).is_empty());
}

#[test]
fn without_storage_a_timeout_counts_what_is_held_in_memory() {
    let server = IngestionServer::start().unwrap();
    server.script([Reply::status(503).retry_after(30)]);
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("flush-memory"))
                .no_storage()
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("memory", 4);
    assert!(server.wait_until(Duration::from_secs(10), |requests| !requests.is_empty()));

    let error = census.flush(Duration::from_secs(2)).unwrap_err();
    assert!(
        matches!(error, FlushError::Timeout { left: Some(4), .. }),
        "{error:?}"
    );
}
