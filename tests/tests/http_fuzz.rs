//! Thousands of random and malformed `traceparent`, `Request-Id` and `tracestate` values sent
//! to an axum server behind the census layer: no panic, no failed request; a malformed context
//! starts a valid new trace each time, and what is passed on of a `tracestate` is within the
//! W3C limits.

use std::collections::HashSet;

use axum::routing::get;

use crate::http_support::*;
use census_runtime::integrations::axum::layer;
use census_runtime::site::SpanKind;
use census_tests::{flush, install_memory};
use http::HeaderValue;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const VALID_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CASES: usize = 3000;

/// A small deterministic generator (xorshift), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A byte a header value may hold on the wire: visible ASCII, space, tab, or obs-text.
    fn header_byte(&mut self) -> u8 {
        const ALPHABET: &[u8] = b"0123456789abcdefABCDEF-|._=,@ \tff00zZ*/%";
        match self.below(10) {
            0 => 0x80 + self.below(0x80) as u8,
            1 => 0x21 + self.below(0x5e) as u8,
            _ => ALPHABET[self.below(ALPHABET.len())],
        }
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.header_byte()).collect()
    }
}

/// A `traceparent` that breaks a W3C rule, by construction.
fn malformed_traceparent(rng: &mut Rng) -> Vec<u8> {
    let valid = VALID.as_bytes().to_vec();
    match rng.below(9) {
        // Random text shorter than any valid value.
        0 => rng.bytes(54),
        // One structural character replaced by something that is not it.
        1 => {
            let mut v = valid;
            let at = [2usize, 35, 52][rng.below(3)];
            v[at] = b"_ x0."[rng.below(5)];
            v
        }
        // A hex digit replaced by a non-lowercase-hex character.
        2 => {
            let mut v = valid;
            let positions: Vec<usize> = (0..55).filter(|i| ![2, 35, 52].contains(i)).collect();
            v[positions[rng.below(positions.len())]] = b"gGzAF-!~"[rng.below(8)];
            v
        }
        3 => VALID.replacen("00", "ff", 1).into_bytes(),
        4 => VALID
            .replace(VALID_TRACE, "00000000000000000000000000000000")
            .into_bytes(),
        5 => VALID
            .replace("00f067aa0ba902b7", "0000000000000000")
            .into_bytes(),
        // Version 00 with anything appended.
        6 => {
            let mut v = valid;
            v.extend(b"-");
            v.extend(rng.bytes(40));
            v
        }
        // Truncated.
        7 => valid[..rng.below(55)].to_vec(),
        // Oversized.
        _ => {
            let mut v = b"01".to_vec();
            v.extend(std::iter::repeat_n(b'a', 600 + rng.below(4000)));
            v
        }
    }
}

/// A `Request-Id` that is not `|<32 hex>.<16 hex>.`.
fn malformed_request_id(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => {
            let mut v = rng.bytes(60);
            v.retain(|b| *b != b'|');
            v
        }
        1 => format!("|{VALID_TRACE}.").into_bytes(),
        2 => format!("|{}.00f067aa0ba902b7.", &VALID_TRACE[..31]).into_bytes(),
        3 => format!("|{VALID_TRACE}.00f067aa0ba902bz.").into_bytes(),
        _ => {
            let mut v = b"|".to_vec();
            v.extend(rng.bytes(80));
            v.retain(|b| *b != b'.');
            v
        }
    }
}

/// A random `tracestate`: valid members, broken members, many, long, or junk.
fn random_trace_state(rng: &mut Rng) -> Vec<u8> {
    let members = rng.below(50);
    let mut parts = Vec::new();
    for i in 0..members {
        let part = match rng.below(6) {
            0 => rng.bytes(20),
            1 => format!("k{i}={}", "v".repeat(rng.below(300))).into_bytes(),
            2 => format!("t{i}@sys={}", rng.below(1000)).into_bytes(),
            _ => format!("key{i}=value{}", rng.below(1000)).into_bytes(),
        };
        parts.push(part);
    }
    parts.join(&b","[..])
}

fn value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("the generator makes only valid header bytes")
}

async fn state() -> String {
    census_runtime::current_span()
        .trace_state()
        .as_deref()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_context_headers_never_fail_a_request_and_start_a_valid_new_trace() {
    let (pipeline, memory) = install_memory();
    let addr = serve_axum(|_| axum::Router::new().route("/", get(state)).layer(layer())).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..CASES {
        let mut request = client.get(format!("http://{addr}/"));
        match case % 3 {
            0 => request = request.header("traceparent", value(&malformed_traceparent(&mut rng))),
            1 => request = request.header("request-id", value(&malformed_request_id(&mut rng))),
            _ => {
                // Two valid traceparents: W3C says that is no traceparent at all.
                request = request
                    .header("traceparent", VALID)
                    .header("traceparent", VALID)
            }
        }
        if rng.below(2) == 0 {
            request = request.header("tracestate", value(&random_trace_state(&mut rng)));
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(response.status(), 200, "case {case}");
        assert_eq!(
            response.text().await.unwrap(),
            "",
            "case {case}: no state kept"
        );
    }
    flush(&pipeline);

    let requests = memory.named("GET /");
    assert_eq!(requests.len(), CASES);
    let mut traces = HashSet::new();
    for request in &requests {
        assert_eq!(request.span_kind(), SpanKind::Request);
        assert!(request.success());
        assert_eq!(request.result_code(), Some("200"));
        assert_eq!(request.parent_id(), None, "a new trace");
        assert_ne!(request.trace_id().to_string(), VALID_TRACE);
        assert_ne!(request.trace_id().to_int(), 0);
        assert!(traces.insert(request.trace_id()), "each trace is new");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tracestate_with_a_valid_traceparent_continues_the_trace_within_w3c_limits() {
    let (pipeline, memory) = install_memory();
    let addr = serve_axum(|_| axum::Router::new().route("/", get(state)).layer(layer())).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    let mut kept = 0;
    for case in 0..CASES {
        let sent = random_trace_state(&mut rng);
        let response = client
            .get(format!("http://{addr}/"))
            .header("traceparent", VALID)
            .header("tracestate", value(&sent))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 200, "case {case}");
        let passed_on = response.text().await.unwrap();
        if passed_on.is_empty() {
            continue;
        }
        kept += 1;
        let members: Vec<&str> = passed_on.split(',').collect();
        assert!(passed_on.len() <= 512, "case {case}: {passed_on:?}");
        assert!(members.len() <= 32, "case {case}");
        let sent = String::from_utf8_lossy(&sent);
        for member in members {
            assert!(member.contains('='), "case {case}: {member:?}");
            assert!(
                sent.split(',')
                    .any(|m| m.trim_matches([' ', '\t']) == member),
                "case {case}: {member:?} was sent"
            );
        }
    }
    assert!(kept > 0, "some random states are valid and passed on");
    flush(&pipeline);
    let requests = memory.named("GET /");
    assert_eq!(requests.len(), CASES);
    for request in requests {
        assert!(request.success());
        assert_eq!(request.trace_id().to_string(), VALID_TRACE);
        assert_eq!(
            request.parent_id().map(|p| p.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
    }
}
