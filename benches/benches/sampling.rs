//! What a kept root pays for its trace id: one whose Application Insights score is below the
//! sampling rate, so that every service scoring the trace by the same rule keeps it too.
//!
//! - `kept-root-id/{rate}`: the id as a kept root gets it at that rate (drawn until one scores
//!   below the rate where such ids are common, constructed where they are rare).
//! - `drawn/{rate}`, `constructed/{rate}`: each way alone, at the rates around the switch from
//!   one to the other, to show where it belongs.
//!
//! A dropped root pays nothing of this: its decision is one random draw and it has no id.

use std::hint::black_box;

use census_runtime::__private::{IdSearch, bench_kept_trace_id};
use criterion::{Criterion, criterion_group, criterion_main};

/// The rates a kept root's cost is reported at.
const KEPT_ROOT_RATES: [(&str, f64); 4] = [
    ("1e-2", 1e-2),
    ("1e-4", 1e-4),
    ("1e-6", 1e-6),
    ("1e-7", 1e-7),
];

/// The rates each way is measured at, around the switch.
const CROSSOVER_RATES: [(&str, f64); 6] = [
    ("0.3", 0.3),
    ("0.2", 0.2),
    ("0.1", 0.1),
    ("0.05", 0.05),
    ("0.02", 0.02),
    ("1e-2", 1e-2),
];

fn kept_root_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("kept-root-id");
    for (name, rate) in KEPT_ROOT_RATES {
        group.bench_function(name, |b| {
            b.iter(|| bench_kept_trace_id(black_box(rate), IdSearch::AsKeptRoots))
        });
    }
    group.finish();
}

fn crossover(c: &mut Criterion) {
    for (way, search) in [
        ("drawn", IdSearch::Drawn),
        ("constructed", IdSearch::Constructed),
    ] {
        let mut group = c.benchmark_group(way);
        for (name, rate) in CROSSOVER_RATES {
            group.bench_function(name, |b| {
                b.iter(|| bench_kept_trace_id(black_box(rate), search))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kept_root_id, crossover);
criterion_main!(benches);
