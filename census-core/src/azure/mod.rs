//! The Azure Application Insights exporter (feature `azure`, on by default).
//!
//! Installed like any other exporter:
//!
//! ```
//! use census_runtime::azure::AzureExporter;
//!
//! # // SAFETY: nothing else reads the environment in this example.
//! # unsafe { std::env::set_var("APPLICATIONINSIGHTS_CONNECTION_STRING", "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9") };
//! let mut census = census_runtime::pipeline().cloud_role("orders-api");
//! // APPLICATIONINSIGHTS_CONNECTION_STRING, when it is set (and not empty).
//! if let Some(azure) = AzureExporter::from_env()? {
//!     census = census.exporter(azure);
//! }
//! # let census = census.exporter(census_runtime::export::MemoryExporter::new());
//! let census = census.install()?;
//! # drop(census.shutdown(std::time::Duration::from_millis(100)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pipeline's worker hands it finished spans; it writes them as envelopes into a reused
//! buffer and passes the buffer, through a bounded channel, to its transport thread, which
//! batches by count and time, gzips, posts, retries and stores (see `transport.rs`). The pipeline
//! worker is never held up by the network: when the channel is full, the batch goes straight to
//! local storage (or is dropped and counted when storage is off). It counts what it does in
//! [`diagnostics()`](fn@diagnostics).
//!
//! # HTTP
//!
//! Requests go through [reqwest](https://docs.rs/reqwest) on a current-thread tokio runtime that
//! the transport thread builds and owns: an application needs no async runtime for the exporter,
//! and one it has is never used. By default the client is census's own:
//!
//! - TLS by rustls (the crypto provider the application installed, else aws-lc-rs), trusting
//!   Mozilla's root certificates, built into the binary (webpki-roots): a container image
//!   without CA files reaches the endpoint, and the system's certificate store is not read;
//! - a proxy from the environment, as curl reads it: `HTTPS_PROXY` (for the usual `https://`
//!   endpoint), `HTTP_PROXY`, `ALL_PROXY`, and the hosts of `NO_PROXY` reached directly;
//! - idle connections kept for the next batch; two requests in flight at most.
//!
//! [`AzureExporterBuilder::http_client`] takes a `reqwest::Client` of your own instead: a proxy
//! set in code, roots of your own (a TLS-inspecting proxy's), other timeouts.

#[cfg(feature = "azure_identity")]
mod auth;
mod backoff;
mod batch;
mod connection_string;
mod diagnostics;
mod envelope;
mod http;
mod limits;
mod status;
mod storage;
mod transport;

#[cfg(feature = "azure_identity")]
pub use self::auth::{AuthenticationString, AuthenticationStringError};
pub use self::connection_string::{ConnectionString, ConnectionStringError};
pub use self::diagnostics::{Diagnostics, diagnostics};
/// The Azure SDK crates Microsoft Entra ID credentials come from, in the versions census takes
/// them in (a credential must implement this `azure_core`'s `TokenCredential`).
#[cfg(feature = "azure_identity")]
#[cfg_attr(docsrs, doc(cfg(feature = "azure_identity")))]
pub use {azure_core, azure_identity};

use std::fmt;
use std::path::{Path, PathBuf};
#[cfg(feature = "azure_identity")]
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use self::diagnostics::{COUNTERS, Warnings};
use self::envelope::{EnvelopeWriter, Items};
use self::storage::{Storage, StoreError};
use self::transport::{Flushed, Message, Transport, TransportConfig};
use crate::export::{Exporter, Resource};
use crate::pipeline::ConfigError;
use crate::record::{Record, Severity, SpanRecord};

