//! Databases: each statement a dependency of the database's system (`postgresql`, `mysql`,
//! `sqlite`, `mongodb`), named after its operation, targeting `host:port | database`, failed
//! with the database's own code.
//!
//! `statement.rs` derives what a statement and a server are named by (the operation, the
//! target, a message without quoted values) and holds the statement types the wrappers take;
//! `call.rs` records a call (its span, the one helper that runs a driver's call in it and fails
//! it on error, the open spans of drivers that report through events). Each other file
//! translates one driver's types into these, and none imports another.

mod call;
mod statement;

#[cfg(feature = "diesel")]
pub mod diesel;
#[cfg(feature = "mongodb")]
pub mod mongodb;
#[cfg(feature = "mysql_async")]
pub mod mysql;
#[cfg(feature = "tokio-postgres")]
pub mod postgres;
#[cfg(feature = "rusqlite")]
pub mod rusqlite;
#[cfg(feature = "sqlx")]
pub mod sqlx;
