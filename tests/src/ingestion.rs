//! A scriptable Application Insights ingestion endpoint: a real HTTP/1.1 server on 127.0.0.1
//! that records every request (headers, and the body gunzipped and parsed as JSON items) and
//! answers what the test scripts: any status, per-item errors of a 206, `Retry-After`,
//! `Location`, a delay, a dropped connection, or holding every request until released. It can be
//! stopped (connections are then refused) and started again on the same port.
//!
//! In strict mode ([`IngestionServer::strict`]) it checks every item against the schema's field
//! limits and required fields, as ingestion does, and answers as ingestion does: a `206` whose
//! `errors` name each item that broke one (`statusCode` 400, "Field 'data' on type
//! 'RemoteDependencyData' is too long. Expected: 8192 characters, Actual: 8193", or "Field
//! 'message' on type 'MessageData' is required but missing or empty. Expected: string, Actual: "),
//! or a `400` with the same body when no item was accepted. Lengths are counted in UTF-16 code
//! units, as the service counts them. An empty property key and a key an object gives twice
//! are refused too: census never sends either (whether ingestion would take them is not what
//! the tests rest on). In any mode, a server dropped after receiving a key given twice fails
//! its test ([`IngestionServer::repeated_keys`]).
//!
//! ```
//! use census_tests::ingestion::{IngestionServer, Reply};
//!
//! let server = IngestionServer::start().unwrap();
//! server.script([Reply::status(503).retry_after(1), Reply::status(200)]);
//! assert!(server.connection_string().contains("IngestionEndpoint=http://127.0.0.1:"));
//! ```

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The instrumentation key the tests use.
pub const IKEY: &str = "00000000-0000-0000-0000-000000000001";

/// What the server answers to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// An explicit body; else, for 200 and 206, `{itemsReceived, itemsAccepted, errors}`.
    pub body: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Waits this long before answering.
    pub delay: Duration,
    /// Closes the connection without answering.
    pub drop_connection: bool,
    /// Per-item errors of a 206: `(index, statusCode)`.
    pub errors: Vec<(usize, u16)>,
    /// The message of each per-item error, in the order of `errors` ("scripted" when missing).
    pub messages: Vec<String>,
    /// Answers this many requests (default 1).
    pub times: usize,
}

