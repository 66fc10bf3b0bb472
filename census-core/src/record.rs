//! The records that leave the thread that made them, for the export worker and the exporters:
//! [`Record`], one item of telemetry, is a span ([`SpanRecord`], built by one constructor,
//! [`SpanRecord::start`], and changed only through the methods here), a log record
//! ([`LogRecord`]) or a custom event ([`EventRecord`]).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::{self, Display};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_utils::CachePadded;

use crate::clock;
use crate::id::{SpanContext, SpanId, TraceId};
use crate::site::{Site, SpanKind};
use crate::text::Text;

/// A finished span, as exporters receive it.
///
/// ```
/// # use census_runtime::Sampler;
/// # use census_runtime::export::MemoryExporter;
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install().unwrap();
/// census_runtime::span("checkout").kind("SQL").target("orders-db").in_scope(|| {});
/// census.flush(std::time::Duration::from_secs(5)).unwrap();
/// let span = &memory.spans()[0];
/// assert_eq!((span.name(), span.kind(), span.target()), ("checkout", "SQL", Some("orders-db")));
/// assert!(span.success());
/// ```
#[derive(Clone, Debug)]
pub struct SpanRecord {
    site: &'static Site,
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    start: u64,
    end: u64,
    sample_rate: f32,
    success: bool,
    /// What the `tracing` layer notes of a span it made, beyond its values: bits whose
    /// meaning is the layer's own (`integrations/tracing/span_fields.rs`), kept here where the
    /// record has room to spare (a field of the layer's table made each entry 16 bytes larger).
    #[cfg(feature = "tracing")]
    marks: u8,
    kept_by: KeptBy,
    /// A span of a trace the sampler dropped, recorded only to be counted into the standard
    /// metrics: the export worker counts it and never hands it to an exporter.
    shadow: bool,
    /// The name the whole operation is grouped under: set on a request, inherited by its children.
    operation_name: Option<OperationName>,
    extra: Option<Box<SpanExtra>>,
}

/// Why a recorded span's trace is recorded, as the span that brought it into this process says:
/// what a sampler that holds a budget counts (the spans under those say [`KeptBy::Parent`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum KeptBy {
    /// Its parent is recorded in this process.
    #[default]
    Parent,
    /// This process's sampler kept it: a new trace's root, or the first span under a caller
    /// that carries no sampled flag (a legacy `Request-Id`).
    Sampler,
    /// Its caller recorded the trace and said so with the W3C sampled flag: followed whatever
    /// the rate.
    Caller,
}

/// The values of a span that are known only at run time. Most spans have none. A log record's
/// key-values and error are kept in the same box (`properties`, `failure`'s `errors`), so that
/// the worker hands it back with the spans' ([`recycle`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanExtra {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) kind: Option<Cow<'static, str>>,
    pub(crate) target: Option<Cow<'static, str>>,
    pub(crate) data: Option<Cow<'static, str>>,
    pub(crate) result_code: Option<Cow<'static, str>>,
    pub(crate) error: Option<String>,
    /// Custom properties, in order; the values inline up to 30 bytes ([`Value`]).
    pub(crate) properties: Vec<(Cow<'static, str>, Value)>,
    /// What an Exception item is made of, when the span sends one: rare, so kept out of the box
    /// that every span with run-time values fills (192 bytes instead of 288: a span that
    /// `census_runtime::span` describes, with a property, took 110-113 ns with them inside,
    /// 96-99 ns without, the `tracing` layer's span 334-339 and 324-329 ns, alternating).
    pub(crate) failure: Option<Box<Failure>>,
    /// The W3C `tracestate` that came in with a request, passed on by outgoing calls.
    pub(crate) trace_state: Option<Arc<str>>,
}

/// A property's value (a span's, a log record's, an event's): up to 30 bytes kept inline (the
/// type is 32 bytes), longer ones on the heap. A number, a flag or a short identifier allocates
/// nothing; a `String` was allocated for every property on the thread that recorded it, and a
/// log record's was freed on the export worker (memory freed on another thread than the one that
/// allocated it makes both wait for the allocator's lock).
pub(crate) type Value = Text<30>;

/// `value`'s `Display` as a property value, written in place.
pub(crate) fn to_value<T: Display + ?Sized>(value: &T) -> Value {
    Value::format(format_args!("{value}"))
}

/// Pushes the property `key` with an empty value, and gives the value back to be written where
/// it lies. A value made aside and then moved into the list is read back at once, in wider
/// loads than the writes that have just made it, which the processor cannot forward: it waits
/// for them to reach its cache (in a profile of a `tracing` span with one integer field, four
/// fifths of the time spent on the field).
///
/// The pair is written in its slot a field at a time, not pushed: a pair built on the stack and
/// copied in was read back in 16-byte loads across the key's 8-byte stores and the value's
/// 2-byte one, the same wait (three fifths of a `tracing` span's integer field in a profile).
#[inline]
pub(crate) fn new_property<'a>(
    properties: &'a mut Vec<(Cow<'static, str>, Value)>,
    key: Cow<'static, str>,
) -> &'a mut Value {
    properties.reserve(1);
    let at = properties.len();
    // SAFETY: `reserve` made room for one more pair at `at`; both its fields are written
    // before the length covers them, and nothing between can panic.
    unsafe {
        let slot = properties.as_mut_ptr().add(at);
        std::ptr::addr_of_mut!((*slot).0).write(key);
        std::ptr::addr_of_mut!((*slot).1).write(Value::new());
        properties.set_len(at + 1);
        &mut (*slot).1
    }
}

/// Pushes the property `key` with `value`'s `Display`, written in place ([`new_property`]).
pub(crate) fn push_display(
    properties: &mut Vec<(Cow<'static, str>, Value)>,
    key: Cow<'static, str>,
    value: &(impl Display + ?Sized),
) {
    new_property(properties, key).append(format_args!("{value}"));
}

/// Writes the values of a site's `fields(...)`, by `Display`, under their names.
pub(crate) fn push_fields(
    properties: &mut Vec<(Cow<'static, str>, Value)>,
    names: &'static [&'static str],
    values: &[&dyn Display],
) {
    for (name, value) in names.iter().zip(values) {
        push_display(properties, Cow::Borrowed(*name), value);
    }
}

/// The property a span's links go in: a JSON array of the spans it is linked to, each by its
/// operation (trace) id and span id, `[{"operation_Id": "0af7…319c", "id": "b7ad…3331"}]`, as the
/// Python reference and the Azure Monitor exporters write them for the portal to read.
pub const LINKS_PROPERTY: &str = "_MS.links";

/// The property a request's client address goes in (the OpenTelemetry conventions'
/// `client.address`): sent as the Request's `ai.location.ip` tag, from which Application
/// Insights derives the client's country and city (and which it then masks, unless the
/// resource is set to keep addresses), and not as a custom property, which nothing masks. The
/// HTTP server integrations set it from `X-Forwarded-For`, else the connection's peer; a
/// `tracing` span's `client.address` or `http.client_ip` field is it too.
pub const CLIENT_ADDRESS_PROPERTY: &str = "client.address";

/// The property an item's authenticated user goes in (the OpenTelemetry conventions'
/// `enduser.id`): sent as its `ai.user.authUserId` tag, which the portal's Users, Sessions and
/// funnels count by, and not as a custom property, as the Azure Monitor exporters send it. A
/// span's (a `tracing` span's field, or `.property(AUTHENTICATED_USER_PROPERTY, ..)`), a
/// `tracing` event's field, or a custom event's property.
pub const AUTHENTICATED_USER_PROPERTY: &str = "enduser.id";

/// The property an item's anonymous user id goes in (`enduser.pseudo.id`): sent as its
/// `ai.user.id` tag, as [`AUTHENTICATED_USER_PROPERTY`] is.
pub const USER_PROPERTY: &str = "enduser.pseudo.id";

/// The most links a span keeps: each is 80 characters of the property's value, which
/// ingestion takes up to 8,192 (the Azure Monitor exporters keep as many).
pub const MAX_LINKS: usize = 100;

/// Links the span whose properties these are to `to` ([`LINKS_PROPERTY`]); past
/// [`MAX_LINKS`], left out. The property is the span's last of that name (the one its envelope
/// carries): a JSON array there, its links or ones the application wrote, is extended; any
/// other value, which the portal could not read as links, is replaced.
pub(crate) fn push_link(properties: &mut Vec<(Cow<'static, str>, Value)>, to: SpanContext) {
    let Some((_, links)) = properties
        .iter_mut()
        .rev()
        .find(|(key, _)| key == LINKS_PROPERTY)
    else {
        new_property(properties, Cow::Borrowed(LINKS_PROPERTY))
            .append(format_args!("[{}]", Link(to)));
        return;
    };
    // The links the array holds, when it is one and holds any.
    let kept = links
        .as_str()
        .trim()
        .strip_prefix('[')
        .and_then(|kept| kept.strip_suffix(']'))
        .map(str::trim_end)
        .filter(|kept| !kept.trim_start().is_empty());
    *links = match kept {
        Some(kept) if kept.matches("\"operation_Id\"").count() >= MAX_LINKS => return,
        Some(kept) => Value::format(format_args!("[{kept}, {}]", Link(to))),
        None => Value::format(format_args!("[{}]", Link(to))),
    };
}

/// One link of [`LINKS_PROPERTY`]'s array: `{"operation_Id": "…", "id": "…"}`.
struct Link(SpanContext);

impl Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{\"operation_Id\": \"{}\", \"id\": \"{}\"}}",
            self.0.trace_id(),
            self.0.span_id()
        )
    }
}

/// Which keys of a list of properties (or measurements) a later key repeats (`true`), so that
/// each key is sent and shown once, with the value given last: setting a property again replaces
/// it (as an OpenTelemetry attribute set again does, and as the Python reference's properties, a
/// `dict`, do), a log record's own key-value named `level` replaces the record's level property,
/// and a failed span's `error.message` its own property of that name. JSON leaves an object that
/// repeats a key to each reader (one takes the first, one the last, one rejects it). `None`
/// when every key is different, as almost always: most often seen in one pass that compares no
/// text (keys of different lengths or last bytes differ, [`sketch`]), else found comparing each
/// key with those after it (a few keys), or through a set (many), allocating only when a key is
/// repeated or there are many.
pub(crate) fn replaced<'a, I>(keys: impl Fn() -> I) -> Option<Vec<bool>>
where
    I: Iterator<Item = &'a str>,
{
    /// Up to this many keys, each is compared with those after it.
    const COMPARED: usize = 16;
    let (mut seen, mut alike, mut count) = (0u64, false, 0usize);
    for key in keys() {
        let bit = sketch(key);
        alike |= seen & bit != 0;
        seen |= bit;
        count += 1;
    }
    if !alike {
        return None;
    }
    if count <= COMPARED {
        let repeated = |i: usize, key: &str| keys().skip(i + 1).any(|later| later == key);
        let first = keys().enumerate().position(|(i, key)| repeated(i, key))?;
        return Some(
            keys()
                .enumerate()
                .map(|(i, key)| i >= first && repeated(i, key))
                .collect(),
        );
    }
    let all: Vec<&str> = keys().collect();
    let mut later = std::collections::HashSet::with_capacity(all.len());
    let mut replaced = vec![false; all.len()];
    for (i, key) in all.iter().enumerate().rev() {
        replaced[i] = !later.insert(*key);
    }
    replaced.contains(&true).then_some(replaced)
}

