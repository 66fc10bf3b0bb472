//! The console's summary table: over each interval (a minute, usually), one row per request
//! name and per dependency (type, target, name) with its calls, failures, failure rate and the
//! median, 95th percentile and maximum of its durations.
//!
//! Only the spans the sampler kept reach an exporter, so under sampling the calls and failures
//! are estimates: each span kept at a sampling percentage `p` counts as `100 / p` calls (exact at
//! 100 %), and the table marks those figures with `~`. The durations of a row are kept in a
//! log-linear histogram of bounded size whose buckets carry the same weights, so that a
//! percentile is that of the calls made, whatever the percentage each span was kept at. The
//! histogram is this module's rather than a crate's because its counts are such weights (4/3 of
//! a call for a span kept at 75 %), which the integer counts of HdrHistogram and its kin cannot
//! hold.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::preview;
use crate::record::SpanRecord;
use crate::site::SpanKind;

/// How many rows a table has at most, by default.
pub(super) const MAX_ROWS: usize = 100;

/// The spans of the current interval, by operation.
pub(super) struct Summary {
    every: Duration,
    max_rows: usize,
    /// When the current interval started.
    started: Instant,
    rows: HashMap<String, Row>,
    /// The operations that came when `max_rows` rows were taken, together.
    other: Option<Row>,
    /// A reused buffer for a span's row key, so that finding a row allocates nothing.
    key: String,
}

/// What a row says about its operation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Request,
    Dependency,
    /// The operations over the row cap.
    Other,
}

/// One operation's figures over the interval.
struct Row {
    operation: Operation,
    kind: Box<str>,
    target: Option<Box<str>>,
    name: Box<str>,
    /// Estimated calls: each span weighs `100 / sampleRate`.
    calls: f64,
    failures: f64,
    /// Whether any span of it was kept at less than 100 %.
    estimated: bool,
    durations: Durations,
}

impl Row {
    fn new(operation: Operation, kind: &str, target: Option<&str>, name: &str) -> Row {
        Row {
            operation,
            kind: kind.into(),
            target: target.map(Into::into),
            name: name.into(),
            calls: 0.0,
            failures: 0.0,
            estimated: false,
            durations: Durations::default(),
        }
    }

    fn add(&mut self, span: &SpanRecord, duration: Duration) {
        let rate = span.sample_rate();
        let weight = weight(rate);
        self.estimated |= weight != 1.0;
        self.calls += weight;
        if !span.success() {
            self.failures += weight;
        }
        self.durations.record(duration, weight);
    }
}

/// How many calls a span kept at `rate` percent stands for: `100 / rate`, and 1 for a rate
/// outside (0, 100) (a span always stands for itself at least).
fn weight(rate: f64) -> f64 {
    if rate > 0.0 && rate < 100.0 {
        100.0 / rate
    } else {
        1.0
    }
}

impl Summary {
    pub(super) fn new(every: Duration, now: Instant) -> Summary {
        Summary {
            every,
            max_rows: MAX_ROWS,
            started: now,
            rows: HashMap::new(),
            other: None,
            key: String::new(),
        }
    }

    /// How long an interval lasts.
    pub(super) fn every(&self) -> Duration {
        self.every
    }

    pub(super) fn set_max_rows(&mut self, rows: usize) {
        self.max_rows = rows;
    }

    /// Counts a finished span in its operation's row.
    pub(super) fn add(&mut self, span: &SpanRecord) {
        self.count(span, span.duration());
    }

    /// Counts `span`, which lasted `duration`.
    fn count(&mut self, span: &SpanRecord, duration: Duration) {
        let operation = match span.span_kind() {
            SpanKind::Request => Operation::Request,
            SpanKind::Dependency => Operation::Dependency,
        };
        // A request's row is its name's; a dependency's, its type's, target's and name's.
        let (kind, target) = match operation {
            Operation::Request => ("Request", None),
            _ => (span.kind(), span.target()),
        };
        self.key.clear();
        // The unit separator keeps `a` + `b c` apart from `a b` + `c`.
        let _ = write!(
            self.key,
            "{}\u{1f}{kind}\u{1f}{}\u{1f}{}",
            operation as u8,
            target.unwrap_or("\u{1e}"),
            span.name()
        );
        if let Some(row) = self.rows.get_mut(self.key.as_str()) {
            row.add(span, duration);
        } else if self.rows.len() < self.max_rows {
            let mut row = Row::new(operation, kind, target, span.name());
            row.add(span, duration);
            self.rows.insert(self.key.clone(), row);
        } else {
            self.other
                .get_or_insert_with(|| Row::new(Operation::Other, "", None, ""))
                .add(span, duration);
        }
    }

