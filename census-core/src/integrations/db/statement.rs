//! What every database integration derives from a statement and a server: the operation's name
//! (`SELECT orders`), the statement without bound values, a server's message without the values
//! it quotes, and the `host:port | database` target.
//!
//! The integrations follow the Azure Monitor convention for database dependencies: `type` the
//! system (`postgresql`, `mysql`, `sqlite`, `mongodb`), `target` `host:port | database`, `data`
//! the statement with its placeholders, `name` the operation.
//!
//! Also the statement as the PostgreSQL and MySQL wrappers take it: text, or [`Prepared`].

// Each driver uses a part (MongoDB only the target).
#![cfg_attr(
    not(all(
        feature = "tokio-postgres",
        feature = "mysql_async",
        feature = "rusqlite",
        feature = "diesel",
        feature = "sqlx",
        feature = "mongodb"
    )),
    allow(dead_code)
)]

use std::fmt;
use std::sync::Arc;

/// The operation a statement performs, as a dependency's name: its first keyword, upper-cased,
/// and the table it works on when the statement names one plainly.
pub(crate) fn operation_name(sql: &str) -> String {
    let Some(Token::Word(verb)) = Tokens::new(sql).next() else {
        return String::from("SQL");
    };
    let verb = verb.to_ascii_uppercase();
    let table = match verb.as_str() {
        "SELECT" | "DELETE" => name_after(sql, "FROM"),
        "INSERT" | "REPLACE" => name_after(sql, "INTO"),
        "UPDATE" => name_after(sql, "UPDATE"),
        "CREATE" | "DROP" | "ALTER" | "TRUNCATE" => object_name(sql, &verb),
        _ => None,
    };
    match table {
        Some(table) => format!("{verb} {table}"),
        None => verb,
    }
}

/// The statement text without the bound values an ORM may append to it for debugging
/// (diesel's `-- binds: [...]`), trimmed.
pub(crate) fn strip_binds(text: &str) -> &str {
    // The first marker: whatever follows it is bound values, even a value that itself holds
    // the marker's text.
    match text.find("-- binds:") {
        Some(at) => text[..at].trim_end(),
        None => text.trim_end(),
    }
}

/// A server's error message with every single-quoted part replaced by `'?'`: MySQL quotes the
/// offending value in some messages (`Duplicate entry 'gift' for key 'note'`), and a bound
/// value must not reach the telemetry.
pub(crate) fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('\'') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        // A closing quote: one followed by a non-letter (or the end), so that an apostrophe
        // inside a word (`doesn't`) is not taken for one.
        let close = after.char_indices().find(|&(i, c)| {
            c == '\'' && !after[i + 1..].starts_with(|n: char| n.is_alphanumeric())
        });
        match close {
            Some((i, _)) => {
                out.push_str("?'");
                rest = &after[i + 1..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The target of a database dependency: `host:port | database`, the parts that are known.
pub(crate) fn target(host: &str, port: Option<u16>, database: Option<&str>) -> String {
    let mut out = String::from(host);
    if let Some(port) = port {
        out.push(':');
        out.push_str(&port.to_string());
    }
    if let Some(database) = database.filter(|d| !d.is_empty()) {
        out.push_str(" | ");
        out.push_str(database);
    }
    out
}

/// The system (`postgresql`, `mysql`, `sqlite`) and target (`host:port | database`) of a
/// connection URL; user name and password never appear in the target.
pub(crate) fn system_and_target(url: &str) -> (&'static str, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (system, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => ("postgresql", Some(5432)),
        "mysql" | "mariadb" => ("mysql", Some(3306)),
        "mongodb" => ("mongodb", Some(27017)),
        _ => {
            // SQLite: a path or `sqlite:` / `sqlite://` / `file:` URL; the target is the file.
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .or_else(|| url.strip_prefix("file:"))
                .unwrap_or(url);
            let path = path.split('?').next().unwrap_or(path);
            let path = if path.is_empty() { ":memory:" } else { path };
            return ("sqlite", path.to_owned());
        }
    };
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // The first host of a list.
    let host_port = host_port.split(',').next().unwrap_or(host_port);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            match port.parse::<u16>() {
                Ok(port) => (host, Some(port)),
                Err(_) => (host_port, default_port),
            }
        }
        _ => (host_port, default_port),
    };
    let host = if host.is_empty() { "localhost" } else { host };
    (system, target(host, port, Some(database)))
}

mod sealed {
    pub trait Sealed {}
}

/// A statement as the census wrappers of PostgreSQL and MySQL take it: SQL text, or a
/// [`Prepared`] statement, which kept its text, so that every call is named after its statement.
/// `S` is the driver's prepared statement type.
///
/// This trait is sealed: `str`, `String`, `Arc<str>`, [`Prepared`] and references to them
/// implement it.
#[cfg_attr(
    feature = "tokio-postgres",
    doc = r#"
