//! Spans nest under the caller's span: sync, async across `.await`, concurrent tasks, spawned
//! tasks and threads.

use std::time::Duration;

use census_runtime::context::FutureExt;
use census_runtime::export::SpanRecord;
use census_runtime::{current_span, dependency, inproc};
use census_tests::{flush, install_memory, multi_thread_runtime};

#[inproc]
fn parent() {
    child();
}

#[inproc]
fn child() {
    grandchild();
}

#[dependency(kind = "SQL", target = "orders-db")]
fn grandchild() {}

fn assert_child_of(child: &SpanRecord, parent: &SpanRecord) {
    assert_eq!(
        child.trace_id(),
        parent.trace_id(),
        "{} shares {}'s trace",
        child.name(),
        parent.name()
    );
    assert_eq!(
        child.parent_id(),
        Some(parent.span_id()),
        "{} is a child of {}",
        child.name(),
        parent.name()
    );
}

#[test]
fn sync_calls_nest_parent_child_grandchild() {
    let (pipeline, memory) = install_memory();
    parent();
    flush(&pipeline);

    let (p, c, g) = (
        memory.one("parent"),
        memory.one("child"),
        memory.one("grandchild"),
    );
    assert_eq!(p.parent_id(), None);
    assert_child_of(&c, &p);
    assert_child_of(&g, &c);
    assert_eq!((g.kind(), g.target()), ("SQL", Some("orders-db")));
    assert_eq!(p.kind(), "INPROC");
    // A parent lasts at least as long as its children and starts no later.
    assert!(p.duration() >= c.duration() && c.duration() >= g.duration());
    assert!(p.start_time() <= c.start_time() && c.start_time() <= g.start_time());
}

#[test]
fn separate_root_calls_are_separate_traces() {
    let (pipeline, memory) = install_memory();
    parent();
    parent();
    flush(&pipeline);
    let roots = memory.named("parent");
    assert_eq!(roots.len(), 2);
    assert_ne!(roots[0].trace_id(), roots[1].trace_id());
    assert_ne!(roots[0].span_id(), roots[1].span_id());
}

#[inproc]
async fn async_parent() -> u32 {
    let a = async_child(1).await;
    tokio::task::yield_now().await;
    let b = async_child(2).await;
    a + b
}

#[dependency(kind = "HTTP", target = "pricing", fields(n))]
async fn async_child(n: u32) -> u32 {
    tokio::time::sleep(Duration::from_millis(2)).await;
    // The span is current after the await, on whatever thread resumed the future.
    let here = current_span()
        .context()
        .expect("a span is current after .await");
    current_span().set_property("seen.span", here.span_id());
    tokio::task::yield_now().await;
    sync_leaf();
    n * 10
}

#[inproc]
fn sync_leaf() {}

#[test]
fn async_spans_nest_across_await_on_a_multi_threaded_runtime() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    assert_eq!(runtime.block_on(async_parent()), 30);
    flush(&pipeline);

    let root = memory.one("async_parent");
    let children = memory.named("async_child");
    assert_eq!(children.len(), 2);
    for child in &children {
        assert_child_of(child, &root);
        assert_eq!(
            child.property("seen.span"),
            Some(child.span_id().to_string().as_str())
        );
        let leaves = memory.children_of(child.span_id());
        assert_eq!(leaves.len(), 1, "one sync_leaf under each async_child");
        assert_eq!(leaves[0].name(), "sync_leaf");
    }
    let ns: Vec<_> = children
        .iter()
        .map(|c| c.property("n").unwrap().to_owned())
        .collect();
    assert_eq!(ns, ["1", "2"]);
    // The async span covers the whole future, sleep included.
    assert!(
        children
            .iter()
            .all(|c| c.duration() >= Duration::from_millis(2))
    );
}

#[dependency(kind = "queue", target = "jobs", fields(task))]
async fn task_root(task: usize) {
    for step in 0..3 {
        task_step(task, step).await;
    }
}

#[inproc(fields(task, step))]
async fn task_step(task: usize, step: usize) {
    // Interleave with the other tasks: every yield lets another task run on this thread.
    tokio::task::yield_now().await;
    let _ = (task, step);
    tokio::time::sleep(Duration::from_micros(((task * 7 + step) % 5) as u64 * 100)).await;
}

