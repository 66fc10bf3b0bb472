//! The thread's stack of open spans: what is current on this thread, and the boxes its async
//! spans' records live in. This is the only place that touches the stack's length, the depth
//! the fast path reads, and the spare boxes. A span that ends leaves the stack here for the
//! thread's end of its ring ([`Outbox`], the queue's), which lives beside the stack.

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::hot;
use crate::id::{SpanContext, SpanId, TraceId};
use crate::queue::{self, Outbox};
use crate::record::{OperationName, SpanRecord};
use crate::sampler;

/// One entry of a thread's stack.
pub(crate) enum Frame {
    /// A span being recorded (a sync span's, kept in place).
    Span(SpanRecord),
    /// An async span being recorded, for one poll: its record lives in a box owned by the
    /// future, so that the future stays small and a poll moves a pointer, not the record.
    Boxed(Box<SpanRecord>),
    /// A trace that is not recorded: the root of a trace the sampler dropped, a remote parent
    /// with flag `00`, or such a context carried in. Its children are inert. Its trace id is
    /// known from the parent, or drawn when something first asks for the context (see
    /// [`Local::unsampled_trace_id`]), so that a dropped root pays nothing for it otherwise.
    Unsampled(Option<TraceId>),
    /// A context carried in from elsewhere (a spawned task, a thread, an entered `tracing`
    /// span), not a span itself. Recorded, it is the parent of the spans started under it; not
    /// recorded (only when it carries the `tracestate` its caller sent, else it is an
    /// [`Frame::Unsampled`]), it is as an unsampled frame whose calls pass that state on.
    Parent(CarriedContext),
}

/// A recorded context carried into a task or thread: what its spans take as their parent.
#[derive(Clone, Debug)]
pub(crate) struct CarriedContext {
    pub(crate) ctx: SpanContext,
    /// The operation name the spans under it inherit.
    pub(crate) operation_name: Option<OperationName>,
    /// The `tracestate` outgoing calls under it pass on.
    pub(crate) trace_state: Option<Arc<str>>,
    /// The sampling percentage its trace was kept at, when known (a context carried from a span
    /// of this process); else the one in force is taken.
    pub(crate) sample_rate: Option<f32>,
}

impl Frame {
    /// The span being recorded, if this frame is one: a span of a recorded trace, which spans
    /// started under it take as their parent (not a shadow; see [`Frame::any_record`]).
    #[inline]
    pub(crate) fn record(&self) -> Option<&SpanRecord> {
        self.any_record().filter(|record| !record.is_shadow())
    }

    /// The record this frame holds, a shadow's too (a span of a dropped trace recorded only
    /// to be counted into the standard metrics: spans under it are not recorded, and its
    /// context is not sampled).
    #[inline]
    pub(crate) fn any_record(&self) -> Option<&SpanRecord> {
        match self {
            Frame::Span(record) => Some(record),
            Frame::Boxed(record) => Some(record),
            _ => None,
        }
    }

    /// The record this frame holds, a shadow's too: what the values known at run time are
    /// written into.
    #[inline]
    pub(crate) fn record_mut(&mut self) -> Option<&mut SpanRecord> {
        match self {
            Frame::Span(record) => Some(record),
            Frame::Boxed(record) => Some(record),
            _ => None,
        }
    }

    /// The context of a recorded trace that spans started under this frame take as their
    /// parent's; `None` for an unsampled frame.
    pub(crate) fn context(&self) -> Option<SpanContext> {
        match self {
            Frame::Unsampled(_) => None,
            Frame::Parent(carried) => carried.ctx.is_sampled().then_some(carried.ctx),
            span => span.record().map(SpanRecord::context),
        }
    }

    /// The trace this frame belongs to, when it is known without drawing an id.
    fn trace_id(&self) -> Option<TraceId> {
        match self {
            Frame::Unsampled(id) => *id,
            Frame::Parent(carried) => Some(carried.ctx.trace_id()),
            span => span.any_record().map(SpanRecord::trace_id),
        }
    }