impl Reply {
    /// Answers `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            headers: Vec::new(),
            delay: Duration::ZERO,
            drop_connection: false,
            errors: Vec::new(),
            messages: Vec::new(),
            times: 1,
        }
    }

    /// `200`, every item accepted.
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// A `206` whose items at these indexes failed with these statuses.
    pub fn partial(errors: &[(usize, u16)]) -> Reply {
        Reply {
            errors: errors.to_vec(),
            ..Reply::status(206)
        }
    }

    /// Closes the connection without an answer.
    pub fn drop_connection() -> Reply {
        Reply {
            drop_connection: true,
            ..Reply::status(0)
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Retry-After: seconds`.
    pub fn retry_after(self, seconds: u64) -> Reply {
        self.header("Retry-After", &seconds.to_string())
    }

    /// Adds `Location: url`.
    pub fn location(self, url: &str) -> Reply {
        self.header("Location", url)
    }

    /// Sets the body.
    pub fn body(mut self, body: &str) -> Reply {
        self.body = Some(body.to_owned());
        self
    }

    /// Waits before answering.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Answers this many requests.
    pub fn times(mut self, times: usize) -> Reply {
        self.times = times;
        self
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`.
    pub method: String,
    /// The request target, as sent (`/v2.1/track`).
    pub path: String,
    /// Every header, in order.
    pub headers: Vec<(String, String)>,
    /// The body's size on the wire.
    pub wire_len: usize,
    /// The body, gunzipped when it was gzipped.
    pub body: Vec<u8>,
    /// The body's JSON items (the elements of the array), when it parsed.
    pub items: Vec<Value>,
    /// Each key an object of an item gives more than once, as the item's index and the key's
    /// path (`data.baseData.properties.sku`): `items` holds only one member of each.
    pub repeated_keys: Vec<(usize, String)>,
    /// What the server answered (0: dropped the connection).
    pub reply: Reply,
    /// When it arrived.
    pub received: Instant,
}

impl Recorded {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The per-item errors of the answer: `(index, statusCode, message)`.
    pub fn item_errors(&self) -> Vec<(usize, u16, String)> {
        self.reply
            .errors
            .iter()
            .enumerate()
            .map(|(i, (index, status))| {
                let message = self.reply.messages.get(i).cloned();
                (
                    *index,
                    *status,
                    message.unwrap_or_else(|| "scripted".into()),
                )
            })
            .collect()
    }

    /// The items the answer accepted: all of a 200, those of a 206 not listed as errors.
    pub fn accepted(&self) -> Vec<Value> {
        match self.reply.status {
            200 => self.items.clone(),
            206 => self
                .items
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.reply.errors.iter().any(|(e, _)| e == i))
                .map(|(_, v)| v.clone())
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    held: bool,
    waiting: usize,
    strict: bool,
    /// The bearer tokens accepted, when a token is required.
    bearer: Option<Vec<String>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stopping: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
    /// Connections accepted since the server started.
    accepted: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The server; stops when dropped.
pub struct IngestionServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<thread::JoinHandle<()>>,
}

impl IngestionServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> io::Result<IngestionServer> {
        Self::start_on(0)
    }

    /// Starts on `port` of 127.0.0.1 (0: any free one).
    pub fn start_on(port: u16) -> io::Result<IngestionServer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let mut server = IngestionServer {
            shared,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            accept: None,
        };
        server.listen()?;
        Ok(server)
    }

    fn listen(&mut self) -> io::Result<()> {
        let listener = bind_retrying(self.addr)?;
        self.addr = listener.local_addr()?;
        self.shared.stopping.store(false, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        self.accept = Some(thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    shared
                        .connections
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(clone);
                }
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &shared));
            }
        }));
        Ok(())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connection string pointing at this server.
    pub fn connection_string(&self) -> String {
        format!(
            "InstrumentationKey={IKEY};IngestionEndpoint={}/",
            self.url()
        )
    }

    /// Queues replies, used in order before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().script.extend(replies);
    }

    /// The reply once the script is used up (default: 200).
    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().default = Some(reply);
    }

    /// Checks every item against the schema's field limits and required fields from now on, and
    /// answers as ingestion does when one breaks them (see the module's documentation). Scripted
    /// replies other than a plain 200 are answered as scripted.
    pub fn strict(&self) {
        self.shared.lock().strict = true;
    }

    /// Every per-item error answered so far: `(index, statusCode, message)`.
    pub fn item_errors(&self) -> Vec<(usize, u16, String)> {
        self.shared
            .lock()
            .requests
            .iter()
            .flat_map(Recorded::item_errors)
            .collect()
    }

    /// Requires `Authorization: Bearer <token>` with one of `tokens`, as a resource with local
    /// authentication disabled does: a request without one of them is answered 401 (and its
    /// items are not accepted), before any scripted reply is used.
    pub fn require_bearer(&self, tokens: &[&str]) {
        self.shared.lock().bearer = Some(tokens.iter().map(|t| t.to_string()).collect());
    }

    /// Holds every request, unanswered, until [`release`](Self::release).
    pub fn hold(&self) {
        self.shared.lock().held = true;
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.shared.lock().held = false;
        self.shared.changed.notify_all();
    }

    /// How many requests are held right now.
    pub fn held(&self) -> usize {
        self.shared.lock().waiting
    }

    /// How many TCP connections the server has accepted.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Every item of every request, accepted or not.
    pub fn items(&self) -> Vec<Value> {
        self.shared
            .lock()
            .requests
            .iter()
            .flat_map(|r| r.items.clone())
            .collect()
    }

    /// Each key that an item of a request gave more than once, with the item's index in its
    /// request ([`repeated_keys`]). The server fails the test that drops it when there is one.
    pub fn repeated_keys(&self) -> Vec<(usize, String)> {
        self.shared
            .lock()
            .requests
            .iter()
            .flat_map(|r| r.repeated_keys.clone())
            .collect()
    }

    /// Every item the server accepted.
    pub fn accepted(&self) -> Vec<Value> {
        self.shared
            .lock()
            .requests
            .iter()
            .flat_map(|r| r.accepted())
            .collect()
    }

    /// The `data.baseData.name` of every accepted item.
    pub fn accepted_names(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .filter_map(|v| v["data"]["baseData"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until `done` holds for the requests so far, at most `timeout`.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&[Recorded]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.requests) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until at least `n` items were accepted.
    pub fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |requests| {
            requests.iter().map(|r| r.accepted().len()).sum::<usize>() >= n
        })
    }

    /// Stops listening and closes every connection: from now on connections are refused.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.release();
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.accept.is_none() {
            self.listen()?;
        }
        Ok(())
    }
}