/// One bit of 64 for a key, from its length and its last byte: two keys with different bits are
/// different keys.
fn sketch(key: &str) -> u64 {
    let last = key.as_bytes().last().copied().unwrap_or(0);
    let mixed = (key.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(last).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    1 << (mixed >> 58)
}

/// The members of `pairs` that [`replaced`] keeps.
pub(crate) fn last_of_each<'r, K, V>(
    pairs: impl Iterator<Item = (K, V)> + 'r,
    replaced: &'r [bool],
) -> impl Iterator<Item = (K, V)> + 'r {
    pairs
        .zip(replaced)
        .filter(|(_, replaced)| !**replaced)
        .map(|(pair, _)| pair)
}

/// The value of `key` among `properties`: the one given last, which the item carries
/// ([`replaced`]).
pub(crate) fn last_value<'a>(
    properties: impl Iterator<Item = (&'a str, &'a str)>,
    key: &str,
) -> Option<&'a str> {
    properties
        .filter(|(given, _)| *given == key)
        .last()
        .map(|(_, value)| value)
}

/// `text` as an IP address, when it is one: an address, or a socket address (`1.2.3.4:80`,
/// `[2001:db8::7]:443`) whose port is left out, or an IPv6 address in brackets. How a client's
/// address is read, from `X-Forwarded-For` or from [`CLIENT_ADDRESS_PROPERTY`].
#[cfg_attr(
    not(any(feature = "azure", feature = "tower", feature = "actix-web")),
    allow(dead_code, reason = "the Azure exporter's and the HTTP servers'")
)]
pub(crate) fn ip_address(text: &str) -> Option<std::net::IpAddr> {
    let text = text.trim();
    text.parse()
        .ok()
        .or_else(|| {
            text.parse::<std::net::SocketAddr>()
                .ok()
                .map(|address| address.ip())
        })
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// What a span sends as an Exception item: the panic that unwound through it, or the `Err` that
/// failed it and its `source()`s, outermost first.
#[derive(Clone, Debug, Default)]
pub(crate) struct Failure {
    pub(crate) exception: Option<ExceptionInfo>,
    pub(crate) errors: Vec<ErrorDetail>,
}

impl SpanExtra {
    /// What the span sends as an Exception item, made on first use.
    pub(crate) fn failure_mut(&mut self) -> &mut Failure {
        self.failure.get_or_insert_with(Box::default)
    }
}

// ---------------------------------------------------------------------------------------------
// The boxes of run-time values, handed back.
//
// A span's `SpanExtra` is boxed on the thread that records it and dropped on the export
// worker. Memory allocated on one thread and freed on another makes both wait for the
// allocator's lock (the glibc arena's: a `tracing` span with a field spent a third of its time
// there), so the worker hands the boxes back, as they are, and a thread that needs one takes
// one of those: it drops the old values itself, where they were most likely allocated.
//
// A thread takes the boxes handed back longest ago. The ones handed back last are still in the
// worker's core's cache, which has just read them, and each of their lines would have to be
// taken from there when the thread writes it; those that have waited are in the cache the
// cores share, or in memory, and are fetched for the next spans while this one runs. A span
// that `census_runtime::span` describes, with one property, took 196-208 ns with the newest
// boxes, 161-171 ns with the oldest, and 108-112 ns with the next ones fetched ahead
// (alternating runs).

/// Boxes the worker handed back, for any thread: handed back at the back, taken at the front.
static SPARE_EXTRAS: CachePadded<std::sync::Mutex<VecDeque<Box<SpanExtra>>>> =
    CachePadded::new(std::sync::Mutex::new(VecDeque::new()));
/// At most this many boxes wait in [`SPARE_EXTRAS`]: as many as a busy thread has in flight
/// (its ring holds up to 8,192 spans, drained when half full; about 10,000 boxes are in flight
/// in the ring, the worker's batch and the spare lists). Kept to 4,096, a thread recording
/// `tracing` spans as fast as it could found none spare for one span in eight, and allocated a
/// box that the worker later freed: a fifth of the span's cost through the layer.
const SPARE_EXTRAS_MAX: usize = 16_384;
/// A thread takes this many at once, the oldest.
const SPARE_EXTRAS_TAKEN: usize = 64;
/// A box whose values hold more than this (in bytes of their strings) is not handed back: its
/// memory is released rather than kept waiting for a reuse.
const SPARE_EXTRA_BYTES: usize = 1024;

std::thread_local! {
    #[expect(
        clippy::vec_box,
        reason = "the boxes themselves are handed back and reused"
    )]
    static LOCAL_EXTRAS: std::cell::RefCell<Vec<Box<SpanExtra>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty box of run-time values for a span named `name` (`None`: its site's name): one
/// handed back by the worker when this thread has one at hand (taken without waiting), emptied
/// in place, else a new one.
///
/// The name is written here, in the caller, from the registers that hold it: passed on to the
/// function that takes the box, it went through memory (it is three words), written there a
/// word at a time and read back in wider loads, which the processor cannot forward (in a
/// profile of a `census_runtime::span` with a property, that one wait was a quarter of the
/// time).
#[inline]
pub(crate) fn boxed_extra(name: Option<Cow<'static, str>>) -> Box<SpanExtra> {
    let mut boxed = empty_extra();
    boxed.name = name;
    boxed
}

/// Keeps a box [`boxed_extra`] gave and nothing took (an event not sent: in a trace that is
/// not recorded, or a `tracing` event whose `census.event` had no value) for this thread's next
/// span.
pub(crate) fn give_back_extra(boxed: Box<SpanExtra>) {
    let _ = LOCAL_EXTRAS.try_with(|local| {
        if let Ok(mut local) = local.try_borrow_mut()
            && local.len() < SPARE_EXTRAS_TAKEN
        {
            local.push(boxed);
        }
    });
}

/// An empty box of run-time values, as [`boxed_extra`] gives it, without a name.
fn empty_extra() -> Box<SpanExtra> {
    match handed_back() {
        Some(mut boxed) => {
            boxed.reset();
            boxed
        }
        None => Box::default(),
    }
}

/// A box the worker handed back, taken without waiting.
fn handed_back() -> Option<Box<SpanExtra>> {
    LOCAL_EXTRAS
        .try_with(|local| {
            let mut local = local.try_borrow_mut().ok()?;
            if local.is_empty()
                && let Ok(mut shared) = SPARE_EXTRAS.try_lock()
            {
                let taken = shared.len().min(SPARE_EXTRAS_TAKEN);
                local.extend(shared.drain(..taken));
            }
            let taken = local.pop();
            // What the next spans write is fetched into this core's cache meanwhile, as for a
            // write, a step at a time so that nothing waits: the third box from here; the list
            // of properties of the second, whose box came at the last take (a short value is
            // written in the list itself).
            let ahead = |steps: usize| local.len().checked_sub(steps).and_then(|at| local.get(at));
            if let Some(property) = ahead(2).and_then(|second| second.properties.first()) {
                prefetch_for_write(property);
            }
            if let Some(third) = ahead(3) {
                prefetch_for_write(&**third);
            }
            taken
        })
        .ok()
        .flatten()
}

/// Asks the processor to fetch the memory of `value` into this core's cache, ready to be
/// written, and goes on without waiting. The instruction is `prefetchw`, written out: no
/// stable intrinsic emits it without the `prfchw` target feature, and a read prefetch would
/// leave each line to be claimed again at its first write.
#[inline]
fn prefetch_for_write<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        // Every line the value touches: it need not start at a line's start.
        let start = std::ptr::from_ref(value).cast::<u8>();
        let offset = start.addr() % 64;
        let first = start.wrapping_sub(offset);
        for line in 0..(offset + size_of_val(value)).div_ceil(64).max(1) {
            // SAFETY: a prefetch neither reads nor writes memory as the program sees it and
            // never faults, whatever the address; a CPU without `prefetchw` runs it as a no-op.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{0}]",
                    in(reg) first.wrapping_add(line * 64),
                    options(nostack, preserves_flags, readonly)
                );
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

impl SpanExtra {
    /// Empties the box, field by field: the property list keeps its
    /// memory, so that the span pushes its properties without an allocation, and nothing is
    /// built aside to be copied in (a `census_runtime::span` with a property took 104 ns when
    /// its values were built aside and moved into the box, 93-95 ns emptied in place; the
    /// `tracing` layer's span 338 and 318-322 ns).
    fn reset(&mut self) {
        // Every field, by name: one added later cannot be left out.
        let SpanExtra {
            name,
            kind,
            target,
            data,
            result_code,
            error,
            properties,
            failure,
            trace_state,
        } = self;
        *name = None;
        *kind = None;
        *target = None;
        *data = None;
        *result_code = None;
        *error = None;
        properties.clear();
        *failure = None;
        *trace_state = None;
    }
}

/// Lets go of exported records (the worker, once every exporter has seen them): the boxes of
/// the spans' and log records' run-time values are handed back to the threads, and the boxes of
/// log records kept for the next ones this thread boxes.
pub(crate) fn recycle(records: &mut Vec<Record>) {
    // The boxes are gathered first, then handed over at once under the lock that threads
    // taking one only try: the lock is held for a copy of pointers rather than for a walk
    // through the batch (held for the walk, it turned a thread away for one `tracing` span in
    // fifteen, which then allocated a box). Those over the cap are freed after it is let go.
    let mut gathered: Vec<Box<SpanExtra>> = records
        .iter_mut()
        .filter_map(|record| {
            let extra = match record {
                Record::Span(span) => &mut span.extra,
                Record::Log(log) => &mut log.extra,
                Record::Event(event) => &mut event.values,
                _ => return None,
            };
            extra.take_if(|extra| extra.held_bytes() <= SPARE_EXTRA_BYTES)
        })
        .collect();
    if !gathered.is_empty() {
        let mut shared = SPARE_EXTRAS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = SPARE_EXTRAS_MAX.saturating_sub(shared.len());
        shared.extend(gathered.drain(..room.min(gathered.len())));
    }
    drop(gathered);
    let _ = SPARE_LOG_BOXES.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        for record in records.drain(..) {
            match record {
                // Kept only when it holds no memory of its own, which a reuse would free late.
                Record::Log(log)
                    if spare.len() < SPARE_LOG_BOXES_MAX
                        && log.extra.is_none()
                        && log.message.is_inline() =>
                {
                    spare.push(log);
                }
                _ => {}
            }
        }
    });
    records.clear();
}

