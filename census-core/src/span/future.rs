//! Async spans: a span that a future carries between polls, current while it is polled, ended
//! when it completes, is dropped (cancelled) or panics.

use std::any::Any;
use std::borrow::Cow;
use std::fmt::{self, Display};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::builder::NotStarted;
use super::outcome::{fail_on_panic, fail_with_payload};
use super::parent::{self, Parent, Quick, Start};
use crate::clock;
use crate::id::{SpanId, TraceId};
use crate::local::{
    Frame, Local, close_unsampled_root, count_unsampled_root, open_unsampled_root,
    set_unsampled_root, with_local, word,
};
use crate::record::SpanRecord;
use crate::sampler;
use crate::site::Site;
use crate::standard;

/// What a future carries of its span between polls: two words, so that an instrumented future
/// is barely larger than the one it wraps; a recorded span's record is boxed. A call timed for
/// the standard metrics keeps its start here; its site is the future's [`SiteOf`], which takes
/// no room.
enum AsyncFrame {
    /// Nothing to do: no pipeline, or under a span that is not recorded.
    Inert,
    /// Under a span that is not recorded, and timed for the standard metrics: the clock reading
    /// at its start. A future with nothing else to do checks the frame alone.
    Counted(u64),
    /// The root of a trace that is not recorded: the future's children are inert. Its trace id,
    /// once known (from a remote parent, or drawn when something asked for the context on an
    /// earlier poll), and then its start too when it is timed.
    Unsampled(KeptTraceId),
    /// The root of a trace that is not recorded, timed for the standard metrics, its trace id
    /// not known yet: the clock reading at its start.
    UnsampledTimed(u64),
    /// A recorded span.
    Recording(Box<SpanRecord>),
}

impl AsyncFrame {
    /// When the call started, if it is timed for the standard metrics: the frame is then no
    /// longer timed (a call is counted once).
    fn take_timed_start(&mut self) -> Option<u64> {
        match self {
            AsyncFrame::Counted(start) => {
                let start = *start;
                *self = AsyncFrame::Inert;
                Some(start)
            }
            AsyncFrame::UnsampledTimed(start) => {
                let start = *start;
                *self = AsyncFrame::Unsampled(KeptTraceId::NONE);
                Some(start)
            }
            AsyncFrame::Unsampled(kept) => kept.take_start(),
            AsyncFrame::Inert | AsyncFrame::Recording(_) => None,
        }
    }

    /// The root of a dropped trace with no trace id yet: whether it is one.
    fn is_unsampled_without_id(&self) -> bool {
        match self {
            AsyncFrame::Unsampled(kept) => kept.is_none(),
            AsyncFrame::UnsampledTimed(_) => true,
            _ => false,
        }
    }

    /// Keeps a trace id drawn during a poll of a dropped trace's root that had none, with the
    /// root's start when it is timed; any other frame is left as it is.
    #[cold]
    #[inline(never)]
    fn keep_trace_id(&mut self, id: TraceId) {
        let start = match self {
            AsyncFrame::Unsampled(kept) if kept.is_none() => None,
            AsyncFrame::UnsampledTimed(start) => Some(*start),
            _ => return,
        };
        *self = AsyncFrame::Unsampled(KeptTraceId::new(id, start));
    }
}

/// A trace id a future keeps between polls (with its root's start when that is timed), or none:
/// boxed, so that an instrumented future stays as small as it was, and never dropped implicitly,
/// so that no instrumented future gets drop code for it (it is let go of by
/// [`KeptTraceId::release`] when the future is dropped; an [`AsyncSpan`] is always wrapped into
/// its future as soon as it starts).
struct KeptTraceId(Option<ManuallyDrop<Box<Kept>>>);

/// What [`KeptTraceId`] boxes.
struct Kept {
    trace_id: TraceId,
    start: Option<u64>,
}

impl KeptTraceId {
    const NONE: KeptTraceId = KeptTraceId(None);

    fn new(trace_id: TraceId, start: Option<u64>) -> KeptTraceId {
        KeptTraceId(Some(ManuallyDrop::new(Box::new(Kept { trace_id, start }))))
    }

    fn get(&self) -> Option<TraceId> {
        self.0.as_deref().map(|kept| kept.trace_id)
    }

