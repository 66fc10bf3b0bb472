//! How finished records reach the export worker: lock-free rings per thread, a bounded shared
//! overflow for bursts, waking the worker, and draining it all on the worker's side.
//!
//! Handing a span over costs no lock, allocation or syscall: the thread writes it into its own
//! ring, which the worker drains in the background. The worker is woken early when a ring is
//! half full; a full ring spills into the shared overflow; a full overflow drops the record and
//! counts it. Spans have a ring of their own, typed for them, so that the span path moves a
//! span and nothing else; log records and events go through a second ring of [`Record`]s.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use crate::diagnostics::COUNTERS;
use crate::record::{Item, Record, SpanRecord};

/// Spans per thread ring. A thread's ring starts small and doubles, up to `MAX_RING`, each time
/// it is found half full (the thread makes spans faster than the worker drains them between two
/// wakes): a thread that makes a few spans holds 96 KiB, a busy one at most 768 KiB, and a busy
/// thread with a large ring wakes the worker less often and shares fewer cache lines with it
/// while it drains.
const FIRST_RING: usize = 1024;
const MAX_RING: usize = 8192;

/// The spans the shared overflow holds at most, unless the pipeline says otherwise.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

// Each static below is written by the threads that record and by the worker: each on a cache
// line of its own, away from each other and from the flags the hot path reads.

/// The worker's ends of every thread's ring.
static RINGS: CachePadded<Mutex<Vec<rtrb::Consumer<SpanRecord>>>> =
    CachePadded::new(Mutex::new(Vec::new()));
/// The worker's ends of every thread's ring of log records and events.
static ITEM_RINGS: CachePadded<Mutex<Vec<rtrb::Consumer<Item>>>> =
    CachePadded::new(Mutex::new(Vec::new()));
/// Log records and events per thread ring, at first: it doubles, as the span ring does, up to
/// `MAX_ITEM_RING` while the thread writes faster than the worker drains.
const FIRST_ITEM_RING: usize = 256;
const MAX_ITEM_RING: usize = 4096;
/// Where records go when a thread's ring is full (a burst faster than the worker wakes up):
/// shared, behind a lock, bounded by `OVERFLOW_CAPACITY`. Beyond that, records are dropped.
static OVERFLOW: CachePadded<Mutex<Vec<Record>>> = CachePadded::new(Mutex::new(Vec::new()));
/// The same for log records and events, kept as they were written: the worker boxes them, so
/// that spilling one allocates nothing on the thread that wrote it (a box allocated there and
/// freed on the worker makes both wait on the allocator). `OVERFLOW_LEN` counts both.
static ITEM_OVERFLOW: CachePadded<Mutex<Vec<Item>>> = CachePadded::new(Mutex::new(Vec::new()));
static OVERFLOW_LEN: CachePadded<AtomicUsize> = CachePadded::new(AtomicUsize::new(0));
static OVERFLOW_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_CAPACITY);
/// Set when a thread woke the worker early; cleared by the worker.
static WAKE_REQUESTED: CachePadded<AtomicBool> = CachePadded::new(AtomicBool::new(false));
static WORKER: CachePadded<Mutex<Option<Thread>>> = CachePadded::new(Mutex::new(None));

/// A thread's end of its span ring, made on its first span. It lives in the thread's
/// [`Local`](crate::local::Local), beside the stack whose records it takes, so that ending a
/// span touches one thread-local.
pub(crate) struct Outbox {
    ring: Option<rtrb::Producer<SpanRecord>>,
    /// Spans put in the ring, to look at its fill now and then.
    pushed: u32,
}

/// This thread's end of its ring of log records and events, made on its first one.
struct ItemOutbox {
    ring: Option<rtrb::Producer<Item>>,
    pushed: u32,
}

thread_local! {
    static ITEMS: RefCell<ItemOutbox> = const {
        RefCell::new(ItemOutbox { ring: None, pushed: 0 })
    };
}

impl Outbox {
    /// An outbox with no ring yet.
    pub(crate) const fn new() -> Outbox {
        Outbox {
            ring: None,
            pushed: 0,
        }
    }

    #[inline]
    fn ring(&mut self) -> &mut rtrb::Producer<SpanRecord> {
        match &mut self.ring {
            Some(ring) => ring,
            ring @ None => ring.insert(new_ring(FIRST_RING)),
        }
    }

