//! Table-driven row tests: each case is an object as stored and the cells upstream prints.

use crate::{cells, columns};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 10, 0).unwrap()
}

/// Metadata created ten minutes before [`now`].
fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"})
}

fn with_meta(name: &str, mut obj: Value) -> Value {
    let mut m = meta(name);
    if let Some(extra) = obj.get("metadata").and_then(Value::as_object) {
        for (k, v) in extra {
            m[k] = v.clone();
        }
    }
    obj["metadata"] = m;
    obj
}

fn check(group: &str, kind: &str, cases: Vec<(&str, Value, Value)>) {
    let ncols = columns(group, kind).len();
    for (name, obj, want) in cases {
        let got = cells(group, kind, &with_meta(name, obj), now());
        assert_eq!(
            Value::Array(got.clone()),
            want,
            "{group}/{kind} case {name}"
        );
        assert_eq!(got.len(), ncols, "{group}/{kind} case {name}: cell count");
    }
}

fn running(ready: bool) -> Value {
    json!({"name": "app", "ready": ready, "restartCount": 0,
           "state": {"running": {"startedAt": "2024-01-01T00:01:00Z"}}})
}

#[test]
fn pod_status_column_follows_upstream_reasoning() {
    let one = json!([{"name": "app", "image": "nginx"}]);
    check(
        "",
        "Pod",
        vec![
            (
                "running",
                json!({"spec": {"containers": one, "nodeName": "n1"},
                       "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}],
                                  "containerStatuses": [running(true)]}}),
                json!([
                    "running", "1/1", "Running", "0", "10m", "10.0.0.5", "n1", "<none>", "<none>"
                ]),
            ),
            (
                "pending",
                json!({"spec": {"containers": one}, "status": {"phase": "Pending"}}),
                json!([
                    "pending", "0/1", "Pending", "0", "10m", "<none>", "<none>", "<none>", "<none>"
                ]),
            ),
            (
                "creating",
                json!({"spec": {"containers": one, "nodeName": "n1"},
                       "status": {"phase": "Pending", "containerStatuses": [
                           {"name": "app", "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
                json!([
                    "creating",
                    "0/1",
                    "ContainerCreating",
                    "0",
                    "10m",
                    "<none>",
                    "n1",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "crashloop",
                json!({"spec": {"containers": one},
                       "status": {"phase": "Running", "containerStatuses": [
                           {"name": "app", "ready": false, "restartCount": 5,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                          "finishedAt": "2024-01-01T00:05:00Z"}}}]}}),
                json!([
                    "crashloop",
                    "0/1",
                    "CrashLoopBackOff",
                    "5 (5m ago)",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "imagepull",
                json!({"spec": {"containers": one},
                       "status": {"phase": "Pending", "containerStatuses": [
                           {"name": "app", "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}),
                json!([
                    "imagepull",
                    "0/1",
                    "ImagePullBackOff",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "init-running",
                json!({"spec": {"containers": one, "initContainers": [{"name": "init"}]},
                       "status": {"phase": "Pending",
                                  "initContainerStatuses": [{"name": "init", "restartCount": 0,
                                      "state": {"running": {}}}],
                                  "containerStatuses": [{"name": "app", "restartCount": 0,
                                      "state": {"waiting": {"reason": "PodInitializing"}}}]}}),
                json!([
                    "init-running",
                    "0/1",
                    "Init:0/1",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "init-second",
                json!({"spec": {"containers": one, "initContainers": [{"name": "a"}, {"name": "b"}]},
                       "status": {"phase": "Pending", "initContainerStatuses": [
                           {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                           {"name": "b", "state": {"waiting": {"reason": "PodInitializing"}}}]}}),
                json!([
                    "init-second",
                    "0/1",
                    "Init:1/2",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "init-crash",
                json!({"spec": {"containers": one, "initContainers": [{"name": "init"}]},
                       "status": {"phase": "Pending", "initContainerStatuses": [
                           {"name": "init", "restartCount": 3,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
                json!([
                    "init-crash",
                    "0/1",
                    "Init:CrashLoopBackOff",
                    "3",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "init-error",
                json!({"spec": {"containers": one, "initContainers": [{"name": "init"}]},
                       "status": {"phase": "Failed", "initContainerStatuses": [
                           {"name": "init", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}),
                json!([
                    "init-error",
                    "0/1",
                    "Init:Error",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "init-signal",
                json!({"spec": {"containers": one, "initContainers": [{"name": "init"}]},
                       "status": {"phase": "Pending", "initContainerStatuses": [
                           {"name": "init", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}}),
                json!([
                    "init-signal",
                    "0/1",
                    "Init:Signal:9",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "completed",
                json!({"spec": {"containers": one},
                       "status": {"phase": "Succeeded", "containerStatuses": [
                           {"name": "app", "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                json!([
                    "completed",
                    "0/1",
                    "Completed",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "exitcode",
                json!({"spec": {"containers": one},
                       "status": {"phase": "Failed", "containerStatuses": [
                           {"name": "app", "state": {"terminated": {"exitCode": 2}}}]}}),
                json!([
                    "exitcode",
                    "0/1",
                    "ExitCode:2",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "completed-with-running",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                       "status": {"phase": "Running", "containerStatuses": [
                           running(true),
                           {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                json!([
                    "completed-with-running",
                    "1/2",
                    "NotReady",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "terminating",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:09:00Z"},
                       "spec": {"containers": one},
                       "status": {"phase": "Running", "containerStatuses": [running(true)]}}),
                json!([
                    "terminating",
                    "1/1",
                    "Terminating",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "terminating-but-done",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:09:00Z"},
                       "spec": {"containers": one},
                       "status": {"phase": "Succeeded", "containerStatuses": [
                           {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                json!([
                    "terminating-but-done",
                    "0/1",
                    "Completed",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "node-lost",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:09:00Z"},
                       "spec": {"containers": one},
                       "status": {"phase": "Running", "reason": "NodeLost"}}),
                json!([
                    "node-lost",
                    "0/1",
                    "Unknown",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "evicted",
                json!({"spec": {"containers": one},
                       "status": {"phase": "Failed", "reason": "Evicted"}}),
                json!([
                    "evicted", "0/1", "Evicted", "0", "10m", "<none>", "<none>", "<none>", "<none>"
                ]),
            ),
            (
                "gated",
                json!({"spec": {"containers": one},
                       "status": {"phase": "Pending", "conditions": [
                           {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}}),
                json!([
                    "gated",
                    "0/1",
                    "SchedulingGated",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "sidecar",
                json!({"spec": {"containers": one,
                                "initContainers": [{"name": "sc", "restartPolicy": "Always"}]},
                       "status": {"phase": "Running",
                                  "conditions": [{"type": "Initialized", "status": "True"}],
                                  "initContainerStatuses": [{"name": "sc", "started": true,
                                      "ready": true, "restartCount": 2,
                                      "state": {"running": {}}}],
                                  "containerStatuses": [running(true)]}}),
                json!([
                    "sidecar", "2/2", "Running", "2", "10m", "<none>", "<none>", "<none>", "<none>"
                ]),
            ),
            (
                "gates-and-nominated",
                json!({"spec": {"containers": one,
                                "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
                       "status": {"phase": "Pending", "nominatedNodeName": "n2",
                                  "conditions": [{"type": "a", "status": "True"},
                                                 {"type": "b", "status": "False"}]}}),
                json!([
                    "gates-and-nominated",
                    "0/1",
                    "Pending",
                    "0",
                    "10m",
                    "<none>",
                    "<none>",
                    "n2",
                    "1/2"
                ]),
            ),
        ],
    );
}

#[test]
fn service_rows_show_type_ips_and_ports() {
    let ports = json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}]);
    check(
        "",
        "Service",
        vec![
            (
                "cip",
                json!({"spec": {"type": "ClusterIP", "clusterIPs": ["10.96.0.10"], "ports": ports,
                                "selector": {"tier": "fe", "app": "web"}}}),
                json!([
                    "cip",
                    "ClusterIP",
                    "10.96.0.10",
                    "<none>",
                    "80/TCP",
                    "10m",
                    "app=web,tier=fe"
                ]),
            ),
            (
                "np",
                json!({"spec": {"type": "NodePort", "clusterIPs": ["10.96.0.11"],
                                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                          {"port": 53, "protocol": "UDP"}]}}),
                json!([
                    "np",
                    "NodePort",
                    "10.96.0.11",
                    "<none>",
                    "80:30080/TCP,53/UDP",
                    "10m",
                    "<none>"
                ]),
            ),
            (
                "lb-pending",
                json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
                                "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}}),
                json!([
                    "lb-pending",
                    "LoadBalancer",
                    "10.96.0.12",
                    "<pending>",
                    "443:31443/TCP",
                    "10m",
                    "<none>"
                ]),
            ),
            (
                "lb-ready",
                json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.13"],
                                "externalIPs": ["5.6.7.8"], "ports": ports},
                       "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}]}}}),
                json!([
                    "lb-ready",
                    "LoadBalancer",
                    "10.96.0.13",
                    "1.2.3.4,lb.example.com,5.6.7.8",
                    "80/TCP",
                    "10m",
                    "<none>"
                ]),
            ),
            (
                "headless",
                json!({"spec": {"type": "ClusterIP", "clusterIPs": ["None"], "externalIPs": ["9.9.9.9"]}}),
                json!([
                    "headless",
                    "ClusterIP",
                    "None",
                    "9.9.9.9",
                    "<none>",
                    "10m",
                    "<none>"
                ]),
            ),
            (
                "undefaulted",
                json!({"spec": {"clusterIPs": ["10.96.0.14"], "ports": [{"port": 8080}]}}),
                json!([
                    "undefaulted",
                    "ClusterIP",
                    "10.96.0.14",
                    "<none>",
                    "8080/TCP",
                    "10m",
                    "<none>"
                ]),
            ),
            (
                "ext",
                json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
                json!([
                    "ext",
                    "ExternalName",
                    "<none>",
                    "db.example.com",
                    "<none>",
                    "10m",
                    "<none>"
                ]),
            ),
        ],
    );
}

#[test]
fn node_rows_show_status_roles_and_system_info() {
    let info = json!({"kubeletVersion": "v1.36.0", "osImage": "Debian", "kernelVersion": "6.1",
                      "containerRuntimeVersion": "containerd://2.0"});
    check(
        "",
        "Node",
        vec![
            (
                "cp",
                json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "",
                                               "node-role.kubernetes.io/etcd": "",
                                               "kubernetes.io/role": "master"}},
                       "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                                 {"type": "Ready", "status": "True"}],
                                  "addresses": [{"type": "InternalIP", "address": "192.168.1.2"},
                                                {"type": "Hostname", "address": "cp"}],
                                  "nodeInfo": info}}),
                json!([
                    "cp",
                    "Ready,SchedulingDisabled",
                    "control-plane,etcd,master",
                    "10m",
                    "v1.36.0",
                    "192.168.1.2",
                    "<none>",
                    "Debian",
                    "6.1",
                    "containerd://2.0"
                ]),
            ),
            (
                "worker",
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                json!([
                    "worker",
                    "NotReady",
                    "<none>",
                    "10m",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
            (
                "new",
                json!({}),
                json!([
                    "new",
                    "Unknown",
                    "<none>",
                    "10m",
                    "",
                    "<none>",
                    "<none>",
                    "<unknown>",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
        ],
    );
}

#[test]
fn core_kinds_print_like_upstream() {
    check(
        "",
        "Namespace",
        vec![(
            "ns",
            json!({"status": {"phase": "Active"}}),
            json!(["ns", "Active", "10m"]),
        )],
    );
    check(
        "",
        "ConfigMap",
        vec![(
            "cm",
            json!({"data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}),
            json!(["cm", 3, "10m"]),
        )],
    );
    check(
        "",
        "Secret",
        vec![(
            "s",
            json!({"type": "Opaque", "data": {"a": "MQ=="}}),
            json!(["s", "Opaque", 1, "10m"]),
        )],
    );
    check(
        "",
        "ServiceAccount",
        vec![("default", json!({}), json!(["default", 0, "10m"]))],
    );
    check(
        "",
        "Endpoints",
        vec![
            (
                "web",
                json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                                    "ports": [{"port": 80}, {"port": 443}]}]}),
                json!([
                    "web",
                    "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
                    "10m"
                ]),
            ),
            (
                "headless",
                json!({"subsets": [{"addresses": [{"ip": "fd00::1"}]}]}),
                json!(["headless", "fd00::1", "10m"]),
            ),
            ("empty", json!({}), json!(["empty", "<none>", "10m"])),
        ],
    );
    check(
        "",
        "Event",
        vec![
            (
                "ev",
                json!({"type": "Normal", "reason": "Scheduled",
                       "message": "Successfully assigned default/p to n1\n",
                       "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{app}"},
                       "source": {"component": "default-scheduler"},
                       "firstTimestamp": "2024-01-01T00:05:00Z",
                       "lastTimestamp": "2024-01-01T00:08:00Z", "count": 3}),
                json!([
                    "2m",
                    "Normal",
                    "Scheduled",
                    "pod/p",
                    "spec.containers{app}",
                    "default-scheduler",
                    "Successfully assigned default/p to n1",
                    "5m",
                    3,
                    "ev"
                ]),
            ),
            (
                "new-api",
                json!({"type": "Warning", "reason": "BackOff", "message": "x",
                       "involvedObject": {"kind": "Node"},
                       "eventTime": "2024-01-01T00:09:30.000000Z",
                       "reportingController": "kubelet", "reportingInstance": "n1"}),
                json!([
                    "30s",
                    "Warning",
                    "BackOff",
                    "node",
                    "",
                    "kubelet, n1",
                    "x",
                    "30s",
                    1,
                    "new-api"
                ]),
            ),
        ],
    );
    check(
        "events.k8s.io",
        "Event",
        vec![(
            "ev2",
            json!({"apiVersion": "events.k8s.io/v1", "type": "Normal", "reason": "Pulled",
                   "note": "pulled", "regarding": {"kind": "Pod", "name": "p"},
                   "eventTime": "2024-01-01T00:09:00.000000Z",
                   "series": {"count": 4, "lastObservedTime": "2024-01-01T00:09:50.000000Z"},
                   "reportingController": "kubelet"}),
            json!(["10s", "Normal", "Pulled", "pod/p", "", "kubelet", "pulled", "60s", 4, "ev2"]),
        )],
    );
    check(
        "",
        "PersistentVolume",
        vec![(
            "pv",
            json!({"spec": {"capacity": {"storage": "10Gi"},
                            "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": "Retain",
                            "claimRef": {"namespace": "default", "name": "data"},
                            "storageClassName": "fast", "volumeMode": "Filesystem"},
                   "status": {"phase": "Bound"}}),
            json!([
                "pv",
                "10Gi",
                "RWO,RWX",
                "Retain",
                "Bound",
                "default/data",
                "fast",
                "<unset>",
                "",
                "10m",
                "Filesystem"
            ]),
        )],
    );
    check(
        "",
        "PersistentVolumeClaim",
        vec![
            (
                "bound",
                json!({"spec": {"volumeName": "pv", "storageClassName": "fast",
                                "resources": {"requests": {"storage": "1Gi"}}},
                       "status": {"phase": "Bound", "capacity": {"storage": "10Gi"},
                                  "accessModes": ["ReadWriteOnce"]}}),
                json!([
                    "bound",
                    "Bound",
                    "pv",
                    "10Gi",
                    "RWO",
                    "fast",
                    "<unset>",
                    "10m",
                    "Filesystem"
                ]),
            ),
            (
                "pending",
                json!({"metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
                       "spec": {"storageClassName": "fast", "volumeMode": "Block"},
                       "status": {"phase": "Pending"}}),
                json!(["pending", "Pending", "", "", "", "old", "<unset>", "10m", "Block"]),
            ),
        ],
    );
    check(
        "",
        "PersistentVolume",
        vec![(
            "bare-pv",
            json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOncePod"]}}),
            json!([
                "bare-pv",
                "1Gi",
                "RWOP",
                "Retain",
                "Pending",
                "",
                "",
                "<unset>",
                "",
                "10m",
                "Filesystem"
            ]),
        )],
    );
    check(
        "",
        "Namespace",
        vec![("fresh", json!({}), json!(["fresh", "Active", "10m"]))],
    );
    check(
        "",
        "ResourceQuota",
        vec![(
            "rq",
            json!({"status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi"},
                              "used": {"pods": "3", "limits.cpu": "500m"}}}),
            json!([
                "rq",
                "pods: 3/10, requests.memory: 0/1Gi",
                "limits.cpu: 500m/2",
                "10m"
            ]),
        )],
    );
    check(
        "",
        "LimitRange",
        vec![("lr", json!({}), json!(["lr", "2024-01-01T00:00:00Z"]))],
    );
    check(
        "",
        "PodTemplate",
        vec![(
            "pt",
            json!({"template": {"metadata": {"labels": {"b": "2", "a": "1"}},
                                "spec": {"containers": [{"name": "a", "image": "x"},
                                                        {"name": "b", "image": "y"}]}}}),
            json!(["pt", "a,b", "x,y", "a=1,b=2"]),
        )],
    );
    check(
        "",
        "ReplicationController",
        vec![(
            "rc",
            json!({"spec": {"replicas": 3, "selector": {"app": "x"},
                            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
                   "status": {"replicas": 3, "readyReplicas": 2}}),
            json!(["rc", 3, 3, 2, "10m", "c", "i", "app=x"]),
        )],
    );
}

fn template() -> Value {
    json!({"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
}

#[test]
fn apps_kinds_print_like_upstream() {
    let selector = json!({"matchLabels": {"app": "web"},
                          "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]});
    check(
        "apps",
        "Deployment",
        vec![
            (
                "web",
                json!({"spec": {"replicas": 3, "selector": selector, "template": template()},
                       "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                json!([
                    "web",
                    "2/3",
                    3,
                    2,
                    "10m",
                    "web",
                    "nginx:1.27",
                    "app=web,env in (dev,prod)"
                ]),
            ),
            (
                "fresh",
                json!({"spec": {"replicas": 0, "template": template()}}),
                json!(["fresh", "0/0", 0, 0, "10m", "web", "nginx:1.27", ""]),
            ),
        ],
    );
    check(
        "apps",
        "ReplicaSet",
        vec![(
            "web-abc",
            json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                            "template": template()},
                   "status": {"replicas": 2, "readyReplicas": 1}}),
            json!(["web-abc", 2, 2, 1, "10m", "web", "nginx:1.27", "app=web"]),
        )],
    );
    check(
        "apps",
        "StatefulSet",
        vec![(
            "db",
            json!({"spec": {"replicas": 3, "template": template()},
                   "status": {"readyReplicas": 1}}),
            json!(["db", "1/3", "10m", "web", "nginx:1.27"]),
        )],
    );
    check(
        "apps",
        "DaemonSet",
        vec![(
            "ds",
            json!({"spec": {"selector": {"matchLabels": {"app": "ds"}},
                            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                                  "containers": [{"name": "a", "image": "b"}]}}},
                   "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                              "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}),
            json!([
                "ds",
                2,
                2,
                1,
                2,
                1,
                "kubernetes.io/os=linux",
                "10m",
                "a",
                "b",
                "app=ds"
            ]),
        )],
    );
    check(
        "apps",
        "ControllerRevision",
        vec![
            (
                "ds-123",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                                          "name": "ds", "controller": true}]},
                       "revision": 2}),
                json!(["ds-123", "daemonset.apps/ds", 2, "10m"]),
            ),
            (
                "orphan",
                json!({"revision": 1}),
                json!(["orphan", "<none>", 1, "10m"]),
            ),
        ],
    );
}

#[test]
fn batch_kinds_print_like_upstream() {
    check(
        "batch",
        "Job",
        vec![
            (
                "done",
                json!({"spec": {"completions": 1, "parallelism": 1,
                                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                                "template": template()},
                       "status": {"succeeded": 1, "startTime": "2024-01-01T00:01:00Z",
                                  "completionTime": "2024-01-01T00:01:07Z",
                                  "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                                 {"type": "Complete", "status": "True"}]}}),
                json!([
                    "done",
                    "Complete",
                    "1/1",
                    "7s",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "batch.kubernetes.io/controller-uid=u"
                ]),
            ),
            (
                "running",
                json!({"spec": {"parallelism": 3, "template": template()},
                       "status": {"startTime": "2024-01-01T00:07:00Z", "active": 3}}),
                json!([
                    "running",
                    "Running",
                    "0/1 of 3",
                    "3m",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "<none>"
                ]),
            ),
            (
                "failed",
                json!({"spec": {"completions": 2, "template": template()},
                       "status": {"failed": 7, "conditions": [
                           {"type": "FailureTarget", "status": "True"},
                           {"type": "Failed", "status": "True"}]}}),
                json!([
                    "failed",
                    "Failed",
                    "0/2",
                    "",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "<none>"
                ]),
            ),
            (
                "suspended",
                json!({"spec": {"template": template()},
                       "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
                json!([
                    "suspended",
                    "Suspended",
                    "0/1",
                    "",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "<none>"
                ]),
            ),
            (
                "deleting",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:09:00Z"},
                       "spec": {"template": template()}}),
                json!([
                    "deleting",
                    "Terminating",
                    "0/1",
                    "",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "<none>"
                ]),
            ),
        ],
    );
    check(
        "batch",
        "CronJob",
        vec![
            (
                "cj",
                json!({"spec": {"schedule": "*/5 * * * *", "suspend": false,
                                "jobTemplate": {"spec": {"template": template()}}},
                       "status": {"active": [{"name": "cj-1"}],
                                  "lastScheduleTime": "2024-01-01T00:05:00Z"}}),
                json!([
                    "cj",
                    "*/5 * * * *",
                    "<none>",
                    "False",
                    1,
                    "5m",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "<none>"
                ]),
            ),
            (
                "tz",
                json!({"spec": {"schedule": "@daily", "timeZone": "Etc/UTC",
                                "jobTemplate": {"spec": {"template": template()}}}}),
                json!([
                    "tz",
                    "@daily",
                    "Etc/UTC",
                    "False",
                    0,
                    "<none>",
                    "10m",
                    "web",
                    "nginx:1.27",
                    "<none>"
                ]),
            ),
        ],
    );
}

#[test]
fn networking_and_discovery_kinds_print_like_upstream() {
    check(
        "networking.k8s.io",
        "Ingress",
        vec![
            (
                "ing",
                json!({"spec": {"ingressClassName": "nginx",
                                "rules": [{"host": "a.com"}, {"host": "b.com"}, {}, {"host": "c.com"}, {"host": "d.com"}],
                                "tls": [{"hosts": ["a.com"]}]},
                       "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
                json!([
                    "ing",
                    "nginx",
                    "a.com,b.com,c.com + 2 more...",
                    "1.2.3.4",
                    "80, 443",
                    "10m"
                ]),
            ),
            (
                "bare",
                json!({"spec": {"defaultBackend": {"service": {"name": "s"}}}}),
                json!(["bare", "<none>", "*", "", "80", "10m"]),
            ),
        ],
    );
    check(
        "networking.k8s.io",
        "IngressClass",
        vec![
            (
                "nginx",
                json!({"spec": {"controller": "k8s.io/ingress-nginx",
                                "parameters": {"apiGroup": "k8s.example.com", "kind": "Params", "name": "p"}}}),
                json!([
                    "nginx",
                    "k8s.io/ingress-nginx",
                    "Params.k8s.example.com/p",
                    "10m"
                ]),
            ),
            (
                "plain",
                json!({"spec": {"controller": "c"}}),
                json!(["plain", "c", "<none>", "10m"]),
            ),
        ],
    );
    check(
        "networking.k8s.io",
        "NetworkPolicy",
        vec![
            (
                "all",
                json!({"spec": {"podSelector": {}}}),
                json!(["all", "<none>", "10m"]),
            ),
            (
                "web",
                json!({"spec": {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}, {"key": "app", "operator": "Exists"}]}}}),
                json!(["web", "app,tier notin (db)", "10m"]),
            ),
        ],
    );
    check(
        "discovery.k8s.io",
        "EndpointSlice",
        vec![
            (
                "web-x",
                json!({"addressType": "IPv4",
                       "ports": [{"port": 80, "name": "http"}, {"name": "named"}, {}, {"port": 9}],
                       "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]}),
                json!([
                    "web-x",
                    "IPv4",
                    "80,named,* + 1 more...",
                    "10.0.0.1,10.0.0.2",
                    "10m"
                ]),
            ),
            (
                "empty",
                json!({"addressType": "IPv6"}),
                json!(["empty", "IPv6", "<unset>", "<unset>", "10m"]),
            ),
        ],
    );
    check(
        "coordination.k8s.io",
        "Lease",
        vec![(
            "kube-scheduler",
            json!({"spec": {"holderIdentity": "cp_1234"}}),
            json!(["kube-scheduler", "cp_1234", "10m"]),
        )],
    );
}

#[test]
fn rbac_storage_and_policy_kinds_print_like_upstream() {
    check(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        vec![(
            "rb",
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                   "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                                {"kind": "ServiceAccount", "namespace": "default", "name": "sa"},
                                {"kind": "User", "name": "bob"}]}),
            json!([
                "rb",
                "Role/reader",
                "10m",
                "alice, bob",
                "devs",
                "default/sa"
            ]),
        )],
    );
    check(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        vec![(
            "crb",
            json!({"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                   "subjects": [{"kind": "Group", "name": "system:masters"}]}),
            json!([
                "crb",
                "ClusterRole/cluster-admin",
                "10m",
                "",
                "system:masters",
                ""
            ]),
        )],
    );
    for kind in ["Role", "ClusterRole"] {
        check(
            "rbac.authorization.k8s.io",
            kind,
            vec![(
                "r",
                json!({"rules": []}),
                json!(["r", "2024-01-01T00:00:00Z"]),
            )],
        );
    }
    check(
        "storage.k8s.io",
        "StorageClass",
        vec![
            (
                "standard",
                json!({"metadata": {"annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                       "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}),
                json!([
                    "standard (default)",
                    "rancher.io/local-path",
                    "Delete",
                    "WaitForFirstConsumer",
                    false,
                    "10m"
                ]),
            ),
            (
                "fast",
                json!({"provisioner": "csi", "reclaimPolicy": "Retain", "allowVolumeExpansion": true}),
                json!(["fast", "csi", "Retain", "Immediate", true, "10m"]),
            ),
        ],
    );
    check(
        "policy",
        "PodDisruptionBudget",
        vec![
            (
                "min",
                json!({"spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}}),
                json!(["min", "2", "N/A", 1, "10m"]),
            ),
            (
                "max",
                json!({"spec": {"maxUnavailable": "25%"}}),
                json!(["max", "N/A", "25%", 0, "10m"]),
            ),
        ],
    );
    check(
        "scheduling.k8s.io",
        "PriorityClass",
        vec![(
            "system-node-critical",
            json!({"value": 2000001000, "globalDefault": false, "preemptionPolicy": "PreemptLowerPriority"}),
            json!([
                "system-node-critical",
                2000001000,
                false,
                "10m",
                "PreemptLowerPriority"
            ]),
        )],
    );
    check(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        vec![
            (
                "csr-1",
                json!({"spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                                "username": "system:node:n1", "expirationSeconds": 86400},
                       "status": {"conditions": [{"type": "Approved", "status": "True"}],
                                  "certificate": "LS0t"}}),
                json!([
                    "csr-1",
                    "10m",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                    "system:node:n1",
                    "24h",
                    "Approved,Issued"
                ]),
            ),
            (
                "csr-2",
                json!({"spec": {"username": "u"}}),
                json!(["csr-2", "10m", "<none>", "u", "<none>", "Pending"]),
            ),
        ],
    );
}

#[test]
fn hpa_targets_follow_upstream_formatting() {
    check(
        "autoscaling",
        "HorizontalPodAutoscaler",
        vec![
            (
                "v2",
                json!({"apiVersion": "autoscaling/v2",
                       "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                                "minReplicas": 1, "maxReplicas": 10,
                                "metrics": [
                                    {"type": "Resource", "resource": {"name": "cpu",
                                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                                    {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                        "target": {"type": "AverageValue", "averageValue": "1k"}}},
                                    {"type": "Resource", "resource": {"name": "memory",
                                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]},
                       "status": {"currentReplicas": 2, "currentMetrics": [
                           {"type": "Resource", "resource": {"name": "cpu",
                               "current": {"averageUtilization": 20, "averageValue": "10m"}}}]}}),
                json!([
                    "v2",
                    "Deployment/web",
                    "cpu: 20%/50%, <unknown>/1k + 1 more...",
                    "1",
                    10,
                    2,
                    "10m"
                ]),
            ),
            (
                "v1",
                json!({"apiVersion": "autoscaling/v1",
                       "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                                "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}}),
                json!([
                    "v1",
                    "Deployment/web",
                    "cpu: <unknown>/70%",
                    "<unset>",
                    5,
                    0,
                    "10m"
                ]),
            ),
            (
                "none",
                json!({"spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"},
                                "maxReplicas": 3, "metrics": []}}),
                json!(["none", "StatefulSet/db", "<none>", "<unset>", 3, 0, "10m"]),
            ),
        ],
    );
}

#[test]
fn unknown_kinds_get_the_default_table() {
    let cols = columns("example.com", "Widget");
    assert_eq!(
        cols,
        vec![
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": crate::docs::doc("meta.ObjectMeta.name"), "priority": 0}),
            json!({"name": "Created At", "type": "date", "format": "",
                   "description": crate::docs::doc("meta.ObjectMeta.creationTimestamp"), "priority": 0}),
        ]
    );
    let no_ts = json!({"metadata": {"name": "w"}});
    assert_eq!(
        cells("example.com", "Widget", &no_ts, now()),
        vec![json!("w"), json!("0001-01-01T00:00:00Z")]
    );
}

#[test]
fn pod_columns_match_kubectl_headers() {
    let names: Vec<String> = columns("", "Pod")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let wide: Vec<i64> = columns("", "Pod")
        .iter()
        .map(|c| c["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(wide, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    let job: Vec<String> = columns("batch", "Job")
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(job, ["Name", "Status", "Completions", "Duration", "Age"]);
}
