//! Call-site descriptors and the compile-time registry of every instrumented site.

use std::fmt;

/// What kind of telemetry a span becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpanKind {
    /// An outgoing call or an in-process operation: a `RemoteDependency`.
    Dependency,
    /// An incoming request handled by this service: a `Request`.
    Request,
}

/// The static description of one instrumented place in the code.
///
/// The attribute macros emit one `static` `Site` per annotated function and register it, so
/// [`sites`] can list every dependency a program calls without running it. Integrations and the
/// [`span`](crate::span()) builder use sites of their own.
///
/// ```
/// # use census_runtime::site::Site;
/// static SITE: Site = Site::dependency("load", "SQL")
///     .with_target("orders-db")
///     .at(module_path!(), file!(), line!());
/// assert_eq!(SITE.kind(), "SQL");
/// assert_eq!(SITE.target(), Some("orders-db"));
/// ```
pub struct Site {
    name: &'static str,
    /// `None`: [`INPROC`] (no pointer to relocate in each in-process site).
    kind: Option<&'static str>,
    span_kind: SpanKind,
    target: Option<&'static str>,
    data: Option<&'static str>,
    fields: &'static [&'static str],
    /// The module's path; with `file` `None`, the module's path and the file's joined in one
    /// string, `file_at` bytes into it (the macros' sites: one pointer for the loader to
    /// relocate rather than two, and one string for every site of a module).
    module: &'static str,
    file: Option<&'static str>,
    file_at: u16,
    line: u32,
    exception: bool,
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .field("span_kind", &self.span_kind)
            .field("target", &self.target)
            .field("data", &self.data)
            .field("fields", &self.fields)
            .field("module", &self.module())
            .field("file", &self.file())
            .field("line", &self.line)
            .field("exception", &self.exception)
            .finish()
    }
}

impl Site {
    /// Everything a site says, whichever way its strings are kept.
    #[allow(clippy::type_complexity)]
    fn parts(
        &self,
    ) -> (
        &'static str,
        &'static str,
        SpanKind,
        Option<&'static str>,
        Option<&'static str>,
        &'static [&'static str],
        &'static str,
        &'static str,
        u32,
        bool,
    ) {
        (
            self.name(),
            self.kind(),
            self.span_kind,
            self.target,
            self.data,
            self.fields,
            self.module(),
            self.file(),
            self.line,
            self.exception,
        )
    }
}

impl PartialEq for Site {
    fn eq(&self, other: &Site) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Site {}

impl std::hash::Hash for Site {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

/// The `type` of an in-process dependency, as Application Insights shows it.
pub const INPROC: &str = "INPROC";

impl Site {
    /// An in-process span (`type` `INPROC`) named `name`.
    pub const fn inproc(name: &'static str) -> Self {
        let mut site = Self::dependency(name, INPROC);
        site.kind = None;
        site
    }

    /// A dependency of type `kind` (`SQL`, `HTTP`, `postgresql`, a name of your own) named `name`.
    pub const fn dependency(name: &'static str, kind: &'static str) -> Self {
        Site {
            name,
            kind: Some(kind),
            span_kind: SpanKind::Dependency,
            target: None,
            data: None,
            fields: &[],
            module: "",
            file: Some(""),
            file_at: 0,
            line: 0,
            exception: false,
        }
    }

    /// An incoming request named `name` (integrations usually replace it per request).
    pub const fn request(name: &'static str) -> Self {
        let mut site = Self::dependency(name, "");
        site.span_kind = SpanKind::Request;
        site
    }

    /// Sets the static target (the server, the database, the service called).
    pub const fn with_target(mut self, target: &'static str) -> Self {
        self.target = Some(target);
        self
    }

    /// Sets the static command text (a SQL statement, a URL template).
    pub const fn with_data(mut self, data: &'static str) -> Self {
        self.data = Some(data);
        self
    }

    /// Sends an `Err` the function returns as an Exception item too, with the error's chain of
    /// `source()`s (`#[dependency(..., exception)]`).
    pub const fn with_exception(mut self) -> Self {
        self.exception = true;
        self
    }

    /// Whether an `Err` is sent as an Exception item too.
    pub const fn exception(&self) -> bool {
        self.exception
    }

    /// Names the function arguments that are recorded as properties, in order.
    pub const fn with_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.fields = fields;
        self
    }

    /// Sets where the site is in the source: `module_path!()`, `file!()`, `line!()`.
    pub const fn at(mut self, module: &'static str, file: &'static str, line: u32) -> Self {
        self.module = module;
        self.file = Some(file);
        self.line = line;
        self
    }

