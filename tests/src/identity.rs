//! Microsoft Entra ID token endpoints on 127.0.0.1, speaking the protocols the Azure SDK's
//! credentials use: App Service managed identity (`GET $IDENTITY_ENDPOINT?api-version=2019-08-01
//! &resource=...` with the `X-IDENTITY-HEADER` secret) over HTTP, and the Entra ID token endpoint
//! workload identity posts its federated token to (`POST /{tenant}/oauth2/v2.0/token`), over HTTPS
//! with the test authority's certificate (`fixtures/`), since the SDK refuses any other scheme.
//!
//! Each token handed out is `{prefix}-{n}` (1-based) and lives as long as the server is told.
//!
//! ```
//! use census_tests::identity::TokenServer;
//!
//! let server = TokenServer::managed_identity("secret-header", 3600).unwrap();
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert!(server.requests().is_empty());
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The test authority's certificate, for a client that must trust the HTTPS servers here.
pub const CA_PEM: &[u8] = include_bytes!("../fixtures/loopback-ca.pem");
const CERT_PEM: &[u8] = include_bytes!("../fixtures/loopback-cert.pem");
const KEY_PEM: &[u8] = include_bytes!("../fixtures/loopback-key.pem");

/// One request a token endpoint received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path and query.
    pub target: String,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl TokenRequest {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` in the query or the form body, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?').map_or("", |(_, q)| q);
        [query, self.body.as_str()]
            .into_iter()
            .flat_map(|text| text.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    ManagedIdentity,
    WorkloadIdentity,
}

struct Shared {
    protocol: Protocol,
    secret: String,
    lifetime_secs: u64,
    requests: Mutex<Vec<TokenRequest>>,
}

/// A token endpoint; stops accepting when dropped.
pub struct TokenServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
}

impl TokenServer {
    /// The App Service managed-identity endpoint: answers a request that carries
    /// `X-IDENTITY-HEADER: {secret}` with `{"access_token": "mi-token-N", "expires_on": ...}`;
    /// anything else with 401.
    pub fn managed_identity(secret: &str, lifetime_secs: u64) -> io::Result<TokenServer> {
        Self::start(Protocol::ManagedIdentity, secret, lifetime_secs, None)
    }

    /// The Entra ID token endpoint (HTTPS) for workload identity: answers a client-credentials
    /// request whose `client_assertion` is `federated_token` with
    /// `{"access_token": "wi-token-N", "expires_in": ...}`; anything else with 400, as Entra ID
    /// does.
    pub fn workload_identity(federated_token: &str, lifetime_secs: u64) -> io::Result<TokenServer> {
        let certs = CertificateDer::pem_slice_iter(CERT_PEM)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io::Error::other)?;
        let key = PrivateKeyDer::from_pem_slice(KEY_PEM).map_err(io::Error::other)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
        Self::start(
            Protocol::WorkloadIdentity,
            federated_token,
            lifetime_secs,
            Some(Arc::new(config)),
        )
    }

    fn start(
        protocol: Protocol,
        secret: &str,
        lifetime_secs: u64,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<TokenServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            protocol,
            secret: secret.to_owned(),
            lifetime_secs,
            requests: Mutex::new(Vec::new()),
        });
        let server = TokenServer {
            shared: Arc::clone(&shared),
            addr,
            tls: tls.is_some(),
        };
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                let tls = tls.clone();
                thread::spawn(move || {
                    let _ = match tls {
                        Some(config) => match rustls::ServerConnection::new(config) {
                            Ok(connection) => {
                                serve(rustls::StreamOwned::new(connection, stream), &shared)
                            }
                            Err(error) => Err(io::Error::other(error)),
                        },
                        None => serve(stream, &shared),
                    };
                });
            }
        });
        Ok(server)
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`: the value of `IDENTITY_ENDPOINT`
    /// (managed identity; requests go to this URL itself) or `AZURE_AUTHORITY_HOST` (workload
    /// identity).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn serve(mut stream: impl Read + Write, shared: &Shared) -> io::Result<()> {
    let request = read_request(&mut stream)?;
    let n = {
        let mut requests = shared.requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.push(request.clone());
        requests.iter().filter(|r| grants(shared, r)).count()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (status, body) = match (shared.protocol, grants(shared, &request)) {
        (Protocol::ManagedIdentity, true) => (
            "200 OK",
            format!(
                r#"{{"access_token":"mi-token-{n}","expires_on":"{}","resource":"{}","token_type":"Bearer"}}"#,
                now + shared.lifetime_secs,
                request.param("resource").unwrap_or_default()
            ),
        ),
        (Protocol::WorkloadIdentity, true) => (
            "200 OK",
            format!(
                r#"{{"token_type":"Bearer","expires_in":{0},"ext_expires_in":{0},"access_token":"wi-token-{n}"}}"#,
                shared.lifetime_secs
            ),
        ),
        (Protocol::ManagedIdentity, false) => (
            "401 Unauthorized",
            r#"{"error":"unauthorized","error_description":"X-IDENTITY-HEADER is missing or wrong"}"#
                .to_owned(),
        ),
        (Protocol::WorkloadIdentity, false) => (
            "400 Bad Request",
            r#"{"error":"invalid_client","error_description":"AADSTS700211: the client assertion is not the federated token","error_codes":[700211]}"#
                .to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Whether `request` is one the endpoint answers with a token.
fn grants(shared: &Shared, request: &TokenRequest) -> bool {
    match shared.protocol {
        Protocol::ManagedIdentity => {
            request.method == "GET"
                && request.header("x-identity-header") == Some(shared.secret.as_str())
                && request.param("api-version").as_deref() == Some("2019-08-01")
                && request.param("resource").is_some()
        }
        Protocol::WorkloadIdentity => {
            request.method == "POST"
                && request.target.ends_with("/oauth2/v2.0/token")
                && request.param("grant_type").as_deref() == Some("client_credentials")
                && request.param("client_assertion").as_deref() == Some(shared.secret.as_str())
        }
    }
}

fn read_request(stream: &mut impl Read) -> io::Result<TokenRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(TokenRequest {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
