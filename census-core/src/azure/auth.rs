//! Microsoft Entra ID sign-in: a bearer token from a credential of the Azure SDK for Rust,
//! cached, refreshed before it expires and dropped when ingestion refuses it.
//!
//! Resources that disable local authentication accept telemetry only with
//! `Authorization: Bearer <token>` for the scope `{AADAudience}/.default`
//! (`https://monitor.azure.com//.default` in the public cloud). The token lives in memory only:
//! it is never written to local storage (which holds envelopes, not requests) nor shown by any
//! `Debug` or log line.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use azure_core::credentials::TokenCredential;
use azure_core::time::{Duration, OffsetDateTime};
use reqwest::header::HeaderValue;

use super::connection_string::{SegmentError, fill_slots};
use super::diagnostics::COUNTERS;

/// Whether a refused token was reported through `log` already (once per process).
static REFUSAL_REPORTED: AtomicBool = AtomicBool::new(false);

/// The audience tokens are asked for when the connection string names none.
const PUBLIC_AUDIENCE: &str = "https://monitor.azure.com/";

/// A token that expires sooner than this is refreshed before it is used again.
const REFRESH_MARGIN: Duration = Duration::minutes(5);

/// A token this close to its expiry is not sent even when no new one can be had.
const LAST_USE_MARGIN: Duration = Duration::seconds(30);

/// The scope a token is requested for: the audience with `/.default` appended, as every Azure
/// Monitor exporter forms it (`https://monitor.azure.com/` gives `https://monitor.azure.com//.default`).
pub(crate) fn scope(audience: Option<&str>) -> String {
    format!("{}/.default", audience.unwrap_or(PUBLIC_AUDIENCE))
}

/// What is wrong with an authentication string. Each variant names the bad part.
///
/// ```
/// use census_runtime::azure::{AuthenticationString, AuthenticationStringError};
///
/// let error = AuthenticationString::parse("ClientId=00000000-0000-0000-0000-0000000000aa").unwrap_err();
/// assert!(matches!(error, AuthenticationStringError::MissingAuthorization));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "azure_identity")))]
pub enum AuthenticationStringError {
    /// Nothing but whitespace and separators.
    #[error("the authentication string is empty")]
    Empty,
    /// A segment is not `Key=Value`.
    #[error("segment {position} of the authentication string is not Key=Value")]
    NotKeyValue {
        /// 1-based position of the segment among the `;`-separated ones.
        position: usize,
    },
    /// A key has nothing after its `=`.
    #[error("{key} in the authentication string has an empty value")]
    EmptyValue {
        /// The key, as written.
        key: String,
    },
    /// A key appears twice.
    #[error("{key} appears more than once in the authentication string")]
    Duplicate {
        /// The key, as written the second time.
        key: String,
    },
    /// There is no `Authorization` key.
    #[error("the authentication string has no Authorization (expected Authorization=AAD)")]
    MissingAuthorization,
    /// `Authorization` names something other than `AAD`.
    #[error("Authorization={value} in the authentication string is not supported (expected AAD)")]
    UnsupportedAuthorization {
        /// The value given.
        value: String,
    },
}

/// The sign-in the Azure Monitor distributions read from
/// `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`: `Authorization=AAD` for the resource's
/// system-assigned managed identity, `Authorization=AAD;ClientId=<client id>` for a
/// user-assigned one.
///
/// Keys are case-insensitive; whitespace and empty segments are tolerated; unknown keys are
/// ignored, as in a connection string.
///
/// ```
/// use census_runtime::azure::AuthenticationString;
///
/// let system = AuthenticationString::parse("Authorization=AAD")?;
/// assert_eq!(system.client_id(), None);
///
/// let user = AuthenticationString::parse(
///     "Authorization=AAD;ClientId=00000000-0000-0000-0000-0000000000aa",
/// )?;
/// assert_eq!(user.client_id(), Some("00000000-0000-0000-0000-0000000000aa"));
///
/// let error = AuthenticationString::parse("Authorization=Basic").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "Authorization=Basic in the authentication string is not supported (expected AAD)"
/// );
/// # Ok::<(), census_runtime::azure::AuthenticationStringError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "azure_identity")))]
pub struct AuthenticationString {
    client_id: Option<String>,
}

