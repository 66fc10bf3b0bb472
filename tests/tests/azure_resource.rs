//! Who sent it: a program that sets no cloud role, instance or version in code takes them from
//! its environment as the Azure Monitor distributions do (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, App Service, Kubernetes), else its executable's name and the host
//! name. Each case runs the program as a child process with the variables set.

use std::process::{Command, Stdio};

use census_tests::azure::scratch_dir;
use census_tests::ingestion::IngestionServer;
use serde_json::Value;

const CHILD: &str = env!("CARGO_BIN_EXE_azure_child");

/// Every variable the detection reads, removed from the child's environment unless set again.
const READ: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "WEBSITE_SITE_NAME",
    "WEBSITE_INSTANCE_ID",
    "KUBERNETES_SERVICE_HOST",
    "HOSTNAME",
];

/// The tags of the span the child sent with `vars` set.
fn tags_with(case: &str, vars: &[(&str, &str)]) -> Value {
    let server = IngestionServer::start().unwrap();
    let storage = scratch_dir(&format!("resource-{case}"));
    let mut command = Command::new(CHILD);
    for name in READ {
        command.env_remove(name);
    }
    let status = command
        .envs(vars.iter().copied())
        .args([
            "resource",
            &server.connection_string(),
            &storage.to_string_lossy(),
            "1",
        ])
        .stderr(Stdio::inherit())
        .status()
        .expect("the child runs");
    assert!(status.success(), "{case}: the child delivered its span");
    let items = server.accepted();
    assert_eq!(items.len(), 1, "{case}");
    items[0]["tags"].clone()
}

#[test]
fn otel_variables_name_the_role_instance_and_version() {
    let tags = tags_with(
        "otel",
        &[
            ("OTEL_SERVICE_NAME", "checkout"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.namespace=shop,service.instance.id=checkout-7,service.version=2.4.1",
            ),
            ("WEBSITE_SITE_NAME", "not-this"),
        ],
    );
    assert_eq!(tags["ai.cloud.role"], "shop.checkout");
    assert_eq!(tags["ai.cloud.roleInstance"], "checkout-7");
    assert_eq!(tags["ai.application.ver"], "2.4.1");
}

#[test]
fn app_service_names_the_site_and_its_instance() {
    let tags = tags_with(
        "app-service",
        &[
            ("WEBSITE_SITE_NAME", "orders-prod"),
            ("WEBSITE_INSTANCE_ID", "4f6a0b"),
        ],
    );
    assert_eq!(tags["ai.cloud.role"], "orders-prod");
    assert_eq!(tags["ai.cloud.roleInstance"], "4f6a0b");
    assert!(tags.get("ai.application.ver").is_none());
}

#[test]
fn kubernetes_names_the_workload_and_the_pod() {
    let tags = tags_with(
        "kubernetes",
        &[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("HOSTNAME", "orders-5d8f7c9b4-x2x7q"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.deployment.name=orders"),
        ],
    );
    assert_eq!(tags["ai.cloud.role"], "orders");
    assert_eq!(tags["ai.cloud.roleInstance"], "orders-5d8f7c9b4-x2x7q");
}

#[test]
fn without_any_the_executable_and_the_host_name() {
    let tags = tags_with("nothing", &[]);
    assert_eq!(tags["ai.cloud.role"], "azure_child");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(tags["ai.cloud.roleInstance"], host.trim());
    assert!(tags.get("ai.application.ver").is_none());
}
