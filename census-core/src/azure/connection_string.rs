//! The Application Insights connection string: `InstrumentationKey=...;IngestionEndpoint=...`.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use url::{Host, SyntaxViolation, Url};

/// Where telemetry goes when the connection string names no endpoint.
const DEFAULT_INGESTION: &str = "https://dc.services.visualstudio.com";

/// What is wrong with a connection string. Each variant names the bad part; none shows the
/// instrumentation key in full.
///
/// ```
/// use census_runtime::azure::{ConnectionString, ConnectionStringError};
///
/// let error = ConnectionString::parse("InstrumentationKey=;IngestionEndpoint=https://example.com")
///     .unwrap_err();
/// assert!(matches!(error, ConnectionStringError::EmptyValue { .. }));
/// assert_eq!(error.to_string(), "InstrumentationKey in the connection string has an empty value");
/// ```
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
    /// An endpoint that no request could reach: not an `http://` or `https://` URL with a host
    /// that can be looked up, or one carrying what census refuses to send (a user name or
    /// password, a query, a fragment).
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
/// The endpoint is checked as a request would use it (by the WHATWG URL rules, which reqwest
/// and browsers follow, and then DNS's) and kept in the form requested: an international host
/// name in its ASCII form (`bücher.example` becomes `xn--bcher-kva.example`), scheme and host in
/// lowercase, the scheme's default port left out. An endpoint with whitespace, a malformed IPv6
/// or IPv4 address, a port outside 1..=65535, a host name DNS cannot hold, a user name or
/// password (it would be sent with every request and written to logs), a query or a fragment
/// (the endpoint is a base that `/v2.1/track` is appended to) is refused with
/// [`ConnectionStringError::InvalidEndpoint`].
///
/// `Display` and `Debug` never show the instrumentation key in full.
///
/// ```
/// use census_runtime::azure::ConnectionString;
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
///
/// let international = ConnectionString::parse(
///     "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=https://bücher.example/",
/// )?;
/// assert_eq!(international.ingestion_endpoint(), "https://xn--bcher-kva.example");
///
/// let error = ConnectionString::parse(
///     "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://[::1:9/",
/// )
/// .unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "IngestionEndpoint (http://[::1:9/) is not a valid endpoint: its IPv6 address is malformed"
/// );
/// # Ok::<(), census_runtime::azure::ConnectionStringError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub struct ConnectionString {
    instrumentation_key: String,
    /// Where batches go, parsed and normalised.
    endpoint: Endpoint,
    /// The endpoint as text, in its normalised form, without a trailing slash.
    ingestion_endpoint: String,
    /// `AADAudience`: the Microsoft Entra ID audience tokens are asked for, when not the public
    /// cloud's.
    aad_audience: Option<String>,
}

