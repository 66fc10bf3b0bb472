//! # census
//!
//! Compile-time instrumentation for Rust services, shipped as Azure Application Insights
//! telemetry.
//!
//! Annotate a function, a method or a whole `impl` block, and every call becomes a span: it opens
//! and closes around the call, nests under the caller's span (across `.await` too), and fails on
//! `Err` or panic. A lightweight runtime samples whole traces, records spans on a per-thread hot
//! path and exports them on a worker of its own.
//!
//! ```
//! use census_runtime::{dependency, inproc, Sampler};
//! use census_runtime::export::MemoryExporter;
//! use std::time::Duration;
//!
//! struct Orders;
//!
//! #[dependency(kind = "SQL", target = "orders-db")]
//! impl Orders {
//!     fn get(&self, id: u64) -> Result<u64, String> {
//!         if id == 0 { Err("no order 0".into()) } else { Ok(id * 10) }
//!     }
//! }
//!
//! #[inproc]
//! fn checkout(orders: &Orders) -> Result<u64, String> {
//!     orders.get(7)
//! }
//!
//! let memory = MemoryExporter::new();
//! let census = census_runtime::pipeline()
//!     .sampler(Sampler::always())
//!     .cloud_role("orders-api")
//!     .exporter(memory.clone())
//!     .install()?;
//!
//! checkout(&Orders).unwrap();
//! census.flush(Duration::from_secs(5)).unwrap();
//!
//! let parent = memory.one("checkout");
//! let child = memory.one("Orders::get");
//! assert_eq!(child.parent_id(), Some(parent.span_id()));
//! assert_eq!((child.kind(), child.target()), ("SQL", Some("orders-db")));
//! # Ok::<(), census_runtime::pipeline::ConfigError>(())
//! ```
//!
//! ## The attributes
//!
//! - [`#[inproc]`](macro@inproc), `#[inproc(name = "...")]`: an in-process dependency (`type`
//!   `INPROC`).
//! - [`#[dependency(kind = "...", target = "...")]`](macro@dependency), with `name = "..."`,
//!   `data = "..."` (a static command text), `fields(arg, ...)` (record those arguments as
//!   properties, by `Display`), `exception` (an `Err` is sent as an Exception item too, with
//!   its `source()`s) and `crate = path` (where census is renamed).
//! - On an `impl` block, every method is instrumented; a method may carry its own attribute to
//!   override the block's, or `#[dependency(skip)]` / `#[inproc(skip)]` to opt out.
//!
//! What is known only at run time goes through [`current_span`].
//!
//! ### Where the attributes go
//!
//! - **Free functions** and **methods** (inherent, trait impl, trait default methods with a
//!   body), `pub` or not, generic (lifetimes, `where` clauses, `const` parameters), `unsafe`,
//!   `extern "C"`, with any receiver: `self`, `&self`, `&mut self`, `self: Box<Self>`,
//!   `self: Pin<&mut Self>`. Returning `impl Trait` is fine.
//! - **`async fn`**: the span covers the whole future, from its first poll to its completion,
//!   across every `.await`, and is current inside it on every poll. A future dropped before it
//!   completes ends its span with the result code `cancelled`.
//! - **`impl` blocks**, inherent or of a trait: every method with a body is instrumented and named
//!   `Type::method` (the last segment of the self type, without generics: `PgOrders::get`). A
//!   method may carry its own `#[dependency(...)]` or `#[inproc(...)]`: its keys override the
//!   block's (`kind`, `target` and `data` come from the block unless given, and an `#[inproc]`
//!   method is in-process whatever the block is), or `#[dependency(skip)]` / `#[inproc(skip)]`
//!   to opt out. `const fn` methods are left alone: a `const fn` may run at compile time, where
//!   there is no span to open.
//! - **`async-trait`**: above or below `#[async_trait]`, on the block or on its methods. Below,
//!   the attribute sees the shape async-trait expands to, `fn ... { Box::pin(async move { ... }) }`,
//!   and instruments the boxed future. Either way the span starts when the future is first polled,
//!   as for any `async fn`, and the future stays `Send` when it was.
//!
//! A function annotated on its own (not through its impl block) only knows its own name: its span
//! is named `get`, not `PgOrders::get`, unless `name = "..."` says otherwise.
//!
//! ### What the span records
//!
//! - **Name**: `name = "..."`, else the function's name (`Type::method` through an impl block).
//! - **Kind**: `INPROC` for `#[inproc]`, the `kind` of `#[dependency]`.
//! - **Target** and **data**: the static ones given here; either may be set or replaced at run time
//!   with [`current_span`]`().set_target(...)` / `.set_data(...)`.
//! - **Properties**: the arguments named in `fields(...)`, by `Display`, in that order, recorded
//!   only when the span is sampled. Nothing else is recorded: arguments are never captured unless
//!   named.
//! - **Outcome**: a function returning a `Result` (also through an alias: `io::Result`,
//!   `anyhow::Result`, one of your own) whose error is `Display` fails the span on `Err`, with the
//!   error's `Display` as message and its type name (`ParseIntError`) as result code. A panic fails
//!   the span with the panic's message and goes on unwinding. Any other return value succeeds.
//! - **Source**: the module, file and line of the function, registered at link time so that
//!   [`sites()`](site::sites) lists every instrumented function without running any.
//!
//! ### Limits
//!
//! - `fields(...)` names plain arguments (`id: u64`), not the names bound inside a pattern
//!   argument, nor `self`.
//! - A function returning `!` is rejected: its span would never end.
//! - The body of a sync function runs in a closure, so `#[track_caller]` on an instrumented
//!   function does not reach panics raised directly in its body.
//! - Mistakes in the attribute are all reported at once, each at its token, and the function is
//!   then left as written.
//!
//! ## Without a pipeline
//!
//! Until [`pipeline()`]`.install()` is called, an annotated call costs one relaxed atomic load:
//! no clock read, no id, no allocation.
//!
//! ## Features
//!
//! - `azure` (on by default): the Application Insights exporter, `AzureExporter`.
//! - `log` and `tracing`, in [`integrations`]: what a service writes through them, as telemetry
//!   tied to the span it was written in; [`event`] sends custom events.
//! - `metrics`, in [`integrations`]: the `metrics` facade's counters, gauges and histograms,
//!   pre-aggregated per minute into `Metric` telemetry.
//! - HTTP, in [`integrations`]: `reqwest`, `tower`, `axum`, `ureq`, `actix-web`.
//! - Databases, in [`integrations`], named after the driver crate: `tokio-postgres`,
//!   `postgres`, `mysql_async`, `rusqlite`, `diesel`, `sqlx`, `mongodb`.

