//! Standard metrics: `requests/duration` and `dependencies/duration`, counted for every request
//! and dependency span *before* sampling, so that the portal's request and dependency charts and
//! alerts stay exact whatever the sampler drops.
//!
//! Two sources meet here. A recorded span reaches the export worker, which counts it from its
//! record ([`Aggregator::observe`]). A call whose trace the sampler dropped never leaves its
//! thread: the thread times it (two clock readings) and adds it to a table of its own, one slot
//! per call site, which only that thread writes, with plain loads and stores ([`count`]). At the
//! end of each interval the worker reads every thread's table: counts and sums are running
//! totals, so it takes differences and loses nothing between two reads; a slot's minimum and
//! maximum restart with each interval (a call that ends while the worker reads may land in the
//! next interval's minimum or maximum, never outside the counts). A failure of a dropped call is
//! rare, and goes to the table's locked list with its result code.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crossbeam_utils::CachePadded;

use crate::clock;
use crate::record::Distribution;
use crate::record::{MetricKind, MetricRecord, Record, SeriesId, SpanRecord};
use crate::site::{Site, SpanKind};

/// The `_MS.MetricId` of the requests' durations.
pub(crate) const REQUESTS: &str = "requests/duration";
/// The `_MS.MetricId` of the dependencies' durations.
pub(crate) const DEPENDENCIES: &str = "dependencies/duration";

/// Distinct sets of dimensions per interval; beyond them, calls are counted as dropped metric
/// values (`metrics_dropped`).
const MAX_SERIES: usize = 2_000;

/// Whether and how calls of dropped traces are timed and counted (an installed exporter asked
/// for standard metrics): one byte says both, so that a call of a dropped trace reads one flag
/// before it reads the clock.
static COUNTING: CachePadded<AtomicU8> = CachePadded::new(AtomicU8::new(OFF));
/// Calls are not counted.
const OFF: u8 = 0;
/// Calls are counted, timed by the time-stamp counter.
const BY_TSC: u8 = 1;
/// Calls are counted, timed by the other clock.
const BY_CLOCK: u8 = 2;

/// Whether calls of dropped traces are counted.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn counting() -> bool {
    COUNTING.load(Ordering::Relaxed) != OFF
}

/// The start of a call of a dropped trace when calls are counted: a clock reading, else `None`.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn counted_start() -> Option<u64> {
    match COUNTING.load(Ordering::Relaxed) {
        OFF => None,
        BY_TSC => Some(clock::tsc()),
        _ => Some(clock::now_out_of_line()),
    }
}

/// Turns counting of dropped calls on or off (with the pipeline that wants it).
pub(crate) fn set_counting(on: bool) {
    let how = if !on {
        OFF
    } else if clock::uses_tsc() {
        BY_TSC
    } else {
        BY_CLOCK
    };
    COUNTING.store(how, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// The calling thread's side.

/// Slots per thread table: a site takes the slot its address picks; a site whose slot another
/// holds goes to the table's locked list.
const SLOTS: usize = 64;

/// One call site's running figures on one thread, in clock ticks.
struct Slot {
    /// The site, or null while the slot is free. Set once.
    site: AtomicPtr<Site>,
    count: AtomicU64,
    ticks: AtomicU64,
    /// The sum of the squared durations, as `f64` bits.
    squares: AtomicU64,
    /// The interval the minimum and maximum belong to.
    epoch: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

/// What a thread counted outside its slots: failures (by result code) and the calls of sites
/// whose slot another site holds. The worker takes and resets it under the lock.
#[derive(Default)]
struct Others {
    entries: Vec<(&'static Site, Option<Cow<'static, str>>, Figures)>,
    /// Recorded spans dropped at the full queue, by their own dimensions.
    lost: Vec<(Key, Figures)>,
}

struct Table {
    slots: [Slot; SLOTS],
    others: Mutex<Others>,
}

/// Every table ever made: the worker reads them all. A table outlives its thread and is handed
/// to the next new thread, so that threads that come and go do not grow the list.
static TABLES: Mutex<Vec<&'static Table>> = Mutex::new(Vec::new());
/// Tables whose thread has exited.
static FREE: Mutex<Vec<&'static Table>> = Mutex::new(Vec::new());
/// The interval the worker is collecting: a slot whose epoch differs restarts its minimum and
/// maximum.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TABLE: Cell<Option<&'static Table>> = const { Cell::new(None) };
    static LEASE: RefCell<Option<Lease>> = const { RefCell::new(None) };
}

/// Hands this thread's table back when the thread exits.
struct Lease(&'static Table);

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = TABLE.try_with(|table| table.set(None));
        FREE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.0);
    }
}

