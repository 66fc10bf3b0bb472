//! The exporter's HTTP: connections kept from batch to batch, a `reqwest::Client` handed in,
//! proxies (set on that client, or read from the environment), over real HTTP on loopback with
//! a small forward proxy of the test's own.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use census_tests::azure::{install_azure, scratch_dir, settings, spans};
use census_tests::ingestion::IngestionServer;

/// A forward proxy on 127.0.0.1: records the request line of each connection it is asked to
/// open; forwards plain-HTTP requests to a host on 127.0.0.1 and refuses everything else
/// (`CONNECT` included: it answers 403, so that an `https://` endpoint is never reached).
struct ForwardProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound port").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let recorded = Arc::clone(&recorded);
                thread::spawn(move || {
                    let _ = forward(client, &recorded);
                });
            }
        });
        ForwardProxy { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The first request line of every connection made through the proxy.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Serves one client connection of the proxy.
fn forward(client: TcpStream, seen: &Mutex<Vec<String>>) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.trim_end().to_owned();
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(request_line.clone());
    head.push_str(&line);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        head.push_str(&line);
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let upstream = target
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .filter(|authority| authority.starts_with("127.0.0.1:"));
    let mut answer = client.try_clone()?;
    let (Some(authority), false) = (upstream, method == "CONNECT") else {
        answer.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return answer.shutdown(Shutdown::Both);
    };
    let mut server = TcpStream::connect(authority)?;
    // The request goes on as it came, in absolute form, which a server must accept.
    server.write_all(head.as_bytes())?;
    let mut from_server = server.try_clone()?;
    thread::spawn(move || {
        let _ = io::copy(&mut from_server, &mut answer);
        let _ = answer.shutdown(Shutdown::Both);
    });
    let _ = io::copy(&mut reader as &mut dyn Read, &mut server);
    server.shutdown(Shutdown::Both)
}

/// The proxy was asked to open a connection, and only for POSTs to `track`.
fn assert_through(proxy: &ForwardProxy, track: &str) {
    let seen = proxy.seen();
    let post = format!("POST {track} HTTP/1.1");
    assert!(
        !seen.is_empty() && seen.iter().all(|line| *line == post),
        "{seen:?}"
    );
}

#[test]
fn connections_are_kept_from_batch_to_batch() {
    let server = IngestionServer::start().unwrap();
    let census = install_azure(&server, "keep-alive");
    for round in 0..4 {
        spans(&format!("round-{round}"), 3);
        census.flush(Duration::from_secs(10)).unwrap();
    }
    assert_eq!(server.requests().len(), 4, "a batch per flush");
    assert_eq!(server.accepted().len(), 12);
    assert_eq!(
        server.accepted_connections(),
        1,
        "every batch went over the first connection"
    );
}

#[test]
fn a_client_handed_in_is_the_one_used() {
    let server = IngestionServer::start().unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-sent-by", "the-application".parse().unwrap());
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .user_agent("orders-api/1.0")
        .build()
        .expect("a client");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("own-client"))
                .http_client(client)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("own-client", 2);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("x-sent-by"), Some("the-application"));
    assert_eq!(requests[0].header("user-agent"), Some("orders-api/1.0"));
    assert_eq!(requests[0].header("content-encoding"), Some("gzip"));
    assert_eq!(server.accepted().len(), 2);
}

#[test]
fn the_default_client_says_it_is_census() {
    let server = IngestionServer::start().unwrap();
    let census = install_azure(&server, "default-client");
    spans("default-client", 1);
    census.flush(Duration::from_secs(10)).unwrap();
    let requests = server.requests();
    let agent = requests[0].header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("census/"), "{agent}");
}

