//! The export worker: a thread of its own that drains every thread's ring of finished spans,
//! hands them to the exporters in batches, and answers flush and shutdown.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::contained::{Contained, Failed};
use crate::diagnostics::COUNTERS;
use crate::export::Resource;
use crate::record::{Record, SpanRecord};
use crate::sampler::RateLimit;
use crate::standard::Aggregator;
use crate::{metric, queue};

pub(super) enum Command {
    Flush {
        deadline: Instant,
        done: mpsc::Sender<Flushed>,
    },
    Shutdown {
        deadline: Instant,
        done: mpsc::Sender<Flushed>,
    },
}

/// What a flush or shutdown came to, as the worker answers it.
pub(super) enum Flushed {
    /// Every exporter has everything.
    All,
    /// The deadline passed first; the exporters hold this many items still.
    Late { left: u64 },
    /// This exporter panicked while flushing.
    Panicked { exporter: &'static str },
}

pub(super) struct Worker {
    exporters: Vec<Contained>,
    resource: Resource,
    max_batch: usize,
    interval: Duration,
    control: mpsc::Receiver<Command>,
    pending: Vec<Record>,
    /// Spans the last drain found: many means the threads produce faster than the worker parks.
    drained: usize,
    /// How long each interval of pre-aggregated metrics lasts.
    metric_interval: Duration,
    /// When the current interval of metrics started, by both clocks.
    metric_start: (Instant, SystemTime),
    /// The standard metrics, when an exporter takes them.
    standard: Option<Aggregator>,
    /// A rate-limited sampler's adaptation, fed with what each drain finds.
    rate_limit: Option<RateLimit>,
}

/// A drain that finds this many spans keeps the worker awake.
const BUSY_DRAIN: usize = 256;
/// The log records and events one pass drains at most: as many as the boxes kept for them.
const ITEMS_PER_DRAIN: usize = crate::record::SPARE_LOG_BOXES_MAX;

impl Worker {
    pub(super) fn new(
        exporters: Vec<Contained>,
        resource: Resource,
        max_batch: usize,
        interval: Duration,
        metric_interval: Duration,
        control: mpsc::Receiver<Command>,
        rate_limit: Option<RateLimit>,
    ) -> Worker {
        let standard = exporters
            .iter()
            .any(|exporter| exporter.standard_metrics)
            .then(Aggregator::default);
        Worker {
            exporters,
            resource,
            max_batch,
            interval,
            control,
            pending: Vec::new(),
            drained: 0,
            metric_interval,
            metric_start: (Instant::now(), SystemTime::now()),
            standard,
            rate_limit,
        }
    }

    /// Whether the standard metrics are counted.
    pub(super) fn counts_standard_metrics(&self) -> bool {
        self.standard.is_some()
    }

    pub(super) fn run(mut self) {
        let mut last_export = Instant::now();
        let mut last_tick = last_export;
        loop {
            let mut command = self.control.try_recv().ok();
            // Drain after looking for a command: a flush must see every span finished before it
            // was asked for, so it drains everything; otherwise the log records and events
            // drained in one pass are as many as the boxes kept for them.
            self.drain_queue(if command.is_some() {
                usize::MAX
            } else {
                ITEMS_PER_DRAIN
            });
            if command.is_none() {
                command = self.control.try_recv().ok();
                if command.is_some() {
                    self.drain_queue(usize::MAX);
                }
            }
            // A flush or a shutdown closes the metrics' interval early: it delivers the partial
            // minute too.
            let metrics_due = self.metric_start.0.elapsed() >= self.metric_interval;
            if command.is_some() || metrics_due {
                self.collect_metrics();
            }
            let due = last_export.elapsed() >= self.interval || metrics_due;
            if command.is_some() || due || self.pending.len() >= self.max_batch {
                self.export_pending();
                last_export = Instant::now();
            }
            // Ticks keep their pace under load too, when batches fill before the interval ends.
            if last_tick.elapsed() >= self.interval {
                last_tick = Instant::now();
                for exporter in &mut self.exporters {
                    exporter.tick(last_tick);
                }
            }
            match command {
                Some(Command::Flush { deadline, done }) => {
                    let flushed = self.deliver(deadline, Contained::flush);
                    let _ = done.send(flushed);
                }
                Some(Command::Shutdown { deadline, done }) => {
                    // Spans that finished on other threads while shutting down.
                    self.drain_queue(usize::MAX);
                    self.export_pending();
                    let flushed = self.deliver(deadline, Contained::shutdown);
                    let _ = done.send(flushed);
                    return;
                }
                None => {
                    queue::rearm_wake();
                    // Under a steady stream of spans keep draining; park only when it runs dry.
                    if self.drained < BUSY_DRAIN {
                        let wait = self.interval.saturating_sub(last_export.elapsed());
                        thread::park_timeout(wait.max(Duration::from_millis(1)));
                    } else {
                        thread::yield_now();
                    }
                }
            }
        }
    }