// ---------------------------------------------------------------------------------------------
// The boxes of log records, kept by the export worker.
//
// A log record travels inline in its thread's ring and is boxed by the worker when it drains
// the ring (so that a batch of spans moves no empty bytes). Thousands of boxes made and freed
// per batch overflow the allocator's per-thread cache, and each then costs a trip through its
// shared bins: the worker keeps the boxes instead.

std::thread_local! {
    #[expect(
        clippy::vec_box,
        reason = "the boxes themselves are kept and reused"
    )]
    static SPARE_LOG_BOXES: std::cell::RefCell<Vec<Box<LogRecord>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// At most this many log records' boxes are kept.
pub(crate) const SPARE_LOG_BOXES_MAX: usize = 4096;

/// `log` in a box this thread kept, or a new one.
fn boxed_log(log: LogRecord) -> Box<LogRecord> {
    let spare = SPARE_LOG_BOXES
        .try_with(|spare| spare.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten();
    match spare {
        Some(mut boxed) => {
            *boxed = log;
            boxed
        }
        None => Box::new(log),
    }
}

impl SpanExtra {
    /// Roughly what its strings hold.
    fn held_bytes(&self) -> usize {
        #[expect(clippy::ptr_arg, reason = "an owned string is what is counted")]
        fn owned(c: &Cow<'static, str>) -> usize {
            match c {
                Cow::Owned(s) => s.capacity(),
                Cow::Borrowed(_) => 0,
            }
        }
        let cow = |c: &Option<Cow<'static, str>>| c.as_ref().map_or(0, owned);
        cow(&self.name)
            + cow(&self.kind)
            + cow(&self.target)
            + cow(&self.data)
            + cow(&self.result_code)
            + self.error.as_ref().map_or(0, String::capacity)
            + self
                .properties
                .iter()
                .map(|(k, v)| owned(k) + v.heap_bytes() + 16)
                .sum::<usize>()
            + self.failure.as_ref().map_or(0, |failure| {
                failure.errors.len() * 64 + usize::from(failure.exception.is_some()) * 256
            })
    }
}

/// What is known of a panic that unwound through a span.
///
/// ```
/// use census_runtime::export::SpanRecord;
///
/// /// What a span's panic says, for a report of one's own.
/// fn panicked(span: &SpanRecord) -> Option<String> {
///     let panic = span.exception()?;
///     let at = panic.location.as_deref().unwrap_or("an unknown place");
///     Some(format!("{}: {} at {at}", panic.type_name, panic.message))
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceptionInfo {
    /// The kind of exception: `panic`.
    pub type_name: Cow<'static, str>,
    /// The panic's message.
    pub message: String,
    /// Where it panicked, `file:line:column`, when known.
    pub location: Option<String>,
    /// The backtrace, when one was captured (`RUST_BACKTRACE`, or
    /// [`PipelineBuilder::panic_backtraces`](crate::pipeline::PipelineBuilder::panic_backtraces)).
    pub backtrace: Option<crate::backtrace::PanicBacktrace>,
}

/// What a span's record is opened with: all it holds when it starts but its start, which
/// [`SpanRecord::open`] reads.
pub(crate) struct Opening {
    pub(crate) site: &'static Site,
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_id: Option<SpanId>,
    pub(crate) operation_name: Option<OperationName>,
    pub(crate) sample_rate: f32,
    pub(crate) kept_by: KeptBy,
    pub(crate) extra: Option<Box<SpanExtra>>,
    pub(crate) shadow: bool,
}

impl SpanRecord {
    /// The span `opening` describes, starting now: the one way a record is made, written whole
    /// at once, so that a record made where it is kept is written there field by field and
    /// never copied (set afterwards, its fields were written in a temporary first). The clock
    /// is read last, so that the span starts as late as it can.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn open(opening: Opening) -> Self {
        let Opening {
            site,
            trace_id,
            span_id,
            parent_id,
            operation_name,
            sample_rate,
            kept_by,
            extra,
            shadow,
        } = opening;
        SpanRecord {
            site,
            trace_id,
            span_id,
            parent_id,
            start: clock::now(),
            end: 0,
            sample_rate,
            success: true,
            #[cfg(feature = "tracing")]
            marks: 0,
            kept_by,
            shadow,
            operation_name,
            extra,
        }
    }

    /// A root span of `site` in a new trace, recorded at 100 %, starting now: for tests.
    #[cfg(test)]
    pub(crate) fn test_root(site: &'static Site) -> Self {
        SpanRecord::start(site, TraceId::random(), SpanId::random(), None, None, 100.0)
    }

    /// Whether this is a shadow, recorded only to be counted.
    pub(crate) fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// When the span started, as a clock reading.
    pub(crate) fn start_ticks(&self) -> u64 {
        self.start
    }

    /// When the span ended, as a clock reading (0 while it is open).
    pub(crate) fn end_ticks(&self) -> u64 {
        self.end
    }

    /// Sets both clock readings: for tests that need spans of known times.
    #[cfg(test)]
    pub(crate) fn set_ticks(&mut self, start: u64, end: u64) {
        self.start = start;
        self.end = end;
    }

    /// Sets the sampling percentage the span says it was kept at: for tests.
    #[cfg(all(test, feature = "azure"))]
    pub(crate) fn set_sample_rate(&mut self, rate: f32) {
        self.sample_rate = rate;
    }

    /// Why the span's trace is recorded.
    pub(crate) fn kept_by(&self) -> KeptBy {
        self.kept_by
    }

    /// The sampling percentage the span's trace was kept at, as the span stores it.
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn sample_percent(&self) -> f32 {
        self.sample_rate
    }

    /// Stamps the span's end (a clock reading).
    #[cfg_attr(not(debug_assertions), inline(always))]
    pub(crate) fn set_end(&mut self, end: u64) {
        self.end = end;
    }

    /// Sets whether the operation succeeded.
    pub(crate) fn set_success(&mut self, success: bool) {
        self.success = success;
    }

    /// The `tracing` layer's marks (see [`SpanRecord::marks`]).
    #[cfg(feature = "tracing")]
    pub(crate) fn marks(&self) -> u8 {
        self.marks
    }

    /// Sets the `tracing` layer's marks.
    #[cfg(feature = "tracing")]
    pub(crate) fn set_marks(&mut self, marks: u8) {
        self.marks = marks;
    }

    /// The operation name, shared with the spans started under this one.
    pub(crate) fn shared_operation_name(&self) -> Option<OperationName> {
        self.operation_name.clone()
    }

    /// The values known only at run time, if any was set.
    pub(crate) fn extra(&self) -> Option<&SpanExtra> {
        self.extra.as_deref()
    }

    /// Whether anything of the span was set at run time (a name, a target, a result code, a
    /// failure, properties): without, its site describes it.
    pub(crate) fn has_extra(&self) -> bool {
        self.extra.is_some()
    }

    /// Replaces the values known only at run time.
    #[cfg(test)]
    pub(crate) fn set_extra(&mut self, extra: Option<Box<SpanExtra>>) {
        self.extra = extra;
    }

    /// The values known only at run time, made on first use.
    pub(crate) fn extra_mut(&mut self) -> &mut SpanExtra {
        self.extra.get_or_insert_with(|| boxed_extra(None))
    }

    /// The call site that produced the span.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// #[census_runtime::inproc]
    /// fn price() {}
    /// price();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("price").site().name(), "price");
    /// assert_eq!(memory.one("price").site().kind(), "INPROC");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn site(&self) -> &'static Site {
        self.site
    }

    /// The operation's name: set at run time, else the site's.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("price basket").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.spans()[0].name(), "price basket");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|e| e.name.as_deref())
            .unwrap_or(self.site.name())
    }

    /// The dependency type (`INPROC`, `SQL`, `HTTP`, ...).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("load").kind("SQL").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").kind(), "SQL");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kind(&self) -> &str {
        self.extra
            .as_ref()
            .and_then(|e| e.kind.as_deref())
            .unwrap_or(self.site.kind())
    }

    /// Dependency or request.
    ///
    /// ```
    /// use census_runtime::site::SpanKind;
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::request("GET /orders").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("GET /orders").span_kind(), SpanKind::Request);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn span_kind(&self) -> SpanKind {
        self.site.span_kind()
    }

    /// The target: set at run time, else the site's.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("load").target("orders-db").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").target(), Some("orders-db"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn target(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.target.as_deref())
            .or(self.site.target())
    }

    /// The command text (SQL, URL): set at run time, else the site's.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("load").data("SELECT * FROM orders").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").data(), Some("SELECT * FROM orders"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data(&self) -> Option<&str> {
        self.extra
            .as_ref()
            .and_then(|e| e.data.as_deref())
            .or(self.site.data())
    }

    /// The result code, when one was set or the span failed.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("charge").in_scope(|| census_runtime::current_span().set_result_code(402));
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("charge").result_code(), Some("402"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn result_code(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.result_code.as_deref())
    }

    /// Whether the operation succeeded.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let parsed = census_runtime::span("parse").try_in_scope(|| "300".parse::<u8>());
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert!(parsed.is_err());
    /// assert!(!memory.one("parse").success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn success(&self) -> bool {
        self.success
    }

    /// The failure's message (an error's `Display`, a panic's message).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let parsed = census_runtime::span("parse").try_in_scope(|| "300".parse::<u8>());
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("parse").error_message(), Some("number too large to fit in target type"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn error_message(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.error.as_deref())
    }

    /// The panic that unwound through the span, if any.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("price").in_scope(|| {});
    /// let unwound = std::panic::catch_unwind(|| {
    ///     census_runtime::span("reserve").in_scope(|| panic!("out of stock"))
    /// });
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert!(unwound.is_err());
    /// assert!(memory.one("price").exception().is_none()); // it did not panic
    /// let panic = memory.one("reserve").exception().cloned().expect("the span saw the panic");
    /// assert_eq!(panic.message, "out of stock");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn exception(&self) -> Option<&ExceptionInfo> {
        self.extra
            .as_ref()
            .and_then(|e| e.failure.as_ref()?.exception.as_ref())
    }

    /// The `Err` that failed the span and the errors that caused it (its `source()`s),
    /// outermost first, when it is sent as an Exception item too (the attribute's `exception`
    /// option, or [`PipelineBuilder::errors_as_exceptions`](crate::pipeline::PipelineBuilder::errors_as_exceptions));
    /// empty otherwise.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    ///
    /// let memory = MemoryExporter::new();
    /// let census = census_runtime::pipeline()
    ///     .errors_as_exceptions(true)
    ///     .exporter(memory.clone())
    ///     .install()?;
    /// let _ = census_runtime::span("load").try_in_scope(|| Err::<(), _>(std::fmt::Error));
    /// census.flush(std::time::Duration::from_secs(5))?;
    /// let span = &memory.spans()[0];
    /// assert_eq!(span.errors()[0].type_name, "Error");
    /// assert_eq!(span.errors()[0].message, "an error occurred when formatting an argument");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn errors(&self) -> &[ErrorDetail] {
        self.extra
            .as_ref()
            .and_then(|e| e.failure.as_ref())
            .map_or(&[], |failure| &failure.errors)
    }

    /// The custom properties recorded on the span (fields and `set_property`), in order.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("place order")
    ///     .property("customer", "ada")
    ///     .property("items", 3)
    ///     .in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// let span = memory.one("place order");
    /// let properties: Vec<_> = span.properties().collect();
    /// assert_eq!(properties, [("customer", "ada"), ("items", "3")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra
            .iter()
            .flat_map(|e| e.properties.iter())
            .map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// One property's value: the one given last, when the key was given more than once (the
    /// one the envelope carries).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("place order").property("customer", "ada").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("place order").property("customer"), Some("ada"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn property(&self, key: &str) -> Option<&str> {
        last_value(self.properties(), key)
    }

    /// The operation name the whole trace is grouped under, when one was set.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::request("GET /orders")
    ///     .in_scope(|| census_runtime::span("load").in_scope(|| {}));
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("load").operation_name(), Some("GET /orders"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn operation_name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }

    /// The trace (operation) id.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| census_runtime::span("charge").in_scope(|| {}));
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("charge").trace_id(), memory.one("checkout").trace_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span's own id.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| census_runtime::span("charge").in_scope(|| {}));
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("charge").parent_id(), Some(memory.one("checkout").span_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The parent span's id; `None` for the root of a trace.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("checkout").parent_id(), None); // the root of its trace
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parent_id(&self) -> Option<SpanId> {
        self.parent_id
    }

    /// The span's context.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// let span = memory.one("checkout");
    /// assert_eq!(span.context().span_id(), span.span_id());
    /// assert!(span.context().is_sampled());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn context(&self) -> SpanContext {
        SpanContext::new(self.trace_id, self.span_id, !self.shadow)
    }

    /// When the span started, wall clock.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let before = std::time::SystemTime::now();
    /// census_runtime::span("checkout").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert!(memory.one("checkout").start_time() >= before - std::time::Duration::from_millis(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_time(&self) -> SystemTime {
        clock::to_system_time(self.start)
    }

    /// How long it lasted.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("wait").in_scope(|| std::thread::sleep(std::time::Duration::from_millis(5)));
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert!(memory.one("wait").duration() >= std::time::Duration::from_millis(5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn duration(&self) -> Duration {
        clock::between(self.start, self.end)
    }

    /// The sampling percentage in force when the trace was sampled (100 keeps everything).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| {});
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.one("checkout").sample_rate(), 100.0); // every trace kept
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sample_rate(&self) -> f64 {
        f64::from(self.sample_rate)
    }

    /// Marks the span failed with `code` (unless a result code was set) and `message`.
    pub(crate) fn fail(&mut self, code: Cow<'static, str>, message: Option<String>) {
        self.success = false;
        let extra = self.extra_mut();
        if extra.result_code.is_none() {
            extra.result_code = Some(code);
        }
        if message.is_some() {
            extra.error = message;
        }
    }

    /// Records the values of the site's `fields(...)`, by `Display`.
    pub(crate) fn record_fields(&mut self, values: &[&dyn Display]) {
        let names = self.site.fields();
        if values.is_empty() || names.is_empty() {
            return;
        }
        push_fields(&mut self.extra_mut().properties, names, values);
    }

    /// Takes the run-time values in `given`, made aside: the box itself when the record has
    /// none yet, else its properties (the box is then kept for the thread's next span).
    pub(crate) fn take_extra(&mut self, mut given: Box<SpanExtra>) {
        match &mut self.extra {
            None => self.extra = Some(given),
            Some(extra) => {
                extra.properties.append(&mut given.properties);
                give_back_extra(given);
            }
        }
    }

    /// Marks the span failed by the panic described by `info`.
    pub(crate) fn fail_with_panic(&mut self, info: ExceptionInfo) {
        self.fail(Cow::Borrowed("panic"), Some(info.message.clone()));
        self.extra_mut().failure_mut().exception = Some(info);
    }
}