impl ConnectionString {
    /// Parses a connection string; see the type's documentation for the rules.
    ///
    /// ```
    /// use census_runtime::azure::ConnectionString;
    ///
    /// let parsed = ConnectionString::parse(
    ///     "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
    /// )?;
    /// assert_eq!(parsed.instrumentation_key(), "00000000-0000-0000-0000-000000000001");
    /// assert!(ConnectionString::parse("InstrumentationKey=not-a-guid").is_err());
    /// # Ok::<(), census_runtime::azure::ConnectionStringError>(())
    /// ```
    pub fn parse(text: &str) -> Result<ConnectionString, ConnectionStringError> {
        let mut ikey: Option<String> = None;
        let mut ingestion: Option<String> = None;
        let mut suffix: Option<String> = None;
        let mut location: Option<String> = None;
        let mut audience: Option<String> = None;
        fill_slots(
            text,
            &mut [
                ("instrumentationkey", &mut ikey),
                ("ingestionendpoint", &mut ingestion),
                ("endpointsuffix", &mut suffix),
                ("location", &mut location),
                ("aadaudience", &mut audience),
            ],
        )
        .map_err(|error| match error {
            SegmentError::Empty => ConnectionStringError::Empty,
            SegmentError::NotKeyValue { position, segment } => ConnectionStringError::NotKeyValue {
                position,
                preview: redact(segment),
            },
            SegmentError::EmptyValue(key) => ConnectionStringError::EmptyValue {
                key: key.to_owned(),
            },
            SegmentError::Duplicate(key) => ConnectionStringError::Duplicate {
                key: key.to_owned(),
            },
        })?;
        let ikey = ikey.ok_or(ConnectionStringError::MissingInstrumentationKey)?;
        if !is_guid(&ikey) {
            return Err(ConnectionStringError::InvalidInstrumentationKey {
                redacted: redact(&ikey),
            });
        }
        let endpoint = match (ingestion, suffix) {
            (Some(endpoint), _) => Endpoint::parse(&endpoint)
                .map_err(|reason| invalid("IngestionEndpoint", &endpoint, reason))?,
            (None, Some(suffix)) => {
                let suffix = suffix.trim_matches(|c| c == '.' || c == '/');
                let suffix_host = domain_name(suffix)
                    .map_err(|reason| invalid("EndpointSuffix", suffix, reason))?;
                let url = match location {
                    Some(location) => {
                        let location = location.trim_matches('.');
                        let location_host = domain_name(location)
                            .map_err(|reason| invalid("Location", location, reason))?;
                        format!("https://{location_host}.dc.{suffix_host}")
                    }
                    None => format!("https://dc.{suffix_host}"),
                };
                // Both parts are valid names; what they make may still be too long for DNS.
                Endpoint::parse(&url).map_err(|reason| invalid("EndpointSuffix", suffix, reason))?
            }
            (None, None) => Endpoint::parse(DEFAULT_INGESTION)
                .map_err(|reason| invalid("IngestionEndpoint", DEFAULT_INGESTION, reason))?,
        };
        Ok(ConnectionString {
            instrumentation_key: ikey,
            ingestion_endpoint: endpoint.base_url(),
            endpoint,
            aad_audience: audience,
        })
    }

    /// The instrumentation key (`iKey` of every envelope).
    ///
    /// ```
    /// use census_runtime::azure::ConnectionString;
    ///
    /// let parsed = ConnectionString::parse("InstrumentationKey=00000000-0000-0000-0000-000000000001")?;
    /// assert_eq!(parsed.instrumentation_key(), "00000000-0000-0000-0000-000000000001");
    /// # Ok::<(), census_runtime::azure::ConnectionStringError>(())
    /// ```
    pub fn instrumentation_key(&self) -> &str {
        &self.instrumentation_key
    }

    /// The ingestion endpoint, in the form requested (see the type's documentation), without a
    /// trailing slash.
    ///
    /// ```
    /// use census_runtime::azure::ConnectionString;
    ///
    /// let parsed = ConnectionString::parse(
    ///     "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",
    /// )?;
    /// assert_eq!(parsed.ingestion_endpoint(), "https://westeurope-5.in.applicationinsights.azure.com");
    /// # Ok::<(), census_runtime::azure::ConnectionStringError>(())
    /// ```
    pub fn ingestion_endpoint(&self) -> &str {
        &self.ingestion_endpoint
    }

    /// Where batches are posted: `{IngestionEndpoint}/v2.1/track`.
    ///
    /// ```
    /// use census_runtime::azure::ConnectionString;
    ///
    /// // No endpoint named: the global one.
    /// let parsed = ConnectionString::parse("InstrumentationKey=00000000-0000-0000-0000-000000000001")?;
    /// assert_eq!(parsed.track_url(), "https://dc.services.visualstudio.com/v2.1/track");
    /// # Ok::<(), census_runtime::azure::ConnectionStringError>(())
    /// ```
    pub fn track_url(&self) -> String {
        self.endpoint.track_url()
    }

