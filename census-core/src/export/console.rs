//! An exporter that prints each finished operation as an indented tree.
//!
//! Spans reach an exporter as they end, in batches, from every thread: a child often ends in an
//! earlier batch than its parent, and in one process a server's request ends before the client
//! call that caused it. So the console holds finished spans, per trace, until the top of their
//! tree has come: a span with no parent (the trace's root), a request whose caller did not show
//! up in time (its caller is in another process), or a span whose parent's tree was printed
//! already. Whatever waits too long, or beyond a count, is printed anyway and says so. Log
//! records and events written in a span are printed under it, among its children, at the time
//! they were written; those written outside any span are printed at once. Each item is one
//! line: a message of several lines goes on under its first, further in, and a statement or a
//! value is shown on one line. A control character the application wrote (a terminal's escape
//! in a logged input) is shown as its code, never sent to the terminal. On request, a summary
//! table of each interval's operations follows the trees (`summary.rs`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::summary::{self, Summary};
use super::{Exporter, Resource, one_line, preview};
use crate::id::{SpanId, TraceId};
use crate::record::{
    EventRecord, LogRecord, MetricKind, MetricRecord, Record, Severity, SpanRecord,
};
use crate::site::SpanKind;

/// How long spans wait for a parent that has not come, by default.
const WAIT_FOR_PARENT: Duration = Duration::from_secs(30);
/// How long a request waits for a caller of this same process, by default: the caller's span
/// ends moments after the request, and the worker hands it over at its next export (every
/// 200 ms by default).
const WAIT_FOR_CALLER: Duration = Duration::from_secs(1);
/// How many spans may wait for their parents at once, by default.
const MAX_HELD: usize = 10_000;
/// How many printed spans are remembered, so that a child that comes after its parent's tree
/// was printed is printed at once rather than waiting for a parent that will not come again.
const REMEMBERED: usize = 4_096;

/// Prints every finished operation as a tree: name, type, target, duration, outcome.
///
/// A tree is printed whole: spans that end before their parent (on other threads, in earlier
/// batches) are held until the top of their tree has ended, and printed under their parents.
/// The top is a span with no parent, or a request whose caller is not in this process: a
/// request is held for its caller for a moment ([`wait_for_caller`](Self::wait_for_caller), 1 s),
/// since a call a process makes to itself (as in the HTTP demo) ends just after the request it
/// caused. Anything else waits for its parent at most
/// [`wait_for_parent`](Self::wait_for_parent) (30 s), and at most
/// [`max_held`](Self::max_held) spans (10,000) wait at once; past either bound, and on flush
/// and shutdown, what waits is printed anyway, under a line in brackets that says why it has
/// no parent. With [`summary`](Self::summary), a table of each interval's requests and
/// dependencies (calls, failures, percentiles of their durations) follows the trees. A control
/// character in what the application wrote (a message, a value, a name) is printed as its
/// code (`\x1b` for a terminal's escape), never sent to the terminal.
///
/// ```text
/// place_order  INPROC  1.204 ms  ok
///   PgOrders::get  SQL -> orders-db  0.310 ms  ok
///   price  INPROC  0.002 ms  FAILED (panic: price list is empty)
/// ```
///
/// ```
/// use std::time::Duration;
///
/// let census = census_runtime::pipeline()
///     .exporter(
///         census_runtime::export::ConsoleExporter::stdout()
///             .wait_for_parent(Duration::from_secs(10))
///             .max_held(1_000),
///     )
///     .install()
///     .unwrap();
/// # drop(census);
/// ```
pub struct ConsoleExporter {
    out: Box<dyn Write + Send>,
    min_severity: Severity,
    wait_for_parent: Duration,
    wait_for_caller: Duration,
    max_held: usize,
    held: HashMap<TraceId, HeldTrace>,
    held_count: usize,
    printed: Printed,
    summary_rows: usize,
    /// The summary's current interval, when the summary is on.
    summary: Option<Summary>,
}

impl std::fmt::Debug for ConsoleExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleExporter")
            .field("wait_for_parent", &self.wait_for_parent)
            .field("wait_for_caller", &self.wait_for_caller)
            .field("max_held", &self.max_held)
            .field("held", &self.held_count)
            .field("summary", &self.summary.as_ref().map(Summary::every))
            .field("summary_rows", &self.summary_rows)
            .finish()
    }
}

/// The finished spans of one trace that wait for their tree's top, and the log records and
/// events written in them.
struct HeldTrace {
    spans: Vec<Held>,
    notes: Vec<Note>,
    /// When the oldest of them came: no time bound can be due before the shortest wait after it.
    first_arrived: Instant,
}

struct Held {
    span: SpanRecord,
    arrived: Instant,
}

/// A log record or an event, rendered, waiting to be printed under the span it was written in.
struct Note {
    parent: SpanId,
    /// When it was written, as a clock reading: its place among the span's children.
    ticks: u64,
    line: String,
    arrived: Instant,
}

/// Why a tree is printed before its top came.
#[derive(Clone, Copy)]
enum Cut {
    /// Its oldest span waited `wait_for_parent`.
    Waited,
    /// More than `max_held` spans waited.
    TooMany,
    Flush,
    Shutdown,
}

/// Whether a tree is printed now.
enum Verdict {
    Hold,
    /// Printed, under a note when it should have a parent above it.
    Print(Option<String>),
}

/// What a pass over held spans prints.
#[derive(Clone, Copy)]
enum Pass {
    /// Trees whose top has come, and those held past a time bound at this instant.
    Due(Instant),
    /// Every tree, whole or not.
    All(Cut),
}

/// A tree about to be printed: its top first, then the rest of its spans in any order.
struct Tree {
    spans: Vec<SpanRecord>,
    /// The log records and events written in those spans.
    notes: Vec<Note>,
    /// Why it has no parent above it, when it should have one.
    note: Option<String>,
}

