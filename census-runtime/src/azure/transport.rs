//! The transport: a thread of its own that batches envelopes, posts them to
//! `{endpoint}/v2.1/track`, reads the answer, retries, follows redirects, splits what is too
//! large, and keeps what cannot be delivered yet in local storage.
//!
//! HTTP is `ureq` (blocking, rustls): a blocking client is the simplest thing that works, needs
//! no async runtime in the application (nor interferes with one it has), and brings a small
//! dependency tree. The transport sends one batch at a time, and two at once when more are
//! waiting: the second goes through a helper thread (started on first need) on a connection of
//! its own, so that compressing and sending one batch overlaps the endpoint's work on the other.
//! Automatic redirects are off: 307/308 are handled here so that the new origin is kept for
//! later batches.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Warnings;
use super::connection_string::Endpoint;
use super::diagnostics::COUNTERS;
use super::envelope::Items;
use super::storage::{Storage, StoreError};

/// At most this many redirects are followed for one batch.
const MAX_REDIRECTS: usize = 10;
/// How much of a response body is read.
const MAX_RESPONSE: u64 = 1 << 20;
/// Statuses of a whole batch, or of one item of a 206, that are worth sending again.
const RETRYABLE: &[u16] = &[401, 403, 408, 429, 500, 502, 503, 504];
/// Per-item statuses of a 206 that are worth sending again.
const RETRYABLE_ITEM: &[u16] = &[408, 429, 500, 502, 503, 504];

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
}

/// Name resolution for the transport: the endpoint's host is looked up once a minute, not
/// before every request. (ureq's own resolver looks up on every request, and with a timeout set
/// it does so on a thread spawned for the lookup: a thread per batch.)
#[derive(Debug, Default)]
struct CachedResolver {
    lookup: ureq::unversioned::resolver::DefaultResolver,
    cache: std::sync::Mutex<Option<CachedAddrs>>,
}

#[derive(Debug)]
struct CachedAddrs {
    scheme: String,
    authority: String,
    addrs: Vec<std::net::SocketAddr>,
    at: Instant,
}

/// How long a looked-up address is used.
const RESOLVE_TTL: Duration = Duration::from_secs(60);

impl ureq::unversioned::resolver::Resolver for CachedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let scheme = uri.scheme_str().unwrap_or_default();
        let authority = uri.authority().map_or("", |a| a.as_str());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = cache.as_ref()
            && cached.scheme == scheme
            && cached.authority == authority
            && cached.at.elapsed() < RESOLVE_TTL
        {
            let mut out = self.empty();
            for addr in &cached.addrs {
                out.push(*addr);
            }
            return Ok(out);
        }
        let resolved = self.lookup.resolve(uri, config, timeout)?;
        *cache = Some(CachedAddrs {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            addrs: resolved.to_vec(),
            at: Instant::now(),
        });
        Ok(resolved)
    }
}

/// The answer to one batch.
enum Delivery {
    /// Everything went, or was dropped for good.
    Done,
    /// These envelopes should be sent again, not before `after` when the service said so.
    Retry {
        items: Items,
        after: Option<Duration>,
    },
}

pub(crate) struct Transport {
    config: TransportConfig,
    endpoint: Endpoint,
    storage: Option<Storage>,
    inbox: Receiver<Message>,
    spare: SyncSender<Items>,
    pending: Items,
    pending_since: Option<Instant>,
    /// Undelivered batches when there is no storage.
    memory: VecDeque<Items>,
    /// No new attempt before this (backoff or `Retry-After`).
    retry_at: Instant,
    /// The backlog (storage, memory) is looked at again at this time.
    backlog_at: Instant,
    failures: u32,
    poster: Poster,
    /// The thread that sends a second batch while this one sends the first; `None` until two
    /// batches wait at once.
    helper: Option<Helper>,
    /// The helper could not be started: batches go one at a time.
    no_helper: bool,
    warnings: Warnings,
}

