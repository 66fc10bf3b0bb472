//! An endpoint that holds every request never holds up the instrumented code or the pipeline.

use std::time::Duration;

use census_runtime::{azure, pipeline};
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::IngestionServer;

#[test]
fn a_stalled_endpoint_never_blocks_instrumented_code() {
    let server = IngestionServer::start().unwrap();
    server.hold();
    let census = census_runtime::pipeline()
        .max_batch(100)
        .exporter(
            settings(&server, &scratch_dir("stalled"))
                .timeout(Duration::from_secs(120))
                .queue_batches(2)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    const N: u64 = 5_000;
    // The instrumented code runs to the end while the endpoint answers nothing.
    for i in 0..N {
        census_runtime::span("work").in_scope(|| {
            census_runtime::span("inner")
                .property("i", i)
                .in_scope(|| {});
        });
    }
    let mut handed = false;
    // Every batch the stuck transport cannot take is written to storage by the exporter: a
    // hundred file writes, which a loaded machine can make slow.
    for _ in 0..2400 {
        if pipeline::diagnostics().exported >= 2 * N {
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
    assert!(
        server.held() >= 1,
        "the endpoint still holds the first request"
    );
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
        server.wait_for_accepted(2 * N as usize, Duration::from_secs(60)),
        "everything arrives once the endpoint answers"
    );
    drop(census);
}

#[test]
fn with_storage_off_every_envelope_a_stalled_endpoint_could_not_take_is_counted() {
    let server = IngestionServer::start().unwrap();
    server.hold();
    let census = census_runtime::pipeline()
        .max_batch(100)
        .exporter(
            settings(&server, &scratch_dir("stalled-unstored"))
                .no_storage()
                .timeout(Duration::from_secs(120))
                .queue_batches(2)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    const N: u64 = 5_000;
    for i in 0..N {
        census_runtime::span("work").in_scope(|| {
            census_runtime::span("inner")
                .property("i", i)
                .in_scope(|| {});
        });
    }
    let mut handed = false;
    for _ in 0..2400 {
        if pipeline::diagnostics().exported >= 2 * N {
            handed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        handed,
        "the worker kept draining: {:?}",
        pipeline::diagnostics()
    );
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
        2 * N,
        "each envelope was delivered or counted as dropped, once"
    );
    assert_eq!(pipeline::diagnostics().dropped_queue_full, 0);
}