    fn take_start(&mut self) -> Option<u64> {
        self.0.as_deref_mut().and_then(|kept| kept.start.take())
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Frees the box, if any.
    #[cold]
    fn release(self) {
        if let Some(id) = self.0 {
            drop(ManuallyDrop::into_inner(id));
        }
    }
}

/// The span of a future, started but not yet wrapped around it: what the attributes start
/// before the body's future exists. Not a public API.
#[doc(hidden)]
pub struct AsyncSpan {
    frame: AsyncFrame,
}

/// Names the call site of an instrumented future without storing it: the attributes hand in a
/// closure that returns their site's `static`, which is zero-sized, so that a future timed for
/// the standard metrics keeps only its start. Not a public API.
#[doc(hidden)]
pub trait SiteOf {
    /// The site, if the future has one.
    fn site(&self) -> Option<&'static Site>;
}

impl<C: Fn() -> &'static Site> SiteOf for C {
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn site(&self) -> Option<&'static Site> {
        Some(self())
    }
}

/// No site: a builder's span, which is never timed (it is recorded, or nothing).
#[derive(Debug, Clone, Copy)]
pub(super) struct NoSite;

impl SiteOf for NoSite {
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn site(&self) -> Option<&'static Site> {
        None
    }
}

/// Where a call of a dropped trace started, for the standard metrics.
#[derive(Clone, Copy)]
struct Timed {
    site: &'static Site,
    start: u64,
}

impl Timed {
    /// The call ended with `output`: counted, failed if `judge` fails it.
    #[cold]
    #[inline(never)]
    fn finish<T>(self, output: &T, judge: Option<impl Judge<T>>) {
        let mut failure = None;
        if let Some(judge) = judge {
            judge.judge(
                output,
                &mut Outcome {
                    target: Target::Counted(&mut failure),
                },
            );
        }
        match failure {
            Some(code) => standard::count_failure(self.site, self.start, code),
            None => standard::count(self.site, self.start),
        }
    }

    /// The future was dropped before it completed: cancelled, or unwound by a panic.
    #[cold]
    #[inline(never)]
    fn abandon(self) {
        let code = if std::thread::panicking() {
            "panic"
        } else {
            "cancelled"
        };
        standard::count_failure(self.site, self.start, Cow::Borrowed(code));
    }
}

impl fmt::Debug for AsyncSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSpan")
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl AsyncSpan {
    const INERT: AsyncSpan = AsyncSpan {
        frame: AsyncFrame::Inert,
    };

    /// Opens a span for `site` under the span current on this thread: the macros' path, with
    /// the same fast decisions as the sync one.
    #[inline]
    pub(crate) fn start(site: &'static Site) -> AsyncSpan {
        if !sampler::is_active() {
            return AsyncSpan::INERT;
        }
        Self::start_site(site)
    }

    #[inline(never)]
    fn start_site(site: &'static Site) -> AsyncSpan {
        let frame = match Self::frame_of(site) {
            AsyncFrame::Inert => match standard::counted_start() {
                Some(start) => AsyncFrame::Counted(start),
                None => AsyncFrame::Inert,
            },
            // A root with no trace id (`frame_of`'s).
            frame @ AsyncFrame::Unsampled(_) => match standard::counted_start() {
                Some(start) => AsyncFrame::UnsampledTimed(start),
                None => frame,
            },
            frame => frame,
        };
        AsyncSpan { frame }
    }

    #[cfg_attr(not(debug_assertions), inline(always))]
    fn frame_of(site: &'static Site) -> AsyncFrame {
        match parent::quick(word()) {
            // The standard metrics' switch is read after (`start_site`).
            Quick::Inert | Quick::Counted => AsyncFrame::Inert,
            Quick::DropRoot => AsyncFrame::Unsampled(KeptTraceId::NONE),
            Quick::KeepRoot => {
                let span_id = SpanId::random();
                let parent = Parent::new_root();
                // Written once, in a spare box of this thread's or a new one.
                let slot = with_local(Local::take_slot).unwrap_or_else(Box::new_uninit);
                AsyncFrame::Recording(Box::write(slot, parent.start(site, span_id)))
            }
            // Something is current (a frame, or an unsampled root whose trace id was drawn), so
            // the sampler is not asked: no parent is an inert span. The record is written once,
            // in its box.
            Quick::Look => with_local(|local| {
                parent::with_current_parent(local, |local, parent| {
                    let start = parent.into_start();
                    let span_id = SpanId::random();
                    let slot = local.take_slot();
                    AsyncFrame::Recording(Box::write(slot, start(site, span_id)))
                })
            })
            .flatten()
            .unwrap_or(AsyncFrame::Inert),
        }
    }

    /// Opens a span described by a builder.
    #[inline(never)]
    pub(super) fn start_with(site: &'static Site, start: Start) -> AsyncSpan {
        if !sampler::is_active() {
            return AsyncSpan::INERT;
        }
        let frame = parent::with_plan(site, start, |local, plan| match plan {
            // The record is started in its box, not moved there.
            Ok(planned) => AsyncFrame::Recording(Box::write(local.take_slot(), planned.start())),
            Err(NotStarted::Unsampled(trace_id)) => AsyncFrame::Unsampled(match trace_id {
                Some(id) => KeptTraceId::new(id, None),
                None => KeptTraceId::NONE,
            }),
            Err(NotStarted::Inert) => AsyncFrame::Inert,
        });
        AsyncSpan {
            frame: frame.unwrap_or(AsyncFrame::Inert),
        }
    }

    /// Whether the span is recorded.
    pub(crate) fn is_recording(&self) -> bool {
        matches!(&self.frame, AsyncFrame::Recording(record) if !record.is_shadow())
    }

    /// Records the arguments named in the site's `fields(...)`.
    pub(crate) fn record_fields(&mut self, values: &[&dyn Display]) {
        if let AsyncFrame::Recording(record) = &mut self.frame {
            record.record_fields(values);
        }
    }

    /// Runs `future` inside the span; `judge` looks at its output to mark the span; `site` is
    /// where the span started, for the standard metrics.
    pub(crate) fn wrap<F: Future, J: Judge<F::Output>, S: SiteOf>(
        self,
        future: F,
        judge: J,
        site: S,
    ) -> Traced<F, J, S> {
        Traced {
            inner: future,
            frame: self.frame,
            judge: Some(judge),
            site,
        }
    }
}