// ---------------------------------------------------------------------------------------------
// What is not a span: log records and custom events.

/// One item of telemetry, as exporters receive it.
///
/// ```
/// use census_runtime::export::{Exporter, Record, Resource};
///
/// /// Counts what it is given, by kind.
/// #[derive(Default)]
/// struct Tally { spans: usize, logs: usize, events: usize }
///
/// impl Exporter for Tally {
///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
///         for record in batch {
///             match record {
///                 Record::Span(_) => self.spans += 1,
///                 Record::Log(_) => self.logs += 1,
///                 Record::Event(_) => self.events += 1,
///                 _ => {}
///             }
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Record {
    /// A finished span: a dependency or a request.
    Span(SpanRecord),
    /// A log record or a `tracing` event: a `Message`, or an `Exception` when it carries an
    /// error. Boxed by the export worker (it travels inline from the thread that wrote it), so
    /// that a record is hardly larger than a span and a batch of spans moves no empty bytes.
    Log(Box<LogRecord>),
    /// A custom event.
    Event(Box<EventRecord>),
    /// A metric's figures over one interval (a minute by default): a `Metric` item.
    Metric(Box<MetricRecord>),
}

const _: () = assert!(size_of::<Record>() <= size_of::<SpanRecord>() + 8);

impl Record {
    /// The span, if this is one.
    ///
    /// ```
    /// use census_runtime::export::Record;
    ///
    /// /// The names of the spans of a batch.
    /// fn span_names(batch: &[Record]) -> Vec<&str> {
    ///     batch.iter().filter_map(Record::as_span).map(|span| span.name()).collect()
    /// }
    /// ```
    pub fn as_span(&self) -> Option<&SpanRecord> {
        match self {
            Record::Span(span) => Some(span),
            _ => None,
        }
    }

    /// The log record, if this is one.
    ///
    /// ```
    /// use census_runtime::export::{Record, Severity};
    ///
    /// /// The messages of a batch's warnings and errors.
    /// fn warnings(batch: &[Record]) -> Vec<&str> {
    ///     batch
    ///         .iter()
    ///         .filter_map(Record::as_log)
    ///         .filter(|log| log.severity() >= Severity::Warning)
    ///         .map(|log| log.message())
    ///         .collect()
    /// }
    /// ```
    pub fn as_log(&self) -> Option<&LogRecord> {
        match self {
            Record::Log(log) => Some(log),
            _ => None,
        }
    }

    /// The custom event, if this is one.
    ///
    /// ```
    /// use census_runtime::export::Record;
    ///
    /// /// How many orders a batch's events say were placed.
    /// fn orders_placed(batch: &[Record]) -> usize {
    ///     batch
    ///         .iter()
    ///         .filter_map(Record::as_event)
    ///         .filter(|event| event.name() == "order_placed")
    ///         .count()
    /// }
    /// ```
    pub fn as_event(&self) -> Option<&EventRecord> {
        match self {
            Record::Event(event) => Some(event),
            _ => None,
        }
    }

    /// The metric, if this is one.
    ///
    /// ```
    /// use census_runtime::export::Record;
    ///
    /// /// The metrics of a batch, as `name = value` lines.
    /// fn metric_lines(batch: &[Record]) -> Vec<String> {
    ///     batch
    ///         .iter()
    ///         .filter_map(Record::as_metric)
    ///         .map(|metric| format!("{} = {}", metric.name(), metric.value()))
    ///         .collect()
    /// }
    /// ```
    pub fn as_metric(&self) -> Option<&MetricRecord> {
        match self {
            Record::Metric(metric) => Some(metric),
            _ => None,
        }
    }

    /// The trace (operation) the record belongs to, if any (a metric belongs to none).
    ///
    /// ```
    /// use census_runtime::TraceId;
    /// use census_runtime::export::Record;
    /// use std::collections::HashSet;
    ///
    /// /// The operations a batch holds telemetry of.
    /// fn operations(batch: &[Record]) -> HashSet<TraceId> {
    ///     batch.iter().filter_map(Record::trace_id).collect()
    /// }
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        match self {
            Record::Span(span) => Some(span.trace_id()),
            Record::Log(log) => log.correlation.trace_id,
            Record::Event(event) => event.correlation.trace_id,
            Record::Metric(_) => None,
        }
    }
}

/// A log record or an event on its way from the thread that wrote it to the export worker: both
/// travel inline (no allocation on the writing thread; see `text.rs`), and are boxed into a
/// [`Record`] on the worker.
#[cfg_attr(
    not(any(feature = "log", feature = "tracing")),
    allow(
        dead_code,
        reason = "log records come from the log and tracing bridges"
    )
)]
pub(crate) enum Item {
    Log(LogRecord),
    Event(EventRecord),
}

impl From<SpanRecord> for Record {
    fn from(span: SpanRecord) -> Record {
        Record::Span(span)
    }
}

impl From<Item> for Record {
    fn from(item: Item) -> Record {
        match item {
            Item::Log(log) => Record::Log(boxed_log(log)),
            Item::Event(event) => Record::Event(Box::new(event)),
        }
    }
}

/// How serious a log record is: Application Insights' severity levels.
///
/// ```
/// use census_runtime::export::Severity;
///
/// assert!(Severity::Error > Severity::Warning);
/// assert_eq!((Severity::Warning.level(), Severity::Warning.name()), (2, "WARN"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// `log`'s and `tracing`'s trace and debug levels.
    Verbose = 0,
    /// Info.
    Information = 1,
    /// Warn.
    Warning = 2,
    /// Error.
    Error = 3,
    /// Beyond an error; neither `log` nor `tracing` has it.
    Critical = 4,
}

impl Severity {
    /// The `severityLevel` Application Insights shows.
    ///
    /// ```
    /// use census_runtime::export::Severity;
    ///
    /// assert_eq!(Severity::Verbose.level(), 0);
    /// assert_eq!(Severity::Error.level(), 3);
    /// ```
    pub fn level(self) -> u8 {
        self as u8
    }

    /// The level's name, as the console prints it.
    ///
    /// ```
    /// use census_runtime::export::Severity;
    ///
    /// assert_eq!(Severity::Information.name(), "INFO");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Severity::Verbose => "VERBOSE",
            Severity::Information => "INFO",
            Severity::Warning => "WARN",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The operation a log record or an event belongs to: the span current where it was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Correlation {
    pub(crate) trace_id: Option<TraceId>,
    pub(crate) parent_id: Option<SpanId>,
    pub(crate) operation_name: Option<OperationName>,
    /// The sampling percentage the trace was kept at (100 outside any trace).
    pub(crate) sample_rate: f32,
}

impl Correlation {
    /// A record written outside any span: no operation, kept at `sample_rate` (100 unless the
    /// pipeline samples those records too).
    pub(crate) fn outside_any_span(sample_rate: f32) -> Self {
        Correlation {
            sample_rate,
            ..Correlation::default()
        }
    }
}

/// Where a log record comes from in the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) target: Cow<'static, str>,
    /// `log` gives module and file as `'static` strings whenever its macros wrote the record,
    /// and `tracing` always: only those are kept.
    pub(crate) module_path: Option<&'static str>,
    pub(crate) file: Option<&'static str>,
    pub(crate) line: Option<u32>,
}