#[test]
fn concurrent_tasks_keep_their_own_parents() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(4);
    const TASKS: usize = 64;
    runtime.block_on(async {
        let handles: Vec<_> = (0..TASKS).map(|t| tokio::spawn(task_root(t))).collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    flush(&pipeline);

    let roots = memory.named("task_root");
    let steps = memory.named("task_step");
    assert_eq!(roots.len(), TASKS);
    assert_eq!(steps.len(), TASKS * 3);
    for root in &roots {
        assert_eq!(
            root.parent_id(),
            None,
            "each spawned task is a root of its own"
        );
    }
    for step in &steps {
        let task = step.property("task").unwrap();
        let parent = roots
            .iter()
            .find(|r| Some(r.span_id()) == step.parent_id())
            .expect("every step's parent is a task root");
        assert_eq!(
            parent.property("task"),
            Some(task),
            "no cross-talk between tasks"
        );
        assert_eq!(parent.trace_id(), step.trace_id());
    }
}

#[inproc]
async fn spawns_with_helper() {
    tokio::spawn(spawned_work().in_current_span())
        .await
        .unwrap();
}

#[inproc]
async fn spawns_without_helper() {
    tokio::spawn(spawned_work()).await.unwrap();
}

#[inproc]
async fn spawned_work() {
    tokio::task::yield_now().await;
}

#[test]
fn spawned_tasks_nest_with_in_current_span_and_not_without() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    runtime.block_on(spawns_with_helper());
    runtime.block_on(spawns_without_helper());
    flush(&pipeline);

    let with = memory.one("spawns_with_helper");
    let without = memory.one("spawns_without_helper");
    let work = memory.named("spawned_work");
    assert_eq!(work.len(), 2);
    assert!(
        work.iter()
            .any(|w| w.parent_id() == Some(with.span_id()) && w.trace_id() == with.trace_id())
    );
    // Without the helper the task starts with no current span: a new trace.
    assert!(
        work.iter()
            .any(|w| w.parent_id().is_none() && w.trace_id() != without.trace_id())
    );
}

#[inproc]
fn spawns_a_thread() {
    census_runtime::context::spawn_thread(sync_leaf)
        .join()
        .unwrap();
}

#[test]
fn threads_spawned_with_the_helper_nest() {
    let (pipeline, memory) = install_memory();
    spawns_a_thread();
    flush(&pipeline);
    let root = memory.one("spawns_a_thread");
    let leaf = memory.one("sync_leaf");
    assert_child_of(&leaf, &root);
}

#[test]
fn the_span_builder_nests_like_the_macros() {
    let (pipeline, memory) = install_memory();
    census_runtime::span("batch")
        .kind("job")
        .target("nightly")
        .in_scope(|| {
            sync_leaf();
            let _inner = census_runtime::span("inner").start();
            sync_leaf();
        });
    flush(&pipeline);
    let batch = memory.one("batch");
    let inner = memory.one("inner");
    assert_eq!((batch.kind(), batch.target()), ("job", Some("nightly")));
    assert_child_of(&inner, &batch);
    let leaves = memory.named("sync_leaf");
    assert_eq!(leaves.len(), 2);
    assert!(
        leaves
            .iter()
            .any(|l| l.parent_id() == Some(batch.span_id()))
    );
    assert!(
        leaves
            .iter()
            .any(|l| l.parent_id() == Some(inner.span_id()))
    );
}

#[test]
fn without_a_pipeline_calls_run_and_nothing_is_recorded() {
    parent();
    assert!(!census_runtime::current_span().is_recording());
    assert!(census_runtime::current_span().context().is_none());
    // Spans from before the install are not recorded afterwards either.
    let (pipeline, memory) = install_memory();
    flush(&pipeline);
    assert!(memory.spans().is_empty());
}

/// Holds a span guard across `.await`, as the workspace's `clippy.toml` forbids: the
/// expectation fails the lint gate if clippy ever stops catching it.
#[expect(
    clippy::await_holding_invalid_type,
    reason = "shows what a guard held across .await does"
)]
async fn holds_a_guard_across_an_await() {
    let _guard = census_runtime::span("held across await").start();
    tokio::task::yield_now().await;
}

#[test]
fn a_guard_held_across_an_await_captures_the_spans_polled_beside_it_and_still_ends() {
    let (pipeline, memory) = install_memory();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let unrelated = async { census_runtime::span("unrelated").in_scope(|| {}) };
        tokio::join!(holds_a_guard_across_an_await(), unrelated);
    });
    census_runtime::span("after").in_scope(|| {});
    flush(&pipeline);

    let held = memory.one("held across await");
    assert_eq!(
        memory.one("unrelated").parent_id(),
        Some(held.span_id()),
        "what clippy.toml's await-holding-invalid-types entry prevents"
    );
    assert_eq!(
        memory.one("after").parent_id(),
        None,
        "the held span ended when its guard was dropped"
    );
}
