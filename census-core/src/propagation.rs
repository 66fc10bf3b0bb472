//! Trace context across processes: the W3C `traceparent` and `tracestate` headers, and the legacy
//! Application Insights `Request-Id`.
//!
//! Everything here reads untrusted input from the network: a value that is malformed, oversized
//! or not UTF-8 is ignored (the request then starts a new trace), never an error and never a
//! panic.
//!
//! ```
//! use census_runtime::propagation::{Incoming, format_traceparent};
//!
//! let incoming = Incoming::from_values(
//!     [b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice()],
//!     [b"congo=t61rcWkgMzE".as_slice()],
//!     [],
//! );
//! let parent = incoming.parent().unwrap();
//! assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(incoming.trace_state(), Some("congo=t61rcWkgMzE"));
//! assert_eq!(
//!     format_traceparent(parent),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
//! );
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use crate::span::SpanBuilder;
use crate::{SpanContext, SpanId, TraceId};

/// The W3C trace context header that carries the caller's trace and span ids.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header that carries vendor-specific trace state alongside `traceparent`.
pub const TRACESTATE: &str = "tracestate";
/// The legacy Application Insights correlation header, `|<trace id>.<span id>.`.
pub const REQUEST_ID: &str = "request-id";

/// The longest `traceparent` looked at: version 00 is 55 characters; later versions may append
/// fields, but not kilobytes of them.
const MAX_TRACEPARENT: usize = 512;
/// The longest `Request-Id` looked at (the limit the Application Insights SDKs use).
const MAX_REQUEST_ID: usize = 1024;
/// A `tracestate` longer than this, all headers together, is refused outright.
const MAX_TRACESTATE_INPUT: usize = 8192;
/// What is kept of a `tracestate` and passed on: W3C asks for at least 512 characters and at most
/// 32 members.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// The most `tracestate` members kept.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Members longer than this are the first dropped when the state is over
/// [`MAX_TRACESTATE_LEN`], as the W3C specification recommends.
const LONG_MEMBER: usize = 128;

/// Parses a `traceparent` value by the W3C Trace Context rules: `version-traceid-parentid-flags`
/// in lowercase hex; version `ff` is invalid; version `00` is exactly 55 characters; a later
/// version may carry more fields after a `-`, which are ignored; all-zero ids are invalid. The
/// `sampled` flag is bit 0 of the flags.
///
/// ```
/// use census_runtime::propagation::parse_traceparent;
///
/// let ctx = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
/// assert_eq!(ctx.span_id().to_string(), "b7ad6b7169203331");
/// assert!(ctx.is_sampled());
/// // A future version with an extra field is read; uppercase, `ff` and zero ids are not.
/// assert!(parse_traceparent("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-what").is_some());
/// assert!(parse_traceparent("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01").is_none());
/// assert!(parse_traceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none());
/// assert!(parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
/// ```
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim_matches(is_ows);
    let bytes = value.as_bytes();
    if !value.is_ascii() || bytes.len() < 55 || bytes.len() > MAX_TRACEPARENT {
        return None;
    }
    let version = &value[0..2];
    if !is_lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && bytes.len() != 55 {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)?;
    let span_id = SpanId::from_hex(span)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(trace_id, span_id, flags & 1 == 1))
}

/// Writes a version-00 `traceparent` for `ctx`.
///
/// ```
/// use census_runtime::{SpanContext, SpanId, TraceId, propagation::format_traceparent};
///
/// let ctx = SpanContext::new(
///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
///     false,
/// );
/// assert_eq!(format_traceparent(ctx), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
/// ```
pub fn format_traceparent(ctx: SpanContext) -> String {
    let flags = if ctx.is_sampled() { "01" } else { "00" };
    format!("00-{}-{}-{flags}", ctx.trace_id(), ctx.span_id())
}

