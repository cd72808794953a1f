use super::*;
use serde_json::json;

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("fixture parses"))
}

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Arc<Service> {
    obj(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
}

/// A slice of `svc` with endpoints `(address, hostname, ready)` and `ports` `(name, proto, port)`.
fn slice(
    ns: &str,
    svc: &str,
    family: &str,
    eps: &[(&str, Option<&str>, Option<bool>)],
    ports: &[(&str, &str, u16)],
) -> Arc<EndpointSlice> {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, host, ready)| {
            let mut e = json!({"addresses": [ip]});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r});
            }
            e
        })
        .collect();
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    obj(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-{family}"),
                     "labels": {SERVICE_NAME_LABEL: svc}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports,
    }))
}

fn namespace(name: &str) -> Arc<Namespace> {
    obj(json!({"metadata": {"name": name}}))
}

fn pod(ns: &str, name: &str, ip: &str) -> Arc<Pod> {
    obj(json!({"metadata": {"namespace": ns, "name": name},
               "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}))
}

fn fixture(pods_mode: PodMode) -> Zone {
    let services = vec![
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                             {"name": "metrics", "port": 9090, "protocol": "TCP"},
                             {"port": 5353, "protocol": "UDP"}]}),
        ),
        service(
            "default",
            "dual",
            json!({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30", "fd00:10:96::30"],
                   "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        service(
            "default",
            "empty-headless",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
        service(
            "default",
            "unready",
            json!({"clusterIP": "None", "publishNotReadyAddresses": true}),
        ),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "www.example.com",
                   "ports": [{"name": "https", "port": 443}]}),
        ),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        service(
            "other",
            "web",
            json!({"clusterIP": "10.96.0.40", "ports": [{"name": "http", "port": 8080}]}),
        ),
    ];
    let slices = vec![
        slice(
            "default",
            "web",
            "IPv4",
            &[
                ("10.244.1.5", None, Some(true)),
                ("10.244.1.6", None, Some(false)),
            ],
            &[("http", "TCP", 8080)],
        ),
        slice(
            "default",
            "db",
            "IPv4",
            &[
                ("10.244.2.10", Some("db-0"), Some(true)),
                ("10.244.2.11", Some("db-1"), None),
                ("10.244.2.12", Some("db-2"), Some(false)),
            ],
            &[("pg", "TCP", 5432)],
        ),
        slice(
            "default",
            "db",
            "IPv6",
            &[("fd00:244::10", Some("db-0"), Some(true))],
            &[("pg", "TCP", 5432)],
        ),
        slice(
            "default",
            "empty-headless",
            "IPv4",
            &[("10.244.3.1", None, Some(false))],
            &[("pg", "TCP", 5432)],
        ),
        slice(
            "default",
            "unready",
            "IPv4",
            &[("10.244.4.1", Some("u-0"), Some(false))],
            &[],
        ),
        // A slice of a Service that does not exist is ignored.
        slice(
            "default",
            "gone",
            "IPv4",
            &[("10.244.9.9", None, None)],
            &[],
        ),
    ];
    let pods = vec![pod("default", "web-1", "10.244.1.5")];
    let namespaces: Vec<_> = ["default", "kube-system", "other", "quiet"]
        .iter()
        .map(|n| namespace(n))
        .collect();
    Zone::build(
        Settings::new("cluster.local", 30, pods_mode).unwrap(),
        1234,
        &services,
        &slices,
        &pods,
        &namespaces,
    )
}

/// What a test expects: the rcode, the answer records, whether the SOA is in the authority
/// section, and the additional records.
struct Case {
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answers: &'static [&'static str],
    additionals: &'static [&'static str],
    chase: Option<&'static str>,
}

const NX: ResponseCode = ResponseCode::NXDomain;
const OK: ResponseCode = ResponseCode::NoError;

fn case(name: &'static str, qtype: RecordType, rcode: ResponseCode) -> Case {
    Case {
        name,
        qtype,
        rcode,
        answers: &[],
        additionals: &[],
        chase: None,
    }
}

impl Case {
    fn answers(mut self, a: &'static [&'static str]) -> Self {
        self.answers = a;
        self
    }
    fn additionals(mut self, a: &'static [&'static str]) -> Self {
        self.additionals = a;
        self
    }
    fn chase(mut self, c: &'static str) -> Self {
        self.chase = Some(c);
        self
    }
}

