//! Integrations with the crates an application calls through, where Rust cannot monkeypatch:
//! each one is a file of its own behind a cargo feature of the same name, and uses only the
//! public span API a user would.
//!
//! Databases (the feature is the driver crate's name): every statement becomes a dependency
//! whose `type` is the system (`postgresql`, `mysql`, `sqlite`, `mongodb`), `target`
//! `host:port | database`, `data` the statement with its placeholders (never the bound values),
//! `name` the operation (`SELECT orders`); a failure carries the database's own error code.

pub mod sql;

#[cfg(feature = "mysql_async")]
pub mod mysql;
#[cfg(feature = "tokio-postgres")]
pub mod postgres;
#[cfg(feature = "rusqlite")]
pub mod rusqlite;