#[test]
fn a_proxy_set_on_a_client_handed_in_carries_every_request() {
    let server = IngestionServer::start().unwrap();
    let proxy = ForwardProxy::start();
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url()).expect("a proxy URL"))
        .build()
        .expect("a client");
    let census = census_runtime::pipeline()
        .exporter(
            settings(&server, &scratch_dir("client-proxy"))
                .http_client(client)
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("proxied", 3);
    census.flush(Duration::from_secs(10)).unwrap();
    spans("proxied-again", 3);
    census.flush(Duration::from_secs(10)).unwrap();
    let track = format!("http://127.0.0.1:{}/v2.1/track", server.port());
    assert_through(&proxy, &track);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.path == track),
        "every request came through the proxy, in absolute form: {:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(server.accepted().len(), 6);
}

/// Set in the environment of the child process these tests start.
const CHILD_CONNECTION_STRING: &str = "CENSUS_TEST_CHILD_CONNECTION_STRING";

/// In the child process (the same test, started by its parent with proxy variables in its
/// environment): exports two spans with the default client and flushes. The parent asserts.
fn child_exports() -> bool {
    let Ok(connection_string) = std::env::var(CHILD_CONNECTION_STRING) else {
        return false;
    };
    let census = census_runtime::pipeline()
        .exporter(
            census_runtime::azure::AzureExporter::builder()
                .connection_string(connection_string)
                // Its tests count the items spans make: no standard metrics among them.
                .standard_metrics(false)
                .no_storage()
                .timeout(Duration::from_secs(5))
                .send_interval(Duration::from_millis(50))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .unwrap();
    spans("from-child", 2);
    // Through a proxy that refuses, the flush ends with envelopes left: the parent looks at
    // where they went.
    let _ = census.flush(Duration::from_secs(3));
    true
}

/// Runs `test` of this binary again in a child process, with `env` added to its environment.
fn run_child(test: &str, connection_string: &str, env: &[(&str, String)]) {
    // The test's full name in the binary: its module's path without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let test = format!("{module}::{test}");
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["--exact", &test, "--nocapture", "--test-threads", "1"])
        .env(CHILD_CONNECTION_STRING, connection_string);
    for variable in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(variable);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let status = command.status().expect("the child test runs");
    assert!(status.success(), "the child process failed: {status}");
}

#[test]
fn http_proxy_from_the_environment_carries_the_requests() {
    if child_exports() {
        return;
    }
    let server = IngestionServer::start().unwrap();
    let proxy = ForwardProxy::start();
    run_child(
        "http_proxy_from_the_environment_carries_the_requests",
        &server.connection_string(),
        &[("HTTP_PROXY", proxy.url())],
    );
    let track = format!("http://127.0.0.1:{}/v2.1/track", server.port());
    assert_through(&proxy, &track);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path, track,
        "in absolute form: through the proxy"
    );
    assert_eq!(server.accepted().len(), 2);
}

#[test]
fn https_proxy_from_the_environment_is_asked_to_connect_to_an_https_endpoint() {
    if child_exports() {
        return;
    }
    // The endpoint is `https://` on loopback; the proxy refuses the tunnel, so nothing reaches
    // the server (which speaks no TLS anyway): what counts is whom the exporter asked.
    let server = IngestionServer::start().unwrap();
    let proxy = ForwardProxy::start();
    let connection_string = format!(
        "InstrumentationKey={};IngestionEndpoint=https://127.0.0.1:{}/",
        census_tests::ingestion::IKEY,
        server.port()
    );
    run_child(
        "https_proxy_from_the_environment_is_asked_to_connect_to_an_https_endpoint",
        &connection_string,
        &[("HTTPS_PROXY", proxy.url())],
    );
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "the proxy was asked");
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port());
    assert!(seen.iter().all(|line| *line == connect), "{seen:?}");
    assert_eq!(server.accepted_connections(), 0, "never reached directly");
}

#[test]
fn no_proxy_from_the_environment_sends_directly() {
    if child_exports() {
        return;
    }
    let server = IngestionServer::start().unwrap();
    let proxy = ForwardProxy::start();
    run_child(
        "no_proxy_from_the_environment_sends_directly",
        &server.connection_string(),
        &[
            ("HTTP_PROXY", proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
        ],
    );
    assert_eq!(proxy.seen(), Vec::<String>::new(), "the proxy was bypassed");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v2.1/track");
    assert_eq!(server.accepted().len(), 2);
}
