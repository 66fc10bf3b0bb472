//! Helpers for the Azure exporter's end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use census_runtime::AzureExporter;
use census_runtime::AzureExporterBuilder;

use crate::ingestion::IngestionServer;

/// Settings that make the exporter quick to test: short send interval and backoff, storage in
/// `storage`.
pub fn settings(server: &IngestionServer, storage: &Path) -> AzureExporterBuilder {
    AzureExporter::builder()
        .connection_string(server.connection_string())
        .storage_dir(storage)
        .send_interval(Duration::from_millis(50))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .timeout(Duration::from_secs(5))
}

/// A fresh, empty directory under the system's temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("census-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Every file under `dir`, recursively, with its name.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The stored batches (`.blob` files, leased or not) under `dir`.
pub fn stored_batches(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.contains(".blob"))
        })
        .collect()
}

/// Runs `n` spans named `{prefix}-{i}`, each its own trace.
pub fn spans(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            census_runtime::span(name.clone()).in_scope(|| {});
            name
        })
        .collect()
}
