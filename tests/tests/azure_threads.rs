//! The Azure exporter's thread gives way to the application: it runs at a lower scheduling
//! priority than the threads that installed it, so that encoding, compressing and sending never
//! take a busy core from the application's own work.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::time::{Duration, Instant};

use census_tests::azure::{scratch_dir, settings, spans};
use census_tests::ingestion::IngestionServer;

/// A thread's `nice` value, from its `/proc` stat line.
fn nice(task: &Path) -> i32 {
    let stat = std::fs::read_to_string(task.join("stat")).expect("the thread's stat");
    // The name, in parentheses, may hold spaces: the fields that follow it are counted from
    // the last parenthesis (the state is field 3, `nice` field 19).
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 1..];
    after_name
        .split_whitespace()
        .nth(19 - 3)
        .and_then(|field| field.parse().ok())
        .expect("a nice value")
}

/// The `/proc` directory of this process's thread named `name`, once it runs.
fn thread_named(name: &str) -> std::path::PathBuf {
    let start = Instant::now();
    loop {
        for task in std::fs::read_dir("/proc/self/task")
            .expect("/proc")
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                return task.path();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a thread named {name} runs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_exporter_s_thread_runs_at_a_lower_priority_than_the_application() {
    let server = IngestionServer::start().unwrap();
    let dir = scratch_dir("threads-priority");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &dir)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    let sent = spans("priority", 3);

    let application = nice(Path::new("/proc/thread-self"));
    let exporter = nice(&thread_named("census-azure"));
    assert_eq!(exporter, (application + 10).min(19), "nice values");
    // The worker that hands the exporter its batches keeps the application's priority.
    assert_eq!(nice(&thread_named("census-export")), application);

    census.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(server.accepted_names().len(), sent.len(), "it still sends");
}