    /// Flushes (or shuts down) every exporter before `deadline`, each whatever the others did.
    fn deliver(
        &mut self,
        deadline: Instant,
        call: impl Fn(&mut Contained, Instant) -> Result<(), Failed>,
    ) -> Flushed {
        let mut late = false;
        let mut panicked = None;
        for exporter in &mut self.exporters {
            match call(exporter, deadline) {
                Ok(()) => {}
                Err(Failed::Late) => late = true,
                Err(Failed::Panicked) => panicked = panicked.or(Some(exporter.name)),
            }
        }
        if let Some(exporter) = panicked {
            return Flushed::Panicked { exporter };
        }
        if late || Instant::now() > deadline {
            let left = self.exporters.iter().map(Contained::undelivered).sum();
            return Flushed::Late { left };
        }
        Flushed::All
    }

    /// Closes the metrics' interval: its records join what is pending.
    fn collect_metrics(&mut self) {
        let now = Instant::now();
        let (started, wall) = self.metric_start;
        let interval = now.duration_since(started);
        metric::collect(wall, interval, &mut self.pending);
        self.metric_start = (now, wall + interval);
        if let Some(standard) = &mut self.standard {
            let mut metrics = Vec::new();
            standard.collect(
                wall,
                interval,
                &self.resource.cloud_role,
                &self.resource.cloud_role_instance,
                &mut metrics,
            );
            if !metrics.is_empty() {
                for exporter in self.exporters.iter_mut().filter(|e| e.standard_metrics) {
                    exporter.export(&metrics, &self.resource);
                }
            }
        }
    }

    /// Takes the finished records out of the queue (every span, at most `most_items` log records
    /// and events); counts the spans for the standard metrics.
    fn drain_queue(&mut self, most_items: usize) {
        let before = self.pending.len();
        self.drained = queue::drain(&mut self.pending, most_items);
        let mut shadows = false;
        for record in &self.pending[before..] {
            if let Record::Span(span) = record {
                if let Some(standard) = &mut self.standard {
                    standard.observe(span);
                }
                shadows |= span.is_shadow();
            }
        }
        // Shadows go no further: spans of dropped traces recorded to be counted, or, without
        // the standard metrics, dropped requests that held their caller's `tracestate` for
        // their calls.
        if shadows {
            self.pending
                .retain(|record| !record.as_span().is_some_and(SpanRecord::is_shadow));
        }
        // What was kept, shadows gone: the records before `before` were there already.
        if let Some(rate_limit) = &mut self.rate_limit {
            rate_limit.observe(&self.pending[before..], Instant::now());
        }
    }

    fn export_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for chunk in self.pending.chunks(self.max_batch) {
            for exporter in &mut self.exporters {
                exporter.export(chunk, &self.resource);
            }
            COUNTERS
                .exported
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        crate::record::recycle(&mut self.pending);
    }
}