    /// `AADAudience`, when the connection string names one: the audience a Microsoft Entra ID
    /// token is requested for (a sovereign cloud's Azure Monitor). Without it, tokens are
    /// requested for the public cloud's, `https://monitor.azure.com/`.
    ///
    /// ```
    /// use census_runtime::azure::ConnectionString;
    ///
    /// let cs = ConnectionString::parse(
    ///     "InstrumentationKey=00000000-0000-0000-0000-000000000001;\
    ///      AADAudience=https://monitor.azure.us/",
    /// )?;
    /// assert_eq!(cs.aad_audience(), Some("https://monitor.azure.us/"));
    /// # Ok::<(), census_runtime::azure::ConnectionStringError>(())
    /// ```
    pub fn aad_audience(&self) -> Option<&str> {
        self.aad_audience.as_deref()
    }

    /// The endpoint the transport starts from.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// What is wrong with a `;`-separated list of `Key=Value` segments.
pub(crate) enum SegmentError<'a> {
    /// Nothing but whitespace and separators.
    Empty,
    /// A segment (1-based `position`) is not `Key=Value`, or its key is empty.
    NotKeyValue { position: usize, segment: &'a str },
    /// A known key with nothing after its `=`.
    EmptyValue(&'a str),
    /// A known key a second time.
    Duplicate(&'a str),
}

/// Fills `slots` (a lowercase key, where its value goes) from the `Key=Value` segments of
/// `text`, as connection and authentication strings are written: keys in any case, whitespace
/// around segments, keys and values and empty segments tolerated, unknown keys ignored; a known
/// key has a value and appears once.
pub(crate) fn fill_slots<'a>(
    text: &'a str,
    slots: &mut [(&str, &mut Option<String>)],
) -> Result<(), SegmentError<'a>> {
    let mut any = false;
    for (index, segment) in text.split(';').enumerate() {
        let segment = segment.trim();
        if segment.is_empty() {
            continue;
        }
        any = true;
        let (key, value) = match segment.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => (key.trim(), value.trim()),
            _ => {
                return Err(SegmentError::NotKeyValue {
                    position: index + 1,
                    segment,
                });
            }
        };
        let lower = key.to_ascii_lowercase();
        let Some((_, slot)) = slots.iter_mut().find(|(name, _)| *name == lower) else {
            continue;
        };
        if value.is_empty() {
            return Err(SegmentError::EmptyValue(key));
        }
        if slot.is_some() {
            return Err(SegmentError::Duplicate(key));
        }
        **slot = Some(value.to_owned());
    }
    if any {
        Ok(())
    } else {
        Err(SegmentError::Empty)
    }
}

fn invalid(key: &'static str, value: &str, reason: &'static str) -> ConnectionStringError {
    ConnectionStringError::InvalidEndpoint {
        key,
        value: value.to_owned(),
        reason,
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

/// The ASCII form of a domain name given on its own (`EndpointSuffix`, `Location`), checked by
/// the same rules as an endpoint's host name.
fn domain_name(text: &str) -> Result<String, &'static str> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(WHITESPACE);
    }
    // Other than letters in any script, which IDNA turns into ASCII: what no label may hold
    // (`:`, `/`, `@` would make the derived URL another one).
    if text
        .bytes()
        .any(|b| b.is_ascii() && !(b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        return Err(NAME_CHARACTER);
    }
    match Host::parse(text) {
        Ok(Host::Domain(domain)) => {
            check_dns_name(&domain)?;
            Ok(domain)
        }
        Ok(Host::Ipv4(_) | Host::Ipv6(_)) => Err("it is an IP address, not a domain name"),
        Err(error) => Err(parse_error_reason(error)),
    }
}

/// What DNS accepts beyond what the WHATWG rules do: labels of letters, digits, hyphens and
/// underscores, none empty (but for a final dot), none longer than 63 characters, the whole no
/// longer than 253. A name outside these rules is never found, so no request would ever go.
fn check_dns_name(domain: &str) -> Result<(), &'static str> {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.len() > 253 {
        return Err("its host name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("its host name has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Err("its host name has a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NAME_CHARACTER);
        }
    }
    Ok(())
}