    /// Whether the interval has ended by `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= self.every
    }

    /// Closes the interval at `now`: the table of its spans (`None` when none came), and a new
    /// interval begins.
    pub(super) fn close(&mut self, now: Instant) -> Option<String> {
        let lasted = now.saturating_duration_since(self.started);
        // On the interval's pace while the ticks keep up; from now after a long stall.
        self.started = if lasted >= self.every && lasted < self.every.saturating_mul(2) {
            self.started + self.every
        } else {
            now
        };
        let mut rows: Vec<Row> = self.rows.drain().map(|(_, row)| row).collect();
        rows.extend(self.other.take());
        if rows.is_empty() {
            return None;
        }
        rows.sort_by(|a, b| {
            (a.operation, &a.kind, &a.target, &a.name).cmp(&(
                b.operation,
                &b.kind,
                &b.target,
                &b.name,
            ))
        });
        Some(render(&rows, lasted, self.max_rows))
    }
}

/// The table: a header line, a line of column names, a line per row, and a note on the
/// estimated figures when there are any.
fn render(rows: &[Row], lasted: Duration, max_rows: usize) -> String {
    const HEADS: [&str; 9] = [
        "TYPE", "TARGET", "NAME", "CALLS", "FAILED", "FAILED%", "P50", "P95", "MAX",
    ];
    // Text columns are aligned left, figures right.
    const LEFT: usize = 3;
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|row| {
            let mark = if row.estimated { "~" } else { "" };
            let (kind, target, name) = match row.operation {
                Operation::Other => (
                    String::new(),
                    String::new(),
                    format!("(other operations, past {max_rows} rows)"),
                ),
                _ => (
                    row.kind.to_string(),
                    row.target.as_deref().unwrap_or("-").to_owned(),
                    preview(&row.name, 60),
                ),
            };
            let failed_percent = if row.calls > 0.0 {
                100.0 * row.failures / row.calls
            } else {
                0.0
            };
            [
                kind,
                target,
                name,
                format!("{mark}{}", row.calls.round()),
                format!("{mark}{}", row.failures.round()),
                format!("{mark}{failed_percent:.1}%"),
                format_duration(row.durations.quantile(0.5)),
                format_duration(row.durations.quantile(0.95)),
                format_duration(row.durations.max()),
            ]
        })
        .collect();
    let mut widths = HEADS.map(|head| head.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let calls: f64 = rows.iter().map(|row| row.calls).sum();
    let estimated = rows.iter().any(|row| row.estimated);
    let named = rows
        .iter()
        .filter(|row| row.operation != Operation::Other)
        .count();
    let mut text = format!(
        "== summary of the last {lasted:.0?}: {}{} call{}, {named} operation{}{}\n",
        if estimated { "~" } else { "" },
        calls.round(),
        if calls.round() == 1.0 { "" } else { "s" },
        if named == 1 { "" } else { "s" },
        if named < rows.len() { " + others" } else { "" }
    );
    let heads = HEADS.map(str::to_owned);
    for line in std::iter::once(&heads).chain(&cells) {
        let mut out = String::new();
        for (column, (cell, width)) in line.iter().zip(widths).enumerate() {
            let pad = width - cell.chars().count();
            if column > 0 {
                out.push_str("  ");
            }
            if column < LEFT {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', pad));
            } else {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(cell);
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }
    if estimated {
        text.push_str("~ estimated under sampling: a span kept at p % counts as 100/p calls\n");
    }
    text
}

/// A duration with three significant digits (more for whole seconds past 999):
/// `850 ns`, `12.3 µs`, `1.02 ms`, `123 ms`, `4.56 s`.
fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos() as f64;
    for (unit, scale) in [("ns", 1.0), ("µs", 1e3), ("ms", 1e6)] {
        let value = nanos / scale;
        if value.round() < 1000.0 {
            return three_digits(value, unit);
        }
    }
    three_digits(nanos / 1e9, "s")
}

fn three_digits(value: f64, unit: &str) -> String {
    let decimals = if value < 9.995 {
        2
    } else if value < 99.95 {
        1
    } else {
        0
    };
    if unit == "ns" {
        return format!("{value:.0} ns");
    }
    format!("{value:.decimals$} {unit}")
}

/// Durations in a log-linear histogram: values under 64 ns each have a bucket, and every
/// power of two above is cut into 32 buckets, so that a bucket is at most 1/32 of its values
/// wide and its middle within 1.6 % of any of them. Buckets are made up to the longest
/// duration recorded, up to [`Durations::LONGEST`] (about 73 minutes; longer durations are
/// counted there, their maximum kept exactly): at most 1,216 buckets of 8 bytes.
#[derive(Default)]
pub(super) struct Durations {
    /// The weight of the durations in each bucket.
    buckets: Vec<f64>,
    total: f64,
    min: Option<Duration>,
    max: Duration,
}

/// Buckets per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;

impl Durations {
    /// The longest duration the buckets tell apart, in nanoseconds.
    const LONGEST: u64 = (1 << 42) - 1;

    /// Records `duration`, standing for `weight` calls.
    pub(super) fn record(&mut self, duration: Duration, weight: f64) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let index = bucket(nanos.min(Self::LONGEST));
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, 0.0);
        }
        self.buckets[index] += weight;
        self.total += weight;
        self.min = Some(self.min.map_or(duration, |min| min.min(duration)));
        self.max = self.max.max(duration);
    }

    /// The duration under which a share `q` (0 to 1) of the weight lies: the middle of the
    /// bucket where that share is reached, within the least and longest durations recorded.
    /// Zero when nothing was recorded.
    pub(super) fn quantile(&self, q: f64) -> Duration {
        let Some(min) = self.min else {
            return Duration::ZERO;
        };
        let rank = q.clamp(0.0, 1.0) * self.total;
        let mut below = 0.0;
        let mut found = self.buckets.len().saturating_sub(1);
        for (index, weight) in self.buckets.iter().enumerate() {
            below += weight;
            // Weights are sums of floating-point fractions: a rank reached up to rounding is
            // reached.
            if *weight > 0.0 && below >= rank * (1.0 - 1e-9) {
                found = index;
                break;
            }
        }
        let (low, width) = bounds(found);
        Duration::from_nanos(low + width / 2).clamp(min, self.max)
    }

    /// The longest duration recorded.
    pub(super) fn max(&self) -> Duration {
        self.max
    }
}

