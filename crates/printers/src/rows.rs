//! Row cells per kind, following upstream's `print<Kind>` functions with `Wide: true`.

use crate::format::{
    access_modes, arr, b, bool_ptr, container_cells, format_label_selector, format_labels, get, i,
    list_with_more, load_balancer_ingress, obj, opt_i, present, quantity, s, selector_string,
};
use crate::{human_duration, parse_time, Printer};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Upstream's node-role label prefix and legacy role label.
const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";
/// `node.NodeUnreachablePodReason`.
const NODE_UNREACHABLE_POD_REASON: &str = "NodeLost";

pub(crate) fn cells(p: Printer, o: &Value, now: DateTime<Utc>) -> Vec<Value> {
    use Printer::*;
    let ctx = Ctx { o, now };
    match p {
        Pod => ctx.pod(),
        PodTemplate => ctx.pod_template(),
        PodDisruptionBudget => ctx.pdb(),
        ReplicationController => ctx.replication_controller(),
        ReplicaSet => ctx.replica_set(),
        DaemonSet => ctx.daemon_set(),
        Job => ctx.job(),
        CronJob => ctx.cron_job(),
        Service => ctx.service(),
        Ingress => ctx.ingress(),
        IngressClass => ctx.ingress_class(),
        StatefulSet => ctx.stateful_set(),
        Endpoints => ctx.endpoints(),
        Node => ctx.node(),
        Event => ctx.event(),
        // The namespace registry sets phase Active on create.
        Namespace => vec![
            ctx.name(),
            or_default(o, &["status", "phase"], "Active").into(),
            ctx.age(),
        ],
        Secret => vec![
            ctx.name(),
            s(o, &["type"]).into(),
            json!(len(obj(o, &["data"]))),
            ctx.age(),
        ],
        ServiceAccount => vec![ctx.name(), json!(arr(o, &["secrets"]).len()), ctx.age()],
        PersistentVolume => ctx.persistent_volume(),
        PersistentVolumeClaim => ctx.persistent_volume_claim(),
        Deployment => ctx.deployment(),
        HorizontalPodAutoscaler => ctx.hpa(),
        ConfigMap => vec![
            ctx.name(),
            json!(len(obj(o, &["data"])) + len(obj(o, &["binaryData"]))),
            ctx.age(),
        ],
        NetworkPolicy => {
            // podSelector is a struct, not a pointer: absent means empty, i.e. everything.
            let sel = get(o, &["spec", "podSelector"])
                .cloned()
                .unwrap_or(json!({}));
            vec![
                ctx.name(),
                format_label_selector(Some(&sel)).into(),
                ctx.age(),
            ]
        }
        RoleBinding | ClusterRoleBinding => ctx.role_binding(),
        CertificateSigningRequest => ctx.csr(),
        Lease => vec![
            ctx.name(),
            s(o, &["spec", "holderIdentity"]).into(),
            ctx.age(),
        ],
        StorageClass => ctx.storage_class(),
        ControllerRevision => ctx.controller_revision(),
        ResourceQuota => ctx.resource_quota(),
        PriorityClass => vec![
            ctx.name(),
            json!(i(o, &["value"])),
            json!(b(o, &["globalDefault"])),
            ctx.age(),
            s(o, &["preemptionPolicy"]).into(),
        ],
        EndpointSlice => ctx.endpoint_slice(),
        RuntimeClass => vec![ctx.name(), s(o, &["handler"]).into(), ctx.age()],
        WebhookConfiguration => vec![ctx.name(), json!(arr(o, &["webhooks"]).len()), ctx.age()],
        Default => {
            // rest.defaultTableConvertor: RFC 3339 in UTC, Go's zero time when unset.
            let created = get(o, &["metadata", "creationTimestamp"])
                .and_then(Value::as_str)
                .and_then(parse_time)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
            vec![ctx.name(), created.into()]
        }
    }
}

fn len(m: Option<&serde_json::Map<String, Value>>) -> usize {
    m.map_or(0, |m| m.len())
}

struct Ctx<'a> {
    o: &'a Value,
    now: DateTime<Utc>,
}

