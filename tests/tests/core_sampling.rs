//! Sampling: decided once per trace from the trace id, with the Application Insights score.

use census_runtime::{Sampler, TraceId, inproc};
use census_tests::{flush, install_memory_sampled};

/// DJB2 as the Azure Monitor exporters write it, step by step in 64-bit arithmetic with an
/// explicit wrap to 32 bits: a second implementation to check the runtime's against.
fn djb2_score_by_hand(hex: &str) -> f64 {
    let mut hash: i64 = 5381;
    for byte in hex.bytes() {
        hash = hash * 33 + i64::from(byte);
        hash = (hash + (1 << 31)).rem_euclid(1 << 32) - (1 << 31);
    }
    let magnitude = if hash == -(1 << 31) {
        (1 << 31) - 1
    } else {
        hash.abs()
    };
    magnitude as f64 / 2_147_483_647.0
}

#[test]
fn sample_score_matches_djb2_computed_by_hand() {
    // Values the reference algorithm (Python, 32-bit fixed ints) gives for these ids.
    let known = [
        ("0af7651916cd43dd8448eb211c80319c", 0.527_889_280_360_140_5),
        ("4bf92f3577b34da6a3ce929d0e0e4736", 0.334_613_538_503_001_24),
        ("00000000000000000000000000000001", 0.023_393_514_577_016_94),
        ("ffffffffffffffffffffffffffffffff", 0.999_613_551_422_773_6),
    ];
    for (hex, expected) in known {
        let id = TraceId::from_hex(hex).unwrap();
        assert_eq!(Sampler::score(id), expected, "{hex}");
        assert_eq!(djb2_score_by_hand(hex), expected, "{hex}");
    }
    for _ in 0..1000 {
        let id = TraceId::random();
        assert_eq!(Sampler::score(id), djb2_score_by_hand(&id.to_string()));
    }
}

#[test]
fn probability_sampler_keeps_traces_whose_score_is_below_the_rate() {
    let sampler = Sampler::probability(0.4);
    let below = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(); // 0.33
    let above = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(); // 0.53
    assert!(sampler.should_sample(below));
    assert!(!sampler.should_sample(above));
}

#[inproc]
fn sampled_root() {
    sampled_child();
}

#[inproc]
fn sampled_child() {}

#[test]
fn ten_thousand_traces_at_a_quarter_keep_a_quarter_and_children_follow() {
    let (pipeline, memory) = install_memory_sampled(Sampler::probability(0.25));
    const TRACES: usize = 10_000;
    for _ in 0..TRACES {
        sampled_root();
    }
    flush(&pipeline);

    let roots = memory.named("sampled_root");
    let children = memory.named("sampled_child");
    let kept = roots.len() as f64 / TRACES as f64;
    assert!(
        (0.23..=0.27).contains(&kept),
        "kept {kept:.4} of traces at rate 0.25"
    );
    // Children follow their root: every kept root has its child, no child without a root.
    assert_eq!(children.len(), roots.len());
    for child in &children {
        assert!(roots.iter().any(|r| Some(r.span_id()) == child.parent_id()));
    }
    for root in &roots {
        assert!(
            Sampler::score(root.trace_id()) < 0.25,
            "kept traces score below the rate"
        );
        assert_eq!(root.sample_rate(), 25.0, "the rate is kept for sampleRate");
    }
    assert_eq!(
        census_runtime::pipeline::diagnostics().dropped_queue_full,
        0
    );
}

#[inproc]
fn rare_root() {}

#[test]
fn at_one_in_a_million_every_kept_trace_s_id_scores_below_the_rate() {
    const RATE: f64 = 1e-6;
    const ROOTS: usize = 20_000_000;
    let (pipeline, memory) = install_memory_sampled(Sampler::probability(RATE));
    for _ in 0..ROOTS {
        rare_root();
    }
    flush(&pipeline);
    let kept = memory.named("rare_root");
    // About 20 kept; none at all would be a chance of e^-20.
    assert!(!kept.is_empty(), "no trace kept in {ROOTS} roots at {RATE}");
    for root in &kept {
        let score = Sampler::score(root.trace_id());
        assert!(
            score < RATE,
            "kept trace {} scores {score}, not below {RATE}: other services would drop it",
            root.trace_id()
        );
    }
}

#[test]
fn never_records_nothing_and_always_records_everything() {
    let (pipeline, memory) = install_memory_sampled(Sampler::never());
    for _ in 0..100 {
        sampled_root();
    }
    flush(&pipeline);
    assert!(memory.spans().is_empty());
    drop(pipeline);

    let (pipeline, memory) = install_memory_sampled(Sampler::always());
    for _ in 0..100 {
        sampled_root();
    }
    flush(&pipeline);
    assert_eq!(memory.spans().len(), 200);
    assert!(memory.spans().iter().all(|s| s.sample_rate() == 100.0));
}

#[test]
fn a_rate_outside_zero_to_one_is_refused_at_install() {
    let error = census_runtime::pipeline()
        .sampler(Sampler::probability(1.5))
        .exporter(census_runtime::export::MemoryExporter::new())
        .install()
        .unwrap_err();
    assert_eq!(error.to_string(), "sampling rate 1.5 is outside 0.0..=1.0");
    assert!(
        census_runtime::pipeline()
            .sampler(Sampler::probability(f64::NAN))
            .exporter(census_runtime::export::MemoryExporter::new())
            .install()
            .is_err()
    );
}

#[test]
fn inside_a_dropped_trace_spans_are_inert_unless_a_context_is_carried_in() {
    use census_runtime::{SpanContext, SpanId};
    let (pipeline, memory) = install_memory_sampled(Sampler::never());
    let carried = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        true,
    );
    // Once through a function's span (the macros' path), once through the builder's.
    dropped_root(carried);
    census_runtime::span("dropped root").in_scope(|| dropped_root_body(carried));
    sampled_root();
    flush(&pipeline);
    let spans = memory.spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    for span in &spans {
        assert_eq!(span.name(), "sampled_child");
        assert_eq!(span.parent_id(), Some(carried.span_id()));
        assert_eq!(span.trace_id(), carried.trace_id());
    }
}

#[inproc]
fn dropped_root(carried: census_runtime::SpanContext) {
    dropped_root_body(carried);
}

fn dropped_root_body(carried: census_runtime::SpanContext) {
    use census_runtime::context::Carried;
    sampled_child();
    // A context carried in (a task's parent, say) takes over while it is current ...
    Carried::from_context(carried).run(sampled_child);
    // ... and once it is gone, spans are inert again.
    sampled_child();
    assert!(Carried::current().context().is_none());
}
