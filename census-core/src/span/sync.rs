//! Sync spans: a guard that keeps its span current on this thread until it is dropped, and the
//! call of an instrumented sync function, which the generated code ends itself.

use std::any::Any;
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Display};
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use super::builder::NotStarted;
use super::outcome::{Failed, fail_on_panic, fail_with_payload};
use super::parent::{self, Parent, Quick, Start};
use crate::clock;
use crate::id::{SpanContext, SpanId};
use crate::local::{
    Frame, Local, close_sync_unsampled_root, count_unsampled_root, open_unsampled_root, with_local,
    word,
};
use crate::record::SpanRecord;
use crate::sampler;
use crate::site::Site;
use crate::standard;

/// A span that is current on this thread until it is dropped.
///
/// Made by [`SpanBuilder::start`](crate::span::SpanBuilder::start) (the attributes end a sync
/// function's span the same way, without a guard). It is not `Send`: a span entered on one
/// thread ends on that thread. For async code use
/// [`SpanBuilder::instrument`](crate::span::SpanBuilder::instrument) (or the attributes on an
/// `async fn`), which make the span current only while its future is polled.
///
/// **Do not hold it across `.await`.** A future that holds a guard is not `Send`, so a
/// multi-threaded executor refuses it, but `join!`, `select!`, `spawn_local` and `block_on`
/// accept it. While such a future waits, its span stays current on the thread, and every span
/// that anything else polled on that thread starts in the meantime nests under it, in the wrong
/// trace. The held span itself still ends, with the right duration, when the guard is dropped.
/// Clippy catches it at compile time with this entry in `clippy.toml`:
///
/// ```toml
/// await-holding-invalid-types = [
///     { path = "census_runtime::span::SpanGuard", reason = "use SpanBuilder::instrument across .await" },
/// ]
/// ```
///
/// What happens without it, under `join!` on one thread:
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let holds = async {
///     let _guard = census_runtime::span("held").start();
///     tokio::task::yield_now().await; // the guard stays current while this waits
/// };
/// let other = async { census_runtime::span("unrelated").in_scope(|| {}) };
/// tokio::join!(holds, other);
/// # });
/// # census.flush(std::time::Duration::from_secs(5)).unwrap();
/// let (held, unrelated) = (memory.one("held"), memory.one("unrelated"));
/// assert_eq!(unrelated.parent_id(), Some(held.span_id()), "nested where it should not be");
/// ```
#[must_use = "the span ends when the guard is dropped"]
pub struct SpanGuard {
    held: Cell<Held>,
    _not_send: PhantomData<*const ()>,
}

/// What a guard holds on its thread's stack. A frame's depth is a `u32` (a stack of four billion
/// frames would not fit in memory).
#[derive(Clone, Copy)]
enum Held {
    /// Nothing: no pipeline.
    Inert,
    /// The unsampled frame of a built span whose trace is not recorded.
    Unsampled { depth: u32 },
    /// A recorded span's frame.
    Span { depth: u32, span_id: SpanId },
    /// The frame of a built span's shadow: a span of a dropped trace, recorded only to be
    /// counted into the standard metrics.
    Shadow { depth: u32, span_id: SpanId },
}

impl fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanGuard")
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl SpanGuard {
    const fn holding(held: Held) -> SpanGuard {
        SpanGuard {
            held: Cell::new(held),
            _not_send: PhantomData,
        }
    }

    /// Starts a span described by a builder.
    #[inline(never)]
    pub(super) fn start(site: &'static Site, start: Start) -> SpanGuard {
        if !sampler::is_active() {
            return SpanGuard::holding(Held::Inert);
        }
        parent::with_plan(site, start, |local, plan| match plan {
            // The record is started in its frame, not moved there.
            Ok(planned) => {
                let shadow = planned.is_shadow();
                let span_id = SpanId::random();
                let depth = local.push_in_place(|| Frame::Span(planned.start_as(span_id))) as u32;
                SpanGuard::holding(match shadow {
                    false => Held::Span { depth, span_id },
                    true => Held::Shadow { depth, span_id },
                })
            }
            Err(NotStarted::Unsampled(trace_id)) => SpanGuard::holding(Held::Unsampled {
                depth: local.push(Frame::Unsampled(trace_id)) as u32,
            }),
            Err(NotStarted::Inert) => SpanGuard::holding(Held::Inert),
        })
        .unwrap_or(SpanGuard::holding(Held::Inert))
    }

    /// Whether this guard records a span (the pipeline is installed and the trace sampled).
    ///
    /// ```
    /// let span = census_runtime::span("checkout").start();
    /// assert!(!span.is_recording()); // no pipeline installed
    /// ```
    #[inline]
    pub fn is_recording(&self) -> bool {
        matches!(self.held.get(), Held::Span { .. })
    }

    /// Whether the guard holds a record: a recorded span's, or a shadow's.
    #[inline]
    fn holds_record(&self) -> bool {
        matches!(self.held.get(), Held::Span { .. } | Held::Shadow { .. })
    }

    /// The recorded span's context, for propagation.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let span = census_runtime::span("checkout").start();
    /// let context = span.context().expect("a pipeline records every trace");
    /// drop(span);
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("checkout").span_id(), context.span_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn context(&self) -> Option<SpanContext> {
        self.with_record(|r| r.context())
    }

    fn with_record<R>(&self, f: impl FnOnce(&mut SpanRecord) -> R) -> Option<R> {
        let (Held::Span { depth, span_id } | Held::Shadow { depth, span_id }) = self.held.get()
        else {
            return None;
        };
        with_local(|local| local.record_mut(depth as usize, span_id).map(f)).flatten()
    }

    /// Marks the span failed with a message.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let span = census_runtime::span("charge").start();
    /// span.fail("card declined");
    /// drop(span);
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("charge").error_message(), Some("card declined"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fail(&self, message: impl Display) {
        if self.holds_record() {
            let message = message.to_string();
            self.with_record(|r| r.fail(Cow::Borrowed("error"), Some(message)));
        }
    }

    /// Marks the span failed with an error: its `Display` becomes the message and `code` (the
    /// error's type, unless a result code was set) the result code.
    pub(crate) fn fail_with_error(
        &self,
        error: &dyn Display,
        chain: Option<&(dyn std::error::Error + 'static)>,
        code: &'static str,
    ) {
        // The error is read before the record is at hand: its `Display` may log or make spans.
        if let Some(site) = self.with_record(|r| r.site()) {
            let failed = Failed::read(site, error, chain, code);
            self.with_record(|r| failed.mark(r));
        }
    }

    /// Runs `body` inside this guard's span: a panic is caught, fails the span with the
    /// panic's own message (whatever panic hooks are set), and is resumed.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn run<R>(&self, body: impl FnOnce() -> R) -> R {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(value) => value,
            Err(payload) => self.unwound(payload),
        }
    }

    /// Fails the span with the panic whose payload unwound out of its body, and resumes it.
    #[cold]
    #[inline(never)]
    fn unwound(&self, payload: Box<dyn Any + Send>) -> ! {
        self.with_record(|r| fail_with_payload(r, &*payload));
        std::panic::resume_unwind(payload)
    }
}

impl Drop for SpanGuard {
    #[inline]
    fn drop(&mut self) {
        // Only the check is inlined into the instrumented function: the rest would bloat every
        // caller's frame, which costs even when nothing is recorded.
        match self.held.get() {
            Held::Inert => {}
            Held::Span { depth, span_id } | Held::Shadow { depth, span_id } => exit(depth, span_id),
            Held::Unsampled { depth } => exit_unsampled(depth),
        }
    }
}

/// A sync function's call as the attributes run it: what its start found, ended by the
/// generated code on every path (a panic of the body ends it where it is caught). Not a public
/// API.
///
/// Unlike a [`SpanGuard`] it has no drop glue and its state is a few scalars: its address never
/// leaves the instrumented function, which keeps it in registers and needs no landing pad to
/// drop it, and the out-of-line steps take its fields as arguments. The fields a state does not
/// use are left uninitialized, as an enum's would be, so that no path of the instrumented
/// function sets registers it never reads.
#[doc(hidden)]
#[derive(Clone, Copy)]
#[must_use = "the call ends with `end`"]
pub struct Call {
    site: &'static Site,
    state: State,
    /// The recorded span's frame's depth (`State::Span`).
    depth: MaybeUninit<u32>,
    /// The recorded span's id, or when a counted call started.
    held: CallHeld,
    _not_send: PhantomData<*const ()>,
}

/// What a call holds besides its depth, in one register: the recorded span's id
/// (`State::Span`), or when a counted call started (`State::Counted`, `State::CountedRoot`).
/// The state says which field is written.
#[derive(Clone, Copy)]
union CallHeld {
    span_id: SpanId,
    start: u64,
    nothing: (),
}

/// What a call holds on its thread.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Nothing: no pipeline, or a call under a dropped trace with standard metrics off.
    Inert,
    /// The flag of a sync root whose trace the sampler dropped: it takes no frame.
    UnsampledRoot,
    /// A call of a dropped trace, timed for the standard metrics.
    Counted,
    /// A call of a dropped trace, timed for the standard metrics, that holds the unsampled
    /// root's flag too.
    CountedRoot,
    /// A recorded span's frame.
    Span,
}

