//! The Python reference (opencensus with its Azure exporter, requests, Django), run by the tests
//! that compare census with it.

use std::path::PathBuf;
use std::process::Command;

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace")
        .to_owned()
}

/// The reference venv's python (made by `scripts/pyref-venv`); fails, never skips, when it
/// cannot be had.
pub fn reference_python() -> PathBuf {
    let output = Command::new(repo().join("scripts/pyref-venv"))
        .output()
        .expect("scripts/pyref-venv runs (it needs python3 with venv and pip)");
    assert!(
        output.status.success(),
        "scripts/pyref-venv failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let python = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    assert!(python.exists(), "{} is missing", python.display());
    python
}
