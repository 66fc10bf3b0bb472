//! The attribute macros of census: `#[inproc]` and `#[dependency]`.
//!
//! Depend on [census-runtime](https://docs.rs/census-runtime) rather than on this crate: it
//! re-exports both attributes (`census_runtime::inproc`, `census_runtime::dependency`), holds
//! the runtime their expansion calls, and documents them, with their options and examples.
//!
//! # What the expansion is
//!
//! The function keeps its signature, attributes, docs and visibility; only its body changes, into
//! a few lines that call the runtime, where the logic lives:
//!
//! ```text
//! // The site, in a linker section that `sites()` reads.
//! __site!(__CENSUS_SITE = Site::dependency("load", "SQL").with_target("orders-db").at(...));
//! let call = enter(&__CENSUS_SITE);
//! let ret = run(call, move || { /* the body as written */ });
//! /* end the call, failed when `ret` is an `Err` */
//! ret
//! ```
//!
//! `?` and `return` inside the body keep their meaning. Without a pipeline installed, a call costs
//! one relaxed atomic load.
//!
//! Mistakes in an attribute are all reported at once, each at its token, and the function is
//! then left as written.

mod args;
mod errors;
mod expand;

use proc_macro::TokenStream;

use crate::args::Flavor;

/// An in-process span (type `INPROC`) around every call of a function, a method or the methods
/// of an `impl` block: the attribute census-runtime re-exports as `census_runtime::inproc`, where
/// its options are documented, with examples.
#[proc_macro_attribute]
pub fn inproc(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Flavor::Inproc, args.into(), item.into()).into()
}

/// A dependency span (a call to a database, a service, a queue) around every call of a function,
/// a method or the methods of an `impl` block: the attribute census-runtime re-exports as
/// `census_runtime::dependency`, where its options are documented, with examples.
#[proc_macro_attribute]
pub fn dependency(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Flavor::Dependency, args.into(), item.into()).into()
}
