//! A panic's Exception with its backtrace: the schema's `parsedStack` frames (at most 100,
//! `hasFullStack` false when there were more) and `stack` text, when a backtrace is captured
//! (the pipeline's switch here); without one, the panic's location alone.

use std::time::Duration;

use census_runtime::inproc;
use census_tests::azure::{scratch_dir, settings};
use census_tests::ingestion::{IngestionServer, schema_violations};
use serde_json::Value;

#[inproc]
fn checkout(items: u32) -> u32 {
    price(items)
}

#[inline(never)]
fn price(items: u32) -> u32 {
    if items > 0 {
        panic!("no price for {items} items");
    }
    0
}

#[inline(never)]
fn recurse(depth: u32) -> u32 {
    if depth == 0 {
        panic!("deep");
    }
    // Not a tail call: each level keeps its frame.
    recurse(depth - 1) + std::hint::black_box(1)
}

#[inproc]
fn deep() -> u32 {
    recurse(150)
}

/// The Exception items `run` produced, sent to a strict server, with backtraces forced or not.
fn exceptions(name: &str, backtraces: bool, run: impl FnOnce()) -> Vec<Value> {
    let server = IngestionServer::start().unwrap();
    server.strict();
    // Quiet panics; census chains its own hook to this one at install.
    std::panic::set_hook(Box::new(|_| {}));
    let census = census_runtime::pipeline()
        .panic_backtraces(backtraces)
        .exporter(settings(&server, &scratch_dir(name)).build().unwrap())
        .install()
        .unwrap();
    run();
    census.flush(Duration::from_secs(20)).unwrap();
    drop(std::panic::take_hook());
    assert_eq!(
        server.item_errors(),
        Vec::new(),
        "the strict server took every item"
    );
    let items = server.accepted();
    for item in &items {
        assert_eq!(schema_violations(item), Vec::<String>::new());
    }
    items
        .into_iter()
        .filter(|item| item["data"]["baseType"] == "ExceptionData")
        .map(|item| item["data"]["baseData"]["exceptions"][0].clone())
        .collect()
}

#[test]
fn a_panic_carries_its_frames_when_a_backtrace_is_captured() {
    let found = exceptions("stacks-frames", true, || {
        let _ = std::panic::catch_unwind(|| checkout(3));
    });
    assert_eq!(found.len(), 1);
    let exception = &found[0];
    assert_eq!(exception["message"], "no price for 3 items");
    assert_eq!(exception["hasFullStack"], true);
    let frames = exception["parsedStack"]
        .as_array()
        .expect("frames, not a string");
    assert!(frames.len() > 3, "{frames:#?}");
    // The first frame is where the panic started, not std's panic machinery.
    let first = &frames[0];
    assert_eq!(first["level"], 0);
    assert!(
        first["method"]
            .as_str()
            .unwrap()
            .ends_with("azure_stacks::price"),
        "{first}"
    );
    assert!(
        first["fileName"]
            .as_str()
            .unwrap()
            .ends_with("azure_stacks.rs")
    );
    assert!(first["line"].as_u64().unwrap() > 0);
    for (level, frame) in frames.iter().enumerate() {
        assert_eq!(frame["level"], level);
    }
    assert!(
        frames
            .iter()
            .any(|f| f["method"].as_str().unwrap().contains("checkout"))
    );
    let stack = exception["stack"].as_str().unwrap();
    assert!(
        stack.starts_with(&format!("at {}::price (", module_path!())),
        "{stack}"
    );
}

#[test]
fn a_deep_stack_keeps_its_first_hundred_frames_and_says_it_is_not_whole() {
    let found = exceptions("stacks-deep", true, || {
        let _ = std::panic::catch_unwind(deep);
    });
    assert_eq!(found.len(), 1);
    let frames = found[0]["parsedStack"].as_array().unwrap();
    assert_eq!(frames.len(), 100);
    assert_eq!(found[0]["hasFullStack"], false);
    assert!(
        frames[0]["method"]
            .as_str()
            .unwrap()
            .ends_with("azure_stacks::recurse")
    );
    // The text keeps every frame: the 150 levels of recursion among them.
    let stack = found[0]["stack"].as_str().unwrap();
    assert!(stack.matches("azure_stacks::recurse").count() > 150);
}

#[test]
fn without_a_backtrace_the_location_is_the_one_frame() {
    // SAFETY: set before any thread of this test process reads the environment.
    unsafe {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let found = exceptions("stacks-none", false, || {
        let _ = std::panic::catch_unwind(|| checkout(2));
    });
    assert_eq!(found.len(), 1);
    let frames = found[0]["parsedStack"].as_array().unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["method"], "checkout");
    assert!(
        frames[0]["fileName"]
            .as_str()
            .unwrap()
            .ends_with("azure_stacks.rs")
    );
    assert_eq!(found[0]["hasFullStack"], false);
    assert!(found[0].get("stack").is_none());
}
