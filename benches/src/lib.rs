//! What the benchmarks of census share: a loopback Application Insights sink, an HTTP client
//! for `opentelemetry-application-insights` that needs no network beyond 127.0.0.1, and a
//! poll loop that runs a future to completion at no cost of its own.
//!
//! The benchmarks themselves are `benches/overhead.rs` (per-call cost against the peers),
//! `benches/export.rs` (serialisation and end-to-end export throughput), `src/bin/memory.rs`
//! (peak RSS while the endpoint is stalled) and `compile-cost.sh`; `scripts/bench` runs them
//! all and `src/bin/report.rs` turns the results into the tables of `BENCHMARKS.md`.

pub mod sink;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub use sink::{Behaviour, Sink};

/// The instrumentation key every benchmark uses.
pub const IKEY: &str = "00000000-0000-0000-0000-00000000b0b0";

/// Polls `future` until it is ready, with a waker that does nothing: the cheapest executor
/// there is, and the same for every case measured. Always inlined, so that every case's future
/// is polled where the caller built it: left to the optimiser, the loop is inlined for some
/// futures and not for others, and those it is not inlined for are moved before their first
/// poll (a copy that waits on the byte store of the future's state), whichever library made it.
#[inline(always)]
pub fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

/// A blocking HTTP client for `opentelemetry-application-insights`: its batch span processor
/// calls the client from a thread of its own, with no tokio runtime there for reqwest's async
/// client, so it gets ureq, a small blocking client with kept connections (census posts through
/// reqwest on its transport thread's own runtime).
///
/// It talks to 127.0.0.1 only, over plain HTTP: the exporter turns every ingestion endpoint into
/// `https://`, and the loopback sink speaks no TLS.
#[derive(Debug, Clone)]
pub struct UreqClient {
    agent: ureq::Agent,
}

impl Default for UreqClient {
    fn default() -> Self {
        // Timeouts per phase and none on name resolution: with one, ureq resolves on a thread
        // spawned per request.
        let timeout = Some(std::time::Duration::from_secs(10));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_send_body(timeout)
            .timeout_recv_response(timeout)
            .timeout_recv_body(timeout)
            .build()
            .new_agent();
        UreqClient { agent }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let (mut parts, body) = request.into_parts();
        parts.uri = loopback_http(&parts.uri)?;
        let request = opentelemetry_http::Request::from_parts(parts, body.to_vec());
        let mut response = self.agent.run(request)?;
        let status = response.status();
        let body = response.body_mut().read_to_vec()?;
        Ok(opentelemetry_http::Response::builder()
            .status(status)
            .body(opentelemetry_http::Bytes::from(body))?)
    }
}

/// `uri` on 127.0.0.1 over plain HTTP; an error for any other host.
fn loopback_http(uri: &ureq::http::Uri) -> Result<ureq::http::Uri, opentelemetry_http::HttpError> {
    if uri.host() != Some("127.0.0.1") {
        return Err(format!("the benchmark client talks to 127.0.0.1 only, not {uri}").into());
    }
    let port = uri.port_u16().map_or(String::new(), |p| format!(":{p}"));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("http://127.0.0.1{port}{path}").parse()?)
}

/// The peak resident set size of this process so far (`VmHWM`), and the current one
/// (`VmRSS`), in KiB.
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