fn texts(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

fn run_cases(zone: &Zone, cases: Vec<Case>) {
    let soa = "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1234 7200 1800 86400 30";
    for c in cases {
        let qname = Name::from_ascii(c.name).unwrap();
        let got = match zone.lookup(&qname, c.qtype) {
            Lookup::Answer(a) => a,
            Lookup::Forward => panic!("{} {}: forwarded, want an answer", c.name, c.qtype),
        };
        let ctx = format!("{} {}: {got:#?}", c.name, c.qtype);
        assert_eq!(got.rcode, c.rcode, "{ctx}");
        let mut want: Vec<String> = c.answers.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(texts(&got.answers), want, "{ctx}");
        let mut want_add: Vec<String> = c.additionals.iter().map(|s| s.to_string()).collect();
        want_add.sort();
        assert_eq!(texts(&got.additionals), want_add, "{ctx}");
        // Every negative answer (NXDOMAIN and NODATA) carries the SOA, positive ones do not.
        if got.answers.is_empty() {
            assert_eq!(texts(&got.authority), vec![soa.to_string()], "{ctx}");
        } else {
            assert!(got.authority.is_empty(), "{ctx}");
        }
        assert_eq!(
            got.chase.map(|n| n.to_string()),
            c.chase.map(String::from),
            "{ctx}"
        );
    }
}

#[test]
fn cluster_ip_services_answer_a_aaaa_and_srv() {
    use RecordType::*;
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            case("web.default.svc.cluster.local.", A, OK)
                .answers(&["web.default.svc.cluster.local. 30 IN A 10.96.0.20"]),
            // Case-insensitive; the owner keeps the question's case.
            case("WEB.Default.svc.Cluster.Local.", A, OK)
                .answers(&["WEB.Default.svc.Cluster.Local. 30 IN A 10.96.0.20"]),
            // IPv4-only: AAAA is NODATA, not NXDOMAIN.
            case("web.default.svc.cluster.local.", AAAA, OK),
            case("web.default.svc.cluster.local.", TXT, OK),
            case("dual.default.svc.cluster.local.", AAAA, OK)
                .answers(&["dual.default.svc.cluster.local. 30 IN AAAA fd00:10:96::30"]),
            case("dual.default.svc.cluster.local.", ANY, OK).answers(&[
                "dual.default.svc.cluster.local. 30 IN A 10.96.0.30",
                "dual.default.svc.cluster.local. 30 IN AAAA fd00:10:96::30",
            ]),
            case("_http._tcp.web.default.svc.cluster.local.", SRV, OK)
                .answers(&["_http._tcp.web.default.svc.cluster.local. 30 IN SRV 0 100 80 web.default.svc.cluster.local."])
                .additionals(&["web.default.svc.cluster.local. 30 IN A 10.96.0.20"]),
            case("_HTTP._TCP.web.default.svc.cluster.local.", SRV, OK)
                .answers(&["_HTTP._TCP.web.default.svc.cluster.local. 30 IN SRV 0 100 80 web.default.svc.cluster.local."])
                .additionals(&["web.default.svc.cluster.local. 30 IN A 10.96.0.20"]),
            // The SRV name exists; other types are NODATA.
            case("_http._tcp.web.default.svc.cluster.local.", A, OK),
            // Wrong protocol, unknown port: no such name.
            case("_http._udp.web.default.svc.cluster.local.", SRV, NX),
            case("_nope._tcp.web.default.svc.cluster.local.", SRV, NX),
            // `_tcp.<svc>` is an empty non-terminal above the SRV names.
            case("_tcp.web.default.svc.cluster.local.", SRV, OK),
            case("_sctp.web.default.svc.cluster.local.", SRV, NX),
            // SRV at the service name: every port, the weight shared.
            case("web.default.svc.cluster.local.", SRV, OK)
                .answers(&[
                    "web.default.svc.cluster.local. 30 IN SRV 0 33 80 web.default.svc.cluster.local.",
                    "web.default.svc.cluster.local. 30 IN SRV 0 33 9090 web.default.svc.cluster.local.",
                    "web.default.svc.cluster.local. 30 IN SRV 0 33 5353 web.default.svc.cluster.local.",
                ])
                .additionals(&["web.default.svc.cluster.local. 30 IN A 10.96.0.20"]),
            // The same service name in another namespace.
            case("web.other.svc.cluster.local.", A, OK)
                .answers(&["web.other.svc.cluster.local. 30 IN A 10.96.0.40"]),
            // Endpoints of a ClusterIP service are reachable by their (dashed) hostname.
            case("10-244-1-5.web.default.svc.cluster.local.", A, OK)
                .answers(&["10-244-1-5.web.default.svc.cluster.local. 30 IN A 10.244.1.5"]),
            // … but not unready ones.
            case("10-244-1-6.web.default.svc.cluster.local.", A, NX),
        ],
    );
}

