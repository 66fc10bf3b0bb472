//! The console's summary table, end to end: instrumented calls through the pipeline into a
//! console exporter whose table is printed at each interval's end (and at flush), read back
//! from the writer it prints to.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use census_runtime::Sampler;
use census_runtime::export::{ConsoleExporter, MemoryExporter};
use census_runtime::{dependency, inproc};

/// What the console printed.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[derive(Debug)]
struct NotFound(u32);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "order {} not found", self.0)
    }
}

/// Fails for every fourth id.
#[dependency(kind = "SQL", target = "x")]
fn load(id: u32) -> Result<u32, NotFound> {
    if id.is_multiple_of(4) {
        return Err(NotFound(id));
    }
    Ok(id * 10)
}

#[inproc]
fn price(amount: u32) -> u32 {
    amount + 1
}

#[inproc]
fn handle(id: u32) -> Result<u32, NotFound> {
    let amount = load(id)?;
    Ok(price(amount))
}

/// One incoming request per id: `handle` inside it, `load` and `price` under `handle`.
fn serve(ids: std::ops::Range<u32>) {
    for id in ids {
        let _ = census_runtime::request("GET /orders/{id}").try_in_scope(|| handle(id));
    }
}

/// One printed table: its header line and, by (type, target, name), the row's cells after the
/// name (calls, failed, failed %, p50, p95, max).
#[derive(Debug)]
struct Table {
    head: String,
    rows: BTreeMap<(String, String, String), Vec<String>>,
    note: Option<String>,
}

/// Every table in `text`, in order.
fn tables(text: &str) -> Vec<Table> {
    let lines: Vec<&str> = text.lines().collect();
    let mut tables = Vec::new();
    for (at, head) in lines.iter().enumerate() {
        if !head.starts_with("== summary of the last ") {
            continue;
        }
        let operations: usize = head
            .rsplit(", ")
            .next()
            .and_then(|count| count.split(' ').next())
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no operation count in {head:?}"));
        assert!(
            lines[at + 1].starts_with("TYPE "),
            "column names under {head:?}"
        );
        let rows = lines[at + 2..at + 2 + operations]
            .iter()
            .map(|line| {
                let cells: Vec<String> = line
                    .split("  ")
                    .map(str::trim)
                    .filter(|cell| !cell.is_empty())
                    .map(str::to_owned)
                    .collect();
                assert_eq!(cells.len(), 9, "{line:?}");
                (
                    (cells[0].clone(), cells[1].clone(), cells[2].clone()),
                    cells[3..].to_vec(),
                )
            })
            .collect();
        let note = lines
            .get(at + 2 + operations)
            .filter(|line| line.starts_with("~ "))
            .map(|line| (*line).to_owned());
        tables.push(Table {
            head: (*head).to_owned(),
            rows,
            note,
        });
    }
    tables
}

fn key(kind: &str, target: &str, name: &str) -> (String, String, String) {
    (kind.to_owned(), target.to_owned(), name.to_owned())
}

fn count(cell: &str) -> u64 {
    cell.trim_start_matches('~')
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {cell:?}"))
}

/// Calls and failures by operation, added up over `tables`.
fn totals(tables: &[Table]) -> BTreeMap<(String, String, String), (u64, u64)> {
    let mut totals = BTreeMap::new();
    for table in tables {
        for (key, cells) in &table.rows {
            let total: &mut (u64, u64) = totals.entry(key.clone()).or_default();
            total.0 += count(&cells[0]);
            total.1 += count(&cells[1]);
        }
    }
    totals
}