/// Parses a legacy Application Insights `Request-Id` of the W3C-compatible hierarchical form
/// `|<32 hex trace id>.<16 hex span id>.` (anything after the span id, such as `1_` suffixes
/// of older SDKs, is ignored). A flat or otherwise shaped id gives `None`: its trace id cannot
/// be carried on in W3C form.
///
/// ```
/// use census_runtime::propagation::parse_request_id;
///
/// let ctx = parse_request_id("|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.").unwrap();
/// assert_eq!(ctx.span_id().to_string(), "00f067aa0ba902b7");
/// assert!(parse_request_id("abc").is_none());
/// assert!(parse_request_id("|not-hex.00f067aa0ba902b7.").is_none());
/// ```
pub fn parse_request_id(value: &str) -> Option<SpanContext> {
    let value = value.trim_matches(is_ows);
    if value.len() > MAX_REQUEST_ID {
        return None;
    }
    let rest = value.strip_prefix('|')?;
    let (trace, rest) = rest.split_once('.')?;
    let span_end = rest.find(['.', '_']).unwrap_or(rest.len());
    let span = &rest[..span_end];
    let trace_id = TraceId::from_hex(trace)?;
    let span_id = SpanId::from_hex(span)?;
    Some(SpanContext::new(trace_id, span_id, true))
}

/// Writes the legacy `Request-Id` for `ctx`: `|<trace id>.<span id>.`.
///
/// ```
/// use census_runtime::{SpanContext, SpanId, TraceId, propagation::format_request_id};
///
/// let ctx = SpanContext::new(
///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
///     true,
/// );
/// assert_eq!(format_request_id(ctx), "|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.");
/// ```
pub fn format_request_id(ctx: SpanContext) -> String {
    format!("|{}.{}.", ctx.trace_id(), ctx.span_id())
}

/// Validates a `tracestate` value (several headers joined by commas) by the W3C rules and
/// returns what is passed on: its members in order, empty members removed, at most
/// [`MAX_TRACESTATE_MEMBERS`] members and [`MAX_TRACESTATE_LEN`] characters (members over 128
/// characters dropped first, then members from the end). A value with a malformed member, a
/// duplicate key, or of more than 8 KiB is refused whole: `None`.
///
/// ```
/// use census_runtime::propagation::parse_trace_state;
///
/// assert_eq!(parse_trace_state("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7").as_deref(),
///            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
/// assert_eq!(parse_trace_state("tenant@system=1").as_deref(), Some("tenant@system=1"));
/// assert_eq!(parse_trace_state("Upper=1"), None);
/// assert_eq!(parse_trace_state("a=1,a=2"), None);
/// assert_eq!(parse_trace_state("a=bad,value"), None);
/// let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
/// let kept = parse_trace_state(&many.join(",")).unwrap();
/// assert_eq!(kept.split(',').count(), 32);
/// ```
pub fn parse_trace_state(value: &str) -> Option<String> {
    if value.len() > MAX_TRACESTATE_INPUT {
        return None;
    }
    let mut members: Vec<&str> = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches(is_ows);
        if member.is_empty() {
            continue;
        }
        let (key, val) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(val) {
            return None;
        }
        if members
            .iter()
            .any(|m| m.split_once('=').map(|(k, _)| k) == Some(key))
        {
            return None;
        }
        members.push(member);
    }
    members.truncate(MAX_TRACESTATE_MEMBERS);
    let joined_len = |members: &[&str]| -> usize {
        members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
    };
    if joined_len(&members) > MAX_TRACESTATE_LEN {
        members.retain(|m| m.len() <= LONG_MEMBER);
        while joined_len(&members) > MAX_TRACESTATE_LEN {
            members.pop();
        }
    }
    if members.is_empty() {
        None
    } else {
        Some(members.join(","))
    }
}

/// `simple-key = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )`, or
/// `tenant-id "@" system-id` with a tenant of at most 241 and a system of at most 14 characters.
fn valid_key(key: &str) -> bool {
    fn rest_char(b: u8) -> bool {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
    }
    let bytes = key.as_bytes();
    match key.split_once('@') {
        None => {
            !bytes.is_empty()
                && bytes.len() <= 256
                && bytes[0].is_ascii_lowercase()
                && bytes[1..].iter().all(|b| rest_char(*b))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t[1..].iter().all(|b| rest_char(*b))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s[1..].iter().all(|b| rest_char(*b))
        }
    }
}

