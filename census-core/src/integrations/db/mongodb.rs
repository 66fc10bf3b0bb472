//! MongoDB through the `mongodb` driver (feature `mongodb`), from its command events.
//!
//! [`install`] sets a command event handler on the client's options: a command's start
//! opens a span (a child of the span current where the driver runs the operation) and its
//! success or failure ends it. Each is a `mongodb` dependency named `command collection`
//! (`find orders`), with `host:port | database` as target and, as data, the command's shape:
//! its field names, with every value replaced by `?`, so that no filter value or document
//! is recorded. A failed command, a write error or a write concern error fails the span with
//! MongoDB's error code (`11000` for a duplicate key, `26` for a missing namespace, ...).
//!
//! ```no_run
//! use mongodb::bson::doc;
//! use mongodb::options::ClientOptions;
//!
//! # async fn demo() -> mongodb::error::Result<()> {
//! let mut options = ClientOptions::parse("mongodb://127.0.0.1:27017").await?;
//! census_runtime::integrations::mongodb::install(&mut options);
//! let client = mongodb::Client::with_options(options)?;
//! let orders = client.database("shop").collection::<mongodb::bson::Document>("orders");
//! // A `mongodb` dependency "find orders", data `{ "find": "orders", "filter": { "note": "?" } }`.
//! let order = orders.find_one(doc! { "note": "gift" }).await?;
//! # let _ = order;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};

use mongodb::bson::{Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, ServerAddress};

use super::call::{Call, DriverError, Failure, OpenSpans, fail_detached};
use super::statement;

/// The `type` of MongoDB dependencies.
pub const SYSTEM: &str = "mongodb";

/// Fields the driver adds to every command, which say nothing of what it does.
const ENVELOPE_FIELDS: &[&str] = &[
    "$db",
    "lsid",
    "$clusterTime",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "$readPreference",
    "readConcern",
    "writeConcern",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
];

/// Sets census's command event handler on `options`, replacing any other: every command of a
/// client made with these options is a dependency.
///
/// ```
/// use mongodb::options::ClientOptions;
///
/// let mut options = ClientOptions::builder()
///     .hosts(vec![mongodb::options::ServerAddress::parse("127.0.0.1:27017")?])
///     .build();
/// census_runtime::integrations::mongodb::install(&mut options);
/// assert!(options.command_event_handler.is_some());
/// # Ok::<(), mongodb::error::Error>(())
/// ```
pub fn install(options: &mut ClientOptions) {
    options.command_event_handler = Some(command_event_handler());
}

/// A command event handler that makes every command a dependency (what [`install`] sets).
///
/// ```
/// use mongodb::options::ClientOptions;
///
/// let mut options = ClientOptions::builder()
///     .hosts(vec![mongodb::options::ServerAddress::parse("127.0.0.1:27017")?])
///     .build();
/// // What `install` does, for options built elsewhere.
/// options.command_event_handler = Some(census_runtime::integrations::mongodb::command_event_handler());
/// # Ok::<(), mongodb::error::Error>(())
/// ```
pub fn command_event_handler() -> EventHandler<CommandEvent> {
    // The driver reports a command's start and its end from whichever task runs it.
    let open: Arc<Mutex<OpenSpans<i32>>> = Arc::default();
    EventHandler::callback(move |event| on_event(&open, event))
}

fn on_event(open: &Mutex<OpenSpans<i32>>, event: CommandEvent) {
    let lock = || open.lock().unwrap_or_else(|p| p.into_inner());
    match event {
        CommandEvent::Started(started) => {
            let collection = started
                .command
                .iter()
                .next()
                .and_then(|(_, value)| value.as_str())
                .or_else(|| started.command.get_str("collection").ok());
            let name = match collection {
                Some(collection) => format!("{} {collection}", started.command_name),
                None => started.command_name.clone(),
            };
            let span = Call::new(
                SYSTEM,
                target(&started.connection.address, &started.db),
                name,
                Some(shape(&started.command).to_string()),
            )
            .start_detached();
            lock().start(started.request_id, span);
        }
        CommandEvent::Succeeded(succeeded) => {
            let span = lock().finish(&succeeded.request_id);
            if let Some(span) = span {
                if let Some(failure) = reply_error(&succeeded.reply) {
                    failure.record_on(&span);
                }
                span.end();
            }
        }
        CommandEvent::Failed(failed) => {
            let span = lock().finish(&failed.request_id);
            if let Some(span) = span {
                fail_detached(&span, &failed.failure);
                span.end();
            }
        }
        _ => {}
    }
}

/// `host:port | database`.
fn target(address: &ServerAddress, db: &str) -> String {
    match address {
        ServerAddress::Tcp { host, port } => {
            statement::target(host, Some(port.unwrap_or(27017)), Some(db))
        }
        other => statement::target(&other.to_string(), None, Some(db)),
    }
}

/// The command without its values: the command's own first field (naming the collection) is
/// kept, the driver's envelope fields are dropped, every other value becomes `?`.
fn shape(command: &Document) -> Document {
    let mut out = Document::new();
    for (index, (key, value)) in command.iter().enumerate() {
        if ENVELOPE_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let value = if index == 0 || key == "collection" {
            match value {
                Bson::String(_) => value.clone(),
                _ => Bson::String("?".into()),
            }
        } else {
            shape_value(value)
        };
        out.insert(key.clone(), value);
    }
    out
}