/// The outcome of a call, as the generated code reports it. Not a public API.
#[doc(hidden)]
pub struct Outcome<'a> {
    target: Target<'a>,
}

/// What an outcome marks: a recorded span, or the result code of a counted call that failed.
enum Target<'a> {
    Record(&'a mut SpanRecord),
    Counted(&'a mut Option<Cow<'static, str>>),
}

impl Outcome<'_> {
    /// Marks the span failed by an error value.
    pub(crate) fn fail_with_error(
        &mut self,
        error: &dyn Display,
        chain: Option<&(dyn std::error::Error + 'static)>,
        code: &'static str,
    ) {
        match &mut self.target {
            Target::Record(record) => super::outcome::fail_with_error(record, error, chain, code),
            Target::Counted(failure) => **failure = Some(super::outcome::short_type_name(code)),
        }
    }
}

/// Looks at a future's output when it completes, to mark its span. Not a public API.
#[doc(hidden)]
pub trait Judge<T> {
    /// Marks the span from the output.
    fn judge(self, output: &T, outcome: &mut Outcome<'_>);
}

impl<T, C: FnOnce(&T, &mut Outcome<'_>)> Judge<T> for C {
    #[inline]
    fn judge(self, output: &T, outcome: &mut Outcome<'_>) {
        self(output, outcome);
    }
}

/// Judges nothing: a future's output says nothing about its span.
#[derive(Debug)]
pub(super) struct Unjudged;

impl<T> Judge<T> for Unjudged {
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn judge(self, _output: &T, _outcome: &mut Outcome<'_>) {}
}

pin_project! {
    /// A future inside its span, as the attributes make it: the span is current while the
    /// future is polled and ends when it completes (`judge` marks it from the output), when it
    /// is dropped before completing (cancelled) or when it panics. Not a public API.
    #[doc(hidden)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Traced<F, J, S: SiteOf> {
        #[pin]
        inner: F,
        frame: AsyncFrame,
        judge: Option<J>,
        site: S,
    }

    impl<F, J, S: SiteOf> PinnedDrop for Traced<F, J, S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !matches!(this.frame, AsyncFrame::Inert) {
                let_go(this.frame, this.site.site());
            }
        }
    }
}

