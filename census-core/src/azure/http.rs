//! One POST of a batch's body with reqwest, and the client it goes through.
//!
//! The default client: TLS by rustls (the process's default crypto provider when the
//! application installed one, else aws-lc-rs, as reqwest's) with Mozilla's root certificates
//! built in (webpki-roots), so that a container without CA files reaches the endpoint; proxies
//! from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`; no automatic redirects (the
//! delivery follows 307 and 308 itself, so that the new origin is kept for later batches); idle
//! connections kept for the next batch. A client handed in with
//! [`AzureExporterBuilder::http_client`](super::AzureExporterBuilder::http_client) is used as it
//! is.

use std::sync::Arc;
use std::time::Duration;

use super::status::Answer;

/// How much of a response body is read.
const MAX_RESPONSE: usize = 1 << 20;

/// The `User-Agent` of the default client.
const USER_AGENT: &str = concat!("census/", env!("CARGO_PKG_VERSION"));

/// The client census builds when none is handed in.
pub(crate) fn default_client() -> Result<reqwest::Client, reqwest::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|tls| {
            let mut tls = tls.with_root_certificates(roots).with_no_client_auth();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            tls
        });
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90));
    match tls {
        Ok(tls) => builder.tls_backend_preconfigured(tls).build(),
        // A provider of the application's without TLS 1.2 or 1.3: reqwest's own configuration.
        Err(_) => builder.build(),
    }
}

/// Posts bodies to the ingestion endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    gzip: bool,
    /// Where the `Authorization` header comes from, when the resource wants Microsoft Entra ID.
    #[cfg(feature = "azure_identity")]
    bearer: Option<Arc<super::auth::Bearer>>,
}

impl Http {
    /// Posts through `client`; bodies are gzipped (`gzip`) or plain JSON.
    pub(crate) fn new(client: reqwest::Client, gzip: bool) -> Http {
        Http {
            client,
            gzip,
            #[cfg(feature = "azure_identity")]
            bearer: None,
        }
    }

    /// Every request carries a bearer token from `bearer`.
    #[cfg(feature = "azure_identity")]
    pub(crate) fn with_bearer(mut self, bearer: Option<Arc<super::auth::Bearer>>) -> Http {
        self.bearer = bearer;
        self
    }

    /// Posts `body` to `url` within `timeout` (connection included); the answer, its body read
    /// (up to a limit) so that the connection can carry the next batch.
    pub(crate) async fn post(&self, url: &str, body: bytes::Bytes, timeout: Duration) -> Answer {
        let mut request = self
            .client
            .post(url)
            .header("Content-Type", "application/json; charset=utf-8")
            .header("Accept", "application/json")
            .timeout(timeout.max(Duration::from_millis(1)))
            .body(body);
        if self.gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        #[cfg(feature = "azure_identity")]
        if let Some(bearer) = &self.bearer {
            match bearer.header().await {
                Ok(header) => request = request.header(reqwest::header::AUTHORIZATION, header),
                Err(error) => {
                    super::diagnostics::COUNTERS
                        .token_unavailable
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Answer::Failed(error.0);
                }
            }
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Answer::Failed(describe(&error)),
        };
        let status = response.status().as_u16();
        #[cfg(feature = "azure_identity")]
        if let Some(bearer) = &self.bearer
            && (status == 401 || status == 403)
        {
            bearer.refused(status);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
        let location = header("location");
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() < MAX_RESPONSE => body.extend_from_slice(&chunk),
                // Past the limit: the rest is not read (the connection is not kept).
                Ok(Some(_)) => break,
                Ok(None) => break,
                // Only a 206's body matters, and an unreadable one is handled as such.
                Err(_) => break,
            }
        }
        if status != 206 {
            body.clear();
        }
        Answer::Status {
            status,
            retry_after,
            location,
            body,
        }
    }
}

/// The error with its causes (reqwest's own message is often only "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_default_client_builds_with_its_bundled_roots() {
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
        default_client().expect("the default client builds");
    }
}