/// What posting a batch needs: the HTTP client and the buffers the body is written into.
struct Poster {
    agent: ureq::Agent,
    gzip: bool,
    body: Vec<u8>,
    compressed: Vec<u8>,
    /// The compressor, kept from batch to batch: a new one allocates and clears some hundreds
    /// of kilobytes each time.
    deflate: Option<flate2::Compress>,
}

/// Writes `body` gzipped into `out`: the gzip header, a raw deflate stream from the reused
/// compressor, then the CRC-32 and length trailer (RFC 1952). `false` if compression failed.
fn gzip_into(deflate: &mut Option<flate2::Compress>, body: &[u8], out: &mut Vec<u8>) -> bool {
    let deflate =
        deflate.get_or_insert_with(|| flate2::Compress::new(flate2::Compression::fast(), false));
    deflate.reset();
    out.clear();
    // Magic, deflate, no flags, no time, no extra flags, unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    out.reserve(body.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        let input = body.get(consumed..).unwrap_or_default();
        match deflate.compress_vec(input, out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => break,
            Ok(_) => out.reserve(out.capacity().max(64)),
            Err(_) => return false,
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32, as RFC 1952 says.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    true
}

/// A batch the helper thread sends, and then its answer.
struct Job {
    items: Items,
    /// Where the batch goes; where the last redirect pointed once it is sent.
    endpoint: Endpoint,
    /// The endpoint when the batch was lent.
    lent_to: Endpoint,
    timeout: Duration,
    answer: Option<Answer>,
}

/// Batches lent to the helper and not answered yet: one in its hands and one waiting for it,
/// so that it never waits for this thread between two batches.
const LENT: usize = 2;

/// The helper thread's ends.
struct Helper {
    jobs: SyncSender<Job>,
    answers: Receiver<Job>,
    _thread: JoinHandle<()>,
}

impl Transport {
    pub(crate) fn new(
        config: TransportConfig,
        storage: Option<Storage>,
        inbox: Receiver<Message>,
        spare: SyncSender<Items>,
    ) -> Transport {
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(config.timeout))
            .user_agent(concat!("census/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::new(),
            CachedResolver::default(),
        );
        let now = Instant::now();
        Transport {
            endpoint: config.endpoint.clone(),
            poster: Poster {
                agent,
                gzip: config.gzip,
                body: Vec::new(),
                compressed: Vec::new(),
                deflate: None,
            },
            helper: None,
            no_helper: false,
            config,
            storage,
            inbox,
            spare,
            pending: Items::default(),
            pending_since: None,
            memory: VecDeque::new(),
            retry_at: now,
            backlog_at: now,
            failures: 0,
            warnings: Warnings::default(),
        }
    }

    /// The thread's loop: until shut down, or until the exporter is gone.
    pub(crate) fn run(mut self) {
        loop {
            let wake = self.next_wake();
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(timeout) {
                Ok(Message::Items(mut items)) => {
                    if self.pending.is_empty() {
                        self.pending_since = Some(Instant::now());
                        // Taken as it is; the empty buffer goes back to the exporter.
                        std::mem::swap(&mut self.pending, &mut items);
                    } else {
                        self.pending.append(&items);
                    }
                    items.clear();
                    let _ = self.spare.try_send(items);
                }
                Ok(Message::Flush { deadline, done }) => {
                    let flushed = self.flush(deadline);
                    let _ = done.send(flushed);
                }
                Ok(Message::Shutdown { deadline, done }) => {
                    let flushed = self.flush(deadline);
                    let _ = done.send(flushed);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(Instant::now() + self.config.timeout);
                    return;
                }
            }
            let now = Instant::now();
            let due = self
                .pending_since
                .is_some_and(|since| now >= since + self.config.interval);
            if self.pending.len() >= self.config.max_items || due {
                self.ship_pending(due);
            }
            if Instant::now() >= self.retry_at && Instant::now() >= self.backlog_at {
                self.send_backlog();
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.retry_at.max(self.backlog_at);
        if let Some(since) = self.pending_since {
            wake = wake.min(since + self.config.interval);
        }
        wake.max(Instant::now() + Duration::from_millis(1))
    }

    /// Sends what is pending in full batches, and (`all`) the last, partial one too; the rest
    /// waits for more envelopes or for the send interval. What fails goes to the backlog.
    fn ship_pending(&mut self, all: bool) {
        let batches = self.take_batches(all);
        // What failed, or waits behind a failure, goes to the backlog.
        for items in self.send_batches(batches, None) {
            self.keep(items);
        }
    }

    /// Takes what is pending as batches of at most `max_items`: the full ones, and (`all`) the
    /// last, partial one too, which otherwise stays pending.
    fn take_batches(&mut self, all: bool) -> VecDeque<Items> {
        let max = self.config.max_items;
        let ship = if all {
            self.pending.len()
        } else {
            self.pending.len() / max * max
        };
        let mut batches = VecDeque::new();
        if ship == self.pending.len() && ship <= max {
            // One batch: taken as it is, without a copy.
            if ship > 0 {
                batches.push_back(std::mem::take(&mut self.pending));
            }
        } else {
            let mut start = 0;
            while start < ship {
                let end = (start + max).min(ship);
                batches.push_back(self.pending.slice(start..end));
                start = end;
            }
            let rest = self.pending.slice(ship..self.pending.len());
            self.pending = rest;
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        batches
    }

    /// Sends the oldest batches of the backlog while the endpoint takes them.
    fn send_backlog(&mut self) {
        for _ in 0..64 {
            if let Some(batch) = self.memory.pop_front() {
                match self.deliver(batch) {
                    Delivery::Done => self.succeeded(),
                    Delivery::Retry { items, after } => {
                        self.failed(after);
                        self.memory.push_front(items);
                        return;
                    }
                }
                continue;
            }
            let Some(storage) = self.storage.clone() else {
                break;
            };
            let Some(mut leased) = storage.lease_oldest() else {
                break;
            };
            let items = std::mem::take(&mut leased.items);
            let count = items.len();
            match self.deliver(items) {
                Delivery::Done => {
                    storage.remove(leased);
                    self.succeeded();
                }
                Delivery::Retry { items, after } => {
                    self.failed(after);
                    if items.len() == count {
                        storage.release(leased);
                    } else if let Err(error) = storage.replace(leased, &items) {
                        self.lost(&items, &error);
                    }
                    return;
                }
            }
        }
        // Nothing left here: look again later (another process may leave batches too).
        self.backlog_at = Instant::now() + Duration::from_secs(30);
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            log::info!("census: Application Insights accepts telemetry again");
        }
        self.failures = 0;
        self.retry_at = Instant::now();
        // The endpoint answers: whatever waits in the backlog can go now.
        self.backlog_at = Instant::now();
    }

    fn failed(&mut self, after: Option<Duration>) {
        self.failures = self.failures.saturating_add(1);
        let exp = self
            .config
            .min_backoff
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(16))
            .min(self.config.max_backoff);
        // Full jitter over the upper half: spreads out many instances failing together.
        let jitter = (crate::id::next_random() % 1000) as f64 / 1000.0;
        let backoff = exp.mul_f64(0.5 + jitter / 2.0);
        // The service's own `Retry-After` wins over the computed backoff.
        let wait = after.unwrap_or(backoff);
        self.retry_at = Instant::now() + wait;
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

    /// Delivers everything queued (pending, the in-memory backlog) and everything in local
    /// storage before `deadline`, waiting out a backoff or a `Retry-After` that ends before it.
    /// What cannot go in time is kept (in storage, else in memory); returns how much that is.
    fn flush(&mut self, deadline: Instant) -> Flushed {
        let mut queue = self.take_batches(true);
        queue.extend(self.memory.drain(..));
        // One pass over what is queued, two batches in flight; what fails is retried below.
        let mut queue: VecDeque<Items> = self.send_batches(queue, Some(deadline)).into();
        let mut complete = true;
        // Then one batch at a time: what failed first, then the stored batches, oldest first.
        loop {
            if !self.wait_for_retry(deadline) {
                complete = false;
                break;
            }
            if let Some(batch) = queue.pop_front() {
                if let Some(rest) = self.flush_one(batch, deadline) {
                    queue.push_front(rest);
                }
                continue;
            }
            let Some(storage) = self.storage.clone() else {
                break;
            };
            let Some(mut leased) = storage.lease_oldest() else {
                break;
            };
            let items = std::mem::take(&mut leased.items);
            let count = items.len();
            match self.flush_one(items, deadline) {
                None => storage.remove(leased),
                Some(rest) if rest.len() == count => storage.release(leased),
                Some(rest) => {
                    if let Err(error) = storage.replace(leased, &rest) {
                        self.lost(&rest, &error);
                    }
                }
            }
        }
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

    /// Waits for the end of a backoff or `Retry-After` when it ends before `deadline`; `false`
    /// when it does not (or the deadline has passed), and nothing more can be sent in time.
    fn wait_for_retry(&self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline || self.retry_at >= deadline {
            return false;
        }
        if self.retry_at > now {
            std::thread::sleep(self.retry_at - now);
        }
        true
    }

    /// Sends one batch within `deadline`; what must be sent again, if anything.
    fn flush_one(&mut self, batch: Items, deadline: Instant) -> Option<Items> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self.deliver_within(batch, timeout.min(self.config.timeout)) {
            Delivery::Done => {
                self.succeeded();
                None
            }
            Delivery::Retry { items, after } => {
                self.failed(after);
                Some(items)
            }
        }
    }

    /// Envelopes held in memory for a retry (storage off).
    fn held_in_memory(&self) -> usize {
        self.memory.iter().map(Items::len).sum()
    }

    fn deliver(&mut self, items: Items) -> Delivery {
        let timeout = self.config.timeout;
        self.deliver_within(items, timeout)
    }

    /// One batch: post it, follow redirects, read the answer, split on 413.
    fn deliver_within(&mut self, items: Items, timeout: Duration) -> Delivery {
        let count = items.len() as u64;
        if count == 0 {
            return Delivery::Done;
        }
        let answer = self.poster.post(&mut self.endpoint, &items, timeout);
        self.answered(items, answer, timeout)
    }

    /// Sends `batches` in order, two in flight at a time when there are several: this thread
    /// posts one while the helper thread posts another, with the helper's next batch already
    /// waiting for it. Counts each outcome; stops sending at a failure's backoff or at
    /// `deadline`. Returns what must be sent again: the failed batches and those never tried.
    fn send_batches(
        &mut self,
        mut batches: VecDeque<Items>,
        deadline: Option<Instant>,
    ) -> Vec<Items> {
        let mut again = Vec::new();
        let use_helper = batches.len() > 1 && self.ensure_helper();
        // Envelope counts of the batches lent to the helper, oldest first.
        let mut lent: VecDeque<u64> = VecDeque::new();
        while let Some(batch) = batches.pop_front() {
            self.take_answers(&mut lent, &mut again, false);
            let now = Instant::now();
            if now < self.retry_at || deadline.is_some_and(|d| now >= d) {
                again.push(batch);
                continue;
            }
            let timeout =
                deadline.map_or(self.config.timeout, |d| (d - now).min(self.config.timeout));
            // The last batch is this thread's, so that it never only waits for the helper.
            let batch = if use_helper && lent.len() < LENT && !batches.is_empty() {
                match self.lend(batch, timeout) {
                    Ok(count) => {
                        lent.push_back(count);
                        continue;
                    }
                    Err(returned) => returned,
                }
            } else {
                batch
            };
            let answer = self.poster.post(&mut self.endpoint, &batch, timeout);
            let delivery = self.answered(batch, answer, timeout);
            self.count(delivery, &mut again);
        }
        self.take_answers(&mut lent, &mut again, true);
        again
    }

    /// Takes the helper's answers into account: those already there, or (`wait`) all of them.
    fn take_answers(&mut self, lent: &mut VecDeque<u64>, again: &mut Vec<Items>, wait: bool) {
        while !lent.is_empty() {
            let Some(helper) = &self.helper else {
                break;
            };
            let job = if wait {
                helper.answers.recv().ok()
            } else {
                match helper.answers.try_recv() {
                    Ok(job) => Some(job),
                    Err(std::sync::mpsc::TryRecvError::Empty) => return,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            match job {
                Some(job) => {
                    lent.pop_front();
                    self.returned(job, again);
                }
                None => break,
            }
        }
        if !lent.is_empty() {
            self.helper_lost(lent.drain(..).sum());
        }
    }

    /// Hands a batch to the helper thread; gives it back if the helper is gone.
    fn lend(&mut self, items: Items, timeout: Duration) -> Result<u64, Items> {
        let count = items.len() as u64;
        let job = Job {
            items,
            endpoint: self.endpoint.clone(),
            lent_to: self.endpoint.clone(),
            timeout,
            answer: None,
        };
        let sent = match &self.helper {
            Some(helper) => helper.jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        sent.map(|()| count).map_err(|job| {
            self.helper = None;
            self.no_helper = true;
            job.items
        })
    }

    /// Takes the helper's answer into account.
    fn returned(&mut self, job: Job, again: &mut Vec<Items>) {
        // A redirect the helper followed holds for later batches too.
        if job.endpoint != job.lent_to && self.endpoint == job.lent_to {
            self.endpoint = job.endpoint;
        }
        let delivery = match job.answer {
            Some(answer) => self.answered(job.items, answer, job.timeout),
            None => Delivery::Retry {
                items: job.items,
                after: None,
            },
        };
        self.count(delivery, again);
    }

    /// The helper is gone with batches (it cannot panic short of a bug): counted as lost.
    fn helper_lost(&mut self, count: u64) {
        self.helper = None;
        self.no_helper = true;
        COUNTERS
            .dropped_unstored
            .fetch_add(count, Ordering::Relaxed);
    }

    fn count(&mut self, delivery: Delivery, again: &mut Vec<Items>) {
        match delivery {
            Delivery::Done => self.succeeded(),
            Delivery::Retry { items, after } => {
                self.failed(after);
                again.push(items);
            }
        }
    }

    /// Starts the helper thread on first need; whether there is one.
    fn ensure_helper(&mut self) -> bool {
        if self.helper.is_none() && !self.no_helper {
            let (jobs, inbox) = std::sync::mpsc::sync_channel::<Job>(LENT);
            let (outbox, answers) = std::sync::mpsc::sync_channel::<Job>(LENT);
            let mut poster = Poster {
                agent: self.poster.agent.clone(),
                gzip: self.poster.gzip,
                body: Vec::new(),
                compressed: Vec::new(),
                deflate: None,
            };
            let spawned = std::thread::Builder::new()
                .name("census-azure-2".into())
                .spawn(move || {
                    crate::local::mark_census_thread();
                    while let Ok(mut job) = inbox.recv() {
                        job.answer = Some(poster.post(&mut job.endpoint, &job.items, job.timeout));
                        if outbox.send(job).is_err() {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(thread) => {
                    self.helper = Some(Helper {
                        jobs,
                        answers,
                        _thread: thread,
                    });
                }
                Err(_) => self.no_helper = true,
            }
        }
        self.helper.is_some()
    }

    /// What an answer means for the batch: done, or these envelopes again (a 413 is split and
    /// its halves sent here).
    fn answered(&mut self, items: Items, answer: Answer, timeout: Duration) -> Delivery {
        let count = items.len() as u64;
        match answer {
            Answer::Status {
                status: 200,
                after: _,
                body: _,
            } => {
                COUNTERS.sent.fetch_add(count, Ordering::Relaxed);
                Delivery::Done
            }
            Answer::Status {
                status: 206,
                after,
                body,
            } => self.partial(items, &body, after),
            Answer::Status { status: 413, .. } if count > 1 => {
                let half = items.len() / 2;
                let mut retry = Items::default();
                let mut wait = None;
                for part in [items.slice(0..half), items.slice(half..items.len())] {
                    if let Delivery::Retry { items, after } = self.deliver_within(part, timeout) {
                        retry.append(&items);
                        wait = wait.max(after);
                    }
                }
                if retry.is_empty() {
                    Delivery::Done
                } else {
                    Delivery::Retry {
                        items: retry,
                        after: wait,
                    }
                }
            }
            Answer::Status { status: 413, .. } => {
                COUNTERS
                    .dropped_too_large
                    .fetch_add(count, Ordering::Relaxed);
                self.warnings.warn(
                    "413",
                    format_args!(
                        "census: dropped an envelope the endpoint says is too large (413)"
                    ),
                );
                Delivery::Done
            }
            Answer::Status { status, after, .. } if RETRYABLE.contains(&status) => {
                self.retrying(&items, &format!("status {status}"));
                Delivery::Retry { items, after }
            }
            Answer::Status { status, .. } if (500..600).contains(&status) => {
                self.retrying(&items, &format!("status {status}"));
                Delivery::Retry { items, after: None }
            }
            Answer::Status { status, .. } => {
                COUNTERS
                    .dropped_rejected
                    .fetch_add(count, Ordering::Relaxed);
                self.warnings.warn(
                    "rejected",
                    format_args!("census: the endpoint refused {count} envelopes with status {status}; dropped"),
                );
                Delivery::Done
            }
            Answer::Failed(reason) => {
                self.retrying(&items, &reason);
                Delivery::Retry { items, after: None }
            }
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

    /// A 206: keep the retryable items, drop the others.
    fn partial(&mut self, items: Items, body: &[u8], after: Option<Duration>) -> Delivery {
        let Some(errors) = parse_errors(body) else {
            // Unreadable: which items failed is unknown, so all of them are sent again.
            self.retrying(&items, "206 with an unreadable body");
            return Delivery::Retry { items, after };
        };
        let mut retry = Items::default();
        let mut failed = vec![false; items.len()];
        let mut rejected = 0u64;
        for (index, status) in errors {
            let Some(slot) = failed.get_mut(index) else {
                continue;
            };
            if *slot {
                continue;
            }
            *slot = true;
            if RETRYABLE_ITEM.contains(&status) {
                retry.push(items.get(index));
            } else {
                rejected += 1;
            }
        }
        let accepted = failed.iter().filter(|f| !**f).count() as u64;
        COUNTERS.sent.fetch_add(accepted, Ordering::Relaxed);
        if rejected > 0 {
            COUNTERS
                .dropped_rejected
                .fetch_add(rejected, Ordering::Relaxed);
            self.warnings.warn(
                "rejected-items",
                format_args!(
                    "census: the endpoint refused {rejected} envelopes of a batch; dropped"
                ),
            );
        }
        if retry.is_empty() {
            Delivery::Done
        } else {
            self.retrying(&retry, "206, retryable items");
            Delivery::Retry {
                items: retry,
                after,
            }
        }
    }
}

impl Poster {
    /// Posts a batch, following at most ten 307/308 redirects; `endpoint` becomes where the
    /// last redirect pointed.
    fn post(&mut self, endpoint: &mut Endpoint, items: &Items, timeout: Duration) -> Answer {
        items.write_array(&mut self.body);
        let gzip = self.gzip;
        if gzip && !gzip_into(&mut self.deflate, &self.body, &mut self.compressed) {
            return Answer::Failed("could not compress the batch".to_owned());
        }
        for _ in 0..=MAX_REDIRECTS {
            let url = endpoint.track_url();
            let mut request = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json; charset=utf-8")
                .header("Accept", "application/json");
            if gzip {
                request = request.header("Content-Encoding", "gzip");
            }
            let request = request
                .config()
                .timeout_global(Some(timeout.max(Duration::from_millis(1))))
                .build();
            let payload: &[u8] = if gzip { &self.compressed } else { &self.body };
            let mut response = match request.send(payload) {
                Ok(response) => response,
                Err(error) => return Answer::Failed(error.to_string()),
            };
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if status == 307 || status == 308 {
                let moved = header("location").and_then(|l| endpoint.redirected(&l));
                match moved {
                    Some(moved) => {
                        log::info!(
                            "census: the ingestion endpoint moved to {}://{}",
                            moved.scheme,
                            moved.authority
                        );
                        *endpoint = moved;
                        continue;
                    }
                    None => {
                        return Answer::Status {
                            status,
                            after: None,
                            body: Vec::new(),
                        };
                    }
                }
            }
            let after = header("retry-after").and_then(|v| parse_retry_after(&v));
            let body = if status == 206 || status == 200 {
                response
                    .body_mut()
                    .with_config()
                    .limit(MAX_RESPONSE)
                    .read_to_vec()
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            return Answer::Status {
                status,
                after,
                body,
            };
        }
        Answer::Failed(format!("more than {MAX_REDIRECTS} redirects"))
    }
}

enum Answer {
    Status {
        status: u16,
        after: Option<Duration>,
        body: Vec<u8>,
    },
    Failed(String),
}

/// `Retry-After` from now: see [`parse_retry_after_at`].
fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, std::time::SystemTime::now())
}

/// `Retry-After` as seconds, or as an HTTP date (RFC 9110: IMF-fixdate and the two obsolete
/// forms) counted from `now`; a date already past means now. Capped at an hour.
fn parse_retry_after_at(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    const MAX: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(secs.min(MAX.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default().min(MAX))
}

/// The `errors` of a 206 body: `(index, statusCode)` pairs; `None` when unreadable.
fn parse_errors(body: &[u8]) -> Option<Vec<(usize, u16)>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errors = value.get("errors")?.as_array()?;
    errors
        .iter()
        .map(|e| {
            let index = usize::try_from(e.get("index")?.as_u64()?).ok()?;
            let status = u16::try_from(e.get("statusCode")?.as_u64()?).ok()?;
            Some((index, status))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_with_a_reused_compressor_round_trips() {
        use std::io::Read as _;
        let mut deflate = None;
        let mut out = Vec::new();
        let large: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"n\":{}}}", i.wrapping_mul(2_654_435_761)).into_bytes())
            .collect();
        for body in [&b"{\"a\":1}"[..], &large, b"", b"[1,2,3]"] {
            assert!(gzip_into(&mut deflate, body, &mut out));
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut plain)
                .expect("a valid gzip stream");
            assert_eq!(plain, body);
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("99999"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 10:00:00 GMT").unwrap();
        let at = |value| parse_retry_after_at(value, now);
        assert_eq!(
            at("Thu, 26 Nov 2026 10:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        // The obsolete RFC 850 and asctime forms.
        assert_eq!(
            at("Thursday, 26-Nov-26 10:01:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(at("Thu Nov 26 10:00:05 2026"), Some(Duration::from_secs(5)));
        assert_eq!(at("Thu, 26 Nov 2026 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            at("Fri, 27 Nov 2026 10:00:00 GMT"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(at("Thu, 26 Nov 2026 25:00:00 GMT"), None);
        assert_eq!(at("tomorrow"), None);
    }

    #[test]
    fn partial_errors() {
        let body = br#"{"itemsReceived":3,"itemsAccepted":1,"errors":[{"index":0,"statusCode":500,"message":"x"},{"index":2,"statusCode":400}]}"#;
        assert_eq!(parse_errors(body), Some(vec![(0, 500), (2, 400)]));
        assert_eq!(parse_errors(b"not json"), None);
        assert_eq!(parse_errors(br#"{"errors":[{"index":"x"}]}"#), None);
    }
}
