//! What the HTTP integrations share: how an outgoing call and an incoming request are named and
//! described, and how their outcome is recorded. Each client or server crate only translates its
//! own types into these.

// Each HTTP feature uses a part: clients the calls, servers the requests.
#![cfg_attr(
    not(all(
        feature = "reqwest",
        feature = "tower",
        feature = "ureq",
        feature = "actix-web"
    )),
    allow(dead_code)
)]

use std::borrow::Cow;
use std::fmt::Display;
use std::future::Future;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::propagation::{Incoming, Outgoing, redact_credentials};
use crate::record::OperationName;
use crate::span::{DetachedSpan, SpanBuilder};

/// The header a proxy or load balancer names the client in, first of the addresses it lists.
pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Application Insights keeps at most this much of a URL.
const MAX_URL: usize = 2048;

/// Options every client integration offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientOptions {
    /// Also send the legacy `Request-Id` header.
    pub(crate) request_id: bool,
}

/// An outgoing call being recorded: a detached `HTTP` dependency under the span current where
/// the call was made, and the headers that carry the trace on (also when it is not recorded:
/// with flag `00`).
pub(crate) struct ClientCall {
    span: DetachedSpan,
    pub(crate) headers: Option<Outgoing>,
}

/// The parts of an absolute URL a dependency is described by.
struct UrlParts<'a> {
    authority: &'a str,
    path: &'a str,
}

fn split_url(url: &str) -> UrlParts<'_> {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let rest = &after_scheme[authority_end..];
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = &rest[..path_end];
    UrlParts {
        authority,
        path: if path.is_empty() { "/" } else { path },
    }
}

impl ClientCall {
    /// Starts recording a call of `method` to the absolute `url`: name `METHOD /path`, target
    /// `host[:port]`, data the URL without credentials.
    pub(crate) fn start(method: &str, url: &str, options: ClientOptions) -> ClientCall {
        let parts = split_url(url);
        let span = crate::span(format!("{method} {}", parts.path))
            .kind("HTTP")
            .target(parts.authority.to_owned())
            .data(bounded(redact_credentials(url)).into_owned())
            .start_detached();
        // The call's own span; else, in a trace that is not recorded, that trace's context:
        // the call passes the decision on with flag `00`.
        let headers = span
            .context()
            .or_else(|| crate::current_span().context())
            .map(|ctx| {
                Outgoing::for_context(ctx, crate::current_span().trace_state(), options.request_id)
            });
        ClientCall { span, headers }
    }

    /// The response came back with `status`: its result code; 400 and above fail the call.
    pub(crate) fn status(self, status: u16) {
        self.span.set_result_code(status);
        if status >= 400 {
            self.span.set_success(false);
        }
    }

    /// No response: the call failed for `failure`, described by `message`.
    pub(crate) fn failed(self, failure: Failure, message: impl Display) {
        self.span.set_result_code(failure.code());
        self.span.fail(message);
    }

    /// The caller gave up waiting (the future was dropped): not succeeded, result code
    /// `cancelled`, as a cancelled `#[dependency]` call is recorded.
    pub(crate) fn cancelled(self) {
        self.span.set_result_code("cancelled");
        self.span.set_success(false);
    }
}

/// Why a call got no response; its result code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made (refused, unreachable, name not found).
    Connect,
    /// The call took longer than its timeout.
    Timeout,
    /// Anything else (a protocol error, a body error, a middleware's own error).
    Other,
}

impl Failure {
    fn code(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Other => "error",
        }
    }

    /// Classifies an error by the I/O errors in its chain of sources, then by its description:
    /// for client stacks whose error type says no more than that.
    pub(crate) fn of_error(error: &(dyn std::error::Error + 'static)) -> Failure {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && let Some(failure) = Failure::of_io(io.kind())
            {
                return failure;
            }
            current = error.source();
        }
        Failure::of_text(&format!("{error:?}"))
    }

    pub(crate) fn of_io(kind: std::io::ErrorKind) -> Option<Failure> {
        use std::io::ErrorKind as K;
        match kind {
            K::TimedOut => Some(Failure::Timeout),
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::AddrNotAvailable
            | K::HostUnreachable
            | K::NetworkUnreachable => Some(Failure::Connect),
            _ => None,
        }
    }

    /// From an error's `Debug` text: hyper-util writes `Connect` for its connect errors, tower
    /// `Elapsed` for its timeouts.
    pub(crate) fn of_text(text: &str) -> Failure {
        if text.contains("TimedOut") || text.contains("Elapsed") || text.contains("timed out") {
            Failure::Timeout
        } else if text.contains("Connect") || text.contains("connect") {
            Failure::Connect
        } else {
            Failure::Other
        }
    }
}

/// Keeps a URL within what Application Insights accepts, cut on a character boundary.
fn bounded(url: Cow<'_, str>) -> Cow<'_, str> {
    if url.len() <= MAX_URL {
        return url;
    }
    let mut end = MAX_URL;
    while !url.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(url[..end].to_owned())
}

/// An incoming request about to be served.
pub(crate) struct ServerRequest<'a> {
    pub(crate) method: &'a str,
    /// The route template, when the framework knows it.
    pub(crate) route: Option<&'a str>,
    pub(crate) scheme: &'a str,
    /// The `Host` the client asked for.
    pub(crate) host: &'a str,
    /// Path and query.
    pub(crate) path_and_query: &'a str,
    pub(crate) incoming: Incoming,
    /// The client's address ([`client_address`]).
    pub(crate) client: Option<IpAddr>,
}