    /// Counts a span put in the ring; now and then looks at how full the ring is.
    #[inline]
    fn counted(&mut self) {
        // Looking at how full the ring is reads the worker's side of it: every 64 spans only.
        self.pushed = self.pushed.wrapping_add(1);
        if self.pushed.is_multiple_of(64) {
            self.check_fill();
        }
    }

    #[cold]
    fn check_fill(&mut self) {
        let Some(producer) = self.ring.as_ref() else {
            return;
        };
        let capacity = producer.buffer().capacity();
        if producer.slots() < capacity / 2 {
            request_wake();
            if capacity < MAX_RING {
                // The old ring is abandoned: the worker drains what it holds, then forgets it.
                self.ring = Some(new_ring(capacity * 2));
            }
        }
    }

    /// Hands a finished span, stamped with its end already, to the export worker.
    #[inline]
    pub(crate) fn submit(&mut self, record: SpanRecord) {
        match self.ring().push(record) {
            Ok(()) => self.counted(),
            Err(rtrb::PushError::Full(record)) => spill(record),
        }
    }

    /// Lets `write` initialise the next free slot of the ring, then hands it to the worker;
    /// `false`, without calling `write`, when the ring is full (the caller then spills).
    ///
    /// # Safety
    ///
    /// `write` must initialise the slot it is given.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) unsafe fn submit_in_place(
        &mut self,
        write: impl FnOnce(&mut MaybeUninit<SpanRecord>),
    ) -> bool {
        let Ok(mut chunk) = self.ring().write_chunk_uninit(1) else {
            return false;
        };
        write(&mut chunk.as_mut_slices().0[0]);
        // SAFETY: the chunk's one slot was initialised by `write` (this function's contract).
        unsafe { chunk.commit_all() };
        self.counted();
        true
    }
}

/// Hands a log record or an event to the export worker, through this thread's second ring.
pub(crate) fn submit_item(item: Item) {
    submit_item_with(|| item, |_| {});
}

/// Hands the log record or event `make` returns to the export worker, written straight into
/// the next slot of this thread's second ring, then completed there by `fill` (a log record's
/// message is formatted in place): a log record is 256 bytes, and built elsewhere and moved
/// it would be copied twice more.
#[inline]
pub(crate) fn submit_item_with(make: impl FnOnce() -> Item, fill: impl FnOnce(&mut Item)) {
    let mut given = Some((make, fill));
    let _ = ITEMS.try_with(|items| {
        let Ok(mut items) = items.try_borrow_mut() else {
            return;
        };
        let Some((make, fill)) = given.take() else {
            return;
        };
        let ring = match &mut items.ring {
            Some(ring) => ring,
            ring @ None => ring.insert(new_item_ring(FIRST_ITEM_RING)),
        };
        // One place where the item is made and filled, the ring's slot or else this frame: each
        // closure is then called once and inlined, and the item is built where it stays.
        let mut full = MaybeUninit::uninit();
        let mut chunk = ring.write_chunk_uninit(1).ok();
        let slot = match &mut chunk {
            Some(chunk) => &mut chunk.as_mut_slices().0[0],
            None => &mut full,
        };
        fill(slot.write(make()));
        let Some(chunk) = chunk else {
            // SAFETY: `full` was the slot, written just above.
            spill(unsafe { full.assume_init() });
            return;
        };
        // SAFETY: the chunk's one slot was just written.
        unsafe { chunk.commit_all() };
        // Every 16 records, a look at the ring: half full wakes the worker early and makes the
        // next ring twice as large.
        items.pushed = items.pushed.wrapping_add(1);
        if items.pushed.is_multiple_of(16)
            && let Some(ring) = &items.ring
            && ring.slots() < ring.buffer().capacity() / 2
        {
            request_wake();
            let capacity = ring.buffer().capacity();
            if capacity < MAX_ITEM_RING {
                items.ring = Some(new_item_ring(capacity * 2));
            }
        }
    });
    // The thread's ring is in use (a record written while another is formatted in its slot,
    // by a `Display` that logs) or gone (the thread is ending): the item goes to the shared
    // overflow, as when the ring is full.
    if let Some((make, fill)) = given {
        spill_made(make, fill);
    }
}