/// An error a log record carries, and the errors that caused it (its `source()`s), outermost
/// first: an `Exception` item's `exceptions[]`.
///
/// ```
/// use census_runtime::export::LogRecord;
///
/// /// A log record's error and its causes, as one line.
/// fn chain(record: &LogRecord) -> String {
///     let errors: Vec<String> = record
///         .errors()
///         .iter()
///         .map(|error| format!("{}: {}", error.type_name, error.message))
///         .collect();
///     errors.join(", caused by ")
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The error's type, as far as it can be told (`std::error::Error` does not say: the
    /// leading name of its `Debug` form, or the `exception.type` field a `tracing` event gave).
    pub type_name: String,
    /// Its `Display`.
    pub message: String,
}

impl ErrorDetail {
    /// An error, as far as `dyn Error` tells: the name its `Debug` form starts with as its type
    /// (`ParseIntError { kind: InvalidDigit }` gives `ParseIntError`, a form that starts with
    /// no name `Error`), its `Display` as its message.
    #[inline]
    pub(crate) fn of(error: &dyn std::error::Error) -> ErrorDetail {
        ErrorDetail {
            type_name: debug_name(error),
            message: error.to_string(),
        }
    }

    /// An error and its `source()`s, outermost first.
    #[cfg(feature = "log")]
    pub(crate) fn chain(
        error: &(dyn std::error::Error + 'static),
    ) -> impl Iterator<Item = ErrorDetail> {
        std::iter::successors(Some(error), |error| error.source()).map(ErrorDetail::of)
    }
}

/// The leading name of an error's `Debug` form: what can be told of its type behind `dyn`.
/// The form is read only as far as the name goes (the writer refuses the rest, which ends the
/// formatting): an error's whole `Debug` form, its fields and the errors inside it, can be long.
#[inline]
fn debug_name(error: &dyn std::error::Error) -> String {
    /// Takes the leading path (identifiers and `::`) of what is written, and refuses the rest.
    struct LeadingPath(String);

    impl fmt::Write for LeadingPath {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            // Byte by byte: the path ends before an ASCII byte, a character's boundary.
            let end = s.bytes().position(|b| !is_path_byte(b));
            self.0.push_str(&s[..end.unwrap_or(s.len())]);
            match end {
                None => Ok(()),
                Some(_) => Err(fmt::Error),
            }
        }
    }

    let mut path = LeadingPath(String::new());
    let _ = fmt::write(&mut path, format_args!("{error:?}"));
    let mut name = path.0;
    // The last segment of a path: after its last `:` (an identifier holds none), found by a
    // byte search rather than a substring's (whose searcher's code would be in every binary).
    if let Some(at) = name.rfind(':') {
        name.drain(..=at);
    }
    if name.as_bytes().first().is_some_and(|b| !b.is_ascii_digit()) {
        name
    } else {
        "Error".to_owned()
    }
}

/// Whether `b` may be part of a type's path: a byte of an identifier (Rust's punctuation is
/// ASCII, so any byte of a character outside ASCII is one) or of a `::`.
pub(crate) fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b >= 0x80
}

/// A log record or a `tracing` event, as exporters receive it.
///
/// ```
/// use census_runtime::export::{Exporter, LogRecord, Record, Resource};
///
/// /// Prints log records as lines, and nothing else.
/// struct Lines;
///
/// impl Exporter for Lines {
///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
///         for log in batch.iter().filter_map(Record::as_log) {
///             println!("{} {} {}", log.severity().name(), log.target(), log.message());
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct LogRecord {
    time: u64,
    severity: Severity,
    /// Inline when short: see `text.rs`.
    message: Text,
    pub(crate) correlation: Correlation,
    source: Source,
    /// Key-values (`properties`) and an error (`failure`'s `errors`), which most records have
    /// not: in the box a span's run-time values take, so that it is handed back to the threads
    /// with the spans' (see [`recycle`]) and a record with fields allocates nothing.
    extra: Option<Box<SpanExtra>>,
}

#[cfg_attr(
    not(any(feature = "log", feature = "tracing")),
    allow(
        dead_code,
        reason = "log records come from the log and tracing bridges"
    )
)]
impl LogRecord {
    /// A record written now, in the operation `correlation` names. Inlined, so that the record
    /// is written where its caller puts it (a ring slot) rather than copied there.
    #[inline]
    pub(crate) fn new(
        severity: Severity,
        message: Text,
        correlation: Correlation,
        source: Source,
    ) -> Self {
        LogRecord {
            time: clock::now(),
            severity,
            message,
            correlation,
            source,
            extra: None,
        }
    }

    /// The message, to be written in place (a record is made with an empty one).
    #[cfg(any(feature = "log", feature = "tracing"))]
    pub(crate) fn message_mut(&mut self) -> &mut Text {
        &mut self.message
    }

    /// Adds a property whose value is written in place ([`new_property`]).
    pub(crate) fn new_property(&mut self, key: impl Into<Cow<'static, str>>) -> &mut Value {
        let extra = self.extra.get_or_insert_with(|| boxed_extra(None));
        new_property(&mut extra.properties, key.into())
    }

    /// Sets the error the record carries, outermost first: it becomes an `Exception`.
    #[cfg_attr(
        not(any(feature = "tracing", feature = "log")),
        allow(dead_code, reason = "the tracing layer's and the log bridge's")
    )]
    pub(crate) fn set_errors(&mut self, errors: Vec<ErrorDetail>) {
        self.extra
            .get_or_insert_with(|| boxed_extra(None))
            .failure_mut()
            .errors = errors;
    }

    /// The message.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn shout(record: &LogRecord) -> String {
    ///     record.message().to_uppercase()
    /// }
    /// ```
    pub fn message(&self) -> &str {
        self.message.as_str()
    }

    /// How serious it is.
    ///
    /// ```
    /// use census_runtime::export::{LogRecord, Severity};
    ///
    /// fn is_problem(record: &LogRecord) -> bool {
    ///     record.severity() >= Severity::Warning
    /// }
    /// ```
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// When it was written, wall clock.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    /// use std::time::{Duration, SystemTime};
    ///
    /// fn is_recent(record: &LogRecord) -> bool {
    ///     record.time().elapsed().unwrap_or_default() < Duration::from_secs(60)
    /// }
    /// ```
    pub fn time(&self) -> SystemTime {
        clock::to_system_time(self.time)
    }

    /// When it was written, as a clock reading: to order it among spans.
    pub(crate) fn ticks(&self) -> u64 {
        self.time
    }

    /// The trace (operation) it was written in; `None` outside any span.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// /// The operation id Application Insights groups the record under, if any.
    /// fn operation(record: &LogRecord) -> Option<String> {
    ///     record.trace_id().map(|id| id.to_string())
    /// }
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        self.correlation.trace_id
    }

    /// The span it was written in; `None` outside any span.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn written_in_a_span(record: &LogRecord) -> bool {
    ///     record.parent_id().is_some()
    /// }
    /// ```
    pub fn parent_id(&self) -> Option<SpanId> {
        self.correlation.parent_id
    }

    /// The name of the operation it was written in, when one was set.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn operation_name(record: &LogRecord) -> &str {
    ///     record.operation_name().unwrap_or("(no operation)")
    /// }
    /// ```
    pub fn operation_name(&self) -> Option<&str> {
        self.correlation.operation_name.as_deref()
    }

    /// The sampling percentage of its trace (100 outside any trace).
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// /// How many records this one stands for, its trace sampled at a rate.
    /// fn weight(record: &LogRecord) -> f64 {
    ///     100.0 / record.sample_rate()
    /// }
    /// ```
    pub fn sample_rate(&self) -> f64 {
        f64::from(self.correlation.sample_rate)
    }

    /// The `log` target (or the `tracing` event's).
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn from_sqlx(record: &LogRecord) -> bool {
    ///     record.target().starts_with("sqlx")
    /// }
    /// ```
    pub fn target(&self) -> &str {
        &self.source.target
    }

    /// The module it was written in, when known.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn module(record: &LogRecord) -> &str {
    ///     record.module_path().unwrap_or("?")
    /// }
    /// ```
    pub fn module_path(&self) -> Option<&str> {
        self.source.module_path
    }

    /// The source file it was written in, when known.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn location(record: &LogRecord) -> Option<String> {
    ///     Some(format!("{}:{}", record.file()?, record.line()?))
    /// }
    /// ```
    pub fn file(&self) -> Option<&str> {
        self.source.file
    }

    /// The line it was written at, when known.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn location(record: &LogRecord) -> Option<String> {
    ///     Some(format!("{}:{}", record.file()?, record.line()?))
    /// }
    /// ```
    pub fn line(&self) -> Option<u32> {
        self.source.line
    }

    /// Its key-values (`log`'s `kv`, a `tracing` event's fields), in order.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// /// The record's key-values, as `key=value` words.
    /// fn key_values(record: &LogRecord) -> String {
    ///     let words: Vec<String> = record.properties().map(|(k, v)| format!("{k}={v}")).collect();
    ///     words.join(" ")
    /// }
    /// ```
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra
            .iter()
            .flat_map(|extra| extra.properties.iter())
            .map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// One property's value: the one given last, when the key was given more than once (the
    /// one the envelope carries).
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// fn customer(record: &LogRecord) -> Option<&str> {
    ///     record.property("customer")
    /// }
    /// ```
    pub fn property(&self, key: &str) -> Option<&str> {
        last_value(self.properties(), key)
    }

    /// The error it carries and its causes, outermost first; empty for a plain message.
    ///
    /// ```
    /// use census_runtime::export::LogRecord;
    ///
    /// /// Whether the record becomes an Exception item (it carries an error).
    /// fn is_exception(record: &LogRecord) -> bool {
    ///     !record.errors().is_empty()
    /// }
    /// ```
    pub fn errors(&self) -> &[ErrorDetail] {
        self.extra
            .as_ref()
            .and_then(|extra| extra.failure.as_ref())
            .map_or(&[], |failure| &failure.errors)
    }
}

/// A custom event, as exporters receive it: made by [`event`](crate::event).
///
/// ```
/// # use census_runtime::export::MemoryExporter;
/// # let memory = MemoryExporter::new();
/// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// census_runtime::event("order_placed")
///     .property("sku", "caviar")
///     .measurement("total", 12.5)
///     .send();
/// # census.flush(std::time::Duration::from_secs(5))?;
/// let event = &memory.events()[0];
/// assert_eq!(event.name(), "order_placed");
/// assert_eq!(event.property("sku"), Some("caviar"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct EventRecord {
    time: u64,
    name: Cow<'static, str>,
    pub(crate) correlation: Correlation,
    /// The properties (`properties`), in the box a span's run-time values take, so that the
    /// worker hands it back with the spans' ([`recycle`]) and an event with properties
    /// allocates nothing; `None` once handed back.
    values: Option<Box<SpanExtra>>,
    measurements: Vec<(Cow<'static, str>, f64)>,
}

