//! Records the compiler's version for `ai.internal.sdkVersion` (`rust1.95:census0.1.0`).

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .map(|full| full.split('.').take(2).collect::<Vec<_>>().join("."))
        .unwrap_or_default();
    println!("cargo:rustc-env=CENSUS_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
