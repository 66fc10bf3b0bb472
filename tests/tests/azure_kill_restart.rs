//! A process killed with SIGKILL while its batches wait for the endpoint: the next start of the
//! program delivers them.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use census_tests::azure::{scratch_dir, stored_batches};
use census_tests::ingestion::IngestionServer;

const CHILD: &str = env!("CARGO_BIN_EXE_azure_child");

#[test]
fn batches_pending_at_sigkill_are_delivered_by_the_next_run() {
    let mut server = IngestionServer::start().unwrap();
    server.stop();
    let dir = scratch_dir("kill-restart");
    let storage = dir.to_string_lossy().into_owned();
    let n = "40";

    let mut child = Command::new(CHILD)
        .args(["produce", &server.connection_string(), &storage, n])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "stored", "the child kept its batches");
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no shutdown runs.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !stored_batches(&dir).is_empty(),
        "the batches survived the kill on disk"
    );

    server.restart().unwrap();
    let output = Command::new(CHILD)
        .args(["deliver", &server.connection_string(), &storage, n])
        .stderr(Stdio::inherit())
        .output()
        .expect("the second run starts");
    assert!(
        output.status.success(),
        "the second run delivered the stored batches"
    );
    let accepted = server.accepted_names();
    let expected: HashSet<String> = (0..40).map(|i| format!("killed-{i}")).collect();
    assert_eq!(accepted.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(accepted.len(), 40, "each exactly once");
    let _ = Duration::ZERO;
}
