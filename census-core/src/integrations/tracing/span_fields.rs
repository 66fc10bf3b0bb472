//! What a `tracing` span's fields say: its properties, written into the box of run-time values
//! its record takes, and what the OpenTelemetry semantic conventions (and census's own
//! `census.*` fields) say of the span itself: a request or a call, its type, target, data,
//! result, failure, and the caller's context it continues.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;

use tracing_core::field::{Field, Visit};

use super::{append_guarded, integer, written};
use crate::propagation::Incoming;
use crate::record::{SpanExtra, SpanRecord, Value, new_property};

/// A span's fields, written into the box of run-time values its record takes (properties
/// pushed into a list whose memory the box keeps from its last span); what needs the record
/// itself is kept aside in [`Facts`].
pub(super) struct SpanFields<'a> {
    extra: &'a mut SpanExtra,
    pub(super) facts: Facts,
    /// `data` holds a URL, which a statement does not replace.
    url: bool,
}

/// What a span's fields say of it beyond its values: applied to its values together
/// ([`Facts::describe`]) and to the record once it exists ([`Facts::settle`]).
#[derive(Default)]
pub(super) struct Facts {
    pub(super) server: bool,
    status: Option<u64>,
    failed: Option<String>,
    /// `otel.kind = "producer"`: a message sent.
    producer: bool,
    /// What names a database, a queue or a remote procedure call: boxed when given (their
    /// values are `String`s already), so that the facts every span makes stay small.
    call: Option<Box<CallFacts>>,
    /// `otel.status_code = "OK"`.
    ok: bool,
    /// `server.port`, joined to the target.
    port: Option<String>,
    /// An HTTP method or URL was given: an `HTTP` call unless a kind is.
    http: bool,
    /// `traceparent` and `tracestate` (or a legacy `Request-Id`): the caller's context, which
    /// the span continues.
    pub(super) remote: Option<Box<RemoteFacts>>,
}

/// The W3C trace context a span was given as fields, as an incoming request carried it, or
/// the legacy Application Insights `Request-Id` an older caller sends instead.
#[derive(Default)]
pub(super) struct RemoteFacts {
    traceparent: Option<String>,
    tracestate: Option<String>,
    request_id: Option<String>,
}

impl RemoteFacts {
    /// The caller's context, read by the rules of the headers ([`Incoming::from_values`]): a
    /// malformed `traceparent` is none, and the span starts its own trace; a `Request-Id` is
    /// read only when no `traceparent` came, and its trace kept by its id's score.
    pub(super) fn incoming(&self) -> Incoming {
        Incoming::from_values(
            self.traceparent.as_deref().map(str::as_bytes),
            self.tracestate.as_deref().map(str::as_bytes),
            self.request_id.as_deref().map(str::as_bytes),
        )
    }
}

/// `db.system`, `db.name`, `messaging.system`, its destination, `rpc.system`: the type and
/// target of a call that gives no `census.kind` (nor an HTTP method or URL).
#[derive(Default)]
struct CallFacts {
    db_system: Option<String>,
    db_name: Option<String>,
    messaging: Option<String>,
    destination: Option<String>,
    rpc: Option<String>,
}

impl<'a> SpanFields<'a> {
    pub(super) fn new(extra: &'a mut SpanExtra) -> Self {
        SpanFields {
            extra,
            facts: Facts::default(),
            url: false,
        }
    }

