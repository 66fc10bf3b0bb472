//! Panics: every span a panic unwinds through carries the panic's own message and location,
//! whatever panic hooks the application sets, and never an older panic's.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::{Context, Waker};

use census_runtime::export::{MemoryExporter, SpanRecord};
use census_runtime::inproc;
use census_runtime::{Sampler, current_span};
use census_tests::{flush, install_memory, install_memory_sampled, multi_thread_runtime};

#[inproc]
fn innermost(order: u32) -> u32 {
    if order == 0 {
        panic!("order {order} has no lines");
    }
    order
}

#[inproc]
fn middle(order: u32) -> u32 {
    innermost(order) + 1
}

#[inproc]
fn outermost(order: u32) -> u32 {
    middle(order) + 1
}

/// The one span named `name`, which must have failed with a panic; its message and location.
fn panicked(memory: &MemoryExporter, name: &str) -> (String, Option<String>) {
    let span = memory.one(name);
    assert!(!span.success(), "{name} failed");
    assert_eq!(span.result_code(), Some("panic"), "{name}");
    let exception = span.exception().expect("a panic leaves exception details");
    assert_eq!(
        span.error_message(),
        Some(exception.message.as_str()),
        "{name}: the failure's message is the exception's"
    );
    (exception.message.clone(), exception.location.clone())
}

fn location_in_this_file(location: Option<&str>) -> bool {
    location.is_some_and(|l| l.contains("core_panics.rs"))
}

#[test]
fn every_span_a_panic_unwinds_through_carries_its_message_and_location() {
    let (pipeline, memory) = install_memory();
    let caught = catch_unwind(|| outermost(0));
    assert!(caught.is_err(), "the panic reaches the caller");
    flush(&pipeline);

    let inner = panicked(&memory, "innermost");
    assert_eq!(inner.0, "order 0 has no lines");
    assert!(location_in_this_file(inner.1.as_deref()), "{inner:?}");
    for name in ["middle", "outermost"] {
        assert_eq!(panicked(&memory, name), inner, "{name}: the same panic");
    }
}

#[inproc]
async fn innermost_async(order: u32) -> u32 {
    tokio::task::yield_now().await;
    if order == 0 {
        panic!("async order {order} has no lines");
    }
    order
}

#[inproc]
async fn outermost_async(order: u32) -> u32 {
    innermost_async(order).await + 1
}

#[test]
fn every_async_span_a_panic_unwinds_through_carries_its_message_and_location() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    let joined = runtime.block_on(runtime.spawn(outermost_async(0)));
    assert!(joined.unwrap_err().is_panic());
    flush(&pipeline);

    let inner = panicked(&memory, "innermost_async");
    assert_eq!(inner.0, "async order 0 has no lines");
    assert!(location_in_this_file(inner.1.as_deref()), "{inner:?}");
    assert_eq!(panicked(&memory, "outermost_async"), inner);
}

#[inproc]
fn catches_its_own_panic() -> bool {
    catch_unwind(|| panic!("the first panic, caught inside its span")).is_err()
}

#[inproc]
fn resumes(payload: Box<dyn std::any::Any + Send>) {
    resume_unwind(payload)
}

#[test]
fn a_resumed_payload_is_described_by_itself_never_by_an_earlier_panic() {
    let (pipeline, memory) = install_memory();
    assert!(catches_its_own_panic());
    let resumed = catch_unwind(|| resumes(Box::new("a payload resumed later")));
    assert!(resumed.is_err());
    let resumed_string = catch_unwind(|| resumes(Box::new(String::from("an owned payload"))));
    assert!(resumed_string.is_err());
    flush(&pipeline);

    let caught = memory.one("catches_its_own_panic");
    assert!(caught.success(), "the panic never left its span");
    let described: Vec<(String, Option<String>)> = memory
        .named("resumes")
        .iter()
        .map(|span| {
            let exception = span.exception().expect("a resumed panic fails the span");
            (exception.message.clone(), exception.location.clone())
        })
        .collect();
    assert_eq!(
        described,
        [
            ("a payload resumed later".to_owned(), None),
            ("an owned payload".to_owned(), None),
        ],
        "each resumed payload by its own message, with no location (no hook ran for it)"
    );
}

#[test]
fn a_resumed_panic_from_another_task_is_described_by_its_payload() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    // The `JoinError::into_panic` pattern: a task panics, its caller resumes the payload.
    let joined = runtime.block_on(runtime.spawn(async { panic!("the task's own panic") }));
    let payload = joined.unwrap_err().into_panic();
    assert!(catch_unwind(AssertUnwindSafe(|| resumes(payload))).is_err());
    flush(&pipeline);

    let span = memory.one("resumes");
    let exception = span.exception().expect("described");
    assert_eq!(exception.message, "the task's own panic");
}