#[test]
fn headless_services_answer_ready_endpoints() {
    use RecordType::*;
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            // Ready (and ready-unknown) endpoints, one A each; db-2 is not ready.
            case("db.default.svc.cluster.local.", A, OK).answers(&[
                "db.default.svc.cluster.local. 30 IN A 10.244.2.10",
                "db.default.svc.cluster.local. 30 IN A 10.244.2.11",
            ]),
            case("db.default.svc.cluster.local.", AAAA, OK)
                .answers(&["db.default.svc.cluster.local. 30 IN AAAA fd00:244::10"]),
            // StatefulSet pods: hostname.subdomain.
            case("db-0.db.default.svc.cluster.local.", A, OK)
                .answers(&["db-0.db.default.svc.cluster.local. 30 IN A 10.244.2.10"]),
            case("db-0.db.default.svc.cluster.local.", AAAA, OK)
                .answers(&["db-0.db.default.svc.cluster.local. 30 IN AAAA fd00:244::10"]),
            case("db-1.db.default.svc.cluster.local.", AAAA, OK),
            case("db-2.db.default.svc.cluster.local.", A, NX),
            case("db-9.db.default.svc.cluster.local.", A, NX),
            case("x.db-0.db.default.svc.cluster.local.", A, NX),
            // One SRV per ready endpoint, targets the endpoint hostnames.
            case("_pg._tcp.db.default.svc.cluster.local.", SRV, OK)
                .answers(&[
                    "_pg._tcp.db.default.svc.cluster.local. 30 IN SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
                    "_pg._tcp.db.default.svc.cluster.local. 30 IN SRV 0 50 5432 db-1.db.default.svc.cluster.local.",
                ])
                .additionals(&[
                    "db-0.db.default.svc.cluster.local. 30 IN A 10.244.2.10",
                    "db-0.db.default.svc.cluster.local. 30 IN AAAA fd00:244::10",
                    "db-1.db.default.svc.cluster.local. 30 IN A 10.244.2.11",
                ]),
            // No ready endpoint: NXDOMAIN, as the spec says.
            case("empty-headless.default.svc.cluster.local.", A, NX),
            case("_pg._tcp.empty-headless.default.svc.cluster.local.", SRV, NX),
            // publishNotReadyAddresses: unready endpoints are published.
            case("unready.default.svc.cluster.local.", A, OK)
                .answers(&["unready.default.svc.cluster.local. 30 IN A 10.244.4.1"]),
            case("u-0.unready.default.svc.cluster.local.", A, OK)
                .answers(&["u-0.unready.default.svc.cluster.local. 30 IN A 10.244.4.1"]),
        ],
    );
}

#[test]
fn external_name_services_are_cnames_to_chase() {
    use RecordType::*;
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            case("ext.default.svc.cluster.local.", A, OK)
                .answers(&["ext.default.svc.cluster.local. 30 IN CNAME www.example.com."])
                .chase("www.example.com."),
            case("ext.default.svc.cluster.local.", AAAA, OK)
                .answers(&["ext.default.svc.cluster.local. 30 IN CNAME www.example.com."])
                .chase("www.example.com."),
            case("ext.default.svc.cluster.local.", CNAME, OK)
                .answers(&["ext.default.svc.cluster.local. 30 IN CNAME www.example.com."]),
            case("_https._tcp.ext.default.svc.cluster.local.", SRV, OK).answers(&[
                "_https._tcp.ext.default.svc.cluster.local. 30 IN SRV 0 100 443 www.example.com.",
            ]),
        ],
    );
}

