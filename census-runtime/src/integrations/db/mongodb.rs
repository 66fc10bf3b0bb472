//! MongoDB through the `mongodb` driver (feature `mongodb`), from its command events.
//!
//! [`instrument`] sets a command event handler on the client's options: a command's start
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
//! census_runtime::integrations::mongodb::instrument(&mut options);
//! let client = mongodb::Client::with_options(options)?;
//! let orders = client.database("shop").collection::<mongodb::bson::Document>("orders");
//! // A `mongodb` dependency "find orders", data `{ "find": "orders", "filter": { "note": "?" } }`.
//! let order = orders.find_one(doc! { "note": "gift" }).await?;
//! # let _ = order;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mongodb::bson::{Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use mongodb::options::{ClientOptions, ServerAddress};

use super::statement;
use crate::span::{DetachedSpan, span};

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

/// Sets census's command event handler on `options`, replacing any other.
pub fn instrument(options: &mut ClientOptions) {
    options.command_event_handler = Some(command_event_handler());
}

/// A command event handler that makes every command a dependency.
pub fn command_event_handler() -> EventHandler<CommandEvent> {
    let open: Arc<Mutex<HashMap<i32, DetachedSpan>>> = Arc::default();
    EventHandler::callback(move |event| on_event(&open, event))
}

fn on_event(open: &Mutex<HashMap<i32, DetachedSpan>>, event: CommandEvent) {
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
            let span = span(name)
                .kind(SYSTEM)
                .target(target(&started.connection.address, &started.db))
                .data(shape(&started.command).to_string())
                .start_detached();
            if span.is_recording() {
                lock().insert(started.request_id, span);
            }
        }
        CommandEvent::Succeeded(succeeded) => {
            let span = lock().remove(&succeeded.request_id);
            if let Some(span) = span {
                if let Some((code, message)) = reply_error(&succeeded.reply) {
                    if code != 0 {
                        span.set_result_code(code);
                    }
                    span.fail(message);
                }
                span.end();
            }
        }
        CommandEvent::Failed(failed) => {
            let span = lock().remove(&failed.request_id);
            if let Some(span) = span {
                match error_code(&failed.failure.kind) {
                    // A server's error without a code is `error`, as any other failure.
                    Some((code, name)) => {
                        if code != 0 {
                            span.set_result_code(code);
                        }
                        span.fail(name);
                    }
                    // Not the server's answer (a network error, a timeout): the driver's message.
                    None => span.fail(&failed.failure),
                }
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

/// The code of a command that failed outright, and a message that quotes no value: the code's
/// name.
fn error_code(kind: &ErrorKind) -> Option<(i32, String)> {
    let named = |code: i32, name: Option<&str>| {
        let name = name.filter(|n| !n.is_empty());
        (
            code,
            name.map_or_else(|| format!("MongoDB error {code}"), str::to_owned),
        )
    };
    match kind {
        ErrorKind::Command(command) => Some(named(command.code, Some(&command.code_name))),
        ErrorKind::Write(WriteFailure::WriteError(error)) => {
            Some(named(error.code, error.code_name.as_deref()))
        }
        ErrorKind::Write(WriteFailure::WriteConcernError(error)) => {
            Some(named(error.code, Some(&error.code_name)))
        }
        _ => None,
    }
}

/// A write error or write concern error in a reply the server sent with `ok: 1`.
fn reply_error(reply: &Document) -> Option<(i32, String)> {
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
        (code, message)
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