/// `value = 0*255(chr) nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`, `chr = %x20 / nblk-chr`.
fn valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let nblk = |b: u8| matches!(b, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match bytes.last() {
        Some(last) => {
            bytes.len() <= 256 && nblk(*last) && bytes.iter().all(|b| *b == b' ' || nblk(*b))
        }
        None => false,
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The trace context an incoming request carries: the caller's span, and the `tracestate` to
/// pass on. Read it with [`Incoming::from_values`] from the raw header values and start the
/// request's span with [`Incoming::request`].
///
/// ```
/// use census_runtime::propagation::Incoming;
///
/// // A server's handler, given its request's header values.
/// let incoming = Incoming::from_values(
///     [b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice()],
///     [b"congo=t61rcWkgMzE".as_slice()],
///     [],
/// );
/// incoming.request("GET /orders/{id}").in_scope(|| {
///     // the handler's work, in the caller's trace
/// });
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    parent: Option<SpanContext>,
    trace_state: Option<String>,
    /// The parent came in a legacy `Request-Id`, which carries no sampled flag.
    legacy: bool,
}

impl Incoming {
    /// Reads the context from every value of each header, as received.
    ///
    /// `traceparent` wins when present: exactly one valid value continues the trace (several
    /// values are invalid, as W3C says); `tracestate` is kept only with a valid `traceparent`.
    /// The legacy `Request-Id` is read only when no `traceparent` came at all. Anything else
    /// gives an empty context: the request starts a new trace.
    ///
    /// ```
    /// use census_runtime::propagation::Incoming;
    ///
    /// let legacy = Incoming::from_values(
    ///     [],
    ///     [],
    ///     [b"|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.".as_slice()],
    /// );
    /// assert!(legacy.parent().is_some());
    /// let broken = Incoming::from_values([b"00-zz".as_slice()], [b"a=1".as_slice()], []);
    /// assert_eq!(broken, Incoming::default());
    /// ```
    pub fn from_values<'a>(
        traceparent: impl IntoIterator<Item = &'a [u8]>,
        tracestate: impl IntoIterator<Item = &'a [u8]>,
        request_id: impl IntoIterator<Item = &'a [u8]>,
    ) -> Incoming {
        let mut traceparent = traceparent.into_iter();
        match (traceparent.next(), traceparent.next()) {
            (Some(value), None) => {
                let Some(parent) = std::str::from_utf8(value).ok().and_then(parse_traceparent)
                else {
                    return Incoming::default();
                };
                Incoming {
                    parent: Some(parent),
                    trace_state: join_trace_state(tracestate),
                    legacy: false,
                }
            }
            (Some(_), Some(_)) => Incoming::default(),
            (None, _) => {
                let mut ids = request_id.into_iter();
                let parent = match (ids.next(), ids.next()) {
                    (Some(value), None) => {
                        std::str::from_utf8(value).ok().and_then(parse_request_id)
                    }
                    _ => None,
                };
                Incoming {
                    legacy: parent.is_some(),
                    parent,
                    trace_state: None,
                }
            }
        }
    }

    /// The caller's span, when the request carried a valid one. Its sampled flag is the
    /// `traceparent`'s; a legacy `Request-Id` has none (see [`Incoming::is_legacy`]) and reads
    /// as sampled.
    ///
    /// ```
    /// use census_runtime::propagation::Incoming;
    ///
    /// let incoming = Incoming::from_values(
    ///     [b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".as_slice()],
    ///     [],
    ///     [],
    /// );
    /// let parent = incoming.parent().unwrap();
    /// assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
    /// assert!(!parent.is_sampled()); // flag `00`: the caller did not record the trace
    /// ```
    pub fn parent(&self) -> Option<SpanContext> {
        self.parent
    }

    /// Whether the parent came in a legacy `Request-Id`: with no sampled flag, its trace is
    /// recorded when its id's score is below the rate, as the Application Insights SDKs decide
    /// it, rather than as the caller decided.
    ///
    /// ```
    /// use census_runtime::propagation::Incoming;
    ///
    /// let legacy = Incoming::from_values(
    ///     [],
    ///     [],
    ///     [b"|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.".as_slice()],
    /// );
    /// assert!(legacy.is_legacy());
    /// ```
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The validated `tracestate`, when one came with a valid `traceparent`.
    ///
    /// ```
    /// use census_runtime::propagation::Incoming;
    ///
    /// let incoming = Incoming::from_values(
    ///     [b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice()],
    ///     [b"congo=t61rcWkgMzE".as_slice()],
    ///     [],
    /// );
    /// assert_eq!(incoming.trace_state(), Some("congo=t61rcWkgMzE"));
    /// ```
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.as_deref()
    }

    /// A [`crate::request`] span named `name` that continues the caller's trace (or starts a
    /// new one) and passes the `tracestate` on to outgoing calls. Recorded as the caller's
    /// `traceparent` flag says (flag `00`: not recorded, and its calls pass the trace's id on
    /// with `00`); under a legacy `Request-Id`, by the trace id's score.
    ///
    /// ```
    /// use census_runtime::propagation::Incoming;
    ///
    /// let incoming = Incoming::default();
    /// incoming.request("GET /orders/{id}").data("http://localhost/orders/7").in_scope(|| {});
    /// ```
    pub fn request(&self, name: impl Into<Cow<'static, str>>) -> SpanBuilder {
        self.under(crate::request(name))
    }

    /// `builder` under the caller's context.
    pub(crate) fn under(&self, mut builder: SpanBuilder) -> SpanBuilder {
        match self.parent {
            Some(parent) if self.legacy => builder = builder.scored_parent(parent),
            Some(parent) => builder = builder.parent(parent),
            None => {}
        }
        if let Some(state) = &self.trace_state {
            builder = builder.trace_state(state.as_str());
        }
        builder
    }
}

