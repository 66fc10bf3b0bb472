//! Trace and span ids, the current context of each thread, and carrying it into tasks.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::mem::MaybeUninit;
use std::num::NonZero;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::span::SpanRecord;

/// A 128-bit trace id: the `operation_Id` that ties together everything one operation did.
///
/// Shown as 32 lowercase hex digits, as Application Insights and W3C Trace Context write it.
///
/// ```
/// # use census_runtime::TraceId;
/// let id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
/// assert_eq!(id.to_string(), "0af7651916cd43dd8448eb211c80319c");
/// assert!(TraceId::from_hex("00000000000000000000000000000000").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZero<u128>);

/// A 64-bit span id: the `id` of one telemetry item, shown as 16 lowercase hex digits.
///
/// ```
/// # use census_runtime::SpanId;
/// let id = SpanId::from_hex("b7ad6b7169203331").unwrap();
/// assert_eq!(format!("{id}"), "b7ad6b7169203331");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZero<u64>);

macro_rules! hex_id {
    ($ty:ident, $int:ty, $digits:expr) => {
        impl $ty {
            /// Builds an id from its integer value; zero is not a valid id.
            pub const fn new(value: $int) -> Option<Self> {
                match NonZero::new(value) {
                    Some(value) => Some($ty(value)),
                    None => None,
                }
            }

            /// The integer value.
            pub const fn to_int(self) -> $int {
                self.0.get()
            }

            /// An id from a random draw, zero mapped to one.
            #[inline]
            fn from_draw(value: $int) -> Self {
                $ty(NonZero::new(value).unwrap_or(NonZero::<$int>::MIN))
            }

            /// Parses exactly the lowercase or uppercase hex form; rejects zero and any other length.
            pub fn from_hex(hex: &str) -> Option<Self> {
                if hex.len() != $digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                <$int>::from_str_radix(hex, 16).ok().and_then(Self::new)
            }

            /// Writes the lowercase hex form into `out`, with no allocation.
            pub fn write_hex(self, out: &mut [u8; $digits]) {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut value = self.0.get();
                for slot in out.iter_mut().rev() {
                    *slot = HEX[(value & 0xf) as usize];
                    value >>= 4;
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; $digits];
                self.write_hex(&mut buf);
                // The buffer holds ASCII hex digits only.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }
    };
}

hex_id!(TraceId, u128, 32);
hex_id!(SpanId, u64, 16);

impl TraceId {
    /// A fresh random trace id.
    pub fn random() -> Self {
        let high = u128::from(next_random());
        let low = u128::from(next_random());
        TraceId::from_draw((high << 64) | low)
    }
}

impl SpanId {
    /// A fresh random span id.
    pub fn random() -> Self {
        SpanId::from_draw(next_random())
    }
}

/// The identity of a span as other code and other services see it: what `traceparent` carries.
///
/// ```
/// # use census_runtime::{SpanContext, SpanId, TraceId};
/// let ctx = SpanContext::new(TraceId::random(), SpanId::random(), true);
/// assert!(ctx.is_sampled());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SpanContext {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

impl SpanContext {
    /// A context from its parts.
    pub const fn new(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Self {
        SpanContext {
            trace_id,
            span_id,
            sampled,
        }
    }

    /// The trace (operation) id.
    pub const fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span id.
    pub const fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Whether the trace is recorded.
    pub const fn is_sampled(&self) -> bool {
        self.sampled
    }
}

// ---------------------------------------------------------------------------------------------
// Random ids: a per-thread wyrand generator, seeded once per thread from the OS-seeded hasher.

/// The per-thread state the fast path touches, in one thread-local so that it is found once:
/// the random generator and the `word` (see [`hot`]).
struct Hot {
    rng: Cell<u64>,
    /// The number of frames on `LOCAL`'s stack, shifted left by one, and in the low bit whether
    /// a sync span that started a trace the sampler dropped is open. Such a root takes no frame:
    /// spans started while the stack is empty under it are inert. 0: nothing is current;
    /// 1: an unsampled root and nothing above it; more: frames to look at.
    word: Cell<usize>,
}

thread_local! {
    static HOT: Hot = const { Hot { rng: Cell::new(0), word: Cell::new(0) } };
}

fn seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(crate::clock::now());
    hasher.finish() | 1
}

#[cold]
#[inline(never)]
fn seed_cold() -> u64 {
    seed()
}

#[inline(always)]
pub(crate) fn next_random() -> u64 {
    HOT.with(|hot| {
        let state = &hot.rng;
        let mut s = state.get();
        if s == 0 {
            s = seed_cold();
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

// ---------------------------------------------------------------------------------------------
// The per-thread stack of what is current.

/// One entry of a thread's context stack.
pub(crate) enum Frame {
    /// A span being recorded (a sync span's, kept in place).
    Span(SpanRecord),
    /// An async span being recorded, for one poll: its record lives in a box owned by the
    /// future, so that the future stays small and a poll moves a pointer, not the record.
    Boxed(Box<SpanRecord>),
    /// The root of a trace the sampler dropped: its children are inert.
    Unsampled,
    /// A context carried in from elsewhere (a spawned task, a thread, an incoming request):
    /// the parent of the spans started under it, not a span itself.
    Parent(SpanContext),
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

    pub(crate) fn context(&self) -> Option<SpanContext> {
        match self {
            Frame::Span(record) => Some(SpanContext::new(record.trace_id, record.span_id, true)),
            Frame::Boxed(record) => Some(SpanContext::new(record.trace_id, record.span_id, true)),
            Frame::Unsampled => None,
            Frame::Parent(ctx) => Some(*ctx),
        }
    }
}

pub(crate) struct Local {
    pub(crate) stack: Vec<Frame>,
    /// This thread's end of its ring of finished spans; the export worker holds the other end.
    /// Made on the thread's first span.
    pub(crate) ring: Option<rtrb::Producer<SpanRecord>>,
    /// Spans put in the ring, to look at its fill now and then.
    pub(crate) pushed: u32,
    /// Boxes of async spans' records that ended on this thread, for the next async spans: a
    /// recorded future allocates nothing once its thread has ended a few.
    #[expect(
        clippy::vec_box,
        reason = "the boxes themselves are handed out and taken back"
    )]
    pub(crate) spare: Vec<Box<MaybeUninit<SpanRecord>>>,
}

/// At most this many spare boxes per thread.
pub(crate) const SPARE_BOXES: usize = 16;

/// Keeps the box of a record that was moved out, for the next async span; frees it when the
/// thread has enough.
#[inline]
#[expect(
    clippy::vec_box,
    reason = "the boxes themselves are handed out and taken back"
)]
pub(crate) fn keep_box(
    spare: &mut Vec<Box<MaybeUninit<SpanRecord>>>,
    slot: Box<MaybeUninit<SpanRecord>>,
) {
    if spare.len() < SPARE_BOXES {
        if spare.capacity() == 0 {
            spare.reserve_exact(SPARE_BOXES);
        }
        spare.push(slot);
    }
}

thread_local! {
    pub(crate) static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { stack: Vec::new(), ring: None, pushed: 0, spare: Vec::new() })
    };

}

