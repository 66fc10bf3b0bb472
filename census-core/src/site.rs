//! Call-site descriptors and the compile-time registry of every instrumented site.

use std::fmt;

/// What kind of telemetry a span becomes.
///
/// ```
/// use census_runtime::site::{Site, SpanKind};
/// static HANDLER: Site = Site::request("GET /orders");
/// static QUERY: Site = Site::dependency("load", "SQL");
/// assert_eq!(HANDLER.span_kind(), SpanKind::Request);
/// assert_eq!(QUERY.span_kind(), SpanKind::Dependency);
/// ```
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
/// A site keeps at most 65,535 bytes of each string (a longer one is cut at the last character
/// boundary before; Application Insights keeps fewer characters of any field).
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
    // Each string is kept as its pointer, with its length among the others' below: 80 bytes
    // where `&'static str`s would take 120, in the static site of every instrumented function.
    // A null pointer is `None`. Only the const fns below set them, each from a `&'static str`
    // (or a `&'static [&'static str]`) and its length.
    name: *const u8,
    /// Null: [`INPROC`] (no pointer to relocate in each in-process site).
    kind: *const u8,
    target: *const u8,
    data: *const u8,
    fields: *const &'static str,
    /// The module's path; with `file` null, the module's path and the file's joined in one
    /// string, `file_at` bytes into it (the macros' sites: one pointer for the loader to
    /// relocate rather than two, and one string for every site of a module).
    module: *const u8,
    file: *const u8,
    name_len: u16,
    kind_len: u16,
    target_len: u16,
    data_len: u16,
    fields_len: u16,
    module_len: u16,
    file_len: u16,
    file_at: u16,
    line: u32,
    span_kind: SpanKind,
    exception: bool,
}

// SAFETY: a site's pointers are those of `&'static` strings and slices, which never change and
// are `Sync` themselves; a site has no interior mutability.
unsafe impl Sync for Site {}
// SAFETY: as above: `&'static` data may be used from any thread.
unsafe impl Send for Site {}

/// `text`'s pointer and length, the length at most `u16::MAX` (a longer string is cut at the
/// last character boundary below: Application Insights keeps at most 8,192 characters of any).
const fn pack(text: &'static str) -> (*const u8, u16) {
    let mut len = at_most_u16(text.len()) as usize;
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    (text.as_ptr(), len as u16)
}

/// `len`, or `u16::MAX` if it is more.
const fn at_most_u16(len: usize) -> u16 {
    if len > u16::MAX as usize {
        u16::MAX
    } else {
        len as u16
    }
}

/// The string [`pack`] kept.
const fn unpack(ptr: *const u8, len: u16) -> &'static str {
    // SAFETY: `ptr` and `len` come from `pack`, which cuts a `&'static str` at a character
    // boundary: the bytes are valid UTF-8 and live for `'static`.
    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len as usize)) }
}