```
use census_runtime::integrations::postgres::Sql;

fn operation<Q: Sql<tokio_postgres::Statement> + ?Sized>(query: &Q) -> &str {
    query.sql().split_whitespace().next().unwrap_or_default()
}
assert_eq!(operation("SELECT total FROM orders"), "SELECT");
```
"#
)]
pub trait Sql<S>: sealed::Sealed + Send + Sync {
    /// The statement's text.
    #[cfg_attr(
        feature = "tokio-postgres",
        doc = r#"
```
use census_runtime::integrations::postgres::Sql;

fn is_read<Q: Sql<tokio_postgres::Statement> + ?Sized>(query: &Q) -> bool {
    query.sql().trim_start().to_ascii_uppercase().starts_with("SELECT")
}
assert!(is_read("select 1"));
```
"#
    )]
    fn sql(&self) -> &str;
    /// The driver's statement, when it was prepared.
    #[doc(hidden)]
    fn prepared(&self) -> Option<&S>;
}

macro_rules! text_sql {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}
        impl<S> Sql<S> for $ty {
            fn sql(&self) -> &str {
                self
            }
            fn prepared(&self) -> Option<&S> {
                None
            }
        }
    )*};
}
text_sql!(str, String, Arc<str>);

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for &T {}
impl<S, T: Sql<S> + ?Sized> Sql<S> for &T {
    fn sql(&self) -> &str {
        (**self).sql()
    }
    fn prepared(&self) -> Option<&S> {
        (**self).prepared()
    }
}

/// Evaluates `$call` with `$s` the statement `$stmt` (an [`Sql`]) as the driver takes it: its
/// prepared statement, or its text. The two are of different types, and the drivers take
/// neither as a trait object, so `$call` is expanded once for each.
#[cfg(any(feature = "tokio-postgres", feature = "mysql_async"))]
macro_rules! with_statement {
    ($stmt:ident, |$s:ident| $call:expr) => {
        match $stmt.prepared() {
            Some($s) => $call,
            None => {
                let $s = $stmt.sql();
                $call
            }
        }
    };
}
#[cfg(any(feature = "tokio-postgres", feature = "mysql_async"))]
pub(crate) use with_statement;

/// A statement prepared through a census wrapper (`prepare` on a PostgreSQL client or a MySQL
/// connection), with its text: the calls that run it are named after it. `S` is the driver's
/// statement.
#[cfg_attr(
    feature = "tokio-postgres",
    doc = r#"
```no_run
use census_runtime::integrations::postgres::{Client, Prepared, Sql};

# async fn demo(client: &Client) -> Result<(), tokio_postgres::Error> {
let statement: Prepared<tokio_postgres::Statement> =
    client.prepare("SELECT total FROM orders WHERE id = $1").await?;
assert_eq!(statement.sql(), "SELECT total FROM orders WHERE id = $1");
// A `postgresql` dependency "SELECT orders", the statement as data.
let row = client.query_one(&statement, &[&7_i64]).await?;
# let _ = row;
# Ok(())
# }
```
"#
)]
#[derive(Clone)]
pub struct Prepared<S> {
    statement: S,
    sql: Arc<str>,
}

impl<S> Prepared<S> {
    pub(crate) fn new(statement: S, sql: &str) -> Prepared<S> {
        Prepared {
            statement,
            sql: Arc::from(sql),
        }
    }

    /// The driver's statement.
    #[cfg_attr(
        feature = "tokio-postgres",
        doc = r#"
```no_run
use census_runtime::integrations::postgres::Client;

# async fn demo(client: Client) -> Result<(), tokio_postgres::Error> {
let by_id = client.prepare("SELECT total FROM orders WHERE id = $1").await?;
// What the driver made of it: the types of its parameters, say.
let types = by_id.statement().params();
# let _ = types;
# Ok(())
# }
```
"#
    )]
    pub fn statement(&self) -> &S {
        &self.statement
    }
}

impl<S> fmt::Debug for Prepared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared").field("sql", &self.sql).finish()
    }
}

impl<S> sealed::Sealed for Prepared<S> {}
impl<S: Send + Sync> Sql<S> for Prepared<S> {
    fn sql(&self) -> &str {
        &self.sql
    }
    fn prepared(&self) -> Option<&S> {
        Some(&self.statement)
    }
}

// ---------------------------------------------------------------------------------------------
// A small SQL tokenizer: words, quoted identifiers and parentheses; comments and string
// literals are skipped so that a keyword inside them is never taken for the statement's own.