#![warn(missing_docs)]
// docs.rs builds with `--cfg docsrs` and marks what each feature adds.
#![cfg_attr(docsrs, feature(doc_cfg))]

// Everything but the attributes is census-core's: the runtime compiles in a crate of its own,
// beside syn, while census-macros is built; this crate only waits for both.
pub use census_core::*;

/// Instruments a function, a method or every method of an `impl` block as an in-process span
/// (Application Insights dependency type `INPROC`).
///
/// Options, all optional:
///
/// | option | meaning |
/// | --- | --- |
/// | `name = "..."` | the span's name; default: the function's name, or `Type::method` through an impl block |
/// | `fields(arg, ...)` | record these arguments as properties, by `Display` |
/// | `exception` | an `Err` the function returns is sent as an Exception item too, with the error's chain of `source()`s (for every function: [`PipelineBuilder::errors_as_exceptions`](pipeline::PipelineBuilder::errors_as_exceptions)) |
/// | `crate = path` | where `census_runtime` is, when it is renamed; default `::census_runtime` |
/// | `skip` | on a method inside an annotated impl block: leave it uninstrumented |
///
/// `#[inproc]` has no `kind`, `target` or `data`: for a call to another system, use
/// [`#[dependency]`](macro@dependency).
///
/// ```
/// use census_runtime::inproc;
/// use census_runtime::export::MemoryExporter;
/// use std::time::Duration;
///
/// #[inproc(name = "price basket", fields(items))]
/// fn price(items: usize) -> u64 {
///     discount(items as u64 * 3)
/// }
///
/// #[inproc]
/// fn discount(total: u64) -> u64 {
///     total - 1
/// }
///
/// #[inproc]
/// async fn load_basket() -> Result<usize, std::num::ParseIntError> {
///     let items: usize = "4".parse()?;
///     Ok(items)
/// }
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// assert_eq!(price(4), 11);
/// census.flush(Duration::from_secs(5)).unwrap();
///
/// let price = memory.one("price basket");
/// assert_eq!(price.kind(), "INPROC");
/// assert_eq!(price.property("items"), Some("4"));
/// assert_eq!(memory.one("discount").parent_id(), Some(price.span_id()));
/// # let _ = load_basket();
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
///
/// On an impl block, with a renamed runtime:
///
/// ```
/// extern crate census_runtime as telemetry;
///
/// struct Cart(Vec<u64>);
///
/// #[telemetry::inproc(crate = telemetry)]
/// impl Cart {
///     fn total(&self) -> u64 {            // span `Cart::total`
///         self.0.iter().sum()
///     }
///
///     #[telemetry::inproc(skip)]          // not instrumented
///     fn len(&self) -> usize {
///         self.0.len()
///     }
///
///     const fn empty() -> Cart {          // const fn: left alone
///         Cart(Vec::new())
///     }
/// }
/// # assert_eq!(Cart(vec![1, 2]).total() + Cart::empty().len() as u64, 3);
/// ```
#[doc(inline)]
pub use census_macros::inproc;