/// The string [`pack`] kept, or `None` for a null pointer.
const fn unpack_optional(ptr: *const u8, len: u16) -> Option<&'static str> {
    if ptr.is_null() {
        None
    } else {
        Some(unpack(ptr, len))
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .field("span_kind", &self.span_kind)
            .field("target", &self.target())
            .field("data", &self.data())
            .field("fields", &self.fields())
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
            self.target(),
            self.data(),
            self.fields(),
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
    ///
    /// ```
    /// use census_runtime::site::{INPROC, Site};
    /// static SITE: Site = Site::inproc("price basket");
    /// assert_eq!((SITE.name(), SITE.kind()), ("price basket", INPROC));
    /// ```
    pub const fn inproc(name: &'static str) -> Self {
        let mut site = Self::dependency(name, INPROC);
        site.kind = std::ptr::null();
        site.kind_len = 0;
        site
    }

    /// A dependency of type `kind` (`SQL`, `HTTP`, `postgresql`, a name of your own) named `name`.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::dependency("charge", "HTTP");
    /// assert_eq!((SITE.name(), SITE.kind()), ("charge", "HTTP"));
    /// ```
    pub const fn dependency(name: &'static str, kind: &'static str) -> Self {
        let (name, name_len) = pack(name);
        let (kind, kind_len) = pack(kind);
        let (empty, _) = pack("");
        Site {
            name,
            kind,
            target: std::ptr::null(),
            data: std::ptr::null(),
            fields: std::ptr::NonNull::dangling().as_ptr(),
            module: empty,
            file: empty,
            name_len,
            kind_len,
            target_len: 0,
            data_len: 0,
            fields_len: 0,
            module_len: 0,
            file_len: 0,
            file_at: 0,
            line: 0,
            span_kind: SpanKind::Dependency,
            exception: false,
        }
    }

    /// An incoming request named `name` (integrations usually replace it per request).
    ///
    /// ```
    /// use census_runtime::site::{Site, SpanKind};
    /// static SITE: Site = Site::request("GET /orders/{id}");
    /// assert_eq!(SITE.span_kind(), SpanKind::Request);
    /// ```
    pub const fn request(name: &'static str) -> Self {
        let mut site = Self::dependency(name, "");
        site.span_kind = SpanKind::Request;
        site
    }

    /// Sets the static target (the server, the database, the service called).
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::dependency("load", "SQL").with_target("orders-db");
    /// assert_eq!(SITE.target(), Some("orders-db"));
    /// ```
    pub const fn with_target(mut self, target: &'static str) -> Self {
        (self.target, self.target_len) = pack(target);
        self
    }

    /// Sets the static command text (a SQL statement, a URL template).
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::dependency("load", "SQL").with_data("SELECT * FROM orders");
    /// assert_eq!(SITE.data(), Some("SELECT * FROM orders"));
    /// ```
    pub const fn with_data(mut self, data: &'static str) -> Self {
        (self.data, self.data_len) = pack(data);
        self
    }

    /// Sends an `Err` the function returns as an Exception item too, with the error's chain of
    /// `source()`s (`#[dependency(..., exception)]`).
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::dependency("charge", "HTTP").with_exception();
    /// assert!(SITE.exception());
    /// ```
    pub const fn with_exception(mut self) -> Self {
        self.exception = true;
        self
    }

    /// Whether an `Err` is sent as an Exception item too.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("parse");
    /// assert!(!SITE.exception());
    /// ```
    pub const fn exception(&self) -> bool {
        self.exception
    }

    /// Names the function arguments that are recorded as properties, in order.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("place order").with_fields(&["customer", "sku"]);
    /// assert_eq!(SITE.fields(), ["customer", "sku"]);
    /// ```
    pub const fn with_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.fields = fields.as_ptr();
        self.fields_len = at_most_u16(fields.len());
        self
    }

    /// Sets where the site is in the source: `module_path!()`, `file!()`, `line!()`.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("price").at("shop::pricing", "src/pricing.rs", 12);
    /// assert_eq!((SITE.module(), SITE.file(), SITE.line()), ("shop::pricing", "src/pricing.rs", 12));
    /// ```
    pub const fn at(mut self, module: &'static str, file: &'static str, line: u32) -> Self {
        (self.module, self.module_len) = pack(module);
        (self.file, self.file_len) = pack(file);
        self.line = line;
        self
    }

    /// Sets where the site is, its module's path and its file's joined in one string: the
    /// module's path (`module_path!()`) is the first `file_at` bytes, the file's (`file!()`) the
    /// rest. What the attribute macros write: the site keeps one pointer where [`Site::at`]
    /// keeps two. Not a public API.
    #[doc(hidden)]
    pub const fn at_joined(mut self, joined: &'static str, file_at: usize, line: u32) -> Self {
        assert!(file_at <= joined.len() && joined.len() <= u16::MAX as usize);
        (self.module, self.module_len) = pack(joined);
        self.file = std::ptr::null();
        self.file_len = 0;
        self.file_at = file_at as u16;
        self.line = line;
        self
    }

    /// The operation's name (the function's, or the one given in the attribute).
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("price basket");
    /// assert_eq!(SITE.name(), "price basket");
    /// ```
    pub const fn name(&self) -> &'static str {
        unpack(self.name, self.name_len)
    }

    /// The dependency type: `INPROC`, or the attribute's `kind`.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// assert_eq!(Site::inproc("price").kind(), "INPROC");
    /// assert_eq!(Site::dependency("load", "postgresql").kind(), "postgresql");
    /// ```
    pub const fn kind(&self) -> &'static str {
        match unpack_optional(self.kind, self.kind_len) {
            Some(kind) => kind,
            None => INPROC,
        }
    }

    /// Whether the span becomes a dependency or a request.
    ///
    /// ```
    /// use census_runtime::site::{Site, SpanKind};
    /// assert_eq!(Site::inproc("price").span_kind(), SpanKind::Dependency);
    /// ```
    pub const fn span_kind(&self) -> SpanKind {
        self.span_kind
    }

    /// The static target, when the attribute gives one.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// assert_eq!(Site::inproc("price").target(), None);
    /// assert_eq!(Site::dependency("load", "SQL").with_target("orders-db").target(), Some("orders-db"));
    /// ```
    pub const fn target(&self) -> Option<&'static str> {
        unpack_optional(self.target, self.target_len)
    }

    /// The static command text, when the attribute gives one.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// assert_eq!(Site::inproc("price").data(), None);
    /// ```
    pub const fn data(&self) -> Option<&'static str> {
        unpack_optional(self.data, self.data_len)
    }

    /// The names of the arguments recorded as properties.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// assert!(Site::inproc("price").fields().is_empty());
    /// ```
    pub const fn fields(&self) -> &'static [&'static str] {
        // SAFETY: `fields` and `fields_len` come from a `&'static [&'static str]` (or name no
        // element, its pointer dangling but aligned), its length cut to `u16::MAX` at most.
        unsafe { std::slice::from_raw_parts(self.fields, self.fields_len as usize) }
    }

    /// The module that holds the site.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("price").at(module_path!(), file!(), line!());
    /// assert_eq!(SITE.module(), module_path!());
    /// ```
    pub const fn module(&self) -> &'static str {
        let module = unpack(self.module, self.module_len);
        if self.file.is_null() {
            module.split_at(self.file_at as usize).0
        } else {
            module
        }
    }

    /// The source file that holds the site.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("price").at(module_path!(), file!(), line!());
    /// assert_eq!(SITE.file(), file!());
    /// ```
    pub const fn file(&self) -> &'static str {
        if self.file.is_null() {
            unpack(self.module, self.module_len)
                .split_at(self.file_at as usize)
                .1
        } else {
            unpack(self.file, self.file_len)
        }
    }

    /// The line of the annotated function.
    ///
    /// ```
    /// use census_runtime::site::Site;
    /// static SITE: Site = Site::inproc("price").at(module_path!(), file!(), 42);
    /// assert_eq!(SITE.line(), 42);
    /// ```
    pub const fn line(&self) -> u32 {
        self.line
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}", self.name(), self.kind())?;
        if let Some(target) = self.target() {
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
    #[unsafe(link_section = "census_sites_v0_3")]
    pub(super) static NONE: Site = Site::inproc("");

    unsafe extern "C" {
        #[link_name = "__start_census_sites_v0_3"]
        static START: u8;
        #[link_name = "__stop_census_sites_v0_3"]
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
        #[unsafe(link_section = "census_sites_v0_3")]
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

#[cfg(test)]
mod tests {
    use super::*;

    static FULL: Site = Site::dependency("load", "SQL")
        .with_target("orders-db")
        .with_data("SELECT 1")
        .with_fields(&["id", "limit"])
        .with_exception()
        .at("orders::repo", "src/repo.rs", 42);

    static JOINED: Site = Site::inproc("tally").at_joined("orders::tallysrc/tally.rs", 13, 7);

    #[test]
    fn a_site_gives_back_every_string_it_was_made_of() {
        assert_eq!(FULL.name(), "load");
        assert_eq!(FULL.kind(), "SQL");
        assert_eq!(FULL.target(), Some("orders-db"));
        assert_eq!(FULL.data(), Some("SELECT 1"));
        assert_eq!(FULL.fields(), ["id", "limit"]);
        assert_eq!(FULL.module(), "orders::repo");
        assert_eq!(FULL.file(), "src/repo.rs");
        assert_eq!(FULL.line(), 42);
        assert!(FULL.exception());

        assert_eq!(JOINED.kind(), INPROC);
        assert_eq!(JOINED.target(), None);
        assert_eq!(JOINED.data(), None);
        assert!(JOINED.fields().is_empty());
        assert_eq!(JOINED.module(), "orders::tally");
        assert_eq!(JOINED.file(), "src/tally.rs");
        assert_eq!(
            JOINED,
            Site::inproc("tally").at("orders::tally", "src/tally.rs", 7)
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_site_takes_80_bytes() {
        assert_eq!(size_of::<Site>(), 80);
    }

    #[test]
    fn a_string_longer_than_a_site_keeps_is_cut_at_a_character_boundary() {
        // 'é' is two bytes: the 65,535th byte is the first half of one.
        let long: &'static str = "é".repeat(40_000).leak();
        let site = Site::inproc(long);
        assert_eq!(site.name().len(), 65_534);
        assert!(long.starts_with(site.name()));
    }
}