#[test]
fn search_path_expansions_are_nxdomain_and_existing_names_nodata() {
    use RecordType::*;
    // What a pod in `default` with `search default.svc.cluster.local svc.cluster.local
    // cluster.local` and ndots:5 asks on its way to an answer.
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            // `web` → first candidate answers.
            case("web.default.svc.cluster.local.", A, OK)
                .answers(&["web.default.svc.cluster.local. 30 IN A 10.96.0.20"]),
            // `web.other` → the first candidate does not exist, the second answers.
            case("web.other.default.svc.cluster.local.", A, NX),
            case("web.other.svc.cluster.local.", A, OK)
                .answers(&["web.other.svc.cluster.local. 30 IN A 10.96.0.40"]),
            // `web.default.svc.cluster.local` (4 dots < 5) walks the list before the name.
            case(
                "web.default.svc.cluster.local.default.svc.cluster.local.",
                A,
                NX,
            ),
            case("web.default.svc.cluster.local.svc.cluster.local.", A, NX),
            case("web.default.svc.cluster.local.cluster.local.", A, NX),
            // `example.com` → every in-zone candidate is NXDOMAIN.
            case("example.com.default.svc.cluster.local.", A, NX),
            case("example.com.svc.cluster.local.", A, NX),
            case("example.com.cluster.local.", A, NX),
            case("nope.default.svc.cluster.local.", A, NX),
            case("nope.cluster.local.", A, NX),
            case("nope.nope.cluster.local.", AAAA, NX),
            // Names that exist without records: NODATA, never NXDOMAIN (which would deny
            // everything below them).
            case("cluster.local.", A, OK),
            case("svc.cluster.local.", A, OK),
            case("pod.cluster.local.", A, OK),
            case("default.svc.cluster.local.", A, OK),
            case("quiet.svc.cluster.local.", A, OK),
            case("missing.svc.cluster.local.", A, NX),
            case("missing.pod.cluster.local.", A, NX),
        ],
    );
}

#[test]
fn zone_meta_records() {
    use RecordType::*;
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            case("dns-version.cluster.local.", TXT, OK)
                .answers(&["dns-version.cluster.local. 30 IN TXT 1.1.0"]),
            case("dns-version.cluster.local.", A, OK),
            case("cluster.local.", SOA, OK).answers(&[
                "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1234 7200 1800 86400 30",
            ]),
            case("cluster.local.", NS, OK)
                .answers(&["cluster.local. 30 IN NS ns.dns.cluster.local."])
                .additionals(&["ns.dns.cluster.local. 30 IN A 10.96.0.10"]),
            case("ns.dns.cluster.local.", A, OK)
                .answers(&["ns.dns.cluster.local. 30 IN A 10.96.0.10"]),
            case("dns.cluster.local.", A, OK),
        ],
    );
}

#[test]
fn pod_records_follow_the_pod_mode() {
    use RecordType::*;
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            case("10-244-1-5.default.pod.cluster.local.", A, OK)
                .answers(&["10-244-1-5.default.pod.cluster.local. 30 IN A 10.244.1.5"]),
            // Insecure: any address in an existing namespace.
            case("1-2-3-4.quiet.pod.cluster.local.", A, OK)
                .answers(&["1-2-3-4.quiet.pod.cluster.local. 30 IN A 1.2.3.4"]),
            case("fd00--1.default.pod.cluster.local.", AAAA, OK)
                .answers(&["fd00--1.default.pod.cluster.local. 30 IN AAAA fd00::1"]),
            case("10-244-1-5.default.pod.cluster.local.", AAAA, OK),
            case("1-2-3-4.missing.pod.cluster.local.", A, NX),
            case("not-an-ip.default.pod.cluster.local.", A, NX),
            case("1-2-3-999.default.pod.cluster.local.", A, NX),
        ],
    );
    run_cases(
        &fixture(PodMode::Verified),
        vec![
            case("10-244-1-5.default.pod.cluster.local.", A, OK)
                .answers(&["10-244-1-5.default.pod.cluster.local. 30 IN A 10.244.1.5"]),
            case("10-244-1-5.other.pod.cluster.local.", A, NX),
            case("1-2-3-4.default.pod.cluster.local.", A, NX),
        ],
    );
    run_cases(
        &fixture(PodMode::Disabled),
        vec![case("10-244-1-5.default.pod.cluster.local.", A, NX)],
    );
}