    /// A field's value, which `write` writes: a property, written where it lies in the list
    /// ([`new_property`]), unless its name is one of the conventions' (all of which but
    /// `error` hold a dot), which take it aside.
    #[inline(always)]
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Value)) {
        let name = field.name();
        let convention =
            if name.contains('.') || matches!(name, "error" | "traceparent" | "tracestate") {
                Convention::of(name)
            } else {
                None
            };
        match convention {
            Some(convention) => self.convention(convention, written(write)),
            None => write(new_property(
                &mut self.extra.properties,
                Cow::Borrowed(name),
            )),
        }
    }

    /// What a convention's field says: its value becomes a `String` only where one is kept.
    fn convention(&mut self, convention: Convention, value: Value) {
        let extra = &mut *self.extra;
        match convention {
            Convention::Name => extra.name = Some(Cow::Owned(value.into_string())),
            // What Application Insights shows as a request: a server's, or a message a
            // consumer handles (as the Azure Monitor exporters map the span kinds).
            Convention::Kind => {
                self.facts.server =
                    value.eq_ignore_ascii_case("server") || value.eq_ignore_ascii_case("consumer");
                self.facts.producer = value.eq_ignore_ascii_case("producer");
            }
            Convention::Status => {
                if value.eq_ignore_ascii_case("error") {
                    self.facts.failed.get_or_insert_with(|| "error".to_owned());
                } else if value.eq_ignore_ascii_case("ok") {
                    self.facts.ok = true;
                }
            }
            Convention::Failure => self.facts.failed = Some(value.into_string()),
            Convention::CensusKind => extra.kind = Some(Cow::Owned(value.into_string())),
            Convention::DbSystem => self.facts.call().db_system = Some(value.into_string()),
            Convention::DbName => self.facts.call().db_name = Some(value.into_string()),
            Convention::Messaging => self.facts.call().messaging = Some(value.into_string()),
            Convention::Destination => {
                self.facts.call().destination = Some(value.into_string());
            }
            Convention::Rpc => self.facts.call().rpc = Some(value.into_string()),
            Convention::Statement => {
                if !self.url {
                    extra.data = Some(Cow::Owned(value.into_string()));
                }
            }
            Convention::Address => extra.target = Some(Cow::Owned(value.into_string())),
            Convention::Port => self.facts.port = Some(value.into_string()),
            Convention::Method => self.facts.http = true,
            Convention::Url => {
                extra.data = Some(Cow::Owned(value.into_string()));
                self.url = true;
                self.facts.http = true;
            }
            Convention::StatusCode => self.facts.status = value.parse().ok(),
            Convention::Client => {
                *new_property(
                    &mut extra.properties,
                    Cow::Borrowed(crate::record::CLIENT_ADDRESS_PROPERTY),
                ) = value;
            }
            Convention::TraceParent => {
                self.facts.remote().traceparent = Some(value.into_string());
            }
            Convention::TraceState => self.facts.remote().tracestate = Some(value.into_string()),
            Convention::RequestId => self.facts.remote().request_id = Some(value.into_string()),
        }
    }
}

/// The span fields that say something of the span rather than being properties: the
/// OpenTelemetry semantic conventions' (the stable names and the older ones), census's own, and
/// `error`.
#[derive(Clone, Copy)]
enum Convention {
    /// `otel.name`: the span's name.
    Name,
    /// `otel.kind`: a server's or a consumer's span is a request.
    Kind,
    /// `otel.status_code`: `ERROR` fails the span, `OK` makes it a success for good.
    Status,
    /// `otel.status_message`, `otel.status_description`, `error`: fails the span with it.
    Failure,
    /// `census.kind`: the dependency's type, whatever the other fields say.
    CensusKind,
    /// `db.system`, `db.system.name`: a database call, its type ([`database_type`]).
    DbSystem,
    /// `db.name`, `db.namespace`: the database, joined to the target.
    DbName,
    /// `messaging.system`: a message sent or received, its type.
    Messaging,
    /// `messaging.destination`, `messaging.destination.name`: a message's queue or topic, the
    /// target when no server is named.
    Destination,
    /// `rpc.system`: a remote procedure call (`grpc`), its type.
    Rpc,
    /// `db.statement`, `db.query.text`: the data, unless a URL is.
    Statement,
    /// `server.address`, `net.peer.name`, `census.target`: the target.
    Address,
    /// `server.port`, `net.peer.port`: joined to the target.
    Port,
    /// `http.request.method`, `http.method`: an HTTP call.
    Method,
    /// `url.full`, `http.url`: an HTTP call's URL, its data.
    Url,
    /// `http.response.status_code`, `http.status_code`: the result code; 400 and above fail it.
    StatusCode,
    /// `client.address`, `http.client_ip` (`tracing-actix-web`'s): the client a request came
    /// from, its [`CLIENT_ADDRESS_PROPERTY`](crate::record::CLIENT_ADDRESS_PROPERTY).
    Client,
    /// `traceparent`, `http.request.header.traceparent`: the caller's span, which the span
    /// continues (its trace, its parent, its sampled flag).
    TraceParent,
    /// `tracestate`, `http.request.header.tracestate`: passed on with the caller's trace.
    TraceState,
    /// `http.request.header.request-id` (or `request_id`): the legacy Application Insights
    /// `Request-Id` of a caller that sends no `traceparent`. Not a bare `request_id`, which
    /// applications use for ids of their own.
    RequestId,
}