/// What can keep an Azure exporter from being built.
///
/// ```
/// use census_runtime::azure::{AzureError, AzureExporter, ConnectionStringError};
///
/// let error = AzureExporter::builder().connection_string("InstrumentationKey=oops").build().unwrap_err();
/// assert!(matches!(
///     error,
///     AzureError::ConnectionString(ConnectionStringError::InvalidInstrumentationKey { .. })
/// ));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// The connection string is malformed; the error names the bad part.
    #[error("invalid Application Insights connection string: {0}")]
    ConnectionString(#[from] ConnectionStringError),
    /// No connection string was given, in code or in `APPLICATIONINSIGHTS_CONNECTION_STRING`.
    #[error(
        "the Azure exporter has no connection string: call .connection_string(...) or set APPLICATIONINSIGHTS_CONNECTION_STRING"
    )]
    MissingConnectionString,
    /// The local storage directory for undelivered telemetry could not be made.
    #[error("could not create the local storage directory {}: {source}", path.display())]
    Storage {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("{setting} must be {expected}, got {got}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// What it accepts.
        expected: &'static str,
        /// What it was given.
        got: String,
    },
    /// The transport's thread, or its runtime, could not be started.
    #[error("could not start the Azure exporter's transport thread: {0}")]
    Transport(#[source] std::io::Error),
    /// The default HTTP client could not be built (its TLS configuration was refused).
    #[error("could not build the Azure exporter's HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The authentication string (in code or `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`) is
    /// malformed; the error names the bad part.
    #[cfg(feature = "azure_identity")]
    #[error("invalid Application Insights authentication string: {0}")]
    AuthenticationString(#[from] AuthenticationStringError),
    /// The Microsoft Entra ID credential the authentication string names could not be made
    /// (for workload identity: a missing tenant, client id or token file).
    #[cfg(feature = "azure_identity")]
    #[error("could not make the Microsoft Entra ID credential: {0}")]
    Credential(String),
    /// `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` asks for Microsoft Entra ID sign-in, which
    /// this build of census cannot do: without it, a resource that requires it refuses
    /// everything.
    #[error(
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING is set, but census-runtime was built without its azure_identity feature (Microsoft Entra ID sign-in)"
    )]
    AuthenticationUnavailable,
}

/// An Azure exporter that cannot be built fails the pipeline's configuration, for programs
/// whose `main` returns [`ConfigError`].
impl From<AzureError> for ConfigError {
    fn from(error: AzureError) -> Self {
        ConfigError::Exporter(Box::new(error))
    }
}

/// The environment variable the connection string is read from when none is set in code. Set
/// but empty (or only whitespace) counts as not set, as in the Azure SDKs.
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub const CONNECTION_STRING_ENV: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";

/// The connection string [`CONNECTION_STRING_ENV`] holds, if any. Empty or only whitespace is
/// none, as in the Azure SDKs: deployments that always set the variable leave it empty where no
/// Application Insights resource is wired in, and that must not break a pipeline exporting
/// elsewhere. A value that is not UTF-8 is read lossily, so that the parser names what is wrong.
/// `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`, when set and not empty.
fn authentication_string_from_env() -> Option<String> {
    let value = std::env::var_os(AUTHENTICATION_STRING_ENV)?;
    let text = value.to_string_lossy();
    (!text.trim().is_empty()).then(|| text.into_owned())
}

/// The environment variable the Microsoft Entra ID sign-in is read from.
const AUTHENTICATION_STRING_ENV: &str = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING";

fn connection_string_from_env() -> Option<String> {
    let value = std::env::var_os(CONNECTION_STRING_ENV)?;
    let text = value.to_string_lossy();
    if text.trim().is_empty() {
        log::debug!(
            "census: {CONNECTION_STRING_ENV} is set but empty; taken as not set, no Azure exporter from it"
        );
        return None;
    }
    Some(text.into_owned())
}

/// Where undelivered batches are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StorageSetting {
    /// `{user cache dir}/census/{key}`.
    Default,
    /// `{dir}/{key}`.
    Dir(PathBuf),
    /// Nowhere: undelivered batches are retried from memory, then dropped.
    Off,
}

