//! The API integrations build on: request spans continuing a remote trace, the operation name
//! they hand down, tracestate, and detached spans ended elsewhere.

use census_runtime::propagation::Incoming;
use census_runtime::site::SpanKind;
use census_runtime::{Sampler, SpanContext, SpanId, TraceId, current_span, inproc, request, span};
use census_tests::{flush, install_memory, install_memory_sampled};

fn caller() -> SpanContext {
    SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        true,
    )
}

#[inproc]
fn handler() {
    assert_eq!(
        current_span().trace_state().as_deref(),
        Some("congo=t61rcWkgMzE")
    );
}

#[test]
fn a_request_continues_the_remote_trace_and_names_the_operation_for_its_children() {
    let (pipeline, memory) = install_memory();
    request("GET /orders/{id}")
        .parent(caller())
        .trace_state("congo=t61rcWkgMzE")
        .data("http://localhost/orders/7")
        .in_scope(|| {
            handler();
            current_span().set_result_code(200);
        });
    flush(&pipeline);

    let req = memory.one("GET /orders/{id}");
    assert_eq!(req.span_kind(), SpanKind::Request);
    assert_eq!(req.trace_id(), caller().trace_id());
    assert_eq!(req.parent_id(), Some(caller().span_id()));
    assert_eq!(req.operation_name(), Some("GET /orders/{id}"));
    assert_eq!(req.result_code(), Some("200"));
    assert_eq!(req.data(), Some("http://localhost/orders/7"));
    let child = memory.one("handler");
    assert_eq!(child.parent_id(), Some(req.span_id()));
    assert_eq!(child.operation_name(), Some("GET /orders/{id}"));
    assert_eq!(
        current_span().trace_state(),
        None,
        "nothing is left current"
    );
}

fn caller_with_flag(sampled: bool) -> SpanContext {
    SpanContext::new(caller().trace_id(), caller().span_id(), sampled)
}

/// Serves one request under `incoming` and answers the context its calls would pass on.
fn serve(incoming: &Incoming) -> Option<SpanContext> {
    incoming.request("GET /").in_scope(|| {
        handler_without_state();
        current_span().context()
    })
}

#[test]
fn a_remote_parent_with_flag_01_is_kept_at_any_rate_and_one_with_00_is_dropped() {
    // The caller's trace id scores 0.33: a rate of 0.25 would drop it by its score, 0.5 keep it.
    assert!((0.25..0.5).contains(&Sampler::score(caller().trace_id())));
    for rate in [0.0, 0.25, 0.5, 1.0] {
        let (pipeline, memory) = install_memory_sampled(Sampler::probability(rate));
        let kept = Incoming::from_values(
            [b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice()],
            [],
            [],
        );
        let passed_on = serve(&kept).unwrap();
        assert!(passed_on.is_sampled(), "rate {rate}");
        flush(&pipeline);
        assert_eq!(memory.spans().len(), 2, "01 is kept at rate {rate}");
        let served = memory.one("GET /");
        assert_eq!(served.trace_id(), caller().trace_id());
        assert_eq!(served.parent_id(), Some(caller().span_id()));
        memory.clear();

        let dropped = Incoming::from_values(
            [b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".as_slice()],
            [],
            [],
        );
        let passed_on = serve(&dropped).unwrap();
        assert!(!passed_on.is_sampled(), "rate {rate}");
        assert_eq!(
            passed_on.trace_id(),
            caller().trace_id(),
            "the caller's trace goes on"
        );
        assert_ne!(
            passed_on.span_id(),
            caller().span_id(),
            "a span id of its own"
        );
        // The builder's own API decides the same.
        request("GET /")
            .parent(caller_with_flag(false))
            .in_scope(handler_without_state);
        flush(&pipeline);
        assert!(memory.spans().is_empty(), "00 is dropped at rate {rate}");
        drop(pipeline);
    }
}

#[test]
fn a_legacy_request_id_parent_is_decided_by_its_trace_id_s_score() {
    let legacy = Incoming::from_values(
        [],
        [],
        [b"|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.".as_slice()],
    );
    assert!(legacy.is_legacy());
    // The caller's trace id scores 0.33: dropped at 0.25, kept at 0.5.
    let (pipeline, memory) = install_memory_sampled(Sampler::probability(0.25));
    let passed_on = serve(&legacy).unwrap();
    assert_eq!(
        (passed_on.trace_id(), passed_on.is_sampled()),
        (caller().trace_id(), false)
    );
    request("GET /")
        .scored_parent(caller())
        .in_scope(handler_without_state);
    flush(&pipeline);
    assert!(memory.spans().is_empty());
    drop(pipeline);

    let (pipeline, memory) = install_memory_sampled(Sampler::probability(0.5));
    assert!(serve(&legacy).unwrap().is_sampled());
    flush(&pipeline);
    assert_eq!(memory.spans().len(), 2);
    assert_eq!(memory.one("GET /").parent_id(), Some(caller().span_id()));
}

#[inproc]
fn handler_without_state() {}

#[test]
fn a_detached_span_ends_on_another_thread_under_the_span_current_where_it_started() {
    let (pipeline, memory) = install_memory();
    span("query batch").in_scope(|| {
        let query = span("SELECT orders")
            .kind("postgresql")
            .target("127.0.0.1:5432 | shop")
            .start_detached();
        assert!(
            !current_span()
                .context()
                .is_some_and(|c| Some(c) == query.context()),
            "not current"
        );
        std::thread::spawn(move || {
            query.set_data("SELECT * FROM orders WHERE id = $1");
            query.set_result_code("42P01");
            query.fail("relation \"orders\" does not exist");
            query.end();
        })
        .join()
        .unwrap();
    });
    flush(&pipeline);
    let batch = memory.one("query batch");
    let query = memory.one("SELECT orders");
    assert_eq!(query.parent_id(), Some(batch.span_id()));
    assert_eq!(
        (query.kind(), query.result_code(), query.success()),
        ("postgresql", Some("42P01"), false)
    );
    assert_eq!(
        query.error_message(),
        Some("relation \"orders\" does not exist")
    );
}
