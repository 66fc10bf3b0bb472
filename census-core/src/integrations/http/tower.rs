//! Tower layers for HTTP over the [`http`] crate's types (feature `tower`): [`ClientLayer`] for
//! a client service (hyper-util's client, or any tower HTTP client), [`ServerLayer`] for a
//! server (hyper, axum).
//!
//! ## Client
//!
//! Each call is an `HTTP` dependency under the span current where it is made, described as the
//! [`reqwest`](crate::integrations::reqwest) integration describes it, and carries `traceparent` (and `tracestate`).
//! The request's URI must be absolute (`http://host:port/path`), as hyper-util's client wants
//! it anyway.
//!
//! ```no_run
//! use census_runtime::integrations::tower::ClientLayer;
//! use tower_layer::Layer;
//! # fn demo<S>(hyper_util_client: S) {
//! let client = ClientLayer::new().layer(hyper_util_client);
//! # let _ = client;
//! # }
//! ```
//!
//! ## Server
//!
//! Each request is a `Request`, named `METHOD /route` (the route template a router matched, when
//! the layer comes from a router's integration such as [`axum::layer`](crate::integrations::axum::layer), else
//! the path), with the full URL, the response code and success (status
//! below 400). It continues the caller's trace from `traceparent`, or from the legacy
//! `Request-Id` when that is all the request carries; a malformed, duplicated or oversized header
//! starts a new trace and never fails the request. Spans the handler opens nest under it.
//!
//! A handler that panics answers 500: the `Request` fails with result code 500 and an
//! `Exception` telemetry item, and the server goes on serving.
//!
//! ```no_run
//! use census_runtime::integrations::tower::ServerLayer;
//! # fn demo<S>(hyper_service: S) {
//! use tower_layer::Layer;
//! let service = ServerLayer::new().layer(hyper_service);
//! # let _ = service;
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::calls::{
    ClientCall, ClientOptions, Failure, ServerRequest, X_FORWARDED_FOR, client_address,
};
use crate::propagation::{Incoming, REQUEST_ID, TRACEPARENT, TRACESTATE};

// ---------------------------------------------------------------------------------------------
// Client.

/// Wraps an HTTP client service in [`ClientService`].
///
/// ```
/// use census_runtime::integrations::tower::{ClientLayer, ClientService};
/// use tower_layer::Layer;
///
/// /// Any `tower` HTTP client (`hyper_util`'s, say), its calls made dependencies.
/// fn traced<S>(client: S) -> ClientService<S> {
///     ClientLayer::new().layer(client)
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer {
    options: ClientOptions,
}

impl ClientLayer {
    /// Records calls and sends `traceparent` (and `tracestate`).
    ///
    /// ```
    /// use census_runtime::integrations::tower::ClientLayer;
    ///
    /// let layer = ClientLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Also sends the legacy `Request-Id` header.
    ///
    /// ```
    /// let layer = census_runtime::integrations::tower::ClientLayer::new().with_request_id(true);
    /// # let _ = layer;
    /// ```
    pub fn with_request_id(mut self, enabled: bool) -> Self {
        self.options.request_id = enabled;
        self
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            options: self.options,
        }
    }
}

/// An HTTP client service whose calls are recorded as dependencies; see [`ClientLayer`].
///
/// ```
/// use census_runtime::integrations::tower::{ClientLayer, ClientService};
/// use tower_layer::Layer;
///
/// fn traced<S>(client: S) -> ClientService<S> {
///     ClientLayer::new().layer(client)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
    options: ClientOptions,
}

impl<S, B, R> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: fmt::Debug + fmt::Display,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let url = req.uri().to_string();
        let call = ClientCall::start(req.method().as_str(), &url, self.options);
        if let Some(outgoing) = &call.headers {
            for (name, value) in outgoing.headers() {
                if let Ok(value) = HeaderValue::from_str(value) {
                    req.headers_mut().insert(name, value);
                }
            }
        }
        ClientFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

pin_project! {
    /// The response future of [`ClientService`]: ends the dependency when the response (or the
    /// error) comes, or as cancelled when it is dropped first.
    pub struct ClientFuture<F> {
        #[pin]
        inner: F,
        call: Option<ClientCall>,
    }

    impl<F> PinnedDrop for ClientFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.cancelled();
            }
        }
    }
}

