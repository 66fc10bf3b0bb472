//! Integrations with the crates an application calls through, where Rust cannot monkeypatch:
//! each one is a file of its own behind a cargo feature of the same name, and uses only the
//! public span API a user would.
