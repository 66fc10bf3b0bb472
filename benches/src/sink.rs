//! A loopback Application Insights ingestion endpoint for benchmarks: HTTP/1.1 with keep-alive
//! on 127.0.0.1, counting the envelopes it receives (gzipped or not) and answering `200` with
//! the body the service sends, or never answering at all (a stalled endpoint).
//!
//! Unlike the test suite's ingestion server it keeps nothing of what it receives, so that it
//! can take millions of envelopes in a bounded footprint and cost the measured exporters as
//! little CPU as possible.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;

/// How the sink treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Reads it, counts its envelopes and answers `200`, every item accepted.
    Answer,
    /// Reads it and never answers, keeping the connection open.
    Stall,
}

#[derive(Default)]
struct Shared {
    envelopes: AtomicU64,
    requests: AtomicU64,
    stopping: AtomicBool,
    /// Signalled whenever `envelopes` grows.
    grew: Condvar,
    lock: Mutex<()>,
}

/// The sink; stops accepting when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Sink {
    /// Starts on a free port of 127.0.0.1.
    pub fn start(behaviour: Behaviour) -> io::Result<Sink> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("bench-sink".into())
                .spawn(move || accept_loop(listener, behaviour, shared))?
        };
        Ok(Sink {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The connection string that points an exporter here.
    pub fn connection_string(&self) -> String {
        format!(
            "InstrumentationKey={};IngestionEndpoint=http://{}/",
            crate::IKEY,
            self.addr
        )
    }

    /// `opentelemetry-application-insights`'s exporter, pointed here, posting through
    /// [`UreqClient`](crate::UreqClient): the peers' way to Application Insights.
    pub fn appinsights_exporter(
        &self,
    ) -> opentelemetry_application_insights::Exporter<crate::UreqClient> {
        opentelemetry_application_insights::Exporter::new_from_connection_string(
            self.connection_string(),
            crate::UreqClient::default(),
        )
        .expect("the sink's connection string is valid")
    }

    /// Envelopes received so far.
    pub fn envelopes(&self) -> u64 {
        self.shared.envelopes.load(Ordering::Acquire)
    }

    /// Requests received so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Acquire)
    }

    /// Waits until at least `count` envelopes have arrived; `false` on timeout.
    pub fn wait_for(&self, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.envelopes() >= count {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .shared
                .grew
                .wait_timeout(guard, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, behaviour: Behaviour, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name("bench-sink-conn".into())
            .spawn(move || {
                let _ = serve(stream, behaviour, &shared);
            });
    }
}

/// Serves one connection, request after request.
fn serve(stream: TcpStream, behaviour: Behaviour, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut body = Vec::new();
    let mut plain = Vec::new();
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        body.clear();
        if head.chunked {
            read_chunked(&mut reader, &mut body)?;
        } else {
            body.resize(head.content_length, 0);
            reader.read_exact(&mut body)?;
        }
        shared.requests.fetch_add(1, Ordering::AcqRel);
        if behaviour == Behaviour::Stall || shared.stopping.load(Ordering::Acquire) {
            continue;
        }
        let text = if head.gzip {
            plain.clear();
            GzDecoder::new(&body[..]).read_to_end(&mut plain)?;
            &plain
        } else {
            &body
        };
        let items = count_envelopes(text);
        let answer = format!(
            "{{\"itemsReceived\":{items},\"itemsAccepted\":{items},\"appId\":null,\"errors\":[]}}"
        );
        // One write, one segment: formatting straight into the socket would send each piece of
        // the response on its own.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        writer.write_all(response.as_bytes())?;
        shared.envelopes.fetch_add(items, Ordering::AcqRel);
        let _guard = shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        shared.grew.notify_all();
    }
}

struct Head {
    content_length: usize,
    chunked: bool,
    gzip: bool,
}

/// Reads a request line and headers; `None` when the client closed the connection.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    let mut head = Head {
        content_length: 0,
        chunked: false,
        gzip: false,
    };
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let trimmed = line.trim_end();
        if first {
            first = false;
            continue;
        }
        if trimmed.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.gzip = value.eq_ignore_ascii_case("gzip");
        }
    }
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("0");
        let size = usize::from_str_radix(size, 16)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

/// Envelopes in a body: each has exactly one `"iKey"` member, whichever exporter wrote it.
pub fn count_envelopes(text: &[u8]) -> u64 {
    memchr::memmem::find_iter(text, b"\"iKey\"").count() as u64
}