#[cold]
#[inline(never)]
fn lease() -> Option<&'static Table> {
    let table = FREE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop()
        .unwrap_or_else(|| {
            let table: &'static Table = Box::leak(Box::new(Table {
                slots: std::array::from_fn(|_| Slot {
                    site: AtomicPtr::new(std::ptr::null_mut()),
                    count: AtomicU64::new(0),
                    ticks: AtomicU64::new(0),
                    squares: AtomicU64::new(0),
                    epoch: AtomicU64::new(u64::MAX),
                    min: AtomicU64::new(0),
                    max: AtomicU64::new(0),
                }),
                others: Mutex::new(Others::default()),
            }));
            TABLES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(table);
            table
        });
    // A thread torn down already cannot hold a lease: its calls are not counted.
    let leased = LEASE
        .try_with(|lease| *lease.borrow_mut() = Some(Lease(table)))
        .is_ok();
    if !leased {
        FREE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(table);
        return None;
    }
    TABLE.with(|cell| cell.set(Some(table)));
    Some(table)
}

#[cfg_attr(not(debug_assertions), inline(always))]
fn table() -> Option<&'static Table> {
    match TABLE.with(Cell::get) {
        Some(table) => Some(table),
        None => lease(),
    }
}

/// Counts a call of a dropped trace that started at `start` and succeeded: it ends now. Out
/// of line: inlined, it would make every guard's drop too large to be inlined itself.
#[inline(never)]
pub(crate) fn count(site: &'static Site, start: u64) {
    count_inline(site, start);
}

/// [`count`], inlined: for an out-of-line end that does more (closing a dropped root), so that
/// it makes one call, not two.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn count_inline(site: &'static Site, start: u64) {
    let ticks = clock::now().saturating_sub(start);
    let Some(table) = table() else {
        return;
    };
    count_in(table, site, ticks);
}

/// Counts a successful call of `site` that took `ticks` into this thread's `table`.
#[cfg_attr(not(debug_assertions), inline(always))]
fn count_in(table: &'static Table, site: &'static Site, ticks: u64) {
    let index = (std::ptr::from_ref(site) as usize >> 4) % SLOTS;
    let slot = &table.slots[index];
    let held = slot.site.load(Ordering::Relaxed);
    if std::ptr::eq(held, site) || (held.is_null() && claim(slot, site)) {
        add(slot, ticks);
    } else {
        count_other(table, site, ticks, None);
    }
}

/// Counts a failed call of a dropped trace that started at `start`, with its result code.
#[cold]
#[inline(never)]
pub(crate) fn count_failure(site: &'static Site, start: u64, code: Cow<'static, str>) {
    let ticks = clock::now().saturating_sub(start);
    if let Some(table) = table() {
        count_other(table, site, ticks, Some(code));
    }
}

/// Counts a recorded span that never reaches the worker (dropped at the full queue): the
/// standard metrics still have it.
#[cold]
#[inline(never)]
pub(crate) fn count_lost(record: &SpanRecord) {
    if !counting() {
        return;
    }
    let Some(table) = table() else {
        return;
    };
    // A successful span with nothing set at run time is its site's: it joins the site's slot,
    // as a call of a dropped trace does, without a lock or an allocation (the queue is full:
    // the worker is behind, and this thread should not slow down further).
    if !record.has_extra() && record.success() {
        let ticks = record.end_ticks().saturating_sub(record.start_ticks());
        count_in(table, record.site(), ticks);
        return;
    }
    let key = Key::of_record(record);
    let millis = record.duration().as_secs_f64() * 1000.0;
    let mut others = table.others.lock().unwrap_or_else(PoisonError::into_inner);
    match others.lost.iter_mut().find(|(k, _)| *k == key) {
        Some((_, figures)) => figures.add(millis),
        None => {
            let mut figures = Figures::default();
            figures.add(millis);
            others.lost.push((key, figures));
        }
    }
}

#[cold]
fn claim(slot: &Slot, site: &'static Site) -> bool {
    // Only this thread writes its table's slots.
    slot.site
        .store(std::ptr::from_ref(site).cast_mut(), Ordering::Release);
    true
}