/// The address of the client a request came from: the first of `X-Forwarded-For` (what the
/// proxy or load balancer in front of the service saw), else the connection's `peer`, as the
/// Azure Monitor exporters read it. A header that holds no address is ignored.
pub(crate) fn client_address<'v>(
    mut forwarded_for: impl Iterator<Item = &'v [u8]>,
    peer: Option<IpAddr>,
) -> Option<IpAddr> {
    forwarded_for
        .next()
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|value| value.split(',').next())
        .and_then(crate::record::ip_address)
        .or(peer)
}

impl ServerRequest<'_> {
    /// The `Request` span: name `METHOD /route` (else the path), url, the caller's trace.
    pub(crate) fn span(&self) -> crate::span::SpanBuilder {
        let path = self
            .path_and_query
            .split(['?', '#'])
            .next()
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let url = format!("{}://{}{}", self.scheme, self.host, self.path_and_query);
        // A route is one of a few names, interned; a raw path may be seen once: shared, so that
        // a scanner's paths leave the table of names to the routes.
        let builder = match self.route {
            Some(route) => self.incoming.request(format!("{} {route}", self.method)),
            None => {
                let name = format!("{} {path}", self.method);
                let operation_name = OperationName::shared(Arc::from(name.as_str()));
                let request = SpanBuilder::request_named(operation_name, Cow::Owned(name));
                self.incoming.under(request)
            }
        };
        let builder = builder.data(bounded(Cow::Owned(url)).into_owned());
        match self.client {
            Some(client) => builder.client_address(client),
            None => builder,
        }
    }
}

/// The response status of the request current on this thread.
pub(crate) fn record_response(status: u16) {
    let span = crate::current_span();
    span.set_result_code(status);
    span.set_success(status < 400);
}

/// The handler panicked: the request answers 500, which its span records before the panic
/// fails it.
pub(crate) fn record_panic() {
    crate::current_span().set_result_code(500);
}

/// A panic's payload message, for a log line.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

/// Serves one request inside its span, for the server integrations: `call` makes the handler's
/// future with the span current; `status` reads the answer's status (a response's, or the
/// error's) into the span. A panic in the handler is recorded (a 500, and an Exception as it
/// unwinds through the span), then caught, logged, and answered with `on_panic()`: the server
/// keeps serving.
pub(crate) async fn serve<T, E, F>(
    span: crate::span::SpanBuilder,
    call: impl FnOnce() -> F,
    status: impl FnOnce(&Result<T, E>) -> u16,
    on_panic: impl FnOnce() -> Result<T, E>,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let served = span.instrument(async move {
        match CatchPanic::new(call()).await {
            Ok(result) => {
                record_response(status(&result));
                result
            }
            Err(payload) => {
                record_panic();
                std::panic::resume_unwind(payload)
            }
        }
    });
    match CatchPanic::new(served).await {
        Ok(result) => result,
        Err(payload) => {
            log::error!(
                "census: a request handler panicked: {}",
                panic_message(payload.as_ref())
            );
            on_panic()
        }
    }
}

pin_project! {
    /// Runs a future, catching a panic of any poll as `Err(payload)`.
    pub(crate) struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchPanic { inner }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_first_forwarded_address_else_the_peer_and_a_bad_header_is_ignored() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let client = |forwarded: &[&str]| {
            client_address(forwarded.iter().map(|value| value.as_bytes()), Some(peer))
                .map(|address| address.to_string())
        };
        assert_eq!(client(&[]).as_deref(), Some("127.0.0.1"));
        for (forwarded, expected) in [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7, 10.0.0.2, 10.0.0.3", "203.0.113.7"),
            (" 203.0.113.7 ,10.0.0.2", "203.0.113.7"),
            ("203.0.113.7:4711", "203.0.113.7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            // Not an address: the peer.
            ("unknown", "127.0.0.1"),
            ("", "127.0.0.1"),
            (", 203.0.113.7", "127.0.0.1"),
            ("203.0.113.777", "127.0.0.1"),
        ] {
            assert_eq!(
                client(&[forwarded]).as_deref(),
                Some(expected),
                "{forwarded:?}"
            );
        }
        // The first header counts, as the first address of one.
        assert_eq!(
            client(&["198.51.100.1", "203.0.113.7"]).as_deref(),
            Some("198.51.100.1")
        );
        assert_eq!(
            client_address([&b"\xff\xfe"[..]].into_iter(), Some(peer)),
            Some(peer),
            "bytes that are not text"
        );
        assert_eq!(client_address(std::iter::empty(), None), None);
    }

    #[test]
    fn urls_split_into_target_and_path_without_credentials_or_query() {
        let parts = split_url("http://me:pw@127.0.0.1:8080/orders/7?x=1#top");
        assert_eq!(
            (parts.authority, parts.path),
            ("127.0.0.1:8080", "/orders/7")
        );
        let parts = split_url("http://[::1]?q");
        assert_eq!((parts.authority, parts.path), ("[::1]", "/"));
    }

    #[test]
    fn failures_are_told_apart_by_io_kind_then_text() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::of_error(&refused), Failure::Connect);
        assert_eq!(
            Failure::of_text("Error { kind: Connect, .. }"),
            Failure::Connect
        );
        assert_eq!(Failure::of_text("Elapsed(())"), Failure::Timeout);
        assert_eq!(Failure::of_text("body error"), Failure::Other);
    }

    #[test]
    fn a_route_is_interned_as_the_operation_name_and_a_raw_path_is_not() {
        let request = |route| ServerRequest {
            method: "GET",
            route,
            scheme: "http",
            host: "127.0.0.1",
            path_and_query: "/scan/4711?x=1",
            incoming: Incoming::default(),
            client: None,
        };
        drop(request(None).span());
        assert!(!crate::record::is_interned("GET /scan/4711"));
        drop(request(Some("/orders/{id}")).span());
        assert!(crate::record::is_interned("GET /orders/{id}"));
    }
}