/// The names of the spans printed last, by id.
#[derive(Default)]
struct Printed {
    names: HashMap<SpanId, Box<str>>,
    order: VecDeque<SpanId>,
}

impl Printed {
    fn remember(&mut self, span: &SpanRecord) {
        if self
            .names
            .insert(span.span_id(), span.name().into())
            .is_none()
        {
            self.order.push_back(span.span_id());
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
    }

    fn name(&self, id: SpanId) -> Option<&str> {
        self.names.get(&id).map(AsRef::as_ref)
    }
}

impl ConsoleExporter {
    /// Prints to standard output.
    ///
    /// ```
    /// let console = census_runtime::export::ConsoleExporter::stdout();
    /// # drop(console);
    /// ```
    pub fn stdout() -> Self {
        Self::to_writer(io::stdout())
    }

    /// Prints to any writer.
    ///
    /// ```
    /// let console = census_runtime::export::ConsoleExporter::to_writer(std::io::stderr());
    /// # drop(console);
    /// ```
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        ConsoleExporter {
            out: Box::new(out),
            min_severity: Severity::Verbose,
            wait_for_parent: WAIT_FOR_PARENT,
            wait_for_caller: WAIT_FOR_CALLER,
            max_held: MAX_HELD,
            held: HashMap::new(),
            held_count: 0,
            printed: Printed::default(),
            summary_rows: summary::MAX_ROWS,
            summary: None,
        }
    }

    /// How long spans wait for a parent that has not come before they are printed without it
    /// (30 s by default). A parent that comes later is printed as a tree of its own.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let console = census_runtime::export::ConsoleExporter::stdout().wait_for_parent(Duration::from_secs(5));
    /// # drop(console);
    /// ```
    pub fn wait_for_parent(mut self, wait: Duration) -> Self {
        self.wait_for_parent = wait;
        self
    }

    /// How long a request that continues a trace waits for its caller, in case the caller is a
    /// call this process made to itself (1 s by default). A request whose caller is in another
    /// process is printed this long after it ended. Keep it above the pipeline's
    /// `export_interval`, which is how late the caller's span may come.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let console =
    ///     census_runtime::export::ConsoleExporter::stdout().wait_for_caller(Duration::from_millis(500));
    /// # drop(console);
    /// ```
    pub fn wait_for_caller(mut self, wait: Duration) -> Self {
        self.wait_for_caller = wait;
        self
    }