/// The fast path's word; see `Hot::word`.
#[inline]
pub(crate) fn hot() -> usize {
    HOT.with(|hot| hot.word.get())
}

/// How many frames the stack holds.
#[inline]
pub(crate) fn depth() -> usize {
    hot() >> 1
}

/// Whether an unsampled sync root is open.
#[inline]
pub(crate) fn unsampled_root() -> bool {
    hot() & 1 == 1
}

/// Opens or closes the unsampled sync root.
///
/// Stores are whole words: a one-byte store into the word that the next span then loads whole
/// cannot be forwarded, and that stall would cost more than the rest of a dropped trace's span.
#[inline]
pub(crate) fn set_unsampled_root(open: bool) {
    HOT.with(|hot| match (hot.word.get(), open) {
        (0, true) => hot.word.set(1),
        (1, false) => hot.word.set(0),
        (word, open) => hot
            .word
            .set(std::hint::black_box((word & !1) | usize::from(open))),
    });
}

/// Opens the unsampled sync root; the caller saw the word at 0 (nothing current).
#[inline(always)]
pub(crate) fn open_unsampled_root() {
    HOT.with(|hot| hot.word.set(1));
}

#[inline]
pub(crate) fn set_depth(depth: usize) {
    HOT.with(|hot| hot.word.set((depth << 1) | (hot.word.get() & 1)));
}