impl Ctx<'_> {
    fn name(&self) -> Value {
        s(self.o, &["metadata", "name"]).into()
    }

    fn age(&self) -> Value {
        self.since(get(self.o, &["metadata", "creationTimestamp"]))
            .into()
    }

    /// `translateTimestampSince` for a `metav1.Time` / `MicroTime` JSON value.
    fn since(&self, t: Option<&Value>) -> String {
        match self.time(t) {
            Some(t) => human_duration(self.now - t),
            None => "<unknown>".to_string(),
        }
    }

    fn time(&self, t: Option<&Value>) -> Option<DateTime<Utc>> {
        t.and_then(Value::as_str).and_then(parse_time)
    }

    fn deleting(&self) -> bool {
        get(self.o, &["metadata", "deletionTimestamp"]).is_some()
    }

    fn pod(&self) -> Vec<Value> {
        let o = self.o;
        let spec_init = arr(o, &["spec", "initContainers"]);
        let mut total = arr(o, &["spec", "containers"]).len();
        // The pod registry sets phase Pending on create.
        let phase = or_default(o, &["status", "phase"], "Pending");
        let mut reason = match s(o, &["status", "reason"]) {
            "" => phase.to_string(),
            r => r.to_string(),
        };
        let conditions = arr(o, &["status", "conditions"]);
        if conditions
            .iter()
            .any(|c| s(c, &["type"]) == "PodScheduled" && s(c, &["reason"]) == "SchedulingGated")
        {
            reason = "SchedulingGated".to_string();
        }

        let restartable = |name: &str| {
            spec_init
                .iter()
                .find(|c| s(c, &["name"]) == name)
                .is_some_and(|c| s(c, &["restartPolicy"]) == "Always")
        };
        total += spec_init
            .iter()
            .filter(|c| s(c, &["restartPolicy"]) == "Always")
            .count();

        let mut restarts = 0i64;
        let mut restartable_restarts = 0i64;
        let mut ready = 0usize;
        let mut last_restart: Option<DateTime<Utc>> = None;
        let mut last_restartable_restart: Option<DateTime<Utc>> = None;
        let later = |cur: Option<DateTime<Utc>>, c: &Value| {
            let finished = present(c, &["lastState", "terminated"])
                .and_then(|t| self.time(get(t, &["finishedAt"])));
            match (cur, finished) {
                (Some(a), Some(b)) if b > a => Some(b),
                (None, Some(b)) => Some(b),
                (cur, _) => cur,
            }
        };

        let mut initializing = false;
        for (idx, c) in arr(o, &["status", "initContainerStatuses"])
            .iter()
            .enumerate()
        {
            restarts += i(c, &["restartCount"]);
            last_restart = later(last_restart, c);
            let is_restartable = restartable(s(c, &["name"]));
            if is_restartable {
                restartable_restarts += i(c, &["restartCount"]);
                last_restartable_restart = later(last_restartable_restart, c);
            }
            let terminated = present(c, &["state", "terminated"]);
            let waiting = present(c, &["state", "waiting"]);
            if terminated.is_some_and(|t| i(t, &["exitCode"]) == 0) {
                continue;
            }
            if is_restartable && get(c, &["started"]).and_then(Value::as_bool) == Some(true) {
                if b(c, &["ready"]) {
                    ready += 1;
                }
                continue;
            }
            if let Some(t) = terminated {
                reason = match s(t, &["reason"]) {
                    "" if i(t, &["signal"]) != 0 => format!("Init:Signal:{}", i(t, &["signal"])),
                    "" => format!("Init:ExitCode:{}", i(t, &["exitCode"])),
                    r => format!("Init:{r}"),
                };
            } else if let Some(r) = waiting
                .map(|w| s(w, &["reason"]))
                .filter(|r| !r.is_empty() && *r != "PodInitializing")
            {
                reason = format!("Init:{r}");
            } else {
                reason = format!("Init:{}/{}", idx, spec_init.len());
            }
            initializing = true;
            break;
        }

        let initialized = conditions
            .iter()
            .find(|c| s(c, &["type"]) == "Initialized")
            .is_some_and(|c| s(c, &["status"]) == "True");
        if !initializing || initialized {
            restarts = restartable_restarts;
            last_restart = last_restartable_restart;
            let mut has_running = false;
            for c in arr(o, &["status", "containerStatuses"]).iter().rev() {
                restarts += i(c, &["restartCount"]);
                last_restart = later(last_restart, c);
                let waiting_reason = present(c, &["state", "waiting"]).map(|w| s(w, &["reason"]));
                let terminated = present(c, &["state", "terminated"]);
                if let Some(r) = waiting_reason.filter(|r| !r.is_empty()) {
                    reason = r.to_string();
                } else if let Some(t) = terminated {
                    reason = match s(t, &["reason"]) {
                        "" if i(t, &["signal"]) != 0 => format!("Signal:{}", i(t, &["signal"])),
                        "" => format!("ExitCode:{}", i(t, &["exitCode"])),
                        r => r.to_string(),
                    };
                } else if b(c, &["ready"]) && present(c, &["state", "running"]).is_some() {
                    has_running = true;
                    ready += 1;
                }
            }
            if reason == "Completed" && has_running {
                let pod_ready = conditions
                    .iter()
                    .any(|c| s(c, &["type"]) == "Ready" && s(c, &["status"]) == "True");
                reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
            }
        }

        if self.deleting() && s(o, &["status", "reason"]) == NODE_UNREACHABLE_POD_REASON {
            reason = "Unknown".to_string();
        } else if self.deleting() && phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_string();
        }

        let restarts_str = match last_restart {
            Some(t) if restarts != 0 => {
                format!("{restarts} ({} ago)", human_duration(self.now - t))
            }
            _ => restarts.to_string(),
        };

        let or_none = |v: &str| {
            if v.is_empty() {
                "<none>".to_string()
            } else {
                v.to_string()
            }
        };
        let pod_ip = arr(o, &["status", "podIPs"])
            .first()
            .map(|p| s(p, &["ip"]))
            .unwrap_or("");
        let gates = arr(o, &["spec", "readinessGates"]);
        let readiness_gates = if gates.is_empty() {
            "<none>".to_string()
        } else {
            let true_count = gates
                .iter()
                .filter(|g| {
                    let t = s(g, &["conditionType"]);
                    conditions
                        .iter()
                        .find(|c| s(c, &["type"]) == t)
                        .is_some_and(|c| s(c, &["status"]) == "True")
                })
                .count();
            format!("{true_count}/{}", gates.len())
        };
        vec![
            self.name(),
            format!("{ready}/{total}").into(),
            reason.into(),
            restarts_str.into(),
            self.age(),
            or_none(pod_ip).into(),
            or_none(s(o, &["spec", "nodeName"])).into(),
            or_none(s(o, &["status", "nominatedNodeName"])).into(),
            readiness_gates.into(),
        ]
    }

    fn pod_template(&self) -> Vec<Value> {
        let (names, images) = container_cells(arr(self.o, &["template", "spec", "containers"]));
        vec![
            self.name(),
            names.into(),
            images.into(),
            format_labels(obj(self.o, &["template", "metadata", "labels"])).into(),
        ]
    }

    fn pdb(&self) -> Vec<Value> {
        let int_or_string = |path: &[&str]| match get(self.o, path) {
            Some(v) => quantity(Some(v)),
            None => "N/A".to_string(),
        };
        vec![
            self.name(),
            int_or_string(&["spec", "minAvailable"]).into(),
            int_or_string(&["spec", "maxUnavailable"]).into(),
            json!(i(self.o, &["status", "disruptionsAllowed"])),
            self.age(),
        ]
    }

    /// `spec.replicas`, which upstream defaulting always sets (to 1).
    fn desired_replicas(&self) -> i64 {
        opt_i(self.o, &["spec", "replicas"]).unwrap_or(1)
    }

    fn replication_controller(&self) -> Vec<Value> {
        let o = self.o;
        let (names, images) = container_cells(arr(o, &["spec", "template", "spec", "containers"]));
        vec![
            self.name(),
            json!(self.desired_replicas()),
            json!(i(o, &["status", "replicas"])),
            json!(i(o, &["status", "readyReplicas"])),
            self.age(),
            names.into(),
            images.into(),
            format_labels(obj(o, &["spec", "selector"])).into(),
        ]
    }

    fn replica_set(&self) -> Vec<Value> {
        let o = self.o;
        let (names, images) = container_cells(arr(o, &["spec", "template", "spec", "containers"]));
        vec![
            self.name(),
            json!(self.desired_replicas()),
            json!(i(o, &["status", "replicas"])),
            json!(i(o, &["status", "readyReplicas"])),
            self.age(),
            names.into(),
            images.into(),
            format_label_selector(get(o, &["spec", "selector"])).into(),
        ]
    }

    fn daemon_set(&self) -> Vec<Value> {
        let o = self.o;
        let st = |f: &str| json!(i(o, &["status", f]));
        let (names, images) = container_cells(arr(o, &["spec", "template", "spec", "containers"]));
        vec![
            self.name(),
            st("desiredNumberScheduled"),
            st("currentNumberScheduled"),
            st("numberReady"),
            st("updatedNumberScheduled"),
            st("numberAvailable"),
            format_labels(obj(o, &["spec", "template", "spec", "nodeSelector"])).into(),
            self.age(),
            names.into(),
            images.into(),
            format_label_selector(get(o, &["spec", "selector"])).into(),
        ]
    }

    fn stateful_set(&self) -> Vec<Value> {
        let o = self.o;
        let (names, images) = container_cells(arr(o, &["spec", "template", "spec", "containers"]));
        vec![
            self.name(),
            format!(
                "{}/{}",
                i(o, &["status", "readyReplicas"]),
                self.desired_replicas()
            )
            .into(),
            self.age(),
            names.into(),
            images.into(),
        ]
    }

    fn deployment(&self) -> Vec<Value> {
        let o = self.o;
        let (names, images) = container_cells(arr(o, &["spec", "template", "spec", "containers"]));
        let selector = selector_string(get(o, &["spec", "selector"]))
            .unwrap_or_else(|()| "<invalid>".to_string());
        vec![
            self.name(),
            format!(
                "{}/{}",
                i(o, &["status", "readyReplicas"]),
                self.desired_replicas()
            )
            .into(),
            json!(i(o, &["status", "updatedReplicas"])),
            json!(i(o, &["status", "availableReplicas"])),
            self.age(),
            names.into(),
            images.into(),
            selector.into(),
        ]
    }

    fn job(&self) -> Vec<Value> {
        let o = self.o;
        let succeeded = i(o, &["status", "succeeded"]);
        let completions = match opt_i(o, &["spec", "completions"]) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match i(o, &["spec", "parallelism"]) {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let start = self.time(get(o, &["status", "startTime"]));
        let end = self.time(get(o, &["status", "completionTime"]));
        let duration = match (start, end) {
            (None, _) => String::new(),
            (Some(s), None) => human_duration(self.now - s),
            (Some(s), Some(e)) => human_duration(e - s),
        };
        // hasJobCondition: the status of the first condition of that type.
        let conds = arr(o, &["status", "conditions"]);
        let has = |t: &str| {
            conds
                .iter()
                .find(|c| s(c, &["type"]) == t)
                .is_some_and(|c| s(c, &["status"]) == "True")
        };
        let status = if has("Complete") {
            "Complete"
        } else if has("Failed") {
            "Failed"
        } else if self.deleting() {
            "Terminating"
        } else if has("Suspended") {
            "Suspended"
        } else if has("FailureTarget") {
            "FailureTarget"
        } else {
            "Running"
        };
        let (names, images) = container_cells(arr(o, &["spec", "template", "spec", "containers"]));
        vec![
            self.name(),
            status.into(),
            completions.into(),
            duration.into(),
            self.age(),
            names.into(),
            images.into(),
            format_label_selector(get(o, &["spec", "selector"])).into(),
        ]
    }

    fn cron_job(&self) -> Vec<Value> {
        let o = self.o;
        let last = match get(o, &["status", "lastScheduleTime"]) {
            Some(t) => self.since(Some(t)),
            None => "<none>".to_string(),
        };
        let tz = match s(o, &["spec", "timeZone"]) {
            "" if get(o, &["spec", "timeZone"]).is_none() => "<none>",
            tz => tz,
        };
        let job_spec = get(o, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
        let (names, images) = container_cells(arr(job_spec, &["template", "spec", "containers"]));
        vec![
            self.name(),
            s(o, &["spec", "schedule"]).into(),
            tz.into(),
            // SetDefaults_CronJob sets suspend to false.
            bool_ptr(Some(
                get(o, &["spec", "suspend"]).unwrap_or(&Value::Bool(false)),
            ))
            .into(),
            json!(arr(o, &["status", "active"]).len()),
            last.into(),
            self.age(),
            names.into(),
            images.into(),
            format_label_selector(get(job_spec, &["selector"])).into(),
        ]
    }

    fn service(&self) -> Vec<Value> {
        let o = self.o;
        let ty = or_default(o, &["spec", "type"], "ClusterIP");
        let cluster_ip = arr(o, &["spec", "clusterIPs"])
            .first()
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let external: Vec<&str> = arr(o, &["spec", "externalIPs"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let external_ip = match ty {
            "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_string(),
            "ClusterIP" | "NodePort" => external.join(","),
            "LoadBalancer" => {
                let lb = load_balancer_ingress(arr(o, &["status", "loadBalancer", "ingress"]));
                if !external.is_empty() {
                    let mut all: Vec<&str> = Vec::new();
                    if !lb.is_empty() {
                        all.extend(lb.split(','));
                    }
                    all.extend(external.iter().copied());
                    all.join(",")
                } else if !lb.is_empty() {
                    lb
                } else {
                    "<pending>".to_string()
                }
            }
            "ExternalName" => s(o, &["spec", "externalName"]).to_string(),
            _ => "<unknown>".to_string(),
        };
        let ports: Vec<String> = arr(o, &["spec", "ports"])
            .iter()
            .map(|p| {
                let port = i(p, &["port"]);
                let proto = or_default(p, &["protocol"], "TCP");
                match i(p, &["nodePort"]) {
                    np if np > 0 => format!("{port}:{np}/{proto}"),
                    _ => format!("{port}/{proto}"),
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        vec![
            self.name(),
            ty.into(),
            cluster_ip.into(),
            external_ip.into(),
            ports.into(),
            self.age(),
            format_labels(obj(o, &["spec", "selector"])).into(),
        ]
    }

    fn ingress(&self) -> Vec<Value> {
        let o = self.o;
        let class = get(o, &["spec", "ingressClassName"])
            .and_then(Value::as_str)
            .unwrap_or("<none>");
        let rules = arr(o, &["spec", "rules"]);
        let mut hosts: Vec<&str> = Vec::new();
        let mut more = false;
        for r in rules {
            if hosts.len() == 3 {
                more = true;
            }
            let h = s(r, &["host"]);
            if !more && !h.is_empty() {
                hosts.push(h);
            }
        }
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else if more {
            format!("{} + {} more...", hosts.join(","), rules.len() - 3)
        } else {
            hosts.join(",")
        };
        let ports = if arr(o, &["spec", "tls"]).is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            self.name(),
            class.into(),
            hosts.into(),
            load_balancer_ingress(arr(o, &["status", "loadBalancer", "ingress"])).into(),
            ports.into(),
            self.age(),
        ]
    }

    fn ingress_class(&self) -> Vec<Value> {
        let o = self.o;
        let params = match present(o, &["spec", "parameters"]) {
            None => "<none>".to_string(),
            Some(p) => {
                let mut out = s(p, &["kind"]).to_string();
                if let Some(g) = get(p, &["apiGroup"]).and_then(Value::as_str) {
                    out = format!("{out}.{g}");
                }
                format!("{out}/{}", s(p, &["name"]))
            }
        };
        vec![
            self.name(),
            s(o, &["spec", "controller"]).into(),
            params.into(),
            self.age(),
        ]
    }

    fn endpoints(&self) -> Vec<Value> {
        let subsets = arr(self.o, &["subsets"]);
        let formatted = if subsets.is_empty() {
            "<none>".to_string()
        } else {
            let mut list: Vec<String> = Vec::new();
            let mut more = false;
            let mut count = 0usize;
            for ss in subsets {
                let addrs = arr(ss, &["addresses"]);
                let ports = arr(ss, &["ports"]);
                if ports.is_empty() {
                    count += addrs.len();
                    for a in addrs {
                        if list.len() == 3 {
                            more = true;
                            break;
                        }
                        list.push(s(a, &["ip"]).to_string());
                    }
                    continue;
                }
                for p in ports {
                    count += addrs.len();
                    for a in addrs {
                        if list.len() == 3 {
                            more = true;
                            break;
                        }
                        list.push(join_host_port(s(a, &["ip"]), i(p, &["port"])));
                    }
                }
            }
            if more {
                format!("{} + {} more...", list.join(","), count - 3)
            } else {
                list.join(",")
            }
        };
        vec![self.name(), formatted.into(), self.age()]
    }

    fn endpoint_slice(&self) -> Vec<Value> {
        let o = self.o;
        let ports = arr(o, &["ports"]);
        let shown: Vec<String> = ports
            .iter()
            .take(3)
            .map(|p| {
                match (
                    opt_i(p, &["port"]),
                    get(p, &["name"]).and_then(Value::as_str),
                ) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(name)) => name.to_string(),
                    (None, None) => "*".to_string(),
                }
            })
            .collect();
        let addrs: Vec<&Value> = arr(o, &["endpoints"])
            .iter()
            .flat_map(|e| arr(e, &["addresses"]))
            .collect();
        let shown_addrs: Vec<String> = addrs
            .iter()
            .take(3)
            .map(|a| a.as_str().unwrap_or("").to_string())
            .collect();
        vec![
            self.name(),
            s(o, &["addressType"]).into(),
            list_with_more(&shown, ports.len()).into(),
            list_with_more(&shown_addrs, addrs.len()).into(),
            self.age(),
        ]
    }

    fn node(&self) -> Vec<Value> {
        let o = self.o;
        // Upstream keys conditions by type in a map, so the last Ready condition wins.
        let ready = arr(o, &["status", "conditions"])
            .iter()
            .rev()
            .find(|c| s(c, &["type"]) == "Ready");
        let mut status = vec![match ready {
            Some(c) if s(c, &["status"]) == "True" => "Ready",
            Some(_) => "NotReady",
            None => "Unknown",
        }];
        if b(o, &["spec", "unschedulable"]) {
            status.push("SchedulingDisabled");
        }
        let mut roles: Vec<&str> = obj(o, &["metadata", "labels"])
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                if let Some(role) = k.strip_prefix(NODE_ROLE_PREFIX) {
                    (!role.is_empty()).then_some(role)
                } else if k == NODE_ROLE_LABEL {
                    v.as_str().filter(|v| !v.is_empty())
                } else {
                    None
                }
            })
            .collect();
        roles.sort_unstable();
        roles.dedup();
        let roles = if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        };
        let addr = |ty: &str| {
            arr(o, &["status", "addresses"])
                .iter()
                .find(|a| s(a, &["type"]) == ty)
                .map(|a| s(a, &["address"]))
                .unwrap_or("<none>")
        };
        let info = |f: &str| match s(o, &["status", "nodeInfo", f]) {
            "" => "<unknown>",
            v => v,
        };
        vec![
            self.name(),
            status.join(",").into(),
            roles.into(),
            self.age(),
            s(o, &["status", "nodeInfo", "kubeletVersion"]).into(),
            addr("InternalIP").into(),
            addr("ExternalIP").into(),
            info("osImage").into(),
            info("kernelVersion").into(),
            info("containerRuntimeVersion").into(),
        ]
    }

    fn event(&self) -> Vec<Value> {
        let o = self.o;
        // events.k8s.io/v1 Events are the same stored object under other field names.
        let new_api = o.get("regarding").is_some()
            || o.get("note").is_some()
            || s(o, &["apiVersion"]).starts_with("events.k8s.io/");
        let f = |core: &'static str, events: &'static str| if new_api { events } else { core };
        let first_ts = get(o, &[f("firstTimestamp", "deprecatedFirstTimestamp")]);
        let last_ts = get(o, &[f("lastTimestamp", "deprecatedLastTimestamp")]);
        let first = match first_ts {
            Some(t) => self.since(Some(t)),
            None => self.since(get(o, &["eventTime"])),
        };
        let mut last = match last_ts {
            Some(t) => self.since(Some(t)),
            None => first.clone(),
        };
        let mut count = i(o, &[f("count", "deprecatedCount")]);
        if let Some(series) = present(o, &["series"]) {
            last = self.since(get(series, &["lastObservedTime"]));
            count = i(series, &["count"]);
        } else if count == 0 {
            count = 1;
        }
        let involved = get(o, &[f("involvedObject", "regarding")]).unwrap_or(&Value::Null);
        let kind = s(involved, &["kind"]).to_lowercase();
        let target = match s(involved, &["name"]) {
            "" => kind,
            n => format!("{kind}/{n}"),
        };
        let source = get(o, &[f("source", "deprecatedSource")]).unwrap_or(&Value::Null);
        let first_non_empty = |a: &'static str, b: &'static str| match s(source, &[a]) {
            "" => s(o, &[b]),
            v => v,
        };
        let component = first_non_empty("component", "reportingController");
        let instance = first_non_empty("host", "reportingInstance");
        let source = if instance.is_empty() {
            component.to_string()
        } else {
            format!("{component}, {instance}")
        };
        vec![
            last.into(),
            s(o, &["type"]).into(),
            s(o, &["reason"]).into(),
            target.into(),
            s(involved, &["fieldPath"]).into(),
            source.into(),
            s(o, &[f("message", "note")]).trim().into(),
            first.into(),
            json!(count),
            self.name(),
        ]
    }

    fn persistent_volume(&self) -> Vec<Value> {
        let o = self.o;
        let claim = match present(o, &["spec", "claimRef"]) {
            Some(c) => format!("{}/{}", s(c, &["namespace"]), s(c, &["name"])),
            None => String::new(),
        };
        // SetDefaults_PersistentVolume: phase Pending, reclaim Retain, volumeMode Filesystem.
        let phase = if self.deleting() {
            "Terminating"
        } else {
            or_default(o, &["status", "phase"], "Pending")
        };
        let class = match get(o, &["metadata", "annotations", BETA_STORAGE_CLASS]) {
            Some(v) => v.as_str().unwrap_or(""),
            None => s(o, &["spec", "storageClassName"]),
        };
        vec![
            self.name(),
            quantity(get(o, &["spec", "capacity", "storage"])).into(),
            access_modes(arr(o, &["spec", "accessModes"])).into(),
            or_default(o, &["spec", "persistentVolumeReclaimPolicy"], "Retain").into(),
            phase.into(),
            claim.into(),
            class.into(),
            unset_or(get(o, &["spec", "volumeAttributesClassName"])).into(),
            s(o, &["status", "reason"]).into(),
            self.age(),
            or_default(o, &["spec", "volumeMode"], "Filesystem").into(),
        ]
    }

    fn persistent_volume_claim(&self) -> Vec<Value> {
        let o = self.o;
        let phase = if self.deleting() {
            "Terminating"
        } else {
            s(o, &["status", "phase"])
        };
        let volume = s(o, &["spec", "volumeName"]);
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                quantity(get(o, &["status", "capacity", "storage"])),
                access_modes(arr(o, &["status", "accessModes"])),
            )
        };
        let class = match get(o, &["metadata", "annotations", BETA_STORAGE_CLASS]) {
            Some(v) => v.as_str().unwrap_or(""),
            None => s(o, &["spec", "storageClassName"]),
        };
        vec![
            self.name(),
            phase.into(),
            volume.into(),
            capacity.into(),
            modes.into(),
            class.into(),
            unset_or(get(o, &["spec", "volumeAttributesClassName"])).into(),
            self.age(),
            // SetDefaults_PersistentVolumeClaimSpec sets volumeMode Filesystem.
            or_default(o, &["spec", "volumeMode"], "Filesystem").into(),
        ]
    }

    fn hpa(&self) -> Vec<Value> {
        let o = self.o;
        let target = get(o, &["spec", "scaleTargetRef"]).unwrap_or(&Value::Null);
        let reference = format!("{}/{}", s(target, &["kind"]), s(target, &["name"]));
        let (specs, statuses) = hpa_metrics(o);
        let min = match opt_i(o, &["spec", "minReplicas"]) {
            Some(m) => m.to_string(),
            None => "<unset>".to_string(),
        };
        vec![
            self.name(),
            reference.into(),
            format_hpa_metrics(&specs, &statuses).into(),
            min.into(),
            json!(i(o, &["spec", "maxReplicas"])),
            json!(i(o, &["status", "currentReplicas"])),
            self.age(),
        ]
    }

    fn role_binding(&self) -> Vec<Value> {
        let o = self.o;
        let role = format!(
            "{}/{}",
            s(o, &["roleRef", "kind"]),
            s(o, &["roleRef", "name"])
        );
        let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
        for sub in arr(o, &["subjects"]) {
            match s(sub, &["kind"]) {
                "ServiceAccount" => {
                    sas.push(format!("{}/{}", s(sub, &["namespace"]), s(sub, &["name"])))
                }
                "User" => users.push(s(sub, &["name"]).to_string()),
                "Group" => groups.push(s(sub, &["name"]).to_string()),
                _ => {}
            }
        }
        vec![
            self.name(),
            role.into(),
            self.age(),
            users.join(", ").into(),
            groups.join(", ").into(),
            sas.join(", ").into(),
        ]
    }

    fn csr(&self) -> Vec<Value> {
        let o = self.o;
        let (mut approved, mut denied, mut failed) = (false, false, false);
        for c in arr(o, &["status", "conditions"]) {
            match s(c, &["type"]) {
                "Approved" => approved = true,
                "Denied" => denied = true,
                "Failed" => failed = true,
                _ => {}
            }
        }
        let mut status = if denied {
            "Denied"
        } else if approved {
            "Approved"
        } else {
            "Pending"
        }
        .to_string();
        if failed {
            status.push_str(",Failed");
        }
        if !s(o, &["status", "certificate"]).is_empty() {
            status.push_str(",Issued");
        }
        let signer = match s(o, &["spec", "signerName"]) {
            "" => "<none>",
            v => v,
        };
        let duration = match opt_i(o, &["spec", "expirationSeconds"]) {
            Some(secs) => human_duration(chrono::TimeDelta::seconds(secs)),
            None => "<none>".to_string(),
        };
        vec![
            self.name(),
            self.age(),
            signer.into(),
            s(o, &["spec", "username"]).into(),
            duration.into(),
            status.into(),
        ]
    }

    fn storage_class(&self) -> Vec<Value> {
        let o = self.o;
        let ann = |k: &str| s(o, &["metadata", "annotations", k]) == "true";
        let mut name = s(o, &["metadata", "name"]).to_string();
        if ann("storageclass.kubernetes.io/is-default-class")
            || ann("storageclass.beta.kubernetes.io/is-default-class")
        {
            name.push_str(" (default)");
        }
        let or = |f: &str, d: &'static str| match get(o, &[f]).and_then(Value::as_str) {
            Some(v) => v.to_string(),
            None => d.to_string(),
        };
        vec![
            name.into(),
            s(o, &["provisioner"]).into(),
            or("reclaimPolicy", "Delete").into(),
            or("volumeBindingMode", "Immediate").into(),
            json!(b(o, &["allowVolumeExpansion"])),
            self.age(),
        ]
    }

    fn controller_revision(&self) -> Vec<Value> {
        let o = self.o;
        let owner = arr(o, &["metadata", "ownerReferences"])
            .iter()
            .find(|r| b(r, &["controller"]));
        let controller = match owner {
            None => "<none>".to_string(),
            Some(r) => {
                let api_version = s(r, &["apiVersion"]);
                let group = match api_version.split_once('/') {
                    Some((g, _)) => g,
                    None => "",
                };
                let kind = s(r, &["kind"]);
                let name = s(r, &["name"]);
                if group.is_empty() && kind.is_empty() {
                    name.to_string()
                } else if group.is_empty() {
                    format!("{}/{name}", kind.to_lowercase())
                } else {
                    format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase())
                }
            }
        };
        vec![
            self.name(),
            controller.into(),
            json!(i(o, &["revision"])),
            self.age(),
        ]
    }

    fn resource_quota(&self) -> Vec<Value> {
        let o = self.o;
        let hard = obj(o, &["status", "hard"]);
        let mut resources: Vec<&String> = hard.into_iter().flatten().map(|(k, _)| k).collect();
        resources.sort();
        let (mut requests, mut limits) = (Vec::new(), Vec::new());
        for r in resources {
            let used = quantity(get(o, &["status", "used", r]));
            let hard = quantity(get(o, &["status", "hard", r]));
            let entry = format!("{r}: {used}/{hard}");
            let pieces: Vec<&str> = r.split('.').collect();
            if pieces.len() > 1 && pieces[0] == "limits" {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
        vec![
            self.name(),
            requests.join(", ").into(),
            limits.join(", ").into(),
            self.age(),
        ]
    }
}

/// A string field that upstream defaulting always sets, with that default when absent.
fn or_default<'a>(v: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or(default)
}