impl AuthenticationString {
    /// Parses an authentication string; see the type's documentation for the rules.
    ///
    /// ```
    /// use census_runtime::azure::AuthenticationString;
    ///
    /// // Keys are case-insensitive, and a trailing `;` is tolerated.
    /// let parsed = AuthenticationString::parse("authorization=AAD;")?;
    /// assert_eq!(parsed.client_id(), None);
    /// # Ok::<(), census_runtime::azure::AuthenticationStringError>(())
    /// ```
    pub fn parse(text: &str) -> Result<AuthenticationString, AuthenticationStringError> {
        let mut authorization: Option<String> = None;
        let mut client_id: Option<String> = None;
        fill_slots(
            text,
            &mut [
                ("authorization", &mut authorization),
                ("clientid", &mut client_id),
            ],
        )
        .map_err(|error| match error {
            SegmentError::Empty => AuthenticationStringError::Empty,
            SegmentError::NotKeyValue { position, .. } => {
                AuthenticationStringError::NotKeyValue { position }
            }
            SegmentError::EmptyValue(key) => AuthenticationStringError::EmptyValue {
                key: key.to_owned(),
            },
            SegmentError::Duplicate(key) => AuthenticationStringError::Duplicate {
                key: key.to_owned(),
            },
        })?;
        match authorization {
            None => Err(AuthenticationStringError::MissingAuthorization),
            Some(value) if !value.eq_ignore_ascii_case("aad") => {
                Err(AuthenticationStringError::UnsupportedAuthorization { value })
            }
            Some(_) => Ok(AuthenticationString { client_id }),
        }
    }

    /// The user-assigned managed identity's client id, when the string names one.
    ///
    /// ```
    /// use census_runtime::azure::AuthenticationString;
    ///
    /// let parsed =
    ///     AuthenticationString::parse("Authorization=AAD;ClientId=00000000-0000-0000-0000-0000000000aa")?;
    /// assert_eq!(parsed.client_id(), Some("00000000-0000-0000-0000-0000000000aa"));
    /// # Ok::<(), census_runtime::azure::AuthenticationStringError>(())
    /// ```
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
}

impl std::str::FromStr for AuthenticationString {
    type Err = AuthenticationStringError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AuthenticationString::parse(text)
    }
}

/// Why no token could be had.
#[derive(Debug, Clone)]
pub(crate) struct TokenError(pub(crate) String);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token, as the header that carries it.
#[derive(Clone)]
struct Cached {
    header: HeaderValue,
    expires_on: OffsetDateTime,
}

/// The transport's source of `Authorization` headers: one credential, one scope, the last token.
pub(crate) struct Bearer {
    credential: Arc<dyn TokenCredential>,
    scope: String,
    cached: Mutex<Option<Cached>>,
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Bearer {
    /// Tokens from `credential` for the audience a connection string names (the public cloud's
    /// when `None`).
    pub(crate) fn new(credential: Arc<dyn TokenCredential>, audience: Option<&str>) -> Bearer {
        Bearer {
            credential,
            scope: scope(audience),
            cached: Mutex::new(None),
        }
    }

    /// The scope tokens are requested for.
    #[cfg(test)]
    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }

    fn cached(&self) -> Option<Cached> {
        self.cached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `Authorization` header for the next request: the cached token while it has more
    /// than five minutes to live, else a new one from the credential. When the credential
    /// fails, a cached token that is still valid for a while is used rather than nothing.
    pub(crate) async fn header(&self) -> Result<HeaderValue, TokenError> {
        let now = OffsetDateTime::now_utc();
        let cached = self.cached();
        if let Some(cached) = &cached
            && cached.expires_on > now + REFRESH_MARGIN
        {
            return Ok(cached.header.clone());
        }
        match self.credential.get_token(&[&self.scope], None).await {
            Ok(token) => {
                let mut header = HeaderValue::try_from(format!("Bearer {}", token.token.secret()))
                    .map_err(|_| {
                        TokenError("the credential returned a token that is not header text".into())
                    })?;
                header.set_sensitive(true);
                *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
                    header: header.clone(),
                    expires_on: token.expires_on,
                });
                Ok(header)
            }
            Err(error) => match cached {
                Some(cached) if cached.expires_on > now + LAST_USE_MARGIN => Ok(cached.header),
                _ => Err(TokenError(format!(
                    "no Microsoft Entra ID token for {}: {error}",
                    self.scope
                ))),
            },
        }
    }

    /// Ingestion refused the last token (`status` 401 or 403): it is not sent again; the next
    /// request asks the credential anew. Counted, and said through `log` the first time.
    pub(crate) fn refused(&self, status: u16) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
        COUNTERS.token_refused.fetch_add(1, Ordering::Relaxed);
        if !REFUSAL_REPORTED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "census: Application Insights refused the Microsoft Entra ID token ({status}): the \
                 credential's identity needs the Monitoring Metrics Publisher role on the resource; \
                 a new token is asked for and the batch sent again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use azure_core::credentials::{AccessToken, TokenRequestOptions};

    use super::*;

    /// A credential that hands out `token-1`, `token-2`, ... living `lifetime` each, or fails
    /// once `fail_after` tokens were given.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: Duration,
        fail_after: usize,
        scopes: Mutex<Vec<String>>,
    }

    impl Counting {
        fn new(lifetime: Duration, fail_after: usize) -> Arc<Counting> {
            Arc::new(Counting {
                calls: AtomicUsize::new(0),
                lifetime,
                fail_after,
                scopes: Mutex::new(Vec::new()),
            })
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.scopes
                .lock()
                .unwrap()
                .extend(scopes.iter().map(|s| s.to_string()));
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n > self.fail_after {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "the token endpoint is down",
                ));
            }
            Ok(AccessToken::new(
                format!("token-{n}"),
                OffsetDateTime::now_utc() + self.lifetime,
            ))
        }
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn the_scope_is_the_audience_with_default_appended_as_the_other_exporters_form_it() {
        assert_eq!(scope(None), "https://monitor.azure.com//.default");
        assert_eq!(
            scope(Some("https://monitor.azure.us/")),
            "https://monitor.azure.us//.default"
        );
        let credential = Counting::new(Duration::hours(1), usize::MAX);
        let bearer = Bearer::new(credential.clone(), Some("https://monitor.azure.cn/"));
        run(bearer.header()).unwrap();
        assert_eq!(bearer.scope(), "https://monitor.azure.cn//.default");
        assert_eq!(
            *credential.scopes.lock().unwrap(),
            ["https://monitor.azure.cn//.default"]
        );
    }

    #[test]
    fn a_token_is_asked_for_once_while_it_lives_and_is_sent_as_a_sensitive_bearer_header() {
        let credential = Counting::new(Duration::hours(1), usize::MAX);
        let bearer = Bearer::new(credential.clone(), None);
        for _ in 0..5 {
            let header = run(bearer.header()).unwrap();
            assert_eq!(header, "Bearer token-1");
            assert!(header.is_sensitive());
        }
        assert_eq!(credential.calls.load(Ordering::SeqCst), 1);
        assert!(!format!("{bearer:?}").contains("token-1"));
    }

    #[test]
    fn a_token_is_refreshed_before_it_expires() {
        let credential = Counting::new(Duration::minutes(4), usize::MAX);
        let bearer = Bearer::new(credential.clone(), None);
        assert_eq!(run(bearer.header()).unwrap(), "Bearer token-1");
        assert_eq!(run(bearer.header()).unwrap(), "Bearer token-2");
        assert_eq!(credential.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_refused_token_is_not_sent_again() {
        let credential = Counting::new(Duration::hours(1), usize::MAX);
        let bearer = Bearer::new(credential.clone(), None);
        assert_eq!(run(bearer.header()).unwrap(), "Bearer token-1");
        bearer.refused(401);
        assert_eq!(run(bearer.header()).unwrap(), "Bearer token-2");
    }

    #[test]
    fn a_failing_credential_leaves_a_valid_token_in_use_and_says_why_when_there_is_none() {
        let credential = Counting::new(Duration::minutes(4), 1);
        let bearer = Bearer::new(credential.clone(), None);
        assert_eq!(run(bearer.header()).unwrap(), "Bearer token-1");
        // Due for a refresh, which fails: the token still has minutes to live.
        assert_eq!(run(bearer.header()).unwrap(), "Bearer token-1");
        bearer.refused(403);
        let error = run(bearer.header()).unwrap_err();
        assert!(
            error.0.starts_with(
                "no Microsoft Entra ID token for https://monitor.azure.com//.default:"
            ),
            "{error}"
        );
        assert!(error.0.contains("the token endpoint is down"), "{error}");
    }

    #[test]
    fn authentication_strings_say_which_part_is_wrong() {
        use AuthenticationStringError::*;
        let parse = AuthenticationString::parse;
        assert_eq!(
            parse(" authorization = aad ; clientid = abc ; Extra=1;;").unwrap(),
            AuthenticationString {
                client_id: Some("abc".into())
            }
        );
        assert_eq!(parse(" ; "), Err(Empty));
        assert_eq!(
            parse("Authorization=AAD;ClientId"),
            Err(NotKeyValue { position: 2 })
        );
        assert_eq!(parse("=AAD"), Err(NotKeyValue { position: 1 }));
        assert_eq!(
            parse("Authorization=AAD;ClientId="),
            Err(EmptyValue {
                key: "ClientId".into()
            })
        );
        assert_eq!(
            parse("Authorization=AAD;authorization=AAD"),
            Err(Duplicate {
                key: "authorization".into()
            })
        );
        assert_eq!(parse("ClientId=abc"), Err(MissingAuthorization));
        assert_eq!(
            parse("Authorization=Key"),
            Err(UnsupportedAuthorization {
                value: "Key".into()
            })
        );
    }
}
