//! The transport: the loop of the exporter's own thread, on a current-thread tokio runtime that
//! thread owns. It takes envelopes from the exporter, cuts them into batches, keeps two requests
//! in flight, waits out backoffs and `Retry-After`, keeps what cannot be delivered yet in local
//! storage (or memory), sends the backlog when the endpoint answers again, and answers flushes
//! and the shutdown within their deadlines. Requests and timers are futures of that runtime:
//! an application needs no runtime of its own, and its runtime, if it has one, is not used.
//!
//! What an answer means is [`status::policy`]'s; the body is [`batch`]'s; the POST is
//! [`http`]'s; the wait after a failure is [`backoff`](super::backoff)'s.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;
use tokio::task::JoinSet;

use super::backoff::Backoff;
use super::batch::{self, Encoder, Pending};
use super::connection_string::Endpoint;
use super::diagnostics::{COUNTERS, Warnings};
use super::envelope::Items;
use super::http::Http;
use super::status::{self, Dropped, Verdict};
use super::storage::{Leased, Storage, StoreError};

/// Requests in flight at once: compressing and sending one batch overlaps the endpoint's work
/// on the other.
const IN_FLIGHT: usize = 2;
/// At most this many redirects are followed for one batch.
const MAX_REDIRECTS: usize = 10;
/// With nothing in the backlog, storage is looked at again after this long (another process
/// may leave batches there too).
const BACKLOG_AGAIN: Duration = Duration::from_secs(30);

/// What the exporter hands the transport.
pub(crate) enum Message {
    /// Envelopes to send.
    Items(Items),
    /// Deliver everything queued and stored before `deadline`, then answer how much is left.
    Flush {
        deadline: Instant,
        done: std::sync::mpsc::Sender<Flushed>,
    },
    /// Like `Flush`, then stop.
    Shutdown {
        deadline: Instant,
        done: std::sync::mpsc::Sender<Flushed>,
    },
}

/// What a flush delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Envelopes still waiting (kept in storage, or in memory when storage is off); 0 when
    /// everything went.
    pub(crate) left: u64,
}

/// The transport's settings.
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub(crate) endpoint: Endpoint,
    pub(crate) gzip: bool,
    pub(crate) max_items: usize,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    /// Batches kept in memory for a retry when there is no storage.
    pub(crate) memory_batches: usize,
    /// The HTTP client requests go through.
    pub(crate) client: reqwest::Client,
    /// Where requests' bearer tokens come from, when the resource wants Microsoft Entra ID.
    #[cfg(feature = "azure_identity")]
    pub(crate) bearer: Option<std::sync::Arc<super::auth::Bearer>>,
}

/// Where a batch in flight came from, which says where it goes back to when it fails.
enum Origin {
    /// Just cut from what the exporter handed over.
    Fresh,
    /// The in-memory backlog (storage off).
    Memory,
    /// Local storage, leased while it is sent.
    Stored(Leased),
}

/// A batch whose delivery has ended: every part of it (two halves and more after a 413) with
/// what its answer means.
struct Delivered {
    origin: Origin,
    /// How many envelopes the batch held.
    sent: usize,
    /// The endpoint when the batch left, and where the last redirect pointed.
    sent_to: Endpoint,
    endpoint: Endpoint,
    parts: Vec<(Items, Verdict)>,
}

/// What must be sent again after a delivery, and where it came from.
struct Again {
    items: Items,
    from_memory: bool,
}

pub(crate) struct Transport {
    config: TransportConfig,
    endpoint: Endpoint,
    storage: Option<Storage>,
    inbox: Receiver<Message>,
    spare: SyncSender<Items>,
    pending: Pending,
    /// Batches cut from `pending`, waiting for a request slot.
    ready: VecDeque<Items>,
    /// Undelivered batches when there is no storage.
    memory: VecDeque<Items>,
    /// No new attempt before this (backoff or `Retry-After`).
    retry_at: Instant,
    /// The backlog (storage, memory) is looked at again at this time.
    backlog_at: Instant,
    backoff: Backoff,
    encoder: Encoder,
    http: Http,
    in_flight: JoinSet<Delivered>,
    warnings: Warnings,
}