fn join_trace_state<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut joined = String::new();
    for value in values {
        let value = std::str::from_utf8(value).ok()?;
        if joined.len() + value.len() + 1 > MAX_TRACESTATE_INPUT {
            return None;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    parse_trace_state(&joined)
}

/// The headers an outgoing call carries so that the service it calls continues this trace.
///
/// ```
/// use census_runtime::propagation::Outgoing;
///
/// // Outside any recorded span there is nothing to propagate.
/// assert!(Outgoing::current(false).is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    traceparent: String,
    trace_state: Option<Arc<str>>,
    request_id: Option<String>,
}

impl Outgoing {
    /// The headers for a call made from the span current on this thread (the client span):
    /// its `traceparent`, the `tracestate` of the trace when one came in with it, and, with
    /// `request_id`, the legacy `Request-Id`. In a trace that is not recorded, its id with flag
    /// `00` (see [`CurrentSpan::context`](crate::span::CurrentSpan::context)). `None` outside
    /// any trace or without a pipeline.
    ///
    /// ```
    /// use census_runtime::export::MemoryExporter;
    /// use census_runtime::propagation::Outgoing;
    ///
    /// let census = census_runtime::pipeline().exporter(MemoryExporter::new()).install()?;
    /// let outgoing = census_runtime::span("call inventory")
    ///     .in_scope(|| Outgoing::current(false))
    ///     .expect("a recorded span is current");
    /// let (name, traceparent) = outgoing.headers().next().unwrap();
    /// assert_eq!(name, "traceparent");
    /// assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current(request_id: bool) -> Option<Outgoing> {
        let ctx = crate::current_span().context()?;
        Some(Outgoing::for_context(
            ctx,
            crate::current_span().trace_state(),
            request_id,
        ))
    }

    /// The headers that make `ctx` the caller's span.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId, propagation::Outgoing};
    ///
    /// let ctx = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// let outgoing = Outgoing::for_context(ctx, Some("congo=t61rcWkgMzE".into()), true);
    /// let headers: Vec<_> = outgoing.headers().collect();
    /// assert_eq!(headers, [
    ///     ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ///     ("tracestate", "congo=t61rcWkgMzE"),
    ///     ("request-id", "|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7."),
    /// ]);
    /// ```
    pub fn for_context(
        ctx: SpanContext,
        trace_state: Option<Arc<str>>,
        request_id: bool,
    ) -> Outgoing {
        Outgoing {
            traceparent: format_traceparent(ctx),
            trace_state,
            request_id: request_id.then(|| format_request_id(ctx)),
        }
    }

    /// The header names and values to set, lowercase names.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId, propagation::Outgoing};
    ///
    /// let ctx = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     false,
    /// );
    /// let outgoing = Outgoing::for_context(ctx, None, false);
    /// assert_eq!(
    ///     outgoing.headers().collect::<Vec<_>>(),
    ///     [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]
    /// );
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.trace_state.as_deref().map(|s| (TRACESTATE, s)))
            .chain(self.request_id.as_deref().map(|s| (REQUEST_ID, s)))
    }
}

