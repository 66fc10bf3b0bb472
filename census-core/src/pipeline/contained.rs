//! Exporters run contained: a panic in one is caught on the export worker, counted, reported,
//! and does not reach the others or the worker. An exporter that keeps panicking is switched off.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::diagnostics::COUNTERS;
use crate::export::{Exporter, Resource};
use crate::record::Record;

/// After this many panics an exporter is switched off for the rest of the pipeline's life.
pub(super) const MAX_PANICS: u32 = 3;

/// One exporter of the pipeline, and what it did wrong.
pub(super) struct Contained {
    exporter: Box<dyn Exporter>,
    /// The exporter's type, for what is reported.
    pub(super) name: &'static str,
    /// Whether it takes the standard metrics.
    pub(super) standard_metrics: bool,
    panics: u32,
}

/// An exporter call that did not deliver.
pub(super) enum Failed {
    /// It answered that it could not finish in time.
    Late,
    /// It panicked, or it is switched off after panicking.
    Panicked,
}

impl Contained {
    pub(super) fn new(exporter: Box<dyn Exporter>, name: &'static str) -> Self {
        let standard_metrics =
            catch_unwind(AssertUnwindSafe(|| exporter.standard_metrics())).unwrap_or(false);
        Contained {
            exporter,
            name,
            standard_metrics,
            panics: 0,
        }
    }

    /// Whether the exporter is switched off after panicking too often.
    pub(super) fn is_off(&self) -> bool {
        self.panics >= MAX_PANICS
    }

    pub(super) fn export(&mut self, batch: &[Record], resource: &Resource) {
        if self.is_off() {
            return;
        }
        let exporter = &mut self.exporter;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| exporter.export(batch, resource))) {
            self.panicked("export", payload.as_ref());
        }
    }

    pub(super) fn tick(&mut self, now: Instant) {
        if self.is_off() {
            return;
        }
        let exporter = &mut self.exporter;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| exporter.tick(now))) {
            self.panicked("tick", payload.as_ref());
        }
    }

    pub(super) fn flush(&mut self, deadline: Instant) -> Result<(), Failed> {
        self.deliver("flush", |exporter| exporter.flush(deadline))
    }

    pub(super) fn shutdown(&mut self, deadline: Instant) -> Result<(), Failed> {
        self.deliver("shutdown", |exporter| exporter.shutdown(deadline))
    }

    /// What the exporter still holds undelivered, as it says; nothing when it cannot say.
    pub(super) fn undelivered(&self) -> u64 {
        if self.is_off() {
            return 0;
        }
        catch_unwind(AssertUnwindSafe(|| self.exporter.undelivered())).unwrap_or(0)
    }

    fn deliver(
        &mut self,
        call: &'static str,
        run: impl FnOnce(&mut dyn Exporter) -> bool,
    ) -> Result<(), Failed> {
        if self.is_off() {
            // Said when it was switched off; its telemetry is not waited for.
            return Ok(());
        }
        let exporter = &mut *self.exporter;
        match catch_unwind(AssertUnwindSafe(|| run(exporter))) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failed::Late),
            Err(payload) => {
                self.panicked(call, payload.as_ref());
                Err(Failed::Panicked)
            }
        }
    }

    fn panicked(&mut self, call: &str, payload: &(dyn std::any::Any + Send)) {
        COUNTERS.exporter_panics.fetch_add(1, Ordering::Relaxed);
        self.panics += 1;
        let message = crate::span::payload_message(payload);
        if self.panics == 1 {
            log::error!(
                "census: exporter {} panicked in {call}: {message}; the other exporters carry on",
                self.name
            );
        }
        if self.is_off() {
            log::error!(
                "census: exporter {} panicked {MAX_PANICS} times (last in {call}: {message}); it is switched off and receives nothing more",
                self.name
            );
        }
    }
}