impl Transport {
    pub(crate) fn new(
        config: TransportConfig,
        storage: Option<Storage>,
        inbox: Receiver<Message>,
        spare: SyncSender<Items>,
    ) -> Transport {
        let now = Instant::now();
        Transport {
            endpoint: config.endpoint.clone(),
            backoff: Backoff::new(config.min_backoff, config.max_backoff),
            encoder: Encoder::new(config.gzip),
            http: {
                let http = Http::new(config.client.clone(), config.gzip);
                #[cfg(feature = "azure_identity")]
                let http = http.with_bearer(config.bearer.clone());
                http
            },
            config,
            storage,
            inbox,
            spare,
            pending: Pending::default(),
            ready: VecDeque::new(),
            memory: VecDeque::new(),
            retry_at: now,
            backlog_at: now,
            in_flight: JoinSet::new(),
            warnings: Warnings::default(),
        }
    }

    /// The loop: until shut down, or until the exporter is gone.
    pub(crate) async fn run(mut self) {
        loop {
            self.pump();
            let wake = self.next_wake();
            // The inbox is read only while no cut batch waits for a slot: a transport behind
            // leaves the exporter's channel to fill, and the exporter then stores directly.
            let take = self.ready.is_empty();
            tokio::select! {
                biased;
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Some(again) = self.settle(joined) {
                        self.requeue(again);
                    }
                }
                message = self.inbox.recv(), if take => match message {
                    Some(Message::Items(mut items)) => {
                        self.pending.add(&mut items, Instant::now());
                        // The emptied buffer goes back to the exporter.
                        let _ = self.spare.try_send(items);
                    }
                    Some(Message::Flush { deadline, done }) => {
                        let flushed = self.flush(deadline).await;
                        let _ = done.send(flushed);
                    }
                    Some(Message::Shutdown { deadline, done }) => {
                        let flushed = self.flush(deadline).await;
                        let _ = done.send(flushed);
                        return;
                    }
                    None => {
                        self.flush(Instant::now() + self.config.timeout).await;
                        return;
                    }
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Cuts what is due into batches and starts requests while a slot is free: new batches
    /// first, then (backoff over) the backlog. A batch that would wait behind a failure goes to
    /// the backlog.
    fn pump(&mut self) {
        let now = Instant::now();
        let due = self
            .pending
            .due_at(self.config.interval)
            .is_some_and(|at| now >= at);
        if due || self.pending.len() >= self.config.max_items {
            let batches = self.pending.take(self.config.max_items, due);
            self.ready.extend(batches);
        }
        while self.in_flight.len() < IN_FLIGHT {
            if let Some(items) = self.ready.pop_front() {
                if now < self.retry_at {
                    self.keep(items);
                } else {
                    self.start(items, Origin::Fresh, None);
                }
                continue;
            }
            if now < self.retry_at || now < self.backlog_at {
                break;
            }
            match self.next_backlog() {
                Some((items, origin)) => self.start(items, origin, None),
                None => {
                    self.backlog_at = now + BACKLOG_AGAIN;
                    break;
                }
            }
        }
    }

    /// When the loop must look again without a message or an answer: the partial batch's
    /// send interval, and the end of a backoff when a slot is free for the backlog.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + BACKLOG_AGAIN;
        if let Some(due) = self.pending.due_at(self.config.interval) {
            wake = wake.min(due);
        }
        if self.in_flight.len() < IN_FLIGHT {
            wake = wake.min(self.retry_at.max(self.backlog_at));
        }
        wake.max(now + Duration::from_millis(1))
    }

    /// The oldest batch of the backlog: memory first, then storage.
    fn next_backlog(&mut self) -> Option<(Items, Origin)> {
        if let Some(items) = self.memory.pop_front() {
            return Some((items, Origin::Memory));
        }
        let mut leased = self.storage.as_ref()?.lease_oldest()?;
        let items = std::mem::take(&mut leased.items);
        Some((items, Origin::Stored(leased)))
    }

    /// Starts delivering a batch: each request within the transport's timeout, and within
    /// `deadline` when there is one.
    fn start(&mut self, items: Items, origin: Origin, deadline: Option<Instant>) {
        let sent_to = self.endpoint.clone();
        let Some(body) = self.encoder.encode(&items) else {
            let verdict = Verdict::Retry {
                after: None,
                reason: "could not compress the batch".to_owned(),
            };
            self.in_flight.spawn(std::future::ready(Delivered {
                origin,
                sent: items.len(),
                endpoint: sent_to.clone(),
                sent_to,
                parts: vec![(items, verdict)],
            }));
            return;
        };
        let http = self.http.clone();
        let gzip = self.encoder.gzip();
        let timeout = self.config.timeout;
        let sent = items.len();
        self.in_flight.spawn(async move {
            let mut endpoint = sent_to.clone();
            let parts = deliver(&http, gzip, &mut endpoint, items, body, timeout, deadline).await;
            Delivered {
                origin,
                sent,
                sent_to,
                endpoint,
                parts,
            }
        });
    }

    /// Counts what became of a delivered batch, keeps the endpoint a redirect pointed to, and
    /// settles a stored batch (removed, released, or rewritten with what is left); returns what
    /// must be sent again of a batch that was not stored.
    fn settle(&mut self, joined: Result<Delivered, tokio::task::JoinError>) -> Option<Again> {
        let delivered = match joined {
            Ok(delivered) => delivered,
            Err(error) => {
                // Not reached short of a bug: the delivery does not panic.
                self.warnings.warn(
                    "lost",
                    format_args!("census: a delivery ended without an answer: {error}"),
                );
                return None;
            }
        };
        // A redirect holds for later batches too, unless another one moved the endpoint since.
        if delivered.endpoint != delivered.sent_to && self.endpoint == delivered.sent_to {
            self.endpoint = delivered.endpoint;
        }
        let mut again = Items::default();
        let mut wait: Option<Option<Duration>> = None;
        for (items, verdict) in delivered.parts {
            if let Some((retry, after)) = self.count(items, verdict) {
                again.append(&retry);
                wait = Some(wait.flatten().max(after));
            }
        }
        match wait {
            None => self.succeeded(),
            Some(after) => self.failed(after),
        }
        let count = again.len();
        match delivered.origin {
            Origin::Stored(leased) => {
                if let Some(storage) = self.storage.clone() {
                    if count == 0 {
                        storage.remove(leased);
                    } else if count == delivered.sent {
                        storage.release(leased);
                    } else if let Err(error) = storage.replace(leased, &again) {
                        self.lost(&again, &error);
                    }
                }
                None
            }
            _ if count == 0 => None,
            Origin::Fresh => Some(Again {
                items: again,
                from_memory: false,
            }),
            Origin::Memory => Some(Again {
                items: again,
                from_memory: true,
            }),
        }
    }

    /// Counts one part's verdict; what of it must be sent again, and not before when.
    fn count(&mut self, items: Items, verdict: Verdict) -> Option<(Items, Option<Duration>)> {
        let n = items.len() as u64;
        match verdict {
            Verdict::Done => {
                COUNTERS.sent.fetch_add(n, Ordering::Relaxed);
                None
            }
            Verdict::Retry { after, reason } => {
                self.retrying(&items, &reason);
                Some((items, after))
            }
            Verdict::Drop(Dropped::TooLarge) => {
                COUNTERS.dropped_too_large.fetch_add(n, Ordering::Relaxed);
                self.warnings.warn(
                    "413",
                    format_args!(
                        "census: dropped an envelope the endpoint says is too large (413)"
                    ),
                );
                None
            }
            Verdict::Drop(Dropped::Rejected(status)) => {
                COUNTERS.dropped_rejected.fetch_add(n, Ordering::Relaxed);
                self.warnings.warn(
                    "rejected",
                    format_args!(
                        "census: the endpoint refused {n} envelopes with status {status}; dropped"
                    ),
                );
                None
            }
            Verdict::Partial {
                accepted,
                rejected,
                retry,
                after,
            } => {
                COUNTERS.sent.fetch_add(accepted as u64, Ordering::Relaxed);
                if rejected > 0 {
                    COUNTERS
                        .dropped_rejected
                        .fetch_add(rejected as u64, Ordering::Relaxed);
                    self.warnings.warn(
                        "rejected-items",
                        format_args!(
                            "census: the endpoint refused {rejected} envelopes of a batch; dropped"
                        ),
                    );
                }
                if retry.is_empty() {
                    return None;
                }
                let mut again = Items::default();
                for index in retry {
                    again.push(items.get(index));
                }
                self.retrying(&again, "206, retryable items");
                Some((again, after))
            }
            // The delivery follows redirects and splits; what reaches here was neither.
            Verdict::Split | Verdict::Redirect { .. } => {
                self.retrying(&items, "unhandled answer");
                Some((items, None))
            }
        }
    }

    /// Puts what failed back where it waits (the loop, not a flush): a new batch to storage
    /// (or memory), a batch of the in-memory backlog back at its front.
    fn requeue(&mut self, again: Again) {
        if again.from_memory {
            self.memory.push_front(again.items);
        } else {
            self.keep(again.items);
        }
    }

    fn retrying(&mut self, items: &Items, reason: &str) {
        COUNTERS
            .retried
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.warnings.warn(
            "retry",
            format_args!(
                "census: could not deliver {} envelopes ({reason}); they will be sent again",
                items.len()
            ),
        );
    }

    fn succeeded(&mut self) {
        if self.backoff.succeeded() {
            log::info!("census: Application Insights accepts telemetry again");
        }
        let now = Instant::now();
        self.retry_at = now;
        // The endpoint answers: whatever waits in the backlog can go now.
        self.backlog_at = now;
    }

    fn failed(&mut self, after: Option<Duration>) {
        self.retry_at = Instant::now() + self.backoff.failed(after);
        self.backlog_at = self.retry_at;
    }

    /// Keeps envelopes that could not be delivered yet: in storage, else in memory.
    fn keep(&mut self, items: Items) {
        if items.is_empty() {
            return;
        }
        let n = items.len() as u64;
        match &self.storage {
            Some(storage) => match storage.write(&items) {
                Ok(()) => {
                    COUNTERS.stored.fetch_add(n, Ordering::Relaxed);
                }
                Err(error) => self.lost(&items, &error),
            },
            None => {
                if self.held_in_memory() + items.len()
                    > self.config.memory_batches * self.config.max_items
                {
                    COUNTERS.dropped_unstored.fetch_add(n, Ordering::Relaxed);
                    self.warnings.warn(
                        "memory",
                        format_args!(
                            "census: dropped {n} envelopes: the endpoint fails, storage is off and the retry queue is full"
                        ),
                    );
                } else {
                    self.memory.push_back(items);
                }
            }
        }
    }

    fn lost(&mut self, items: &Items, error: &StoreError) {
        let n = items.len() as u64;
        match error {
            StoreError::Full { .. } => COUNTERS
                .dropped_storage_full
                .fetch_add(n, Ordering::Relaxed),
            StoreError::Io(_) => COUNTERS.dropped_unstored.fetch_add(n, Ordering::Relaxed),
        };
        self.warnings.warn(
            "storage",
            format_args!("census: dropped {n} undeliverable envelopes: {error}"),
        );
    }

    /// Envelopes held in memory for a retry (storage off).
    fn held_in_memory(&self) -> usize {
        self.memory.iter().map(Items::len).sum()
    }

    /// Delivers everything queued (in flight, pending, the in-memory backlog) and everything in
    /// local storage before `deadline`, two requests in flight, waiting out a backoff or a
    /// `Retry-After` that ends before it. What cannot go in time is kept (in storage, else in
    /// memory); returns how much that is.
    async fn flush(&mut self, deadline: Instant) -> Flushed {
        let mut queue: VecDeque<Items> = self.ready.drain(..).collect();
        queue.extend(self.pending.take(self.config.max_items, true));
        queue.extend(self.memory.drain(..));
        let mut storage_done = self.storage.is_none();
        let complete = loop {
            let now = Instant::now();
            while self.in_flight.len() < IN_FLIGHT && now < deadline && now >= self.retry_at {
                if let Some(items) = queue.pop_front() {
                    self.start(items, Origin::Fresh, Some(deadline));
                    continue;
                }
                if storage_done {
                    break;
                }
                match self.storage.as_ref().and_then(Storage::lease_oldest) {
                    Some(mut leased) => {
                        let items = std::mem::take(&mut leased.items);
                        self.start(items, Origin::Stored(leased), Some(deadline));
                    }
                    None => storage_done = true,
                }
            }
            if let Some(joined) = self.in_flight.join_next().await {
                if let Some(again) = self.settle(joined) {
                    queue.push_back(again.items);
                }
                // A stored batch that failed is back in storage, to be tried again.
                storage_done = self.storage.is_none();
                continue;
            }
            if queue.is_empty() && storage_done {
                break true;
            }
            let now = Instant::now();
            if now >= deadline || self.retry_at >= deadline {
                break false;
            }
            if self.retry_at > now {
                tokio::time::sleep_until(self.retry_at.into()).await;
            }
        };
        for batch in queue {
            self.keep(batch);
        }
        if complete {
            return Flushed { left: 0 };
        }
        let left =
            self.held_in_memory() as u64 + self.storage.as_ref().map_or(0, Storage::count_items);
        self.warnings.warn(
            "flush",
            format_args!(
                "census: could not deliver everything before the deadline; {left} envelopes are kept to be sent later"
            ),
        );
        Flushed { left }
    }
}

/// Delivers one batch: posts it, follows redirects (the endpoint becomes where the last one
/// pointed), splits it in halves while the endpoint says it is too large. Every part that got a
/// final answer, with what the answer means.
async fn deliver(
    http: &Http,
    gzip: bool,
    endpoint: &mut Endpoint,
    items: Items,
    body: bytes::Bytes,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Vec<(Items, Verdict)> {
    let mut parts = Vec::with_capacity(1);
    // Halves are encoded here, on a compressor of their own (a 413 is rare).
    let mut encoder = None;
    let mut work = vec![(items, Some(body))];
    while let Some((items, body)) = work.pop() {
        let body = match body {
            Some(body) => body,
            None => match encoder
                .get_or_insert_with(|| Encoder::new(gzip))
                .encode(&items)
            {
                Some(body) => body,
                None => {
                    let reason = "could not compress the batch".to_owned();
                    parts.push((
                        items,
                        Verdict::Retry {
                            after: None,
                            reason,
                        },
                    ));
                    continue;
                }
            },
        };
        match post_following(http, endpoint, body, items.len(), timeout, deadline).await {
            Verdict::Split => {
                let [first, second] = batch::halves(&items);
                work.push((second, None));
                work.push((first, None));
            }
            verdict => parts.push((items, verdict)),
        }
    }
    parts
}

/// Posts `body`, following at most ten 307/308 redirects; what the last answer means.
async fn post_following(
    http: &Http,
    endpoint: &mut Endpoint,
    body: bytes::Bytes,
    items: usize,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Verdict {
    for _ in 0..=MAX_REDIRECTS {
        let timeout = deadline.map_or(timeout, |deadline| {
            timeout.min(deadline.saturating_duration_since(Instant::now()))
        });
        let answer = http
            .post(&endpoint.track_url(), body.clone(), timeout)
            .await;
        match status::policy(&answer, items) {
            Verdict::Redirect { status, location } => match endpoint.redirected(&location) {
                Some(moved) => {
                    log::info!(
                        "census: the ingestion endpoint moved to {}://{}",
                        moved.scheme,
                        moved.authority
                    );
                    *endpoint = moved;
                }
                None => return Verdict::Drop(Dropped::Rejected(status)),
            },
            verdict => return verdict,
        }
    }
    Verdict::Retry {
        after: None,
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    }
}
