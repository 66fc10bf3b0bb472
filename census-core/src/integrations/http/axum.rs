//! [`axum`] servers (feature `axum`, which brings in `tower`): the
//! [`ServerLayer`] names each request by the route template axum
//! matched (`GET /orders/{id}`, not `GET /orders/7`), so that the operations of a service are
//! few and stable, and records the URL the client asked for even under a nested router.
//!
//! Add the layer with `Router::layer`, which runs it after routing:
//!
//! ```
//! use axum::{Router, routing::get};
//! use census_runtime::integrations::axum::layer;
//!
//! async fn order() -> &'static str { "order" }
//!
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(order))
//!     .layer(layer());
//! # let _ = app;
//! ```
//!
//! A request no route matched (the fallback) is named by its path. The client's address
//! (`ai.location.ip`) is the first of `X-Forwarded-For`, else the connection's peer when the
//! service was made with `into_make_service_with_connect_info::<SocketAddr>()`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, OriginalUri};
use http::{Extensions, Uri};

use super::tower::{Routes, ServerLayer};

/// The server layer, for `Router::layer`: the tower [`ServerLayer`] naming requests by axum's
/// matched route.
///
/// ```
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .layer(census_runtime::integrations::axum::layer());
/// # let _ = app;
/// ```
pub fn layer() -> ServerLayer {
    ServerLayer::with_routes(Routes {
        route,
        original_uri,
        peer,
    })
}

/// The route template axum matched, when the layer runs after routing.
fn route(extensions: &Extensions) -> Option<&str> {
    extensions.get::<MatchedPath>().map(MatchedPath::as_str)
}

/// The connection's peer, when the service was made with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
fn peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The URI before a nested router stripped its prefix.
fn original_uri(extensions: &Extensions) -> Option<&Uri> {
    extensions.get::<OriginalUri>().map(|o| &o.0)
}