impl Drop for IngestionServer {
    /// Stops the server; fails the test if an item it received gave a key twice (census never
    /// means to), unless the test is failing already.
    fn drop(&mut self) {
        self.stop();
        let repeated = self.repeated_keys();
        if !repeated.is_empty() && !thread::panicking() {
            panic!("items received with a key given more than once (item, key): {repeated:?}");
        }
    }
}

fn bind_retrying(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) if Instant::now() < deadline && addr.port() != 0 => {
                let _ = error;
                thread::sleep(Duration::from_millis(50));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Serves one connection: requests one after another (keep-alive).
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut reader) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let reply = {
            let mut state = shared.lock();
            let reply = match &state.bearer {
                Some(tokens) if !carries_bearer(&request, tokens) => Reply::status(401).body(
                    r#"{"itemsReceived":0,"itemsAccepted":0,"errors":[{"index":0,"statusCode":401,"message":"Authorization token is missing or invalid"}]}"#,
                ),
                _ => next_reply(&mut state),
            };
            let mut recorded = record(request, reply);
            if state.strict {
                enforce_limits(&mut recorded);
            }
            let reply = recorded.reply.clone();
            state.requests.push(recorded);
            shared.changed.notify_all();
            state.waiting += 1;
            while state.held && !shared.stopping.load(Ordering::SeqCst) {
                state = shared
                    .changed
                    .wait_timeout(state, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            state.waiting -= 1;
            reply
        };
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        if reply.drop_connection || shared.stopping.load(Ordering::SeqCst) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let items = shared.lock().requests.last().map_or(0, |r| r.items.len());
        if write_reply(&mut writer, &reply, items).is_err() {
            return;
        }
    }
}

/// Whether `request` carries `Authorization: Bearer <one of tokens>`.
fn carries_bearer(request: &RawRequest, tokens: &[String]) -> bool {
    request.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("authorization")
            && value
                .strip_prefix("Bearer ")
                .is_some_and(|token| tokens.iter().any(|t| t == token))
    })
}

fn next_reply(state: &mut State) -> Reply {
    if let Some(front) = state.script.front_mut() {
        if front.times > 1 {
            front.times -= 1;
            return front.clone();
        }
        if let Some(reply) = state.script.pop_front() {
            return reply;
        }
    }
    state.default.clone().unwrap_or_else(Reply::ok)
}

struct RawRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<RawRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some(RawRequest {
        method,
        path,
        headers,
        body,
    }))
}

fn record(request: RawRequest, reply: Reply) -> Recorded {
    let gzip = request
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("content-encoding") && v.contains("gzip"));
    let wire_len = request.body.len();
    let body = if gzip {
        let mut out = Vec::new();
        match flate2::read::GzDecoder::new(&request.body[..]).read_to_end(&mut out) {
            Ok(_) => out,
            Err(_) => request.body,
        }
    } else {
        request.body
    };
    let items = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(_) => Vec::new(),
    };
    let repeated_keys = repeated_keys(&body);
    Recorded {
        method: request.method,
        path: request.path,
        headers: request.headers,
        wire_len,
        body,
        items,
        repeated_keys,
        reply,
        received: Instant::now(),
    }
}