const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

fn unset_or(v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(v) => v.to_string(),
        None => "<unset>".to_string(),
    }
}

/// Go's `net.JoinHostPort`: brackets around IPv6 hosts.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The autoscaling/v2 `spec.metrics` and `status.currentMetrics`, converting an autoscaling/v1
/// object the way upstream's conversion to the internal type does (CPU utilization target,
/// 80% when unset as the v2 default gives).
fn hpa_metrics(o: &Value) -> (Vec<Value>, Vec<Value>) {
    let v1 = s(o, &["apiVersion"]) == "autoscaling/v1"
        || get(o, &["spec", "targetCPUUtilizationPercentage"]).is_some()
        || get(o, &["status", "currentCPUUtilizationPercentage"]).is_some();
    if !v1 {
        return (
            arr(o, &["spec", "metrics"]).to_vec(),
            arr(o, &["status", "currentMetrics"]).to_vec(),
        );
    }
    let target = opt_i(o, &["spec", "targetCPUUtilizationPercentage"]).unwrap_or(80);
    let specs = vec![json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": target}}})];
    let statuses = match opt_i(o, &["status", "currentCPUUtilizationPercentage"]) {
        Some(cur) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": cur}}})],
        None => Vec::new(),
    };
    (specs, statuses)
}

/// Upstream `formatHPAMetrics`.
fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let q = |v: &Value, path: &[&str]| quantity(get(v, path));
    let mut list = Vec::new();
    for (idx, spec) in specs.iter().enumerate() {
        let status = statuses.get(idx);
        let st = |kind: &str| status.and_then(|s| present(s, &[kind]));
        let entry = match s(spec, &["type"]) {
            "External" => {
                if get(spec, &["external", "target", "averageValue"]).is_some() {
                    let cur = st("external")
                        .filter(|s| get(s, &["current", "averageValue"]).is_some())
                        .map_or("<unknown>".to_string(), |s| {
                            q(s, &["current", "averageValue"])
                        });
                    format!(
                        "{cur}/{} (avg)",
                        q(spec, &["external", "target", "averageValue"])
                    )
                } else {
                    let cur = st("external")
                        .map_or("<unknown>".to_string(), |s| q(s, &["current", "value"]));
                    format!("{cur}/{}", q(spec, &["external", "target", "value"]))
                }
            }
            "Pods" => {
                let cur = st("pods").map_or("<unknown>".to_string(), |s| {
                    q(s, &["current", "averageValue"])
                });
                format!("{cur}/{}", q(spec, &["pods", "target", "averageValue"]))
            }
            "Object" => {
                if get(spec, &["object", "target", "averageValue"]).is_some() {
                    let cur = st("object")
                        .filter(|s| get(s, &["current", "averageValue"]).is_some())
                        .map_or("<unknown>".to_string(), |s| {
                            q(s, &["current", "averageValue"])
                        });
                    format!(
                        "{cur}/{} (avg)",
                        q(spec, &["object", "target", "averageValue"])
                    )
                } else {
                    let cur = st("object")
                        .map_or("<unknown>".to_string(), |s| q(s, &["current", "value"]));
                    format!("{cur}/{}", q(spec, &["object", "target", "value"]))
                }
            }
            t @ ("Resource" | "ContainerResource") => {
                let key = if t == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let name = s(spec, &[key, "name"]);
                if get(spec, &[key, "target", "averageValue"]).is_some() {
                    let cur = st(key).map_or("<unknown>".to_string(), |s| {
                        q(s, &["current", "averageValue"])
                    });
                    format!(
                        "{name}: {cur}/{}",
                        q(spec, &[key, "target", "averageValue"])
                    )
                } else {
                    let cur = st(key)
                        .and_then(|s| opt_i(s, &["current", "averageUtilization"]))
                        .map_or("<unknown>".to_string(), |u| format!("{u}%"));
                    let target = opt_i(spec, &[key, "target", "averageUtilization"])
                        .map_or("<auto>".to_string(), |u| format!("{u}%"));
                    format!("{name}: {cur}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    let count = list.len();
    if count > 2 {
        list.truncate(2);
        return format!("{} + {} more...", list.join(", "), count - 2);
    }
    list.join(", ")
}

#[cfg(test)]
mod tests;
