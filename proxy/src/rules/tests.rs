//! Table-driven tests of the rendered rules: exact iptables-restore lines per service feature,
//! hash compatibility with upstream, the restore diff and the cleanup text.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort as ApiPort,
    ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as ApiEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

// ---------------------------------------------------------------------------------------------
// Builders.

pub(crate) fn svc(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, i32, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| ApiPort {
                        name: (!n.is_empty()).then(|| n.to_string()),
                        port: *p,
                        protocol: Some(proto.to_string()),
                        target_port: Some(IntOrString::String(format!("t-{n}"))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

pub(crate) fn node_port(mut s: Service, ports: &[i32]) -> Service {
    let spec = s.spec.as_mut().unwrap();
    spec.type_ = Some("NodePort".into());
    for (p, np) in spec.ports.as_mut().unwrap().iter_mut().zip(ports) {
        p.node_port = Some(*np);
    }
    s
}

pub(crate) fn load_balancer(s: Service, ports: &[i32], ips: &[&str]) -> Service {
    let mut s = node_port(s, ports);
    s.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
    s.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(
                ips.iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    });
    s
}

pub(crate) fn with_spec(mut s: Service, f: impl FnOnce(&mut ServiceSpec)) -> Service {
    f(s.spec.as_mut().unwrap());
    s
}

/// (ip, node, ready, serving, terminating)
pub(crate) type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

pub(crate) fn slice(
    ns: &str,
    svc: &str,
    suffix: &str,
    ports: &[(&str, i32, &str)],
    eps: &[Ep],
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(format!("{svc}-{suffix}")),
            labels: Some(BTreeMap::from([(
                crate::model::SERVICE_NAME_LABEL.to_string(),
                svc.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, proto)| EndpointPort {
                    name: (!n.is_empty()).then(|| n.to_string()),
                    port: Some(*p),
                    protocol: Some(proto.to_string()),
                    app_protocol: None,
                })
                .collect(),
        ),
        endpoints: Some(
            eps.iter()
                .map(|(ip, node, ready, serving, terminating)| ApiEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: (!node.is_empty()).then(|| node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*terminating),
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

pub(crate) fn ready(ip: &str) -> Ep<'_> {
    (ip, "node-b", true, true, false)
}

pub(crate) fn ready_on<'a>(ip: &'a str, node: &'a str) -> Ep<'a> {
    (ip, node, true, true, false)
}

pub(crate) fn config() -> RenderConfig {
    RenderConfig {
        node_name: "node-a".into(),
        cluster_cidr: Cidr::parse("10.244.0.0/16"),
        ..Default::default()
    }
}

fn run(svcs: Vec<Service>, slices: Vec<EndpointSlice>) -> Rendered {
    let svcs: Vec<Arc<Service>> = svcs.into_iter().map(Arc::new).collect();
    let slices: Vec<Arc<EndpointSlice>> = slices.into_iter().map(Arc::new).collect();
    let r = render(&svcs, &slices, &config());
    check_jumps(&r.rules);
    r
}

const FIXED_RULES: &[&str] = &[
    "filter -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT",
    "filter -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "nat -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    "nat -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
    "nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    "nat -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS",
];

/// The service-specific rules as `table -A chain rule` lines (the fixed ones left out).
fn service_rules(r: &Rendered) -> Vec<String> {
    let mut out = Vec::new();
    for (t, table) in [("filter", &r.rules.filter), ("nat", &r.rules.nat)] {
        for c in table.chain_names() {
            for rule in table.rules(c).unwrap() {
                let line = format!("{t} -A {c} {rule}");
                if !FIXED_RULES.contains(&line.as_str()) {
                    out.push(line);
                }
            }
        }
    }
    out
}

/// Upstream's `checkIPTablesRuleJumps`: every jump goes to a chain that exists and has rules
/// (KUBE-NODEPORTS may be empty), and every non-fixed chain is jumped to.
fn check_jumps(rs: &Ruleset) {
    for (name, table, fixed) in [
        ("filter", &rs.filter, FILTER_FIXED),
        ("nat", &rs.nat, NAT_FIXED),
    ] {
        let mut jumped = BTreeSet::new();
        for c in table.chain_names() {
            for rule in table.rules(c).unwrap() {
                let words: Vec<&str> = rule.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "-j") {
                    let target = words[i + 1];
                    if target.starts_with("KUBE-") {
                        jumped.insert(target.to_string());
                        let rules = table.rules(target);
                        assert!(rules.is_some(), "{name}: {c} jumps to missing {target}");
                        assert!(
                            target == KUBE_NODEPORTS || !rules.unwrap().is_empty(),
                            "{name}: {c} jumps to empty {target}"
                        );
                    }
                }
            }
        }
        for c in table.chain_names() {
            assert!(
                fixed.contains(&c) || jumped.contains(c),
                "{name}: chain {c} is created but never used"
            );
        }
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Hashes.

#[test]
fn chain_names_hash_like_upstream() {
    // Values from upstream kube-proxy's own test fixtures.
    let key = PortKey {
        namespace: "ns1".into(),
        name: "svc1".into(),
        port_name: "p80".into(),
        protocol: Protocol::Tcp,
    };
    assert_eq!(svc_chain(&key), "KUBE-SVC-XPGD46QRK7WJZT7O");
    let ep = Endpoint {
        ip: "10.180.0.1".parse().unwrap(),
        port: 80,
        ready: true,
        serving: true,
        terminating: false,
        local: false,
    };
    assert_eq!(sep_chain(&key, &ep), "KUBE-SEP-SXIVWICOYRO3J4NJ");
    assert_eq!(probability(3), "0.3333333333");
    assert_eq!(probability(2), "0.5000000000");
}

// ---------------------------------------------------------------------------------------------
// Rendered rules per feature.

struct Case {
    name: &'static str,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    want: &'static str,
}

fn cases() -> Vec<Case> {
    let p80 = &[("p80", 80, "TCP")][..];
    let t80 = &[("p80", 8080, "TCP")][..];
    vec![
        Case {
            name: "cluster IP with one endpoint: off-cluster masquerade, hairpin, DNAT",
            services: vec![svc("ns1", "svc1", "10.96.0.41", p80)],
            slices: vec![slice("ns1", "svc1", "a", t80, &[ready("10.244.1.5")])],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.96.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
                nat -A KUBE-SEP-4DLQR6XP64U3IHTN -m comment --comment ns1/svc1:p80 -s 10.244.1.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-4DLQR6XP64U3IHTN -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
                nat -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.96.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.5:8080" -j KUBE-SEP-4DLQR6XP64U3IHTN
            "#,
        },
        Case {
            name: "three ready endpoints balance 1/3, 1/2, rest; unready ones are skipped",
            services: vec![svc("ns1", "svc1", "10.96.0.41", p80)],
            slices: vec![
                slice("ns1", "svc1", "a", t80, &[ready("10.244.1.5"), ready("10.244.2.5")]),
                slice(
                    "ns1",
                    "svc1",
                    "b",
                    t80,
                    &[ready("10.244.3.5"), ("10.244.4.5", "node-b", false, false, false)],
                ),
            ],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.96.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
                nat -A KUBE-SEP-4DLQR6XP64U3IHTN -m comment --comment ns1/svc1:p80 -s 10.244.1.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-4DLQR6XP64U3IHTN -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
                nat -A KUBE-SEP-EADMY2R5OUQGVS7E -m comment --comment ns1/svc1:p80 -s 10.244.3.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-EADMY2R5OUQGVS7E -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.3.5:8080
                nat -A KUBE-SEP-FTQDUIX2Y5S6ID6R -m comment --comment ns1/svc1:p80 -s 10.244.2.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-FTQDUIX2Y5S6ID6R -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.2.5:8080
                nat -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.96.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.1.5:8080" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-4DLQR6XP64U3IHTN
                nat -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.2.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-FTQDUIX2Y5S6ID6R
                nat -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.244.3.5:8080" -j KUBE-SEP-EADMY2R5OUQGVS7E
            "#,
        },
        Case {
            name: "serving terminating endpoints are used only when none is ready",
            services: vec![
                svc("ns1", "only-terminating", "10.96.0.42", p80),
                svc("ns1", "mixed", "10.96.0.43", p80),
            ],
            slices: vec![
                slice(
                    "ns1",
                    "only-terminating",
                    "a",
                    t80,
                    &[
                        ("10.244.1.6", "node-b", false, true, true),
                        ("10.244.1.7", "node-b", false, false, true),
                    ],
                ),
                slice(
                    "ns1",
                    "mixed",
                    "a",
                    t80,
                    &[ready("10.244.1.8"), ("10.244.1.9", "node-b", false, true, true)],
                ),
            ],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns1/mixed:p80 cluster IP" -m tcp -p tcp -d 10.96.0.43 --dport 80 -j KUBE-SVC-NRHRTSPWYXGKRTRR
                nat -A KUBE-SERVICES -m comment --comment "ns1/only-terminating:p80 cluster IP" -m tcp -p tcp -d 10.96.0.42 --dport 80 -j KUBE-SVC-BB4PIY7CYF36MJGA
                nat -A KUBE-SEP-EF55F2N5FJEYYD4Z -m comment --comment ns1/mixed:p80 -s 10.244.1.8 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-EF55F2N5FJEYYD4Z -m comment --comment ns1/mixed:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.8:8080
                nat -A KUBE-SEP-PB5LJZCFNYUQQE2C -m comment --comment ns1/only-terminating:p80 -s 10.244.1.6 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-PB5LJZCFNYUQQE2C -m comment --comment ns1/only-terminating:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.6:8080
                nat -A KUBE-SVC-BB4PIY7CYF36MJGA -m comment --comment "ns1/only-terminating:p80 cluster IP" -m tcp -p tcp -d 10.96.0.42 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-BB4PIY7CYF36MJGA -m comment --comment "ns1/only-terminating:p80 -> 10.244.1.6:8080" -j KUBE-SEP-PB5LJZCFNYUQQE2C
                nat -A KUBE-SVC-NRHRTSPWYXGKRTRR -m comment --comment "ns1/mixed:p80 cluster IP" -m tcp -p tcp -d 10.96.0.43 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-NRHRTSPWYXGKRTRR -m comment --comment "ns1/mixed:p80 -> 10.244.1.8:8080" -j KUBE-SEP-EF55F2N5FJEYYD4Z
            "#,
        },
        Case {
            name: "no endpoints: cluster IP and node port rejected in filter",
            services: vec![node_port(svc("ns1", "empty", "10.96.0.44", p80), &[30044])],
            slices: vec![],
            want: r#"
                filter -A KUBE-SERVICES -m comment --comment "ns1/empty:p80 has no endpoints" -m tcp -p tcp -d 10.96.0.44 --dport 80 -j REJECT
                filter -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/empty:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30044 -j REJECT
            "#,
        },
        Case {
            name: "node port, external IP and load-balancer IP with Cluster policy",
            services: vec![with_spec(
                load_balancer(
                    svc("ns1", "lb", "10.96.0.45", p80),
                    &[30045],
                    &["192.168.1.100"],
                ),
                |s| s.external_ips = Some(vec!["203.0.113.7".into()]),
            )],
            slices: vec![slice("ns1", "lb", "a", t80, &[ready("10.244.1.5")])],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns1/lb:p80 cluster IP" -m tcp -p tcp -d 10.96.0.45 --dport 80 -j KUBE-SVC-NLSY6DROL7JRYYAN
                nat -A KUBE-SERVICES -m comment --comment "ns1/lb:p80 external IP" -m tcp -p tcp -d 203.0.113.7 --dport 80 -j KUBE-EXT-NLSY6DROL7JRYYAN
                nat -A KUBE-SERVICES -m comment --comment "ns1/lb:p80 loadbalancer IP" -m tcp -p tcp -d 192.168.1.100 --dport 80 -j KUBE-EXT-NLSY6DROL7JRYYAN
                nat -A KUBE-NODEPORTS -m comment --comment ns1/lb:p80 -m tcp -p tcp --dport 30045 -j KUBE-EXT-NLSY6DROL7JRYYAN
                nat -A KUBE-EXT-NLSY6DROL7JRYYAN -m comment --comment "masquerade traffic for ns1/lb:p80 external destinations" -j KUBE-MARK-MASQ
                nat -A KUBE-EXT-NLSY6DROL7JRYYAN -j KUBE-SVC-NLSY6DROL7JRYYAN
                nat -A KUBE-SEP-5J4CC7QJGMUBVQLB -m comment --comment ns1/lb:p80 -s 10.244.1.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-5J4CC7QJGMUBVQLB -m comment --comment ns1/lb:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
                nat -A KUBE-SVC-NLSY6DROL7JRYYAN -m comment --comment "ns1/lb:p80 cluster IP" -m tcp -p tcp -d 10.96.0.45 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-NLSY6DROL7JRYYAN -m comment --comment "ns1/lb:p80 -> 10.244.1.5:8080" -j KUBE-SEP-5J4CC7QJGMUBVQLB
            "#,
        },
        Case {
            name: "externalTrafficPolicy Local: local endpoints for external, short-circuits, no masquerade",
            services: vec![with_spec(
                load_balancer(svc("ns1", "local", "10.96.0.46", p80), &[30046], &["192.168.1.101"]),
                |s| s.external_traffic_policy = Some("Local".into()),
            )],
            slices: vec![slice(
                "ns1",
                "local",
                "a",
                t80,
                &[ready_on("10.244.0.5", "node-a"), ready("10.244.1.5")],
            )],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns1/local:p80 cluster IP" -m tcp -p tcp -d 10.96.0.46 --dport 80 -j KUBE-SVC-2CRF3RRPQQDDGG6U
                nat -A KUBE-SERVICES -m comment --comment "ns1/local:p80 loadbalancer IP" -m tcp -p tcp -d 192.168.1.101 --dport 80 -j KUBE-EXT-2CRF3RRPQQDDGG6U
                nat -A KUBE-NODEPORTS -m comment --comment ns1/local:p80 -m tcp -p tcp --dport 30046 -j KUBE-EXT-2CRF3RRPQQDDGG6U
                nat -A KUBE-EXT-2CRF3RRPQQDDGG6U -m comment --comment "pod traffic for ns1/local:p80 external destinations" -s 10.244.0.0/16 -j KUBE-SVC-2CRF3RRPQQDDGG6U
                nat -A KUBE-EXT-2CRF3RRPQQDDGG6U -m comment --comment "masquerade LOCAL traffic for ns1/local:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
                nat -A KUBE-EXT-2CRF3RRPQQDDGG6U -m comment --comment "route LOCAL traffic for ns1/local:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-2CRF3RRPQQDDGG6U
                nat -A KUBE-EXT-2CRF3RRPQQDDGG6U -j KUBE-SVL-2CRF3RRPQQDDGG6U
                nat -A KUBE-SEP-H3PCZ5QGZVGK3MON -m comment --comment ns1/local:p80 -s 10.244.0.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-H3PCZ5QGZVGK3MON -m comment --comment ns1/local:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.0.5:8080
                nat -A KUBE-SEP-NU2BBISSZUP43QJK -m comment --comment ns1/local:p80 -s 10.244.1.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-NU2BBISSZUP43QJK -m comment --comment ns1/local:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
                nat -A KUBE-SVC-2CRF3RRPQQDDGG6U -m comment --comment "ns1/local:p80 cluster IP" -m tcp -p tcp -d 10.96.0.46 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-2CRF3RRPQQDDGG6U -m comment --comment "ns1/local:p80 -> 10.244.0.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-H3PCZ5QGZVGK3MON
                nat -A KUBE-SVC-2CRF3RRPQQDDGG6U -m comment --comment "ns1/local:p80 -> 10.244.1.5:8080" -j KUBE-SEP-NU2BBISSZUP43QJK
                nat -A KUBE-SVL-2CRF3RRPQQDDGG6U -m comment --comment "ns1/local:p80 -> 10.244.0.5:8080" -j KUBE-SEP-H3PCZ5QGZVGK3MON
            "#,
        },
        Case {
            name: "externalTrafficPolicy Local without local endpoints drops external traffic",
            services: vec![with_spec(
                node_port(svc("ns1", "remote", "10.96.0.47", p80), &[30047]),
                |s| s.external_traffic_policy = Some("Local".into()),
            )],
            slices: vec![slice("ns1", "remote", "a", t80, &[ready("10.244.1.5")])],
            want: r#"
                filter -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/remote:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30047 -j DROP
                nat -A KUBE-SERVICES -m comment --comment "ns1/remote:p80 cluster IP" -m tcp -p tcp -d 10.96.0.47 --dport 80 -j KUBE-SVC-46I3HGCAZED44D56
                nat -A KUBE-NODEPORTS -m comment --comment ns1/remote:p80 -m tcp -p tcp --dport 30047 -j KUBE-EXT-46I3HGCAZED44D56
                nat -A KUBE-EXT-46I3HGCAZED44D56 -m comment --comment "pod traffic for ns1/remote:p80 external destinations" -s 10.244.0.0/16 -j KUBE-SVC-46I3HGCAZED44D56
                nat -A KUBE-EXT-46I3HGCAZED44D56 -m comment --comment "masquerade LOCAL traffic for ns1/remote:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
                nat -A KUBE-EXT-46I3HGCAZED44D56 -m comment --comment "route LOCAL traffic for ns1/remote:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-46I3HGCAZED44D56
                nat -A KUBE-SEP-ZE7F4ODICB46KGY3 -m comment --comment ns1/remote:p80 -s 10.244.1.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-ZE7F4ODICB46KGY3 -m comment --comment ns1/remote:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
                nat -A KUBE-SVC-46I3HGCAZED44D56 -m comment --comment "ns1/remote:p80 cluster IP" -m tcp -p tcp -d 10.96.0.47 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-46I3HGCAZED44D56 -m comment --comment "ns1/remote:p80 -> 10.244.1.5:8080" -j KUBE-SEP-ZE7F4ODICB46KGY3
            "#,
        },
        Case {
            name: "internalTrafficPolicy Local: cluster IP only to local endpoints, DROP without",
            services: vec![
                with_spec(svc("ns1", "itp", "10.96.0.48", p80), |s| {
                    s.internal_traffic_policy = Some("Local".into())
                }),
                with_spec(svc("ns1", "itp-none", "10.96.0.49", p80), |s| {
                    s.internal_traffic_policy = Some("Local".into())
                }),
            ],
            slices: vec![
                slice(
                    "ns1",
                    "itp",
                    "a",
                    t80,
                    &[ready_on("10.244.0.5", "node-a"), ready("10.244.1.5")],
                ),
                slice("ns1", "itp-none", "a", t80, &[ready("10.244.1.6")]),
            ],
            want: r#"
                filter -A KUBE-SERVICES -m comment --comment "ns1/itp-none:p80 has no local endpoints" -m tcp -p tcp -d 10.96.0.49 --dport 80 -j DROP
                nat -A KUBE-SERVICES -m comment --comment "ns1/itp:p80 cluster IP" -m tcp -p tcp -d 10.96.0.48 --dport 80 -j KUBE-SVL-RYIUIQMBUNQYMGXY
                nat -A KUBE-SEP-DUZWNHRLPD6YOLI7 -m comment --comment ns1/itp:p80 -s 10.244.0.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-DUZWNHRLPD6YOLI7 -m comment --comment ns1/itp:p80 -m tcp -p tcp -j DNAT --to-destination 10.244.0.5:8080
                nat -A KUBE-SVL-RYIUIQMBUNQYMGXY -m comment --comment "ns1/itp:p80 cluster IP" -m tcp -p tcp -d 10.96.0.48 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVL-RYIUIQMBUNQYMGXY -m comment --comment "ns1/itp:p80 -> 10.244.0.5:8080" -j KUBE-SEP-DUZWNHRLPD6YOLI7
            "#,
        },
        Case {
            name: "sessionAffinity ClientIP: recent checks with the timeout, then balancing",
            services: vec![with_spec(svc("ns1", "sticky", "10.96.0.50", p80), |s| {
                s.session_affinity = Some("ClientIP".into());
                s.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(600),
                    }),
                });
            })],
            slices: vec![slice(
                "ns1",
                "sticky",
                "a",
                t80,
                &[ready("10.244.1.5"), ready("10.244.2.5")],
            )],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns1/sticky:p80 cluster IP" -m tcp -p tcp -d 10.96.0.50 --dport 80 -j KUBE-SVC-F7REZHQFGEE5SPJR
                nat -A KUBE-SEP-2LSVRRQHRN4MZPOY -m comment --comment ns1/sticky:p80 -s 10.244.2.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-2LSVRRQHRN4MZPOY -m comment --comment ns1/sticky:p80 -m recent --name KUBE-SEP-2LSVRRQHRN4MZPOY --set -m tcp -p tcp -j DNAT --to-destination 10.244.2.5:8080
                nat -A KUBE-SEP-5ZSXIG2445CQQ2HW -m comment --comment ns1/sticky:p80 -s 10.244.1.5 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-5ZSXIG2445CQQ2HW -m comment --comment ns1/sticky:p80 -m recent --name KUBE-SEP-5ZSXIG2445CQQ2HW --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
                nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m comment --comment "ns1/sticky:p80 cluster IP" -m tcp -p tcp -d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m comment --comment "ns1/sticky:p80 -> 10.244.1.5:8080" -m recent --name KUBE-SEP-5ZSXIG2445CQQ2HW --rcheck --seconds 600 --reap -j KUBE-SEP-5ZSXIG2445CQQ2HW
                nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m comment --comment "ns1/sticky:p80 -> 10.244.2.5:8080" -m recent --name KUBE-SEP-2LSVRRQHRN4MZPOY --rcheck --seconds 600 --reap -j KUBE-SEP-2LSVRRQHRN4MZPOY
                nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m comment --comment "ns1/sticky:p80 -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-5ZSXIG2445CQQ2HW
                nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m comment --comment "ns1/sticky:p80 -> 10.244.2.5:8080" -j KUBE-SEP-2LSVRRQHRN4MZPOY
            "#,
        },
        Case {
            name: "named target ports resolve per slice; UDP and SCTP; unnamed single port",
            services: vec![
                svc(
                    "ns2",
                    "dns",
                    "10.96.0.10",
                    &[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("sctp", 9999, "SCTP")],
                ),
                svc("ns2", "plain", "10.96.0.11", &[("", 80, "TCP")]),
            ],
            slices: vec![
                slice(
                    "ns2",
                    "dns",
                    "a",
                    &[("dns", 5353, "UDP"), ("dns-tcp", 5354, "TCP"), ("sctp", 9998, "SCTP")],
                    &[ready("10.244.1.10")],
                ),
                slice("ns2", "plain", "a", &[("", 8080, "TCP")], &[ready("10.244.1.11")]),
            ],
            want: r#"
                nat -A KUBE-SERVICES -m comment --comment "ns2/dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-P2PEPPDBVJT3HIZY
                nat -A KUBE-SERVICES -m comment --comment "ns2/dns:dns-tcp cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 53 -j KUBE-SVC-IEA4NUIZNX7PDRM7
                nat -A KUBE-SERVICES -m comment --comment "ns2/plain cluster IP" -m tcp -p tcp -d 10.96.0.11 --dport 80 -j KUBE-SVC-CVO7T7MMEN57LYCD
                nat -A KUBE-SERVICES -m comment --comment "ns2/dns:sctp cluster IP" -m sctp -p sctp -d 10.96.0.10 --dport 9999 -j KUBE-SVC-BZ6SXA4ZHVDNFRNS
                nat -A KUBE-SEP-4GIMOMTATLA6AF2T -m comment --comment ns2/dns:dns -s 10.244.1.10 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-4GIMOMTATLA6AF2T -m comment --comment ns2/dns:dns -m udp -p udp -j DNAT --to-destination 10.244.1.10:5353
                nat -A KUBE-SEP-LJ7IFMPRAEUJG4MP -m comment --comment ns2/plain -s 10.244.1.11 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-LJ7IFMPRAEUJG4MP -m comment --comment ns2/plain -m tcp -p tcp -j DNAT --to-destination 10.244.1.11:8080
                nat -A KUBE-SEP-TEK5RB3RGEDM7GR6 -m comment --comment ns2/dns:dns-tcp -s 10.244.1.10 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-TEK5RB3RGEDM7GR6 -m comment --comment ns2/dns:dns-tcp -m tcp -p tcp -j DNAT --to-destination 10.244.1.10:5354
                nat -A KUBE-SEP-TETOD6QPBS7QDWZ6 -m comment --comment ns2/dns:sctp -s 10.244.1.10 -j KUBE-MARK-MASQ
                nat -A KUBE-SEP-TETOD6QPBS7QDWZ6 -m comment --comment ns2/dns:sctp -m sctp -p sctp -j DNAT --to-destination 10.244.1.10:9998
                nat -A KUBE-SVC-BZ6SXA4ZHVDNFRNS -m comment --comment "ns2/dns:sctp cluster IP" -m sctp -p sctp -d 10.96.0.10 --dport 9999 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-BZ6SXA4ZHVDNFRNS -m comment --comment "ns2/dns:sctp -> 10.244.1.10:9998" -j KUBE-SEP-TETOD6QPBS7QDWZ6
                nat -A KUBE-SVC-CVO7T7MMEN57LYCD -m comment --comment "ns2/plain cluster IP" -m tcp -p tcp -d 10.96.0.11 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-CVO7T7MMEN57LYCD -m comment --comment "ns2/plain -> 10.244.1.11:8080" -j KUBE-SEP-LJ7IFMPRAEUJG4MP
                nat -A KUBE-SVC-IEA4NUIZNX7PDRM7 -m comment --comment "ns2/dns:dns-tcp cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 53 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-IEA4NUIZNX7PDRM7 -m comment --comment "ns2/dns:dns-tcp -> 10.244.1.10:5354" -j KUBE-SEP-TEK5RB3RGEDM7GR6
                nat -A KUBE-SVC-P2PEPPDBVJT3HIZY -m comment --comment "ns2/dns:dns cluster IP" -m udp -p udp -d 10.96.0.10 --dport 53 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
                nat -A KUBE-SVC-P2PEPPDBVJT3HIZY -m comment --comment "ns2/dns:dns -> 10.244.1.10:5353" -j KUBE-SEP-4GIMOMTATLA6AF2T
            "#,
        },
    ]
}

#[test]
fn rendered_rules_per_service_feature() {
    let print = std::env::var_os("PRINT_RULES").is_some();
    let mut failed = Vec::new();
    for c in cases() {
        let r = run(c.services, c.slices);
        assert!(r.warnings.is_empty(), "{}: {:?}", c.name, r.warnings);
        let got = service_rules(&r);
        if print {
            println!("=== {}\n{}\n", c.name, got.join("\n"));
        }
        if got != lines(c.want) {
            failed.push(format!("--- {}\n{}", c.name, got.join("\n")));
        }
    }
    assert!(failed.is_empty(), "rules differ:\n{}", failed.join("\n\n"));
}

#[test]
fn nat_service_and_node_port_rules_go_by_jump_target_descending_the_tail_last() {
    // The order that keeps iptables-restore (nf_tables backend) from walking its sorted list
    // of chain names from the start for every rule (`order_by_target`).
    let services: Vec<_> = (0..12)
        .map(|i| {
            with_spec(
                svc(
                    "ns1",
                    &format!("s{i}"),
                    &format!("10.96.1.{i}"),
                    &[("p80", 80, "TCP")],
                ),
                |s| {
                    if i % 3 == 0 {
                        s.type_ = Some("NodePort".into());
                        s.ports.as_mut().unwrap()[0].node_port = Some(30000 + i);
                        s.external_ips = Some(vec![format!("192.168.0.{i}")]);
                    }
                },
            )
        })
        .collect();
    let slices: Vec<_> = (0..12)
        .map(|i| {
            slice(
                "ns1",
                &format!("s{i}"),
                "a",
                &[("p80", 8080, "TCP")],
                &[ready(&format!("10.244.1.{i}"))],
            )
        })
        .collect();
    let r = run(services, slices);
    let target = |rule: &String| rule.rsplit_once(" -j ").unwrap().1.to_string();
    let svcs = r.rules.nat.rules(KUBE_SERVICES).unwrap();
    let (tail, rest) = svcs.split_last().unwrap();
    assert!(tail.ends_with("-j KUBE-NODEPORTS"), "{tail}");
    assert_eq!(rest.len(), 16);
    let targets: Vec<String> = rest.iter().map(target).collect();
    let mut sorted = targets.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(targets, sorted);
    let nodeports: Vec<String> = r
        .rules
        .nat
        .rules(KUBE_NODEPORTS)
        .unwrap()
        .iter()
        .map(target)
        .collect();
    assert_eq!(nodeports.len(), 4);
    let mut sorted = nodeports.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(nodeports, sorted);
}

#[test]
fn full_restore_text_declares_every_chain_then_rules() {
    let r = run(
        vec![svc("ns1", "svc1", "10.96.0.41", &[("p80", 80, "TCP")])],
        vec![slice(
            "ns1",
            "svc1",
            "a",
            &[("p80", 80, "TCP")],
            &[ready("10.180.0.1")],
        )],
    );
    let want = r#"
        *filter
        :KUBE-SERVICES - [0:0]
        :KUBE-EXTERNAL-SERVICES - [0:0]
        :KUBE-FORWARD - [0:0]
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
        -A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
        COMMIT
        *nat
        :KUBE-SERVICES - [0:0]
        :KUBE-NODEPORTS - [0:0]
        :KUBE-POSTROUTING - [0:0]
        :KUBE-MARK-MASQ - [0:0]
        :KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
        :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
        -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.96.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
        -A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
        -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
        -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
        -A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
        -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
        -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
        -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.96.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
        -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
        COMMIT
    "#;
    assert_eq!(lines(&restore_text(&r.rules, None, &[])), lines(want));
}

#[test]
fn masquerade_all_and_no_cluster_cidr() {
    let svcs = vec![Arc::new(svc(
        "ns1",
        "svc1",
        "10.96.0.41",
        &[("p80", 80, "TCP")],
    ))];
    let slices = vec![Arc::new(slice(
        "ns1",
        "svc1",
        "a",
        &[("p80", 80, "TCP")],
        &[ready("10.180.0.1")],
    ))];
    let mut cfg = config();
    cfg.masquerade_all = true;
    let r = render(&svcs, &slices, &cfg);
    assert_eq!(
        r.rules.nat.rules("KUBE-SVC-XPGD46QRK7WJZT7O").unwrap()[0],
        "-m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 10.96.0.41 --dport 80 -j KUBE-MARK-MASQ"
    );
    cfg.masquerade_all = false;
    cfg.cluster_cidr = None;
    let r = render(&svcs, &slices, &cfg);
    assert_eq!(
        r.rules.nat.rules("KUBE-SVC-XPGD46QRK7WJZT7O").unwrap(),
        ["-m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -j KUBE-SEP-SXIVWICOYRO3J4NJ"]
    );
}

#[test]
fn bad_services_are_reported_and_never_break_others() {
    let mut odd = svc(
        "ns1",
        "odd",
        "10.96.0.60",
        &[("p80", 80, "TCP"), ("weird", 81, "ICMP")],
    );
    // Same port twice (the API rejects this; a stale object or another writer may not).
    odd.spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .push(ApiPort {
            name: Some("again".into()),
            port: 80,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    let mut older = node_port(
        svc("ns1", "older", "10.96.0.61", &[("p80", 80, "TCP")]),
        &[30080],
    );
    older.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2020-01-01T00:00:00Z".parse().unwrap(),
    ));
    let mut younger = node_port(
        svc("ns1", "younger", "10.96.0.62", &[("p80", 80, "TCP")]),
        &[30080],
    );
    younger.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2021-01-01T00:00:00Z".parse().unwrap(),
        ));
    let eps = |n: &str, ip: &'static str| slice("ns1", n, "a", &[("p80", 80, "TCP")], &[ready(ip)]);
    let svcs: Vec<Arc<Service>> = [odd, younger, older].into_iter().map(Arc::new).collect();
    let slices: Vec<Arc<EndpointSlice>> = [
        eps("odd", "10.244.1.1"),
        eps("older", "10.244.1.2"),
        eps("younger", "10.244.1.3"),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let r = render(&svcs, &slices, &config());
    check_jumps(&r.rules);
    let got: Vec<(String, &str, String)> = r
        .warnings
        .iter()
        .map(|w| (w.name.clone(), w.reason, w.message.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "odd".to_string(),
                "PortConflict",
                "port \"again\" (80/tcp) duplicates port \"p80\" (80/tcp); ignored".to_string()
            ),
            (
                "odd".to_string(),
                "UnsupportedProtocol",
                "port \"weird\" (81) has protocol \"ICMP\", which the proxy does not support; ignored"
                    .to_string()
            ),
            (
                "younger".to_string(),
                "PortConflict",
                "node port 30080/tcp is already used by ns1/older:p80; not programmed for ns1/younger:p80"
                    .to_string()
            ),
        ]
    );
    // Every service still has its cluster IP; only the older one has the node port.
    let nat = r.rules.nat.rules(KUBE_SERVICES).unwrap().join("\n");
    for ip in ["10.96.0.60", "10.96.0.61", "10.96.0.62"] {
        assert!(
            nat.contains(&format!("-d {ip} --dport 80")),
            "{ip} missing:\n{nat}"
        );
    }
    let np = r.rules.nat.rules(KUBE_NODEPORTS).unwrap();
    assert_eq!(np.len(), 1);
    assert!(np[0].contains("ns1/older:p80"), "{np:?}");
}

