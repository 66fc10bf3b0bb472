//! Databases: each statement a dependency of the database's system (`postgresql`, `mysql`,
//! `sqlite`, `mongodb`), named after its operation, targeting `host:port | database`, failed
//! with the database's own code. `statement.rs` holds what every driver shares; each other file
//! translates one driver's types into it, and none imports another.

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
