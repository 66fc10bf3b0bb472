//! Microsoft Entra ID sign-in against loopback token endpoints (App Service managed identity,
//! Kubernetes workload identity) and an ingestion server that requires the bearer token; a
//! connection string alone sends no `Authorization` header.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use census_runtime::azure::{AzureError, AzureExporter};
use census_tests::azure::scratch_dir;
use census_tests::identity::{CA_PEM, TokenServer};
use census_tests::ingestion::{IngestionServer, Reply};

const CHILD: &str = env!("CARGO_BIN_EXE_azure_child");

/// What the child printed on its last line: `flushed=.. sent=.. token_refused=.. ...`.
struct Outcome {
    line: String,
}

impl Outcome {
    fn get(&self, key: &str) -> &str {
        self.line
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in {:?}", self.line))
    }

    fn count(&self, key: &str) -> u64 {
        self.get(key).parse().unwrap()
    }
}

/// Runs `azure_child entra` against `connection_string` with `env` (and no other sign-in
/// variable of the parent's).
fn run_child(connection_string: &str, storage: &Path, n: u64, env: &[(&str, String)]) -> Outcome {
    let mut command = Command::new(CHILD);
    command.args([
        "entra",
        connection_string,
        storage.to_str().unwrap(),
        &n.to_string(),
    ]);
    for variable in [
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "MSI_ENDPOINT",
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        command.env_remove(variable);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Outcome {
        line: stdout.lines().last().unwrap_or_default().to_owned(),
    }
}

fn authorizations(server: &IngestionServer) -> Vec<Option<String>> {
    server
        .requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_owned))
        .collect()
}

#[test]
fn a_connection_string_alone_sends_no_authorization_header() {
    let server = IngestionServer::start().unwrap();
    let storage = scratch_dir("entra-none");
    let outcome = run_child(&server.connection_string(), &storage, 2, &[]);
    assert_eq!(outcome.get("flushed"), "true");
    assert_eq!(server.accepted().len(), 2);
    assert!(!server.requests().is_empty());
    assert!(authorizations(&server).iter().all(Option::is_none));
}

#[test]
fn managed_identity_signs_every_request_with_one_cached_token() {
    let tokens = TokenServer::managed_identity("identity-secret", 3600).unwrap();
    let server = IngestionServer::start().unwrap();
    server.require_bearer(&["mi-token-1"]);
    let storage = scratch_dir("entra-mi");
    let outcome = run_child(
        &server.connection_string(),
        &storage,
        3,
        &[
            (
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                "Authorization=AAD;ClientId=00000000-0000-0000-0000-0000000000aa".into(),
            ),
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", tokens.url())),
            ("IDENTITY_HEADER", "identity-secret".into()),
        ],
    );
    assert_eq!(outcome.get("flushed"), "true");
    assert_eq!(server.accepted().len(), 3);
    let sent = authorizations(&server);
    assert_eq!(sent.len(), 3, "one request per flush, none refused");
    assert!(
        sent.iter()
            .all(|a| a.as_deref() == Some("Bearer mi-token-1"))
    );
    let asked = tokens.requests();
    assert_eq!(asked.len(), 1, "the token is cached while it lives");
    assert_eq!(asked[0].method, "GET");
    assert!(asked[0].target.starts_with("/msi/token?"));
    assert_eq!(
        asked[0].header("x-identity-header"),
        Some("identity-secret")
    );
    assert_eq!(
        asked[0].param("resource").as_deref(),
        Some("https://monitor.azure.com/")
    );
    assert_eq!(
        asked[0].param("client_id").as_deref(),
        Some("00000000-0000-0000-0000-0000000000aa")
    );
    assert_eq!(outcome.count("token_refused"), 0);
}