/// The frame a recorded span was pushed as: what the out-of-line start returns to the inlined
/// one (two scalars, returned in registers; `None` is the span id's niche).
#[derive(Clone, Copy)]
struct Pushed {
    depth: u32,
    span_id: SpanId,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("recording", &(self.state == State::Span))
            .finish()
    }
}

impl Call {
    #[cfg_attr(not(debug_assertions), inline(always))]
    const fn holding(site: &'static Site, state: State) -> Call {
        Call {
            site,
            state,
            depth: MaybeUninit::uninit(),
            held: CallHeld { nothing: () },
            _not_send: PhantomData,
        }
    }

    /// Starts a span for `site` under the current span and makes it current: the macros' path,
    /// with no remote parent and no values known at start. Inlined into the instrumented
    /// function: a trace the sampler drops costs a few loads and stores and no call; recording
    /// a span calls out of line, and what that call returns fits in two registers, so that the
    /// call is never written to the caller's frame.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn enter(site: &'static Site) -> Call {
        if !sampler::is_active() {
            return Call::holding(site, State::Inert);
        }
        let pushed = match parent::quick(word()) {
            Quick::Inert => return Call::holding(site, State::Inert),
            Quick::Counted => return Call::dropped(site, standard::counted_start(), false),
            Quick::DropRoot => {
                open_unsampled_root();
                let start = standard::counted_start();
                if start.is_some() {
                    count_unsampled_root();
                }
                return Call::dropped(site, start, true);
            }
            Quick::KeepRoot => enter_root(site),
            Quick::Look => enter_child(site),
        };
        match pushed {
            Some(Pushed { depth, span_id }) => Call {
                depth: MaybeUninit::new(depth),
                held: CallHeld { span_id },
                ..Call::holding(site, State::Span)
            },
            None => Call::dropped(site, standard::counted_start(), false),
        }
    }

    /// A call whose trace is dropped (`root`: the call opened the dropped root): timed for the
    /// standard metrics when they are on (`start`: when the call started), else inert.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn dropped(site: &'static Site, start: Option<u64>, root: bool) -> Call {
        if let Some(start) = start {
            Call {
                held: CallHeld { start },
                ..Call::holding(
                    site,
                    if root {
                        State::CountedRoot
                    } else {
                        State::Counted
                    },
                )
            }
        } else if root {
            Call::holding(site, State::UnsampledRoot)
        } else {
            Call::holding(site, State::Inert)
        }
    }

    /// Records the arguments named in the site's `fields(...)`, by `Display`.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn record_fields(&self, values: &[&dyn Display]) {
        if let Some((depth, span_id)) = self.frame()
            && !values.is_empty()
        {
            record_fields_at(self.site, depth, span_id, values);
        }
    }

    /// Runs `body` inside the call's span: a panic is caught, fails the span with the panic's
    /// own message (whatever panic hooks are set), ends the call, and is resumed.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn run<R>(self, body: impl FnOnce() -> R) -> R {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(value) => value,
            Err(payload) => unwound(self.site, self.state, self.depth, self.held, payload),
        }
    }

    /// The recorded span's frame: its depth and its id.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn frame(self) -> Option<(u32, SpanId)> {
        match self.state {
            // SAFETY: a call is made `State::Span` with its depth and its span id written
            // (`enter`).
            State::Span => Some(unsafe { (self.depth.assume_init(), self.held.span_id) }),
            _ => None,
        }
    }

    /// When the counted call started.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn start(self) -> u64 {
        match self.state {
            // SAFETY: a call is made counted with its start written (`dropped`).
            State::Counted | State::CountedRoot => unsafe { self.held.start },
            _ => 0,
        }
    }

    /// Ends the call.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn end(self) {
        match self.state {
            State::Inert => {}
            State::UnsampledRoot => close_sync_unsampled_root(),
            State::Counted | State::CountedRoot => end_counted(self.site, self.state, self.start()),
            State::Span => {
                if let Some((depth, span_id)) = self.frame() {
                    exit(depth, span_id);
                }
            }
        }
    }

    /// Ends the call failed by an error that is a `std::error::Error`: its `Display` becomes
    /// the message, its type (unless a result code was set) the result code, and its
    /// `source()`s are at hand; a counted call is counted failed. One out-of-line call per
    /// error type, shared by every function that returns it.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn end_with_error<E: std::error::Error + 'static>(self, error: &E) {
        end_with_error(self.site, self.state, self.depth, self.held, error);
    }

    /// Ends the call failed by an error that is only `Display`: see
    /// [`Call::end_with_error`].
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn end_with_display<E: Display>(self, error: &E) {
        end_with_display(self.site, self.state, self.depth, self.held, error);
    }
}