#[cold]
#[inline(never)]
fn spill_made(make: impl FnOnce() -> Item, fill: impl FnOnce(&mut Item)) {
    let mut item = make();
    fill(&mut item);
    spill(item);
}

fn request_wake() {
    // A load first: under a flood every span comes here, and a swap on the shared flag would
    // bounce its cache line between the cores for nothing once the worker is awake.
    if !WAKE_REQUESTED.load(Ordering::Relaxed) && !WAKE_REQUESTED.swap(true, Ordering::AcqRel) {
        wake_worker();
    }
}

/// Puts a record whose thread ring is full in the shared overflow, or drops it (counted) when
/// that is full too: a full overflow is seen before the record is converted or moved.
#[cold]
#[inline(never)]
pub(crate) fn spill(record: impl Spilled) {
    request_wake();
    // A full overflow is seen with a load; the span is then dropped (and counted) without
    // touching the shared length.
    let capacity = OVERFLOW_CAPACITY.load(Ordering::Relaxed);
    if OVERFLOW_LEN.load(Ordering::Relaxed) >= capacity {
        dropped(&record);
        return;
    }
    if OVERFLOW_LEN.fetch_add(1, Ordering::AcqRel) >= capacity {
        OVERFLOW_LEN.fetch_sub(1, Ordering::AcqRel);
        dropped(&record);
        return;
    }
    record.overflow();
}

/// What goes to the shared overflow: a span, a log record or an event.
pub(crate) trait Spilled {
    /// Joins its overflow; its place there is counted in `OVERFLOW_LEN` already.
    fn overflow(self);

    /// Dropped at the full queue: a span is still counted into the standard metrics.
    fn lost(&self) {}
}

impl Spilled for SpanRecord {
    fn overflow(self) {
        OVERFLOW
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Record::Span(self));
    }

    fn lost(&self) {
        crate::standard::count_lost(self);
    }
}

impl Spilled for Item {
    fn overflow(self) {
        ITEM_OVERFLOW
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self);
    }
}

/// A record dropped at the full queue: counted, and told so.
#[cold]
fn dropped(record: &impl Spilled) {
    COUNTERS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
    record.lost();
}

#[cold]
fn new_item_ring(capacity: usize) -> rtrb::Producer<Item> {
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    ITEM_RINGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(consumer);
    producer
}

#[cold]
fn new_ring(capacity: usize) -> rtrb::Producer<SpanRecord> {
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    RINGS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(consumer);
    producer
}

// ---------------------------------------------------------------------------------------------
// The worker's side.

/// Bounds the shared overflow.
pub(crate) fn set_capacity(capacity: usize) {
    OVERFLOW_CAPACITY.store(capacity, Ordering::Relaxed);
}

/// The thread woken when spans wait: the export worker's, or none.
pub(crate) fn set_worker(thread: Option<Thread>) {
    if let Ok(mut worker) = WORKER.lock() {
        *worker = thread;
    }
}

/// Wakes the export worker.
pub(crate) fn wake_worker() {
    if let Ok(worker) = WORKER.lock()
        && let Some(thread) = worker.as_ref()
    {
        thread.unpark();
    }
}

/// The worker is about to wait: the next early wake must unpark it again.
pub(crate) fn rearm_wake() {
    WAKE_REQUESTED.store(false, Ordering::Release);
}

