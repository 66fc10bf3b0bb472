//! stub
use proc_macro::TokenStream;
#[proc_macro_attribute]
pub fn inproc(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
#[proc_macro_attribute]
pub fn dependency(_a: TokenStream, i: TokenStream) -> TokenStream {
    i
}