/// [`Call::end_with_error`], out of line: instantiated once per error type.
#[inline(never)]
fn end_with_error<E: std::error::Error + 'static>(
    site: &'static Site,
    state: State,
    depth: MaybeUninit<u32>,
    held: CallHeld,
    error: &E,
) {
    let failure = Failure {
        error,
        chain: Some(error),
        code: std::any::type_name::<E>(),
    };
    end_failed(site, state, depth, held, &failure);
}

/// [`Call::end_with_display`], out of line: instantiated once per error type.
#[inline(never)]
fn end_with_display<E: Display>(
    site: &'static Site,
    state: State,
    depth: MaybeUninit<u32>,
    held: CallHeld,
    error: &E,
) {
    let failure = Failure {
        error,
        chain: None,
        code: std::any::type_name::<E>(),
    };
    end_failed(site, state, depth, held, &failure);
}

#[inline(never)]
fn enter_root(site: &'static Site) -> Option<Pushed> {
    // The parent is made inside: a closure that captured it would be filled by copying it.
    let pushed = with_local(|local| push_span(local, site, Parent::new_root()));
    if pushed.is_none() {
        // The sampler kept the trace, and the thread's stack is gone (a thread-local's
        // destructor as the thread ends): no frame to keep the span in.
        crate::diagnostics::count_dropped_thread_ended();
    }
    pushed
}