impl Convention {
    fn of(name: &str) -> Option<Convention> {
        Some(match name {
            "otel.name" => Convention::Name,
            "otel.kind" => Convention::Kind,
            "otel.status_code" => Convention::Status,
            "otel.status_message" | "otel.status_description" | "error" => Convention::Failure,
            "census.kind" => Convention::CensusKind,
            "db.system" | "db.system.name" => Convention::DbSystem,
            "db.name" | "db.namespace" => Convention::DbName,
            "messaging.system" => Convention::Messaging,
            "messaging.destination" | "messaging.destination.name" => Convention::Destination,
            "rpc.system" => Convention::Rpc,
            "db.statement" | "db.query.text" => Convention::Statement,
            "server.address" | "net.peer.name" | "census.target" => Convention::Address,
            "server.port" | "net.peer.port" => Convention::Port,
            "http.request.method" | "http.method" => Convention::Method,
            "url.full" | "http.url" => Convention::Url,
            "http.response.status_code" | "http.status_code" => Convention::StatusCode,
            "client.address" | "http.client_ip" => Convention::Client,
            "traceparent" | "http.request.header.traceparent" => Convention::TraceParent,
            "tracestate" | "http.request.header.tracestate" => Convention::TraceState,
            "http.request.header.request-id" | "http.request.header.request_id" => {
                Convention::RequestId
            }
            _ => return None,
        })
    }
}

/// Adds the values a span was given after it was made ([`SpanFields`] writes the name, the
/// kind, the target, the data and properties) to those it has. A server named now replaces a
/// system's name standing in for it, and goes before a database's name given alone
/// (`server | database`); `marks` says which the target is.
pub(super) fn absorb(into: &mut SpanExtra, given: SpanExtra, marks: &mut u8) {
    // Every field, by name: one that `SpanFields` comes to write cannot be left out unseen.
    let SpanExtra {
        name,
        kind,
        target,
        data,
        properties,
        result_code: _,
        error: _,
        failure: _,
        trace_state: _,
    } = given;
    if let Some(server) = target {
        into.target = Some(match into.target.take() {
            Some(database) if *marks & marks::TARGET_IS_DATABASE != 0 => {
                Cow::Owned(on_server(server, &database))
            }
            _ => server,
        });
        *marks &= !marks::STANDING_IN;
    }
    for (value, slot) in [
        (name, &mut into.name),
        (kind, &mut into.kind),
        (data, &mut into.data),
    ] {
        if value.is_some() {
            *slot = value;
        }
    }
    into.properties.extend(properties);
}

impl Facts {
    /// What the fields say together, read in the Azure Monitor exporters' order: the call's
    /// type (an HTTP method or URL first, then a database, a message, a remote procedure call),
    /// its target (the server and its port, the database's name after a ` | `; else the queue,
    /// or the system's name). `marks` says whether the target is a system's name standing in
    /// for a server, or a database's name alone, and is kept up to date.
    pub(super) fn describe(&mut self, extra: &mut SpanExtra, marks: &mut u8) {
        if self.http && extra.kind.is_none() {
            extra.kind = Some(Cow::Borrowed("HTTP"));
        }
        if *marks & marks::STANDING_IN == 0 {
            self.join_port(extra);
        }
        // A producer's span is a message sent even when it names no messaging system.
        if self.call.is_some() || self.producer {
            let call = self
                .call
                .take()
                .map_or_else(CallFacts::default, |call| *call);
            call.describe(extra, self.producer, marks);
        }
    }

    /// Joins the port given to the server the target names (`server:port`, before the
    /// ` | database` the server may have been given already).
    pub(super) fn join_port(&mut self, extra: &mut SpanExtra) {
        if let Some(target) = extra.target.as_mut()
            && let Some(port) = self.port.take()
        {
            *target = Cow::Owned(match target.split_once(DATABASE_ON_SERVER) {
                Some((server, database)) => on_server(format_args!("{server}:{port}"), database),
                None => format!("{target}:{port}"),
            });
        }
    }

    /// The caller's context given as fields, made on first use.
    fn remote(&mut self) -> &mut RemoteFacts {
        self.remote.get_or_insert_default()
    }

    /// The facts of a database, queue or remote call, made on first use.
    fn call(&mut self) -> &mut CallFacts {
        self.call.get_or_insert_with(Box::default)
    }

    /// Records a status or failure the fields gave. `OK` is final, as OpenTelemetry's status:
    /// the application says the call succeeded whatever its result code, and neither a later
    /// `error` field nor an `ERROR` event fails it.
    pub(super) fn settle(self, record: &mut SpanRecord) {
        if self.ok {
            record.set_success(true);
            record.set_marks(record.marks() | marks::OK);
        }
        let ok = succeeded_for_good(record);
        if let Some(status) = self.status {
            record.extra_mut().result_code = Some(Cow::Owned(status.to_string()));
            if status >= 400 && !ok {
                record.set_success(false);
            }
        }
        if let Some(message) = self.failed
            && !ok
        {
            record.fail(Cow::Borrowed("error"), Some(message));
        }
    }
}