impl Local {
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
        if record.span_id != span_id {
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

    /// Pushes a frame; returns its depth.
    #[inline]
    pub(crate) fn push(&mut self, frame: Frame) -> usize {
        self.push_in_place(|| frame)
    }

    /// Pops the top frame.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop();
        set_depth(self.stack.len());
        frame
    }

    /// Removes the frame at `index`, wherever it is.
    pub(crate) fn remove(&mut self, index: usize) -> Frame {
        let frame = self.stack.remove(index);
        set_depth(self.stack.len());
        frame
    }

    /// The record of the span `span_id`, pushed at `depth`: looked for there first, then
    /// anywhere on the stack (frames left out of order by a guard moved or leaked).
    pub(crate) fn record_mut(&mut self, depth: usize, span_id: SpanId) -> Option<&mut SpanRecord> {
        let is_it = |frame: &Frame| frame.record().is_some_and(|r| r.span_id == span_id);
        let index = if self.stack.get(depth).is_some_and(is_it) {
            depth
        } else {
            self.stack.iter().rposition(is_it)?
        };
        self.stack[index].record_mut()
    }

    /// Whether nothing is current because an unsampled sync root is open with nothing above it.
    #[inline]
    pub(crate) fn in_unsampled_root(&self) -> bool {
        self.stack.is_empty() && unsampled_root()
    }
}

/// Runs `f` on this thread's state; `None` while the thread is being torn down.
#[inline]
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    LOCAL
        .try_with(|local| local.try_borrow_mut().ok().map(|mut local| f(&mut local)))
        .ok()
        .flatten()
}

/// The context of the span that is current on this thread, if any.
///
/// ```
/// assert!(census_runtime::current_context().is_none());
/// ```
pub fn current_context() -> Option<SpanContext> {
    with_local(|local| local.stack.last().and_then(Frame::context)).flatten()
}

/// What a task or thread takes with it so that its spans nest under the span current here.
///
/// Capture it with [`Carried::current`] where the work is created and make it current where the
/// work runs, with [`Carried::run`] for a closure or [`Carried::instrument`] for a future.
///
/// ```
/// # use census_runtime::Carried;
/// let carried = Carried::current();
/// std::thread::spawn(move || carried.run(|| {
///     // spans started here are children of the span that was current at spawn
/// })).join().unwrap();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Carried(Option<FrameCopy>);

#[derive(Clone, Copy, Debug)]
enum FrameCopy {
    Parent(SpanContext),
    Unsampled,
}

impl Carried {
    /// Captures the current context of this thread.
    pub fn current() -> Self {
        let copy = with_local(|local| {
            if local.in_unsampled_root() {
                return Some(FrameCopy::Unsampled);
            }
            local.stack.last().map(|frame| match frame {
                Frame::Unsampled => FrameCopy::Unsampled,
                other => FrameCopy::Parent(
                    other
                        .context()
                        .expect("span and parent frames have a context"),
                ),
            })
        })
        .flatten();
        Carried(copy)
    }

    /// A context from a remote parent (for example a parsed `traceparent`).
    pub fn from_context(ctx: SpanContext) -> Self {
        Carried(Some(FrameCopy::Parent(ctx)))
    }

    /// The carried context, if a sampled span was current.
    pub fn context(&self) -> Option<SpanContext> {
        match self.0 {
            Some(FrameCopy::Parent(ctx)) => Some(ctx),
            _ => None,
        }
    }

    fn frame(&self) -> Option<Frame> {
        self.0.map(|copy| match copy {
            FrameCopy::Parent(ctx) => Frame::Parent(ctx),
            FrameCopy::Unsampled => Frame::Unsampled,
        })
    }

    /// Runs `f` with the carried context current.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(frame) = self.frame() else {
            return f();
        };
        let _entered = Entered::push(frame);
        f()
    }

    /// Wraps a future so that the carried context is current each time it is polled.
    pub fn instrument<F: Future>(self, future: F) -> WithContext<F> {
        WithContext {
            carried: self,
            inner: future,
        }
    }
}

/// Pops a pushed frame when dropped, unwinding included.
struct Entered {
    depth: usize,
}