/// Why the WHATWG parser refused a URL or a host, in the words of an endpoint's error.
fn parse_error_reason(error: url::ParseError) -> &'static str {
    use url::ParseError as E;
    match error {
        E::EmptyHost => "it has no host",
        E::IdnaError => "its host name is not a valid domain name (IDNA)",
        E::InvalidPort => PORT,
        E::InvalidIpv4Address => "its IPv4 address is malformed",
        E::InvalidIpv6Address => "its IPv6 address is malformed",
        E::InvalidDomainCharacter => "its host name has a character a host name cannot hold",
        _ => "it is not a URL",
    }
}

/// Why an endpoint with a syntax the WHATWG parser would repair is refused: what it repairs is
/// a typo, and the repaired URL would not be the one written.
fn violation_reason(violation: SyntaxViolation) -> &'static str {
    match violation {
        SyntaxViolation::Backslash => "it has a backslash where a URL has a slash",
        SyntaxViolation::EmbeddedCredentials | SyntaxViolation::UnencodedAtSign => CREDENTIALS,
        SyntaxViolation::ExpectedDoubleSlash => NOT_HTTP,
        SyntaxViolation::PercentDecode => "it has a % not followed by two hex digits",
        SyntaxViolation::NonUrlCodePoint => "it has a character a URL cannot hold",
        _ => "it is not a well-formed URL",
    }
}

const NOT_HTTP: &str = "it does not start with http:// or https://";
const NAME_CHARACTER: &str =
    "its host name has a character other than letters, digits, hyphens and underscores";