    /// Sets where the site is, its module's path and its file's joined in one string: the
    /// module's path (`module_path!()`) is the first `file_at` bytes, the file's (`file!()`) the
    /// rest. What the attribute macros write: the site keeps one pointer where [`Site::at`]
    /// keeps two. Not a public API.
    #[doc(hidden)]
    pub const fn at_joined(mut self, joined: &'static str, file_at: usize, line: u32) -> Self {
        assert!(file_at <= joined.len() && file_at <= u16::MAX as usize);
        self.module = joined;
        self.file = None;
        self.file_at = file_at as u16;
        self.line = line;
        self
    }

    /// The operation's name (the function's, or the one given in the attribute).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The dependency type: `INPROC`, or the attribute's `kind`.
    pub const fn kind(&self) -> &'static str {
        match self.kind {
            Some(kind) => kind,
            None => INPROC,
        }
    }

    /// Whether the span becomes a dependency or a request.
    pub const fn span_kind(&self) -> SpanKind {
        self.span_kind
    }

    /// The static target, when the attribute gives one.
    pub const fn target(&self) -> Option<&'static str> {
        self.target
    }

    /// The static command text, when the attribute gives one.
    pub const fn data(&self) -> Option<&'static str> {
        self.data
    }

    /// The names of the arguments recorded as properties.
    pub const fn fields(&self) -> &'static [&'static str] {
        self.fields
    }

    /// The module that holds the site.
    pub const fn module(&self) -> &'static str {
        match self.file {
            Some(_) => self.module,
            None => self.module.split_at(self.file_at as usize).0,
        }
    }

    /// The source file that holds the site.
    pub const fn file(&self) -> &'static str {
        match self.file {
            Some(file) => file,
            None => self.module.split_at(self.file_at as usize).1,
        }
    }

    /// The line of the annotated function.
    pub const fn line(&self) -> u32 {
        self.line
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}", self.name(), self.kind())?;
        if let Some(target) = self.target {
            write!(f, " -> {target}")?;
        }
        write!(f, "] at {}:{} ({})", self.file(), self.line, self.module())
    }
}

// The registry of sites. On ELF targets (Linux, Android) every annotated function's `Site` is
// itself placed in a linker section of its own, and `sites()` reads the section between the
// `__start_`/`__stop_` symbols the linker defines: nothing runs before `main` and registering a
// site costs nothing beyond the site. Elsewhere sites are collected by `inventory`, with a
// constructor each.

/// One entry of the registry where `inventory` collects it: a reference to an annotated
/// function's `static` [`Site`].
#[doc(hidden)]
#[repr(transparent)]
pub struct Registered(pub Option<&'static Site>);

#[cfg(any(target_os = "linux", target_os = "android"))]
mod section {
    use super::Site;

    // The section holds this entry in every binary, so that its bounds exist even where no
    // function is annotated; `sites()` passes over it.
    #[used]
    #[unsafe(link_section = "census_sites_v0_2")]
    pub(super) static NONE: Site = Site::inproc("");

    unsafe extern "C" {
        #[link_name = "__start_census_sites_v0_2"]
        static START: u8;
        #[link_name = "__stop_census_sites_v0_2"]
        static STOP: u8;
    }

    pub(super) fn entries() -> &'static [Site] {
        let start = (&raw const START).cast::<Site>();
        let stop = (&raw const STOP).cast::<Site>();
        let len = (stop as usize - start as usize) / size_of::<Site>();
        // SAFETY: the linker puts every `Site` of the section (all of one size, a multiple of
        // their alignment, and placed by `__site!` and `NONE` only) one after the other between
        // the two symbols, and nothing else.
        unsafe { std::slice::from_raw_parts(start, len) }
    }
}

/// Defines an annotated function's `static` site and registers it; the macros call it.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __site {
    ($name:ident = $site:expr) => {
        #[used]
        #[unsafe(link_section = "census_sites_v0_2")]
        static $name: $crate::__private::Site = $site;
    };
}

/// Defines an annotated function's `static` site and registers it; the macros call it.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __site {
    ($name:ident = $site:expr) => {
        static $name: $crate::__private::Site = $site;
        $crate::__private::inventory::submit! {
            $crate::__private::Registered(::core::option::Option::Some(&$name))
        }
    };
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
inventory::collect!(Registered);

/// Every site registered by `#[inproc]` and `#[dependency]` in this binary, in no particular order.
///
/// The list is built at link time: a program can print every dependency it may call without
/// calling any of them.
///
/// ```
/// #[census_runtime::dependency(kind = "SQL", target = "orders-db")]
/// fn load_orders() {}
///
/// let site = census_runtime::site::sites()
///     .find(|site| site.name() == "load_orders")
///     .expect("registered at link time");
/// assert_eq!(site.kind(), "SQL");
/// assert_eq!(site.target(), Some("orders-db"));
/// ```
pub fn sites() -> impl Iterator<Item = &'static Site> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let entries = section::entries()
        .iter()
        .filter(|site| !std::ptr::eq(*site, &section::NONE));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let entries = inventory::iter::<Registered>
        .into_iter()
        .filter_map(|entry| entry.0);
    entries
}