    /// The `tracestate` that came with this frame, if any.
    fn trace_state(&self) -> Option<&Arc<str>> {
        match self {
            Frame::Parent(carried) => carried.trace_state.as_ref(),
            span => span
                .any_record()
                .and_then(SpanRecord::extra)
                .and_then(|extra| extra.trace_state.as_ref()),
        }
    }
}

/// A thread's stack of open spans.
pub(crate) struct Local {
    stack: Vec<Frame>,
    /// The trace id drawn for the unsampled sync root, valid only while the word's
    /// [`ROOT_ID_DRAWN`] bit is set: the bit is cleared whenever that root closes, so that a
    /// later dropped root never takes an earlier one's id.
    root_trace_id: Option<TraceId>,
    /// Boxes of async spans' records that ended on this thread, for the next async spans: a
    /// recorded future allocates nothing once its thread has ended a few.
    #[expect(
        clippy::vec_box,
        reason = "the boxes themselves are handed out and taken back"
    )]
    spare: Vec<Box<MaybeUninit<SpanRecord>>>,
    /// This thread's end of its span ring.
    outbox: Outbox,
    /// The spans of another instrumentation (the `tracing` bridge's) made and entered here.
    #[cfg(feature = "tracing")]
    foreign: ForeignSpans,
}

/// What entering a span of another instrumentation makes current: its context, the operation
/// name its children inherit, when it is recorded its sampling percentage, and the `tracestate`
/// its trace came in with.
#[cfg(feature = "tracing")]
pub(crate) type ForeignEntry = (
    SpanContext,
    Option<OperationName>,
    Option<f32>,
    Option<Arc<str>>,
);

/// A span of another instrumentation: which of its instances (two `tracing` subscribers give
/// out the same ids, on one thread) and its id there.
#[cfg(feature = "tracing")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    /// The instance, by an address that is its own while it lives.
    pub(crate) owner: usize,
    pub(crate) id: u64,
}

/// What a thread keeps of the spans of another instrumentation, which are entered and exited
/// in separate callbacks, beside its stack: one access of thread-local storage reaches both
/// when such a span is entered or exited (they were thread-locals of their own: three accesses
/// for an entry, two for an exit; the `tracing` layer's span took 275-285 ns then, 268-274 ns
/// since, alternating runs). Spans are known by their instance and their id there
/// ([`ForeignKey`]).
#[cfg(feature = "tracing")]
struct ForeignSpans {
    /// The span made last on this thread, until it is first entered: a span is most often
    /// entered on the thread that made it, right after, and this spares that entry a lookup.
    made: Option<(ForeignKey, ForeignEntry)>,
    /// The frames entered spans pushed: span, where, which context.
    entered: Vec<Entered>,
}

/// The frame an entered span of another instrumentation pushed: which context, for which
/// span, where. In this order, with no padding between: the context is copied into place whole
/// (laid out after a gap, it was copied with the gap's bytes, read back in loads wider than
/// the stores that had just written it, which the processor cannot forward).
#[cfg(feature = "tracing")]
#[repr(C)]
struct Entered {
    ctx: SpanContext,
    key: ForeignKey,
    depth: usize,
}

/// At most this many spare boxes per thread.
pub(crate) const SPARE_BOXES: usize = 16;

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local::new())
    };
    /// Whether this is one of census's own threads (the export worker, an exporter's): what is
    /// logged there is never telemetry, so that a failing endpoint's warnings cannot feed
    /// themselves.
    static CENSUS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as one of census's own.
pub(crate) fn mark_census_thread() {
    CENSUS_THREAD.with(|flag| flag.set(true));
}

/// Whether this is one of census's own threads.
#[inline]
pub(crate) fn on_census_thread() -> bool {
    CENSUS_THREAD.try_with(Cell::get).unwrap_or(true)
}

/// Runs `f` on this thread's stack; `None` while the thread is being torn down (or the stack is
/// borrowed already, which census's own code never does).
///
/// `f` runs here, not inside the thread-local's accessor: an accessor holding `f` is too large
/// to be inlined, and what `f` returns would then be written to memory and read back in wider
/// loads than the stores that wrote it (a trace id is one 16-byte field), which the processor
/// cannot forward: a stall of a sixth of a log record's cost.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    let cell = LOCAL.try_with(std::ptr::from_ref).ok()?;
    // SAFETY: `try_with` gave the address of this thread's stack, which is destroyed only when
    // the thread ends, after `f` returns (once its destruction has begun, `try_with` fails).
    let cell = unsafe { &*cell };
    let mut local = cell.try_borrow_mut().ok()?;
    Some(f(&mut local))
}