impl fmt::Debug for EventRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecord")
            .field("time", &self.time)
            .field("name", &self.name)
            .field("correlation", &self.correlation)
            .field("properties", &self.properties().collect::<Vec<_>>())
            .field("measurements", &self.measurements)
            .finish()
    }
}

impl EventRecord {
    /// An event named `name`, happening now, in the operation `correlation` names.
    /// Its properties are those of `values` (a box of [`boxed_extra`]).
    pub(crate) fn new(
        name: Cow<'static, str>,
        correlation: Correlation,
        values: Box<SpanExtra>,
        measurements: Vec<(Cow<'static, str>, f64)>,
    ) -> Self {
        EventRecord {
            time: clock::now(),
            name,
            correlation,
            values: Some(values),
            measurements,
        }
    }

    /// The event's name.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].name(), "order_placed");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it happened, wall clock.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// let before = std::time::SystemTime::now();
    /// census_runtime::event("order_placed").send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert!(memory.events()[0].time() >= before - std::time::Duration::from_millis(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn time(&self) -> SystemTime {
        clock::to_system_time(self.time)
    }

    /// When it happened, as a clock reading.
    pub(crate) fn ticks(&self) -> u64 {
        self.time
    }

    /// The trace (operation) it happened in; `None` outside any span.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| census_runtime::event("order_placed").send());
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].trace_id(), Some(memory.one("checkout").trace_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trace_id(&self) -> Option<TraceId> {
        self.correlation.trace_id
    }

    /// The span it happened in; `None` outside any span.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::span("checkout").in_scope(|| census_runtime::event("order_placed").send());
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].parent_id(), Some(memory.one("checkout").span_id()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parent_id(&self) -> Option<SpanId> {
        self.correlation.parent_id
    }

    /// The name of the operation it happened in, when one was set.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::request("POST /orders")
    ///     .in_scope(|| census_runtime::event("order_placed").send());
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].operation_name(), Some("POST /orders"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn operation_name(&self) -> Option<&str> {
        self.correlation.operation_name.as_deref()
    }

    /// The sampling percentage of its trace (100 outside any trace).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].sample_rate(), 100.0); // outside any trace
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sample_rate(&self) -> f64 {
        f64::from(self.correlation.sample_rate)
    }

    /// Its properties, in order.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").property("sku", "caviar").send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// let events = memory.events();
    /// let properties: Vec<_> = events[0].properties().collect();
    /// assert_eq!(properties, [("sku", "caviar")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .flat_map(|values| values.properties.iter())
            .map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// One property's value: the one given last, when the key was given more than once (the
    /// one the envelope carries).
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").property("sku", "caviar").send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// assert_eq!(memory.events()[0].property("sku"), Some("caviar"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn property(&self, key: &str) -> Option<&str> {
        last_value(self.properties(), key)
    }

    /// Its measurements, in order.
    ///
    /// ```
    /// # use census_runtime::export::MemoryExporter;
    /// # let memory = MemoryExporter::new();
    /// # let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
    /// census_runtime::event("order_placed").measurement("total", 12.5).send();
    /// # census.flush(std::time::Duration::from_secs(5))?;
    /// let events = memory.events();
    /// let measurements: Vec<_> = events[0].measurements().collect();
    /// assert_eq!(measurements, [("total", 12.5)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn measurements(&self) -> impl Iterator<Item = (&str, f64)> {
        self.measurements.iter().map(|(k, v)| (k.as_ref(), *v))
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics.

/// What a metric measures, and so what its figures mean.
///
/// ```
/// use census_runtime::export::{MetricKind, MetricRecord};
///
/// /// What a metric's value means.
/// fn meaning(metric: &MetricRecord) -> &'static str {
///     match metric.kind() {
///         MetricKind::Counter => "the increase over the interval",
///         MetricKind::Gauge => "the last value set",
///         MetricKind::Histogram => "the sum of the values recorded",
///         _ => "a figure of a kind this code does not know",
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A count that only goes up: an interval reports its increase.
    Counter,
    /// A value that goes up and down: an interval reports the last value set.
    Gauge,
    /// A distribution of values: an interval reports their count, sum, minimum, maximum and
    /// standard deviation.
    Histogram,
}

impl MetricKind {
    /// Its name, as the console prints it.
    ///
    /// ```
    /// use census_runtime::export::MetricKind;
    ///
    /// assert_eq!(MetricKind::Histogram.name(), "histogram");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A series' name and labels, shared by every interval's record of it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct SeriesId {
    pub(crate) name: Arc<str>,
    pub(crate) labels: Box<[(String, String)]>,
}

impl SeriesId {
    pub(crate) fn new(name: impl Into<Arc<str>>, labels: Vec<(String, String)>) -> Self {
        SeriesId {
            name: name.into(),
            labels: labels.into_boxed_slice(),
        }
    }
}

/// A metric's figures over one interval, by name and labels, as exporters receive them: made
/// once per interval (a minute by default) and at every flush, from what was recorded through
/// `CensusRecorder` (`integrations::metrics`, feature `metrics`).
///
/// A counter's [`value`](Self::value) is its increase over the interval, a gauge's the last
/// value set (with a count of 1, minimum and maximum the value itself), a histogram's the sum of
/// the values recorded.
///
/// ```
/// use census_runtime::export::{Exporter, MetricRecord, Record, Resource};
///
/// /// Prints each metric's interval: its name, count and value.
/// struct Metrics;
///
/// impl Exporter for Metrics {
///     fn export(&mut self, batch: &[Record], _resource: &Resource) {
///         for metric in batch.iter().filter_map(Record::as_metric) {
///             println!("{}: {} values, {}", metric.name(), metric.count(), metric.value());
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct MetricRecord {
    id: Arc<SeriesId>,
    kind: MetricKind,
    start: SystemTime,
    interval: Duration,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    std_dev: f64,
}

/// The figures of one interval of a histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Distribution {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) std_dev: f64,
}

impl Distribution {
    /// The figures of `count` values whose sum and sum of squares are given: the standard
    /// deviation is the population's, `sqrt(E[x²] - E[x]²)`, never negative.
    pub(crate) fn new(count: u64, sum: f64, sum_of_squares: f64, min: f64, max: f64) -> Self {
        let n = count as f64;
        let mean = sum / n;
        let variance = (sum_of_squares / n - mean * mean).max(0.0);
        let std_dev = variance.sqrt();
        Distribution {
            count,
            sum,
            min,
            max,
            // Squares past f64's range: no spread to tell.
            std_dev: if std_dev.is_finite() { std_dev } else { 0.0 },
        }
    }
}

impl MetricRecord {
    pub(crate) fn new(
        id: Arc<SeriesId>,
        kind: MetricKind,
        start: SystemTime,
        interval: Duration,
        figures: Distribution,
    ) -> Self {
        MetricRecord {
            id,
            kind,
            start,
            interval,
            count: figures.count,
            sum: figures.sum,
            min: figures.min,
            max: figures.max,
            std_dev: figures.std_dev,
        }
    }

    /// The metric's name.
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// fn is_latency(metric: &MetricRecord) -> bool {
    ///     metric.name().ends_with("_ms")
    /// }
    /// ```
    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// What it measures.
    ///
    /// ```
    /// use census_runtime::export::{MetricKind, MetricRecord};
    ///
    /// fn is_counter(metric: &MetricRecord) -> bool {
    ///     metric.kind() == MetricKind::Counter
    /// }
    /// ```
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// Its labels, in the order they were given: the item's properties (dimensions).
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// /// The metric's labels, as `key=value` words.
    /// fn labels(metric: &MetricRecord) -> String {
    ///     let words: Vec<String> = metric.properties().map(|(k, v)| format!("{k}={v}")).collect();
    ///     words.join(" ")
    /// }
    /// ```
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.id.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// One label's value: the one given last, when the key was given more than once (the one
    /// the envelope carries).
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// fn region(metric: &MetricRecord) -> &str {
    ///     metric.property("region").unwrap_or("everywhere")
    /// }
    /// ```
    pub fn property(&self, key: &str) -> Option<&str> {
        last_value(self.properties(), key)
    }

    /// When the interval started, wall clock.
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    /// use std::time::SystemTime;
    ///
    /// /// When the metric's interval ended.
    /// fn ended(metric: &MetricRecord) -> SystemTime {
    ///     metric.start_time() + metric.interval()
    /// }
    /// ```
    pub fn start_time(&self) -> SystemTime {
        self.start
    }

    /// How long the interval lasted (shorter than a full one when a flush closed it).
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// /// The rate per second of a counter over its interval.
    /// fn per_second(metric: &MetricRecord) -> f64 {
    ///     metric.value() / metric.interval().as_secs_f64()
    /// }
    /// ```
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A counter's increase, a gauge's last value, a histogram's sum.
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// fn total(metric: &MetricRecord) -> f64 {
    ///     metric.value()
    /// }
    /// ```
    pub fn value(&self) -> f64 {
        self.sum
    }

    /// How many values a histogram recorded; 1 for a counter or a gauge.
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// fn average(metric: &MetricRecord) -> Option<f64> {
    ///     (metric.count() > 0).then(|| metric.value() / metric.count() as f64)
    /// }
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smallest value recorded (a counter's or a gauge's value).
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// fn range(metric: &MetricRecord) -> f64 {
    ///     metric.max() - metric.min()
    /// }
    /// ```
    pub fn min(&self) -> f64 {
        self.min
    }

    /// The largest value recorded (a counter's or a gauge's value).
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// fn range(metric: &MetricRecord) -> f64 {
    ///     metric.max() - metric.min()
    /// }
    /// ```
    pub fn max(&self) -> f64 {
        self.max
    }

    /// The mean of the values recorded.
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// /// Whether the values spread widely about their mean.
    /// fn spread(metric: &MetricRecord) -> bool {
    ///     metric.std_dev() > metric.mean() / 2.0
    /// }
    /// ```
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// The (population) standard deviation of the values recorded; 0 for a counter or a gauge.
    ///
    /// ```
    /// use census_runtime::export::MetricRecord;
    ///
    /// /// Whether the values spread widely about their mean.
    /// fn spread(metric: &MetricRecord) -> bool {
    ///     metric.std_dev() > metric.mean() / 2.0
    /// }
    /// ```
    pub fn std_dev(&self) -> f64 {
        self.std_dev
    }
}

// ---------------------------------------------------------------------------------------------
// Operation names.

