//! census's end-to-end tests, one binary: each module is one area (`azure_*` the Application
//! Insights exporter against the loopback ingestion server, `console_*` the console exporter's
//! summary table, `core_*` the runtime, `db_*` the
//! database integrations against real servers, `http_*` the HTTP integrations, `logs_*` the
//! `log` and `tracing` bridges, `metrics_*` the `metrics` facade's recorder, `sampling_*` samplers under load). cargo-nextest runs every test in a process of its own, so the
//! global pipeline each test installs is its own; select an area with `-E 'test(/^db_/)'`.

mod bridges;
mod http_support;

mod azure_connection_string;
mod azure_entra;
mod azure_envelopes;
mod azure_error_exceptions;
mod azure_flush;
mod azure_gzip;
mod azure_http;
mod azure_kill_restart;
mod azure_limits;
mod azure_logs;
mod azure_outage;
mod azure_pyref;
mod azure_required;
mod azure_resource;
mod azure_stacks;
mod azure_stalled;
mod azure_statuses;
mod azure_storage;
mod azure_threads;
mod console_summary;
mod core_exporters;
mod core_nesting;
mod core_outcomes;
mod core_panics;
mod core_pipeline;
mod core_propagation;
mod core_requests;
mod core_sampling;
mod db_diesel;
mod db_mongodb;
mod db_mysql;
mod db_postgres;
mod db_rusqlite;
mod db_sqlx;
mod http_census_to_census;
mod http_census_to_django;
mod http_clients;
mod http_fuzz;
mod http_python_to_census;
mod http_servers;
mod http_whole_traces;
mod logs_bridge;
mod logs_tracing;
mod metrics_facade;
mod metrics_standard;
mod sampling_rate_limited;
