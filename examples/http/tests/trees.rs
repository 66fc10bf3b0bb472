//! The demos print each trace as one tree: a request served by the demo itself is printed inside
//! the tree of the call that made it, never alone above it, whichever thread ended it first.

use std::process::Command;

/// Runs a demo and returns what it printed; it must succeed.
fn run(demo: &str) -> String {
    let output = Command::new(demo)
        .env_remove("APPLICATIONINSIGHTS_CONNECTION_STRING")
        .output()
        .expect("the demo starts");
    assert!(
        output.status.success(),
        "{demo} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the demo prints UTF-8")
}

/// The lines of the printed trees that are requests.
fn requests(printed: &str) -> Vec<&str> {
    printed
        .lines()
        .filter(|line| line.contains("  Request  "))
        .collect()
}

#[test]
fn the_axum_demo_prints_every_request_inside_its_caller_s_tree() {
    let printed = run(env!("CARGO_BIN_EXE_http-demo"));
    let requests = requests(&printed);
    // Three clients, each calling `/orders/{id}`, which calls `/stock/{id}`.
    assert_eq!(requests.len(), 6, "{printed}");
    for request in requests {
        assert!(request.starts_with("    "), "{request:?} in\n{printed}");
    }
}

#[test]
fn the_actix_demo_prints_every_request_inside_its_caller_s_tree() {
    let printed = run(env!("CARGO_BIN_EXE_actix"));
    let requests = requests(&printed);
    assert_eq!(requests.len(), 3, "{printed}");
    for request in requests {
        assert!(request.starts_with("    "), "{request:?} in\n{printed}");
    }
}