#[test]
fn ptr_records_for_cluster_ips_and_endpoints() {
    use RecordType::*;
    run_cases(
        &fixture(PodMode::Insecure),
        vec![
            case("20.0.96.10.in-addr.arpa.", PTR, OK)
                .answers(&["20.0.96.10.in-addr.arpa. 30 IN PTR web.default.svc.cluster.local."]),
            case("10.2.244.10.in-addr.arpa.", PTR, OK).answers(&[
                "10.2.244.10.in-addr.arpa. 30 IN PTR db-0.db.default.svc.cluster.local.",
            ]),
            // A ClusterIP service's endpoint: its dashed address.
            case("5.1.244.10.in-addr.arpa.", PTR, OK).answers(&[
                "5.1.244.10.in-addr.arpa. 30 IN PTR 10-244-1-5.web.default.svc.cluster.local.",
            ]),
            case(
                "0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",
                PTR,
                OK,
            )
            .answers(&["0.3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 30 IN PTR dual.default.svc.cluster.local."]),
        ],
    );
}

#[test]
fn names_outside_the_zone_are_forwarded() {
    let zone = fixture(PodMode::Insecure);
    for (name, qtype) in [
        ("example.com.", RecordType::A),
        ("cluster.local.example.com.", RecordType::A),
        ("local.", RecordType::SOA),
        // Reverse names the cluster does not know, and non-PTR reverse questions.
        ("1.1.168.192.in-addr.arpa.", RecordType::PTR),
        ("20.0.96.10.in-addr.arpa.", RecordType::A),
        ("96.10.in-addr.arpa.", RecordType::PTR),
        ("in-addr.arpa.", RecordType::PTR),
        ("x.ARPA.", RecordType::PTR),
    ] {
        assert_eq!(
            zone.lookup(&Name::from_ascii(name).unwrap(), qtype),
            Lookup::Forward,
            "{name} {qtype}"
        );
    }
}

#[test]
fn updates_are_a_rebuild() {
    let settings = Settings::new("cluster.local", 5, PodMode::Insecure).unwrap();
    let web = service("default", "web", json!({"clusterIP": "10.96.0.20"}));
    let q = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
    let ns = vec![namespace("default")];
    let with = Zone::build(settings.clone(), 1, &[web], &[], &[], &ns);
    let without = Zone::build(settings, 2, &[], &[], &[], &ns);
    let Lookup::Answer(a) = with.lookup(&q, RecordType::A) else {
        panic!()
    };
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.answers[0].ttl, 5);
    let Lookup::Answer(a) = without.lookup(&q, RecordType::A) else {
        panic!()
    };
    assert_eq!(a.rcode, ResponseCode::NXDomain);
}

#[test]
fn custom_domain_and_settings_validation() {
    assert!(Settings::new(".", 5, PodMode::Insecure).is_err());
    assert!(Settings::new("bad..domain", 5, PodMode::Insecure).is_err());
    let s = Settings::new("Corp.Example.", 5, PodMode::Insecure).unwrap();
    assert_eq!(s.domain.to_string(), "corp.example.");
    let web = service("default", "web", json!({"clusterIP": "10.96.0.20"}));
    let zone = Zone::build(s, 1, &[web], &[], &[], &[]);
    let q = Name::from_ascii("web.default.svc.corp.example.").unwrap();
    let Lookup::Answer(a) = zone.lookup(&q, RecordType::A) else {
        panic!()
    };
    assert_eq!(a.answers.len(), 1);
    assert_eq!(
        zone.lookup(
            &Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A
        ),
        Lookup::Forward
    );
    assert_eq!("verified".parse::<PodMode>(), Ok(PodMode::Verified));
    assert!("sometimes".parse::<PodMode>().is_err());
}

#[test]
fn reverse_names_are_recognised_by_their_last_labels() {
    for (name, want) in [
        ("1.0.0.10.in-addr.arpa.", true),
        ("1.0.0.10.IN-ADDR.ARPA.", true),
        ("ip6.arpa.", true),
        ("arpa.", false),
        ("in-addr.arpa.example.", false),
        ("web.default.svc.cluster.local.", false),
    ] {
        assert_eq!(is_reverse(&Name::from_ascii(name).unwrap()), want, "{name}");
    }
}