#[inline(never)]
fn enter_child(site: &'static Site) -> Option<Pushed> {
    // Something is current (a frame, or an unsampled root whose trace id was drawn), so the
    // sampler is not asked: no parent is an inert span.
    with_local(|local| {
        let parent = parent::current_parent(local)?;
        Some(push_span(local, site, parent))
    })
    .flatten()
}

/// Pushes a recording frame, its record written once, in its slot on the stack.
#[cfg_attr(not(debug_assertions), inline(always))]
fn push_span(local: &mut Local, site: &'static Site, parent: Parent) -> Pushed {
    let span_id = SpanId::random();
    let start = parent.into_start();
    let depth = local.push_in_place(|| Frame::Span(start(site, span_id)));
    Pushed {
        depth: depth as u32,
        span_id,
    }
}

/// Ends a recorded span if it is dropped: a call whose out-of-line step unwinds (an argument's
/// or an error's `Display` that panics) still ends, as a guard would.
struct ExitOnUnwind(u32, SpanId);

impl Drop for ExitOnUnwind {
    fn drop(&mut self) {
        exit(self.0, self.1);
    }
}

/// Records the arguments named in the site's `fields(...)` on the recorded span at `depth`.
#[inline(never)]
fn record_fields_at(site: &'static Site, depth: u32, span_id: SpanId, values: &[&dyn Display]) {
    let names = site.fields();
    if names.is_empty() {
        return;
    }
    let unwinding = ExitOnUnwind(depth, span_id);
    // Written aside, before the record is at hand: a value's `Display` may log or make spans,
    // which need the thread's stack the record is on.
    let mut extra = crate::record::boxed_extra(None);
    crate::record::push_fields(&mut extra.properties, names, values);
    with_local(|local| {
        if let Some(record) = local.record_mut(depth as usize, span_id) {
            record.take_extra(extra);
        }
    });
    std::mem::forget(unwinding);
}