/// Settings of the Azure exporter; made by [`AzureExporter::builder`]. Build the exporter and
/// give it to the pipeline with
/// [`PipelineBuilder::exporter`](crate::pipeline::PipelineBuilder::exporter).
///
/// ```
/// use census_runtime::azure::AzureExporter;
/// use std::time::Duration;
///
/// let azure = AzureExporter::builder()
///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
///     .gzip(false)
///     .storage_dir(std::env::temp_dir().join("census-doc-example"))
///     .storage_limits(8 << 20, Duration::from_secs(24 * 3600))
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// let census = census_runtime::pipeline().exporter(azure).install()?;
/// # drop(census.shutdown(Duration::from_millis(100)));
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "the builder does nothing until built or given to the pipeline"]
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub struct AzureExporterBuilder {
    connection_string: Option<String>,
    gzip: bool,
    storage: StorageSetting,
    storage_max_bytes: u64,
    storage_max_age: Duration,
    max_batch: usize,
    send_interval: Duration,
    timeout: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    queue_batches: usize,
    min_severity: Severity,
    standard_metrics: bool,
    http_client: Option<reqwest::Client>,
    #[cfg(feature = "azure_identity")]
    credential: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
    #[cfg(feature = "azure_identity")]
    authentication_string: Option<String>,
}

impl Default for AzureExporterBuilder {
    fn default() -> Self {
        AzureExporterBuilder {
            connection_string: None,
            gzip: true,
            storage: StorageSetting::Default,
            storage_max_bytes: 50 << 20,
            storage_max_age: Duration::from_secs(48 * 3600),
            max_batch: 512,
            send_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            queue_batches: 32,
            min_severity: Severity::Verbose,
            standard_metrics: true,
            http_client: None,
            #[cfg(feature = "azure_identity")]
            credential: None,
            #[cfg(feature = "azure_identity")]
            authentication_string: None,
        }
    }
}

impl AzureExporterBuilder {
    /// The connection string (default: `APPLICATIONINSIGHTS_CONNECTION_STRING`, unless empty).
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .build()?;
    /// assert_eq!(exporter.connection_string().track_url(), "http://127.0.0.1:9/v2.1/track");
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn connection_string(mut self, connection_string: impl Into<String>) -> Self {
        self.connection_string = Some(connection_string.into());
        self
    }

