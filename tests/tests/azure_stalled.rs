//! An endpoint that holds every request never holds up the instrumented code or the pipeline.

use std::time::Duration;

use census_runtime::pipeline::Pipeline;
use census_runtime::{azure, pipeline};
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::IngestionServer;

/// Spans made while the endpoint holds its first request: 2 * `SPANS`.
const SPANS: u64 = 5_000;

/// A pipeline sending to `server`, which holds every request, through a transport with room
/// for two batches; with storage in a fresh directory, or none.
fn install_stalled(server: &IngestionServer, name: &str, storage: bool) -> Pipeline {
    server.hold();
    let exporter = settings(server, &scratch_dir(name))
        .timeout(Duration::from_secs(120))
        .queue_batches(2);
    let exporter = if storage {
        exporter
    } else {
        exporter.no_storage()
    };
    census_runtime::pipeline()
        .max_batch(100)
        .exporter(exporter.build().expect("the Azure exporter builds"))
        .install()
        .unwrap()
}

/// Makes 2 * `SPANS` spans, then waits for the worker to hand them all to the exporter.
fn record_until_handed() {
    for i in 0..SPANS {
        census_runtime::span("work").in_scope(|| {
            census_runtime::span("inner")
                .property("i", i)
                .in_scope(|| {});
        });
    }
    let mut handed = false;
    // Every batch the stuck transport cannot take is written to storage by the exporter, when
    // it has storage: a hundred file writes, which a loaded machine can make slow.
    for _ in 0..2400 {
        if pipeline::diagnostics().exported >= 2 * SPANS {
            handed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        handed,
        "the pipeline worker kept draining: {:?}",
        pipeline::diagnostics()
    );
}

#[test]
fn a_stalled_endpoint_never_blocks_instrumented_code() {
    let server = IngestionServer::start().unwrap();
    let census = install_stalled(&server, "stalled", true);
    // The instrumented code runs to the end while the endpoint answers nothing.
    record_until_handed();
    // The transport's first request may reach the endpoint after the worker has handed over
    // every span (the transport sends on its own interval): the endpoint holds it then.
    let mut held = server.held();
    for _ in 0..200 {
        if held >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
        held = server.held();
    }
    assert!(held >= 1, "the endpoint holds the first request");
    assert_eq!(
        pipeline::diagnostics().dropped_queue_full,
        0,
        "no span was lost on the hot path"
    );
    let d = azure::diagnostics();
    assert!(
        d.export_queue_full > 0 && d.stored == d.export_queue_full,
        "what the stuck transport could not take went to storage: {d:?}"
    );
    assert_eq!(d.sent, 0);

    server.release();
    assert!(
        server.wait_for_accepted(2 * SPANS as usize, Duration::from_secs(60)),
        "everything arrives once the endpoint answers"
    );
    drop(census);
}

#[test]
fn with_storage_off_every_envelope_a_stalled_endpoint_could_not_take_is_counted() {
    let server = IngestionServer::start().unwrap();
    let census = install_stalled(&server, "stalled-unstored", false);
    record_until_handed();
    let d = azure::diagnostics();
    assert!(
        d.export_queue_full > 0 && d.dropped_unstored == d.export_queue_full && d.stored == 0,
        "what the stuck transport could not take was dropped and counted: {d:?}"
    );

    server.release();
    census
        .shutdown(Duration::from_secs(60))
        .expect("the transport delivers what it kept once the endpoint answers");
    let dropped = azure::diagnostics().dropped_unstored;
    assert_eq!(
        server.accepted().len() as u64 + dropped,
        2 * SPANS,
        "each envelope was delivered or counted as dropped, once"
    );
    assert_eq!(pipeline::diagnostics().dropped_queue_full, 0);
}
