//! What a span knows of the panic that unwinds through it.
//!
//! The message comes from the panic's payload: a span made by the attributes,
//! [`SpanBuilder::in_scope`](crate::span::SpanBuilder::in_scope) or
//! [`SpanBuilder::instrument`](crate::span::SpanBuilder::instrument) catches the unwinding
//! payload, describes it and resumes it, so the message is known whatever panic hooks the
//! application sets, before census or after it.
//!
//! The location is known only to a panic hook. census chains one at install; it notes the
//! message, the location and the spans on the thread's stack. The first span a panic unwinds
//! through takes the note's location only when the note is of this panic: the same message,
//! and that span was on the stack when the hook ran. A payload resumed later
//! (`std::panic::resume_unwind`, as `JoinError::into_panic` users do) runs no hook, so it is
//! described by its payload alone and never by an older note.
//!
//! The outer spans of one unwinding get the inner span's description: the payload keeps its
//! address while it is caught and resumed, and each span names the parent that should catch it
//! next.

use std::any::Any;
use std::borrow::Cow;
use std::cell::RefCell;

use crate::backtrace::PanicBacktrace;
use crate::id::SpanId;
use crate::local::with_local;
use crate::record::ExceptionInfo;

/// What census's panic hook saw of the last panic on this thread.
struct Noted {
    /// The recorded spans on the stack when the hook ran, innermost last.
    on_stack: Vec<SpanId>,
    message: String,
    location: Option<String>,
    backtrace: Option<PanicBacktrace>,
}

/// The panic unwinding through this thread's spans, as the last span that caught it left it.
struct Unwinding {
    /// The payload's address: the same box from the first catch to the last resume.
    payload: usize,
    /// The span expected to catch it next: the parent of the last one that did.
    next: Option<SpanId>,
    info: ExceptionInfo,
}

#[derive(Default)]
struct PanicState {
    noted: Option<Noted>,
    unwinding: Option<Unwinding>,
}

thread_local! {
    static STATE: RefCell<PanicState> = RefCell::default();
}

/// Runs `f` on this thread's panic state; `None` while the thread is torn down or the state is
/// in use (a panic inside census's own bookkeeping, which never happens short of a bug).
fn with_state<R>(f: impl FnOnce(&mut PanicState) -> R) -> Option<R> {
    STATE
        .try_with(|state| state.try_borrow_mut().ok().map(|mut state| f(&mut state)))
        .ok()
        .flatten()
}

/// A payload's message: its `&str` or `String`, else what it is.
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

fn exception(
    message: String,
    location: Option<String>,
    backtrace: Option<PanicBacktrace>,
) -> ExceptionInfo {
    ExceptionInfo {
        type_name: Cow::Borrowed("panic"),
        message,
        location,
        backtrace,
    }
}

/// Describes the panic whose payload was caught unwinding through the span `span_id`, a child of
/// `parent_id`, and remembers the description for the spans it unwinds through next.
pub(super) fn describe_caught(
    span_id: SpanId,
    parent_id: Option<SpanId>,
    payload: &(dyn Any + Send),
) -> ExceptionInfo {
    let address = std::ptr::from_ref(payload).cast::<()>() as usize;
    let described = with_state(|state| {
        if let Some(unwinding) = &mut state.unwinding
            && unwinding.payload == address
            && unwinding.next == Some(span_id)
        {
            unwinding.next = parent_id;
            return unwinding.info.clone();
        }
        let message = payload_message(payload);
        let (location, backtrace) = match state.noted.take() {
            Some(noted) if noted.message == message && noted.on_stack.contains(&span_id) => {
                (noted.location, noted.backtrace)
            }
            _ => (None, None),
        };
        let info = exception(message, location, backtrace);
        state.unwinding = Some(Unwinding {
            payload: address,
            next: parent_id,
            info: info.clone(),
        });
        info
    });
    described.unwrap_or_else(|| exception(payload_message(payload), None, None))
}

/// Describes the panic unwinding through the span `span_id` when no payload is at hand (a
/// [`SpanGuard`](crate::span::SpanGuard) held in the application's own code): the description of
/// the unwinding it is part of, else census's hook's note when the span was on the stack, else
/// only that it panicked.
pub(super) fn describe_uncaught(span_id: SpanId) -> ExceptionInfo {
    let described = with_state(|state| {
        if let Some(unwinding) = &state.unwinding
            && unwinding.next == Some(span_id)
        {
            return Some(unwinding.info.clone());
        }
        state
            .noted
            .as_ref()
            .filter(|noted| noted.on_stack.contains(&span_id))
            .map(|noted| {
                exception(
                    noted.message.clone(),
                    noted.location.clone(),
                    noted.backtrace.clone(),
                )
            })
    });
    described
        .flatten()
        .unwrap_or_else(|| exception("panicked".to_owned(), None, None))
}

/// Chains a panic hook that notes each panic's message and location for the spans it unwinds
/// through, then calls the hook it replaced. Installed once per process.
pub(crate) fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            note(info);
            previous(info);
        }));
    });
}

fn note(info: &std::panic::PanicHookInfo<'_>) {
    let on_stack: Vec<SpanId> = with_local(|local| {
        local
            .frames()
            .filter_map(|frame| frame.record().map(|record| record.span_id()))
            .collect()
    })
    .unwrap_or_default();
    let noted = (!on_stack.is_empty()).then(|| Noted {
        on_stack,
        message: info
            .payload_as_str()
            .map_or_else(|| payload_message(info.payload()), str::to_owned),
        location: info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
        // Only here, with a recorded span on the stack, and only when backtraces are on: the
        // stack is walked now, and resolved by the exporter on its own thread.
        backtrace: PanicBacktrace::capture(),
    });
    with_state(|state| {
        // A new panic: whatever unwound before is over.
        state.unwinding = None;
        state.noted = noted;
    });
}
