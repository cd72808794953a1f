#!/usr/bin/env python3
"""Record the protobuf request bodies the real kubectl sends, as test fixtures.

Starts a tiny plain-HTTP fake API server on 127.0.0.1 (legacy discovery only, 201 + JSON for
every POST), runs `kubectl --server http://127.0.0.1:PORT <command>` for each case below and
stores every protobuf POST body in crates/protobuf-json/tests/fixtures/<case>.pb, plus
<case>.json with the method, path and content type.

Usage (from the workspace root): python3 crates/protobuf-json/gen/capture_kubectl.py [--kubectl kubectl]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

CASES = [
    ("configmap", ["create", "configmap", "cfg", "--from-literal=a=b", "--from-literal=empty="]),
    ("secret", ["create", "secret", "generic", "s", "--from-literal=k=v", "--from-literal=bin=\x01\x02"]),
    ("secret_docker_registry", ["create", "secret", "docker-registry", "reg", "--docker-server=r.example",
                         "--docker-username=u", "--docker-password=p"]),
    ("namespace", ["create", "namespace", "team-a"]),
    ("deployment", ["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=8080"]),
    ("deployment_zero", ["create", "deployment", "idle", "--image=busybox", "--replicas=0",
                         "--", "sleep", "3600"]),
    ("job", ["create", "job", "once", "--image=busybox", "--", "echo", "hi"]),
    ("cronjob", ["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *",
                 "--", "date"]),
    ("service_clusterip", ["create", "service", "clusterip", "web", "--tcp=80:8080", "--tcp=443:https"]),
    ("service_nodeport", ["create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"]),
    ("service_externalname", ["create", "service", "externalname", "ext", "--external-name=example.com"]),
    ("serviceaccount", ["create", "serviceaccount", "robot"]),
    ("role", ["create", "role", "reader", "--verb=get,list", "--resource=pods,configmaps"]),
    ("rolebinding", ["create", "rolebinding", "rb", "--role=reader", "--user=alice",
                     "--serviceaccount=default:robot"]),
    ("clusterrole", ["create", "clusterrole", "cr", "--verb=get", "--non-resource-url=/healthz"]),
    ("clusterrolebinding", ["create", "clusterrolebinding", "crb", "--clusterrole=cr", "--group=devs"]),
    ("quota", ["create", "quota", "q", "--hard=cpu=1,memory=1Gi,pods=10"]),
    ("priorityclass", ["create", "priorityclass", "high", "--value=1000", "--description=important"]),
    ("pdb", ["create", "poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%"]),
    ("ingress", ["create", "ingress", "ing", "--rule=foo.com/bar=svc:8080"]),
    ("token", ["create", "token", "robot", "--duration=10m"]),
    ("can_i", ["auth", "can-i", "create", "pods"]),
    ("can_i_list", ["auth", "can-i", "--list"]),
    ("whoami", ["auth", "whoami"]),
]

RESOURCES = {
    "v1": [("pods", "Pod", True), ("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
           ("namespaces", "Namespace", False), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("resourcequotas", "ResourceQuota", True)],
    "apps/v1": [("deployments", "Deployment", True)],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                     ("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
    "scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True)],
    "authorization.k8s.io/v1": [("selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
                                ("selfsubjectrulesreviews", "SelfSubjectRulesReview", False)],
    "authentication.k8s.io/v1": [("selfsubjectreviews", "SelfSubjectReview", False)],
}

captured = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.5"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = []
            for gv in RESOURCES:
                if "/" in gv:
                    g, v = gv.split("/")
                    groups.append({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                                   "preferredVersion": {"groupVersion": gv, "version": v}})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        gv = path[len("/api/"):] if path.startswith("/api/") else path[len("/apis/"):]
        if gv in RESOURCES:
            return self.reply(200, {"kind": "APIResourceList", "groupVersion": gv, "resources": [
                {"name": n, "singularName": "", "namespaced": ns, "kind": k,
                 "verbs": ["create", "get", "list", "delete"]} for n, k, ns in RESOURCES[gv]]})
        return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": "not found"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        captured.append((self.path, self.headers.get("Content-Type", ""), body))
        obj = {"metadata": {"name": "x", "namespace": "default"},
               "status": {"allowed": True, "token": "t", "userInfo": {"username": "u", "groups": ["g"]},
                          "resourceRules": [], "nonResourceRules": [], "incomplete": False}}
        return self.reply(201, obj)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--port", type=int, default=28931)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.makedirs(FIXTURES, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        kubeconfig = os.path.join(home, "config")
        with open(kubeconfig, "w") as fh:
            fh.write("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:%d"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]
current-context: c
""" % args.port)
        version = subprocess.run([args.kubectl, "version", "--client"], capture_output=True, text=True).stdout
        for name, cmd in CASES:
            captured.clear()
            res = subprocess.run(
                [args.kubectl, "--kubeconfig", kubeconfig, "--cache-dir", os.path.join(home, "cache")] + cmd,
                capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=home))
            pb = [c for c in captured if c[1].startswith("application/vnd.kubernetes.protobuf")]
            status = "ok" if pb else "NO PROTOBUF POST"
            print("%-22s rc=%d %s %s" % (name, res.returncode, status,
                                         (res.stdout + res.stderr).strip().replace("\n", " | ")[:150]))
            if not pb:
                continue
            path, ctype, body = pb[-1]
            with open(os.path.join(FIXTURES, name + ".pb"), "wb") as fh:
                fh.write(body)
            with open(os.path.join(FIXTURES, name + ".json"), "w") as fh:
                json.dump({"command": ["kubectl"] + cmd, "path": path, "contentType": ctype,
                           "kubectl": version.strip()}, fh, indent=1)
                fh.write("\n")
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