    /// The least severe log records printed (default: all of them). Spans and events are
    /// always printed.
    ///
    /// ```
    /// use census_runtime::export::{ConsoleExporter, Severity};
    /// let console = ConsoleExporter::stdout().min_severity(Severity::Information);
    /// # drop(console);
    /// ```
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = severity;
        self
    }

    /// How many spans may wait for their parents at once (10,000 by default); past it, the
    /// traces that have waited longest are printed without their parents.
    ///
    /// ```
    /// let console = census_runtime::export::ConsoleExporter::stdout().max_held(1_000);
    /// # drop(console);
    /// ```
    pub fn max_held(mut self, spans: usize) -> Self {
        self.max_held = spans;
        self
    }

    /// Prints a summary table at the end of every interval of `every` (a minute is the usual
    /// choice; a shorter one suits tests and demos), and of the interval so far at flush and
    /// shutdown: one row per request name and per dependency (type, target, name), with its
    /// calls, failures, failure rate, and the median (`P50`), 95th percentile (`P95`) and
    /// longest (`MAX`) of its durations. Off by default; the table goes where the trees go. An
    /// interval in which no span ended prints nothing.
    ///
    /// ```text
    /// == summary of the last 60s: ~1216 calls, 3 operations
    /// TYPE     TARGET     NAME               CALLS  FAILED  FAILED%      P50      P95      MAX
    /// Request  -          POST /orders        ~400     ~12    ~3.0%  12.1 ms  40.4 ms  51.2 ms
    /// INPROC   -          price               ~416      ~0    ~0.0%  2.03 µs  4.10 µs  9.87 µs
    /// SQL      orders-db  SqliteOrders::get   ~400      ~4    ~1.0%   307 µs  1.49 ms  3.20 ms
    /// ~ estimated under sampling: a span kept at p % counts as 100/p calls
    /// ```
    ///
    /// Only the spans the sampler kept reach an exporter, so under sampling the calls and
    /// failures are estimates, marked `~`: a span kept at a sampling percentage `p` counts as
    /// `100 / p` calls (each of its trace's spans says the percentage in force,
    /// [`SpanRecord::sample_rate`]). At 100 % the figures are exact. The percentiles are within
    /// 1.6 % of a recorded duration (a log-linear histogram of bounded size per row, weighted
    /// the same way); the maximum is exact. Rows are bounded too
    /// ([`summary_max_rows`](Self::summary_max_rows)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use census_runtime::export::ConsoleExporter;
    ///
    /// let census = census_runtime::pipeline()
    ///     .exporter(ConsoleExporter::stdout().summary(Duration::from_secs(60)))
    ///     .install()?;
    /// # drop(census);
    /// # Ok::<(), census_runtime::pipeline::ConfigError>(())
    /// ```
    pub fn summary(mut self, every: Duration) -> Self {
        let mut summary = Summary::new(every, Instant::now());
        summary.set_max_rows(self.summary_rows);
        self.summary = Some(summary);
        self
    }

    /// How many rows a summary table has at most (100 by default): the operations that come
    /// when they are taken are counted together in one last row, `(other operations, past N
    /// rows)`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let console = census_runtime::export::ConsoleExporter::stdout()
    ///     .summary(Duration::from_secs(60))
    ///     .summary_max_rows(20);
    /// # drop(console);
    /// ```
    pub fn summary_max_rows(mut self, rows: usize) -> Self {
        self.summary_rows = rows;
        if let Some(summary) = &mut self.summary {
            summary.set_max_rows(rows);
        }
        self
    }

    /// Counts a batch's spans in the summary, when it is on.
    fn count(&mut self, batch: &[Record]) {
        if let Some(summary) = &mut self.summary {
            for span in batch.iter().filter_map(Record::as_span) {
                summary.add(span);
            }
        }
    }

    /// Prints the summary's table when its interval has ended by `now`, or at once if `closing`.
    fn print_summary(&mut self, now: Instant, closing: bool) {
        let Some(summary) = &mut self.summary else {
            return;
        };
        if !closing && !summary.due(now) {
            return;
        }
        if let Some(table) = summary.close(now) {
            let _ = self.out.write_all(terminal_safe(&table).as_bytes());
            let _ = self.out.flush();
        }
    }

    /// Holds a batch's spans (and the log records and events written in them), then prints the
    /// trees they complete and whatever is due.
    fn take(&mut self, batch: &[Record], now: Instant) {
        let mut touched = HashSet::new();
        let mut loose = String::new();
        for record in batch {
            let span = match record {
                Record::Span(span) => span,
                Record::Log(log) if log.severity() < self.min_severity => continue,
                note => {
                    let Some((trace, parent, ticks, line)) = note_of(note) else {
                        continue;
                    };
                    match (trace, parent) {
                        (Some(trace), Some(parent)) if self.printed.name(parent).is_none() => {
                            let held = self.held.entry(trace).or_insert_with(|| HeldTrace {
                                spans: Vec::new(),
                                notes: Vec::new(),
                                first_arrived: now,
                            });
                            held.notes.push(Note {
                                parent,
                                ticks,
                                line,
                                arrived: now,
                            });
                            touched.insert(trace);
                        }
                        (_, Some(parent)) => {
                            // Its span's tree is printed already.
                            let name = self.printed.name(parent).unwrap_or_default();
                            let _ = writeln!(loose, "[written in {name}, printed already]");
                            write_note(&mut loose, 2, &line);
                        }
                        // Written outside any span: printed at once.
                        _ => write_note(&mut loose, 0, &line),
                    }
                    continue;
                }
            };
            let trace = self
                .held
                .entry(span.trace_id())
                .or_insert_with(|| HeldTrace {
                    spans: Vec::new(),
                    notes: Vec::new(),
                    first_arrived: now,
                });
            trace.spans.push(Held {
                span: span.clone(),
                arrived: now,
            });
            self.held_count += 1;
            touched.insert(span.trace_id());
        }
        if !loose.is_empty() {
            let _ = self.out.write_all(terminal_safe(&loose).as_bytes());
        }
        let mut trees = Vec::new();
        for trace in touched {
            self.pass_over(trace, Pass::Due(now), &mut trees);
        }
        self.keep_under_cap(&mut trees);
        self.print(trees);
    }

    /// Prints what has waited past a time bound.
    fn release_due(&mut self, now: Instant) {
        let soonest = self.wait_for_caller.min(self.wait_for_parent);
        let due: Vec<TraceId> = self
            .held
            .iter()
            .filter(|(_, trace)| now.saturating_duration_since(trace.first_arrived) >= soonest)
            .map(|(id, _)| *id)
            .collect();
        let mut trees = Vec::new();
        for trace in due {
            self.pass_over(trace, Pass::Due(now), &mut trees);
        }
        self.print(trees);
    }

    /// Prints everything held.
    fn release_all(&mut self, cut: Cut) {
        let traces: Vec<TraceId> = self.held.keys().copied().collect();
        let mut trees = Vec::new();
        for trace in traces {
            self.pass_over(trace, Pass::All(cut), &mut trees);
        }
        self.print(trees);
    }

    /// Sorts one trace's held spans into trees, takes out those to print in `pass`, and holds
    /// the rest.
    fn pass_over(&mut self, trace: TraceId, pass: Pass, trees: &mut Vec<Tree>) {
        let Some(held) = self.held.remove(&trace) else {
            return;
        };
        self.held_count -= held.spans.len();
        let tops = tops(&held.spans);
        // Each tree's members, its top first.
        let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
        for (index, &top) in tops.iter().enumerate() {
            let group = members.entry(top).or_insert_with(|| vec![top]);
            if index != top {
                group.push(index);
            }
        }
        let mut printing: Vec<(Vec<usize>, Option<String>)> = Vec::new();
        let mut kept: Vec<usize> = Vec::new();
        for group in members.into_values() {
            let top = &held.spans[group[0]];
            let oldest = group
                .iter()
                .map(|&i| held.spans[i].arrived)
                .min()
                .unwrap_or(top.arrived);
            match self.decide(top, oldest, pass) {
                Verdict::Print(note) => printing.push((group, note)),
                Verdict::Hold => kept.extend(group),
            }
        }
        let mut slots: Vec<Option<Held>> = held.spans.into_iter().map(Some).collect();
        let mut notes = held.notes;
        for (group, note) in printing {
            let spans: Vec<SpanRecord> = group
                .iter()
                .filter_map(|&i| slots[i].take())
                .map(|held| held.span)
                .collect();
            let ids: HashSet<SpanId> = spans.iter().map(SpanRecord::span_id).collect();
            let (theirs, others): (Vec<Note>, Vec<Note>) =
                notes.into_iter().partition(|n| ids.contains(&n.parent));
            notes = others;
            for span in &spans {
                self.printed.remember(span);
            }
            trees.push(Tree {
                spans,
                notes: theirs,
                note,
            });
        }
        let rest: Vec<Held> = kept.into_iter().filter_map(|i| slots[i].take()).collect();
        if let Pass::All(cut) = pass
            && !notes.is_empty()
        {
            // Written in spans never seen: printed on their own.
            let mut text = format!("{}\n", self.note(cut));
            for note in std::mem::take(&mut notes) {
                write_note(&mut text, 2, &note.line);
            }
            let _ = self.out.write_all(terminal_safe(&text).as_bytes());
        }
        let first_arrived = rest
            .iter()
            .map(|held| held.arrived)
            .chain(notes.iter().map(|note| note.arrived))
            .min();
        if let Some(first_arrived) = first_arrived {
            self.held_count += rest.len();
            self.held.insert(
                trace,
                HeldTrace {
                    spans: rest,
                    notes,
                    first_arrived,
                },
            );
        }
    }

    /// Whether the tree under `top`, whose oldest span came at `oldest`, is printed in `pass`.
    fn decide(&self, top: &Held, oldest: Instant, pass: Pass) -> Verdict {
        let Some(parent) = top.span.parent_id() else {
            return Verdict::Print(None);
        };
        if let Some(name) = self.printed.name(parent) {
            return Verdict::Print(Some(format!(
                "[came after the tree of its parent, {name}, was printed]"
            )));
        }
        match pass {
            Pass::All(cut) => Verdict::Print(Some(self.note(cut))),
            Pass::Due(now) => {
                if top.span.span_kind() == SpanKind::Request
                    && now.saturating_duration_since(top.arrived) >= self.wait_for_caller
                {
                    // Its caller is in another process: the request is the top of this one's tree.
                    Verdict::Print(None)
                } else if now.saturating_duration_since(oldest) >= self.wait_for_parent {
                    Verdict::Print(Some(self.note(Cut::Waited)))
                } else {
                    Verdict::Hold
                }
            }
        }
    }

    fn note(&self, cut: Cut) -> String {
        match cut {
            Cut::Waited => format!(
                "[cut off: printed without its parent, not seen within {:?}]",
                self.wait_for_parent
            ),
            Cut::TooMany => format!(
                "[cut off: printed without its parent, as more than {} spans waited for theirs]",
                self.max_held
            ),
            Cut::Flush => "[cut off: printed at flush, before its parent was seen]".to_owned(),
            Cut::Shutdown => {
                "[cut off: printed at shutdown, before its parent was seen]".to_owned()
            }
        }
    }

    /// Past `max_held`, prints the traces that have waited longest.
    fn keep_under_cap(&mut self, trees: &mut Vec<Tree>) {
        if self.held_count <= self.max_held {
            return;
        }
        let mut by_age: Vec<(Instant, TraceId)> = self
            .held
            .iter()
            .map(|(id, trace)| (trace.first_arrived, *id))
            .collect();
        by_age.sort_unstable();
        for (_, trace) in by_age {
            if self.held_count <= self.max_held {
                break;
            }
            self.pass_over(trace, Pass::All(Cut::TooMany), trees);
        }
    }

    /// Prints trees in the order their tops ended.
    fn print(&mut self, mut trees: Vec<Tree>) {
        if trees.is_empty() {
            return;
        }
        trees.sort_by_key(|tree| tree.spans.first().map(|top| top.end_ticks()));
        let mut text = String::new();
        for tree in &trees {
            if let Some(note) = &tree.note {
                text.push_str(note);
                text.push('\n');
            }
            render_tree(&mut text, &tree.spans, &tree.notes);
        }
        let _ = self.out.write_all(terminal_safe(&text).as_bytes());
        let _ = self.out.flush();
    }
}

