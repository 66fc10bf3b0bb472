//! End-to-end tests of census.