    /// Whether bodies are gzipped (`Content-Encoding: gzip`); default on.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .gzip(false)
    ///     .build()?;
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// Keeps undelivered batches under `dir` (in a directory per instrumentation key) instead
    /// of the user's cache directory. An empty path is refused when the exporter is built
    /// (it would be the working directory, wherever the process was started from); a relative
    /// one is taken from the working directory.
    ///
    /// ```
    /// use census_runtime::azure::{AzureError, AzureExporter};
    ///
    /// let error = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .storage_dir("")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, AzureError::InvalidSetting { setting: "storage_dir", .. }));
    /// ```
    pub fn storage_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage = StorageSetting::Dir(dir.into());
        self
    }

    /// Keeps no undelivered batch on disk: they are retried from memory (up to `queue_batches`
    /// batches), then dropped and counted.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .build()?;
    /// assert_eq!(exporter.storage_dir(), None);
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn no_storage(mut self) -> Self {
        self.storage = StorageSetting::Off;
        self
    }

    /// The most bytes local storage takes (default 50 MiB) and how old a stored batch may get
    /// before it is deleted unsent (default 48 hours).
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    /// use std::time::Duration;
    ///
    /// let dir = std::env::temp_dir().join("census-doc-storage-limits");
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .storage_dir(&dir)
    ///     .storage_limits(8 << 20, Duration::from_secs(24 * 3600))
    ///     .build()?;
    /// assert!(exporter.storage_dir().is_some_and(|kept| kept.starts_with(&dir)));
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn storage_limits(mut self, max_bytes: u64, max_age: Duration) -> Self {
        self.storage_max_bytes = max_bytes;
        self.storage_max_age = max_age;
        self
    }

    /// The most envelopes in one POST (default 512, the batch size of the OpenTelemetry-based
    /// Azure Monitor exporters; the Python reference sends at most 100). Fewer, larger requests
    /// cost the application and the endpoint less per envelope; a batch the endpoint finds too
    /// large (413) is split in halves and sent again.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .max_batch(100)
    ///     .build()?;
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn max_batch(mut self, envelopes: usize) -> Self {
        self.max_batch = envelopes;
        self
    }

    /// How long envelopes may wait for a fuller batch before they are sent (default 1 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .send_interval(Duration::from_millis(250))
    ///     .build()?;
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn send_interval(mut self, interval: Duration) -> Self {
        self.send_interval = interval;
        self
    }

    /// The timeout of one HTTP request, connection included (default 10 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .timeout(Duration::from_secs(5))
    ///     .build()?;
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The backoff after a failed delivery: from `min`, doubling to `max`, with jitter
    /// (default 1 s to 60 s). A `Retry-After` from the service overrides it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .retry_backoff(Duration::from_millis(500), Duration::from_secs(30))
    ///     .build()?;
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// How many batches may wait for the transport thread before they go straight to storage
    /// (default 32).
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .queue_batches(64)
    ///     .build()?;
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn queue_batches(mut self, batches: usize) -> Self {
        self.queue_batches = batches;
        self
    }

    /// The least severe log records sent (default: every one the logging bridge lets through);
    /// spans and events are always sent.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    /// use census_runtime::export::Severity;
    /// let settings = AzureExporter::builder().min_severity(Severity::Information);
    /// # drop(settings);
    /// ```
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = severity;
        self
    }

    /// Whether to send the standard metrics (default: yes): `requests/duration` and
    /// `dependencies/duration` per minute (the pipeline's `metric_interval`), counted for every
    /// request and dependency *before* sampling, by success, result code, dependency type and
    /// target and the cloud role and instance, so that the portal's request and dependency
    /// rates, failure rates and durations stay exact whatever the sampler drops. Each request and
    /// dependency item then says so (`_MS.ProcessedByMetricExtractors`), so that ingestion does
    /// not count the sampled items again. With them, a call of a dropped trace is timed (two
    /// clock readings) instead of costing nothing.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// // Only the items the sampler keeps, no metrics.
    /// let settings = AzureExporter::builder().standard_metrics(false);
    /// # drop(settings);
    /// ```
    pub fn standard_metrics(mut self, on: bool) -> Self {
        self.standard_metrics = on;
        self
    }

    /// Sends through `client` instead of census's own: for a proxy set in code, root
    /// certificates of your own (a TLS-inspecting proxy's), other connection settings.
    ///
    /// The client is used as it is, from the exporter's own runtime: its proxies, TLS settings,
    /// `User-Agent` and connection timeout hold; each request still ends after
    /// [`timeout`](Self::timeout) (or sooner, at a flush's deadline). Leave its automatic
    /// redirects off (`redirect(Policy::none())`) for census to keep the new origin of a 307 or
    /// 308 for later batches; followed by the client, they still deliver each batch.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let client = reqwest::Client::builder()
    ///     .proxy(reqwest::Proxy::https("http://proxy.internal:3128")?)
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()?;
    /// let azure = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .http_client(client)
    ///     .build()?;
    /// # drop(azure);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Signs every request in with Microsoft Entra ID: `Authorization: Bearer <token>` from
    /// `credential`, any credential of the Azure SDK for Rust (`azure_identity`, re-exported as
    /// [`azure_identity`]), for the audience the connection
    /// string's `AADAudience` names (the public cloud's Azure Monitor without it). This is what a
    /// resource with local authentication disabled requires.
    ///
    /// Tokens are cached and refreshed five minutes before they expire; a 401 or 403 drops the
    /// token, asks the credential for a new one and sends the batch again (counted in
    /// [`Diagnostics::token_refused`], said once through `log`). A token lives in memory only:
    /// local storage keeps envelopes, never requests, and no log line or `Debug` shows it.
    ///
    /// ```no_run
    /// use census_runtime::azure::AzureExporter;
    /// use census_runtime::azure::azure_identity::DeveloperToolsCredential;
    ///
    /// let azure = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001")
    ///     .credential(DeveloperToolsCredential::new(None)?)
    ///     .build()?;
    /// # drop(azure);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "azure_identity")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure_identity")))]
    pub fn credential(
        mut self,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Signs in as an [`AuthenticationString`] says (`Authorization=AAD`, optionally with the
    /// `ClientId` of a user-assigned managed identity), as the Azure Monitor distributions read
    /// it from `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`, which is read when neither this nor
    /// [`credential`](Self::credential) is set. The credential is the managed identity's
    /// (App Service, Functions, virtual machines), or, where Kubernetes workload identity put
    /// its federated token (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID`, `AZURE_AUTHORITY_HOST`), workload identity's; its requests go through
    /// the exporter's HTTP client. A malformed string fails [`build`](Self::build) with
    /// [`AzureError::AuthenticationString`], which names the bad part.
    ///
    /// ```
    /// use census_runtime::azure::{AzureError, AzureExporter};
    ///
    /// let error = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001")
    ///     .authentication_string("Authorization=Basic")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, AzureError::AuthenticationString(_)));
    /// ```
    #[cfg(feature = "azure_identity")]
    #[cfg_attr(docsrs, doc(cfg(feature = "azure_identity")))]
    pub fn authentication_string(mut self, text: impl Into<String>) -> Self {
        self.authentication_string = Some(text.into());
        self
    }

    /// Builds the exporter and starts its transport thread.
    ///
    /// Without a connection string set on the builder, it is read from
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`; with neither, it is
    /// [`AzureError::MissingConnectionString`].
    ///
    /// ```
    /// use census_runtime::azure::{AzureError, AzureExporter};
    ///
    /// let error = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=not-a-key")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, AzureError::ConnectionString(_)));
    /// ```
    pub fn build(self) -> Result<AzureExporter, AzureError> {
        let text = match &self.connection_string {
            Some(text) => text.clone(),
            None => connection_string_from_env().ok_or(AzureError::MissingConnectionString)?,
        };
        let connection = ConnectionString::parse(&text)?;
        self.build_with(connection)
    }

    /// The credential requests are signed in with: the one set in code, else the one the
    /// authentication string (in code, else from the environment) names, else none.
    #[cfg(feature = "azure_identity")]
    fn sign_in(
        &self,
        client: &reqwest::Client,
    ) -> Result<Option<Arc<dyn azure_core::credentials::TokenCredential>>, AzureError> {
        use azure_identity::{
            ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
            WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
        };

        if let Some(credential) = &self.credential {
            return Ok(Some(Arc::clone(credential)));
        }
        let Some(text) = self
            .authentication_string
            .clone()
            .or_else(authentication_string_from_env)
        else {
            return Ok(None);
        };
        let sign_in = AuthenticationString::parse(&text)?;
        let client_options = azure_core::http::ClientOptions {
            transport: Some(azure_core::http::Transport::new(Arc::new(client.clone()))),
            ..Default::default()
        };
        let credential: Arc<dyn azure_core::credentials::TokenCredential> =
            if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                let mut options = WorkloadIdentityCredentialOptions {
                    client_id: sign_in.client_id().map(str::to_owned),
                    ..Default::default()
                };
                options.credential_options.client_options = client_options;
                WorkloadIdentityCredential::new(Some(options))
                    .map_err(|error| AzureError::Credential(error.to_string()))?
            } else {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: sign_in
                        .client_id()
                        .map(|id| UserAssignedId::ClientId(id.to_owned())),
                    client_options,
                };
                ManagedIdentityCredential::new(Some(options))
                    .map_err(|error| AzureError::Credential(error.to_string()))?
            };
        Ok(Some(credential))
    }

    fn build_with(self, connection: ConnectionString) -> Result<AzureExporter, AzureError> {
        for (setting, value) in [
            ("max_batch", self.max_batch),
            ("queue_batches", self.queue_batches),
        ] {
            if value == 0 {
                return Err(AzureError::InvalidSetting {
                    setting,
                    expected: "at least 1",
                    got: value.to_string(),
                });
            }
        }
        if self.timeout.is_zero() {
            return Err(AzureError::InvalidSetting {
                setting: "timeout",
                expected: "longer than zero",
                got: format!("{:?}", self.timeout),
            });
        }
        if let StorageSetting::Dir(dir) = &self.storage
            && dir.as_os_str().is_empty()
        {
            return Err(AzureError::InvalidSetting {
                setting: "storage_dir",
                expected: "a directory, not an empty path (which would store under the working directory)",
                got: format!("{dir:?}"),
            });
        }
        let ikey = connection.instrumentation_key().to_owned();
        let storage = match &self.storage {
            StorageSetting::Off => None,
            StorageSetting::Dir(dir) => {
                let dir = dir.join(storage::key_dir(&ikey));
                Some(
                    Storage::open(dir.clone(), self.storage_max_bytes, self.storage_max_age)
                        .map_err(|source| AzureError::Storage { path: dir, source })?,
                )
            }
            StorageSetting::Default => match storage::default_dir(&ikey) {
                Some(dir) => {
                    match Storage::open(dir.clone(), self.storage_max_bytes, self.storage_max_age) {
                        Ok(storage) => Some(storage),
                        Err(error) => {
                            log::warn!(
                                "census: no local storage ({}: {error}); undelivered telemetry is kept in memory only",
                                dir.display()
                            );
                            None
                        }
                    }
                }
                None => {
                    log::warn!(
                        "census: no cache directory for local storage; undelivered telemetry is kept in memory only"
                    );
                    None
                }
            },
        };
        let client = match self.http_client.clone() {
            Some(client) => client,
            None => http::default_client().map_err(AzureError::HttpClient)?,
        };
        #[cfg(feature = "azure_identity")]
        let bearer = self
            .sign_in(&client)?
            .map(|credential| Arc::new(auth::Bearer::new(credential, connection.aad_audience())));
        #[cfg(not(feature = "azure_identity"))]
        if authentication_string_from_env().is_some() {
            return Err(AzureError::AuthenticationUnavailable);
        }
        let config = TransportConfig {
            #[cfg(feature = "azure_identity")]
            bearer,
            endpoint: connection.endpoint().clone(),
            gzip: self.gzip,
            max_items: self.max_batch,
            interval: self.send_interval,
            timeout: self.timeout,
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
            memory_batches: self.queue_batches,
            client,
        };
        let (sender, inbox) = tokio::sync::mpsc::channel(self.queue_batches);
        let (spare_tx, spare_rx) = mpsc::sync_channel(self.queue_batches);
        let transport = Transport::new(config, storage.clone(), inbox, spare_tx);
        let (started_tx, started) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("census-azure".into())
            .spawn(move || {
                // What is logged here (census's warnings, the HTTP stack's own records) is
                // never telemetry; the runtime's blocking threads (name lookups) are census's
                // too.
                crate::local::mark_census_thread();
                yield_to_the_application();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("census-azure-blocking")
                    .on_thread_start(crate::local::mark_census_thread)
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => {
                        let _ = started_tx.send(Ok(()));
                        runtime
                    }
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(transport.run());
                // A name lookup still running on a blocking thread is not waited for.
                runtime.shutdown_background();
            })
            .map_err(AzureError::Transport)?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(AzureError::Transport(error)),
            Err(_) => {
                return Err(AzureError::Transport(std::io::Error::other(
                    "the transport thread ended before its runtime started",
                )));
            }
        }
        Ok(AzureExporter {
            writer: {
                let mut writer = EnvelopeWriter::new(&ikey);
                writer.set_min_severity(self.min_severity);
                writer.set_metrics_extracted(self.standard_metrics);
                writer
            },
            sender: Some(sender),
            spare: spare_rx,
            storage,
            thread: Some(thread),
            warnings: Warnings::default(),
            connection,
            scratch: Items::default(),
            left: None,
        })
    }
}