#[test]
fn headless_external_name_and_other_proxy_services_get_no_rules() {
    let headless = svc("ns1", "headless", "None", &[("p80", 80, "TCP")]);
    let mut ext = svc("ns1", "ext", "", &[("p80", 80, "TCP")]);
    ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let mut other = svc("ns1", "other", "10.96.0.70", &[("p80", 80, "TCP")]);
    other.metadata.labels = Some(BTreeMap::from([(
        crate::model::SERVICE_PROXY_NAME_LABEL.to_string(),
        "someone-else".to_string(),
    )]));
    let r = run(vec![headless, ext, other], vec![]);
    assert!(service_rules(&r).is_empty(), "{:?}", service_rules(&r));
    assert!(r.warnings.is_empty());
}

#[test]
fn restore_diff_rewrites_changed_chains_and_deletes_stale_ones() {
    let p80 = &[("p80", 80, "TCP")][..];
    let before = run(
        vec![
            svc("ns1", "svc1", "10.96.0.41", p80),
            svc("ns1", "gone", "10.96.0.42", p80),
        ],
        vec![
            slice(
                "ns1",
                "svc1",
                "a",
                p80,
                &[ready("10.180.0.1"), ready("10.180.0.2")],
            ),
            slice("ns1", "gone", "a", p80, &[ready("10.180.0.3")]),
        ],
    );
    // Nothing changed: nothing to restore.
    assert_eq!(restore_text(&before.rules, Some(&before.rules), &[]), "");
    let after = run(
        vec![svc("ns1", "svc1", "10.96.0.41", p80)],
        vec![slice("ns1", "svc1", "a", p80, &[ready("10.180.0.1")])],
    );
    let key = |name: &str| PortKey {
        namespace: "ns1".into(),
        name: name.into(),
        port_name: "p80".into(),
        protocol: Protocol::Tcp,
    };
    let ep = |ip: &str| Endpoint {
        ip: ip.parse().unwrap(),
        port: 80,
        ready: true,
        serving: true,
        terminating: false,
        local: false,
    };
    let text = restore_text(
        &after.rules,
        Some(&before.rules),
        &[("nat".into(), "KUBE-SEP-LEFTOVER0000000".into())],
    );
    let want = format!(
        "*nat\n:KUBE-SERVICES - [0:0]\n:{svc1} - [0:0]\n:{gone_sep} - [0:0]\n:{gone_svc} - [0:0]\n:KUBE-SEP-LEFTOVER0000000 - [0:0]\n:{sep2} - [0:0]\n\
         -A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 10.96.0.41 --dport 80 -j {svc1}\n\
         -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS\n\
         -A {svc1} -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 10.96.0.41 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n\
         -A {svc1} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -j {sep1}\n\
         -X {gone_sep}\n-X {gone_svc}\n-X KUBE-SEP-LEFTOVER0000000\n-X {sep2}\nCOMMIT\n",
        svc1 = svc_chain(&key("svc1")),
        sep1 = sep_chain(&key("svc1"), &ep("10.180.0.1")),
        sep2 = sep_chain(&key("svc1"), &ep("10.180.0.2")),
        gone_svc = svc_chain(&key("gone")),
        gone_sep = sep_chain(&key("gone"), &ep("10.180.0.3")),
    );
    // Stale chains are deleted in name order.
    let mut want_lines = lines(&want);
    let mut got_lines = lines(&text);
    want_lines.sort();
    got_lines.sort();
    assert_eq!(got_lines, want_lines, "\n{text}");
    // The unchanged endpoint chain of svc1 is not touched.
    assert!(!text.contains(&format!(":{} ", sep_chain(&key("svc1"), &ep("10.180.0.1")))));
}

