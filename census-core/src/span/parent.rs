//! Where a new span belongs: its parent, and whether its trace is recorded. Decided here for
//! every kind of span (sync, async, built, detached), from what is current on the thread and
//! an optional parent from another process.

use super::builder::NotStarted;
use crate::id::{SpanContext, SpanId, TraceId};
use crate::local::{Frame, Local, unsampled_root, unsampled_root_word, with_local};
use crate::record::{KeptBy, Opening, OperationName, SpanExtra, SpanRecord};
use crate::sampler;
use crate::site::Site;

/// What a new span is.
pub(super) enum Decision {
    /// Nothing is recorded and nothing need be remembered: no pipeline, or a span under a
    /// trace the sampler dropped.
    Inert,
    /// The root of a trace that is not recorded: one the sampler dropped (its id drawn only if
    /// something asks for its context: `None`), or a remote parent's that is not recorded (its
    /// id). The spans under it are inert.
    Unsampled(Option<TraceId>),
    /// A recorded span, with its trace, parent and the operation name it inherits.
    Record(Parent),
}

/// The parent of a recorded span.
pub(super) struct Parent {
    trace_id: TraceId,
    parent_id: Option<SpanId>,
    operation_name: Option<OperationName>,
    /// The sampling percentage the trace is recorded at: the one in force when it was decided
    /// here, which the spans under it inherit (a rate-limited sampler changes the rate in force).
    sample_rate: f32,
    kept_by: KeptBy,
}

impl Parent {
    /// The root of a new trace the sampler keeps: its id is drawn now.
    #[inline]
    pub(super) fn new_root() -> Parent {
        let (trace_id, sample_rate) = sampler::new_root();
        Parent {
            trace_id,
            parent_id: None,
            operation_name: None,
            sample_rate,
            kept_by: KeptBy::Sampler,
        }
    }

    /// The record of the span `span_id` of `site` under this parent, starting now.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(super) fn start(self, site: &'static Site, span_id: SpanId) -> SpanRecord {
        self.into_start()(site, span_id)
    }

    /// [`Parent::start`], for a record made later: what makes it, holding the parent's fields
    /// one by one. A closure that holds the parent whole is filled by copying it, in wider
    /// loads than the stores that just wrote it, which the processor cannot forward: that stall
    /// was a third of a recorded child span's start.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(super) fn into_start(self) -> impl FnOnce(&'static Site, SpanId) -> SpanRecord {
        let Parent {
            trace_id,
            parent_id,
            operation_name,
            sample_rate,
            kept_by,
        } = self;
        move |site, span_id| {
            SpanRecord::open(Opening {
                site,
                trace_id,
                span_id,
                parent_id,
                operation_name,
                sample_rate,
                kept_by,
                extra: None,
                shadow: false,
            })
        }
    }
}

#[cfg(test)]
impl SpanRecord {
    /// The span `span_id` of `site`, starting now, kept for its parent's sake, made as a
    /// recorded child span's record is: for tests.
    pub(crate) fn start(
        site: &'static Site,
        trace_id: TraceId,
        span_id: SpanId,
        parent_id: Option<SpanId>,
        operation_name: Option<OperationName>,
        sample_rate: f32,
    ) -> Self {
        Parent {
            trace_id,
            parent_id,
            operation_name,
            sample_rate,
            kept_by: KeptBy::Parent,
        }
        .start(site, span_id)
    }
}

/// What the macros' path decides from the fast path's word alone, without the stack: the same
/// as [`decide`] for the words it settles (0 and 1), inlined into every instrumented function.
pub(super) enum Quick {
    /// Under an unsampled sync root: inert.
    Inert,
    /// Under an unsampled sync root whose calls are counted into the standard metrics: timed,
    /// nothing recorded.
    Counted,
    /// Nothing current, and the sampler drops the new trace.
    DropRoot,
    /// Nothing current, and the sampler keeps the new trace.
    KeepRoot,
    /// Something is current: [`decide`] looks at the stack.
    Look,
}

#[cfg_attr(not(debug_assertions), inline(always))]
pub(super) fn quick(word: usize) -> Quick {
    const ROOT: usize = unsampled_root_word(false);
    const COUNTED_ROOT: usize = unsampled_root_word(true);
    match word {
        0 if sampler::keep_new_trace() => Quick::KeepRoot,
        0 => Quick::DropRoot,
        // An unsampled root whose trace id was drawn is left to `decide`, which finds it inert
        // too: the tests stay the ones the fast path has always made.
        ROOT => Quick::Inert,
        COUNTED_ROOT => {
            // A counted call reads the clock: the other words are tested before this one.
            super::cold_path();
            Quick::Counted
        }
        _ => Quick::Look,
    }
}

