//! The Application Insights connection string: `InstrumentationKey=...;IngestionEndpoint=...`.

use std::fmt;
use std::str::FromStr;

/// Where telemetry goes when the connection string names no endpoint.
const DEFAULT_INGESTION: &str = "https://dc.services.visualstudio.com";

/// What is wrong with a connection string. Each variant names the bad part; none shows the
/// instrumentation key in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub enum ConnectionStringError {
    /// Nothing but whitespace and separators.
    #[error("the connection string is empty")]
    Empty,
    /// A segment is not `Key=Value`.
    #[error("segment {position} of the connection string ({preview}) is not Key=Value")]
    NotKeyValue {
        /// 1-based position of the segment among the `;`-separated ones.
        position: usize,
        /// The segment's first characters, shortened so that a pasted key is not shown whole.
        preview: String,
    },
    /// A key has nothing after its `=`.
    #[error("{key} in the connection string has an empty value")]
    EmptyValue {
        /// The key, as written.
        key: String,
    },
    /// A key appears twice.
    #[error("{key} appears more than once in the connection string")]
    Duplicate {
        /// The key, as written the second time.
        key: String,
    },
    /// There is no `InstrumentationKey`.
    #[error("the connection string has no InstrumentationKey")]
    MissingInstrumentationKey,
    /// The instrumentation key is not a GUID.
    #[error(
        "InstrumentationKey ({redacted}) is not a GUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    )]
    InvalidInstrumentationKey {
        /// The key, redacted.
        redacted: String,
    },
    /// An endpoint is not an `http://` or `https://` URL with a host.
    #[error("{key} ({value}) is not a valid endpoint: {reason}")]
    InvalidEndpoint {
        /// `IngestionEndpoint`, `EndpointSuffix` or `Location`.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A parsed Application Insights connection string.
///
/// Keys are case-insensitive; whitespace around segments, keys and values and empty segments are
/// tolerated; unknown keys (`ApplicationId`, `LiveEndpoint`, ...) are ignored. The endpoint is
/// `IngestionEndpoint` when given, else derived from `EndpointSuffix` and `Location`
/// (`https://{Location}.dc.{EndpointSuffix}`), else the global default.
///
/// `Display` and `Debug` never show the instrumentation key in full.
///
/// ```
/// use census_runtime::ConnectionString;
///
/// let cs: ConnectionString = "InstrumentationKey=00000000-0000-0000-0000-000000000001;\
///     IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/"
///     .parse()?;
/// assert_eq!(cs.instrumentation_key(), "00000000-0000-0000-0000-000000000001");
/// assert_eq!(cs.track_url(), "https://westeurope-5.in.applicationinsights.azure.com/v2.1/track");
/// assert!(!cs.to_string().contains("000000000001"));
///
/// let derived = ConnectionString::parse(
///     "instrumentationkey=00000000-0000-0000-0000-000000000001; EndpointSuffix=applicationinsights.azure.cn; Location=chinaeast2",
/// )?;
/// assert_eq!(derived.ingestion_endpoint(), "https://chinaeast2.dc.applicationinsights.azure.cn");
/// # Ok::<(), census_runtime::ConnectionStringError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub struct ConnectionString {
    instrumentation_key: String,
    ingestion_endpoint: String,
}