/// Takes finished records out of every thread's rings and the overflow into `into`: every span,
/// and at most `most_items` log records and events, read from the threads' rings in turn (the
/// rings after the one a drain cut short go first in the next), then from the overflow. The
/// worker boxes each one, and keeps a bounded number of boxes for reuse: a drain of more than
/// that allocated and freed tens of thousands of boxes, page faults included, on every pass
/// under a stream of log records. Forgets the rings of threads that have exited once they are
/// empty. Returns how many it took.
pub(crate) fn drain(into: &mut Vec<Record>, most_items: usize) -> usize {
    let before = into.len();
    let mut rings = RINGS.lock().unwrap_or_else(|p| p.into_inner());
    for ring in rings.iter_mut() {
        let ready = ring.slots();
        if ready > 0
            && let Ok(chunk) = ring.read_chunk(ready)
        {
            into.extend(chunk.into_iter().map(Record::Span));
        }
    }
    rings.retain(|ring| !(ring.is_abandoned() && ring.is_empty()));
    drop(rings);
    let mut left = most_items;
    let mut rings = ITEM_RINGS.lock().unwrap_or_else(|p| p.into_inner());
    for index in 0..rings.len() {
        let ring = &mut rings[index];
        let ready = ring.slots().min(left);
        if ready > 0
            && let Ok(chunk) = ring.read_chunk(ready)
        {
            into.extend(chunk.into_iter().map(Record::from));
            left -= ready;
        }
        if left == 0 {
            // The rings after this one go first next time.
            rings.rotate_left(index + 1);
            break;
        }
    }
    rings.retain(|ring| !(ring.is_abandoned() && ring.is_empty()));
    drop(rings);
    if OVERFLOW_LEN.load(Ordering::Acquire) > 0 {
        let mut overflow = OVERFLOW.lock().unwrap_or_else(|p| p.into_inner());
        OVERFLOW_LEN.fetch_sub(overflow.len(), Ordering::AcqRel);
        into.append(&mut overflow);
        drop(overflow);
        let mut items = ITEM_OVERFLOW.lock().unwrap_or_else(|p| p.into_inner());
        let taken = items.len().min(left);
        OVERFLOW_LEN.fetch_sub(taken, Ordering::AcqRel);
        into.extend(items.drain(..taken).map(Record::from));
    }
    into.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Site;

    static SITE: Site = Site::inproc("ring");

    fn record() -> SpanRecord {
        let mut record = SpanRecord::test_root(&SITE);
        record.set_end(2);
        record
    }

    #[test]
    fn a_busy_thread_s_ring_grows_instead_of_spilling() {
        std::thread::spawn(|| {
            let mut outbox = Outbox::new();
            outbox.submit(record());
            let first = outbox.ring.as_ref().map(|r| r.buffer().capacity());
            assert_eq!(first, Some(FIRST_RING));
            let spilled = OVERFLOW_LEN.load(Ordering::Relaxed);
            // No worker drains here: each ring fills until it is found half full and replaced.
            for _ in 0..10_000 {
                outbox.submit(record());
            }
            let ring = outbox.ring.as_ref().expect("a ring");
            let (capacity, free) = (ring.buffer().capacity(), ring.slots());
            assert_eq!(capacity, MAX_RING);
            assert_eq!(
                OVERFLOW_LEN.load(Ordering::Relaxed),
                spilled,
                "nothing went to the shared overflow"
            );
            // The abandoned rings still hold their spans for the worker.
            let held: usize = RINGS
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.buffer().capacity() < MAX_RING)
                .map(rtrb::Consumer::slots)
                .sum();
            assert_eq!(held + (MAX_RING - free), 10_001);
        })
        .join()
        .unwrap();
    }

    fn event(name: &'static str) -> Item {
        Item::Event(crate::record::EventRecord::new(
            name.into(),
            crate::record::Correlation::default(),
            Box::default(),
            Vec::new(),
        ))
    }

    fn items(records: &[Record]) -> usize {
        records
            .iter()
            .filter(|r| matches!(r, Record::Event(_)))
            .count()
    }

    /// The names of the events among `records`, each once.
    fn names(records: &[Record]) -> Vec<&str> {
        let mut names: Vec<&str> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(event) => Some(event.name()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    #[test]
    fn a_drain_takes_at_most_its_share_of_items_from_the_rings_in_turn_and_leaves_the_rest() {
        // Two threads' items, 300 each, 600 in all (each thread's in two rings: its first,
        // found half full, and the larger one that took over).
        for name in ["first thread", "second thread"] {
            std::thread::spawn(move || {
                for _ in 0..300 {
                    submit_item(event(name));
                }
            })
            .join()
            .unwrap();
        }
        let mut first = Vec::new();
        drain(&mut first, 250);
        assert_eq!(items(&first), 250, "cut at the share");
        assert_eq!(names(&first).len(), 1, "one ring's: {:?}", names(&first));
        let mut second = Vec::new();
        drain(&mut second, 250);
        assert_eq!(items(&second), 250, "cut at the share");
        assert_eq!(names(&second).len(), 1, "one ring's: {:?}", names(&second));
        assert_ne!(names(&second), names(&first), "the other ring's turn");
        let mut rest = Vec::new();
        drain(&mut rest, usize::MAX);
        assert_eq!(items(&rest), 100, "the rest, nothing lost");
    }
}
