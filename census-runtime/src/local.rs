//! The thread's stack of open spans: what is current on this thread, and the boxes its async
//! spans' records live in. This is the only place that touches the stack's length, the depth
//! the fast path reads, and the spare boxes.

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::id::{SpanContext, SpanId};
use crate::record::SpanRecord;

/// One entry of a thread's stack.
pub(crate) enum Frame {
    /// A span being recorded (a sync span's, kept in place).
    Span(SpanRecord),
    /// An async span being recorded, for one poll: its record lives in a box owned by the
    /// future, so that the future stays small and a poll moves a pointer, not the record.
    Boxed(Box<SpanRecord>),
    /// The root of a trace the sampler dropped: its children are inert.
    Unsampled,
    /// A context carried in from elsewhere (a spawned task, a thread, an incoming request, an
    /// entered `tracing` span): the parent of the spans started under it, not a span itself,
    /// with the operation name they inherit, if any.
    Parent(SpanContext, Option<Arc<str>>),
}

impl Frame {
    /// The span being recorded, if this frame is one.
    #[inline]
    pub(crate) fn record(&self) -> Option<&SpanRecord> {
        match self {
            Frame::Span(record) => Some(record),
            Frame::Boxed(record) => Some(record),
            _ => None,
        }
    }

    /// The span being recorded, if this frame is one.
    #[inline]
    pub(crate) fn record_mut(&mut self) -> Option<&mut SpanRecord> {
        match self {
            Frame::Span(record) => Some(record),
            Frame::Boxed(record) => Some(record),
            _ => None,
        }
    }

    /// The context spans started under this frame take as their parent's.
    pub(crate) fn context(&self) -> Option<SpanContext> {
        match self {
            Frame::Unsampled => None,
            Frame::Parent(ctx, _) => Some(*ctx),
            span => span.record().map(SpanRecord::context),
        }
    }
}

/// A thread's stack of open spans.
pub(crate) struct Local {
    stack: Vec<Frame>,
    /// Boxes of async spans' records that ended on this thread, for the next async spans: a
    /// recorded future allocates nothing once its thread has ended a few.
    #[expect(
        clippy::vec_box,
        reason = "the boxes themselves are handed out and taken back"
    )]
    spare: Vec<Box<MaybeUninit<SpanRecord>>>,
}

/// At most this many spare boxes per thread.
pub(crate) const SPARE_BOXES: usize = 16;

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { stack: Vec::new(), spare: Vec::new() })
    };
    /// The word the fast path reads: the number of frames on the stack, shifted left by one,
    /// and in the low bit whether a sync span that started a trace the sampler dropped is open.
    /// Such a root takes no frame: spans started while the stack is empty under it are inert.
    /// 0: nothing is current; 1: an unsampled root and nothing above it; more: frames to look
    /// at.
    static WORD: Cell<usize> = const { Cell::new(0) };
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
#[inline]
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL
        .try_with(|local| local.try_borrow_mut().ok().map(|mut local| f(&mut local)))
        .ok()
        .flatten()
}

/// The fast path's word; see `WORD`.
#[inline(always)]
pub(crate) fn word() -> usize {
    WORD.with(Cell::get)
}

/// Whether an unsampled sync root is open.
#[inline]
pub(crate) fn unsampled_root() -> bool {
    word() & 1 == 1
}

/// Opens or closes the unsampled sync root.
///
/// Stores are whole words: a one-byte store into the word that the next span then loads whole
/// cannot be forwarded, and that stall would cost more than the rest of a dropped trace's span.
#[inline]
pub(crate) fn set_unsampled_root(open: bool) {
    WORD.with(|word| match (word.get(), open) {
        (0, true) => word.set(1),
        (1, false) => word.set(0),
        (current, open) => word.set(std::hint::black_box((current & !1) | usize::from(open))),
    });
}

/// Opens the unsampled sync root; the caller saw the word at 0 (nothing current).
#[inline(always)]
pub(crate) fn open_unsampled_root() {
    WORD.with(|word| word.set(1));
}

#[inline]
fn set_depth(depth: usize) {
    WORD.with(|word| word.set((depth << 1) | (word.get() & 1)));
}

impl Local {
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

    /// Whether nothing is current because an unsampled sync root is open with nothing above it.
    #[inline]
    pub(crate) fn in_unsampled_root(&self) -> bool {
        self.stack.is_empty() && unsampled_root()
    }