/// Sends spans to Azure Application Insights, as envelopes that match what the reference
/// exporter (`opencensus-ext-azure`) sends, and loses none of them to a failing network: see
/// the crate's documentation of the transport for the statuses, retries and local storage.
///
/// Made from `APPLICATIONINSIGHTS_CONNECTION_STRING` by [`AzureExporter::from_env`], or with
/// settings of your own by [`AzureExporter::builder`]; given to the pipeline with
/// [`PipelineBuilder::exporter`](crate::pipeline::PipelineBuilder::exporter).
///
/// The exporter's own HTTP calls are not instrumented: they run on its transport thread, where
/// no span is current, with a client census does not hook.
///
/// ```
/// use census_runtime::azure::AzureExporter;
///
/// let exporter = AzureExporter::builder()
///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9")
///     .no_storage()
///     .build()?;
/// assert_eq!(exporter.connection_string().track_url(), "http://127.0.0.1:9/v2.1/track");
/// let census = census_runtime::pipeline().exporter(exporter).install()?;
/// # drop(census.shutdown(std::time::Duration::from_millis(100)));
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "azure")))]
pub struct AzureExporter {
    writer: EnvelopeWriter,
    sender: Option<Sender<Message>>,
    spare: Receiver<Items>,
    storage: Option<Storage>,
    thread: Option<JoinHandle<()>>,
    warnings: Warnings,
    connection: ConnectionString,
    /// Reused by [`AzureExporter::serialise_batch`].
    scratch: Items,
    /// What the transport said was left after the last flush; `None` when it did not answer.
    left: Option<u64>,
}