/// Hands a finished span, stamped with its end already, to the export worker, through this
/// thread's ring; through the shared overflow once the thread's state is gone (a span closed by
/// a thread-local's destructor as the thread ends).
pub(crate) fn submit(record: SpanRecord) {
    with_local_or(record, |local, record| local.submit(record), queue::spill);
}

/// Hands the finished span at `record`, ended at `end`, to the export worker, moving it
/// from where it lies: copied once, straight into this thread's ring, with its end written
/// there (stamped on the record first, it was read back in the copy's wide loads, which
/// waited for its narrow store); through the shared overflow when the ring is full or the
/// thread's state is gone.
///
/// # Safety
///
/// `record` points to a whole record, which its owner no longer reads or drops: it is moved
/// out here.
#[cfg(feature = "tracing")]
pub(crate) unsafe fn submit_ended_from(record: *const SpanRecord, end: u64) {
    // SAFETY: as this function's contract says; the record is copied into the ring's slot,
    // which owns it then, or read out of `record` once when it was not.
    let submitted = with_local(|local| unsafe { local.submit_copied(record, end) });
    if submitted != Some(true) {
        // SAFETY: as above, nothing was copied: the record is read once.
        spill_ended(unsafe { record.read() }, end);
    }
}

/// Hands an async span's finished record, ended at `end`, to the export worker: as
/// [`Local::submit_boxed`] does, or through the shared overflow once the thread's state is gone
/// (a future dropped by a thread-local's destructor as the thread ends).
pub(crate) fn submit_boxed(record: Box<SpanRecord>, end: u64) {
    with_local_or(
        record,
        |local, record| local.submit_boxed(record, end),
        |record| spill_ended(*record, end),
    );
}

/// Puts a finished span, ended at `end`, in the shared overflow: its thread's ring is full, or
/// the thread's state is gone.
fn spill_ended(mut record: SpanRecord, end: u64) {
    record.set_end(end);
    queue::spill(record);
}

/// Gives `value` to `f` on this thread's stack, or to `otherwise` when the stack cannot be had
/// (the thread is being torn down, or the stack is in use).
fn with_local_or<T>(value: T, f: impl FnOnce(&mut Local, T), otherwise: impl FnOnce(T)) {
    let mut given = Some(value);
    with_local(|local| {
        if let Some(value) = given.take() {
            f(local, value);
        }
    });
    if let Some(value) = given {
        otherwise(value);
    }
}

/// The fast path's word; see [`with_word`].
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn word() -> usize {
    with_word(Cell::get)
}

/// The word's bit that says an unsampled sync root is open.
const UNSAMPLED_ROOT: usize = 1;
/// The word's bit that says the open unsampled root's trace id was drawn (`Local::root_trace_id`).
const ROOT_ID_DRAWN: usize = 2;
/// The word's bit that says the calls under the open unsampled root are counted into the
/// standard metrics: decided once, when the root opens, so that the calls under it read the
/// word alone.
const ROOT_COUNTED: usize = 4;
/// The word's bits that belong to the unsampled root.
const ROOT_BITS: usize = UNSAMPLED_ROOT | ROOT_ID_DRAWN | ROOT_COUNTED;
/// How far the depth is shifted in the word.
const DEPTH_SHIFT: u32 = 3;
// The hot cells' mask clears the root's bits and keeps the depth.
const _: () = assert!(hot::CLOSE_ROOT_MASK == !ROOT_BITS);
const _: () = assert!(ROOT_BITS >> DEPTH_SHIFT == 0);

/// The word of an unsampled root with nothing above it, whose calls are counted or not: what
/// [`word`] reads under it until a trace id is drawn for it or a frame is pushed.
pub(crate) const fn unsampled_root_word(counted: bool) -> usize {
    if counted {
        UNSAMPLED_ROOT | ROOT_COUNTED
    } else {
        UNSAMPLED_ROOT
    }
}