fn shape_value(value: &Bson) -> Bson {
    match value {
        Bson::Document(document) => Bson::Document(
            document
                .iter()
                .map(|(k, v)| (k.clone(), shape_value(v)))
                .collect(),
        ),
        Bson::Array(items) => Bson::Array(items.iter().map(shape_value).collect()),
        _ => Bson::String("?".into()),
    }
}

/// A command that failed outright: the server's code (none when it is 0) and, as message, the
/// code's name, which quotes no value; not the server's answer (a network error, a timeout):
/// the driver's message.
impl DriverError for mongodb::error::Error {
    fn failure(&self) -> Option<Failure> {
        let (code, name) = match &*self.kind {
            ErrorKind::Command(command) => (command.code, Some(command.code_name.as_str())),
            ErrorKind::Write(WriteFailure::WriteError(error)) => {
                (error.code, error.code_name.as_deref())
            }
            ErrorKind::Write(WriteFailure::WriteConcernError(error)) => {
                (error.code, Some(error.code_name.as_str()))
            }
            _ => return Some(Failure::uncoded(self)),
        };
        let name = name.filter(|n| !n.is_empty());
        let message = name.map_or_else(|| format!("MongoDB error {code}"), str::to_owned);
        Some(server_failure(code, message))
    }
}

/// A server's error: its code, unless 0 (a server's error without a code is `error`, as any
/// other failure).
fn server_failure(code: i32, message: String) -> Failure {
    if code == 0 {
        Failure::uncoded(message)
    } else {
        Failure::coded(code, message)
    }
}

/// A write error or write concern error in a reply the server sent with `ok: 1`.
fn reply_error(reply: &Document) -> Option<Failure> {
    let from = |error: &Document| {
        let code = error
            .get("code")
            .and_then(|c| match c {
                Bson::Int32(c) => Some(*c),
                Bson::Int64(c) => i32::try_from(*c).ok(),
                Bson::Double(c) if c.fract() == 0.0 => Some(*c as i32),
                _ => None,
            })
            .unwrap_or(0);
        // The code's name, not the server's message: a duplicate key's message quotes the key.
        let message = error
            .get_str("codeName")
            .map_or_else(|_| String::from("MongoDB error"), str::to_owned);
        server_failure(code, message)
    };
    if let Ok(errors) = reply.get_array("writeErrors")
        && let Some(Bson::Document(first)) = errors.first()
    {
        return Some(from(first));
    }
    if let Ok(error) = reply.get_document("writeConcernError") {
        return Some(from(error));
    }
    let ok = reply
        .get("ok")
        .and_then(|ok| ok.as_f64().or_else(|| ok.as_i32().map(f64::from)));
    if ok == Some(0.0) {
        return Some(from(reply));
    }
    None
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;
    use mongodb::error::{CommandError, Error};

    use super::*;

    #[test]
    fn a_command_keeps_its_collection_and_fields_not_values_or_envelope() {
        let command = doc! {
            "find": "orders",
            "filter": { "note": "gift", "qty": { "$gt": 3 } },
            "projection": ["note", 1],
            "$db": "shop",
            "lsid": { "id": 7 },
        };
        assert_eq!(
            shape(&command),
            doc! {
                "find": "orders",
                "filter": { "note": "?", "qty": { "$gt": "?" } },
                "projection": ["?", "?"],
            }
        );
        assert_eq!(
            shape(&doc! { "getMore": 42_i64, "collection": "orders" }),
            doc! { "getMore": "?", "collection": "orders" }
        );
    }

    #[test]
    fn a_reply_with_write_errors_fails_with_the_code_and_its_name_only() {
        let duplicate = doc! {
            "ok": 1,
            "n": 0,
            "writeErrors": [
                { "index": 0, "code": 11000, "codeName": "DuplicateKey", "errmsg": "E11000 { note: \"gift\" }" },
            ],
        };
        assert_eq!(
            reply_error(&duplicate),
            Some(Failure::coded(11000, "DuplicateKey"))
        );
        let concern = doc! { "ok": 1, "writeConcernError": { "code": 64.0, "codeName": "WriteConcernFailed" } };
        assert_eq!(
            reply_error(&concern),
            Some(Failure::coded(64, "WriteConcernFailed"))
        );
        let refused = doc! { "ok": 0.0, "errmsg": "no such command" };
        assert_eq!(
            reply_error(&refused),
            Some(Failure::uncoded("MongoDB error"))
        );
        assert_eq!(reply_error(&doc! { "ok": 1, "n": 1 }), None);
    }

    #[test]
    fn a_failed_command_is_its_code_name_and_a_network_error_the_drivers_message() {
        let command: CommandError = mongodb::bson::deserialize_from_document(doc! {
            "code": 26,
            "codeName": "NamespaceNotFound",
            "errmsg": "ns not found: shop.orders",
        })
        .expect("a command error");
        let error = Error::from(ErrorKind::Command(command));
        assert_eq!(
            error.failure(),
            Some(Failure::coded(26, "NamespaceNotFound"))
        );
        let io = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(io.failure(), Some(Failure::uncoded(&io)));
    }
}
