//! [`actix_web`] servers (feature `actix-web`): a middleware that records each request as the
//! tower [`ServerLayer`](crate::integrations::tower::ServerLayer) does: a `Request` named `METHOD /route` by the matched
//! resource pattern (`GET /orders/{id}`), else the path; the full URL; the response code and
//! success; the caller's trace continued from `traceparent` or the legacy `Request-Id`
//! (malformed headers start a new trace). Spans the handler opens nest under it, and a handler
//! that panics answers 500 with a failed `Request` and an `Exception`.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use census_runtime::integrations::actix_web::ActixMiddleware;
//!
//! async fn order(id: web::Path<u64>) -> String { format!("order {id}") }
//!
//! # async fn demo() -> std::io::Result<()> {
//! HttpServer::new(|| {
//!     App::new()
//!         .wrap(ActixMiddleware::new())
//!         .route("/orders/{id}", web::get().to(order))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};

use super::calls::{ServerRequest, X_FORWARDED_FOR, client_address};
use crate::propagation::{Incoming, REQUEST_ID, TRACEPARENT, TRACESTATE};

/// The middleware, for `App::wrap`.
///
/// ```
/// use actix_web::{App, web};
/// use census_runtime::integrations::actix_web::ActixMiddleware;
///
/// let app = App::new()
///     .wrap(ActixMiddleware::new())
///     .route("/health", web::get().to(|| async { "ok" }));
/// # let _ = app;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ActixMiddleware {
    _private: (),
}

impl ActixMiddleware {
    /// Records each incoming request and continues its caller's trace; the same as
    /// `ActixMiddleware::default()`. Wired into an app as the [type](ActixMiddleware) shows.
    ///
    /// ```
    /// use census_runtime::integrations::actix_web::ActixMiddleware;
    ///
    /// let app = actix_web::App::new().wrap(ActixMiddleware::new());
    /// # let _ = app;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S, B> Transform<S, ServiceRequest> for ActixMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = ActixService<S>;
    type InitError = ();
    type Future = Ready<Result<ActixService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ActixService {
            inner: Rc::new(service),
        }))
    }
}

/// The service [`ActixMiddleware`] wraps around the app: each request it serves is recorded.
///
/// ```
/// use actix_web::{App, test, web};
/// use census_runtime::site::SpanKind;
/// use census_runtime::export::MemoryExporter;
/// use census_runtime::integrations::actix_web::ActixMiddleware;
/// use std::time::Duration;
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// actix_web::rt::System::new().block_on(async {
///     let app = App::new()
///         .wrap(ActixMiddleware::new())
///         .route("/health", web::get().to(|| async { "ok" }));
///     let service = test::init_service(app).await;
///     let request = test::TestRequest::get().uri("/health").to_request();
///     let response = test::call_service(&service, request).await;
///     assert!(response.status().is_success());
/// });
/// census.flush(Duration::from_secs(5))?;
/// let request = memory.one("GET /health");
/// assert_eq!((request.span_kind(), request.result_code()), (SpanKind::Request, Some("200")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ActixService<S> {
    inner: Rc<S>,
}

/// The response future of [`ActixService`].
pub type ActixFuture<B> = Pin<Box<dyn Future<Output = Result<ServiceResponse<B>, Error>>>>;

impl<S, B> Service<ServiceRequest> for ActixService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = ActixFuture<B>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let span = request_span(&req);
        let inner = Rc::clone(&self.inner);
        Box::pin(super::calls::serve(
            span,
            move || inner.call(req),
            |result| match result {
                Ok(response) => response.status().as_u16(),
                Err(error) => error.as_response_error().status_code().as_u16(),
            },
            // actix answers an error with its response: a 500.
            || {
                Err(actix_web::error::ErrorInternalServerError(
                    "the request handler panicked",
                ))
            },
        ))
    }
}

fn request_span(req: &ServiceRequest) -> crate::span::SpanBuilder {
    let headers = req.headers();
    let incoming = Incoming::from_values(
        headers.get_all(TRACEPARENT).map(|v| v.as_bytes()),
        headers.get_all(TRACESTATE).map(|v| v.as_bytes()),
        headers.get_all(REQUEST_ID).map(|v| v.as_bytes()),
    );
    let route = req.match_pattern();
    let info = req.connection_info().clone();
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    ServerRequest {
        method: req.method().as_str(),
        route: route.as_deref(),
        scheme: info.scheme(),
        host: info.host(),
        path_and_query,
        incoming,
        client: client_address(
            headers.get_all(X_FORWARDED_FOR).map(|v| v.as_bytes()),
            req.peer_addr().map(|peer| peer.ip()),
        ),
    }
    .span()
}