/// The name an operation's telemetry is grouped under (`ai.operation.name`): given by a request,
/// carried by every span, log record and event under it.
///
/// Names are interned: a name this process has seen before is the same `'static` text, so that
/// copying it onto each record under a request touches no shared memory. (A shared `Arc<str>`
/// would: its count, raised on the calling thread and lowered on the export worker when the
/// record is dropped, moved between the two cores at every record; a `log::info!` inside a
/// request took 2.4 times as long as inside a span without an operation name.) Names are a
/// service's routes, few and reused; past [`INTERNED_NAMES`] names or [`INTERNED_BYTES`]
/// bytes of them new ones are shared instead, so that the table stays bounded; the server
/// integrations share a request's name made of its raw path (no router matched it: a scanner's
/// paths) from the start, leaving the table to the routes.
///
/// Two words, as an `Option<Arc<str>>` was: a record that carries one (a log record is four
/// cache lines) grows by none. The text is static (copied, never counted) or, when the table
/// had no room, an `Arc<str>`'s, which the top bit of the length marks.
pub(crate) struct OperationName {
    /// The text's first byte.
    ptr: std::ptr::NonNull<u8>,
    /// The text's length, and [`SHARED`] when the text is an `Arc<str>`'s.
    len: usize,
}

/// The bit of [`OperationName::len`] that says the text belongs to an `Arc<str>` the name holds
/// a count of. No text is that long (a slice is at most `isize::MAX` bytes).
const SHARED: usize = 1 << (usize::BITS - 1);

// SAFETY: the name is a `&'static str` or an `Arc<str>`, both `Send` and `Sync`.
unsafe impl Send for OperationName {}
// SAFETY: as above.
unsafe impl Sync for OperationName {}

// The box of a span's run-time values holds three cache lines' worth: what a thread writes, and
// the export worker reads, of every span that has run-time values.
const _: () = assert!(size_of::<SpanExtra>() <= 192);

// Two words, and none more in an `Option`: what the records that carry one were sized for.
const _: () = assert!(size_of::<Option<OperationName>>() == 2 * size_of::<usize>());

/// At most this many names are interned.
const INTERNED_NAMES: usize = 4096;
/// At most this many bytes of names are interned.
const INTERNED_BYTES: usize = 1 << 20;

/// The interned names, for every thread.
static INTERNED: std::sync::LazyLock<std::sync::RwLock<Interned>> =
    std::sync::LazyLock::new(Default::default);

#[derive(Default)]
struct Interned {
    names: std::collections::HashSet<&'static str>,
    /// What the names hold, in bytes.
    bytes: usize,
}

thread_local! {
    /// The interned names this thread has used: found without the shared table's lock.
    static SEEN: std::cell::RefCell<std::collections::HashSet<&'static str>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

impl OperationName {
    /// The name `name`: its static text when it is static, else interned (or shared, when the
    /// table is full).
    #[expect(
        clippy::ptr_arg,
        reason = "whether the text is static decides how the name keeps it"
    )]
    pub(crate) fn new(name: &Cow<'static, str>) -> OperationName {
        match name {
            Cow::Borrowed(name) => OperationName::from_static(name),
            Cow::Owned(name) => OperationName::intern(name),
        }
    }

    /// `name`, interned when there is room.
    pub(crate) fn intern(name: &str) -> OperationName {
        intern(name).map_or_else(
            || OperationName::shared(Arc::from(name)),
            OperationName::from_static,
        )
    }

    /// A static text, kept as it is.
    #[inline]
    pub(crate) const fn from_static(name: &'static str) -> OperationName {
        OperationName {
            // SAFETY: a reference is never null.
            ptr: unsafe { std::ptr::NonNull::new_unchecked(name.as_ptr().cast_mut()) },
            len: name.len(),
        }
    }

    /// A text the name holds a count of, not interned.
    pub(crate) fn shared(name: Arc<str>) -> OperationName {
        let len = name.len();
        let raw = Arc::into_raw(name);
        OperationName {
            // SAFETY: `Arc::into_raw` never returns a null pointer.
            ptr: unsafe { std::ptr::NonNull::new_unchecked(raw.cast::<u8>().cast_mut()) },
            len: len | SHARED,
        }
    }

    /// Whether the text is an `Arc<str>`'s.
    #[inline]
    fn is_shared(&self) -> bool {
        self.len & SHARED != 0
    }

    /// The text's length in bytes.
    #[inline]
    fn text_len(&self) -> usize {
        self.len & !SHARED
    }

    /// The `Arc<str>`'s pointer, for a shared name.
    fn raw_shared(&self) -> *const str {
        std::ptr::slice_from_raw_parts(self.ptr.as_ptr(), self.text_len()) as *const str
    }

    /// The name.
    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: `ptr` and the length are a `str`'s: a static one, or one the name holds a
        // count of, alive as long as the name.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                self.ptr.as_ptr(),
                self.text_len(),
            ))
        }
    }
}

impl Clone for OperationName {
    #[inline]
    fn clone(&self) -> Self {
        if self.is_shared() {
            // SAFETY: a shared name's pointer came from `Arc::into_raw` of an `Arc<str>` this
            // name holds a count of; the clone takes one more.
            unsafe { Arc::increment_strong_count(self.raw_shared()) };
        }
        OperationName {
            ptr: self.ptr,
            len: self.len,
        }
    }
}

impl Drop for OperationName {
    #[inline]
    fn drop(&mut self) {
        if self.is_shared() {
            // SAFETY: as in `clone`: the count this name holds is given back once.
            unsafe { drop(Arc::from_raw(self.raw_shared())) };
        }
    }
}

impl fmt::Debug for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::ops::Deref for OperationName {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for OperationName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Whether `name` is in the process's table of interned names.
#[cfg(test)]
pub(crate) fn is_interned(name: &str) -> bool {
    let table = INTERNED
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    table.names.contains(name)
}

/// `text` as a static string, interned (the table is bounded: `None` when it is full): the
/// operation names given at run time, the keys of `log` records' key-values, and the targets,
/// modules and files of the `log` records that reach the `tracing` layer as events.
pub(crate) fn intern(text: &str) -> Option<&'static str> {
    let seen = SEEN
        .try_with(|seen| seen.borrow().get(text).copied())
        .ok()
        .flatten();
    if seen.is_some() {
        return seen;
    }
    let interned = intern_into(&INTERNED, text);
    if let Some(interned) = interned {
        let _ = SEEN.try_with(|seen| seen.borrow_mut().insert(interned));
    }
    interned
}

/// `text` interned, or a copy of it when the table is full.
#[cfg(any(feature = "log", feature = "tracing"))]
pub(crate) fn interned_or_owned(text: &str) -> Cow<'static, str> {
    intern(text).map_or_else(|| Cow::Owned(text.to_owned()), Cow::Borrowed)
}