impl fmt::Debug for AzureExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureExporter")
            .field("connection", &self.connection)
            .field("storage", &self.storage_dir())
            .finish()
    }
}

impl AzureExporter {
    /// Starts configuring an exporter.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .build()?;
    /// let census = census_runtime::pipeline().exporter(exporter).install()?;
    /// # drop(census.shutdown(std::time::Duration::from_millis(100)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> AzureExporterBuilder {
        AzureExporterBuilder::default()
    }

    /// An exporter with the default settings, for the connection string in
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`, when that is set: `None` when it is not, or
    /// when it is empty (as the Azure SDKs read it). A malformed connection string is an error
    /// that names the bad part.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    /// # // SAFETY: nothing else reads the environment in this example.
    /// # unsafe { std::env::remove_var("APPLICATIONINSIGHTS_CONNECTION_STRING") };
    /// assert!(AzureExporter::from_env()?.is_none());
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn from_env() -> Result<Option<AzureExporter>, AzureError> {
        match connection_string_from_env() {
            Some(text) => {
                let connection = ConnectionString::parse(&text)?;
                AzureExporterBuilder::default()
                    .build_with(connection)
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// The connection string in use.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .no_storage()
    ///     .build()?;
    /// assert_eq!(
    ///     exporter.connection_string().instrumentation_key(),
    ///     "00000000-0000-0000-0000-000000000001"
    /// );
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn connection_string(&self) -> &ConnectionString {
        &self.connection
    }

    /// The directory undelivered batches are kept in, when storage is on.
    ///
    /// ```
    /// use census_runtime::azure::AzureExporter;
    ///
    /// let dir = std::env::temp_dir().join("census-doc-storage-dir");
    /// let exporter = AzureExporter::builder()
    ///     .connection_string("InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:9/")
    ///     .storage_dir(&dir)
    ///     .build()?;
    /// // Each instrumentation key keeps its batches in a directory of its own under `dir`.
    /// assert!(exporter.storage_dir().is_some_and(|kept| kept.starts_with(&dir)));
    /// # Ok::<(), census_runtime::azure::AzureError>(())
    /// ```
    pub fn storage_dir(&self) -> Option<&Path> {
        self.storage.as_ref().map(Storage::dir)
    }

    /// Writes `batch` as the transport posts it before gzip, a JSON array of envelopes, into
    /// `body` (cleared first), and returns how many envelopes it holds: the serialisation alone,
    /// for benchmarks. Not a stable API.
    #[doc(hidden)]
    pub fn serialise_batch(
        &mut self,
        batch: &[SpanRecord],
        resource: &Resource,
        body: &mut Vec<u8>,
    ) -> usize {
        self.scratch.clear();
        for record in batch {
            self.writer.write_span(record, resource, &mut self.scratch);
        }
        self.scratch.write_array(body);
        self.scratch.len()
    }

    /// Counts `n` envelopes that found the transport's queue full, and says so (at most once a
    /// while).
    fn behind(&mut self, n: u64) {
        COUNTERS.export_queue_full.fetch_add(n, Ordering::Relaxed);
        self.warnings.warn(
            "queue",
            format_args!("census: the Azure transport is behind; {n} envelopes bypassed its queue"),
        );
    }

    /// Sends a flush or shutdown to the transport, waiting for room in the channel until
    /// `deadline`, then for its answer: whether everything went. What is left is remembered for
    /// [`Exporter::undelivered`].
    fn control(
        &mut self,
        deadline: Instant,
        make: impl Fn(Instant, mpsc::Sender<Flushed>) -> Message,
    ) -> bool {
        let answer = self.ask(deadline, make);
        self.left = answer.map(|flushed| flushed.left);
        answer.is_some_and(|flushed| flushed.left == 0)
    }

    fn ask(
        &mut self,
        deadline: Instant,
        make: impl Fn(Instant, mpsc::Sender<Flushed>) -> Message,
    ) -> Option<Flushed> {
        let Some(sender) = &self.sender else {
            return Some(Flushed { left: 0 });
        };
        let (done_tx, done_rx) = mpsc::channel();
        // A little earlier for the transport, so that its answer arrives before this side
        // stops waiting.
        let early = deadline
            .checked_sub(Duration::from_millis(20))
            .unwrap_or(deadline);
        let mut message = make(early, done_tx);
        loop {
            match sender.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return None,
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        done_rx.recv_timeout(wait).ok()
    }
}

