//! Local storage limits: its size cap, the age of what it keeps, atomic writes, permissions.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use census_runtime::azure::{AzureError, AzureExporter, diagnostics};
use census_tests::azure::{files_under, scratch_dir, settings, spans, stored_batches};
use census_tests::ingestion::IngestionServer;

/// The per-key directory the exporter uses under `base`.
fn key_dir(server: &IngestionServer, base: &std::path::Path) -> PathBuf {
    let mut probe = AzureExporter::builder()
        .connection_string(server.connection_string())
        .storage_dir(base)
        .build()
        .unwrap();
    let dir = probe.storage_dir().unwrap().to_owned();
    // Its transport thread is stopped before the test writes batches there: on a busy machine
    // it could otherwise look at the directory late, lease a batch the test wrote and hold it
    // past the test's wait.
    assert!(census_runtime::export::Exporter::shutdown(
        &mut probe,
        std::time::Instant::now() + Duration::from_secs(10)
    ));
    dir
}

fn envelope(name: &str) -> String {
    format!(
        concat!(
            r#"{{"iKey":"00000000-0000-0000-0000-000000000001","tags":{{"ai.operation.id":"0af7651916cd43dd8448eb211c80319c"}},"#,
            r#""time":"2026-01-01T00:00:00.000000Z","name":"Microsoft.ApplicationInsights.RemoteDependency","#,
            r#""data":{{"baseData":{{"name":"{}","id":"b7ad6b7169203331","resultCode":"0","duration":"0.00:00:00.000001","success":true,"properties":{{}},"ver":2,"type":"INPROC"}},"baseType":"RemoteDependencyData"}}}}"#
        ),
        name
    )
}

fn micros_ago(age: Duration) -> u128 {
    (SystemTime::now() - age)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

#[test]
fn storage_is_capped_and_what_does_not_fit_is_counted() {
    let mut server = IngestionServer::start().unwrap();
    server.stop();
    let base = scratch_dir("storage-cap");
    let cap = 8 * 1024;
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &base)
                .storage_limits(cap, Duration::from_secs(48 * 3600))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    for round in 0..10 {
        spans(&format!("cap{round}"), 10);
        let _ = census.flush(Duration::from_millis(300));
    }
    let d = diagnostics();
    assert!(d.stored > 0 && d.dropped_storage_full > 0, "{d:?}");
    assert_eq!(d.stored + d.dropped_storage_full, 100);
    let used: u64 = files_under(&base)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(used <= cap, "{used} bytes stored, cap {cap}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in stored_batches(&base) {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
            let dir_mode = std::fs::metadata(file.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
    }
}

#[test]
fn batches_older_than_the_maximum_age_are_deleted_unsent() {
    let server = IngestionServer::start().unwrap();
    let base = scratch_dir("storage-age");
    let dir = key_dir(&server, &base);
    let old = dir.join(format!(
        "{:020}-00000000000000aa.blob",
        micros_ago(Duration::from_secs(49 * 3600))
    ));
    let fresh = dir.join(format!(
        "{:020}-00000000000000bb.blob",
        micros_ago(Duration::from_secs(3600))
    ));
    std::fs::write(&old, envelope("too-old") + "\n").unwrap();
    std::fs::write(&fresh, envelope("fresh-enough") + "\n").unwrap();

    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &base)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    assert!(server.wait_for_accepted(1, Duration::from_secs(20)));
    census.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(server.accepted_names(), ["fresh-enough"]);
    assert_eq!(diagnostics().dropped_expired, 1);
    assert!(!old.exists() && !fresh.exists());
}

#[test]
fn a_half_written_batch_is_never_sent() {
    let server = IngestionServer::start().unwrap();
    let base = scratch_dir("storage-tmp");
    let dir = key_dir(&server, &base);
    // What a crash in the middle of a write leaves: a temporary file, never renamed.
    let partial = dir.join(format!(
        "{:020}-00000000000000cc.tmp",
        micros_ago(Duration::ZERO)
    ));
    std::fs::write(&partial, envelope("half-written") + "\n{\"iKey\":\"000").unwrap();
    let complete = dir.join(format!(
        "{:020}-00000000000000dd.blob",
        micros_ago(Duration::from_secs(1))
    ));
    std::fs::write(&complete, envelope("complete") + "\n").unwrap();

    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &base)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    assert!(server.wait_for_accepted(1, Duration::from_secs(20)));
    census.flush(Duration::from_secs(5)).unwrap();
    assert_eq!(server.accepted_names(), ["complete"]);
}

#[test]
fn an_empty_storage_dir_is_refused_rather_than_the_working_directory() {
    // From an empty directory, so that whatever an install would write under the working
    // directory shows (and stays out of the source tree).
    let cwd = scratch_dir("storage-empty-path");
    std::env::set_current_dir(&cwd).unwrap();
    let connection = "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/";

    let error = AzureExporter::builder()
        .connection_string(connection)
        .storage_dir("")
        .build()
        .expect_err("an empty storage path is refused when the exporter is built");
    assert!(error.to_string().contains("working directory"), "{error}");
    assert!(
        matches!(
            error,
            AzureError::InvalidSetting {
                setting: "storage_dir",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "nothing was made under the working directory"
    );
}