/// Installs a hook that replaces whatever was set, calling nothing else: what error-reporting
/// crates do when they are not told to chain.
fn replace_hook_without_chaining() {
    std::panic::set_hook(Box::new(|_| {}));
}

fn messages(memory: &MemoryExporter, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let span: SpanRecord = memory.one(name);
            span.exception()
                .map(|e| e.message.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_hook_set_after_install_keeps_every_panic_s_message() {
    let (pipeline, memory) = install_memory();
    replace_hook_without_chaining();
    assert!(catch_unwind(|| outermost(0)).is_err());
    let runtime = multi_thread_runtime(1);
    assert!(runtime.block_on(runtime.spawn(outermost_async(0))).is_err());
    flush(&pipeline);

    assert_eq!(
        messages(&memory, &["innermost", "middle", "outermost"]),
        ["order 0 has no lines"; 3]
    );
    assert_eq!(
        messages(&memory, &["innermost_async", "outermost_async"]),
        ["async order 0 has no lines"; 2]
    );
}

#[test]
fn a_hook_set_before_install_is_chained_and_the_panic_keeps_its_location() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLED: AtomicUsize = AtomicUsize::new(0);
    std::panic::set_hook(Box::new(|_| {
        CALLED.fetch_add(1, Ordering::Relaxed);
    }));
    let (pipeline, memory) = install_memory();
    assert!(catch_unwind(|| outermost(0)).is_err());
    flush(&pipeline);

    assert_eq!(
        CALLED.load(Ordering::Relaxed),
        1,
        "the application's hook still runs"
    );
    let (message, location) = panicked(&memory, "outermost");
    assert_eq!(message, "order 0 has no lines");
    assert!(location_in_this_file(location.as_deref()), "{location:?}");
}

#[test]
fn a_hook_taken_and_set_again_keeps_message_and_location() {
    let (pipeline, memory) = install_memory();
    // `take_hook` hands census's hook to the application, which chains it from its own.
    let census_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| census_hook(info)));
    assert!(catch_unwind(|| outermost(0)).is_err());
    // Then takes it away for good: the message still comes from the payload.
    drop(std::panic::take_hook());
    assert!(catch_unwind(|| middle(0)).is_err());
    flush(&pipeline);

    let outer = memory.one("outermost");
    let exception = outer.exception().expect("described");
    assert_eq!(exception.message, "order 0 has no lines");
    assert!(location_in_this_file(exception.location.as_deref()));
    let later: Vec<String> = memory
        .named("middle")
        .iter()
        .map(|span| span.exception().expect("described").message.clone())
        .collect();
    assert_eq!(later, ["order 0 has no lines"; 2]);
}

#[test]
fn a_panic_in_a_span_builder_scope_carries_its_message_whatever_the_hooks() {
    let (pipeline, memory) = install_memory();
    replace_hook_without_chaining();
    let caught = catch_unwind(|| {
        census_runtime::span("reprice").in_scope(|| -> u32 { panic!("no price for sku 7") })
    });
    assert!(caught.is_err());
    flush(&pipeline);

    let (message, _) = panicked(&memory, "reprice");
    assert_eq!(message, "no price for sku 7");
}

#[inproc]
async fn dropped_root_that_panics(order: u32) -> u32 {
    if order == 0 {
        panic!("order {order} has no lines");
    }
    order
}

#[test]
fn an_async_root_of_a_dropped_trace_that_panics_leaves_nothing_current() {
    let (_pipeline, _memory) = install_memory_sampled(Sampler::never());
    let mut call = std::pin::pin!(dropped_root_that_panics(0));
    let mut cx = Context::from_waker(Waker::noop());
    let caught = catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(&mut cx)));
    assert!(caught.is_err(), "the panic reaches the caller");
    assert_eq!(
        current_span().context(),
        None,
        "the dropped trace's root is closed by the unwinding"
    );
}

/// An argument whose `Display` panics when the span records it.
struct Unprintable;

impl std::fmt::Display for Unprintable {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("this argument can't be printed");
    }
}

#[inproc(fields(arg))]
fn records_unprintable(arg: Unprintable) -> u32 {
    1
}

#[inproc]
fn after_unprintable() {}

#[test]
fn a_panic_recording_an_argument_ends_the_span_and_leaves_nothing_current() {
    let (pipeline, memory) = install_memory();
    let caught = catch_unwind(|| records_unprintable(Unprintable));
    assert!(caught.is_err(), "the panic reaches the caller");
    after_unprintable();
    flush(&pipeline);

    let span = memory.one("records_unprintable");
    assert!(!span.success(), "the call failed");
    assert_eq!(span.result_code(), Some("panic"));
    assert_eq!(
        memory.one("after_unprintable").parent_id(),
        None,
        "nothing of the failed call stays current"
    );
}
