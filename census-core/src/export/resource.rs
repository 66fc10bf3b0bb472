//! Who sends the telemetry: the cloud role (`ai.cloud.role`, the service's name on the
//! application map), the role instance (`ai.cloud.roleInstance`) and the application's version
//! (`ai.application.ver`), read from the environment as the Azure Monitor OpenTelemetry
//! distributions read them.
//!
//! The role, first found wins:
//! 1. the pipeline builder's [`cloud_role`](crate::pipeline::PipelineBuilder::cloud_role);
//! 2. `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, as
//!    `{service.namespace}.{service.name}` when `OTEL_RESOURCE_ATTRIBUTES` names a namespace;
//! 3. on Azure App Service, the site's name (`WEBSITE_SITE_NAME`), with the namespace as above;
//! 4. on Kubernetes, the workload `OTEL_RESOURCE_ATTRIBUTES` names: `k8s.deployment.name`,
//!    `k8s.replicaset.name`, `k8s.statefulset.name`, `k8s.job.name`, `k8s.cronjob.name`,
//!    `k8s.daemonset.name`, in that order;
//! 5. the executable's name.
//!
//! The instance:
//! 1. the builder's [`cloud_role_instance`](crate::pipeline::PipelineBuilder::cloud_role_instance);
//! 2. `service.instance.id` in `OTEL_RESOURCE_ATTRIBUTES`;
//! 3. `k8s.pod.name` in `OTEL_RESOURCE_ATTRIBUTES`;
//! 4. on App Service, `WEBSITE_INSTANCE_ID`;
//! 5. on Kubernetes (`KUBERNETES_SERVICE_HOST` is set in every container), the pod's name, which
//!    Kubernetes gives the container as `HOSTNAME`;
//! 6. the host name.
//!
//! The version: the builder's
//! [`application_version`](crate::pipeline::PipelineBuilder::application_version) (typically
//! `env!("CARGO_PKG_VERSION")` of the application), else `service.version` in
//! `OTEL_RESOURCE_ATTRIBUTES`; none when neither is set.
//!
//! Each reader is a pure function of an environment look-up, so that it is tested without
//! touching the process's environment.

/// Looks an environment variable up: `None` when it is not set.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What the environment says of this process, read once at install.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Detected {
    pub(crate) role: Option<String>,
    pub(crate) instance: Option<String>,
    pub(crate) version: Option<String>,
}