/// For each span, the index of the top of its tree: the first ancestor (or itself) whose parent
/// is not among `spans`.
fn tops(spans: &[Held]) -> Vec<usize> {
    let index: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, held)| (held.span.span_id(), i))
        .collect();
    let mut tops: Vec<Option<usize>> = vec![None; spans.len()];
    let mut path = Vec::new();
    for start in 0..spans.len() {
        let mut at = start;
        // Ids are random, so parents form no cycle unless records are corrupt; a walk longer
        // than the spans there are stops where it is.
        let top = loop {
            if let Some(top) = tops[at] {
                break top;
            }
            path.push(at);
            match spans[at].span.parent_id().and_then(|p| index.get(&p)) {
                Some(&parent) if path.len() <= spans.len() => at = parent,
                _ => break at,
            }
        };
        for i in path.drain(..) {
            tops[i] = Some(top);
        }
    }
    tops.into_iter()
        .enumerate()
        .map(|(i, top)| top.unwrap_or(i))
        .collect()
}

/// What is printed under a span: a child span or a log record written in it.
#[derive(Clone, Copy)]
enum Under {
    Span(usize),
    Note(usize),
}

/// Renders a tree, `spans[0]` at the top, each span's children and log records under it in the
/// order they started or were written. Iterative, so that a deep tree cannot exhaust the
/// worker's stack.
fn render_tree(text: &mut String, spans: &[SpanRecord], notes: &[Note]) {
    let mut children: HashMap<SpanId, Vec<(u64, Under)>> = HashMap::new();
    for (index, span) in spans.iter().enumerate().skip(1) {
        if let Some(parent) = span.parent_id() {
            children
                .entry(parent)
                .or_default()
                .push((span.start_ticks(), Under::Span(index)));
        }
    }
    for (index, note) in notes.iter().enumerate() {
        children
            .entry(note.parent)
            .or_default()
            .push((note.ticks, Under::Note(index)));
    }
    let mut stack = vec![(Under::Span(0), 0)];
    while let Some((under, depth)) = stack.pop() {
        let span = match under {
            Under::Span(index) => &spans[index],
            Under::Note(index) => {
                write_note(text, depth * 2, &notes[index].line);
                continue;
            }
        };
        render_line(text, span, depth);
        // Each list is taken once: even a corrupt cycle of parents ends.
        if let Some(mut under) = children.remove(&span.span_id()) {
            under.sort_by_key(|&(ticks, _)| std::cmp::Reverse(ticks));
            stack.extend(under.into_iter().map(|(_, child)| (child, depth + 1)));
        }
    }
}

