//! The Python reference exporter (opencensus-ext-azure, from PyPI, in a venv that
//! `scripts/pyref-venv` makes) and census send to the same ingestion server; their envelopes are
//! compared kind by kind, side by side.

use std::process::Command;
use std::time::Duration;

use census_tests::azure::{
    every_kind_of_span, scratch_dir, settings, shape_differences, shapes, side_by_side,
};
use census_tests::ingestion::IngestionServer;
use census_tests::python::{reference_python, repo};

#[test]
fn census_and_the_python_reference_send_the_same_shapes() {
    let python = reference_python();
    let server = IngestionServer::start().unwrap();
    let status = Command::new(&python)
        .arg(repo().join("tests/python/reference_spans.py"))
        .arg(server.port().to_string())
        .arg(scratch_dir("pyref-storage"))
        .status()
        .expect("the reference program runs");
    assert!(status.success(), "the reference program failed");
    assert!(server.wait_until(Duration::from_secs(10), |r| !r.is_empty()));
    let reference_items = server.items();
    let reference_requests = server.requests().len();
    assert_eq!(
        server.requests()[0].path,
        "//v2.1/track",
        "the reference does not normalise slashes"
    );

    let census = census_runtime::pipeline()
        .cloud_role("orders-api")
        .exporter(
            settings(&server, &scratch_dir("pyref"))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    every_kind_of_span();
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    let census_items: Vec<_> = requests[reference_requests..]
        .iter()
        .flat_map(|r| r.items.clone())
        .collect();
    assert_eq!(requests[reference_requests].path, "/v2.1/track");

    let reference = shapes(&reference_items);
    let ours = shapes(&census_items);
    let mut report = String::new();
    let mut problems = Vec::new();
    for kind in [
        "Microsoft.ApplicationInsights.RemoteDependency",
        "Microsoft.ApplicationInsights.Request",
        "Microsoft.ApplicationInsights.Exception",
    ] {
        let theirs = reference
            .get(kind)
            .unwrap_or_else(|| panic!("the reference sent no {kind}"));
        let mine = ours
            .get(kind)
            .unwrap_or_else(|| panic!("census sent no {kind}"));
        report.push_str(&format!("== {kind}\n{}\n", side_by_side(mine, theirs)));
        // Census adds the operation name and, on an Exception, its span as parent (reference
        // README); the reference's Exception has `hasFullStack` true where census, knowing only
        // the panic's location, says false: the same types either way. The reference writes
        // its traceback as a string in `parsedStack`; census writes the schema's frames.
        for problem in shape_differences(
            mine,
            theirs,
            &[
                "sampleRate",
                "data.baseData.exceptions[].parsedStack",
                "data.baseData.exceptions[].parsedStack[]",
                "data.baseData.exceptions[].parsedStack[].level",
                "data.baseData.exceptions[].parsedStack[].method",
                "data.baseData.exceptions[].parsedStack[].fileName",
                "data.baseData.exceptions[].parsedStack[].line",
                // With a captured backtrace (RUST_BACKTRACE), its text too.
                "data.baseData.exceptions[].stack",
                "tags.ai.operation.parentId",
                "tags.ai.operation.name",
            ],
            &["tags.ai.operation.name", "tags.ai.operation.parentId"],
        ) {
            problems.push(format!("{kind}: {problem}"));
        }
    }
    println!("{report}");
    assert!(problems.is_empty(), "{}\n{report}", problems.join("\n"));
}