/// Adds one call to a slot: loads and stores, no read-modify-write (only this thread writes).
#[cfg_attr(not(debug_assertions), inline(always))]
fn add(slot: &Slot, ticks: u64) {
    let relaxed = Ordering::Relaxed;
    slot.count.store(slot.count.load(relaxed) + 1, relaxed);
    slot.ticks
        .store(slot.ticks.load(relaxed).wrapping_add(ticks), relaxed);
    // Through `i64`: one instruction, where `u64` takes six (a call's ticks fit).
    let ticks_f64 = ticks as i64 as f64;
    let squared = ticks_f64 * ticks_f64;
    slot.squares.store(
        (f64::from_bits(slot.squares.load(relaxed)) + squared).to_bits(),
        relaxed,
    );
    let epoch = EPOCH.load(relaxed);
    if slot.epoch.load(relaxed) != epoch {
        slot.epoch.store(epoch, relaxed);
        slot.min.store(ticks, relaxed);
        slot.max.store(ticks, relaxed);
    } else {
        if ticks < slot.min.load(relaxed) {
            slot.min.store(ticks, relaxed);
        }
        if ticks > slot.max.load(relaxed) {
            slot.max.store(ticks, relaxed);
        }
    }
}

#[cold]
#[inline(never)]
fn count_other(table: &Table, site: &'static Site, ticks: u64, code: Option<Cow<'static, str>>) {
    let mut others = table.others.lock().unwrap_or_else(PoisonError::into_inner);
    let millis = ticks_to_millis(ticks);
    match others
        .entries
        .iter_mut()
        .find(|(s, c, _)| std::ptr::eq(*s, site) && *c == code)
    {
        Some((_, _, figures)) => figures.add(millis),
        None => {
            let mut figures = Figures::default();
            figures.add(millis);
            others.entries.push((site, code, figures));
        }
    }
}

/// Milliseconds per clock tick.
fn millis_per_tick() -> f64 {
    ticks_to_millis(1 << 30) / f64::from(1u32 << 30)
}