/// `text` as it may reach a terminal: a control character other than a line break or a tab (a
/// terminal's escape, a bell, a carriage return that would write over the line) is shown as its
/// code, `\x1b`, so that what an application logs (a user's input in a message, a value, a
/// name) cannot drive the terminal it is printed on, as `tracing-subscriber`'s `fmt` escapes
/// its messages. The console's own text has none.
fn terminal_safe(text: &str) -> Cow<'_, str> {
    // Byte by byte, not `char::is_control`: the console is in every program's binary, and the
    // escape costs it no formatting machinery. A C1 control (U+0080 to U+009F, a terminal's
    // CSI among them) is the two bytes 0xC2 0x80-0x9F in UTF-8.
    let bytes = text.as_bytes();
    let control_at = |at: usize| match bytes[at] {
        b'\n' | b'\t' => false,
        0..0x20 | 0x7f => true,
        0xc2 => matches!(bytes.get(at + 1), Some(0x80..0xa0)),
        _ => false,
    };
    if !(0..bytes.len()).any(control_at) {
        return Cow::Borrowed(text);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut safe = String::with_capacity(text.len() + 16);
    let (mut at, mut from) = (0, 0);
    while at < bytes.len() {
        if control_at(at) {
            // `at` is an ASCII byte or a lead byte: both sides are on characters' boundaries.
            safe.push_str(&text[from..at]);
            if bytes[at] == 0xc2 {
                at += 1;
            }
            let code = bytes[at];
            safe.push_str("\\x");
            safe.push(char::from(HEX[usize::from(code >> 4)]));
            safe.push(char::from(HEX[usize::from(code & 0xf)]));
            from = at + 1;
        }
        at += 1;
    }
    safe.push_str(&text[from..]);
    Cow::Owned(safe)
}

/// Writes a log record's, an event's or a metric's `line` at `indent`; a message of several
/// lines goes on under it, two columns further in, so that the tree around it stays readable.
fn write_note(text: &mut String, indent: usize, line: &str) {
    for (i, part) in line.lines().enumerate() {
        let indent = if i == 0 { indent } else { indent + 2 };
        let _ = writeln!(text, "{:indent$}{part}", "");
    }
}

/// A log record or an event as a line (no indent), with its trace, the span it was written in
/// and when, as a clock reading.
fn note_of(record: &Record) -> Option<(Option<TraceId>, Option<SpanId>, u64, String)> {
    match record {
        Record::Log(log) => Some((log.trace_id(), log.parent_id(), log.ticks(), log_line(log))),
        Record::Event(event) => Some((
            event.trace_id(),
            event.parent_id(),
            event.ticks(),
            event_line(event),
        )),
        // Outside any trace: printed at once, one line per series and interval.
        Record::Metric(metric) => Some((None, None, 0, metric_line(metric))),
        Record::Span(_) => None,
    }
}

fn log_line(log: &LogRecord) -> String {
    let mut line = format!("{} {}", log.severity().name(), log.message());
    for (i, error) in log.errors().iter().enumerate() {
        let _ = write!(
            line,
            "{}{} ({})",
            if i == 0 { ": " } else { " <- " },
            error.message,
            error.type_name
        );
    }
    push_properties(&mut line, log.properties());
    line
}

fn event_line(event: &EventRecord) -> String {
    let mut line = format!("EVENT {}", event.name());
    let measurements: Vec<(String, String)> = event
        .measurements()
        .map(|(k, v)| (k.to_owned(), v.to_string()))
        .collect();
    push_properties(
        &mut line,
        event
            .properties()
            .chain(measurements.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    line
}

/// `METRIC orders.placed counter +12 (60s)  {route=/orders}`; a histogram's count, sum,
/// minimum, mean, maximum and standard deviation.
fn metric_line(metric: &MetricRecord) -> String {
    let mut line = format!("METRIC {} {}", metric.name(), metric.kind().name());
    match metric.kind() {
        MetricKind::Counter => {
            let _ = write!(line, " +{}", metric.value());
        }
        MetricKind::Histogram => {
            let _ = write!(
                line,
                " n={} sum={} min={} mean={} max={} sd={}",
                metric.count(),
                metric.value(),
                metric.min(),
                round(metric.mean()),
                metric.max(),
                round(metric.std_dev())
            );
        }
        _ => {
            let _ = write!(line, " {}", metric.value());
        }
    }
    let _ = write!(line, " ({:.0?})", metric.interval());
    push_properties(&mut line, metric.properties());
    line
}

/// Three decimals are enough to read.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `  {key=value, ...}`: each key once, with the value given last, as the envelope carries it.
fn push_properties<'a>(text: &mut String, properties: impl Iterator<Item = (&'a str, &'a str)>) {
    let given: Vec<(&str, &str)> = properties.collect();
    let shown = match crate::record::replaced(|| given.iter().map(|(key, _)| *key)) {
        None => given,
        Some(replaced) => crate::record::last_of_each(given.into_iter(), &replaced).collect(),
    };
    if !shown.is_empty() {
        text.push_str("  {");
        for (i, (key, value)) in shown.into_iter().enumerate() {
            let _ = write!(
                text,
                "{}{key}={}",
                if i > 0 { ", " } else { "" },
                preview(value, 40)
            );
        }
        text.push('}');
    }
}

fn render_line(text: &mut String, span: &SpanRecord, depth: usize) {
    let _ = write!(
        text,
        "{:indent$}{}  {}",
        "",
        span.name(),
        span.kind(),
        indent = depth * 2
    );
    if span.span_kind() == SpanKind::Request {
        text.push_str("Request");
    }
    if let Some(target) = span.target() {
        let _ = write!(text, " -> {target}");
    }
    let _ = write!(text, "  {}", format_duration(span.duration()));
    if span.success() {
        text.push_str("  ok");
    } else {
        let code = span.result_code().unwrap_or("error");
        match span.error_message() {
            Some(message) => {
                let _ = write!(text, "  FAILED ({code}: {})", one_line(message));
            }
            None => {
                let _ = write!(text, "  FAILED ({code})");
            }
        }
    }
    if let Some(data) = span.data() {
        let _ = write!(text, "  [{}]", preview(data, 80));
    }
    push_properties(text, span.properties());
    text.push('\n');
}

fn format_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros >= 1_000_000 {
        format!("{:.3} s", duration.as_secs_f64())
    } else {
        format!("{:.3} ms", micros as f64 / 1000.0)
    }
}