/// Reads the role, instance and version from `env`; `None` for what it does not say (the
/// executable's name and the host name are the caller's fallbacks).
pub(crate) fn detect(env: Lookup<'_>) -> Detected {
    let attributes = env("OTEL_RESOURCE_ATTRIBUTES")
        .and_then(|text| resource_attributes(&text))
        .unwrap_or_default();
    let attribute = |key: &str| {
        attributes
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let namespaced = |name: String| match attribute("service.namespace") {
        Some(namespace) => format!("{namespace}.{name}"),
        None => name,
    };
    let on_kubernetes = set("KUBERNETES_SERVICE_HOST").is_some();
    let role = set("OTEL_SERVICE_NAME")
        .or_else(|| attribute("service.name"))
        .or_else(|| set("WEBSITE_SITE_NAME"))
        .map(namespaced)
        .or_else(|| {
            [
                "k8s.deployment.name",
                "k8s.replicaset.name",
                "k8s.statefulset.name",
                "k8s.job.name",
                "k8s.cronjob.name",
                "k8s.daemonset.name",
            ]
            .into_iter()
            .find_map(attribute)
        });
    let instance = attribute("service.instance.id")
        .or_else(|| attribute("k8s.pod.name"))
        .or_else(|| set("WEBSITE_SITE_NAME").and_then(|_| set("WEBSITE_INSTANCE_ID")))
        .or_else(|| on_kubernetes.then(|| set("HOSTNAME")).flatten());
    Detected {
        role,
        instance,
        version: attribute("service.version"),
    }
}

/// The pairs of `OTEL_RESOURCE_ATTRIBUTES` (`key1=value1,key2=value2`, values percent-encoded),
/// or `None` when it is malformed: then, as the OpenTelemetry specification says, none of it is
/// used.
pub(crate) fn resource_attributes(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in text.split(',') {
        if pair.trim().is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=')?;
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        out.push((key.to_owned(), percent_decode(value.trim())?));
    }
    Some(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect_in(vars: &[(&str, &str)]) -> Detected {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        detect(&|name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_set_says_nothing() {
        assert_eq!(detect_in(&[]), Detected::default());
    }

    #[test]
    fn the_service_name_wins_over_the_attributes_and_takes_their_namespace() {
        let detected = detect_in(&[
            ("OTEL_SERVICE_NAME", "checkout"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=ignored,service.namespace=shop,service.instance.id=checkout-7,service.version=2.4.1",
            ),
            ("WEBSITE_SITE_NAME", "site"),
            ("WEBSITE_INSTANCE_ID", "abc"),
        ]);
        assert_eq!(detected.role.as_deref(), Some("shop.checkout"));
        assert_eq!(detected.instance.as_deref(), Some("checkout-7"));
        assert_eq!(detected.version.as_deref(), Some("2.4.1"));
    }

    #[test]
    fn the_attributes_name_the_service_without_otel_service_name() {
        let detected = detect_in(&[("OTEL_RESOURCE_ATTRIBUTES", " service.name = billing ")]);
        assert_eq!(detected.role.as_deref(), Some("billing"));
        assert_eq!(detected.instance, None);
    }

    #[test]
    fn app_service_names_the_site_and_the_instance() {
        let detected = detect_in(&[
            ("WEBSITE_SITE_NAME", "orders-prod"),
            ("WEBSITE_INSTANCE_ID", "0a1b2c"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=shop"),
        ]);
        assert_eq!(detected.role.as_deref(), Some("shop.orders-prod"));
        assert_eq!(detected.instance.as_deref(), Some("0a1b2c"));
        // The instance id alone is not App Service.
        assert_eq!(detect_in(&[("WEBSITE_INSTANCE_ID", "x")]).instance, None);
    }

    #[test]
    fn kubernetes_names_the_workload_and_the_pod() {
        let detected = detect_in(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("HOSTNAME", "orders-5d8f7c9b4-x2x7q"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.replicaset.name=orders-5d8f7c9b4,k8s.deployment.name=orders,k8s.namespace.name=shop",
            ),
        ]);
        assert_eq!(detected.role.as_deref(), Some("orders"));
        assert_eq!(detected.instance.as_deref(), Some("orders-5d8f7c9b4-x2x7q"));
        let pod = detect_in(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("HOSTNAME", "from-hostname"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=from-attributes"),
        ]);
        assert_eq!(pod.instance.as_deref(), Some("from-attributes"));
        // HOSTNAME outside Kubernetes is no pod name: the host name is found otherwise.
        assert_eq!(detect_in(&[("HOSTNAME", "laptop")]).instance, None);
    }

    #[test]
    fn a_named_service_wins_over_the_workload() {
        let detected = detect_in(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("OTEL_SERVICE_NAME", "orders-api"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.deployment.name=orders"),
        ]);
        assert_eq!(detected.role.as_deref(), Some("orders-api"));
    }

    #[test]
    fn blank_values_count_as_unset() {
        let detected = detect_in(&[
            ("OTEL_SERVICE_NAME", " "),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=,service.namespace=",
            ),
        ]);
        assert_eq!(detected.role, None);
    }

    #[test]
    fn attribute_values_are_percent_decoded_and_a_malformed_list_is_ignored_whole() {
        assert_eq!(
            resource_attributes("service.name=a%2Cb%20c,x=%C3%A9"),
            Some(vec![
                ("service.name".into(), "a,b c".into()),
                ("x".into(), "é".into())
            ])
        );
        assert_eq!(resource_attributes("service.name=ok,broken"), None);
        assert_eq!(resource_attributes("service.name=%zz"), None);
        assert_eq!(resource_attributes("=value"), None);
        assert_eq!(resource_attributes("service.name=%C3"), None);
        assert_eq!(
            detect_in(&[(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=orders,service.instance.id=%"
            )]),
            Detected::default()
        );
    }
}