/// Lets go of what a future dropped with a frame still holds: a recorded span it did not end
/// (cancelled), a call it timed (at `site`), a trace id it kept. Not generic: shared by every
/// async fn.
#[inline(never)]
fn let_go(frame: &mut AsyncFrame, site: Option<&'static Site>) {
    if let (Some(start), Some(site)) = (frame.take_timed_start(), site) {
        Timed { site, start }.abandon();
    }
    match std::mem::replace(frame, AsyncFrame::Inert) {
        AsyncFrame::Recording(record) => cancel(record),
        AsyncFrame::Unsampled(kept) if !kept.is_none() => kept.release(),
        AsyncFrame::Inert
        | AsyncFrame::Counted(_)
        | AsyncFrame::Unsampled(_)
        | AsyncFrame::UnsampledTimed(_) => {}
    }
}

impl<F: fmt::Debug, J, S: SiteOf> fmt::Debug for Traced<F, J, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Traced")
            .field("inner", &self.inner)
            .field("recording", &matches!(self.frame, AsyncFrame::Recording(_)))
            .finish()
    }
}

impl<F: Future, J: Judge<F::Output>, S: SiteOf> Future for Traced<F, J, S> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        if matches!(this.frame, AsyncFrame::Inert) {
            return inner.poll(cx);
        }
        // The root of a dropped trace, nothing current and no trace id drawn yet (the usual case
        // under sampling): the thread's flag, set around the poll, is all it takes.
        if this.frame.is_unsampled_without_id() && word() == 0 {
            let poll = {
                let _root = UnsampledRoot::open(this.frame);
                inner.poll(cx)
            };
            if let Poll::Ready(output) = &poll {
                if let AsyncFrame::Unsampled(kept) = this.frame
                    && kept.is_none()
                {
                    // Untimed, and no trace id to let go of: nothing left to do when dropped.
                    *this.frame = AsyncFrame::Inert;
                } else {
                    finish_timed(this.frame, this.site, output, this.judge);
                }
            }
            return poll;
        }
        let poll = {
            let scope = PollScope::enter(this.frame);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(poll) => poll,
                Err(payload) => match &scope {
                    Some(scope) => scope.unwound(payload),
                    None => std::panic::resume_unwind(payload),
                },
            }
        };
        // Only a recorded span ends here: an unsampled frame's kept id is let go of when the
        // future is dropped.
        if let Poll::Ready(output) = &poll
            && matches!(this.frame, AsyncFrame::Recording(_))
            && let AsyncFrame::Recording(mut record) =
                std::mem::replace(this.frame, AsyncFrame::Inert)
        {
            if let Some(judge) = this.judge.take() {
                judge.judge(
                    output,
                    &mut Outcome {
                        target: Target::Record(&mut record),
                    },
                );
            }
            finish(record);
        } else if let Poll::Ready(output) = &poll {
            finish_timed(this.frame, this.site, output, this.judge);
        }
        poll
    }
}

/// A future completed with `output`: if its frame is timed, the call is counted (failed if the
/// judge fails it).
#[cfg_attr(not(debug_assertions), inline(always))]
fn finish_timed<T, J: Judge<T>, S: SiteOf>(
    frame: &mut AsyncFrame,
    site: &S,
    output: &T,
    judge: &mut Option<J>,
) {
    if let Some(start) = frame.take_timed_start()
        && let Some(site) = site.site()
    {
        Timed { site, start }.finish(output, judge.take());
    }
}

/// A dropped trace's root open on this thread's flag for one poll of its future, unwinding
/// included: a trace id drawn during the poll stays with the future for its next polls.
struct UnsampledRoot<'a> {
    frame: &'a mut AsyncFrame,
}

impl<'a> UnsampledRoot<'a> {
    /// Opens the root (counted into the standard metrics when its frame is timed); the caller
    /// saw nothing current.
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn open(frame: &'a mut AsyncFrame) -> Self {
        open_unsampled_root();
        if matches!(frame, AsyncFrame::UnsampledTimed(_)) {
            super::cold_path();
            count_unsampled_root();
        }
        UnsampledRoot { frame }
    }
}

impl Drop for UnsampledRoot<'_> {
    #[cfg_attr(not(debug_assertions), inline(always))]
    fn drop(&mut self) {
        if let Some(id) = close_unsampled_root() {
            self.frame.keep_trace_id(id);
        }
    }
}

/// A future's span made current for one poll, and put back into the future after it, unwinding
/// included. Not generic: the code that runs around every poll is shared by every async fn.
struct PollScope<'a> {
    slot: &'a mut AsyncFrame,
    /// Where the frame sits on the stack; `None` when the poll runs under the unsampled-root flag.
    depth: Option<usize>,
    span_id: Option<SpanId>,
}