impl Exporter for ConsoleExporter {
    fn export(&mut self, batch: &[Record], _resource: &Resource) {
        self.count(batch);
        self.take(batch, Instant::now());
    }

    /// Prints what has waited long enough, then the summary when its interval has ended.
    fn tick(&mut self, now: Instant) {
        self.release_due(now);
        self.print_summary(now, false);
    }

    /// Prints everything held, whole or not, then the summary of the interval so far.
    fn flush(&mut self, _deadline: Instant) -> bool {
        self.release_all(Cut::Flush);
        self.print_summary(Instant::now(), true);
        true
    }

    /// Prints everything held, whole or not, then the summary of the interval so far.
    fn shutdown(&mut self, _deadline: Instant) -> bool {
        self.release_all(Cut::Shutdown);
        self.print_summary(Instant::now(), true);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::site::Site;

    #[test]
    fn a_metric_s_interval_is_one_line() {
        use crate::record::Distribution;
        use crate::record::SeriesId;
        use std::time::SystemTime;

        let id = Arc::new(SeriesId::new(
            "checkout_ms",
            vec![("route".to_owned(), "/orders".to_owned())],
        ));
        let histogram = MetricRecord::new(
            Arc::clone(&id),
            MetricKind::Histogram,
            SystemTime::UNIX_EPOCH,
            Duration::from_secs(60),
            Distribution::new(3, 48.0, 800.0, 12.0, 20.0),
        );
        assert_eq!(
            metric_line(&histogram),
            "METRIC checkout_ms histogram n=3 sum=48 min=12 mean=16 max=20 sd=3.266 (60s)  {route=/orders}"
        );
        let counter = MetricRecord::new(
            id,
            MetricKind::Counter,
            SystemTime::UNIX_EPOCH,
            Duration::from_millis(2_400),
            Distribution::new(1, 5.0, 25.0, 5.0, 5.0),
        );
        assert_eq!(
            metric_line(&counter),
            "METRIC checkout_ms counter +5 (2s)  {route=/orders}"
        );
    }

    static FETCH: Site = Site::inproc("fetch");
    static CALL: Site = Site::dependency("GET /stock/7", "HTTP");
    static REQUEST: Site = Site::request("GET /stock/{id}");
    static PRICE: Site = Site::inproc("price");

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        fn lines(&self) -> Vec<String> {
            self.text().lines().map(str::to_owned).collect()
        }
    }

    fn records<const N: usize>(spans: [SpanRecord; N]) -> Vec<Record> {
        spans.into_iter().map(Record::Span).collect()
    }

    fn console() -> (ConsoleExporter, Buffer) {
        let out = Buffer::default();
        (ConsoleExporter::to_writer(out.clone()), out)
    }

    fn record(site: &'static Site, trace: TraceId, parent: Option<&SpanRecord>) -> SpanRecord {
        let mut record = SpanRecord::start(
            site,
            trace,
            SpanId::random(),
            parent.map(SpanRecord::span_id),
            None,
            100.0,
        );
        record.set_ticks(1, 2);
        record
    }

    /// The HTTP demo's trace: `fetch` calls `GET /stock/7`, which this same process serves.
    fn call_to_self() -> [SpanRecord; 3] {
        let trace = TraceId::random();
        let fetch = record(&FETCH, trace, None);
        let call = record(&CALL, trace, Some(&fetch));
        let request = record(&REQUEST, trace, Some(&call));
        [fetch, call, request]
    }

    fn starts(lines: &[String], prefixes: &[&str]) -> bool {
        lines.len() == prefixes.len()
            && lines
                .iter()
                .zip(prefixes)
                .all(|(line, prefix)| line.starts_with(prefix))
    }