fn ticks_to_millis(ticks: u64) -> f64 {
    clock::between(0, ticks).as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// One interval's figures of one set of dimensions, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Figures {
    count: u64,
    sum: f64,
    squares: f64,
    min: f64,
    max: f64,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            count: 0,
            sum: 0.0,
            squares: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Figures {
    fn add(&mut self, millis: f64) {
        self.count += 1;
        self.sum += millis;
        self.squares += millis * millis;
        self.min = self.min.min(millis);
        self.max = self.max.max(millis);
    }

    fn merge(&mut self, other: &Figures) {
        self.count += other.count;
        self.sum += other.sum;
        self.squares += other.squares;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// The dimensions the portal reads a standard metric by (besides the cloud role and instance,
/// the same for every series of a process).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    request: bool,
    /// `Dependency.Type` (empty for a request).
    kind: Box<str>,
    /// `dependency/target` (empty for a request).
    target: Box<str>,
    success: bool,
    /// `request/resultCode` or `dependency/resultCode`.
    code: Box<str>,
}

impl Key {
    fn of_site(site: &Site, success: bool, code: &str) -> Key {
        let request = site.span_kind() == SpanKind::Request;
        Key {
            request,
            kind: if request { "" } else { site.kind() }.into(),
            target: if request {
                ""
            } else {
                site.target().unwrap_or("")
            }
            .into(),
            success,
            code: code.into(),
        }
    }

    fn of_record(record: &SpanRecord) -> Key {
        let request = record.span_kind() == SpanKind::Request;
        Key {
            request,
            kind: if request { "" } else { record.kind() }.into(),
            target: if request {
                ""
            } else {
                record.target().unwrap_or("")
            }
            .into(),
            success: record.success(),
            code: result_code(record).into(),
        }
    }
}

/// A span's result code as its envelope carries it.
pub(crate) fn result_code(record: &SpanRecord) -> &str {
    match record.result_code() {
        Some(code) => code,
        None if record.success() => "0",
        None => "error",
    }
}

/// The export worker's standard metrics: what it counted from recorded spans this interval,
/// and what it last read of every thread's table.
#[derive(Default)]
pub(crate) struct Aggregator {
    series: Vec<(Key, Figures)>,
    by_key: HashMap<Key, usize>,
    /// Spans with nothing set at run time are described by their site alone.
    by_site: HashMap<(usize, bool), usize>,
    /// The last site looked up, and its series: a batch's spans mostly come from a few sites.
    last_site: Option<((usize, bool), usize)>,
    /// Milliseconds per clock tick, read once.
    millis_per_tick: f64,
    /// What each thread table's slot held at the last read: running count, ticks and squares.
    seen: HashMap<(usize, usize), (u64, u64, f64)>,
    /// Calls not counted this interval because there were too many series.
    over: u64,
}

impl Aggregator {
    /// Counts a recorded span.
    pub(crate) fn observe(&mut self, record: &SpanRecord) {
        if self.millis_per_tick == 0.0 {
            self.millis_per_tick = millis_per_tick();
        }
        let ticks = record.end_ticks().saturating_sub(record.start_ticks());
        let millis = ticks as f64 * self.millis_per_tick;
        if !record.has_extra() {
            let site = (std::ptr::from_ref(record.site()) as usize, record.success());
            if let Some((last, index)) = self.last_site
                && last == site
            {
                self.series[index].1.add(millis);
                return;
            }
            if let Some(&index) = self.by_site.get(&site) {
                self.last_site = Some((site, index));
                self.series[index].1.add(millis);
                return;
            }
            let key = Key::of_record(record);
            match self.index(key) {
                Some(index) => {
                    self.by_site.insert(site, index);
                    self.last_site = Some((site, index));
                    self.series[index].1.add(millis);
                }
                None => self.over += 1,
            }
            return;
        }
        match self.index(Key::of_record(record)) {
            Some(index) => self.series[index].1.add(millis),
            None => self.over += 1,
        }
    }

    fn index(&mut self, key: Key) -> Option<usize> {
        if let Some(&index) = self.by_key.get(&key) {
            return Some(index);
        }
        if self.series.len() >= MAX_SERIES {
            return None;
        }
        self.series.push((key.clone(), Figures::default()));
        self.by_key.insert(key, self.series.len() - 1);
        Some(self.series.len() - 1)
    }

    fn merge(&mut self, key: Key, figures: &Figures) {
        match self.index(key) {
            Some(index) => self.series[index].1.merge(figures),
            None => self.over += figures.count,
        }
    }

    /// Reads every thread's table: what was counted there since the last read joins this
    /// interval.
    fn harvest(&mut self) {
        let tables: Vec<&'static Table> = TABLES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // From now on, threads restart their slots' minimum and maximum.
        let closing = EPOCH.fetch_add(1, Ordering::Relaxed);
        let millis_per_tick = millis_per_tick();
        for table in tables {
            for (i, slot) in table.slots.iter().enumerate() {
                let site = slot.site.load(Ordering::Acquire);
                if site.is_null() {
                    continue;
                }
                let count = slot.count.load(Ordering::Relaxed);
                let ticks = slot.ticks.load(Ordering::Relaxed);
                let squares = f64::from_bits(slot.squares.load(Ordering::Relaxed));
                let at = (std::ptr::from_ref(table) as usize, i);
                let (count_before, ticks_before, squares_before) = self
                    .seen
                    .insert(at, (count, ticks, squares))
                    .unwrap_or_default();
                let calls = count.wrapping_sub(count_before);
                if calls == 0 {
                    continue;
                }
                let sum = ticks.wrapping_sub(ticks_before) as f64 * millis_per_tick;
                let squared =
                    (squares - squares_before).max(0.0) * millis_per_tick * millis_per_tick;
                let (min, max) = if slot.epoch.load(Ordering::Relaxed) <= closing {
                    (
                        slot.min.load(Ordering::Relaxed) as f64 * millis_per_tick,
                        slot.max.load(Ordering::Relaxed) as f64 * millis_per_tick,
                    )
                } else {
                    // The thread restarted them for the next interval while this one was read:
                    // the interval's mean bounds them.
                    let mean = sum / calls as f64;
                    (mean, mean)
                };
                let figures = Figures {
                    count: calls,
                    sum,
                    squares: squared,
                    min,
                    max,
                };
                // SAFETY: a slot's site is a `&'static Site` stored by `claim`.
                let site: &'static Site = unsafe { &*site };
                self.merge(Key::of_site(site, true, "0"), &figures);
            }
            let others =
                std::mem::take(&mut *table.others.lock().unwrap_or_else(PoisonError::into_inner));
            for (site, code, figures) in others.entries {
                let key = match code {
                    Some(code) => Key::of_site(site, false, &code),
                    None => Key::of_site(site, true, "0"),
                };
                self.merge(key, &figures);
            }
            for (key, figures) in others.lost {
                self.merge(key, &figures);
            }
        }
    }

    /// Closes the interval from `start`, `interval` long: every series counted in it becomes a
    /// `Metric` record in `out`, with the dimensions the portal reads and the cloud role and
    /// instance of `role` and `instance`.
    pub(crate) fn collect(
        &mut self,
        start: SystemTime,
        interval: Duration,
        role: &str,
        instance: &str,
        out: &mut Vec<Record>,
    ) {
        self.harvest();
        for (key, figures) in self.series.drain(..) {
            if figures.count == 0 {
                continue;
            }
            let success = if key.success { "True" } else { "False" };
            let (name, labels) = if key.request {
                (
                    REQUESTS,
                    vec![
                        label("_MS.MetricId", REQUESTS),
                        label("_MS.IsAutocollected", "True"),
                        label("Request.Success", success),
                        label("request/resultCode", &key.code),
                        label("cloud/roleName", role),
                        label("cloud/roleInstance", instance),
                        label("operation/synthetic", "False"),
                    ],
                )
            } else {
                (
                    DEPENDENCIES,
                    vec![
                        label("_MS.MetricId", DEPENDENCIES),
                        label("_MS.IsAutocollected", "True"),
                        label("Dependency.Type", &key.kind),
                        label("Dependency.Success", success),
                        label("dependency/target", &key.target),
                        label("dependency/resultCode", &key.code),
                        label("cloud/roleName", role),
                        label("cloud/roleInstance", instance),
                        label("operation/synthetic", "False"),
                    ],
                )
            };
            let figures = Distribution::new(
                figures.count,
                figures.sum,
                figures.squares,
                figures.min,
                figures.max,
            );
            out.push(Record::Metric(Box::new(MetricRecord::new(
                Arc::new(SeriesId::new(name, labels)),
                MetricKind::Histogram,
                start,
                interval,
                figures,
            ))));
        }
        self.by_key.clear();
        self.by_site.clear();
        self.last_site = None;
        self.millis_per_tick = 0.0;
        if self.over > 0 {
            crate::metric::dropped(std::mem::take(&mut self.over));
        }
    }
}

fn label(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{SpanId, TraceId};

    static QUERY: Site = Site::dependency("load", "SQL").with_target("orders-db");
    static OTHER: Site = Site::inproc("other");

    /// Closes the aggregator's interval: each series' labels and count.
    fn collect(aggregator: &mut Aggregator) -> Vec<(Vec<(String, String)>, u64)> {
        let mut out = Vec::new();
        aggregator.collect(
            SystemTime::now(),
            Duration::from_secs(60),
            "r",
            "i",
            &mut out,
        );
        figures(&out)
    }

    fn figures(out: &[Record]) -> Vec<(Vec<(String, String)>, u64)> {
        out.iter()
            .filter_map(Record::as_metric)
            .map(|m| {
                let labels = m
                    .properties()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                (labels, m.count())
            })
            .collect()
    }

    fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
        &labels.iter().find(|(k, _)| k == key).expect("the label").1
    }

    #[test]
    fn calls_counted_on_threads_join_recorded_spans_by_dimensions() {
        crate::clock::init();
        let mut aggregator = Aggregator::default();
        // A recorded call of the site, and calls of dropped traces on two threads, two failed.
        let mut record = SpanRecord::start(
            &QUERY,
            TraceId::random(),
            SpanId::random(),
            None,
            None,
            100.0,
        );
        record.set_end(crate::clock::now());
        aggregator.observe(&record);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        count(&QUERY, crate::clock::now());
                    }
                    count_failure(&QUERY, crate::clock::now(), Cow::Borrowed("Timeout"));
                    count(&OTHER, crate::clock::now());
                });
            }
        });
        let series = collect(&mut aggregator);
        let ok = series
            .iter()
            .find(|(l, _)| {
                label(l, "Dependency.Type") == "SQL" && label(l, "Dependency.Success") == "True"
            })
            .expect("the SQL successes");
        assert_eq!(ok.1, 2_001);
        assert_eq!(label(&ok.0, "dependency/target"), "orders-db");
        assert_eq!(label(&ok.0, "dependency/resultCode"), "0");
        let failed = series
            .iter()
            .find(|(l, _)| label(l, "Dependency.Success") == "False")
            .expect("the failures");
        assert_eq!(
            (label(&failed.0, "dependency/resultCode"), failed.1),
            ("Timeout", 2)
        );
        let other = series
            .iter()
            .find(|(l, _)| label(l, "Dependency.Type") == "INPROC")
            .expect("the other site");
        assert_eq!(other.1, 2);

        // The next interval starts from nothing: only what was counted since.
        count(&QUERY, crate::clock::now());
        let series = collect(&mut aggregator);
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(series[0].1, 1);
    }

    #[test]
    fn series_over_the_cap_are_counted_as_dropped() {
        let mut aggregator = Aggregator::default();
        for i in 0..MAX_SERIES + 5 {
            let key = Key {
                request: true,
                kind: "".into(),
                target: "".into(),
                success: true,
                code: i.to_string().into(),
            };
            let mut figures = Figures::default();
            figures.add(1.0);
            figures.add(2.0);
            aggregator.merge(key, &figures);
        }
        assert_eq!(aggregator.series.len(), MAX_SERIES);
        assert_eq!(aggregator.over, 10);
    }
}