impl Entered {
    fn push(frame: Frame) -> Entered {
        let depth = with_local(|local| local.push(frame)).unwrap_or(usize::MAX);
        Entered { depth }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if self.depth == usize::MAX {
            return;
        }
        with_local(|local| {
            if local.stack.len() > self.depth {
                local.remove(self.depth);
            }
        });
    }
}

/// A future run with a carried context current on every poll; see [`Carried::instrument`] and
/// [`FutureExt::in_current_span`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WithContext<F> {
    carried: Carried,
    inner: F,
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of `self`.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        match this.carried.frame() {
            Some(frame) => {
                let _entered = Entered::push(frame);
                inner.poll(cx)
            }
            None => inner.poll(cx),
        }
    }
}

/// Carrying the current span into futures that run elsewhere.
pub trait FutureExt: Future + Sized {
    /// Makes the span current here the parent of the spans this future starts, wherever it is
    /// polled: use it on futures handed to `tokio::spawn`.
    ///
    /// ```
    /// use census_runtime::FutureExt;
    /// # async fn work() {}
    /// # async fn demo() {
    /// tokio::spawn(work().in_current_span());
    /// # }
    /// ```
    fn in_current_span(self) -> WithContext<Self> {
        Carried::current().instrument(self)
    }
}

impl<F: Future> FutureExt for F {}

/// Spawns a thread whose spans nest under the span current here.
///
/// ```
/// let handle = census_runtime::spawn_thread(|| 2 + 2);
/// assert_eq!(handle.join().unwrap(), 4);
/// ```
pub fn spawn_thread<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let carried = Carried::current();
    std::thread::spawn(move || carried.run(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_async_span_s_box_is_kept_for_the_next_one_and_the_spares_are_bounded() {
        static SITE: crate::site::Site = crate::site::Site::inproc("boxed");
        let record = || SpanRecord {
            site: &SITE,
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent_id: None,
            start: 1,
            end: 0,
            sample_rate: 100.0,
            success: true,
            operation_name: Some("GET /".into()),
            extra: None,
        };
        // A ring of this test's own, not registered with the worker.
        let (producer, mut consumer) = rtrb::RingBuffer::new(16);
        let mut local = Local {
            stack: Vec::new(),
            ring: Some(producer),
            pushed: 0,
            spare: Vec::new(),
        };
        let first = local.boxed(record());
        let address = std::ptr::from_ref::<SpanRecord>(&first);
        let span_id = first.span_id;
        crate::pipeline::submit_boxed(&mut local, first, 2);
        let ended = consumer.pop().expect("the record went into the ring");
        assert_eq!(ended.span_id, span_id, "the record comes out whole");
        assert_eq!(ended.end, 2, "stamped with its end");
        assert_eq!(ended.operation_name.as_deref(), Some("GET /"));
        assert_eq!(local.spare.len(), 1, "its box is kept");
        let second = local.boxed(record());
        assert_eq!(
            std::ptr::from_ref::<SpanRecord>(&second),
            address,
            "the next async span reuses the box"
        );
        assert!(local.spare.is_empty());
        for _ in 0..3 * SPARE_BOXES {
            keep_box(&mut local.spare, Box::new_uninit());
        }
        assert_eq!(local.spare.len(), SPARE_BOXES);
        drop(second);
    }

    #[test]
    fn ids_round_trip_through_lowercase_hex() {
        let trace = TraceId::new(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c).unwrap();
        assert_eq!(trace.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            TraceId::from_hex("0AF7651916CD43DD8448EB211C80319C"),
            Some(trace)
        );
        let span = SpanId::new(0xb7).unwrap();
        assert_eq!(span.to_string(), "00000000000000b7");
        assert_eq!(SpanId::from_hex(&span.to_string()), Some(span));
    }

    #[test]
    fn malformed_hex_ids_are_rejected() {
        for bad in [
            "",
            "0af7",
            "0af7651916cd43dd8448eb211c80319cc",
            "+af7651916cd43dd8448eb211c80319c",
            "0af7651916cd43dd8448eb211c80319g",
        ] {
            assert_eq!(TraceId::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(SpanId::from_hex("0000000000000000"), None);
        assert_eq!(SpanId::from_hex("+000000000000001"), None);
    }

    #[test]
    fn random_ids_are_nonzero_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| SpanId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(TraceId::random().to_int() != 0);
    }
}
