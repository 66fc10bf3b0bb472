//! Turns one run of the benchmarks into the tables of `BENCHMARKS.md`: medians from criterion's
//! `estimates.json`, the ratios against each peer computed from those same medians, the memory
//! and compile-cost figures, the machine, and each target met or not.
//!
//! Usage: `report TARGET_DIR [--write BENCHMARKS.md]`. Prints the markdown; with `--write`, also
//! replaces what lies between the `<!-- figures:begin -->` and `<!-- figures:end -->` markers of
//! the file (appending them when missing).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

const BEGIN: &str = "<!-- figures:begin -->";
const END: &str = "<!-- figures:end -->";

const VARIANTS: [(&str, &str); 3] = [
    ("sync", "sync"),
    ("async", "async"),
    ("nested", "nested (11 spans)"),
];

const CASES: [&str; 17] = [
    "plain",
    "floor/two-clock-readings",
    "census/no-pipeline",
    "census/sampled-out",
    "census/sampled-out+metrics",
    "census/recorded",
    "census/recorded+metrics",
    "census/recorded-10%",
    "census/rate-limited",
    "census/recorded+azure",
    "tracing/no-subscriber",
    "tracing/registry",
    "tracing-otel/sampled-out",
    "tracing-otel/recorded+appinsights",
    "fastrace/no-root",
    "fastrace/root",
    "fastrace/root+reporter",
];

/// Each census case beside the peers doing the same work.
const PAIRS: [(&str, &str); 7] = [
    ("census/no-pipeline", "tracing/no-subscriber"),
    ("census/no-pipeline", "fastrace/no-root"),
    ("census/sampled-out", "tracing-otel/sampled-out"),
    ("census/recorded", "tracing/registry"),
    ("census/recorded", "fastrace/root"),
    ("census/recorded+azure", "tracing-otel/recorded+appinsights"),
    ("census/recorded+azure", "fastrace/root+reporter"),
];

/// The sampling rates of `benches/sampling.rs`, from the largest.
const ID_RATES: [&str; 9] = [
    "0.3", "0.2", "0.1", "0.05", "0.02", "1e-2", "1e-4", "1e-6", "1e-7",
];

/// Medians in nanoseconds, by group then function id.
type Medians = BTreeMap<String, BTreeMap<String, f64>>;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next().map(PathBuf::from) else {
        eprintln!("usage: report TARGET_DIR [--write BENCHMARKS.md]");
        std::process::exit(2);
    };
    let write = match (args.next().as_deref(), args.next()) {
        (Some("--write"), Some(path)) => Some(PathBuf::from(path)),
        (None, _) => None,
        _ => {
            eprintln!("usage: report TARGET_DIR [--write BENCHMARKS.md]");
            std::process::exit(2);
        }
    };
    let medians = read_criterion(&target.join("criterion"));
    let memory = read_json(&target.join("memory.json"));
    let compile = read_json(&target.join("compile-cost/result.json"));
    let markdown = render(&medians, memory.as_ref(), compile.as_ref());
    print!("{markdown}");
    if let Some(path) = write {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if let (Some(b), Some(e)) = (old.find(BEGIN), old.find(END))
            && b < e
        {
            eprint!("{}", regressions(&old[b..e], &markdown));
        }
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{BEGIN}\n{markdown}{}", &old[..b], &old[e..])
            }
            _ => format!("{old}\n{BEGIN}\n{markdown}{END}\n"),
        };
        if let Err(error) = std::fs::write(&path, new) {
            eprintln!("could not write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Every `new/benchmark.json` + `new/estimates.json` pair under criterion's directory.
fn read_criterion(dir: &Path) -> Medians {
    let mut medians = Medians::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let (Some(bench), Some(estimates)) = (
                    read_json(&path.join("benchmark.json")),
                    read_json(&path.join("estimates.json")),
                ) else {
                    continue;
                };
                let (Some(group), Some(function), Some(median)) = (
                    bench["group_id"].as_str(),
                    bench["function_id"].as_str(),
                    estimates["median"]["point_estimate"].as_f64(),
                ) else {
                    continue;
                };
                medians
                    .entry(group.to_owned())
                    .or_default()
                    .insert(function.to_owned(), median);
            } else {
                stack.push(path);
            }
        }
    }
    medians
}