#[test]
fn owned_chains_are_found_in_iptables_save() {
    let save = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-AAAA - [0:0]\n:KUBE-SEP-BBBB - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:CNI-1234 - [0:0]\nCOMMIT\n";
    assert_eq!(
        owned_chains_in_save(save),
        vec![
            ("nat".to_string(), "KUBE-SVC-AAAA".to_string()),
            ("nat".to_string(), "KUBE-SEP-BBBB".to_string())
        ]
    );
    assert!(save_has_chain(save, "nat", KUBE_MARK_MASQ));
    assert!(save_has_chain(save, "filter", "KUBE-SERVICES"));
    assert!(!save_has_chain(save, "filter", KUBE_MARK_MASQ));
    assert!(!save_has_chain(save, "nat", "KUBE-SVC-AAA"));
}

#[test]
fn cleanup_removes_jumps_and_every_kube_chain_only() {
    let save = r#"# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -p tcp --dport 22 -j ACCEPT
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.244.0.0/16 -j CNI-HOSTPORT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
COMMIT
"#;
    let want = r#"
        *filter
        :KUBE-FORWARD - [0:0]
        :KUBE-SERVICES - [0:0]
        -D INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
        -D FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
        -X KUBE-FORWARD
        -X KUBE-SERVICES
        COMMIT
        *nat
        :KUBE-SERVICES - [0:0]
        -D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
        -X KUBE-SERVICES
        COMMIT
    "#;
    assert_eq!(lines(&cleanup_text(save)), lines(want));
    assert_eq!(cleanup_text("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"), "");
}