/// The error a call failed with, passed by reference (one register rather than six).
struct Failure<'a> {
    error: &'a dyn Display,
    chain: Option<&'a (dyn std::error::Error + 'static)>,
    code: &'static str,
}

/// Fails the call with an error and ends it: the span's record is marked, or the counted call
/// is counted failed. The call comes as its fields, in registers.
#[inline(never)]
fn end_failed(
    site: &'static Site,
    state: State,
    depth: MaybeUninit<u32>,
    held: CallHeld,
    failure: &Failure<'_>,
) {
    let call = Call {
        site,
        state,
        depth,
        held,
        _not_send: PhantomData,
    };
    match state {
        State::Inert => {}
        State::UnsampledRoot => close_sync_unsampled_root(),
        State::Counted | State::CountedRoot => {
            if state == State::CountedRoot {
                close_sync_unsampled_root();
            }
            let code = super::outcome::short_type_name(failure.code);
            standard::count_failure(site, call.start(), code);
        }
        State::Span => {
            if let Some((depth, span_id)) = call.frame() {
                let unwinding = ExitOnUnwind(depth, span_id);
                // Read before the record is at hand: the error's `Display` may log or make spans.
                let Failure { error, chain, code } = *failure;
                let failed = Failed::read(site, error, chain, code);
                with_local(|local| {
                    if let Some(record) = local.record_mut(depth as usize, span_id) {
                        failed.mark(record);
                    }
                });
                drop(unwinding);
            }
        }
    }
}

/// Fails the call with the panic whose payload unwound out of its body, ends it, and resumes
/// the panic. The call comes as its fields, in registers.
#[cold]
#[inline(never)]
fn unwound(
    site: &'static Site,
    state: State,
    depth: MaybeUninit<u32>,
    held: CallHeld,
    payload: Box<dyn Any + Send>,
) -> ! {
    let call = Call {
        site,
        state,
        depth,
        held,
        _not_send: PhantomData,
    };
    match state {
        State::Inert => {}
        State::UnsampledRoot => close_sync_unsampled_root(),
        State::Counted | State::CountedRoot => {
            if state == State::CountedRoot {
                close_sync_unsampled_root();
            }
            standard::count_failure(site, call.start(), Cow::Borrowed("panic"));
        }
        State::Span => {
            if let Some((depth, span_id)) = call.frame() {
                with_local(|local| {
                    if let Some(record) = local.record_mut(depth as usize, span_id) {
                        fail_with_payload(record, &*payload);
                    }
                });
                exit(depth, span_id);
            }
        }
    }
    std::panic::resume_unwind(payload)
}

/// Ends a counted call of a dropped trace (`state`: counted, and whether it holds the unsampled
/// root's flag) that started at `start`: out of line, with the count inlined into it, so that
/// a counted call makes one call to end (two cost a dropped root 1 ns more).
#[inline(never)]
fn end_counted(site: &'static Site, state: State, start: u64) {
    if state == State::CountedRoot {
        close_sync_unsampled_root();
    }
    standard::count_inline(site, start);
}

/// Ends a recorded span.
#[inline(never)]
fn exit(depth: u32, span_id: SpanId) {
    let depth = depth as usize;
    with_local(|local| {
        if local.is_top_span(depth, span_id) {
            // The common case: this guard's frame is on top.
            let end = clock::now();
            if std::thread::panicking() {
                fail_top_on_panic(local);
            }
            local.submit_top(end);
        } else if let Some(Frame::Span(mut record)) = local.take_frame(depth, Some(span_id)) {
            // Guards dropped out of order (a guard moved or leaked by the caller).
            if std::thread::panicking() {
                fail_on_panic(&mut record);
            }
            record.set_end(clock::now());
            local.submit(record);
        }
    });
}

/// Takes the frame of a span whose trace is not recorded off the stack.
#[inline(never)]
fn exit_unsampled(depth: u32) {
    with_local(|local| local.take_frame(depth as usize, None));
}

/// Marks the span on top of the stack failed by the panic unwinding through it.
#[cold]
#[inline(never)]
fn fail_top_on_panic(local: &mut Local) {
    if let Some(Frame::Span(record)) = local.top_mut() {
        fail_on_panic(record);
    }
}

const _: () = assert!(size_of::<SpanGuard>() <= 24);
const _: () = assert!(size_of::<Call>() <= 32);