fn write_reply(out: &mut TcpStream, reply: &Reply, items: usize) -> io::Result<()> {
    let body = match (&reply.body, reply.status) {
        (Some(body), _) => body.clone(),
        // A 400 with per-item errors is strict mode's answer when no item was accepted.
        (None, 200 | 206) | (None, 400) if reply.status != 400 || !reply.errors.is_empty() => {
            let errors: Vec<Value> = reply
                .errors
                .iter()
                .enumerate()
                .map(|(i, (index, status))| {
                    let message = reply.messages.get(i).map_or("scripted", String::as_str);
                    serde_json::json!({"index": index, "statusCode": status, "message": message})
                })
                .collect();
            serde_json::json!({
                "itemsReceived": items,
                "itemsAccepted": items.saturating_sub(errors.len()),
                "errors": errors,
            })
            .to_string()
        }
        (None, _) => String::new(),
    };
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reply.status,
        body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

/// Answers a plain 200 as ingestion would, given the schema's field limits and required fields:
/// a 206 naming each item that broke one, or a 400 when none was accepted.
fn enforce_limits(recorded: &mut Recorded) {
    if recorded.reply.status != 200
        || recorded.reply.body.is_some()
        || recorded.reply.drop_connection
    {
        return;
    }
    let mut errors = Vec::new();
    let mut messages = Vec::new();
    for (index, item) in recorded.items.iter().enumerate() {
        let repeated = recorded
            .repeated_keys
            .iter()
            .find(|(at, _)| *at == index)
            .map(|(_, path)| format!("Field '{path}' is given more than once"));
        if let Some(message) = schema_violations(item).into_iter().next().or(repeated) {
            errors.push((index, 400));
            messages.push(message);
        }
    }
    if errors.is_empty() {
        return;
    }
    recorded.reply.status = if errors.len() == recorded.items.len() {
        400
    } else {
        206
    };
    recorded.reply.errors = errors;
    recorded.reply.messages = messages;
}

/// A string's length as the service counts it: UTF-16 code units.
pub fn utf16_len(value: &str) -> usize {
    value.encode_utf16().count()
}

/// The fields' limits by telemetry type, as the schema gives them.
fn field_limits(base_type: &str) -> &'static [(&'static str, usize)] {
    match base_type {
        "RequestData" => &[
            ("id", 128),
            ("name", 1024),
            ("url", 2048),
            ("responseCode", 1024),
            ("source", 1024),
        ],
        "RemoteDependencyData" => &[
            ("id", 128),
            ("name", 1024),
            ("resultCode", 1024),
            ("data", 8192),
            ("type", 1024),
            ("target", 1024),
        ],
        "MessageData" => &[("message", 32768)],
        "EventData" => &[("name", 512)],
        _ => &[],
    }
}

/// The limit of a context tag.
fn tag_limit(key: &str) -> usize {
    match key {
        "ai.cloud.role"
        | "ai.cloud.roleInstance"
        | "ai.device.osVersion"
        | "ai.device.model"
        | "ai.device.oemName" => 256,
        "ai.device.locale" | "ai.device.type" | "ai.internal.sdkVersion" => 64,
        "ai.operation.id" | "ai.operation.parentId" | "ai.user.id" => 128,
        "ai.location.ip" => 46,
        _ => 1024,
    }
}

fn too_long(field: &str, on: &str, limit: usize, actual: usize) -> String {
    format!(
        "Field '{field}' on type '{on}' is too long. Expected: {limit} characters, Actual: {actual}"
    )
}

fn check(out: &mut Vec<String>, value: &Value, field: &str, on: &str, limit: usize) {
    if let Some(text) = value.as_str() {
        let actual = utf16_len(text);
        if actual > limit {
            out.push(too_long(field, on, limit, actual));
        }
    }
}

/// The string fields the schema requires, by telemetry type: ingestion refuses an item that
/// leaves one out or empty.
fn required_fields(base_type: &str) -> &'static [&'static str] {
    match base_type {
        "RequestData" => &["id", "duration", "responseCode"],
        "RemoteDependencyData" => &["name", "duration"],
        "MessageData" => &["message"],
        "EventData" => &["name"],
        _ => &[],
    }
}

fn missing(field: &str, on: &str) -> String {
    format!(
        "Field '{field}' on type '{on}' is required but missing or empty. Expected: string, Actual: "
    )
}

fn require(out: &mut Vec<String>, value: &Value, field: &str, on: &str) {
    if value.as_str().is_none_or(str::is_empty) {
        out.push(missing(field, on));
    }
}

