//! Golden-file tests of the nftables renderer: the full `nft -f` script of a ruleset that has
//! every service feature (`testdata/full.nft`, regenerate with `UPDATE_GOLDEN=1` and review
//! the diff), exact rules per feature, and the incremental scripts.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ClientIPConfig, Service, SessionAffinityConfig};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;
use crate::model::Protocol;
use crate::rules::tests::{
    config, load_balancer, node_port, ready, ready_on, slice, svc, with_spec,
};

fn run(svcs: Vec<Service>, slices: Vec<EndpointSlice>) -> Rendered {
    let svcs: Vec<Arc<Service>> = svcs.into_iter().map(Arc::new).collect();
    let slices: Vec<Arc<EndpointSlice>> = slices.into_iter().map(Arc::new).collect();
    let r = render(&svcs, &slices, &config());
    check_references(&r.rules);
    r
}

/// Every `goto`/`jump` (in rules and map verdicts) names a chain that exists, every `@set`
/// exists, and every non-fixed chain is referenced.
fn check_references(rs: &Ruleset) {
    let mut referenced = BTreeSet::new();
    let mut texts: Vec<&str> = rs.chains.values().flatten().map(String::as_str).collect();
    texts.extend(
        rs.maps
            .values()
            .flat_map(|m| m.values().map(String::as_str)),
    );
    for text in texts {
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
            .filter(|w| !w.is_empty())
            .collect();
        for w in words.windows(2) {
            if w[0] == "goto" || w[0] == "jump" {
                assert!(rs.chains.contains_key(w[1]), "{text}: no chain {}", w[1]);
                referenced.insert(w[1].to_string());
            }
        }
        for w in &words {
            if let Some(set) = w.strip_prefix("@affinity-") {
                assert!(rs.sets.contains(&format!("affinity-{set}")), "{text}");
            }
        }
    }
    for c in rs.chains.keys() {
        let fixed = BASE_CHAINS.iter().any(|(b, _)| b == c) || FIXED_CHAINS.contains(&c.as_str());
        assert!(fixed || referenced.contains(c), "chain {c} is never used");
    }
}

fn affinity(s: Service, timeout: i32) -> Service {
    with_spec(s, |spec| {
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(timeout),
            }),
        });
    })
}

/// A cluster with every feature: balancing, NodePort, no endpoints, affinity, a LoadBalancer
/// with externalTrafficPolicy Local and an external IP, UDP.
fn everything() -> (Vec<Service>, Vec<EndpointSlice>) {
    let p80 = &[("p80", 80, "TCP")][..];
    let t80 = &[("p80", 8080, "TCP")][..];
    let services = vec![
        node_port(svc("ns1", "web", "10.96.0.41", p80), &[30080]),
        svc("ns1", "empty", "10.96.0.42", p80),
        affinity(svc("ns1", "sticky", "10.96.0.43", p80), 60),
        with_spec(
            load_balancer(
                svc("ns2", "lb", "10.96.0.44", p80),
                &[30081],
                &["192.168.5.1"],
            ),
            |s| {
                s.external_traffic_policy = Some("Local".into());
                s.external_ips = Some(vec!["203.0.113.7".into()]);
            },
        ),
        svc("kube-system", "dns", "10.96.0.10", &[("dns", 53, "UDP")]),
    ];
    let slices = vec![
        slice(
            "ns1",
            "web",
            "a",
            t80,
            &[ready("10.244.1.5"), ready("10.244.2.5")],
        ),
        slice("ns1", "sticky", "a", t80, &[ready("10.244.1.6")]),
        slice(
            "ns2",
            "lb",
            "a",
            t80,
            &[ready_on("10.244.0.7", "node-a"), ready("10.244.1.7")],
        ),
        slice(
            "kube-system",
            "dns",
            "a",
            &[("dns", 5353, "UDP")],
            &[ready("10.244.1.10")],
        ),
    ];
    (services, slices)
}

#[test]
fn full_script_matches_the_golden_file() {
    let (s, e) = everything();
    let r = run(s, e);
    let got = script(&r.rules, None, false);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/nftables/testdata/full.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(got, want, "rendered script differs from {}", path.display());
}

fn elements(r: &Rendered, map: &str) -> Vec<String> {
    r.rules.maps[map]
        .iter()
        .map(|(k, v)| format!("{k} : {v}"))
        .collect()
}