#[test]
fn console_summary_prints_each_interval_s_calls_and_failures_per_operation() {
    let out = Captured::default();
    let pipeline = census_runtime::pipeline()
        .sampler(Sampler::always())
        .export_interval(Duration::from_millis(20))
        .exporter(ConsoleExporter::to_writer(out.clone()).summary(Duration::from_millis(200)))
        .install()
        .unwrap();
    // Ids 0 to 39: every fourth (0, 4, ..., 36), ten, fails in `load` and so in `handle` and
    // the request.
    serve(0..40);

    // No flush: the tables come from the worker's ticks. The spans of one round may straddle
    // two intervals, so the rows are added up over the tables until every call is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = [
        (key("Request", "-", "GET /orders/{id}"), (40, 10)),
        (key("INPROC", "-", "handle"), (40, 10)),
        (key("INPROC", "-", "price"), (30, 0)),
        (key("SQL", "x", "load"), (40, 10)),
    ];
    let expected: BTreeMap<_, _> = expected.into_iter().collect();
    loop {
        let printed = tables(&out.text());
        if totals(&printed) == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tables never added up to every call: {:#?}\n{}",
            totals(&printed),
            out.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let printed = tables(&out.text());
    for table in &printed {
        assert!(
            table.note.is_none(),
            "nothing is estimated at 100 %: {table:?}"
        );
        assert!(!table.head.contains('~'), "{table:?}");
    }
    // The trees are printed too.
    let text = out.text();
    assert!(
        text.lines()
            .any(|line| line.starts_with("GET /orders/{id}  Request")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("    load  SQL -> x")),
        "{text}"
    );
    drop(pipeline);
    assert_eq!(
        totals(&tables(&out.text())),
        expected,
        "shutdown adds nothing"
    );
}

#[test]
fn console_summary_at_flush_has_the_interval_so_far_in_one_table() {
    let out = Captured::default();
    let pipeline = census_runtime::pipeline()
        .sampler(Sampler::always())
        .exporter(ConsoleExporter::to_writer(out.clone()).summary(Duration::from_secs(3600)))
        .install()
        .unwrap();
    serve(0..8);
    pipeline.flush(Duration::from_secs(10)).unwrap();
    let printed = tables(&out.text());
    assert_eq!(printed.len(), 1, "{}", out.text());
    let table = &printed[0];
    assert!(
        table.head.ends_with(": 30 calls, 4 operations"),
        "{table:?}"
    );
    let load = &table.rows[&key("SQL", "x", "load")];
    assert_eq!(&load[..3], ["8", "2", "25.0%"], "{table:?}");
    let price = &table.rows[&key("INPROC", "-", "price")];
    assert_eq!(&price[..3], ["6", "0", "0.0%"], "{table:?}");
    let request = &table.rows[&key("Request", "-", "GET /orders/{id}")];
    assert_eq!(&request[..3], ["8", "2", "25.0%"], "{table:?}");
}

#[test]
fn console_summary_under_sampling_counts_each_span_kept_as_100_over_its_rate() {
    let out = Captured::default();
    let memory = MemoryExporter::new();
    let pipeline = census_runtime::pipeline()
        .sampler(Sampler::probability(0.25))
        .exporter(ConsoleExporter::to_writer(out.clone()).summary(Duration::from_secs(3600)))
        .exporter(memory.clone())
        .install()
        .unwrap();
    serve(0..400);
    pipeline.flush(Duration::from_secs(10)).unwrap();

    // The spans kept, as the memory exporter beside the console received them.
    let spans = memory.spans();
    assert!(spans.iter().all(|span| span.sample_rate() == 25.0));
    let kept = |name: &str| {
        let of: Vec<_> = spans.iter().filter(|span| span.name() == name).collect();
        let failed = of.iter().filter(|span| !span.success()).count() as u64;
        (of.len() as u64, failed)
    };
    let (loads, failed_loads) = kept("load");
    assert!(loads > 0 && loads < 400, "a quarter is kept: {loads}");

    let printed = tables(&out.text());
    assert_eq!(printed.len(), 1, "{}", out.text());
    let table = &printed[0];
    assert!(table.head.contains(": ~"), "{table:?}");
    assert!(
        table
            .note
            .as_deref()
            .is_some_and(|note| note.contains("100/p")),
        "{table:?}"
    );
    for (kind, target, name) in [
        ("SQL", "x", "load"),
        ("INPROC", "-", "price"),
        ("Request", "-", "GET /orders/{id}"),
    ] {
        let (calls, failures) = kept(name);
        let row = &table.rows[&key(kind, target, name)];
        assert_eq!(
            [row[0].as_str(), row[1].as_str()],
            [format!("~{}", calls * 4), format!("~{}", failures * 4)],
            "{name}: {table:?}"
        );
    }
    assert_eq!(failed_loads, kept("handle").1);
}