/// Whether an unsampled sync root is open.
#[inline]
pub(crate) fn unsampled_root() -> bool {
    word() & UNSAMPLED_ROOT != 0
}

/// Opens or closes the unsampled sync root; closing it forgets the trace id drawn for it and
/// whether its calls are counted.
///
/// Stores are whole words: a one-byte store into the word that the next span then loads whole
/// cannot be forwarded, and that stall would cost more than the rest of a dropped trace's span.
#[inline]
pub(crate) fn set_unsampled_root(open: bool) {
    let bits = usize::from(open) * UNSAMPLED_ROOT;
    with_word(|word| match word.get() {
        current if current < 1 << DEPTH_SHIFT => word.set(bits),
        current => word.set(std::hint::black_box((current & !ROOT_BITS) | bits)),
    });
}

/// Closes a sync unsampled root: its bits cleared, whatever is above it (one read-modify-write
/// of the whole word, the same as [`set_unsampled_root`]`(false)`). The mask is read from
/// the hot cells so that the store stays a whole word's (see [`hot::Hot`]).
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn close_sync_unsampled_root() {
    hot::with(|hot| hot.word.set(hot.word.get() & hot.close_root_mask));
}

/// Opens the unsampled sync root, its calls not counted; the caller saw the word at 0 (nothing
/// current).
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn open_unsampled_root() {
    with_word(|word| word.set(unsampled_root_word(false)));
}

/// Marks the unsampled sync root just opened (nothing above it, no trace id drawn) as one whose
/// calls are counted into the standard metrics. A root is opened uncounted first and marked
/// after, when the standard metrics are on: an uncounted root, the usual one, stores a constant
/// before it reads the switch.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn count_unsampled_root() {
    with_word(|word| word.set(unsampled_root_word(true)));
}

/// Closes the unsampled sync root, handing back the trace id drawn for it if one was: for an
/// async root, which keeps it for its next poll. A root that drew none, is not counted and has
/// nothing above it costs what closing it always did (a counted one reads the clock anyway).
#[inline]
pub(crate) fn close_unsampled_root() -> Option<TraceId> {
    let current = word();
    if current == UNSAMPLED_ROOT {
        with_word(|word| word.set(0));
        return None;
    }
    close_unsampled_root_slow(current)
}

#[cold]
#[inline(never)]
fn close_unsampled_root_slow(current: usize) -> Option<TraceId> {
    let drawn = current & (UNSAMPLED_ROOT | ROOT_ID_DRAWN) == UNSAMPLED_ROOT | ROOT_ID_DRAWN;
    let id = if drawn {
        with_local(|local| local.root_trace_id).flatten()
    } else {
        None
    };
    set_unsampled_root(false);
    id
}

/// The word the fast path reads (among the thread's hot cells, beside the random-number
/// generator's state): the number of frames on the stack, shifted left by three; in
/// the low bit whether a sync span that started a trace the sampler dropped is open, in
/// the next whether a trace id was drawn for it ([`ROOT_ID_DRAWN`]), and in the third whether
/// the calls under it are counted ([`ROOT_COUNTED`]). Such a root takes no frame: spans
/// started while the stack is empty under it are inert. 0: nothing is current; 1, 3, 5 or 7:
/// an unsampled root and nothing above it; 8 and more: frames to look at.
#[cfg_attr(not(debug_assertions), inline(always))]
fn with_word<R>(f: impl FnOnce(&Cell<usize>) -> R) -> R {
    hot::with(|hot| f(&hot.word))
}

#[cfg_attr(not(debug_assertions), inline(always))]
fn set_depth(depth: usize) {
    with_word(|word| {
        word.set((depth << DEPTH_SHIFT) | (word.get() & ROOT_BITS));
    });
}

impl Local {
    const fn new() -> Local {
        Local {
            stack: Vec::new(),
            root_trace_id: None,
            spare: Vec::new(),
            outbox: Outbox::new(),
            #[cfg(feature = "tracing")]
            foreign: ForeignSpans {
                made: None,
                entered: Vec::new(),
            },
        }
    }