#[test]
fn every_feature_renders_its_rules_and_elements() {
    let (s, e) = everything();
    let r = run(s, e);
    let key = |ns: &str, name: &str, port: &str, protocol| PortKey {
        namespace: ns.into(),
        name: name.into(),
        port_name: port.into(),
        protocol,
    };
    let web = key("ns1", "web", "p80", Protocol::Tcp);
    let web_svc = service_chain(&web);
    assert!(web_svc.starts_with("service-") && web_svc.ends_with("-ns1/web/tcp/p80"));
    // Cluster IP and node port through the verdict maps; balancing with numgen.
    let ips = elements(&r, SERVICE_IPS);
    assert!(
        ips.contains(&format!("10.96.0.41 . tcp . 80 : goto {web_svc}")),
        "{ips:?}"
    );
    assert!(elements(&r, SERVICE_NODEPORTS)
        .contains(&format!("tcp . 30080 : goto {}", external_chain(&web))));
    // Each balancing rule DNATs itself (no chain per endpoint).
    let rules = &r.rules.chains[&web_svc];
    assert_eq!(
        rules,
        &vec![
            "numgen random mod 2 0 meta l4proto tcp dnat to 10.244.1.5:8080".to_string(),
            "meta l4proto tcp dnat to 10.244.2.5:8080".to_string(),
        ]
    );
    assert!(!r.rules.chains.keys().any(|c| c.starts_with("endpoint-")));
    // Off-cluster traffic to cluster IPs and hairpin traffic are masqueraded by set lookups.
    assert_eq!(
        r.rules.chains[SERVICES][0],
        "ip saddr != 10.244.0.0/16 ip daddr @cluster-ips jump mark-for-masquerade"
    );
    assert!(r.rules.maps[CLUSTER_IPS].contains_key("10.96.0.41"));
    assert!(
        !r.rules.maps[CLUSTER_IPS].contains_key("10.96.0.42"),
        "no endpoints"
    );
    assert_eq!(
        r.rules.chains["nat-postrouting"][0],
        "ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade"
    );
    assert!(r.rules.maps[HAIRPIN_ENDPOINTS].contains_key("10.244.1.5 . 10.244.1.5"));
    assert_eq!(
        r.rules.chains[&external_chain(&web)],
        vec![
            "jump mark-for-masquerade".to_string(),
            format!("goto {web_svc}")
        ]
    );
    let ep = Endpoint {
        ip: "10.244.1.5".parse().unwrap(),
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        local: false,
    };
    // No endpoints: REJECT through the no-endpoint map, no service chain.
    assert!(elements(&r, NO_ENDPOINT_SERVICES)
        .contains(&"10.96.0.42 . tcp . 80 : goto reject-chain".to_string()));
    assert!(!r.rules.chains.contains_key(&service_chain(&key(
        "ns1",
        "empty",
        "p80",
        Protocol::Tcp
    ))));
    // Affinity: a set per endpoint, checked first, refreshed with the timeout by whichever
    // rule sends to the endpoint.
    let sticky = key("ns1", "sticky", "p80", Protocol::Tcp);
    let sep = Endpoint {
        ip: "10.244.1.6".parse().unwrap(),
        ..ep.clone()
    };
    let set = affinity_set(&sticky, &sep);
    assert!(r.rules.sets.contains(&set));
    let to_sep = format!(
        "update @{set} {{ ip saddr timeout 60s }} meta l4proto tcp dnat to 10.244.1.6:8080"
    );
    assert_eq!(
        r.rules.chains[&service_chain(&sticky)][0],
        format!("ip saddr @{set} {to_sep}")
    );
    assert!(r.rules.chains[&service_chain(&sticky)].contains(&to_sep));
    // externalTrafficPolicy Local: external IP, LB IP and node port go to the external
    // chain, which short-circuits pod and node traffic and otherwise uses local endpoints.
    let lb = key("ns2", "lb", "p80", Protocol::Tcp);
    let ext = external_chain(&lb);
    assert!(ips.contains(&format!("192.168.5.1 . tcp . 80 : goto {ext}")));
    assert!(ips.contains(&format!("203.0.113.7 . tcp . 80 : goto {ext}")));
    assert_eq!(
        r.rules.chains[&ext],
        vec![
            format!("ip saddr 10.244.0.0/16 goto {}", service_chain(&lb)),
            "fib saddr type local jump mark-for-masquerade".to_string(),
            format!("fib saddr type local goto {}", service_chain(&lb)),
            format!("goto {}", local_chain(&lb)),
        ]
    );
    assert_eq!(
        r.rules.chains[&local_chain(&lb)].len(),
        1,
        "one local endpoint"
    );
    // UDP with its conntrack view.
    let dns = key("kube-system", "dns", "dns", Protocol::Udp);
    assert!(ips
        .iter()
        .any(|e| e.starts_with("10.96.0.10 . udp . 53 : goto service-")));
    assert_eq!(r.udp[&dns].1.len(), 1);
}

#[test]
fn local_policy_without_local_endpoints_drops_external_traffic_only() {
    let p80 = &[("p80", 80, "TCP")][..];
    let r = run(
        vec![with_spec(
            load_balancer(
                svc("ns2", "lb", "10.96.0.44", p80),
                &[30081],
                &["192.168.5.1"],
            ),
            |s| s.external_traffic_policy = Some("Local".into()),
        )],
        vec![slice(
            "ns2",
            "lb",
            "a",
            &[("p80", 8080, "TCP")],
            &[ready("10.244.1.7")],
        )],
    );
    assert_eq!(
        elements(&r, NO_ENDPOINT_EXTERNAL),
        vec!["192.168.5.1 . tcp . 80 : drop"]
    );
    assert_eq!(
        elements(&r, NO_ENDPOINT_NODEPORTS),
        vec!["tcp . 30081 : drop"]
    );
    assert!(elements(&r, NO_ENDPOINT_SERVICES).is_empty());
}

