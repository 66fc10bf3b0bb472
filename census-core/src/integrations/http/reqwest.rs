//! Outgoing calls made with [`reqwest`], through [`reqwest_middleware`] (feature `reqwest`).
//!
//! Each call is an `HTTP` dependency under the span current where it is made: name
//! `METHOD /path`, target `host[:port]`, data the URL without credentials, result code the
//! status (400 and above fail it), or `connect` / `timeout` / `error` when no response came.
//! The request carries `traceparent` (and `tracestate` when the request being served brought one;
//! the legacy `Request-Id` too with [`ReqwestMiddleware::with_request_id`]).
//!
//! ```no_run
//! use census_runtime::integrations::reqwest::ReqwestMiddleware;
//!
//! # async fn demo() -> Result<(), reqwest_middleware::Error> {
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(ReqwestMiddleware::new())
//!     .build();
//! let response = client.get("http://127.0.0.1:8080/orders/7").send().await?;
//! # drop(response);
//! # Ok(())
//! # }
//! ```

use http::{Extensions, HeaderValue};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use super::calls::{ClientCall, ClientOptions, Failure};

/// A `reqwest-middleware` middleware that records each call and propagates the trace.
///
/// ```
/// use census_runtime::integrations::reqwest::ReqwestMiddleware;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(ReqwestMiddleware::new())
///     .build();
/// # let _ = client;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ReqwestMiddleware {
    options: ClientOptions,
}

impl ReqwestMiddleware {
    /// Records calls and sends `traceparent` (and `tracestate`); the same as
    /// `ReqwestMiddleware::default()`. Given to a client as the [type](ReqwestMiddleware) shows.
    ///
    /// ```
    /// use census_runtime::integrations::reqwest::ReqwestMiddleware;
    ///
    /// let middleware = ReqwestMiddleware::new();
    /// # let _ = reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(middleware);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Also sends the legacy Application Insights `Request-Id` header, for services on SDKs
    /// older than W3C trace context.
    ///
    /// ```
    /// let middleware = census_runtime::integrations::reqwest::ReqwestMiddleware::new()
    ///     .with_request_id(true);
    /// # let _ = middleware;
    /// ```
    pub fn with_request_id(mut self, enabled: bool) -> Self {
        self.options.request_id = enabled;
        self
    }
}

/// Ends the call as cancelled when the caller drops the request before it completes.
struct Pending(Option<ClientCall>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.cancelled();
        }
    }
}

#[async_trait::async_trait]
impl Middleware for ReqwestMiddleware {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let call = ClientCall::start(req.method().as_str(), req.url().as_str(), self.options);
        if let Some(outgoing) = &call.headers {
            for (name, value) in outgoing.headers() {
                if let Ok(value) = HeaderValue::from_str(value) {
                    req.headers_mut().insert(name, value);
                }
            }
        }
        let mut pending = Pending(Some(call));
        let result = next.run(req, extensions).await;
        if let Some(call) = pending.0.take() {
            match &result {
                Ok(response) => call.status(response.status().as_u16()),
                Err(error) => call.failed(failure(error), error),
            }
        }
        result
    }
}

fn failure(error: &reqwest_middleware::Error) -> Failure {
    match error {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => Failure::Timeout,
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => Failure::Connect,
        reqwest_middleware::Error::Reqwest(e) => Failure::of_error(e),
        reqwest_middleware::Error::Middleware(_) => Failure::Other,
    }
}
