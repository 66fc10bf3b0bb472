//! What a `tracing` event's fields become: a log record's message, properties and error, or a
//! custom event's name, properties and measurements.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;

use tracing_core::field::{Field, Visit};

use super::{UNPRINTABLE, append_guarded, guarded, integer, written};
use crate::record::{ErrorDetail, LogRecord, SpanExtra, Value, new_property};

/// An event's fields written straight into the log record it becomes: the message formatted
/// in place, the others as properties (numbers and booleans as `Debug` writes them), the error
/// aside.
pub(super) struct LogFields<'a> {
    pub(super) log: &'a mut LogRecord,
    pub(super) errors: Errors,
    /// A `log` record's event, whose `log.*` fields are its source, not properties.
    pub(super) from_log: bool,
}

impl LogFields<'_> {
    /// A field's value, which `write` writes: a property, written in place, or the error's.
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Value)) {
        let kept = match field.name() {
            "exception.type" => &mut self.errors.exception_type,
            "exception.message" => &mut self.errors.exception_message,
            name if self.from_log && name.starts_with("log.") => return,
            name => return write(self.log.new_property(name)),
        };
        *kept = Some(written(write).into_string());
    }
}

impl Visit for LogFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            append_guarded(self.log.message_mut(), format_args!("{value:?}"));
        } else {
            self.text(field, |text| {
                append_guarded(text, format_args!("{value:?}"))
            });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.log.message_mut().push_str(value);
        } else {
            self.text(field, |text| text.push_str(value));
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_debug(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "message" {
            self.record_debug(field, &value);
        } else {
            self.text(field, |text| integer(text, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "message" {
            self.record_debug(field, &value);
        } else {
            self.text(field, |text| integer(text, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        if field.name() == "error" {
            self.errors.push_chain(value);
        } else {
            self.text(field, |text| append_guarded(text, format_args!("{value}")));
        }
    }
}

/// What the fields of an event that asks to be a custom event (`census.event`) say: its name,
/// its properties and its measurements. Its message and its error have no place in a custom
/// event and are left out.
pub(super) struct EventFields {
    /// `census.event`: the event's name.
    pub(super) event_name: Option<String>,
    /// The properties, in a box the export worker hands back.
    pub(super) values: Box<SpanExtra>,
    pub(super) measurements: Vec<(Cow<'static, str>, f64)>,
}

impl Default for EventFields {
    fn default() -> Self {
        EventFields {
            event_name: None,
            values: crate::record::boxed_extra(None),
            measurements: Vec::new(),
        }
    }
}

/// The error an event carries: from an `error` field (with its causes), or from
/// `exception.*` fields.
#[derive(Default)]
pub(super) struct Errors {
    chain: Vec<ErrorDetail>,
    exception_type: Option<String>,
    exception_message: Option<String>,
}

impl Errors {
    /// An error and its `source()`s, outermost first; the chain ends at an error whose
    /// `Debug`, `Display` or `source` panics ([`guarded`]), written as [`UNPRINTABLE`].
    fn push_chain(&mut self, error: &(dyn Error + 'static)) {
        let mut current = Some(error);
        while let Some(error) = current {
            let Some((detail, source)) = guarded(|| (ErrorDetail::of(error), error.source()))
            else {
                self.chain.push(ErrorDetail {
                    type_name: "Error".to_owned(),
                    message: UNPRINTABLE.to_owned(),
                });
                return;
            };
            self.chain.push(detail);
            current = source;
        }
    }

    /// The chain to send as an Exception, if the event carries an error. Most carry none, and
    /// are told so inline (the whole function, called out of line, was 3 % of an event).
    #[inline]
    pub(super) fn finish(self) -> Option<Vec<ErrorDetail>> {
        if self.chain.is_empty()
            && self.exception_type.is_none()
            && self.exception_message.is_none()
        {
            return None;
        }
        Some(self.finish_error())
    }

    /// The chain of an event that carries an error: its `error` field's, the outermost error
    /// named by `exception.type` when given; else the one its `exception.*` fields describe.
    #[cold]
    fn finish_error(self) -> Vec<ErrorDetail> {
        let mut chain = self.chain;
        match chain.first_mut() {
            None => chain.push(ErrorDetail {
                type_name: self.exception_type.unwrap_or_else(|| "Error".to_owned()),
                message: self.exception_message.unwrap_or_default(),
            }),
            Some(first) => {
                if let Some(type_name) = self.exception_type {
                    first.type_name = type_name;
                }
            }
        }
        chain
    }
}

/// The fields a custom event leaves out: those of the log record it is not.
fn log_only(name: &str) -> bool {
    matches!(name, "message" | "exception.type" | "exception.message")
}

impl EventFields {
    /// A field's value, which `write` writes: the event's name, or a property written in place.
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Value)) {
        match field.name() {
            "census.event" => self.event_name = Some(written(write).into_string()),
            name if log_only(name) => {}
            name => write(new_property(
                &mut self.values.properties,
                Cow::Borrowed(name),
            )),
        }
    }

    fn number(&mut self, field: &Field, value: f64) {
        // A number given as the message is left out with the message, whatever the order.
        if !log_only(field.name()) {
            self.measurements.push((Cow::Borrowed(field.name()), value));
        }
    }
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, |text| {
            append_guarded(text, format_args!("{value:?}"))
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, |text| text.push_str(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value as f64);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value as f64);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        if field.name() != "error" {
            self.text(field, |text| append_guarded(text, format_args!("{value}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_core::Level;

    #[test]
    fn a_custom_event_leaves_out_its_message_even_a_number_and_whatever_the_order() {
        struct Probe;
        impl tracing_core::Callsite for Probe {
            fn set_interest(&self, _: tracing_core::Interest) {}
            fn metadata(&self) -> &tracing_core::Metadata<'_> {
                &PROBE
            }
        }
        static PROBE: tracing_core::Metadata<'static> = tracing_core::metadata! {
            name: "probe",
            target: "probe",
            level: Level::INFO,
            fields: &["message", "census.event", "items"],
            callsite: &Probe,
            kind: tracing_core::metadata::Kind::EVENT,
        };
        let fields = PROBE.fields();
        let [message, name, items] = ["message", "census.event", "items"]
            .map(|name| fields.field(name).expect("a field of the probe"));
        // The name given after the message, then before it.
        let mut after = EventFields::default();
        after.record_u64(&message, 5);
        after.record_str(&name, "order_placed");
        after.record_u64(&items, 3);
        let mut before = EventFields::default();
        before.record_str(&name, "order_placed");
        before.record_u64(&message, 5);
        before.record_u64(&items, 3);
        for fields in [after, before] {
            assert_eq!(fields.event_name.as_deref(), Some("order_placed"));
            assert_eq!(fields.measurements, [(Cow::Borrowed("items"), 3.0)]);
            assert!(fields.values.properties.is_empty());
        }
    }
}