/// The bucket of a duration of `nanos`.
fn bucket(nanos: u64) -> usize {
    if nanos < 2 * SUB {
        return nanos as usize;
    }
    let shift = 63 - nanos.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (nanos >> shift)) as usize
}

/// The least duration in bucket `index`, and how many nanoseconds it spans.
fn bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * SUB {
        return (index, 1);
    }
    let shift = index / SUB - 1;
    ((SUB + index % SUB) << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{SpanId, TraceId};
    use crate::site::Site;

    #[test]
    fn buckets_are_contiguous_and_hold_their_values() {
        let mut last = 0;
        for nanos in (0..5_000).chain([1 << 20, (1 << 20) + 12_345, Durations::LONGEST]) {
            let index = bucket(nanos);
            let (low, width) = bounds(index);
            assert!(low <= nanos && nanos < low + width, "{nanos} in {index}");
            assert!(
                width <= (low / SUB).max(1),
                "{nanos}: {width} wide at {low}"
            );
            if nanos < 5_000 {
                assert!(index == last || index == last + 1, "{nanos}");
                last = index;
            }
        }
        assert_eq!(bucket(Durations::LONGEST), 1_215);
    }

    fn durations(values: impl IntoIterator<Item = (Duration, f64)>) -> Durations {
        let mut durations = Durations::default();
        for (value, weight) in values {
            durations.record(value, weight);
        }
        durations
    }

    #[test]
    fn percentiles_of_short_durations_are_exact() {
        // 1 to 40 ns, one bucket each: the nearest rank.
        let d = durations((1..=40).map(|n| (Duration::from_nanos(n), 1.0)));
        assert_eq!(d.quantile(0.5), Duration::from_nanos(20));
        assert_eq!(d.quantile(0.95), Duration::from_nanos(38));
        assert_eq!(d.quantile(1.0), Duration::from_nanos(40));
        assert_eq!(d.max(), Duration::from_nanos(40));
    }

    #[test]
    fn percentiles_are_the_middle_of_their_bucket() {
        // 1 to 100 ms: the 50th is 50 ms, in the bucket [49.283, 50.332) ms; the 95th is 95 ms,
        // in [94.372, 96.469) ms.
        let d = durations((1..=100).map(|ms| (Duration::from_millis(ms), 1.0)));
        assert_eq!(d.quantile(0.5), Duration::from_nanos(49_807_360));
        assert_eq!(d.quantile(0.95), Duration::from_nanos(95_420_416));
        assert_eq!(d.max(), Duration::from_millis(100));
        for (q, exact) in [(0.5, 50e6), (0.95, 95e6)] {
            let error = (d.quantile(q).as_nanos() as f64 - exact).abs() / exact;
            assert!(error < 1.0 / 64.0, "{q}: {error}");
        }
    }

    #[test]
    fn one_duration_is_every_percentile_exactly() {
        let d = durations([(Duration::from_micros(1_234), 1.0)]);
        assert_eq!(d.quantile(0.5), Duration::from_micros(1_234));
        assert_eq!(d.quantile(0.95), Duration::from_micros(1_234));
    }

    #[test]
    fn weights_move_the_percentiles() {
        // Ten fast calls kept at 100 % and ten slow ones kept at 10 %: the slow stand for 100
        // calls of 110, so the median is slow.
        let fast = (0..10).map(|_| (Duration::from_nanos(10), 1.0));
        let slow = (0..10).map(|_| (Duration::from_nanos(50), weight(10.0)));
        let d = durations(fast.chain(slow));
        assert_eq!(d.quantile(0.05), Duration::from_nanos(10));
        assert_eq!(d.quantile(0.5), Duration::from_nanos(50));
        assert_eq!(d.quantile(0.09), Duration::from_nanos(10));
        assert_eq!(d.quantile(0.1), Duration::from_nanos(50));
    }

    #[test]
    fn durations_past_the_longest_bucket_keep_their_maximum() {
        let long = Duration::from_secs(3 * 3600);
        let d = durations([(long, 1.0)]);
        assert_eq!(d.max(), long);
        assert_eq!(d.quantile(0.5), long);
        assert!(d.buckets.len() <= 1_216);
    }

    #[test]
    fn durations_read_with_three_significant_digits() {
        let cases = [
            (Duration::from_nanos(850), "850 ns"),
            (Duration::from_nanos(999), "999 ns"),
            (Duration::from_nanos(1_000), "1.00 µs"),
            (Duration::from_nanos(12_345), "12.3 µs"),
            (Duration::from_nanos(999_700), "1.00 ms"),
            (Duration::from_micros(1_024), "1.02 ms"),
            (Duration::from_micros(123_400), "123 ms"),
            (Duration::from_millis(4_560), "4.56 s"),
            (Duration::from_secs(1_500), "1500 s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "{duration:?}");
        }
    }

    static GET: Site = Site::request("GET /orders/{id}");
    static SELECT: Site = Site::dependency("SqliteOrders::get", "SQL").with_target("orders-db");
    static PRICE: Site = Site::inproc("price");

    /// A span of `site` and how long it lasted: given apart, as the clock's ticks become
    /// durations at a rate measured as the process runs.
    fn span(site: &'static Site, micros: u64, success: bool, rate: f32) -> (SpanRecord, Duration) {
        let mut span =
            SpanRecord::start(site, TraceId::random(), SpanId::random(), None, None, rate);
        if !success {
            span.fail("Error".into(), None);
        }
        (span, Duration::from_micros(micros))
    }

    fn summary(spans: &[(SpanRecord, Duration)]) -> Summary {
        let mut summary = Summary::new(Duration::from_secs(60), Instant::now());
        for (span, duration) in spans {
            summary.count(span, *duration);
        }
        summary
    }

    #[test]
    fn rows_count_calls_and_failures_per_operation() {
        let spans = [
            span(&GET, 100, true, 100.0),
            span(&GET, 200, false, 100.0),
            span(&GET, 300, true, 100.0),
            span(&SELECT, 10, false, 100.0),
            span(&PRICE, 1, true, 100.0),
        ];
        let summary = summary(&spans);
        let figures = |name: &str| {
            let row = summary
                .rows
                .values()
                .find(|row| &*row.name == name)
                .unwrap();
            (row.calls, row.failures, row.estimated)
        };
        assert_eq!(summary.rows.len(), 3);
        assert_eq!(figures("GET /orders/{id}"), (3.0, 1.0, false));
        assert_eq!(figures("SqliteOrders::get"), (1.0, 1.0, false));
        assert_eq!(figures("price"), (1.0, 0.0, false));
    }

    #[test]
    fn a_span_kept_at_p_percent_counts_as_100_over_p_calls() {
        let spans = [
            span(&SELECT, 10, true, 25.0),
            span(&SELECT, 10, false, 25.0),
            span(&SELECT, 10, true, 50.0),
        ];
        let summary = summary(&spans);
        let row = summary.rows.values().next().unwrap();
        assert_eq!((row.calls, row.failures, row.estimated), (10.0, 4.0, true));
    }

    #[test]
    fn operations_past_the_cap_share_one_row() {
        static OTHERS: [Site; 3] = [Site::inproc("a"), Site::inproc("b"), Site::inproc("c")];
        let mut summary = Summary::new(Duration::from_secs(60), Instant::now());
        summary.set_max_rows(2);
        for site in &OTHERS {
            summary.add(&span(site, 1, true, 100.0).0);
            summary.add(&span(site, 1, false, 100.0).0);
        }
        assert_eq!(summary.rows.len(), 2);
        let other = summary.other.as_ref().unwrap();
        assert_eq!((other.calls, other.failures), (2.0, 1.0));
        // A row taken before the cap keeps counting.
        summary.add(&span(&OTHERS[0], 1, true, 100.0).0);
        assert_eq!(summary.other.as_ref().unwrap().calls, 2.0);
        let started = summary.started;
        let table = summary.close(started + Duration::from_secs(60)).unwrap();
        assert!(
            table.starts_with("== summary of the last 60s: 7 calls, 2 operations + others\n"),
            "{table}"
        );
        let last = table.lines().last().unwrap();
        assert!(
            last.trim_start()
                .starts_with("(other operations, past 2 rows)      2       1    50.0%"),
            "{table}"
        );
    }

    #[test]
    fn a_table_has_a_row_per_operation_in_aligned_columns() {
        let spans = [
            span(&GET, 12_000, true, 100.0),
            span(&GET, 40_000, false, 100.0),
            span(&SELECT, 310, true, 100.0),
            span(&SELECT, 1_500, true, 100.0),
            span(&PRICE, 2, true, 100.0),
        ];
        let mut summary = summary(&spans);
        let started = summary.started;
        let table = summary.close(started + Duration::from_secs(60)).unwrap();
        // Requests first, then dependencies by type, target and name. A percentile is its
        // bucket's middle within the row's least and longest: the 95th of the SQL calls is the
        // middle of [1.475, 1.507) ms.
        assert_eq!(
            table,
            "\
== summary of the last 60s: 5 calls, 3 operations
TYPE     TARGET     NAME               CALLS  FAILED  FAILED%      P50      P95      MAX
Request  -          GET /orders/{id}       2       1    50.0%  12.0 ms  40.0 ms  40.0 ms
INPROC   -          price                  1       0     0.0%  2.00 µs  2.00 µs  2.00 µs
SQL      orders-db  SqliteOrders::get      2       0     0.0%   310 µs  1.49 ms  1.50 ms
"
        );
    }

    #[test]
    fn estimated_figures_are_marked_and_explained() {
        let spans = [
            span(&SELECT, 1_000, true, 25.0),
            span(&SELECT, 1_000, false, 25.0),
        ];
        let mut summary = summary(&spans);
        let started = summary.started;
        let table = summary.close(started + Duration::from_secs(60)).unwrap();
        assert_eq!(
            table,
            "\
== summary of the last 60s: ~8 calls, 1 operation
TYPE  TARGET     NAME               CALLS  FAILED  FAILED%      P50      P95      MAX
SQL   orders-db  SqliteOrders::get     ~8      ~4   ~50.0%  1.00 ms  1.00 ms  1.00 ms
~ estimated under sampling: a span kept at p % counts as 100/p calls
"
        );
    }

    #[test]
    fn an_interval_closes_on_its_pace_and_an_empty_one_prints_nothing() {
        let start = Instant::now();
        let mut summary = Summary::new(Duration::from_secs(60), start);
        assert!(!summary.due(start + Duration::from_secs(59)));
        assert!(summary.due(start + Duration::from_secs(60)));
        assert_eq!(summary.close(start + Duration::from_millis(60_150)), None);
        assert_eq!(summary.started, start + Duration::from_secs(60));
        // After a stall of more than an interval, the next starts from the close.
        let late = start + Duration::from_secs(300);
        summary.add(&span(&PRICE, 1, true, 100.0).0);
        assert!(summary.close(late).is_some());
        assert_eq!(summary.started, late);
        assert!(summary.rows.is_empty());
    }
}