/// census's figures of `new` that are more than 5 % worse than the same ones in `old` (the
/// figures this run replaces), one line each: where a change made a case slower, or where the
/// machine was busy (then run again on an idle one).
fn regressions(old: &str, new: &str) -> String {
    let (before, after) = (census_figures(old), census_figures(new));
    let mut out = String::new();
    let mut better = 0;
    for (key, &now) in &after {
        let Some(&was) = before.get(key) else {
            continue;
        };
        let change = now / was - 1.0;
        if change > 0.05 {
            let (table, row, column) = key;
            let _ = writeln!(
                out,
                "  {table} / {row} / {column}: {was} -> {now} (+{:.0} %)",
                change * 100.0
            );
        } else if change < -0.05 {
            better += 1;
        }
    }
    let mut report = format!(
        "\ncensus figures against those this run replaces: {} more than 5 % worse, {better} \
         more than 5 % better\n",
        out.lines().count()
    );
    report.push_str(&out);
    report
}

/// The figures of census's rows in the figures' markdown, by table, row and column: times in
/// nanoseconds, and the compile cost's seconds and bytes; the "over plain" columns are left out
/// (differences of two medians, they swing more than either).
fn census_figures(markdown: &str) -> BTreeMap<(String, String, String), f64> {
    let mut figures = BTreeMap::new();
    let mut table = String::new();
    let mut header: Vec<String> = Vec::new();
    for line in markdown.lines() {
        if let Some(title) = line.strip_prefix("### ") {
            table = title.trim().to_owned();
        }
        if !line.starts_with('|') {
            header.clear();
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if header.is_empty() {
            header = cells.iter().map(|cell| (*cell).to_owned()).collect();
            continue;
        }
        let row = cells[0];
        if !row.contains("census") {
            continue;
        }
        for (cell, column) in cells.iter().zip(&header).skip(1) {
            if column.contains("over plain") {
                continue;
            }
            let number = |text: &str| text.replace(',', "").parse::<f64>().ok();
            let value = if let Some(n) = cell.strip_suffix(" ns") {
                number(n)
            } else if let Some(n) = cell.strip_suffix(" µs") {
                number(n).map(|v| v * 1000.0)
            } else if column.ends_with("(s)") || column.ends_with("(bytes)") {
                number(cell)
            } else {
                None
            };
            if let Some(value) = value.filter(|v| *v > 0.0) {
                figures.insert((table.clone(), row.to_owned(), column.clone()), value);
            }
        }
    }
    figures
}

fn get(medians: &Medians, group: &str, case: &str) -> Option<f64> {
    medians.get(group)?.get(case).copied()
}

fn ns(value: Option<f64>) -> String {
    match value {
        None => "n/a".into(),
        Some(v) if v >= 10_000.0 => format!("{:.1} µs", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{v:.0} ns"),
        Some(v) => format!("{v:.2} ns"),
    }
}

fn ratio(value: Option<f64>) -> String {
    match value {
        None => "n/a".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}×"),
        Some(v) => format!("{v:.2}×"),
    }
}

fn rate(per_second: Option<f64>) -> String {
    match per_second {
        None => "n/a".into(),
        Some(v) => {
            let digits = format!("{:.0}", v);
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());
    let kernel = command_output("uname", &["-sr"]).unwrap_or_default();
    format!("{cores} cores, {cpu}; {kernel}; {rustc}")
}

struct Target {
    what: &'static str,
    figure: String,
    met: Option<bool>,
}

fn render(medians: &Medians, memory: Option<&Value>, compile: Option<&Value>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}.\n", machine());
    let _ = writeln!(
        out,
        "Every figure below comes from the same run of `scripts/bench`; a ratio is computed from \
         medians of that run only.\n"
    );

    // Per call.
    let _ = writeln!(out, "### Cost per call (criterion medians)\n");
    let _ = writeln!(
        out,
        "\"over plain\" is the median minus the plain function's median in the same group.\n"
    );
    let mut header = String::from("| case |");
    let mut rule = String::from("| --- |");
    for (_, title) in VARIANTS {
        let _ = write!(header, " {title} | over plain |");
        rule.push_str(" ---: | ---: |");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for case in CASES {
        let mut row = format!("| `{case}` |");
        for (group, _) in VARIANTS {
            let value = get(medians, group, case);
            let plain = get(medians, group, "plain");
            let over = match (value, plain) {
                (Some(v), Some(p)) if case != "plain" => ns(Some(v - p)),
                _ => "".into(),
            };
            let _ = write!(row, " {} | {over} |", ns(value));
        }
        let _ = writeln!(out, "{row}");
    }

    let _ = writeln!(
        out,
        "\n### Ratios against each peer (peer's median ÷ census's median, same run)\n"
    );
    let mut header = String::from("| census case | peer |");
    let mut rule = String::from("| --- | --- |");
    for (_, title) in VARIANTS {
        let _ = write!(header, " {title} |");
        rule.push_str(" ---: |");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for (census, peer) in PAIRS {
        let mut row = format!("| `{census}` | `{peer}` |");
        for (group, _) in VARIANTS {
            let r = match (get(medians, group, census), get(medians, group, peer)) {
                (Some(c), Some(p)) if c > 0.0 => Some(p / c),
                _ => None,
            };
            let _ = write!(row, " {} |", ratio(r));
        }
        let _ = writeln!(out, "{row}");
    }

    // Export.
    let per_second = |group: &str, case: &str, elements: f64| {
        get(medians, group, case).map(|ns| elements / (ns / 1e9))
    };
    let serialise = per_second("serialise", "census", 1000.0);
    let serialise_gzip = per_second("serialise", "census+gzip", 1000.0);
    let e2e_census = per_second("end-to-end", "census", 20_000.0);
    let e2e_peer = per_second("end-to-end", "tracing-otel-appinsights", 20_000.0);
    let e2e_ratio = match (e2e_census, e2e_peer) {
        (Some(c), Some(p)) if p > 0.0 => Some(c / p),
        _ => None,
    };
    let _ = writeln!(out, "\n### Export throughput (envelopes per second)\n");
    let _ = writeln!(out, "| what | envelopes/s |\n| --- | ---: |");
    let _ = writeln!(
        out,
        "| census: serialise a batch of 1,000 spans, one core | {} |",
        rate(serialise)
    );
    let _ = writeln!(
        out,
        "| census: serialise and gzip, one core | {} |",
        rate(serialise_gzip)
    );
    let _ = writeln!(
        out,
        "| census: 20,000 calls to envelopes accepted by the loopback sink | {} |",
        rate(e2e_census)
    );
    let _ = writeln!(
        out,
        "| tracing + tracing-opentelemetry + opentelemetry-application-insights: the same | {} |",
        rate(e2e_peer)
    );
    let _ = writeln!(out, "| census ÷ peer, end to end | {} |", ratio(e2e_ratio));

    // The trace id of a kept root.
    let _ = writeln!(
        out,
        "\n### The trace id of a kept root (criterion medians)\n\nOne whose score is below the rate; \"drawn\" and \"constructed\" are each way alone, around the rate census switches at.\n"
    );
    let _ = writeln!(
        out,
        "| rate | as a kept root gets it | drawn | constructed |\n| --- | ---: | ---: | ---: |"
    );
    for rate in ID_RATES {
        let cell = |group: &str| match get(medians, group, rate) {
            Some(v) => ns(Some(v)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "| {rate} | {} | {} | {} |",
            cell("kept-root-id"),
            cell("drawn"),
            cell("constructed")
        );
    }

    // Log records and tracing spans.
    let log_format = get(medians, "logs", "format-string");
    let log_in_place = get(medians, "logs", "format-in-place");
    let log_census = get(medians, "logs", "census");
    let log_request = get(medians, "logs", "census-in-request");
    let log_otel = get(medians, "logs", "otel+appinsights");
    let log_otel_tracing = get(medians, "logs", "otel-tracing+appinsights");
    let event_census = get(medians, "tracing-event", "census-layer");
    let event_otel = get(medians, "tracing-event", "otel+appinsights");
    let layer_registry = get(medians, "tracing-span", "registry");
    let layer_census = get(medians, "tracing-span", "census-layer");
    let census_span = get(medians, "tracing-span", "census-span");
    let layer_otel = get(medians, "tracing-span", "otel+appinsights");
    let _ = writeln!(
        out,
        "\n### Log records and `tracing` spans (criterion medians)\n\nA `log::info!(\"order {{}} placed\", n)` inside a recorded span, the same as a `tracing::info!` event, and a `#[tracing::instrument]` function, recorded.\n"
    );
    let _ = writeln!(out, "| case | per call |\n| --- | ---: |");
    for (what, value) in [
        ("formatting the message into a `String`, alone", log_format),
        (
            "formatting it in place, into a buffer on the stack (no allocation), alone",
            log_in_place,
        ),
        ("census: `log::info!` through `LogBridge`", log_census),
        (
            "census: the same inside an incoming request (its operation name on the record)",
            log_request,
        ),
        (
            "`opentelemetry-appender-log` + `opentelemetry-application-insights`",
            log_otel,
        ),
        (
            "`tracing-log` + `opentelemetry-appender-tracing` + `opentelemetry-application-insights`",
            log_otel_tracing,
        ),
        (
            "census: `tracing::info!` through `CensusLayer`",
            event_census,
        ),
        (
            "`tracing::info!` through `opentelemetry-appender-tracing` + `opentelemetry-application-insights`",
            event_otel,
        ),
        (
            "`#[tracing::instrument]` with `tracing-subscriber`'s `Registry` alone, no layer",
            layer_registry,
        ),
        (
            "census: the same span through `census_runtime::span(..).property(..)`, no `tracing`",
            census_span,
        ),
        (
            "census: `#[tracing::instrument]` through `CensusLayer`",
            layer_census,
        ),
        (
            "`tracing-opentelemetry` + `opentelemetry-application-insights`",
            layer_otel,
        ),
    ] {
        let _ = writeln!(out, "| {what} | {} |", ns(value));
    }

    // Custom metrics.
    let metric_noop = get(medians, "metrics", "facade-noop");
    let metric_macro = get(medians, "metrics", "census-macro");
    let metric_handle = get(medians, "metrics", "census-handle");
    let metric_otel = get(medians, "metrics", "otel+appinsights");
    let _ = writeln!(
        out,
        "\n### A histogram record (criterion medians)\n\nOne value with one label, `route = \"/orders\"`.\n"
    );
    let _ = writeln!(
        out,
        "| case | per call | OpenTelemetry ÷ case |\n| --- | ---: | ---: |"
    );
    for (what, value) in [
        (
            "`metrics::histogram!` with `metrics`' own recorder that does nothing",
            metric_noop,
        ),
        (
            "census: `metrics::histogram!(...).record(v)` through `CensusRecorder`",
            metric_macro,
        ),
        (
            "census: `.record(v)` on a kept `metrics::Histogram`",
            metric_handle,
        ),
        (
            "`opentelemetry` `f64_histogram` + `opentelemetry-application-insights`",
            metric_otel,
        ),
    ] {
        let versus = metric_otel.zip(value).map(|(o, v)| o / v);
        let _ = writeln!(out, "| {what} | {} | {} |", ns(value), ratio(versus));
    }

    // Memory.
    let _ = writeln!(out, "\n### Memory while the endpoint is stalled\n");
    match memory {
        Some(m) => {
            let _ = writeln!(
                out,
                "{} spans made in {} s against an endpoint that never answers (storage off): peak RSS {} KiB before, {} KiB at half of the run, {} KiB at the end: **{}**.",
                m["spans"],
                m["seconds"],
                m["baseline_kib"],
                m["half_kib"],
                m["peak_kib"],
                if m["bounded"].as_bool() == Some(true) {
                    "bounded"
                } else {
                    "growing"
                }
            );
        }
        None => {
            let _ = writeln!(out, "Not measured in this run.");
        }
    }

    // Compile cost.
    let _ = writeln!(out, "\n### Compile cost\n");
    let crate_figure = |name: &str, field: &str| compile.and_then(|c| c[name][field].as_f64());
    match compile {
        Some(c) => {
            let _ = writeln!(
                out,
                "The same crate of {} functions (half return a `Result`), each called once from `main`, no pipeline or subscriber installed.\n",
                c["functions"]
            );
            let _ = writeln!(
                out,
                "| crate | clean debug build (s) | rebuild of the crate alone (s) | release build (s) | release binary (bytes) | stripped (bytes) |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
            for (name, title) in [
                ("plain", "plain"),
                ("census", "`#[inproc]`"),
                ("tracing", "`#[tracing::instrument]`"),
            ] {
                let f = |field| {
                    crate_figure(name, field).map_or("n/a".into(), |v| {
                        if field.ends_with("_s") {
                            format!("{v:.1}")
                        } else {
                            rate(Some(v))
                        }
                    })
                };
                let _ = writeln!(
                    out,
                    "| {title} | {} | {} | {} | {} | {} |",
                    f("clean_debug_s"),
                    f("rebuild_debug_s"),
                    f("release_s"),
                    f("release_bytes"),
                    f("stripped_bytes")
                );
            }
        }
        None => {
            let _ = writeln!(out, "Not measured in this run.");
        }
    }

    // Targets.
    let over = |case: &str| match (get(medians, "sync", case), get(medians, "sync", "plain")) {
        (Some(v), Some(p)) => Some(v - p),
        _ => None,
    };
    let below = |value: Option<f64>, limit: f64| value.map(|v| v < limit);
    let mut targets = vec![
        Target {
            what: "No pipeline installed: under 1 ns more than a plain call",
            figure: format!("{} over plain", ns(over("census/no-pipeline"))),
            met: below(over("census/no-pipeline"), 1.0),
        },
        Target {
            what: "Sampled out: under 3 ns more than a plain call",
            figure: format!("{} over plain", ns(over("census/sampled-out"))),
            met: below(over("census/sampled-out"), 3.0),
        },
    ];
    let otel_dropped = over("tracing-otel/sampled-out");
    let sampled_ratio = match (otel_dropped, over("census/sampled-out")) {
        (Some(o), Some(c)) => Some(o / c.max(0.01)),
        _ => None,
    };
    targets.push(Target {
        what: "Sampled out: 300 times cheaper than `tracing-opentelemetry` dropping the span",
        figure: format!(
            "{} vs {} over plain: {}",
            ns(over("census/sampled-out")),
            ns(otel_dropped),
            ratio(sampled_ratio)
        ),
        met: sampled_ratio.map(|r| r >= 300.0),
    });
    let floor = over("floor/two-clock-readings");
    targets.push(Target {
        what: "Recorded span: under 20 ns on the calling thread",
        figure: format!(
            "{} over plain; two clock readings alone: {} over plain, leaving {} of census's own work",
            ns(over("census/recorded")),
            ns(floor),
            ns(over("census/recorded").zip(floor).map(|(c, f)| c - f))
        ),
        met: below(over("census/recorded"), 20.0),
    });
    targets.push(Target {
        what: "Standard metrics on, sampled out (the call is timed): at most the two clock readings + 5 ns",
        figure: format!(
            "{} over plain; two clock readings: {} over plain",
            ns(over("census/sampled-out+metrics")),
            ns(floor)
        ),
        met: over("census/sampled-out+metrics")
            .zip(floor)
            .map(|(c, f)| c <= f + 5.0),
    });
    let metrics_cost = over("census/recorded+metrics")
        .zip(over("census/recorded"))
        .map(|(m, r)| m - r);
    targets.push(Target {
        what: "Standard metrics on, recorded: at most 5 ns more than without",
        figure: format!(
            "{} vs {} over plain: {} more",
            ns(over("census/recorded+metrics")),
            ns(over("census/recorded")),
            ns(metrics_cost)
        ),
        met: metrics_cost.map(|d| d <= 5.0),
    });
    targets.push(Target {
        what: "Recorded span: ahead of fastrace (a root span per call, no reporter)",
        figure: format!(
            "{} vs {} over plain",
            ns(over("census/recorded")),
            ns(over("fastrace/root"))
        ),
        met: match (over("census/recorded"), over("fastrace/root")) {
            (Some(c), Some(f)) => Some(c < f),
            _ => None,
        },
    });
    targets.push(Target {
        what: "Recorded span with the Azure exporter running beside it: under 80 ns",
        figure: format!("{} over plain", ns(over("census/recorded+azure"))),
        met: below(over("census/recorded+azure"), 80.0),
    });
    let kept_root_id = get(medians, "kept-root-id", "1e-6");
    targets.push(Target {
        what: "Sampling at 1e-6: a kept root's trace id (scoring below the rate) in about a microsecond at most",
        figure: ns(kept_root_id),
        met: below(kept_root_id, 1000.0),
    });
    let log_vs_format = log_census.zip(log_format).map(|(c, f)| c / f);
    targets.push(Target {
        what: "A correlated `log::info!` in a recorded span: at most 2 times formatting its message into a `String`",
        figure: format!(
            "{} vs {}: {}",
            ns(log_census),
            ns(log_format),
            ratio(log_vs_format)
        ),
        met: log_vs_format.map(|r| r <= 2.0),
    });
    let log_vs_otel = log_otel.zip(log_census).map(|(o, c)| o / c);
    targets.push(Target {
        what: "A correlated `log::info!`: at least 10 times cheaper than `opentelemetry-appender-log` + `opentelemetry-application-insights`",
        figure: ratio(log_vs_otel),
        met: log_vs_otel.map(|r| r >= 10.0),
    });
    let log_vs_otel_tracing = log_otel_tracing.zip(log_census).map(|(o, c)| o / c);
    targets.push(Target {
        what: "The same, against the `tracing` way (`tracing-log` + `opentelemetry-appender-tracing` + `opentelemetry-application-insights`)",
        figure: ratio(log_vs_otel_tracing),
        met: log_vs_otel_tracing.map(|r| r >= 10.0),
    });
    let layer_vs_otel = layer_otel.zip(layer_census).map(|(o, c)| o / c);
    targets.push(Target {
        what: "A `#[tracing::instrument]` span through census's layer: at least 5 times cheaper than through `tracing-opentelemetry` + `opentelemetry-application-insights`",
        figure: ratio(layer_vs_otel),
        met: layer_vs_otel.map(|r| r >= 5.0),
    });
    let metric_vs_otel = metric_otel.zip(metric_macro).map(|(o, c)| o / c);
    targets.push(Target {
        what: "A `metrics::histogram!` record: at least 5 times cheaper than the same through `opentelemetry` metrics + `opentelemetry-application-insights`",
        figure: format!(
            "{}; on a kept handle {}",
            ratio(metric_vs_otel),
            ratio(metric_otel.zip(metric_handle).map(|(o, c)| o / c))
        ),
        met: metric_vs_otel.map(|r| r >= 5.0),
    });
    targets.push(Target {
        what: "Export: over 1,000,000 envelopes per second serialised on one core",
        figure: format!("{}/s", rate(serialise)),
        met: serialise.map(|s| s > 1_000_000.0),
    });
    targets.push(Target {
        what: "Export: at least 5 times `opentelemetry-application-insights` end to end",
        figure: ratio(e2e_ratio),
        met: e2e_ratio.map(|r| r >= 5.0),
    });
    let compare = |field: &str| match (
        crate_figure("census", field),
        crate_figure("tracing", field),
    ) {
        (Some(c), Some(t)) => (format!("{c} vs {t}"), Some(c <= t)),
        _ => ("n/a".into(), None),
    };
    let (figure, met) = compare("clean_debug_s");
    targets.push(Target {
        what: "Compile: the 500-function crate builds no slower than under `tracing::instrument` (clean debug build, s)",
        figure,
        met,
    });
    let (figure, met) = compare("rebuild_debug_s");
    targets.push(Target {
        what: "Compile: ... rebuild of the crate alone (s)",
        figure,
        met,
    });
    let (figure, met) = compare("stripped_bytes");
    targets.push(Target {
        what: "Compile: its binary is no larger (stripped release, bytes)",
        figure,
        met,
    });
    targets.push(Target {
        what: "Memory: bounded while the endpoint is stalled",
        figure: memory.map_or("n/a".into(), |m| format!("peak {} KiB", m["peak_kib"])),
        met: memory.and_then(|m| m["bounded"].as_bool()),
    });

    let _ = writeln!(out, "\n### Targets (sync figures)\n");
    let _ = writeln!(out, "| target | figure | met |\n| --- | --- | --- |");
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(out, "| {} | {} | {met} |", t.what, t.figure);
    }
    out
}
