//! Container environment as upstream's `makeEnvironmentVariables` builds it: service link
//! variables, `envFrom`, then `env` with `valueFrom` (fieldRef, resourceFieldRef,
//! configMapKeyRef, secretKeyRef) and `$(VAR)` expansion. The API objects are fetched before
//! (see [`EnvSources`]), so building is pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use crate::volumes::downward;

/// Objects the environment may refer to. `None` values are known to be missing.
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
    /// Services of the pod's namespace plus `default/kubernetes`.
    pub services: Vec<Service>,
}

pub use crate::volumes::downward::NodeAllocatable;

/// `CreateContainerConfigError`: the message shown in the container's waiting state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// ConfigMaps and Secrets the containers' environments name.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let spec = pod.spec.as_ref();
    let all = spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    });
    for c in all {
        for e in c.env.iter().flatten() {
            if let Some(vf) = &e.value_from {
                if let Some(r) = &vf.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &vf.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for ef in c.env_from.iter().flatten() {
            if let Some(r) = &ef.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &ef.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// Expand `$(VAR)` references from `env`; `$$` is a literal `$`; unknown references stay as
/// written (upstream's `expansion.Expand`).
pub fn expand(input: &str, env: &HashMap<String, String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match env.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// Docker-link style variables for services with a cluster IP, as upstream's
/// `getServiceEnvVarMap` (the `kubernetes` service of `default` always included).
pub fn service_env(services: &[Service], namespace: &str, links: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in services {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        let name = s.metadata.name.as_deref().unwrap_or("");
        let is_master = ns == "default" && name == "kubernetes";
        if !(is_master || (links && ns == namespace)) {
            continue;
        }
        let Some(spec) = &s.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        let Some(first) = ports.first() else { continue };
        let n = env_name(name);
        out.insert(format!("{n}_SERVICE_HOST"), ip.to_string());
        out.insert(format!("{n}_SERVICE_PORT"), first.port.to_string());
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|s| !s.is_empty()) {
                out.insert(
                    format!("{n}_SERVICE_PORT_{}", env_name(pn)),
                    p.port.to_string(),
                );
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_string()
        };
        out.insert(
            format!("{n}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        );
        for p in ports {
            let pr = proto(p);
            let prefix = format!("{n}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.insert(
                prefix.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            );
            out.insert(format!("{prefix}_PROTO"), pr.to_lowercase());
            out.insert(format!("{prefix}_PORT"), p.port.to_string());
            out.insert(format!("{prefix}_ADDR"), ip.to_string());
        }
    }
    out
}

fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ip: &str) -> Result<String, ConfigError> {
    let spec = pod.spec.as_ref();
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        p => downward::field_ref_value(pod, p).map_err(ConfigError)?,
    })
}

fn key_of(
    map: Option<&BTreeMap<String, String>>,
    bin: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
    key: &str,
) -> Option<String> {
    map.and_then(|m| m.get(key).cloned()).or_else(|| {
        bin.and_then(|m| m.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).to_string())
    })
}

/// The container's environment, in the order upstream passes it.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    src: &EnvSources,
    node: NodeAllocatable,
    host_ip: &str,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let service_vars = service_env(&src.services, ns, links);
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set =
        |k: String, v: String, order: &mut Vec<String>, vars: &mut HashMap<String, String>| {
            if !vars.contains_key(&k) {
                order.push(k.clone());
            }
            vars.insert(k, v);
        };

    for ef in c.env_from.iter().flatten() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        if let Some(r) = &ef.config_map_ref {
            match src.config_maps.get(&r.name).cloned().flatten() {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(format!("{prefix}{k}"), v.clone(), &mut order, &mut vars);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &ef.secret_ref {
            match src.secrets.get(&r.name).cloned().flatten() {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).to_string(),
                            &mut order,
                            &mut vars,
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
            }
        }
    }

    for e in c.env.iter().flatten() {
        let mut lookup: HashMap<String, String> = service_vars.clone().into_iter().collect();
        lookup.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        let value = if let Some(v) = &e.value {
            expand(v, &lookup)
        } else if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                field_value(pod, &f.field_path, host_ip, pod_ip)?
            } else if let Some(r) = &vf.resource_field_ref {
                let target = match r.container_name.as_deref().filter(|s| !s.is_empty()) {
                    Some(name) => downward::find_container(pod, name)
                        .ok_or_else(|| ConfigError(format!("container {name:?} not found")))?,
                    None => c,
                };
                downward::resource_field_value(target, r, &node).map_err(ConfigError)?
            } else if let Some(r) = &vf.config_map_key_ref {
                match src.config_maps.get(&r.name).cloned().flatten() {
                    Some(cm) => match key_of(cm.data.as_ref(), cm.binary_data.as_ref(), &r.key) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
                }
            } else if let Some(r) = &vf.secret_key_ref {
                match src.secrets.get(&r.name).cloned().flatten() {
                    Some(s) => match key_of(s.string_data.as_ref(), s.data.as_ref(), &r.key) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(e.name.clone(), value, &mut order, &mut vars);
    }

    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in &service_vars {
        if !vars.contains_key(k) {
            out.push((k.clone(), v.clone()));
        }
    }
    for k in order {
        let v = vars.remove(&k).unwrap_or_default();
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    #[test]
    fn expansion_follows_upstream() {
        let env: HashMap<String, String> = [("A".to_string(), "x".to_string())].into();
        let cases = [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$(A", "$(A"),
            ("$", "$"),
            ("ü$(A)", "üx"),
        ];
        for (i, want) in cases {
            assert_eq!(expand(i, &env), want, "{i}");
        }
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: n.map(str::to_string),
                            port: *p,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn service_links() {
        let services = vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443)],
            ),
            svc("shop", "my-svc", "10.96.0.20", &[(Some("http"), 80)]),
            svc("other", "x", "10.96.0.30", &[(None, 80)]),
            svc("shop", "headless", "None", &[(None, 80)]),
        ];
        let env = service_env(&services, "shop", true);
        assert_eq!(env["MY_SVC_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["MY_SVC_SERVICE_PORT"], "80");
        assert_eq!(env["MY_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["MY_SVC_PORT"], "tcp://10.96.0.20:80");
        assert_eq!(env["MY_SVC_PORT_80_TCP_ADDR"], "10.96.0.20");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert!(!env.contains_key("X_SERVICE_HOST"));
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));
        let env = service_env(&services, "shop", false);
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!env.contains_key("MY_SVC_SERVICE_HOST"));
    }

    #[test]
    fn env_sources_and_errors() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cm = ConfigMap {
            data: Some([("color".to_string(), "blue".to_string())].into()),
            ..Default::default()
        };
        let mut src = EnvSources::default();
        src.config_maps.insert("cfg".into(), Some(cm));
        src.config_maps.insert("gone".into(), None);
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                prefix: Some("CFG_".into()),
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                secret_ref: None,
            }]),
            env: Some(vec![
                var("A", "1"),
                var("B", "$(A)-$(CFG_color)"),
                from(
                    "NODE",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "spec.nodeName".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "APP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['app']".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "POD_IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "CPU",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.cpu".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        };
        let node = NodeAllocatable {
            cpu_milli: 2000,
            memory: 1 << 30,
            ephemeral_storage: 0,
        };
        let env: HashMap<_, _> = container_env(&pod, &c, &src, node, "192.168.1.2", "10.244.0.9")
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["CFG_color"], "blue");
        assert_eq!(env["B"], "1-blue");
        assert_eq!(env["NODE"], "n1");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["POD_IP"], "10.244.0.9");
        assert_eq!(env["CPU"], "2");

        let missing_key = Container {
            name: "c".into(),
            env: Some(vec![from(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cfg".into(),
                        key: "nope".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        assert_eq!(
            container_env(&pod, &missing_key, &src, node, "", "")
                .unwrap_err()
                .0,
            "couldn't find key nope in ConfigMap shop/cfg"
        );
        let missing_cm = Container {
            name: "c".into(),
            env: Some(vec![from(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "gone".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        assert_eq!(
            container_env(&pod, &missing_cm, &src, node, "", "")
                .unwrap_err()
                .0,
            "configmap \"gone\" not found"
        );
    }
}
