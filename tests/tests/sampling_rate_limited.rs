//! The rate-limited sampler end to end: the percentage adapts so that about its budget of
//! traces per second is kept, under a steady and under a bursty load, counted on the kept
//! spans' own start times; every item carries the percentage its trace was kept at, one of the
//! steps `100 / n`, and the items' item counts add up to the roots made; a service sampling at
//! the percentage census reports keeps the same traces and drops the same; a span started after
//! the percentage changed records its root's; traces that callers recorded (`01`) are kept
//! whatever the percentage, and count against the budget; a budget that is not above zero is
//! refused.
//!
//! The load is paced by the clock and catches up when the machine holds it back, so that the
//! roots made by any time are the load's integral to it; what is measured is the kept spans'
//! start times, never how fast anything ran.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use census_runtime::export::{MemoryExporter, SpanRecord};
use census_runtime::pipeline::{Pipeline, sampling_percentage};
use census_runtime::{Sampler, SpanContext, SpanId, TraceId, current_span, inproc};
use census_tests::azure::{scratch_dir, settings};
use census_tests::flush;
use census_tests::ingestion::IngestionServer;

/// Traces per second.
const BUDGET: f64 = 500.0;

/// A root, its child, and the context it passes on when `probe` asks (drawing the id of a
/// dropped trace).
#[inproc]
fn limited_root(probe: bool) -> Option<SpanContext> {
    limited_child();
    probe.then(|| current_span().context()).flatten()
}

#[inproc]
fn limited_child() {}

fn install(memory: &MemoryExporter, server: Option<&IngestionServer>) -> Pipeline {
    let mut builder = census_runtime::pipeline()
        .sampler(Sampler::rate_limited(BUDGET))
        .cloud_role("census-tests")
        .exporter(memory.clone());
    if let Some(server) = server {
        builder = builder.exporter(
            settings(server, &scratch_dir("rate-limited"))
                .build()
                .expect("the Azure exporter builds"),
        );
    }
    builder.install().expect("the pipeline installs")
}

/// When a load ran: its start, and the roots made by the end of the warm-up and by the end.
struct Run {
    start: SystemTime,
    warm: (SystemTime, u64),
    end: (SystemTime, u64),
}

impl Run {
    fn seconds(&self) -> f64 {
        self.end
            .0
            .duration_since(self.warm.0)
            .unwrap()
            .as_secs_f64()
    }

    fn made(&self) -> u64 {
        self.end.1 - self.warm.1
    }

    fn measured(&self, span: &SpanRecord) -> bool {
        (self.warm.0..self.end.0).contains(&span.start_time())
    }

