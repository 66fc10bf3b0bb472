//! Integrations with the crates an application calls through, where Rust cannot monkeypatch:
//! each one is a file of its own behind a cargo feature of the same name, and uses only the
//! public span API a user would.
//!
//! Databases (the feature is the driver crate's name): every statement becomes a dependency
//! whose `type` is the system (`postgresql`, `mysql`, `sqlite`, `mongodb`), `target`
//! `host:port | database`, `data` the statement with its placeholders (never the bound values),
//! `name` the operation (`SELECT orders`); a failure carries the database's own error code.

#[cfg(any(
    feature = "tokio-postgres",
    feature = "mysql_async",
    feature = "rusqlite",
    feature = "diesel",
    feature = "sqlx",
    feature = "mongodb"
))]
mod db;

// Databases (see `db/`): features `tokio-postgres` and `postgres`, `mysql_async`, `rusqlite`,
// `diesel`, `sqlx`, `mongodb`.
#[cfg(feature = "diesel")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel")))]
pub use self::db::diesel;
#[cfg(feature = "mongodb")]
#[cfg_attr(docsrs, doc(cfg(feature = "mongodb")))]
pub use self::db::mongodb;
#[cfg(feature = "mysql_async")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql_async")))]
pub use self::db::mysql;
#[cfg(feature = "tokio-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
pub use self::db::postgres;
#[cfg(feature = "rusqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "rusqlite")))]
pub use self::db::rusqlite;
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
pub use self::db::sqlx;

#[cfg(feature = "log")]
#[cfg_attr(docsrs, doc(cfg(feature = "log")))]
pub mod log;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub mod tracing;

#[cfg(any(
    feature = "reqwest",
    feature = "tower",
    feature = "ureq",
    feature = "actix-web"
))]
mod http;

// HTTP (see `http/`): features `reqwest`, `tower` (client and server layers for hyper-util and
// hyper), `axum` (names requests by route template), `ureq`, `actix-web`.
#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub use self::http::actix_web;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use self::http::axum;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use self::http::reqwest;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use self::http::tower;
#[cfg(feature = "ureq")]
#[cfg_attr(docsrs, doc(cfg(feature = "ureq")))]
pub use self::http::ureq;