/// Where a new span is asked to go.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Under {
    /// Under what is current on this thread: the usual case.
    #[default]
    Current,
    /// Under a parent from another process, recorded when its sampled flag says so.
    Remote(SpanContext),
    /// Under a parent from another process that carries no sampled flag (a legacy
    /// `Request-Id`): recorded when its trace id's score is below the rate.
    RemoteScored(SpanContext),
    /// At the root of a new trace, whatever is current.
    Root,
}

/// Decides what a new span is: under a remote parent when it comes from another process
/// (parent-based: recorded when the caller recorded it, as its W3C flag says, so that the
/// services of one trace agree; a parent without a flag by its trace id's score, as every
/// Application Insights SDK decides), else under the span current on this thread, else the root
/// of a new trace.
#[inline]
pub(super) fn decide(local: &mut Local, under: Under) -> Decision {
    let remote = |remote: SpanContext, kept: Option<(f32, KeptBy)>| match kept {
        Some((sample_rate, kept_by)) => Decision::Record(Parent {
            trace_id: remote.trace_id(),
            parent_id: Some(remote.span_id()),
            operation_name: None,
            sample_rate,
            kept_by,
        }),
        None => Decision::Unsampled(Some(remote.trace_id())),
    };
    match under {
        Under::Root => return new_root(),
        Under::Remote(parent) => {
            let kept = parent
                .is_sampled()
                .then(|| (sampler::percentage(), KeptBy::Caller));
            return remote(parent, kept);
        }
        Under::RemoteScored(parent) => {
            let kept = sampler::continued(parent.trace_id()).map(|rate| (rate, KeptBy::Sampler));
            return remote(parent, kept);
        }
        Under::Current => {}
    }
    match local.top() {
        Some(_) => current_parent(local).map_or(Decision::Inert, Decision::Record),
        None if unsampled_root() => Decision::Inert,
        None => new_root(),
    }
}

/// The parent a span started under the frame on top of the stack takes: `None` when there is
/// no frame, or it is of a trace that is not recorded (an unsampled root, a carried context of a
/// dropped trace). [`decide`]'s part for a span under what is current, which the macros' sync
/// start asks alone (it knows from the thread's word that something is current).
#[cfg_attr(not(debug_assertions), inline(always))]
pub(super) fn current_parent(local: &mut Local) -> Option<Parent> {
    with_current_parent(local, |_, parent| parent)
}

/// Runs `f` on the stack and the parent a span started under the frame on top takes, if any
/// (see [`current_parent`]): the macros' async start makes its record inside `f`, so that the
/// parent goes to it field by field. Returned in an `Option` and taken out of it, the parent is
/// copied in wider loads than the stores that just wrote it, which the processor cannot
/// forward: that stall was a third of a recorded child span's start.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(super) fn with_current_parent<R>(
    local: &mut Local,
    f: impl FnOnce(&mut Local, Parent) -> R,
) -> Option<R> {
    let parent = match local.top()? {
        // A context carried from a span of this process says the percentage its trace was
        // kept at; one carried from elsewhere does not: the one in force then.
        Frame::Parent(carried) if carried.ctx.is_sampled() => Parent {
            trace_id: carried.ctx.trace_id(),
            parent_id: Some(carried.ctx.span_id()),
            operation_name: carried.operation_name.clone(),
            sample_rate: carried.sample_rate.unwrap_or_else(sampler::percentage),
            kept_by: KeptBy::Parent,
        },
        frame => {
            // `None`: an unsampled root, or a carried context of a dropped trace.
            let parent = frame.record()?;
            Parent {
                trace_id: parent.trace_id(),
                parent_id: Some(parent.span_id()),
                operation_name: parent.shared_operation_name(),
                sample_rate: parent.sample_percent(),
                kept_by: KeptBy::Parent,
            }
        }
    };
    Some(f(local, parent))
}

fn new_root() -> Decision {
    match sampler::keep_new_trace() {
        true => Decision::Record(Parent::new_root()),
        false => Decision::Unsampled(None),
    }
}

/// A span a builder describes, decided on and not started yet: what its record is made of,
/// but its id and its start, which [`Planned::start`] gives it where its caller keeps it.
///
/// The record is best written once, in its place: a record built, changed and then moved is
/// copied in wider loads than the stores that just wrote its fields, which the processor
/// cannot forward. The `tracing` layer's span, built into its slot of the layer's table rather
/// than moved there, measured 157 ns against 182 (the record alone, no fields; alternating
/// runs).
pub(crate) struct Planned {
    site: &'static Site,
    parent: Parent,
    operation_name: Option<OperationName>,
    extra: Option<Box<SpanExtra>>,
    shadow: bool,
}