/// `name` in `table`: found, or added when there is room.
#[cold]
fn intern_into(table: &std::sync::RwLock<Interned>, name: &str) -> Option<&'static str> {
    {
        let table = table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = table.names.get(name) {
            return Some(found);
        }
    }
    let mut table = table
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Interned { names, bytes } = &mut *table;
    if let Some(found) = names.get(name) {
        return Some(found);
    }
    if names.len() >= INTERNED_NAMES || *bytes + name.len() > INTERNED_BYTES {
        return None;
    }
    // Leaked on purpose: an interned name lives as long as the process, and the table is
    // bounded.
    let leaked: &'static str = Box::leak(name.into());
    names.insert(leaked);
    *bytes += leaked.len();
    Some(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(message: &str) -> Item {
        Item::Log(LogRecord::new(
            Severity::Information,
            Text::format(format_args!("{message}")),
            Correlation::default(),
            Source::default(),
        ))
    }

    #[test]
    fn an_error_s_type_is_the_name_its_debug_form_starts_with() {
        let parse = "x".parse::<u8>().unwrap_err();
        assert_eq!(ErrorDetail::of(&parse).type_name, "ParseIntError");
        let io = std::io::Error::other("disk full");
        assert_eq!(
            ErrorDetail::of(&io),
            ErrorDetail {
                type_name: "Custom".to_owned(),
                message: "disk full".to_owned()
            }
        );
        #[derive(Debug)]
        struct Opaque;
        impl fmt::Display for Opaque {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("opaque")
            }
        }
        impl std::error::Error for Opaque {}
        assert_eq!(ErrorDetail::of(&Opaque).type_name, "Opaque");
        // Forms that start with no name: a text's (`"disk full"`), a number's.
        let text: Box<dyn std::error::Error> = "disk full".into();
        assert_eq!(ErrorDetail::of(&*text).type_name, "Error");
        struct Numbered;
        impl fmt::Debug for Numbered {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("42")
            }
        }
        impl fmt::Display for Numbered {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error 42")
            }
        }
        impl std::error::Error for Numbered {}
        assert_eq!(ErrorDetail::of(&Numbered).type_name, "Error");
    }

    #[test]
    fn a_property_value_is_exactly_its_display_and_short_ones_are_inline() {
        for (value, display) in [
            (to_value(&1.0_f64), "1"),
            (to_value(&1e21_f64), "1000000000000000000000"),
            (to_value(&0.1_f32), "0.1"),
            (to_value(&7_u64), "7"),
            (to_value(&-7_i64), "-7"),
            (to_value(&true), "true"),
            (to_value(&"gold"), "gold"),
        ] {
            assert_eq!(value, display);
            assert!(value.is_inline(), "{display} fits inline");
        }
        assert!(to_value(&"x".repeat(30)).is_inline());
        assert!(!to_value(&"x".repeat(31)).is_inline());
    }

    #[test]
    fn the_worker_boxes_log_records_in_the_boxes_of_the_last_ones() {
        std::thread::spawn(|| {
            let mut exported = vec![
                Record::from(log("first")),
                Record::from(log(&"x".repeat(500))),
            ];
            let kept = match &exported[0] {
                Record::Log(first) => &**first as *const LogRecord,
                _ => unreachable!(),
            };
            recycle(&mut exported);
            assert!(exported.is_empty());
            // The short message's box is kept; the one with a message on the heap is not.
            let again = Record::from(log("second"));
            let Record::Log(second) = &again else {
                unreachable!()
            };
            assert_eq!(&**second as *const LogRecord, kept);
            assert_eq!(second.message(), "second");
            let Record::Log(third) = Record::from(log("third")) else {
                unreachable!()
            };
            assert_ne!(&*third as *const LogRecord, kept);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn values_made_aside_are_taken_whole_or_after_the_record_s_own() {
        static SITE: Site = Site::inproc("aside");
        let aside = |key: &'static str, value: &str| {
            let mut extra = boxed_extra(None);
            push_display(&mut extra.properties, Cow::Borrowed(key), value);
            extra
        };
        let mut bare = SpanRecord::test_root(&SITE);
        let given = aside("order", "7");
        let address = std::ptr::from_ref(&*given);
        bare.take_extra(given);
        assert!(
            bare.extra()
                .is_some_and(|extra| std::ptr::eq(extra, address)),
            "a record with no values of its own takes the box itself"
        );
        let mut named = SpanRecord::test_root(&SITE);
        named.extra_mut().name = Some(Cow::Borrowed("renamed"));
        push_display(
            &mut named.extra_mut().properties,
            Cow::Borrowed("first"),
            &1,
        );
        named.take_extra(aside("order", "7"));
        assert_eq!(named.name(), "renamed");
        assert_eq!(
            named.properties().collect::<Vec<_>>(),
            [("first", "1"), ("order", "7")]
        );
    }

    #[test]
    fn a_batch_s_span_boxes_are_handed_back_up_to_the_cap_and_large_ones_let_go() {
        static SITE: Site = Site::inproc("spare");
        let span = |properties: Vec<(Cow<'static, str>, Value)>| {
            let mut record = SpanRecord::test_root(&SITE);
            record.set_extra(Some(Box::new(SpanExtra {
                properties,
                ..SpanExtra::default()
            })));
            Record::Span(record)
        };
        let small = || span(vec![(Cow::Borrowed("n"), "7".into())]);
        let large = || {
            span(vec![(
                Cow::Borrowed("body"),
                "x".repeat(SPARE_EXTRA_BYTES).into(),
            )])
        };
        let spare = || SPARE_EXTRAS.lock().unwrap().len();
        {
            let mut shared = SPARE_EXTRAS.lock().unwrap();
            shared.clear();
            shared.extend((0..SPARE_EXTRAS_MAX - 3).map(|_| Box::new(SpanExtra::default())));
        }
        // Room for three: the first small box and the two after the large one; the large one
        // is let go, and so is the last small one, over the cap.
        let mut batch = vec![small(), large(), small(), small(), small()];
        recycle(&mut batch);
        assert!(batch.is_empty());
        {
            let shared = SPARE_EXTRAS.lock().unwrap();
            assert_eq!(shared.len(), SPARE_EXTRAS_MAX);
            let mut handed_back = shared.range(SPARE_EXTRAS_MAX - 3..);
            assert!(handed_back.all(|extra| extra.properties[0].1 == "7"));
        }
        let mut batch = vec![small()];
        recycle(&mut batch);
        assert_eq!(spare(), SPARE_EXTRAS_MAX, "none over the cap");
        SPARE_EXTRAS.lock().unwrap().clear();
    }

    #[test]
    fn a_reused_box_keeps_nothing_of_its_last_span_but_its_property_list_s_memory() {
        let used = Box::new(SpanExtra {
            name: Some(Cow::Borrowed("last")),
            kind: Some(Cow::Borrowed("SQL")),
            target: Some(Cow::Owned("orders-db".to_owned())),
            data: Some(Cow::Borrowed("SELECT 1")),
            result_code: Some(Cow::Borrowed("42P01")),
            error: Some("relation does not exist".to_owned()),
            properties: vec![(Cow::Borrowed("id"), "7".into())],
            failure: Some(Box::new(Failure {
                exception: Some(ExceptionInfo {
                    type_name: Cow::Borrowed("panic"),
                    message: "boom".to_owned(),
                    location: None,
                    backtrace: None,
                }),
                errors: vec![ErrorDetail {
                    type_name: "Error".to_owned(),
                    message: "boom".to_owned(),
                }],
            })),
            trace_state: Some(Arc::from("congo=t61rcWkgMzE")),
        });
        let list = used.properties.as_ptr();
        LOCAL_EXTRAS.with(|local| {
            let mut local = local.borrow_mut();
            local.clear();
            local.push(used);
        });
        let extra = boxed_extra(Some(Cow::Borrowed("next")));
        assert_eq!(extra.name.as_deref(), Some("next"));
        assert!(extra.kind.is_none() && extra.target.is_none() && extra.data.is_none());
        assert!(extra.result_code.is_none() && extra.error.is_none());
        assert!(extra.failure.is_none() && extra.trace_state.is_none());
        assert!(extra.properties.is_empty());
        assert_eq!(extra.properties.as_ptr(), list, "the list's memory is kept");
        LOCAL_EXTRAS.with(|local| local.borrow_mut().clear());
    }

    #[test]
    fn a_thread_takes_the_boxes_handed_back_longest_ago() {
        let marked = |n: usize| {
            Box::new(SpanExtra {
                properties: vec![(Cow::Borrowed("n"), n.to_string().into())],
                ..SpanExtra::default()
            })
        };
        LOCAL_EXTRAS.with(|local| local.borrow_mut().clear());
        {
            let mut shared = SPARE_EXTRAS.lock().unwrap();
            shared.clear();
            shared.extend((0..SPARE_EXTRAS_TAKEN * 2).map(marked));
        }
        let mark = |extra: &SpanExtra| extra.properties[0].1.parse::<usize>().unwrap();
        let taken = handed_back().expect("boxes are waiting");
        assert!(
            mark(&taken) < SPARE_EXTRAS_TAKEN,
            "one of the oldest, not box {}",
            mark(&taken)
        );
        {
            let shared = SPARE_EXTRAS.lock().unwrap();
            assert_eq!(shared.len(), SPARE_EXTRAS_TAKEN);
            assert_eq!(
                shared.front().map(|extra| mark(extra)),
                Some(SPARE_EXTRAS_TAKEN)
            );
        }
        LOCAL_EXTRAS.with(|local| local.borrow_mut().clear());
        SPARE_EXTRAS.lock().unwrap().clear();
    }

    fn text_of(name: &OperationName) -> *const u8 {
        name.as_str().as_ptr()
    }

    #[test]
    fn a_static_name_is_kept_as_it_is() {
        let route: &'static str = "GET /orders/{id}";
        let name = OperationName::new(&Cow::Borrowed(route));
        assert!(!name.is_shared());
        assert_eq!(text_of(&name), route.as_ptr(), "the literal, not a copy");
    }

    #[test]
    fn names_made_of_the_same_text_share_one_interned_copy() {
        let first = OperationName::new(&Cow::Owned(format!("POST /{}", "baskets")));
        // On another thread, which has not seen it: found in the shared table.
        let other = std::thread::spawn(|| {
            text_of(&OperationName::intern(&format!("POST /{}", "baskets"))) as usize
        })
        .join()
        .unwrap();
        let again = OperationName::intern("POST /baskets");
        assert!(!first.is_shared());
        assert_eq!(text_of(&again), text_of(&first));
        assert_eq!(other, text_of(&first) as usize);
        assert_eq!(&*again, "POST /baskets");
    }

    #[test]
    fn the_table_stays_bounded_in_names_and_in_bytes() {
        // A table of its own, so that the process's stays as other tests use it.
        let table = std::sync::RwLock::default();
        let kept = intern_into(&table, "GET /kept").unwrap();
        for i in 1..INTERNED_NAMES {
            assert!(intern_into(&table, &format!("GET /paths/{i}")).is_some());
        }
        assert_eq!(
            intern_into(&table, "GET /late"),
            None,
            "no room past the cap"
        );
        assert!(std::ptr::eq(
            intern_into(&table, "GET /kept").unwrap(),
            kept
        ));

        let bytes = std::sync::RwLock::default();
        let long = "x".repeat(INTERNED_BYTES / 2);
        assert!(intern_into(&bytes, &long).is_some());
        assert!(
            intern_into(&bytes, &format!("{long}y")).is_none(),
            "past the bytes"
        );
        assert!(
            intern_into(&bytes, "short").is_some(),
            "what fits still goes in"
        );
    }

    #[test]
    fn a_shared_name_counts_its_text_and_equals_an_interned_one() {
        let text: Arc<str> = Arc::from("GET /late");
        let late = OperationName::shared(Arc::clone(&text));
        assert!(late.is_shared());
        assert_eq!(
            late,
            OperationName::from_static("GET /late"),
            "equal by their text"
        );
        let copy = late.clone();
        assert_eq!(Arc::strong_count(&text), 3, "each name holds a count");
        drop((late, copy));
        assert_eq!(Arc::strong_count(&text), 1, "and gives it back");
        assert_eq!(&*OperationName::shared(text), "GET /late");
    }

    #[test]
    fn links_are_one_json_array_as_the_reference_writes_it_and_at_most_max_links() {
        let context = |trace: u128, span: u64| {
            SpanContext::new(
                TraceId::new(trace).unwrap(),
                SpanId::new(span).unwrap(),
                true,
            )
        };
        let mut properties = vec![(Cow::Borrowed("order"), Value::format(format_args!("7")))];
        push_link(&mut properties, context(0xa, 0xb));
        push_link(&mut properties, context(0xc, 0xd));
        let links = |properties: &[(Cow<'static, str>, Value)]| {
            let found: Vec<&str> = properties
                .iter()
                .filter(|(key, _)| key == LINKS_PROPERTY)
                .map(|(_, value)| value.as_str())
                .collect();
            assert_eq!(found.len(), 1, "one property: {found:?}");
            found[0].to_owned()
        };
        assert_eq!(
            links(&properties),
            concat!(
                r#"[{"operation_Id": "0000000000000000000000000000000a", "id": "000000000000000b"}, "#,
                r#"{"operation_Id": "0000000000000000000000000000000c", "id": "000000000000000d"}]"#
            )
        );
        for n in 3..=(MAX_LINKS as u64 + 5) {
            push_link(&mut properties, context(u128::from(n), n));
        }
        let all = links(&properties);
        assert_eq!(all.matches("operation_Id").count(), MAX_LINKS);
        assert!(all.len() <= 8_192, "{} characters", all.len());
        assert!(
            all.ends_with(r#""id": "0000000000000064"}]"#),
            "the first ones kept"
        );
    }

    #[test]
    fn a_link_extends_links_written_by_hand_and_replaces_a_value_that_is_not_links() {
        let to = SpanContext::new(TraceId::new(0xa).unwrap(), SpanId::new(0xb).unwrap(), true);
        let link =
            r#"{"operation_Id": "0000000000000000000000000000000a", "id": "000000000000000b"}"#;
        let linked = |given: &str| {
            let mut properties = vec![(Cow::Borrowed(LINKS_PROPERTY), Value::from(given))];
            push_link(&mut properties, to);
            assert_eq!(properties.len(), 1, "{properties:?}");
            properties[0].1.as_str().to_owned()
        };
        let by_hand = r#"{"operation_Id": "1", "id": "2"}"#;
        assert_eq!(
            linked(&format!("[{by_hand}]")),
            format!("[{by_hand}, {link}]")
        );
        assert_eq!(
            linked(&format!(" [ {by_hand} ] ")),
            format!("[ {by_hand}, {link}]")
        );
        assert_eq!(linked("[]"), format!("[{link}]"));
        assert_eq!(linked("[ ]"), format!("[{link}]"));
        assert_eq!(linked("not links"), format!("[{link}]"));
        assert_eq!(linked(""), format!("[{link}]"));
        // Given twice, the property the envelope carries is the last: that one is extended.
        let mut properties = vec![
            (Cow::Borrowed(LINKS_PROPERTY), Value::from("first")),
            (Cow::Borrowed(LINKS_PROPERTY), Value::from("[]")),
        ];
        push_link(&mut properties, to);
        assert_eq!(properties[0].1.as_str(), "first");
        assert_eq!(properties[1].1.as_str(), format!("[{link}]"));
    }
}