    /// The frame on top: what is current.
    #[inline]
    pub(crate) fn top(&self) -> Option<&Frame> {
        self.stack.last()
    }

    /// The frame on top, to change the span it records.
    #[inline]
    pub(crate) fn top_mut(&mut self) -> Option<&mut Frame> {
        self.stack.last_mut()
    }

    /// The frames, bottom first.
    pub(crate) fn frames(&self) -> impl DoubleEndedIterator<Item = &Frame> {
        self.stack.iter()
    }

    /// The trace id of the unsampled trace current here (an unsampled frame on top, or the
    /// unsampled sync root with nothing above it), drawn now if it was not known; `None` when
    /// what is current is not an unsampled trace.
    pub(crate) fn unsampled_trace_id(&mut self) -> Option<TraceId> {
        match self.stack.last_mut() {
            Some(Frame::Unsampled(id)) => Some(*id.get_or_insert_with(sampler::dropped_trace_id)),
            Some(Frame::Parent(carried)) if !carried.ctx.is_sampled() => {
                Some(carried.ctx.trace_id())
            }
            Some(frame) => frame
                .any_record()
                .filter(|record| record.is_shadow())
                .map(SpanRecord::trace_id),
            None => {
                let word = word();
                if word & UNSAMPLED_ROOT == 0 {
                    return None;
                }
                match self.root_trace_id {
                    Some(id) if word & ROOT_ID_DRAWN != 0 => Some(id),
                    _ => {
                        let id = sampler::dropped_trace_id();
                        self.set_root_trace_id(id);
                        Some(id)
                    }
                }
            }
        }
    }

    /// Gives the open unsampled sync root the trace id `id` (one drawn for it on an earlier
    /// poll of its future).
    pub(crate) fn set_root_trace_id(&mut self, id: TraceId) {
        self.root_trace_id = Some(id);
        with_word(|word| word.set(word.get() | ROOT_ID_DRAWN));
    }

    /// The `tracestate` of the trace current here: the nearest frame of that trace with one.
    pub(crate) fn trace_state(&self) -> Option<Arc<str>> {
        let frames = self.stack.iter().rev();
        let trace_id = frames.clone().next()?.trace_id()?;
        frames
            .take_while(|frame| frame.trace_id() == Some(trace_id))
            .find_map(|frame| frame.trace_state().cloned())
    }

    /// An empty box for an async span's record: a spare one, else a new one.
    #[inline]
    pub(crate) fn take_slot(&mut self) -> Box<MaybeUninit<SpanRecord>> {
        self.spare.pop().unwrap_or_else(Box::new_uninit)
    }

    /// Keeps the box of a record that was moved out, for the next async span; frees it when the
    /// thread has enough.
    #[inline]
    pub(crate) fn keep_box(&mut self, slot: Box<MaybeUninit<SpanRecord>>) {
        if self.spare.len() < SPARE_BOXES {
            if self.spare.capacity() == 0 {
                self.spare.reserve_exact(SPARE_BOXES);
            }
            self.spare.push(slot);
        }
    }