impl ConnectionString {
    /// Parses a connection string; see the type's documentation for the rules.
    pub fn parse(text: &str) -> Result<ConnectionString, ConnectionStringError> {
        let mut ikey: Option<String> = None;
        let mut ingestion: Option<String> = None;
        let mut suffix: Option<String> = None;
        let mut location: Option<String> = None;
        let mut any = false;
        for (index, segment) in text.split(';').enumerate() {
            let segment = segment.trim();
            if segment.is_empty() {
                continue;
            }
            any = true;
            let Some((key, value)) = segment.split_once('=') else {
                return Err(ConnectionStringError::NotKeyValue {
                    position: index + 1,
                    preview: redact(segment),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(ConnectionStringError::NotKeyValue {
                    position: index + 1,
                    preview: redact(segment),
                });
            }
            let slot = match key.to_ascii_lowercase().as_str() {
                "instrumentationkey" => &mut ikey,
                "ingestionendpoint" => &mut ingestion,
                "endpointsuffix" => &mut suffix,
                "location" => &mut location,
                _ => continue,
            };
            if value.is_empty() {
                return Err(ConnectionStringError::EmptyValue {
                    key: key.to_owned(),
                });
            }
            if slot.is_some() {
                return Err(ConnectionStringError::Duplicate {
                    key: key.to_owned(),
                });
            }
            *slot = Some(value.to_owned());
        }
        if !any {
            return Err(ConnectionStringError::Empty);
        }
        let ikey = ikey.ok_or(ConnectionStringError::MissingInstrumentationKey)?;
        if !is_guid(&ikey) {
            return Err(ConnectionStringError::InvalidInstrumentationKey {
                redacted: redact(&ikey),
            });
        }
        let ingestion_endpoint = match (ingestion, suffix) {
            (Some(endpoint), _) => {
                Endpoint::parse(&endpoint).map_err(|reason| {
                    ConnectionStringError::InvalidEndpoint {
                        key: "IngestionEndpoint",
                        value: endpoint.clone(),
                        reason,
                    }
                })?;
                endpoint.trim_end_matches('/').to_owned()
            }
            (None, Some(suffix)) => {
                let suffix = suffix.trim_matches(|c| c == '.' || c == '/');
                if !is_host(suffix) {
                    return Err(ConnectionStringError::InvalidEndpoint {
                        key: "EndpointSuffix",
                        value: suffix.to_owned(),
                        reason: "not a domain name",
                    });
                }
                match location {
                    Some(location) => {
                        let location = location.trim_matches('.');
                        if !is_host(location) {
                            return Err(ConnectionStringError::InvalidEndpoint {
                                key: "Location",
                                value: location.to_owned(),
                                reason: "not a domain label",
                            });
                        }
                        format!("https://{location}.dc.{suffix}")
                    }
                    None => format!("https://dc.{suffix}"),
                }
            }
            (None, None) => DEFAULT_INGESTION.to_owned(),
        };
        Ok(ConnectionString {
            instrumentation_key: ikey,
            ingestion_endpoint,
        })
    }

    /// The instrumentation key (`iKey` of every envelope).
    pub fn instrumentation_key(&self) -> &str {
        &self.instrumentation_key
    }

    /// The ingestion endpoint, without a trailing slash.
    pub fn ingestion_endpoint(&self) -> &str {
        &self.ingestion_endpoint
    }

    /// Where batches are posted: `{IngestionEndpoint}/v2.1/track`.
    pub fn track_url(&self) -> String {
        format!("{}/v2.1/track", self.ingestion_endpoint)
    }
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ConnectionString::parse(text)
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InstrumentationKey={};IngestionEndpoint={}",
            redact(&self.instrumentation_key),
            self.ingestion_endpoint
        )
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("instrumentation_key", &redact(&self.instrumentation_key))
            .field("ingestion_endpoint", &self.ingestion_endpoint)
            .finish()
    }
}

/// The first characters of a secret, enough to tell two apart, never the whole.
pub(crate) fn redact(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    if secret.chars().count() <= 8 {
        "…".to_owned()
    } else {
        format!("{shown}…")
    }
}

fn is_guid(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An HTTP origin and base path: where requests go, and what a redirect replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `http` or `https`.
    pub(crate) scheme: String,
    /// `host[:port]`.
    pub(crate) authority: String,
    /// The base path, without a trailing slash (often empty).
    pub(crate) path: String,
}

impl Endpoint {
    /// Parses an absolute `http(s)://host[:port][/path]` URL.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, &'static str> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("it does not start with http:// or https://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err("it does not start with http:// or https://");
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err("it carries credentials");
        }
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                if !port.is_empty() && port.parse::<u16>().is_err() {
                    return Err("its port is not a number");
                }
                host
            }
            _ => authority,
        };
        if host.is_empty() {
            return Err("it has no host");
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        Ok(Endpoint {
            scheme,
            authority: authority.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `{scheme}://{authority}{path}/v2.1/track`, with the slashes normalised.
    pub(crate) fn track_url(&self) -> String {
        format!(
            "{}://{}{}/v2.1/track",
            self.scheme, self.authority, self.path
        )
    }

    /// This endpoint with the origin (scheme and authority) of `location`, an absolute URL.
    pub(crate) fn redirected(&self, location: &str) -> Option<Endpoint> {
        let target = Endpoint::parse(location).ok()?;
        Some(Endpoint {
            scheme: target.scheme,
            authority: target.authority,
            path: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parts() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(e.track_url(), "http://127.0.0.1:8080/v2.1/track");
        let e = Endpoint::parse("https://x.example/base//").unwrap();
        assert_eq!(e.track_url(), "https://x.example/base/v2.1/track");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:80").is_err());
        assert!(Endpoint::parse("http://h:port").is_err());
        let moved = e.redirected("http://127.0.0.1:9/elsewhere?x").unwrap();
        assert_eq!(moved.track_url(), "http://127.0.0.1:9/v2.1/track");
    }

    #[test]
    fn redaction_hides_most() {
        assert_eq!(redact("00000000-0000-0000-0000-000000000001"), "0000…");
        assert_eq!(redact("short"), "…");
    }
}