impl Planned {
    /// The span's record, starting now: its id drawn and the clock read here.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn start(self) -> SpanRecord {
        self.start_as(SpanId::random())
    }

    /// Whether the span is a shadow: recorded only to be counted.
    pub(super) fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// The record of the span `span_id`, starting now.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(super) fn start_as(self, span_id: SpanId) -> SpanRecord {
        let Planned {
            site,
            parent:
                Parent {
                    trace_id,
                    parent_id,
                    operation_name: inherited,
                    sample_rate,
                    kept_by,
                },
            operation_name,
            extra,
            shadow,
        } = self;
        SpanRecord::open(Opening {
            site,
            trace_id,
            span_id,
            parent_id,
            operation_name: operation_name.or(inherited),
            sample_rate,
            kept_by,
            extra,
            shadow,
        })
    }
}

/// Decides, with the thread's state, where a span that a builder describes belongs
/// ([`plan`]), and gives the decision and that state to `place`, which starts the record where
/// it keeps it: the sync, async and detached starts, and the `tracing` layer's. `None` when
/// the thread's state is gone (a thread-local's destructor as the thread ends): nothing is
/// current there and no frame can hold the span, which is counted
/// (`Diagnostics::dropped_thread_ended`) when the sampler keeps a new trace, as it would have
/// been asked for a root.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(super) fn with_plan<R>(
    site: &'static Site,
    start: Start,
    place: impl FnOnce(&mut Local, Result<Planned, NotStarted>) -> R,
) -> Option<R> {
    let placed = with_local(|local| {
        let plan = plan(local, site, start);
        place(local, plan)
    });
    if placed.is_none() {
        not_started_thread_ended();
    }
    placed
}

#[cold]
#[inline(never)]
fn not_started_thread_ended() {
    if sampler::keep_new_trace() {
        crate::diagnostics::count_dropped_thread_ended();
    }
}

/// Decides where a span that a builder describes belongs, and whether it is recorded (a
/// shadow, counted only, included), without making its record yet. Inlined into
/// [`with_plan`]'s callers, which then read what it returns field by field.
#[cfg_attr(not(debug_assertions), inline(always))]
fn plan(local: &mut Local, site: &'static Site, start: Start) -> Result<Planned, NotStarted> {
    let Start {
        under,
        operation_name,
        extra,
    } = start;
    match decide(local, under) {
        Decision::Record(parent) => Ok(Planned {
            site,
            parent,
            operation_name,
            extra,
            shadow: false,
        }),
        decision => {
            let carries_state = extra
                .as_ref()
                .is_some_and(|extra| extra.trace_state.is_some());
            match shadow_parent(local, &decision, carries_state) {
                Some(parent) => Ok(Planned {
                    site,
                    parent,
                    operation_name,
                    extra,
                    shadow: true,
                }),
                None => Err(match decision {
                    Decision::Unsampled(trace_id) => NotStarted::Unsampled(trace_id),
                    _ => NotStarted::Inert,
                }),
            }
        }
    }
}

/// The parent of a span a builder starts in a dropped trace (`trace_id`: the dropped trace's
/// id when the decision knew it, for a new root or a remote parent's): when the standard
/// metrics are on, it is recorded anyway, as a shadow that the export worker counts and never
/// exports, so that requests and calls whose values are known only at run time (a status, a
/// target) are counted with them. Spans under a shadow are not recorded; its context is not
/// sampled. A span given a `tracestate` (a request whose caller's trace is not recorded,
/// `carries_state`) is a shadow whatever the metrics: its frame holds that state for the calls
/// it makes, which pass it on.
fn shadow_parent(local: &mut Local, decision: &Decision, carries_state: bool) -> Option<Parent> {
    if !crate::standard::counting() && !carries_state {
        return None;
    }
    let trace_id = match decision {
        Decision::Unsampled(Some(trace_id)) => *trace_id,
        Decision::Unsampled(None) => sampler::dropped_trace_id(),
        // Under a dropped trace: its id, drawn now if nothing asked for it yet.
        _ => local
            .unsampled_trace_id()
            .unwrap_or_else(sampler::dropped_trace_id),
    };
    Some(Parent {
        trace_id,
        parent_id: None,
        operation_name: None,
        sample_rate: sampler::percentage(),
        kept_by: KeptBy::Parent,
    })
}

/// What a builder adds to a span when it starts.
#[derive(Default)]
pub(super) struct Start {
    pub(super) under: Under,
    pub(super) operation_name: Option<OperationName>,
    pub(super) extra: Option<Box<SpanExtra>>,
}
