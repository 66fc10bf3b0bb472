//! Outgoing calls made with [`ureq`] from blocking code (feature `ureq`).
//!
//! Each call is an `HTTP` dependency under the span current on the calling thread, described as
//! the [`reqwest`](crate::integrations::reqwest) integration describes it (an error status that ureq turns into
//! `Error::StatusCode` is still recorded as that status), and carries `traceparent` (and
//! `tracestate`).
//!
//! ```no_run
//! use census_runtime::integrations::ureq::UreqMiddleware;
//!
//! let agent: ureq::Agent = ureq::Agent::config_builder()
//!     .middleware(UreqMiddleware::new())
//!     .build()
//!     .into();
//! let body = agent.get("http://127.0.0.1:8080/orders/7").call()?.body_mut().read_to_string()?;
//! # Ok::<(), ureq::Error>(())
//! ```

use ureq::http::{HeaderValue, Request, Response};
use ureq::middleware::{Middleware, MiddlewareNext};
use ureq::{Body, Error, SendBody};

use super::calls::{ClientCall, ClientOptions, Failure};

/// A ureq middleware that records each call and propagates the trace.
///
/// ```
/// use census_runtime::integrations::ureq::UreqMiddleware;
///
/// let agent: ureq::Agent = ureq::Agent::config_builder()
///     .middleware(UreqMiddleware::new())
///     .build()
///     .into();
/// # let _ = agent;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct UreqMiddleware {
    options: ClientOptions,
}

impl UreqMiddleware {
    /// Records calls and sends `traceparent` (and `tracestate`); the same as
    /// `UreqMiddleware::default()`. Given to an agent as the [type](UreqMiddleware) shows.
    ///
    /// ```
    /// use census_runtime::integrations::ureq::UreqMiddleware;
    ///
    /// let middleware = UreqMiddleware::new();
    /// # let _ = ureq::Agent::config_builder().middleware(middleware);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Also sends the legacy `Request-Id` header.
    ///
    /// ```
    /// let middleware = census_runtime::integrations::ureq::UreqMiddleware::new()
    ///     .with_request_id(true);
    /// # let _ = middleware;
    /// ```
    pub fn with_request_id(mut self, enabled: bool) -> Self {
        self.options.request_id = enabled;
        self
    }
}

impl Middleware for UreqMiddleware {
    fn handle(
        &self,
        mut request: Request<SendBody>,
        next: MiddlewareNext,
    ) -> Result<Response<Body>, Error> {
        let url = request.uri().to_string();
        let call = ClientCall::start(request.method().as_str(), &url, self.options);
        if let Some(outgoing) = &call.headers {
            for (name, value) in outgoing.headers() {
                if let Ok(value) = HeaderValue::from_str(value) {
                    request.headers_mut().insert(name, value);
                }
            }
        }
        let result = next.handle(request);
        match &result {
            Ok(response) => call.status(response.status().as_u16()),
            Err(Error::StatusCode(status)) => call.status(*status),
            Err(error) => call.failed(failure(error), error),
        }
        result
    }
}

fn failure(error: &Error) -> Failure {
    match error {
        Error::Timeout(_) => Failure::Timeout,
        Error::ConnectionFailed | Error::HostNotFound => Failure::Connect,
        Error::Io(io) => Failure::of_io(io.kind()).unwrap_or(Failure::Other),
        _ => Failure::Other,
    }
}
