//! The attribute macros of census: `#[inproc]` and `#[dependency]`.
//!
//! Use them through `census_runtime`, which re-exports them.

mod args;
mod errors;
mod expand;

use proc_macro::TokenStream;

use crate::args::Flavor;

/// Instruments a function as an in-process span.
#[proc_macro_attribute]
pub fn inproc(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Flavor::Inproc, args.into(), item.into()).into()
}

/// Instruments a function as a call to another system.
#[proc_macro_attribute]
pub fn dependency(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Flavor::Dependency, args.into(), item.into()).into()
}