#[test]
fn masquerade_all_marks_every_cluster_ip_packet() {
    let svcs = vec![Arc::new(svc(
        "ns1",
        "web",
        "10.96.0.41",
        &[("p80", 80, "TCP")],
    ))];
    let slices = vec![Arc::new(slice(
        "ns1",
        "web",
        "a",
        &[("p80", 8080, "TCP")],
        &[ready("10.244.1.5")],
    ))];
    let cfg = RenderConfig {
        masquerade_all: true,
        masquerade_bit: 5,
        ..config()
    };
    let r = render(&svcs, &slices, &cfg);
    assert_eq!(
        r.rules.chains[SERVICES][0],
        "ip daddr @cluster-ips jump mark-for-masquerade"
    );
    assert_eq!(r.rules.chains[MARK_MASQ], vec!["mark set mark or 0x20"]);
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn incremental_scripts_touch_only_what_changed() {
    let (s, mut e) = everything();
    let before = run(s.clone(), e.clone());
    // Nothing changed: nothing to do.
    assert_eq!(script(&before.rules, Some(&before.rules), false), "");

    // One endpoint of "web" goes: the service chain is rewritten, the endpoint's hairpin
    // element deleted; nothing else.
    e[0] = slice(
        "ns1",
        "web",
        "a",
        &[("p80", 8080, "TCP")],
        &[ready("10.244.2.5")],
    );
    let after = run(s.clone(), e.clone());
    let text = script(&after.rules, Some(&before.rules), false);
    let web = PortKey {
        namespace: "ns1".into(),
        name: "web".into(),
        port_name: "p80".into(),
        protocol: Protocol::Tcp,
    };
    let svc_c = service_chain(&web);
    assert_eq!(
        lines(&text),
        vec![
            format!("flush chain ip kube-proxy {svc_c}"),
            format!("add rule ip kube-proxy {svc_c} meta l4proto tcp dnat to 10.244.2.5:8080"),
            "delete element ip kube-proxy hairpin-endpoints { 10.244.1.5 . 10.244.1.5 }"
                .to_string(),
        ]
    );

    // The service goes: its elements are deleted before its chains.
    let mut s2 = s.clone();
    s2.remove(0);
    let gone_svc = run(s2, e.clone());
    let text = script(&gone_svc.rules, Some(&after.rules), false);
    let l = lines(&text);
    let del_elem = l
        .iter()
        .position(|x| {
            x.starts_with("delete element ip kube-proxy service-ips { 10.96.0.41 . tcp . 80 }")
        })
        .expect(&text);
    let del_chain = l
        .iter()
        .position(|x| *x == format!("delete chain ip kube-proxy {svc_c}"))
        .expect(&text);
    assert!(del_elem < del_chain, "{text}");
    assert!(l.contains(&"delete element ip kube-proxy service-nodeports { tcp . 30080 }"));
    assert!(!text.contains("add "), "{text}");

    // The last endpoint of "sticky" goes: REJECT element replaces the service element,
    // the affinity set is deleted after the chains.
    let mut e3 = e.clone();
    e3.remove(1);
    let no_eps = run(s.clone(), e3);
    let text = script(&no_eps.rules, Some(&after.rules), false);
    let l = lines(&text);
    assert!(
        l.iter()
            .any(|x| x
                .starts_with("delete element ip kube-proxy service-ips { 10.96.0.43 . tcp . 80 }")),
        "{text}"
    );
    assert!(l.contains(&"add element ip kube-proxy no-endpoint-services { 10.96.0.43 . tcp . 80 : goto reject-chain }"), "{text}");
    assert!(
        l.last()
            .unwrap()
            .starts_with("delete set ip kube-proxy affinity-"),
        "{text}"
    );

    // A forced full resync with a known kernel flushes and rewrites everything, without
    // recreating the table (the affinity sets keep their entries).
    let text = script(&after.rules, Some(&after.rules), true);
    assert!(!text.contains("delete table"), "{text}");
    assert!(text.contains("flush map ip kube-proxy service-ips"));
    assert!(text.contains(&format!("flush chain ip kube-proxy {svc_c}")));
    // And the first sync recreates the table in the same transaction.
    let text = script(&after.rules, None, false);
    assert!(lines(&text)[..3]
        .join("\n")
        .contains("delete table ip kube-proxy"));
}

#[test]
fn cleanup_deletes_the_table_even_when_absent() {
    assert_eq!(
        cleanup_script(),
        "add table ip kube-proxy\ndelete table ip kube-proxy\n"
    );
}