    #[test]
    fn a_request_that_comes_before_its_caller_is_printed_inside_the_caller_s_tree() {
        let (mut console, out) = console();
        let [fetch, call, request] = call_to_self();
        let resource = Resource::new(None, None, None);
        console.export(&records([request]), &resource);
        assert_eq!(out.lines(), Vec::<String>::new(), "the request waits");
        console.export(&records([call, fetch]), &resource);
        let lines = out.lines();
        assert!(
            starts(
                &lines,
                &[
                    "fetch  INPROC",
                    "  GET /stock/7  HTTP",
                    "    GET /stock/{id}  Request"
                ]
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_child_that_comes_before_its_parent_is_printed_under_it() {
        let (mut console, out) = console();
        let trace = TraceId::random();
        let fetch = record(&FETCH, trace, None);
        let price = record(&PRICE, trace, Some(&fetch));
        let now = Instant::now();
        console.take(&records([price]), now);
        assert_eq!(out.lines(), Vec::<String>::new(), "the child waits");
        console.take(&records([fetch]), now);
        let lines = out.lines();
        assert!(
            starts(&lines, &["fetch  INPROC", "  price  INPROC"]),
            "{lines:#?}"
        );
    }

    #[test]
    fn children_are_printed_in_the_order_they_started() {
        let (mut console, out) = console();
        let trace = TraceId::random();
        let fetch = record(&FETCH, trace, None);
        let mut call = record(&CALL, trace, Some(&fetch));
        call.set_ticks(5, 6);
        let mut price = record(&PRICE, trace, Some(&fetch));
        price.set_ticks(3, 4);
        console.take(&records([call, fetch, price]), Instant::now());
        let lines = out.lines();
        assert!(
            starts(&lines, &["fetch", "  price", "  GET /stock/7"]),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_span_held_past_wait_for_parent_is_printed_under_a_cut_off_note() {
        let (console, out) = console();
        let mut console = console.wait_for_parent(Duration::from_secs(30));
        let [_fetch, call, request] = call_to_self();
        let came = Instant::now();
        console.take(&records([call, request]), came);
        console.tick(came + Duration::from_secs(29));
        assert_eq!(out.lines(), Vec::<String>::new(), "still waiting");
        console.tick(came + Duration::from_secs(30));
        let lines = out.lines();
        assert!(
            starts(
                &lines,
                &[
                    "[cut off: printed without its parent, not seen within 30s]",
                    "GET /stock/7  HTTP",
                    "  GET /stock/{id}  Request"
                ]
            ),
            "{lines:#?}"
        );
        assert_eq!(console.held_count, 0);
    }

    #[test]
    fn a_request_whose_caller_does_not_come_is_printed_after_wait_for_caller_without_a_note() {
        let (console, out) = console();
        let mut console = console.wait_for_caller(Duration::from_secs(1));
        let trace = TraceId::random();
        let remote_caller = record(&CALL, trace, None);
        let request = record(&REQUEST, trace, Some(&remote_caller));
        let price = record(&PRICE, trace, Some(&request));
        let came = Instant::now();
        console.take(&records([price, request]), came);
        console.tick(came + Duration::from_millis(999));
        assert_eq!(out.lines(), Vec::<String>::new(), "waiting for its caller");
        console.tick(came + Duration::from_secs(1));
        let lines = out.lines();
        assert!(
            starts(&lines, &["GET /stock/{id}  Request", "  price  INPROC"]),
            "{lines:#?}"
        );
    }

    #[test]
    fn past_max_held_the_trace_held_longest_is_printed_under_a_cut_off_note() {
        let (console, out) = console();
        let mut console = console.max_held(2);
        let [_, older_call, older_request] = call_to_self();
        let [_, newer_call, _] = call_to_self();
        let came = Instant::now();
        console.take(&records([older_request, older_call]), came);
        assert_eq!(out.lines(), Vec::<String>::new(), "two spans may wait");
        console.take(&records([newer_call]), came + Duration::from_millis(1));
        let lines = out.lines();
        assert!(
            starts(
                &lines,
                &[
                    "[cut off: printed without its parent, as more than 2 spans waited for theirs]",
                    "GET /stock/7  HTTP",
                    "  GET /stock/{id}  Request"
                ]
            ),
            "{lines:#?}"
        );
        assert_eq!(console.held_count, 1, "the newer trace still waits");
    }

    #[test]
    fn flush_and_shutdown_print_what_is_held_and_say_so() {
        let (mut console, out) = console();
        let [_, call, request] = call_to_self();
        console.take(&records([request, call]), Instant::now());
        assert!(console.flush(Instant::now()));
        let [_, call, _] = call_to_self();
        console.take(&records([call]), Instant::now());
        assert!(console.shutdown(Instant::now()));
        let lines = out.lines();
        assert!(
            starts(
                &lines,
                &[
                    "[cut off: printed at flush, before its parent was seen]",
                    "GET /stock/7  HTTP",
                    "  GET /stock/{id}  Request",
                    "[cut off: printed at shutdown, before its parent was seen]",
                    "GET /stock/7  HTTP",
                ]
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_span_that_comes_after_its_parent_s_tree_was_printed_is_printed_at_once_and_says_so() {
        let (mut console, out) = console();
        let trace = TraceId::random();
        let fetch = record(&FETCH, trace, None);
        let late = record(&PRICE, trace, Some(&fetch));
        console.take(&records([fetch]), Instant::now());
        console.take(&records([late]), Instant::now());
        let lines = out.lines();
        assert!(
            starts(
                &lines,
                &[
                    "fetch  INPROC",
                    "[came after the tree of its parent, fetch, was printed]",
                    "price  INPROC"
                ]
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_message_of_several_lines_goes_on_under_its_record_and_values_stay_on_one_line() {
        use crate::record::{Correlation, LogRecord, Severity, Source, SpanExtra};
        use crate::text::Text;
        use std::borrow::Cow;

        let (mut console, out) = console();
        let trace = TraceId::random();
        let mut fetch = record(&FETCH, trace, None);
        let mut query = record(&CALL, trace, Some(&fetch));
        query.set_extra(Some(Box::new(SpanExtra {
            data: Some(Cow::Borrowed("SELECT id\n  FROM orders\r\n WHERE id = $1")),
            // A key given twice is shown once, with the value given last.
            properties: vec![
                (Cow::Borrowed("note"), "first".into()),
                (Cow::Borrowed("note"), "two\nlines".into()),
            ],
            ..SpanExtra::default()
        })));
        query.fail(
            Cow::Borrowed("Error"),
            Some("refused:\nno route".to_owned()),
        );
        fetch.set_ticks(1, 10);
        let log = LogRecord::new(
            Severity::Warning,
            Text::format(format_args!("stock low\nfor sku 7")),
            Correlation {
                trace_id: Some(trace),
                parent_id: Some(fetch.span_id()),
                ..Correlation::default()
            },
            Source::default(),
        );
        console.take(
            &[
                Record::Log(Box::new(log)),
                Record::Span(query),
                Record::Span(fetch),
            ],
            Instant::now(),
        );
        let lines = out.lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("fetch  INPROC"), "{lines:#?}");
        assert!(
            lines[1].starts_with("  GET /stock/7  HTTP")
                && lines[1].contains("FAILED (Error: refused: no route)")
                && lines[1].contains("[SELECT id FROM orders WHERE id = $1]")
                && lines[1].ends_with("{note=two lines}"),
            "{lines:#?}"
        );
        assert_eq!(lines[2..], ["  WARN stock low", "    for sku 7"]);
    }

    #[test]
    fn control_characters_an_application_writes_are_shown_escaped_not_sent_to_the_terminal() {
        use crate::record::{Correlation, LogRecord, Severity, Source, SpanExtra};
        use crate::text::Text;
        use std::borrow::Cow;

        let (mut console, out) = console();
        let trace = TraceId::random();
        let mut fetch = record(&FETCH, trace, None);
        fetch.set_extra(Some(Box::new(SpanExtra {
            properties: vec![(Cow::Borrowed("user"), "bob\x07\r\t!".into())],
            ..SpanExtra::default()
        })));
        fetch.set_ticks(1, 10);
        let log = LogRecord::new(
            Severity::Warning,
            Text::format(format_args!(
                "login \x1b]0;owned\x07 by \x1b[2Jeve\r\nand\u{9b}2J"
            )),
            Correlation {
                trace_id: Some(trace),
                parent_id: Some(fetch.span_id()),
                ..Correlation::default()
            },
            Source::default(),
        );
        let loose = LogRecord::new(
            Severity::Error,
            Text::format(format_args!("outside\x1b[31m")),
            Correlation::default(),
            Source::default(),
        );
        console.take(
            &[
                Record::Log(Box::new(log)),
                Record::Log(Box::new(loose)),
                Record::Span(fetch),
            ],
            Instant::now(),
        );
        let printed = out.text();
        assert!(
            !printed
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{printed:?}"
        );
        let lines = out.lines();
        assert_eq!(
            lines,
            [
                "ERROR outside\\x1b[31m",
                "fetch  INPROC  0.000 ms  ok  {user=bob\\x07 !}",
                "  WARN login \\x1b]0;owned\\x07 by \\x1b[2Jeve",
                "    and\\x9b2J",
            ],
            "{lines:#?}"
        );
    }

    #[test]
    fn the_trees_of_one_pass_are_printed_in_the_order_their_tops_ended() {
        let (mut console, out) = console();
        let mut first = record(&FETCH, TraceId::random(), None);
        first.set_ticks(1, 10);
        let mut second = record(&PRICE, TraceId::random(), None);
        second.set_ticks(1, 20);
        console.take(&records([second, first]), Instant::now());
        let lines = out.lines();
        assert!(starts(&lines, &["fetch", "price"]), "{lines:#?}");
    }

    fn table_lines(lines: &[String]) -> Vec<&str> {
        lines
            .iter()
            .map(String::as_str)
            .skip_while(|line| !line.starts_with("== summary"))
            .collect()
    }

    #[test]
    fn the_summary_is_printed_after_the_trees_when_its_interval_ends() {
        let (console, out) = console();
        let mut console = console.summary(Duration::from_secs(60));
        let resource = Resource::new(None, None, None);
        // The interval began when the summary was asked for, a moment before.
        let start = Instant::now();
        let mut failed = record(&CALL, TraceId::random(), None);
        failed.fail("503".into(), None);
        console.export(&records(call_to_self()), &resource);
        console.export(&records([failed]), &resource);
        console.tick(start + Duration::from_secs(59));
        assert!(table_lines(&out.lines()).is_empty(), "{:#?}", out.lines());
        console.tick(start + Duration::from_secs(60));
        let lines = out.lines();
        let table = table_lines(&lines);
        assert!(
            starts(
                &lines[..lines.len() - table.len()],
                &[
                    "fetch  INPROC",
                    "  GET /stock/7  HTTP",
                    "    GET /stock/{id}  Request",
                    "GET /stock/7  HTTP",
                ]
            ),
            "{lines:#?}"
        );
        assert_eq!(
            table[0],
            "== summary of the last 60s: 4 calls, 3 operations"
        );
        assert!(table[1].starts_with("TYPE     TARGET  NAME"), "{table:#?}");
        // The text columns, then calls, failures and their share.
        let figures: Vec<Vec<&str>> = table[2..]
            .iter()
            .map(|line| {
                line.split("  ")
                    .map(str::trim)
                    .filter(|cell| !cell.is_empty())
                    .take(6)
                    .collect()
            })
            .collect();
        assert_eq!(
            figures,
            [
                ["Request", "-", "GET /stock/{id}", "1", "0", "0.0%"],
                ["HTTP", "-", "GET /stock/7", "2", "1", "50.0%"],
                ["INPROC", "-", "fetch", "1", "0", "0.0%"],
            ]
        );
        console.tick(start + Duration::from_secs(120));
        assert_eq!(
            out.lines().len(),
            lines.len(),
            "an empty interval prints nothing"
        );
    }

    #[test]
    fn flush_and_shutdown_print_the_summary_of_the_interval_so_far() {
        let (console, out) = console();
        let mut console = console.summary(Duration::from_secs(60));
        let [fetch, ..] = call_to_self();
        console.export(&records([fetch]), &Resource::new(None, None, None));
        assert!(console.flush(Instant::now()));
        assert!(console.flush(Instant::now()), "nothing came since");
        let [fetch, ..] = call_to_self();
        console.export(&records([fetch]), &Resource::new(None, None, None));
        assert!(console.shutdown(Instant::now()));
        let lines = out.lines();
        let heads: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("== summary"))
            .collect();
        assert_eq!(heads.len(), 2, "{lines:#?}");
        assert!(
            heads
                .iter()
                .all(|head| head.ends_with(": 1 call, 1 operation")),
            "{lines:#?}"
        );
    }

    #[test]
    fn without_summary_no_table_is_printed() {
        let (mut console, out) = console();
        let [fetch, ..] = call_to_self();
        console.export(&records([fetch]), &Resource::new(None, None, None));
        console.tick(Instant::now() + Duration::from_secs(3600));
        assert!(console.flush(Instant::now()));
        assert_eq!(out.lines().len(), 1, "{:#?}", out.lines());
    }
}