/// Removes the `user:password@` part of a URL's authority, for recording it. Works on the text,
/// so that it applies to any client's URL type.
///
/// ```
/// use census_runtime::propagation::redact_credentials;
///
/// assert_eq!(redact_credentials("http://me:secret@127.0.0.1:8080/a?b=c"), "http://127.0.0.1:8080/a?b=c");
/// assert_eq!(redact_credentials("http://127.0.0.1/x@y"), "http://127.0.0.1/x@y");
/// ```
pub fn redact_credentials(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}{}", &url[..authority_start], &rest[at + 1..])),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_follows_the_w3c_rules() {
        assert!(parse_traceparent(VALID).is_some());
        assert!(parse_traceparent(&format!(" {VALID}\t")).is_some());
        let unsampled = VALID.replace("-01", "-00");
        assert!(!parse_traceparent(&unsampled).unwrap().is_sampled());
        for bad in [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}-"),
            &format!("{VALID}0"),
            &VALID.replace("00-4bf", "0g-4bf"),
            &VALID.replace("-01", "-0x"),
            &VALID.replace("-00f067aa0ba902b7-", "-0000000000000000-"),
            &VALID.replace('-', "_"),
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        // A later version: more fields after a dash are ignored.
        assert!(parse_traceparent(&format!("{}-extra", VALID.replacen("00", "01", 1))).is_some());
    }

    #[test]
    fn request_id_suffixes_are_ignored_and_flat_ids_refused() {
        let ctx =
            parse_request_id("|4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.1_").unwrap();
        assert_eq!(ctx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parse_request_id("|4bf92f3577b34da6a3ce929d0e0e4736.").is_none());
        assert!(parse_request_id("4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7.").is_none());
    }

    #[test]
    fn tracestate_over_512_characters_drops_long_members_first() {
        let long = format!("long={}", "x".repeat(200));
        let short: Vec<String> = (0..20)
            .map(|i| format!("k{i}=vvvvvvvvvvvvvvvvvv"))
            .collect();
        let input = format!("{long},{}", short.join(","));
        let kept = parse_trace_state(&input).unwrap();
        assert!(!kept.contains("long="));
        assert!(kept.len() <= MAX_TRACESTATE_LEN);
        assert!(kept.starts_with("k0="));
        assert_eq!(
            parse_trace_state(&"a".repeat(MAX_TRACESTATE_INPUT + 1)),
            None
        );
    }

    #[test]
    fn several_traceparents_are_invalid_and_request_id_is_only_a_fallback() {
        let two = Incoming::from_values([VALID.as_bytes(), VALID.as_bytes()], [], []);
        assert_eq!(two.parent(), None);
        let rid = b"|0af7651916cd43dd8448eb211c80319c.b7ad6b7169203331.".as_slice();
        let both = Incoming::from_values([VALID.as_bytes()], [], [rid]);
        assert_eq!(
            both.parent().unwrap().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let not_utf8 = Incoming::from_values([b"\xff\xfe".as_slice()], [], [rid]);
        assert_eq!(not_utf8, Incoming::default());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let alphabet = b"0123456789abcdefABCDEF-|._=, @\t\xff";
                    alphabet[(next() % alphabet.len() as u64) as usize]
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_traceparent(&text);
            let _ = parse_request_id(&text);
            let _ = parse_trace_state(&text);
            let _ = redact_credentials(&text);
            let _ = Incoming::from_values([bytes.as_slice()], [bytes.as_slice()], [&bytes[..]]);
        }
    }
}