impl<'a> PollScope<'a> {
    /// Makes the future's span current.
    #[inline(never)]
    fn enter(slot: &'a mut AsyncFrame) -> Option<PollScope<'a>> {
        // `with_local` is `None` while the thread is torn down: the future is then polled
        // without its span current.
        // An unsampled frame stays in the future: only its trace id is read.
        let known = match &*slot {
            AsyncFrame::Inert | AsyncFrame::Counted(_) => return None,
            AsyncFrame::Unsampled(trace_id) => Some(trace_id.get()),
            AsyncFrame::UnsampledTimed(_) => Some(None),
            AsyncFrame::Recording(_) => None,
        };
        match known {
            Some(known) => {
                // A dropped trace's root with nothing current: the flag, not a frame.
                if word() == 0 {
                    // Its trace id is known (a root with none took the poll's fast path): the
                    // word says so, and the calls under the root are left to `decide`, which
                    // reads the standard metrics' switch.
                    set_unsampled_root(true);
                    if let Some(id) = known {
                        with_local(|local| local.set_root_trace_id(id));
                    }
                    return Some(PollScope {
                        slot,
                        depth: None,
                        span_id: None,
                    });
                }
                with_local(|local| local.push(Frame::Unsampled(known))).map(|depth| PollScope {
                    slot,
                    depth: Some(depth),
                    span_id: None,
                })
            }
            None => {
                // Taken out of the future only once the thread's stack is at hand: while the
                // thread is torn down the record stays in the future, which is polled without
                // it current and hands it over when it completes.
                let (depth, span_id) = with_local(|local| {
                    let AsyncFrame::Recording(record) =
                        std::mem::replace(&mut *slot, AsyncFrame::Inert)
                    else {
                        return None;
                    };
                    let span_id = record.span_id();
                    Some((local.push_boxed(record), span_id))
                })
                .flatten()?;
                Some(PollScope {
                    slot,
                    depth: Some(depth),
                    span_id: Some(span_id),
                })
            }
        }
    }

    /// Fails the span with the panic whose payload unwound out of the poll, and resumes it.
    #[cold]
    #[inline(never)]
    fn unwound(&self, payload: Box<dyn Any + Send>) -> ! {
        if let (Some(depth), Some(span_id)) = (self.depth, self.span_id) {
            with_local(|local| {
                if let Some(record) = local.record_mut(depth, span_id) {
                    fail_with_payload(record, &*payload);
                }
            });
        }
        std::panic::resume_unwind(payload)
    }
}

impl Drop for PollScope<'_> {
    #[inline(never)]
    fn drop(&mut self) {
        let Some(depth) = self.depth else {
            // A trace id drawn during the poll stays with the future for its next polls.
            if let Some(id) = close_unsampled_root() {
                self.slot.keep_trace_id(id);
            }
            return;
        };
        let panicking = std::thread::panicking();
        with_local(|local| {
            // Usually the frame is on top: its box is taken back alone.
            let record = match self.span_id.and_then(|id| local.pop_boxed(depth, id)) {
                Some(record) => Some(record),
                None => match local.take_frame(depth, self.span_id) {
                    Some(Frame::Boxed(record)) => Some(record),
                    // The unsampled frame's trace id, drawn during the poll, stays with the
                    // future; anything else was not ours.
                    Some(Frame::Unsampled(Some(id))) => {
                        self.slot.keep_trace_id(id);
                        None
                    }
                    _ => None,
                },
            };
            match record {
                Some(mut record) if panicking => {
                    fail_on_panic(&mut record);
                    local.submit_boxed(record, clock::now());
                }
                Some(record) => *self.slot = AsyncFrame::Recording(record),
                None => {}
            }
        });
    }
}

/// Ends an async span that completed.
#[inline(never)]
fn finish(record: Box<SpanRecord>) {
    crate::local::submit_boxed(record, clock::now());
}

/// Ends the span of a future dropped before it completed: the caller gave up on it (a timeout,
/// a lost `select!`). The call did not succeed, and its result code says why: `cancelled`.
#[inline(never)]
fn cancel(mut record: Box<SpanRecord>) {
    record.fail(Cow::Borrowed("cancelled"), None);
    crate::local::submit_boxed(record, clock::now());
}