    /// Pushes the frame `make` returns, written straight into its slot on the stack rather
    /// than built elsewhere and copied (a record is 96 bytes, and reading back a frame whose
    /// parts were stored separately stalls); returns its depth.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn push_in_place(&mut self, make: impl FnOnce() -> Frame) -> usize {
        let depth = self.stack.len();
        if self.stack.capacity() == depth {
            self.stack.reserve(8);
        }
        // SAFETY: the slot at `depth` is within the capacity just ensured; it is written whole
        // before the length covers it.
        unsafe {
            self.stack.as_mut_ptr().add(depth).write(make());
            self.stack.set_len(depth + 1);
        }
        set_depth(depth + 1);
        depth
    }

    /// Pushes a frame; returns its depth.
    #[inline]
    pub(crate) fn push(&mut self, frame: Frame) -> usize {
        self.push_in_place(|| frame)
    }

    /// Pushes an async span's frame for one poll: the box pointer and the variant; returns its
    /// depth.
    #[inline]
    pub(crate) fn push_boxed(&mut self, record: Box<SpanRecord>) -> usize {
        self.push_in_place(|| Frame::Boxed(record))
    }

    /// Takes back the box of the frame pushed by [`Local::push_boxed`] when it is still on top
    /// at `depth` and is the span `span_id`: the box pointer is read alone, not the whole frame.
    #[inline]
    pub(crate) fn pop_boxed(&mut self, depth: usize, span_id: SpanId) -> Option<Box<SpanRecord>> {
        if depth + 1 != self.stack.len() {
            return None;
        }
        let Some(Frame::Boxed(record)) = self.stack.last() else {
            return None;
        };
        if record.span_id() != span_id {
            return None;
        }
        // SAFETY: the box is read out of the top frame and the length then cut below it, so
        // that nothing is dropped and the box has one owner.
        let record = unsafe {
            let record = std::ptr::read(record);
            self.stack.set_len(depth);
            record
        };
        set_depth(depth);
        Some(record)
    }

    /// Whether the frame on top, at `depth`, is the sync span `span_id`: the common case of a
    /// span that ends, which then goes by [`Local::submit_top`].
    #[inline]
    pub(crate) fn is_top_span(&self, depth: usize, span_id: SpanId) -> bool {
        self.stack.len() == depth + 1
            && matches!(self.stack.last(), Some(Frame::Span(record)) if record.span_id() == span_id)
    }

    /// Ends the sync span on top (see [`Local::is_top_span`]), stamped with `end`: its record
    /// is moved straight from its frame into the next slot of the thread's ring (one copy, no
    /// temporary) and the frame popped.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn submit_top(&mut self, end: u64) {
        let top = self.stack.len() - 1;
        let Some(Frame::Span(record)) = self.stack.last() else {
            unreachable!("the caller checked the top frame with is_top_span");
        };
        let record = std::ptr::from_ref(record);
        // SAFETY: the slot is written whole: the record is copied into it, bitwise, and its end
        // set.
        let moved = unsafe {
            self.outbox.submit_in_place(|slot| {
                std::ptr::copy_nonoverlapping(record, slot.as_mut_ptr(), 1);
                (*slot.as_mut_ptr()).set_end(end);
            })
        };
        if moved {
            // SAFETY: the record was moved out of the top frame; the frame is forgotten (the
            // length cut below it, nothing dropped), so the record has one owner: the slot.
            unsafe { self.stack.set_len(top) };
            set_depth(top);
        } else if let Some(Frame::Span(mut record)) = self.pop() {
            record.set_end(end);
            queue::spill(record);
        }
    }

    /// Copies the record at `record` into the next slot of the thread's ring, bitwise, and
    /// writes its end there; whether it was (`false`: the ring is full, nothing copied).
    ///
    /// # Safety
    ///
    /// `record` points to a whole record, whose owner no longer drops it once this returns
    /// `true`: the slot owns it then.
    #[cfg_attr(not(debug_assertions), inline(always))]
    unsafe fn submit_copied(&mut self, record: *const SpanRecord, end: u64) -> bool {
        // SAFETY: the slot is written whole: the record is copied into it, and its end set.
        unsafe {
            self.outbox.submit_in_place(|slot| {
                std::ptr::copy_nonoverlapping(record, slot.as_mut_ptr(), 1);
                (*slot.as_mut_ptr()).set_end(end);
            })
        }
    }

    /// Ends a span whose record is boxed (an async span's), stamped with `end`: the record is
    /// copied from the box straight into the next slot of the thread's ring, and the box kept
    /// for the thread's next async span.
    pub(crate) fn submit_boxed(&mut self, boxed: Box<SpanRecord>, end: u64) {
        let raw = Box::into_raw(boxed);
        // SAFETY: `raw` holds a whole record; once moved, the box is kept as memory only.
        if unsafe { self.submit_copied(raw, end) } {
            // SAFETY: the record was moved out of the box, bitwise; the box is kept as
            // uninitialised memory (nothing dropped), so the record has one owner: the slot.
            self.keep_box(unsafe { Box::from_raw(raw.cast::<MaybeUninit<SpanRecord>>()) });
        } else {
            // SAFETY: `raw` came from `Box::into_raw` above and nothing was moved out of it.
            spill_ended(*unsafe { Box::from_raw(raw) }, end);
        }
    }

    /// Hands a finished span, stamped with its end already, to the export worker.
    #[inline]
    pub(crate) fn submit(&mut self, record: SpanRecord) {
        self.outbox.submit(record);
    }

    /// Pops the frame on top.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop();
        set_depth(self.stack.len());
        frame
    }

    /// Removes the frame pushed at `depth` for the span `span_id` (`None`: the unsampled frame
    /// of an async root), wherever later frames leaked by misuse left it.
    pub(crate) fn take_frame(&mut self, depth: usize, span_id: Option<SpanId>) -> Option<Frame> {
        let matches = |frame: &Frame| match (frame, span_id) {
            (Frame::Unsampled(_), None) => true,
            (frame, Some(id)) => frame.any_record().is_some_and(|r| r.span_id() == id),
            _ => false,
        };
        let index = if self.stack.get(depth).is_some_and(matches) {
            depth
        } else {
            self.stack.iter().rposition(matches)?
        };
        Some(self.remove(index))
    }

    /// Keeps what entering the span `key` of another instrumentation, just made here, makes
    /// current: for [`Local::enter_made`].
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn made_foreign(&mut self, key: ForeignKey, entry: ForeignEntry) {
        self.made_foreign_with(key, || entry);
    }

    /// [`Local::made_foreign`], with the entry `entry` makes written in place: what was kept
    /// before is let go first, so that the entry need not be made aside and copied in (read
    /// back in wider loads than the stores that just wrote it, which stalls).
    #[cfg(feature = "tracing")]
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn made_foreign_with(
        &mut self,
        key: ForeignKey,
        entry: impl FnOnce() -> ForeignEntry,
    ) {
        self.foreign.made = None;
        self.foreign.made = Some((key, entry()));
    }

    /// Lets go of what was kept for entering the span `key`, closed without being entered.
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn forget_made(&mut self, key: ForeignKey) {
        self.foreign.made.take_if(|(made, _)| *made == key);
    }

    /// Enters the span `key` of another instrumentation when it is the one made here last
    /// (see [`Local::made_foreign`]); whether it was.
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn enter_made(&mut self, key: ForeignKey) -> bool {
        match self.foreign.made.take_if(|(made, _)| *made == key) {
            Some((_, entry)) => {
                self.enter_foreign(key, entry);
                true
            }
            None => false,
        }
    }

    /// Makes the span `key` of another instrumentation current, until [`Local::exit_foreign`]:
    /// its context not sampled makes the spans under it inert.
    #[cfg(feature = "tracing")]
    pub(crate) fn enter_foreign(&mut self, key: ForeignKey, entry: ForeignEntry) {
        let (ctx, operation_name, sample_rate, trace_state) = entry;
        // Noted before the frame is pushed, straight from the entry: noted after, across the
        // push's possible growth, the context was built aside and read back in loads wider than
        // its stores, which the processor cannot forward.
        self.foreign.entered.push(Entered {
            ctx,
            key,
            depth: self.stack.len(),
        });
        // Made in its slot: built aside, its narrow stores were read back by the copy's wide
        // loads, which then waited for them.
        self.push_in_place(|| {
            // Not recorded, it is a context still when it carries a `tracestate` to pass on.
            if ctx.is_sampled() || trace_state.is_some() {
                Frame::Parent(CarriedContext {
                    ctx,
                    operation_name,
                    trace_state,
                    sample_rate,
                })
            } else {
                Frame::Unsampled(Some(ctx.trace_id()))
            }
        });
    }

    /// Undoes the last [`Local::enter_foreign`] of the span `key` on this thread.
    #[cfg(feature = "tracing")]
    #[inline]
    pub(crate) fn exit_foreign(&mut self, key: ForeignKey) {
        let entered = &mut self.foreign.entered;
        if let Some(at) = entered.iter().rposition(|entered| entered.key == key) {
            let Entered { ctx, depth, .. } = entered.remove(at);
            self.take_parent(depth, ctx);
        }
    }

    /// Removes the context frame pushed at `depth` for `ctx` (a `Parent` frame, or the
    /// `Unsampled` one an unsampled context pushes), wherever it is.
    #[cfg(feature = "tracing")]
    fn take_parent(&mut self, depth: usize, ctx: SpanContext) {
        let matches = |frame: &Frame| match frame {
            Frame::Parent(pushed) => pushed.ctx.span_id() == ctx.span_id(),
            Frame::Unsampled(id) => !ctx.is_sampled() && *id == Some(ctx.trace_id()),
            _ => false,
        };
        let index = if self.stack.get(depth).is_some_and(matches) {
            Some(depth)
        } else {
            self.stack.iter().rposition(matches)
        };
        if let Some(index) = index {
            self.remove_at(index);
        }
    }

    /// Removes the frame at `index`, wherever it is.
    pub(crate) fn remove(&mut self, index: usize) -> Frame {
        let frame = self.stack.remove(index);
        set_depth(self.stack.len());
        frame
    }

    /// Drops the frame pushed at `depth`, when the stack still reaches that deep. Most often
    /// it is the frame on top, dropped where it is: taken out, it went through a call to move
    /// nothing after it, and a copy read back in loads wider than its stores.
    pub(crate) fn remove_at(&mut self, depth: usize) {
        if depth + 1 == self.stack.len() {
            self.stack.truncate(depth);
            set_depth(depth);
        } else if depth < self.stack.len() {
            self.remove(depth);
        }
    }

    /// The record of the span `span_id`, pushed at `depth`: looked for there first, then
    /// anywhere on the stack (frames left out of order by a guard moved or leaked).
    pub(crate) fn record_mut(&mut self, depth: usize, span_id: SpanId) -> Option<&mut SpanRecord> {
        let is_it = |frame: &Frame| frame.any_record().is_some_and(|r| r.span_id() == span_id);
        let index = if self.stack.get(depth).is_some_and(is_it) {
            depth
        } else {
            self.stack.iter().rposition(is_it)?
        };
        self.stack[index].record_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_the_fast_path_reads_follows_the_stack() {
        let mut local = Local::new();
        let depth = || word() >> DEPTH_SHIFT;
        local.push(Frame::Unsampled(None));
        local.push(Frame::Unsampled(None));
        assert_eq!(depth(), 2);
        assert!(local.pop().is_some());
        assert_eq!((depth(), local.stack.len()), (1, 1));
        assert!(local.take_frame(0, None).is_some());
        assert_eq!(depth(), 0);
    }

    #[test]
    fn an_unsampled_root_s_trace_id_is_never_taken_by_the_next_root() {
        let trace_id = || with_local(Local::unsampled_trace_id).flatten();
        assert_eq!(trace_id(), None);
        open_unsampled_root();
        let first = trace_id().unwrap();
        assert_eq!(trace_id(), Some(first));
        assert_eq!(word(), UNSAMPLED_ROOT | ROOT_ID_DRAWN);
        assert_eq!(close_unsampled_root(), Some(first));
        assert_eq!(word(), 0);
        open_unsampled_root();
        let second = trace_id().unwrap();
        assert_ne!(first, second);
        // A frame above the root has an id of its own; the root keeps its id under it.
        with_local(|local| local.push(Frame::Unsampled(None)));
        let above = trace_id().unwrap();
        assert_ne!(above, second);
        assert_eq!(trace_id(), Some(above));
        assert!(with_local(Local::pop).flatten().is_some());
        assert_eq!(trace_id(), Some(second));
        set_unsampled_root(false);
        assert_eq!(word(), 0);
        // A root that drew none closes as it always did, counted or not.
        for counted in [false, true] {
            open_unsampled_root();
            if counted {
                count_unsampled_root();
            }
            assert_eq!(close_unsampled_root(), None);
            assert_eq!(word(), 0);
        }
    }

    #[test]
    fn spare_boxes_are_bounded() {
        let mut local = Local::new();
        for _ in 0..3 * SPARE_BOXES {
            local.keep_box(Box::new_uninit());
        }
        assert_eq!(local.spare.len(), SPARE_BOXES);
    }
}
