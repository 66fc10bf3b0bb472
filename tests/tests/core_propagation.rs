//! What a trace passes on to the services it calls and takes into its tasks and threads: the
//! decision of a dropped trace (flag `00`, with one trace id wherever it is asked for, never an
//! earlier trace's), and the `tracestate` that came in with it, recorded or not.

use census_runtime::context::{Carried, FutureExt, spawn_thread};
use census_runtime::propagation::Outgoing;
use census_runtime::{Sampler, SpanContext, SpanId, TraceId, current_span, inproc, request};
use census_tests::{flush, install_memory, install_memory_sampled, multi_thread_runtime};

const STATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn caller() -> SpanContext {
    SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        true,
    )
}

/// The headers a call made here would carry, by name.
fn outgoing() -> Vec<(String, String)> {
    Outgoing::current(true)
        .map(|o| {
            o.headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Asserts that a call with `headers` passes the caller's trace on, with `flags` and the caller's
/// `tracestate`.
fn assert_passes_the_caller_on(what: &str, headers: &[(String, String)], flags: &str) {
    assert_eq!(
        header(headers, "tracestate").as_deref(),
        Some(STATE),
        "{what}"
    );
    let traceparent = header(headers, "traceparent").unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && traceparent.ends_with(&format!("-{flags}")),
        "{what}: {traceparent}"
    );
}

#[inproc]
fn nested_work() -> (Option<String>, Vec<(String, String)>) {
    (
        current_span().trace_state().as_deref().map(str::to_owned),
        outgoing(),
    )
}

#[test]
fn tracestate_goes_with_the_context_into_spawned_tasks_and_threads() {
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    let (task, bare_task, thread, carried) = request("GET /orders/{id}")
        .parent(caller())
        .trace_state(STATE)
        .in_scope(|| {
            let task = runtime.block_on(async {
                tokio::spawn(async { nested_work() }.in_current_span())
                    .await
                    .unwrap()
            });
            let bare_task =
                runtime.block_on(async { tokio::spawn(async { nested_work() }).await.unwrap() });
            let thread = spawn_thread(nested_work).join().unwrap();
            let captured = Carried::current();
            assert_eq!(captured.trace_state(), Some(STATE));
            let carried = std::thread::spawn(move || captured.run(nested_work))
                .join()
                .unwrap();
            (task, bare_task, thread, carried)
        });
    flush(&pipeline);
    let request_span = memory.one("GET /orders/{id}");
    let works = memory.named("nested_work");
    assert_eq!(works.len(), 4);
    for (what, (state, headers)) in [("task", task), ("thread", thread), ("carried", carried)] {
        assert_eq!(state.as_deref(), Some(STATE), "{what}");
        assert_passes_the_caller_on(what, &headers, "01");
        assert!(
            header(&headers, "request-id")
                .unwrap()
                .starts_with("|4bf92f3577b34da6a3ce929d0e0e4736."),
            "{what}"
        );
    }
    for work in works.iter().filter(|w| w.parent_id().is_some()) {
        assert_eq!(work.parent_id(), Some(request_span.span_id()));
    }
    // A task spawned without the context starts a trace of its own, with no state.
    let (state, headers) = bare_task;
    assert_eq!(state, None);
    assert_eq!(header(&headers, "tracestate"), None);
    assert!(
        !header(&headers, "traceparent")
            .unwrap()
            .contains("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

#[test]
fn an_unsampled_callers_tracestate_is_passed_on_with_its_decision_and_nothing_is_sent() {
    // A pipeline without the standard metrics: a dropped request is not recorded even to be
    // counted.
    census_runtime::integrations::log::LogBridge::new()
        .install()
        .expect("the process's first logger");
    let (pipeline, memory) = install_memory();
    let runtime = multi_thread_runtime(2);
    let unsampled = SpanContext::new(caller().trace_id(), caller().span_id(), false);
    let (here, task, thread) = request("GET /orders/{id}")
        .parent(unsampled)
        .trace_state(STATE)
        .in_scope(|| {
            let task = runtime.block_on(async {
                tokio::spawn(
                    async {
                        log::info!("in the task");
                        nested_work()
                    }
                    .in_current_span(),
                )
                .await
                .unwrap()
            });
            let thread = spawn_thread(|| {
                log::info!("on the thread");
                nested_work()
            })
            .join()
            .unwrap();
            (outgoing(), task.1, thread.1)
        });
    let in_future = runtime.block_on(
        request("GET /orders")
            .parent(unsampled)
            .trace_state(STATE)
            .instrument(async {
                tokio::task::yield_now().await;
                outgoing()
            }),
    );
    flush(&pipeline);

    for (what, headers) in [
        ("here", here),
        ("task", task),
        ("thread", thread),
        ("future", in_future),
    ] {
        assert_passes_the_caller_on(what, &headers, "00");
    }
    assert!(memory.spans().is_empty(), "{:#?}", memory.spans());
    assert!(memory.logs().is_empty(), "{:#?}", memory.logs());
}

#[test]
fn the_tracestate_of_another_trace_is_not_passed_on() {
    let (_pipeline, _memory) = install_memory();
    request("GET /")
        .parent(caller())
        .trace_state(STATE)
        .in_scope(|| {
            // A trace of its own started inside: the outer trace's state is not its state.
            let other = SpanContext::new(TraceId::random(), SpanId::random(), true);
            let state = Carried::from_context(other).run(|| current_span().trace_state());
            assert_eq!(state, None);
            assert_eq!(current_span().trace_state().as_deref(), Some(STATE));
        });
}

#[inproc]
fn dropped_root() -> (SpanContext, SpanContext, SpanContext, SpanContext) {
    let first = current_span().context().unwrap();
    let again = current_span().context().unwrap();
    let in_thread = spawn_thread(|| current_span().context().unwrap())
        .join()
        .unwrap();
    let runtime = multi_thread_runtime(1);
    let in_task = runtime.block_on(async {
        tokio::spawn(async { current_span().context().unwrap() }.in_current_span())
            .await
            .unwrap()
    });
    (first, again, in_thread, in_task)
}

#[inproc]
fn dropped_root_asking_nothing() {}

#[test]
fn a_dropped_root_s_trace_id_is_one_wherever_it_is_asked_for_and_never_reused() {
    let (pipeline, memory) = install_memory_sampled(Sampler::probability(0.25));
    let mut seen = std::collections::HashSet::new();
    let mut dropped = 0;
    for _ in 0..200 {
        dropped_root_asking_nothing();
        let (first, again, in_thread, in_task) = dropped_root();
        if first.is_sampled() {
            continue;
        }
        dropped += 1;
        for ctx in [again, in_thread, in_task] {
            assert_eq!(ctx.trace_id(), first.trace_id());
            assert!(!ctx.is_sampled());
        }
        assert_ne!(again.span_id(), first.span_id(), "a fresh span id per call");
        assert!(Sampler::score(first.trace_id()) >= 0.25);
        assert!(seen.insert(first.trace_id()), "an earlier root's id again");
    }
    assert!(dropped > 100, "{dropped} of 200 dropped at 25 %");
    flush(&pipeline);
    assert!(
        memory.spans().iter().all(|s| !seen.contains(&s.trace_id())),
        "nothing of a dropped trace is recorded"
    );
}

/// An async root that asks for its context, waits, and asks again.
#[inproc]
async fn dropped_async_root() -> (SpanContext, SpanContext) {
    let before = current_span().context().unwrap();
    tokio::task::yield_now().await;
    let after = current_span().context().unwrap();
    (before, after)
}

#[test]
fn an_async_dropped_root_keeps_its_trace_id_across_polls() {
    let (_pipeline, _memory) = install_memory_sampled(Sampler::never());
    let runtime = multi_thread_runtime(2);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let (before, after) =
            runtime.block_on(async { tokio::spawn(dropped_async_root()).await.unwrap() });
        assert_eq!(before.trace_id(), after.trace_id());
        assert!(!after.is_sampled());
        assert!(seen.insert(before.trace_id()));
    }
    // Polled on a thread where something else is current, too.
    let outer = SpanContext::new(TraceId::random(), SpanId::random(), true);
    let (before, after) = Carried::from_context(outer).run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(
            census_runtime::span("dropped")
                .parent(SpanContext::new(TraceId::random(), SpanId::random(), false))
                .instrument(async {
                    let before = current_span().context().unwrap();
                    tokio::task::yield_now().await;
                    (before, current_span().context().unwrap())
                }),
        )
    });
    assert_eq!(before.trace_id(), after.trace_id());
    assert_ne!(before.trace_id(), outer.trace_id());
}

#[test]
fn a_tracing_span_in_a_dropped_trace_passes_the_decision_on() {
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(census_runtime::integrations::tracing::CensusLayer::new());
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    let (pipeline, memory) = install_memory_sampled(Sampler::never());
    // A root `tracing` span the sampler drops, and a child of it.
    let (outer, inner) = tracing::info_span!("handle").in_scope(|| {
        let outer = current_span().context().unwrap();
        let inner = tracing::info_span!("step").in_scope(|| current_span().context().unwrap());
        (outer, inner)
    });
    assert!(!outer.is_sampled() && !inner.is_sampled());
    assert_eq!(inner.trace_id(), outer.trace_id());
    // Under a caller's 00: its trace id.
    let passed_on = request("GET /")
        .parent(SpanContext::new(
            caller().trace_id(),
            caller().span_id(),
            false,
        ))
        .in_scope(|| tracing::info_span!("step").in_scope(|| current_span().context().unwrap()));
    assert_eq!(
        (passed_on.trace_id(), passed_on.is_sampled()),
        (caller().trace_id(), false)
    );
    flush(&pipeline);
    assert!(memory.spans().is_empty());
}