    /// An empty box for an async span's record: a spare one, else a new one.
    #[inline]
    pub(crate) fn take_slot(&mut self) -> Box<MaybeUninit<SpanRecord>> {
        self.spare.pop().unwrap_or_else(Box::new_uninit)
    }

    /// `record` in a box: a spare one, else a new one.
    #[inline]
    pub(crate) fn boxed(&mut self, record: SpanRecord) -> Box<SpanRecord> {
        Box::write(self.take_slot(), record)
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
    #[inline(always)]
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
    /// span that ends, which then goes by [`Local::move_top_into`].
    #[inline]
    pub(crate) fn is_top_span(&self, depth: usize, span_id: SpanId) -> bool {
        self.stack.len() == depth + 1
            && matches!(self.stack.last(), Some(Frame::Span(record)) if record.span_id() == span_id)
    }

    /// Moves the record of the sync span on top (see [`Local::is_top_span`]) into `slot`,
    /// stamped with `end`, and pops its frame: one copy, no temporary.
    #[inline(always)]
    pub(crate) fn move_top_into(&mut self, slot: &mut MaybeUninit<SpanRecord>, end: u64) {
        let top = self.stack.len() - 1;
        let Some(Frame::Span(record)) = self.stack.last() else {
            unreachable!("the caller checked the top frame with is_top_span");
        };
        // SAFETY: the record is moved, bitwise, from the top frame into the slot; the frame is
        // then forgotten (the length cut below it, nothing dropped), so the record has one
        // owner: the slot.
        unsafe {
            std::ptr::copy_nonoverlapping(std::ptr::from_ref(record), slot.as_mut_ptr(), 1);
            (*slot.as_mut_ptr()).set_end(end);
            self.stack.set_len(top);
        }
        set_depth(top);
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
            (Frame::Unsampled, None) => true,
            (frame, Some(id)) => frame.record().is_some_and(|r| r.span_id() == id),
            _ => false,
        };
        let index = if self.stack.get(depth).is_some_and(matches) {
            depth
        } else {
            self.stack.iter().rposition(matches)?
        };
        Some(self.remove(index))
    }

    /// Removes the context frame pushed at `depth` for `ctx` (a `Parent` frame, or the
    /// `Unsampled` one an unsampled context pushes), wherever it is.
    pub(crate) fn take_parent(&mut self, depth: usize, ctx: SpanContext) {
        let matches = |frame: &Frame| match frame {
            Frame::Parent(pushed, _) => pushed.span_id() == ctx.span_id(),
            Frame::Unsampled => !ctx.is_sampled(),
            _ => false,
        };
        let index = if self.stack.get(depth).is_some_and(matches) {
            Some(depth)
        } else {
            self.stack.iter().rposition(matches)
        };
        if let Some(index) = index {
            self.remove(index);
        }
    }

    /// Removes the frame at `index`, wherever it is.
    pub(crate) fn remove(&mut self, index: usize) -> Frame {
        let frame = self.stack.remove(index);
        set_depth(self.stack.len());
        frame
    }

    /// Removes the frame pushed at `depth`, when the stack still reaches that deep.
    pub(crate) fn remove_at(&mut self, depth: usize) {
        if self.stack.len() > depth {
            self.remove(depth);
        }
    }

    /// The record of the span `span_id`, pushed at `depth`: looked for there first, then
    /// anywhere on the stack (frames left out of order by a guard moved or leaked).
    pub(crate) fn record_mut(&mut self, depth: usize, span_id: SpanId) -> Option<&mut SpanRecord> {
        let is_it = |frame: &Frame| frame.record().is_some_and(|r| r.span_id() == span_id);
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
        let mut local = Local {
            stack: Vec::new(),
            spare: Vec::new(),
        };
        let depth = || word() >> 1;
        local.push(Frame::Unsampled);
        local.push(Frame::Unsampled);
        assert_eq!(depth(), 2);
        assert!(local.pop().is_some());
        assert_eq!((depth(), local.stack.len()), (1, 1));
        assert!(local.take_frame(0, None).is_some());
        assert_eq!(depth(), 0);
    }

    #[test]
    fn spare_boxes_are_bounded() {
        let mut local = Local {
            stack: Vec::new(),
            spare: Vec::new(),
        };
        for _ in 0..3 * SPARE_BOXES {
            local.keep_box(Box::new_uninit());
        }
        assert_eq!(local.spare.len(), SPARE_BOXES);
    }
}