    /// Seconds from the start of the run to `span`'s.
    fn at(&self, span: &SpanRecord) -> f64 {
        span.start_time()
            .duration_since(self.start)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// Makes `load(t)` roots per second (`t` in seconds from the start) for `seconds`, calling
/// `root` with each root's number; measured from `warm_up` on.
fn drive(seconds: f64, warm_up: f64, load: impl Fn(f64) -> f64, mut root: impl FnMut(u64)) -> Run {
    let started = Instant::now();
    let start = SystemTime::now();
    let mut warm = None;
    let mut made = 0u64;
    let mut due = 0.0;
    let mut last = 0.0;
    loop {
        let t = started.elapsed().as_secs_f64();
        if t >= seconds {
            break;
        }
        due += load(last) * (t - last);
        last = t;
        if warm.is_none() && t >= warm_up {
            warm = Some((SystemTime::now(), made));
        }
        while (made as f64) < due {
            root(made);
            made += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Run {
        start,
        warm: warm.expect("the run lasts past its warm-up"),
        end: (SystemTime::now(), made),
    }
}

/// The whole `n` a percentage is `100 / n` of, when it is one of those steps.
fn step_of(percent: f64) -> Option<u32> {
    let n = (100.0 / percent).round();
    (n >= 1.0 && (100.0 / n) as f32 == percent as f32).then_some(n as u32)
}

/// Every item of every kept trace says the percentage its root was kept at, a step of the
/// ladder, and a service sampling by score at that percentage keeps the trace.
fn check_items(memory: &MemoryExporter) {
    let roots = memory.named("limited_root");
    let rates: HashMap<TraceId, f64> = roots
        .iter()
        .map(|root| (root.trace_id(), root.sample_rate()))
        .collect();
    for root in &roots {
        let percent = root.sample_rate();
        assert!(step_of(percent).is_some(), "{percent} is not 100 / n");
        assert!(
            Sampler::probability(percent / 100.0).should_sample(root.trace_id()),
            "{} kept at {percent} % scores {}: a service sampling at {percent} % drops it",
            root.trace_id(),
            Sampler::score(root.trace_id())
        );
    }
    let children = memory.named("limited_child");
    assert_eq!(children.len(), roots.len(), "children follow their roots");
    for child in &children {
        assert_eq!(
            Some(&child.sample_rate()),
            rates.get(&child.trace_id()),
            "a child records its root's percentage"
        );
    }
}

/// Roots kept per second over the measured seconds, and checks that their item counts add up
/// to the roots made then (`share` of what the run made are `limited_root`s).
fn kept_per_second(memory: &MemoryExporter, run: &Run, share: f64) -> f64 {
    let measured: Vec<SpanRecord> = memory
        .named("limited_root")
        .into_iter()
        .filter(|root| run.measured(root))
        .collect();
    let estimated: f64 = measured.iter().map(|root| 100.0 / root.sample_rate()).sum();
    let made = run.made() as f64 * share;
    eprintln!(
        "{} roots kept in {:.2} s, standing for {estimated:.0} of the {made:.0} made",
        measured.len(),
        run.seconds()
    );
    assert!(
        (estimated / made - 1.0).abs() <= 0.1,
        "the items stand for {estimated:.0} roots; {made} were made"
    );
    measured.len() as f64 / run.seconds()
}

fn assert_within_budget(kept: f64, what: &str) {
    assert!(
        (kept / BUDGET - 1.0).abs() <= 0.1,
        "{what}: {kept:.1} traces kept per second, the budget is {BUDGET}"
    );
}

#[test]
fn sampling_rate_limited_holds_a_steady_load_to_its_budget_and_services_agree() {
    let server = IngestionServer::start().unwrap();
    let memory = MemoryExporter::new();
    let pipeline = install(&memory, Some(&server));
    // Every 97th root asks for its context; a dropped one's id, with the percentage in force
    // before and after it, when that did not change.
    let mut dropped = Vec::new();
    let run = drive(
        12.0,
        4.0,
        |_| 10_000.0,
        |i| {
            if i % 97 != 0 {
                limited_root(false);
                return;
            }
            let before = sampling_percentage();
            let context = limited_root(true).expect("a root has a context");
            if !context.is_sampled() && before == sampling_percentage() {
                dropped.push((context.trace_id(), before.unwrap()));
            }
        },
    );
    flush(&pipeline);

    assert_within_budget(
        kept_per_second(&memory, &run, 1.0),
        "steady load of 10,000/s",
    );
    check_items(&memory);
    for root in memory
        .named("limited_root")
        .iter()
        .filter(|r| run.measured(r))
    {
        assert!(root.sample_rate() <= 20.0, "{} %", root.sample_rate());
    }
    // A service sampling by score at the percentage in force drops what census dropped.
    assert!(dropped.len() > 500, "{} dropped ids", dropped.len());
    for (trace_id, percent) in &dropped {
        assert!(
            !Sampler::probability(percent / 100.0).should_sample(*trace_id),
            "{trace_id} dropped at {percent} % scores {}",
            Sampler::score(*trace_id)
        );
    }

    // The same through the Azure exporter: the percentage as written on the wire.
    let items = server.items();
    assert_eq!(items.len(), memory.spans().len());
    for item in &items {
        let trace_id = TraceId::from_hex(item["tags"]["ai.operation.id"].as_str().unwrap());
        let percent = item["sampleRate"].as_f64().unwrap_or(100.0);
        assert!(step_of(percent).is_some(), "sampleRate {percent}");
        assert!(
            Sampler::probability(percent / 100.0).should_sample(trace_id.unwrap()),
            "{item}"
        );
    }
}

#[test]
fn sampling_rate_limited_holds_a_bursty_load_to_its_budget() {
    let memory = MemoryExporter::new();
    let pipeline = install(&memory, None);
    // 1.5 s at 20,000 roots a second, 1.5 s at 2,500, four times over after two times as
    // warm-up (the first burst is the first load the sampler sees: it is not made up for).
    let high = |t: f64| t % 3.0 < 1.5;
    let run = drive(
        18.0,
        6.0,
        |t| if high(t) { 20_000.0 } else { 2_500.0 },
        |_| {
            limited_root(false);
        },
    );
    flush(&pipeline);

    assert_within_budget(
        kept_per_second(&memory, &run, 1.0),
        "bursts of 20,000/s and 2,500/s",
    );
    check_items(&memory);
    // The percentage followed the load: the quiet phases kept their traces at a higher one.
    let (mut loud, mut quiet) = (Vec::new(), Vec::new());
    for root in memory
        .named("limited_root")
        .iter()
        .filter(|r| run.measured(r))
    {
        let phase = run.at(root) % 1.5;
        if (0.75..1.5).contains(&phase) {
            let percent = root.sample_rate();
            if high(run.at(root)) {
                loud.push(percent);
            } else {
                quiet.push(percent);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&quiet) > 3.0 * mean(&loud),
        "{:.2} % in the quiet phases, {:.2} % in the loud",
        mean(&quiet),
        mean(&loud)
    );
}

#[test]
fn sampling_rate_limited_keeps_every_trace_its_callers_recorded_and_counts_them() {
    let memory = MemoryExporter::new();
    let pipeline = install(&memory, None);
    // 10,000 roots a second; one in 50 a request whose caller recorded its trace (200 a
    // second), one in 50 one whose caller did not.
    let mut recorded = Vec::new();
    let mut not_recorded = Vec::new();
    let run = drive(
        12.0,
        4.0,
        |_| 10_000.0,
        |i| {
            let caller = |sampled| SpanContext::new(TraceId::random(), SpanId::random(), sampled);
            match i % 50 {
                0 => {
                    let caller = caller(true);
                    census_runtime::request("called")
                        .parent(caller)
                        .in_scope(|| {});
                    recorded.push(caller.trace_id());
                }
                25 => {
                    let caller = caller(false);
                    census_runtime::request("called")
                        .parent(caller)
                        .in_scope(|| {});
                    not_recorded.push(caller.trace_id());
                }
                _ => {
                    limited_root(false);
                }
            }
        },
    );
    flush(&pipeline);

    let requests = memory.named("called");
    let kept: std::collections::HashSet<TraceId> =
        requests.iter().map(SpanRecord::trace_id).collect();
    assert!(
        recorded.iter().all(|id| kept.contains(id)),
        "a recorded caller's trace was dropped"
    );
    assert_eq!(kept.len(), recorded.len(), "a caller's 00 was not followed");
    for request in &requests {
        assert!(
            step_of(request.sample_rate()).is_some(),
            "{}",
            request.sample_rate()
        );
    }
    // The callers' 200 traces a second take their share of the budget.
    let followed = requests.iter().filter(|r| run.measured(r)).count() as f64 / run.seconds();
    let sampled = kept_per_second(&memory, &run, 48.0 / 50.0);
    assert!(
        (180.0..=220.0).contains(&followed),
        "{followed:.1} followed per second"
    );
    assert_within_budget(
        sampled + followed,
        "10,000/s with 200/s recorded by their callers",
    );
    check_items(&memory);
}

#[test]
fn sampling_rate_limited_refuses_a_budget_that_is_not_above_zero() {
    for budget in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        let error = census_runtime::pipeline()
            .sampler(Sampler::rate_limited(budget))
            .exporter(MemoryExporter::new())
            .install()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("rate_limited must be a number of traces per second above zero, got {budget}")
        );
    }
    assert_eq!(sampling_percentage(), None, "nothing was installed");
}

#[test]
fn sampling_rate_limited_a_child_records_its_root_s_percentage_after_it_changed() {
    let memory = MemoryExporter::new();
    let pipeline = install(&memory, None);
    census_runtime::span("long root").in_scope(|| {
        // Kept at 100 %: the sampler has seen no load yet.
        let at_start = sampling_percentage();
        assert_eq!(at_start, Some(100.0));
        // A load on another thread until the sampler lowers the percentage.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(60);
                while sampling_percentage() == at_start && Instant::now() < deadline {
                    for _ in 0..1_000 {
                        limited_root(false);
                    }
                }
            });
        });
        assert!(
            sampling_percentage() < at_start,
            "the percentage never changed"
        );
        census_runtime::span("late child").in_scope(|| {});
        // Carried into another thread, where a child starts now.
        let carried = census_runtime::context::Carried::current();
        std::thread::spawn(move || {
            carried.run(|| census_runtime::span("carried child").in_scope(|| {}));
        })
        .join()
        .unwrap();
    });
    flush(&pipeline);
    let root = memory.one("long root");
    let child = memory.one("late child");
    assert_eq!(child.parent_id(), Some(root.span_id()));
    assert_eq!(root.sample_rate(), 100.0);
    assert_eq!(
        child.sample_rate(),
        100.0,
        "the child records its root's percentage"
    );
    let carried = memory.one("carried child");
    assert_eq!(carried.parent_id(), Some(root.span_id()));
    assert_eq!(
        carried.sample_rate(),
        100.0,
        "a child under a context carried into a thread records its root's percentage too"
    );
}