const WHITESPACE: &str = "it contains whitespace or control characters";
const PORT: &str = "its port is not a number from 1 to 65535";
const CREDENTIALS: &str = "it carries a user name or password, which would be sent with every request and written to logs; an endpoint takes neither";

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
    /// Parses an absolute `http(s)://host[:port][/path]` URL that a request can go to, into its
    /// normalised parts; the reason names what is wrong. See [`ConnectionString`] for the rules.
    pub(crate) fn parse(text: &str) -> Result<Endpoint, &'static str> {
        // The WHATWG parser drops tabs and newlines anywhere and spaces at the ends: a value
        // with any is refused rather than requested as something other than what was written.
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WHITESPACE);
        }
        let (scheme, rest) = text.split_once("://").ok_or(NOT_HTTP)?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(NOT_HTTP);
        }
        // The parser would read `http:///x` as the host `x`.
        if rest.is_empty() || rest.starts_with(['/', '\\', '?', '#']) {
            return Err("it has no host");
        }
        // The parser decodes `%2F` in a host name into a `/` and then reports an IDNA error;
        // no host name needs an escape, so it is refused by name.
        let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or(rest);
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.contains('%') && !host.starts_with('[') {
            return Err("its host name has a %-escape, which no host name needs");
        }
        let violation = Cell::new(None);
        let report = |v| {
            if violation.get().is_none() {
                violation.set(Some(v));
            }
        };
        let url = Url::options()
            .syntax_violation_callback(Some(&report))
            .parse(text)
            .map_err(parse_error_reason)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CREDENTIALS);
        }
        if let Some(violation) = violation.get() {
            return Err(violation_reason(violation));
        }
        if url.query().is_some() {
            return Err(
                "it has a query (?...), which cannot stay at the end once /v2.1/track is appended",
            );
        }
        if url.fragment().is_some() {
            return Err("it has a fragment (#...), which is never sent");
        }
        match url.host() {
            Some(Host::Domain(domain)) => check_dns_name(domain)?,
            Some(Host::Ipv4(_) | Host::Ipv6(_)) => {}
            None => return Err("it has no host"),
        }
        let host = url.host_str().ok_or("it has no host")?;
        let authority = match url.port() {
            Some(0) => return Err(PORT),
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Endpoint {
            scheme: url.scheme().to_owned(),
            authority,
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `{scheme}://{authority}{path}`: the endpoint as text, without a trailing slash.
    pub(crate) fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.path)
    }

    /// `{scheme}://{authority}{path}/v2.1/track`, with the slashes normalised.
    pub(crate) fn track_url(&self) -> String {
        format!(
            "{}://{}{}/v2.1/track",
            self.scheme, self.authority, self.path
        )
    }

    /// This endpoint with the origin (scheme and authority) of `location`, an absolute URL whose
    /// query and fragment, if any, are not kept.
    pub(crate) fn redirected(&self, location: &str) -> Option<Endpoint> {
        let target = Endpoint::parse(location.split(['?', '#']).next()?).ok()?;
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
    fn endpoints_are_kept_in_the_form_requested() {
        let cases = [
            // (as written, as requested)
            ("http://bücher.example/", "http://xn--bcher-kva.example"),
            (
                "HTTPS://Ingest.Example:443/Base/",
                "https://ingest.example/Base",
            ),
            ("http://[::1]:9/", "http://[::1]:9"),
            ("http://[::FFFF:1.2.3.4]/", "http://[::ffff:102:304]"),
            ("http://127.1:9", "http://127.0.0.1:9"),
            ("http://localhost:9//", "http://localhost:9"),
            ("http://host.example./", "http://host.example."),
            (
                "https://host.example:/v2/../base",
                "https://host.example/base",
            ),
            ("http://in_cluster-2:8080", "http://in_cluster-2:8080"),
        ];
        for (written, requested) in cases {
            let endpoint = Endpoint::parse(written).unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(endpoint.base_url(), requested, "{written}");
        }
    }

    #[test]
    fn endpoints_no_request_could_reach_are_refused_with_the_reason() {
        let cases = [
            // (endpoint, a word of the reason)
            ("http://[::1:9/", "IPv6"),
            ("http://[::1]x/", "IPv6"),
            ("http://[::g]/", "IPv6"),
            ("http://999.0.0.1/", "IPv4"),
            ("http://127.0 .0.1:9/", "whitespace"),
            ("http://ho\tst.example/", "whitespace"),
            ("http://host.example/a b", "whitespace"),
            ("http://host.example:65536/", "port"),
            ("http://host.example:0/", "port"),
            ("http://host.example:x/", "port"),
            ("http://user:pw@host.example/", "password"),
            ("http://user@host.example/", "password"),
            ("http://@host.example/", "password"),
            ("https://host.example/?code=1", "query"),
            ("https://host.example/#top", "fragment"),
            ("http://", "no host"),
            ("http:///v2", "no host"),
            ("http://:9/", "no host"),
            ("http:host.example", "http://"),
            ("ftp://host.example", "http://"),
            ("host.example", "http://"),
            ("http://host.example\\base", "backslash"),
            ("http://a..b.example/", "empty label"),
            ("http://.example/", "empty label"),
            ("http://a*b.example/", "character"),
            ("http://host%2Fx.example/", "%"),
            ("http://xn--a.example/", "IDNA"),
            ("http://host.example/a%zz", "%"),
            ("http://host.example/a^b", "character"),
        ];
        for (endpoint, word) in cases {
            match Endpoint::parse(endpoint) {
                Ok(parsed) => panic!("{endpoint:?} parsed as {}", parsed.base_url()),
                Err(reason) => assert!(reason.contains(word), "{endpoint:?}: {reason:?}"),
            }
        }
        let long_label = format!("http://{}.example/", "a".repeat(64));
        assert!(Endpoint::parse(&long_label).unwrap_err().contains("63"));
        let long_name = format!("http://{}example/", "a.".repeat(124));
        assert!(Endpoint::parse(&long_name).unwrap_err().contains("253"));
    }

    #[test]
    fn suffixes_and_locations_are_domain_names() {
        assert_eq!(
            domain_name("bücher.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
        assert_eq!(domain_name("WestEurope").as_deref(), Ok("westeurope"));
        for (name, word) in [
            ("ai..example", "empty label"),
            ("ai.example:443", "character"),
            ("ai.example/x", "character"),
            ("user@ai.example", "character"),
            ("127.0.0.1", "IP address"),
            ("west europe", "whitespace"),
            ("xn--a", "IDNA"),
        ] {
            let reason = domain_name(name).unwrap_err();
            assert!(reason.contains(word), "{name:?}: {reason:?}");
        }
    }

    #[test]
    fn redaction_hides_most() {
        assert_eq!(redact("00000000-0000-0000-0000-000000000001"), "0000…");
        assert_eq!(redact("short"), "…");
    }
}