#[test]
fn udp_destinations_follow_reachable_endpoints() {
    let s = with_spec(
        node_port(
            svc(
                "ns2",
                "dns",
                "10.96.0.10",
                &[("dns", 53, "UDP"), ("tcp", 53, "TCP")],
            ),
            &[30053, 30054],
        ),
        |s| s.external_ips = Some(vec!["203.0.113.9".into()]),
    );
    let r = run(
        vec![s],
        vec![slice(
            "ns2",
            "dns",
            "a",
            &[("dns", 53, "UDP"), ("tcp", 53, "TCP")],
            &[
                ready("10.244.1.10"),
                ("10.244.1.11", "node-b", false, false, false),
            ],
        )],
    );
    assert_eq!(r.udp.len(), 1);
    let (dests, ips) = r.udp.values().next().unwrap();
    assert_eq!(
        dests,
        &vec![
            UdpDestination::Ip("10.96.0.10".parse().unwrap(), 53),
            UdpDestination::Ip("203.0.113.9".parse().unwrap(), 53),
            UdpDestination::NodePort(30053)
        ]
    );
    assert_eq!(
        ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        ["10.244.1.10"]
    );
}

#[test]
fn large_cluster_mode_drops_the_endpoint_and_balancing_comments_only() {
    // The sticky service of the per-feature cases, with 1,001 endpoints in all (one more than
    // upstream's largeClusterEndpointsThreshold) from a second service's slice.
    let sticky = with_spec(
        svc("ns1", "sticky", "10.96.0.50", &[("p80", 80, "TCP")]),
        |s| {
            s.session_affinity = Some("ClientIP".into());
            s.session_affinity_config = Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(600),
                }),
            });
        },
    );
    let t80: &[(&str, i32, &str)] = &[("p80", 8080, "TCP")];
    let many: Vec<String> = (0..999)
        .map(|i| format!("10.245.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let many_eps: Vec<Ep> = many.iter().map(|ip| ready(ip)).collect();
    let slices = |extra: &[Ep]| {
        vec![
            slice(
                "ns1",
                "sticky",
                "a",
                t80,
                &[ready("10.244.1.5"), ready("10.244.2.5")],
            ),
            slice("ns1", "big", "a", t80, extra),
        ]
    };
    let big = svc("ns1", "big", "10.96.0.51", &[("p80", 80, "TCP")]);
    let sticky_rules = |r: &Rendered| -> Vec<String> {
        service_rules(r)
            .into_iter()
            .filter(|l| {
                l.contains("ns1/sticky")
                    || l.contains("KUBE-SEP-2LSVRRQHRN4MZPOY")
                    || l.contains("KUBE-SEP-5ZSXIG2445CQQ2HW")
                    || l.contains("KUBE-SVC-F7REZHQFGEE5SPJR")
            })
            .collect()
    };

    // 1,000 endpoints: not yet large; the rules are the per-feature case's.
    let r = run(vec![sticky.clone(), big.clone()], slices(&many_eps[..998]));
    assert!(sticky_rules(&r).iter().all(|l| l.contains("-m comment")));

    let r = run(vec![sticky, big], slices(&many_eps));
    let want = lines(
        r#"
        nat -A KUBE-SERVICES -m comment --comment "ns1/sticky:p80 cluster IP" -m tcp -p tcp -d 10.96.0.50 --dport 80 -j KUBE-SVC-F7REZHQFGEE5SPJR
        nat -A KUBE-SEP-2LSVRRQHRN4MZPOY -s 10.244.2.5 -j KUBE-MARK-MASQ
        nat -A KUBE-SEP-2LSVRRQHRN4MZPOY -m recent --name KUBE-SEP-2LSVRRQHRN4MZPOY --set -m tcp -p tcp -j DNAT --to-destination 10.244.2.5:8080
        nat -A KUBE-SEP-5ZSXIG2445CQQ2HW -s 10.244.1.5 -j KUBE-MARK-MASQ
        nat -A KUBE-SEP-5ZSXIG2445CQQ2HW -m recent --name KUBE-SEP-5ZSXIG2445CQQ2HW --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
        nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m comment --comment "ns1/sticky:p80 cluster IP" -m tcp -p tcp -d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
        nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m recent --name KUBE-SEP-5ZSXIG2445CQQ2HW --rcheck --seconds 600 --reap -j KUBE-SEP-5ZSXIG2445CQQ2HW
        nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m recent --name KUBE-SEP-2LSVRRQHRN4MZPOY --rcheck --seconds 600 --reap -j KUBE-SEP-2LSVRRQHRN4MZPOY
        nat -A KUBE-SVC-F7REZHQFGEE5SPJR -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-5ZSXIG2445CQQ2HW
        nat -A KUBE-SVC-F7REZHQFGEE5SPJR -j KUBE-SEP-2LSVRRQHRN4MZPOY
        "#,
    );
    assert_eq!(sticky_rules(&r), want);
}

#[test]
fn jump_rules_as_iptables_lists_them() {
    let lines: Vec<String> = jump_rules().iter().map(JumpRule::save_line).collect();
    assert_eq!(
        lines[0],
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
    );
    assert_eq!(
        lines[7],
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
    );
}