impl Exporter for AzureExporter {
    fn export(&mut self, batch: &[Record], resource: &Resource) {
        let Some(sender) = &self.sender else {
            return;
        };
        if self.storage.is_none() && sender.capacity() == 0 {
            // The transport is behind and nothing would keep what it cannot take: the batch is
            // dropped as it is, and counted. Serialised, it would be dropped all the same, and
            // under more spans than the endpoint takes that kept a core busy for nothing.
            let n = batch
                .iter()
                .map(|record| self.writer.envelopes(record))
                .sum();
            if n > 0 {
                COUNTERS.dropped_unstored.fetch_add(n, Ordering::Relaxed);
                self.behind(n);
            }
            return;
        }
        let mut items = self.spare.try_recv().unwrap_or_default();
        items.clear();
        for record in batch {
            self.writer.write(record, resource, &mut items);
        }
        if items.is_empty() {
            return;
        }
        let n = items.len() as u64;
        match sender.try_send(Message::Items(items)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Items(items)))
            | Err(TrySendError::Closed(Message::Items(items))) => {
                let stored = match &self.storage {
                    Some(storage) => storage.write(&items),
                    None => Err(StoreError::Io(std::io::Error::other("storage is off"))),
                };
                match stored {
                    Ok(()) => {
                        COUNTERS.stored.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(StoreError::Full { .. }) => {
                        COUNTERS
                            .dropped_storage_full
                            .fetch_add(n, Ordering::Relaxed);
                    }
                    Err(StoreError::Io(_)) => {
                        COUNTERS.dropped_unstored.fetch_add(n, Ordering::Relaxed);
                    }
                }
                self.behind(n);
            }
            Err(_) => {}
        }
    }

    fn flush(&mut self, deadline: Instant) -> bool {
        self.control(deadline, |deadline, done| Message::Flush { deadline, done })
    }

    fn standard_metrics(&self) -> bool {
        self.writer.metrics_extracted()
    }

    fn shutdown(&mut self, deadline: Instant) -> bool {
        let ok = self.control(deadline, |deadline, done| Message::Shutdown {
            deadline,
            done,
        });
        self.sender = None;
        // The transport returns once it has answered; joined then, not when it never answered.
        if self.left.is_some()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
        ok
    }

    fn undelivered(&self) -> u64 {
        // The transport's count from the last flush; when it did not answer in time, what
        // storage holds (the batch it is sending is not counted).
        self.left
            .unwrap_or_else(|| self.storage.as_ref().map_or(0, Storage::count_items))
    }
}

/// How much less priority the exporter's thread takes than the application's (a `nice` value).
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers this thread's scheduling priority by [`BACKGROUND_NICE`] (a failure leaves it as it
/// was): for an exporter's thread, whose work (encoding, compressing, sending) is best effort
/// and, when the cores are busy, waits for the application's threads.
#[cfg(target_os = "linux")]
fn yield_to_the_application() {
    // SAFETY: `gettid` has no preconditions; `getpriority` and `setpriority` on this thread's
    // id touch only its scheduling priority (Linux gives threads priorities of their own).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        let _ = libc::setpriority(
            libc::PRIO_PROCESS,
            tid,
            current.saturating_add(BACKGROUND_NICE),
        );
    }
}

/// Elsewhere, the thread keeps its priority.
#[cfg(not(target_os = "linux"))]
fn yield_to_the_application() {}