/// Instruments a function, a method or every method of an `impl` block as a call to another
/// system: a database, a service, a queue.
///
/// | option | meaning |
/// | --- | --- |
/// | `kind = "..."` | **required**: the dependency type Application Insights shows (`SQL`, `HTTP`, `Azure blob`, your own) |
/// | `target = "..."` | the system called (`orders-db`, `api.example.com`); may be left to run time |
/// | `data = "..."` | a static command text (a SQL statement, a URL template) |
/// | `name = "..."` | the span's name; default: the function's name, or `Type::method` through an impl block |
/// | `fields(arg, ...)` | record these arguments as properties, by `Display` |
/// | `exception` | an `Err` the function returns is sent as an Exception item too, with the error's chain of `source()`s (for every function: [`PipelineBuilder::errors_as_exceptions`](pipeline::PipelineBuilder::errors_as_exceptions)) |
/// | `crate = path` | where `census_runtime` is, when it is renamed; default `::census_runtime` |
/// | `skip` | on a method inside an annotated impl block: leave it uninstrumented |
///
/// What is known only at run time (the SQL text, the host) goes through [`current_span()`].
///
/// ```
/// use census_runtime::{current_span, dependency};
/// use census_runtime::export::MemoryExporter;
/// use std::time::Duration;
///
/// trait Repository {
///     fn get(&self, id: u64) -> std::io::Result<String>;
///     fn count(&self) -> usize;
///     fn pool_size(&self) -> usize;
/// }
///
/// struct PgOrders;
///
/// #[dependency(kind = "SQL", target = "orders-db")]
/// impl Repository for PgOrders {
///     fn get(&self, id: u64) -> std::io::Result<String> {
///         current_span().set_data(format!("SELECT * FROM orders WHERE id = {id}"));
///         if id == 0 {
///             return Err(std::io::Error::other("no order 0"));
///         }
///         Ok(format!("order {id}"))
///     }
///
///     #[dependency(name = "orders.count", data = "SELECT count(*) FROM orders")]
///     fn count(&self) -> usize {
///         1
///     }
///
///     #[dependency(skip)]
///     fn pool_size(&self) -> usize {
///         4
///     }
/// }
///
/// #[dependency(kind = "HTTP", fields(path))]
/// fn fetch(path: &str) -> usize {
///     current_span().set_target("api.example.com");
///     path.len()
/// }
///
/// let memory = MemoryExporter::new();
/// let census = census_runtime::pipeline().exporter(memory.clone()).install()?;
/// PgOrders.get(0).unwrap_err();
/// PgOrders.count();
/// fetch("/orders");
/// census.flush(Duration::from_secs(5)).unwrap();
///
/// let get = memory.one("PgOrders::get");
/// assert_eq!((get.kind(), get.target()), ("SQL", Some("orders-db")));
/// assert_eq!(get.data(), Some("SELECT * FROM orders WHERE id = 0"));
/// assert_eq!((get.success(), get.error_message()), (false, Some("no order 0")));
///
/// let count = memory.one("orders.count");
/// assert_eq!((count.target(), count.data()), (Some("orders-db"), Some("SELECT count(*) FROM orders")));
///
/// let fetch = memory.one("fetch");
/// assert_eq!((fetch.kind(), fetch.target()), ("HTTP", Some("api.example.com")));
/// assert_eq!(fetch.property("path"), Some("/orders"));
/// # Ok::<(), census_runtime::pipeline::ConfigError>(())
/// ```
///
/// With `async-trait`, above or below `#[async_trait]`:
///
/// ```
/// use async_trait::async_trait;
/// use census_runtime::dependency;
///
/// #[async_trait]
/// trait Store {
///     async fn load(&self, id: u64) -> Result<String, std::fmt::Error>;
/// }
///
/// struct Memory;
///
/// #[async_trait]
/// #[dependency(kind = "redis", target = "cache")]
/// impl Store for Memory {
///     async fn load(&self, id: u64) -> Result<String, std::fmt::Error> {
///         Ok(id.to_string())
///     }
/// }
/// # fn is_send<T: Send>(_: T) {}
/// # is_send(Memory.load(1));
/// ```
#[doc(inline)]
pub use census_macros::dependency;
