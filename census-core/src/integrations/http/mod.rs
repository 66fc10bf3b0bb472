//! HTTP: an outgoing call is a `Dependency` of type `HTTP` under the current span that carries
//! the trace on in `traceparent` (see [`propagation`](crate::propagation)); an incoming request
//! is a `Request` that continues its caller's trace. `calls.rs` holds what every client and
//! server integration shares; each other file translates one crate's types into it.

mod calls;

#[cfg(feature = "actix-web")]
pub mod actix_web;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "ureq")]
pub mod ureq;