/// Every way `item` breaks the schema, as ingestion words it: a required field left out or
/// empty, a field over its limit; empty when it keeps them all.
pub fn schema_violations(item: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let base_type = item["data"]["baseType"].as_str().unwrap_or_default();
    let base = &item["data"]["baseData"];
    for field in required_fields(base_type) {
        require(&mut out, &base[*field], field, base_type);
    }
    match base_type {
        "ExceptionData" => {
            if base["exceptions"].as_array().is_none_or(Vec::is_empty) {
                out.push(missing("exceptions", base_type));
            }
            for exception in base["exceptions"].as_array().into_iter().flatten() {
                require(
                    &mut out,
                    &exception["typeName"],
                    "typeName",
                    "ExceptionDetails",
                );
                require(
                    &mut out,
                    &exception["message"],
                    "message",
                    "ExceptionDetails",
                );
                for frame in exception["parsedStack"].as_array().into_iter().flatten() {
                    require(&mut out, &frame["method"], "method", "StackFrame");
                }
            }
        }
        "MetricData" => {
            if base["metrics"].as_array().is_none_or(Vec::is_empty) {
                out.push(missing("metrics", base_type));
            }
            for point in base["metrics"].as_array().into_iter().flatten() {
                require(&mut out, &point["name"], "name", "DataPoint");
            }
        }
        _ => {}
    }
    if let Some(tags) = item["tags"].as_object() {
        for (key, value) in tags {
            check(&mut out, value, key, "ContextTagKeys", tag_limit(key));
        }
    }
    for (field, limit) in field_limits(base_type) {
        check(&mut out, &base[*field], field, base_type, *limit);
    }
    for map in ["properties", "measurements"] {
        if let Some(members) = base[map].as_object() {
            for (key, value) in members {
                if key.trim().is_empty() {
                    out.push(missing(&format!("{map} key"), base_type));
                }
                let actual = utf16_len(key);
                if actual > 150 {
                    out.push(too_long(&format!("{map} key"), base_type, 150, actual));
                }
                check(&mut out, value, map, base_type, 8192);
            }
        }
    }
    if base_type == "ExceptionData" {
        for exception in base["exceptions"].as_array().into_iter().flatten() {
            let on = "ExceptionDetails";
            check(&mut out, &exception["typeName"], "typeName", on, 1024);
            check(&mut out, &exception["message"], "message", on, 32768);
            check(&mut out, &exception["stack"], "stack", on, 32768);
            match &exception["parsedStack"] {
                Value::Null => {}
                Value::Array(frames) => {
                    if frames.len() > 100 {
                        out.push(format!(
                            "Field 'parsedStack' on type '{on}' is too long. Expected: 100 frames, Actual: {}",
                            frames.len()
                        ));
                    }
                    for frame in frames {
                        for (field, limit) in [("method", 1024), ("fileName", 1024), ("assembly", 1024)] {
                            check(&mut out, &frame[field], field, "StackFrame", limit);
                        }
                        if !frame["level"].is_u64() || !frame["method"].is_string() {
                            out.push(format!(
                                "Field 'parsedStack' on type '{on}' is of incorrect type. Expected: StackFrame, Actual: {frame}"
                            ));
                        }
                    }
                }
                other => out.push(format!(
                    "Field 'parsedStack' on type '{on}' is of incorrect type. Expected: array, Actual: {}",
                    json_type(other)
                )),
            }
        }
    }
    out
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Each key that an object in `body` gives more than once, as the index of the item it is in
/// (the element of the top-level array; 0 for a body that is one object) and the key's path
/// (`data.baseData.properties.sku`). `serde_json::Value` keeps one member of a repeated key,
/// so a repeat would pass unseen through [`Recorded::items`]; which one a service keeps is
/// its parser's choice. Empty for a body that is not JSON.
///
/// ```
/// use census_tests::ingestion::repeated_keys;
///
/// let body = br#"[{"data":{"baseData":{"properties":{"a":"1","a":"2"}}}},{"a":1}]"#;
/// assert_eq!(repeated_keys(body), [(0, "data.baseData.properties.a".to_owned())]);
/// ```
pub fn repeated_keys(body: &[u8]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let walk = Walk {
        path: String::new(),
        item: None,
        found: &mut found,
    };
    match serde::de::DeserializeSeed::deserialize(walk, &mut deserializer) {
        Ok(()) => found,
        Err(_) => Vec::new(),
    }
}

/// Walks one JSON value, noting the repeated keys of its objects ([`repeated_keys`]).
struct Walk<'a> {
    /// Where the value is, from its item.
    path: String,
    /// The item it is in; `None` at the top level, whose elements are the items.
    item: Option<usize>,
    found: &'a mut Vec<(usize, String)>,
}

impl Walk<'_> {
    fn at(&mut self, item: Option<usize>, path: String) -> Walk<'_> {
        Walk {
            path,
            item,
            found: self.found,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            // The top level's elements are the items; deeper, an element is where it is.
            let (item, path) = match self.item {
                None => (Some(index), String::new()),
                Some(item) => (Some(item), format!("{}[{index}]", self.path)),
            };
            if seq.next_element_seed(self.at(item, path))?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let item = self.item.unwrap_or(0);
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.push((item, path.clone()));
            }
            map.next_value_seed(self.at(Some(item), path))?;
        }
        Ok(())
    }
}
