//! Compile-pass and compile-fail cases of the census attributes.