impl<F: fmt::Debug> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: fmt::Debug + fmt::Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let poll = this.inner.poll(cx);
        if let Poll::Ready(result) = &poll
            && let Some(call) = this.call.take()
        {
            match result {
                Ok(response) => call.status(response.status().as_u16()),
                Err(error) => call.failed(Failure::of_text(&format!("{error:?}")), error),
            }
        }
        poll
    }
}

// ---------------------------------------------------------------------------------------------
// Server.

/// Wraps an HTTP server service in [`ServerService`].
///
/// ```
/// use census_runtime::integrations::tower::{ServerLayer, ServerService};
/// use tower_layer::Layer;
///
/// /// Any `tower` HTTP service (`hyper`'s, `tonic`'s), its requests recorded.
/// fn traced<S>(service: S) -> ServerService<S> {
///     ServerLayer::new().layer(service)
/// }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerLayer {
    routes: Option<Routes>,
}

/// What a router knows of a request that its request line does not: the route template it
/// matched, and the URI the client asked for before a nested router stripped a prefix. A
/// router's integration supplies it (the [`axum`](crate::integrations::axum) module reads axum's).
#[derive(Clone, Copy)]
pub(crate) struct Routes {
    pub(crate) route: fn(&http::Extensions) -> Option<&str>,
    pub(crate) original_uri: fn(&http::Extensions) -> Option<&http::Uri>,
    /// The connection's peer, when the router was told it (axum's `ConnectInfo`).
    pub(crate) peer: fn(&http::Extensions) -> Option<std::net::IpAddr>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Routes")
    }
}

impl ServerLayer {
    /// Records each incoming request and continues its caller's trace.
    ///
    /// ```
    /// use census_runtime::integrations::tower::ServerLayer;
    ///
    /// let layer = ServerLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Names requests by the route `routes` finds.
    #[cfg(feature = "axum")]
    pub(crate) fn with_routes(routes: Routes) -> Self {
        ServerLayer {
            routes: Some(routes),
        }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            routes: self.routes,
        }
    }
}

/// An HTTP server service whose requests are recorded; see [`ServerLayer`].
///
/// ```
/// use census_runtime::integrations::tower::{ServerLayer, ServerService};
/// use tower_layer::Layer;
///
/// fn traced<S>(service: S) -> ServerService<S> {
///     ServerLayer::new().layer(service)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    routes: Option<Routes>,
}

/// The response future of [`ServerService`].
pub type ServerFuture<R, E> = Pin<Box<dyn Future<Output = Result<Response<R>, E>> + Send>>;

impl<S, B, R> Service<Request<B>> for ServerService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ServerFuture<R, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service handles this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let span = request_span(&req, self.routes);
        Box::pin(super::calls::serve(
            span,
            move || inner.call(req),
            // A service error is not an answer: the connection fails, which counts as a 500.
            |result| {
                result
                    .as_ref()
                    .map_or(500, |response| response.status().as_u16())
            },
            || {
                let mut response = Response::new(R::default());
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                Ok(response)
            },
        ))
    }
}

fn request_span<B>(req: &Request<B>, routes: Option<Routes>) -> crate::span::SpanBuilder {
    let headers = req.headers();
    let incoming = Incoming::from_values(
        headers
            .get_all(TRACEPARENT)
            .iter()
            .map(HeaderValue::as_bytes),
        headers
            .get_all(TRACESTATE)
            .iter()
            .map(HeaderValue::as_bytes),
        headers
            .get_all(REQUEST_ID)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    let extensions = req.extensions();
    let route = routes.and_then(|routes| (routes.route)(extensions));
    let uri = routes
        .and_then(|routes| (routes.original_uri)(extensions))
        .unwrap_or(req.uri());
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("localhost");
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    ServerRequest {
        method: req.method().as_str(),
        route,
        scheme: uri.scheme_str().unwrap_or("http"),
        host,
        path_and_query,
        incoming,
        client: client_address(
            headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(HeaderValue::as_bytes),
            routes.and_then(|routes| (routes.peer)(extensions)),
        ),
    }
    .span()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_context_is_named_by_its_path() {
        let req = Request::builder()
            .uri("/orders/7?x=1")
            .header("host", "127.0.0.1:8080")
            .header(TRACEPARENT, "garbage")
            .body(())
            .unwrap();
        // Without a pipeline the builder is inert; this checks that nothing panics on input.
        request_span(&req, None).in_scope(|| {});
    }
}