impl CallFacts {
    /// The call's type (a database, a message sent or received, a remote procedure call), and
    /// its target: the database's name after the server's and a ` | `, else the queue, else the
    /// system's name, which `marks` notes as standing in for a server (as it notes a database's
    /// name alone), so that a value given later replaces it or joins it rightly.
    fn describe(self, extra: &mut SpanExtra, producer: bool, marks: &mut u8) {
        let CallFacts {
            db_system,
            db_name,
            messaging,
            destination,
            rpc,
        } = self;
        if extra.kind.is_none() {
            extra.kind = if let Some(system) = &db_system {
                Some(database_type(system))
            } else if producer {
                Some(match &messaging {
                    Some(system) => Cow::Owned(format!("Queue Message | {system}")),
                    None => Cow::Borrowed("Queue Message"),
                })
            } else {
                messaging.clone().or_else(|| rpc.clone()).map(Cow::Owned)
            };
        }
        if let Some(database) = db_name {
            let server = extra
                .target
                .take()
                .filter(|_| *marks & marks::STANDING_IN == 0);
            *marks &= !marks::STANDING_IN;
            extra.target = Some(Cow::Owned(match server {
                Some(server) => on_server(server, &database),
                None => {
                    *marks |= marks::TARGET_IS_DATABASE;
                    database
                }
            }));
        }
        if extra.target.is_none() {
            extra.target = db_system
                .or(destination)
                .or(messaging)
                .or(rpc)
                .map(Cow::Owned);
            if extra.target.is_some() {
                *marks |= marks::TARGET_IS_SYSTEM;
            }
        }
    }
}

/// What separates a server from the database named on it in a target (`db.internal:5432 |
/// orders`), as census's own database integrations write it.
const DATABASE_ON_SERVER: &str = " | ";

/// The target of the database `database` on `server`.
fn on_server(server: impl fmt::Display, database: &str) -> String {
    format!("{server}{DATABASE_ON_SERVER}{database}")
}

/// The marks the layer keeps in a record it made ([`SpanRecord::marks`]).
pub(super) mod marks {
    /// `otel.status_code = "OK"`: the instrumentation said the call succeeded, for good (final,
    /// as OpenTelemetry's status): neither a later `error` field nor an `ERROR` event fails it.
    pub(super) const OK: u8 = 1;
    /// The target is a system's name, standing in for the server no field named.
    pub(super) const TARGET_IS_SYSTEM: u8 = 1 << 1;
    /// The target is a database's name alone, given without a server.
    pub(super) const TARGET_IS_DATABASE: u8 = 1 << 2;
    /// The target names no server: a server given later replaces it or goes before it, and a
    /// port given later has nothing to join.
    pub(super) const STANDING_IN: u8 = TARGET_IS_SYSTEM | TARGET_IS_DATABASE;
}

/// Whether the instrumentation said the call succeeded, for good: what would fail the span
/// afterwards does not.
pub(super) fn succeeded_for_good(record: &SpanRecord) -> bool {
    record.marks() & marks::OK != 0
}

/// A database call's type, from its `db.system` (or `db.system.name`): the system's name, as
/// census's own database integrations write it (`postgresql`, `mysql`, `sqlite`, `mongodb`),
/// so that a database shows under one type whichever way its calls are recorded; `SQL` for
/// Microsoft SQL Server (Application Insights' own type for it) and for a relational database
/// the conventions have no name for (`other_sql`); MariaDB under `mysql`, as census's MySQL
/// integrations type it; the newer names of `db.system.name` as the older ones.
fn database_type(system: &str) -> Cow<'static, str> {
    Cow::Borrowed(match system {
        "postgresql" => "postgresql",
        "mysql" | "mariadb" => "mysql",
        "sqlite" => "sqlite",
        "mongodb" => "mongodb",
        "redis" => "redis",
        "mssql" | "microsoft.sql_server" | "other_sql" => "SQL",
        "oracle" | "oracle.db" => "oracle",
        "db2" | "ibm.db2" => "db2",
        other => return Cow::Owned(other.to_owned()),
    })
}

impl Visit for SpanFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, |text| {
            append_guarded(text, format_args!("{value:?}"))
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, |text| text.push_str(value));
    }

    // Integers and booleans are written as `Debug` would write them, without the formatting
    // machinery.
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.text(field, |text| integer(text, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.text(field, |text| integer(text, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.text(field, |text| {
            text.push_str(if value { "true" } else { "false" })
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        if field.name() == "error" {
            self.facts.failed =
                Some(written(|text| append_guarded(text, format_args!("{value}"))).into_string());
        } else {
            self.text(field, |text| append_guarded(text, format_args!("{value}")));
        }
    }
}