#[test]
fn a_refused_token_is_replaced_and_the_batch_sent_again_for_the_connection_string_s_audience() {
    // Tokens that live two minutes are refreshed before every request (five minutes ahead):
    // the first is refused (revoked, say), the next ones are accepted.
    let tokens = TokenServer::managed_identity("identity-secret", 120).unwrap();
    let server = IngestionServer::start().unwrap();
    let accepted: Vec<String> = (2..=20).map(|n| format!("mi-token-{n}")).collect();
    server.require_bearer(&accepted.iter().map(String::as_str).collect::<Vec<_>>());
    let storage = scratch_dir("entra-refused");
    let outcome = run_child(
        &format!(
            "{};AADAudience=https://monitor.azure.us/",
            server.connection_string()
        ),
        &storage,
        2,
        &[
            (
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                "Authorization=AAD".into(),
            ),
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", tokens.url())),
            ("IDENTITY_HEADER", "identity-secret".into()),
        ],
    );
    assert_eq!(outcome.get("flushed"), "true");
    let sent = authorizations(&server);
    assert_eq!(sent[0].as_deref(), Some("Bearer mi-token-1"));
    assert_eq!(server.requests()[0].reply.status, 401);
    assert!(outcome.count("token_refused") >= 1);
    let names = server.accepted_names();
    assert_eq!(names.len(), 2, "nothing lost: {names:?}");
    assert!(tokens.requests().len() >= 2);
    assert!(
        tokens
            .requests()
            .iter()
            .all(|r| r.param("resource").as_deref() == Some("https://monitor.azure.us/"))
    );
}

#[test]
fn workload_identity_signs_in_with_the_federated_token_file() {
    let tokens = TokenServer::workload_identity("federated-assertion", 3600).unwrap();
    let server = IngestionServer::start().unwrap();
    server.require_bearer(&["wi-token-1"]);
    let storage = scratch_dir("entra-wi");
    let token_file = storage.join("federated-token");
    std::fs::write(&token_file, "federated-assertion").unwrap();
    let ca_file = storage.join("loopback-ca.pem");
    std::fs::write(&ca_file, CA_PEM).unwrap();
    let outcome = run_child(
        &server.connection_string(),
        &storage,
        2,
        &[
            (
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                "Authorization=AAD".into(),
            ),
            ("AZURE_AUTHORITY_HOST", tokens.url()),
            ("AZURE_TENANT_ID", "census-tenant".into()),
            ("AZURE_CLIENT_ID", "census-workload".into()),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                token_file.to_str().unwrap().into(),
            ),
            ("CENSUS_TEST_CA_FILE", ca_file.to_str().unwrap().into()),
        ],
    );
    assert_eq!(outcome.get("flushed"), "true", "{}", outcome.line);
    assert_eq!(server.accepted().len(), 2);
    assert!(
        authorizations(&server)
            .iter()
            .all(|a| a.as_deref() == Some("Bearer wi-token-1"))
    );
    let asked = tokens.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].target, "/census-tenant/oauth2/v2.0/token");
    assert_eq!(
        asked[0].param("scope").as_deref(),
        Some("https://monitor.azure.com//.default")
    );
    assert_eq!(
        asked[0].param("client_id").as_deref(),
        Some("census-workload")
    );
    assert_eq!(
        asked[0].param("client_assertion").as_deref(),
        Some("federated-assertion")
    );
}

#[test]
fn a_token_never_reaches_local_storage() {
    let tokens = TokenServer::managed_identity("identity-secret", 3600).unwrap();
    let server = IngestionServer::start().unwrap();
    server.set_default(Reply::status(503));
    let storage = scratch_dir("entra-storage");
    let outcome = run_child(
        &server.connection_string(),
        &storage,
        2,
        &[
            (
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                "Authorization=AAD".into(),
            ),
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", tokens.url())),
            ("IDENTITY_HEADER", "identity-secret".into()),
            ("CENSUS_TEST_FLUSH_MS", "300".into()),
        ],
    );
    assert_eq!(outcome.get("flushed"), "false");
    assert!(
        authorizations(&server)
            .iter()
            .any(|a| a.as_deref() == Some("Bearer mi-token-1"))
    );
    let mut stored = Vec::new();
    let mut dirs = vec![storage.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                stored.push(std::fs::read(path).unwrap());
            }
        }
    }
    let text: Vec<String> = stored
        .iter()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .collect();
    assert!(
        text.iter().any(|t| t.contains("entra-0")),
        "the undelivered envelopes are in storage"
    );
    assert!(text.iter().all(|t| !t.contains("mi-token")));
}

#[test]
fn a_malformed_authentication_string_fails_at_start_up_naming_the_part() {
    let error = AzureExporter::builder()
        .connection_string(IngestionServer::start().unwrap().connection_string())
        .no_storage()
        .timeout(Duration::from_secs(1))
        .authentication_string("Authorization=AAD;ClientId")
        .build()
        .unwrap_err();
    assert!(matches!(error, AzureError::AuthenticationString(_)));
    assert_eq!(
        error.to_string(),
        "invalid Application Insights authentication string: segment 2 of the authentication string is not Key=Value"
    );
}