enum Token<'a> {
    Word(&'a str),
    Quoted(&'a str),
    Open,
    Other,
}

struct Tokens<'a> {
    rest: &'a str,
    closing: bool,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a str) -> Self {
        Tokens {
            rest: sql,
            closing: false,
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            self.closing = false;
            let s = self.rest.trim_start();
            let c = s.chars().next()?;
            if s.starts_with("--") {
                self.rest = s.find('\n').map_or("", |i| &s[i + 1..]);
                continue;
            }
            if let Some(comment) = s.strip_prefix("/*") {
                self.rest = comment.find("*/").map_or("", |i| &comment[i + 2..]);
                continue;
            }
            let quoted = |close: char| {
                let body = &s[1..];
                let end = body.find(close).unwrap_or(body.len());
                (&body[..end], body.get(end + 1..).unwrap_or(""))
            };
            return Some(match c {
                '\'' => {
                    // A string literal ('it''s' counts as one): skip it.
                    let mut i = 1;
                    let bytes = s.as_bytes();
                    while i < bytes.len() {
                        if bytes[i] == b'\'' {
                            if bytes.get(i + 1) == Some(&b'\'') {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    self.rest = s.get(i + 1..).unwrap_or("");
                    Token::Other
                }
                '"' | '`' | '[' => {
                    let (name, rest) = quoted(if c == '[' { ']' } else { c });
                    self.rest = rest;
                    Token::Quoted(name)
                }
                '(' => {
                    self.rest = &s[1..];
                    Token::Open
                }
                ')' => {
                    self.rest = &s[1..];
                    self.closing = true;
                    Token::Other
                }
                c if c.is_alphanumeric() || c == '_' => {
                    let end = s
                        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                        .unwrap_or(s.len());
                    self.rest = &s[end..];
                    Token::Word(&s[..end])
                }
                _ => {
                    self.rest = &s[c.len_utf8()..];
                    Token::Other
                }
            });
        }
    }
}

/// The (possibly schema-qualified) name that follows the first top-level `keyword`.
fn name_after(sql: &str, keyword: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut rest = sql;
    loop {
        let mut tokens = Tokens::new(rest);
        let token = tokens.next()?;
        let closing = tokens.closing;
        rest = tokens.rest;
        match token {
            Token::Open => depth += 1,
            Token::Other if closing => depth = depth.saturating_sub(1),
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case(keyword) => {
                return qualified_name(rest);
            }
            _ => {}
        }
    }
}

/// `schema.table`, `"Schema"."Table"` or `table` at the start of `sql`; none when a
/// parenthesis (a subquery) or nothing comes first.
fn qualified_name(sql: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = sql;
    loop {
        let mut tokens = Tokens::new(rest);
        let part = match tokens.next()? {
            Token::Word(w) => w,
            Token::Quoted(w) => w,
            _ => return None,
        };
        out.push_str(part);
        rest = tokens.rest;
        if let Some(after) = rest.strip_prefix('.') {
            out.push('.');
            rest = after;
        } else {
            return Some(out);
        }
    }
}

/// The object a DDL statement names: `CREATE [OR REPLACE] [TEMP] TABLE [IF NOT EXISTS] name`.
fn object_name(sql: &str, verb: &str) -> Option<String> {
    const SKIP: &[&str] = &[
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNIQUE",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "TABLE",
        "INDEX",
        "VIEW",
        "SEQUENCE",
        "SCHEMA",
        "DATABASE",
        "IF",
        "NOT",
        "EXISTS",
        "CONCURRENTLY",
        "ONLY",
    ];
    let mut tokens = Tokens::new(sql);
    match tokens.next()? {
        Token::Word(w) if w.eq_ignore_ascii_case(verb) => {}
        _ => return None,
    }
    let mut rest = tokens.rest;
    loop {
        let mut tokens = Tokens::new(rest);
        match tokens.next()? {
            Token::Word(w) if SKIP.iter().any(|s| w.eq_ignore_ascii_case(s)) => {
                rest = tokens.rest;
            }
            Token::Word(_) | Token::Quoted(_) => return qualified_name(rest),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names() {
        let cases = [
            (
                "SELECT id, total FROM orders WHERE id = $1",
                "SELECT orders",
            ),
            ("insert into \"Orders\" (id) values (?)", "INSERT Orders"),
            ("UPDATE shop.orders SET total = ?", "UPDATE shop.orders"),
            ("DELETE FROM orders", "DELETE orders"),
            (
                "CREATE TABLE IF NOT EXISTS orders (id int)",
                "CREATE orders",
            ),
            ("  -- note\n select 1", "SELECT"),
            ("COMMIT", "COMMIT"),
            ("SELECT * FROM orders", "SELECT orders"),
            (
                "select count(*) from public.orders o",
                "SELECT public.orders",
            ),
            (
                "SELECT (SELECT max(id) FROM items) FROM orders",
                "SELECT orders",
            ),
            ("SELECT * FROM (SELECT 1) AS t", "SELECT"),
            ("SELECT 'FROM x' AS s", "SELECT"),
            ("SELECT \"id\" FROM \"my orders\"", "SELECT my orders"),
            (
                "/* hint */ DELETE FROM `orders` WHERE id = ?",
                "DELETE orders",
            ),
            ("INSERT INTO orders (id) VALUES ($1)", "INSERT orders"),
            ("REPLACE INTO orders VALUES (?)", "REPLACE orders"),
            ("update orders set total = 0", "UPDATE orders"),
            ("DROP TABLE IF EXISTS orders", "DROP orders"),
            (
                "CREATE UNIQUE INDEX orders_idx ON orders (id)",
                "CREATE orders_idx",
            ),
            ("ALTER TABLE orders ADD COLUMN note text", "ALTER orders"),
            ("BEGIN", "BEGIN"),
            ("START TRANSACTION", "START"),
            ("", "SQL"),
            ("   ", "SQL"),
            ("(SELECT 1)", "SQL"),
            ("WITH t AS (SELECT 1) SELECT * FROM t", "WITH"),
            ("SELECT 'it''s' FROM orders", "SELECT orders"),
            ("SELECT * FROM [dbo].[Orders]", "SELECT dbo.Orders"),
            ("SELECT * FROM 'unterminated", "SELECT"),
            ("SELECT * FROM \"unterminated", "SELECT unterminated"),
            ("SELECT 1 -- FROM orders", "SELECT"),
            ("SELECT é FROM ünïcode", "SELECT ünïcode"),
        ];
        for (sql, name) in cases {
            assert_eq!(operation_name(sql), name, "{sql:?}");
        }
    }

    #[test]
    fn binds_are_cut_off_and_the_text_trimmed() {
        assert_eq!(
            strip_binds("SELECT * FROM `orders` WHERE `id` = ? -- binds: [42]"),
            "SELECT * FROM `orders` WHERE `id` = ?"
        );
        assert_eq!(strip_binds("SELECT 1 \n"), "SELECT 1");
    }

    #[test]
    fn binds_are_cut_at_the_first_marker() {
        assert_eq!(
            strip_binds("SELECT 1 WHERE a = ? -- binds: [\"x -- binds: y\"]"),
            "SELECT 1 WHERE a = ?"
        );
        assert_eq!(strip_binds("-- binds: [1]"), "");
    }

    #[test]
    fn quoted_values_are_redacted_and_apostrophes_kept() {
        assert_eq!(
            redact_quoted("Duplicate entry 'gift' for key 'orders.note'"),
            "Duplicate entry '?' for key '?'"
        );
        assert_eq!(
            redact_quoted("Table 'shop.orders' doesn't exist"),
            "Table '?' doesn't exist"
        );
        assert_eq!(redact_quoted("unterminated 'gift"), "unterminated 'gift");
        assert_eq!(redact_quoted("no quotes"), "no quotes");
    }

    #[test]
    fn targets_name_the_known_parts() {
        assert_eq!(
            target("db.internal", Some(5432), Some("orders")),
            "db.internal:5432 | orders"
        );
        assert_eq!(target("db.internal", None, None), "db.internal");
        assert_eq!(
            target("db.internal", Some(3306), Some("")),
            "db.internal:3306"
        );
    }

    #[test]
    fn targets_from_urls() {
        let cases = [
            (
                "postgres://app:secret@db.internal:5433/orders?sslmode=disable",
                ("postgresql", "db.internal:5433 | orders"),
            ),
            (
                "mysql://app@127.0.0.1/shop",
                ("mysql", "127.0.0.1:3306 | shop"),
            ),
            ("sqlite::memory:", ("sqlite", ":memory:")),
            (
                "/var/lib/app/orders.db",
                ("sqlite", "/var/lib/app/orders.db"),
            ),
            (
                "postgresql://u:p@[::1]:6543/db",
                ("postgresql", "[::1]:6543 | db"),
            ),
            ("postgres://localhost", ("postgresql", "localhost:5432")),
            ("mysql://u:p@h1,h2:3307/db", ("mysql", "h1:3306 | db")),
            (
                "mongodb://127.0.0.1:27018/app",
                ("mongodb", "127.0.0.1:27018 | app"),
            ),
            ("sqlite://orders.db?mode=rwc", ("sqlite", "orders.db")),
            ("sqlite:", ("sqlite", ":memory:")),
            (":memory:", ("sqlite", ":memory:")),
        ];
        for (url, (system, target)) in cases {
            assert_eq!(system_and_target(url), (system, target.to_owned()), "{url}");
        }
    }
}
