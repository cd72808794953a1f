#!/usr/bin/env bash
# Start (or stop) a single-node kubrs cluster on this machine.
#   deploy/cluster.sh up      install what is missing, build release binaries, build and import
#                             the air-gapped image bundle, start the control plane (apiserver,
#                             controller-manager, scheduler) and the node (a private containerd,
#                             kubelet), print the KUBECONFIG line
#   deploy/cluster.sh down    stop everything `up` started and remove what pods left on the host
#                             (containers, shims, mounts, CNI bridge and iptables chains, pod
#                             cgroups); the data directory is kept
#   deploy/cluster.sh purge   down, then delete the data directory
# Environment: KUBRS_DATA (default ~/.local/share/kubrs), KUBRS_PORT (default 6443),
#              KUBRS_ETCD (etcd URLs; default: the embedded store),
#              KUBRS_POD_CIDR (default 10.244.0.0/16 for the cluster, the node gets a /24),
#              KUBRS_NO_BUILD=1 to use the release binaries already built.
# The node parts need root (containerd, CNI, iptables); run as root or with sudo available.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${KUBRS_DATA:-$HOME/.local/share/kubrs}
port=${KUBRS_PORT:-6443}
cluster_cidr=${KUBRS_POD_CIDR:-10.244.0.0/16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kubrs-target}
bin=$CARGO_TARGET_DIR/release
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# Small daemons with a few threads: two glibc malloc arenas instead of eight per core keep
# their resident memory low at no measurable cost.
export MALLOC_ARENA_MAX=2
components=(kubelet scheduler controller-manager apiserver)

stop_one() {
  local pf=$data/$1.pid
  if [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null; then
    $SUDO kill "$(cat "$pf")" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$(cat "$pf")" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $1 (pid $(cat "$pf"))"
  fi
  rm -f "$pf"
}

cleanup_host() {
  # Everything pods left: the runtime (tasks, shims, mounts), the CNI bridge, the iptables
  # chains CNI plugins and the proxy added, and pod cgroups.
  [ -d "$data/containerd" ] && $SUDO "$here/deploy/containerd.sh" down "$data/containerd" || true
  if ip link show cni0 >/dev/null 2>&1; then $SUDO ip link del cni0 || true; fi
  if command -v iptables-save >/dev/null; then
    for t in nat filter; do
      if $SUDO iptables-save -t "$t" 2>/dev/null | grep -qE 'CNI-|KUBE-'; then
        $SUDO iptables-save -t "$t" | grep -vE -- '(-j|-A|^:)[ ]?(CNI-|KUBE-)' | $SUDO iptables-restore -T "$t" || true
      fi
    done
  fi
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h/kubepods" ] && $SUDO find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

stop() {
  for c in "${components[@]}"; do stop_one "$c"; done
  cleanup_host
}

wait_for() { # file pid log
  for _ in $(seq 200); do
    [ -e "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1 (see $3)" >&2; exit 1
}

case "${1:-up}" in
  up)
    "$here/deploy/setup.sh"
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    if [ -z "${KUBRS_NO_BUILD:-}" ]; then
      (cd "$here" && cargo build --release -q -p apiserver -p controller-manager -p scheduler -p kubelet -p demo-web)
    fi
    mkdir -p "$data"
    stop >/dev/null
    DEMO_WEB_BIN=$bin/demo-web "$here/deploy/images.sh" "$data/images" >/dev/null

    args=(--data-dir "$data/apiserver" --secure-port "$port")
    [ -n "${KUBRS_ETCD:-}" ] && args+=(--etcd-servers "$KUBRS_ETCD")
    nohup "$bin/apiserver" "${args[@]}" >"$data/apiserver.log" 2>&1 &
    echo $! >"$data/apiserver.pid"
    kc=$data/apiserver/admin.kubeconfig
    for _ in $(seq 100); do
      [ -f "$kc" ] && grep -q "ready" "$data/apiserver.log" 2>/dev/null && break
      kill -0 "$(cat "$data/apiserver.pid")" 2>/dev/null || { cat "$data/apiserver.log"; exit 1; }
      sleep 0.1
    done
    echo "apiserver running (pid $(cat "$data/apiserver.pid")), log: $data/apiserver.log"
    nohup "$bin/controller-manager" --kubeconfig "$kc" --cluster-cidr "$cluster_cidr" \
      --allocate-node-cidrs=true >"$data/controller-manager.log" 2>&1 &
    echo $! >"$data/controller-manager.pid"
    nohup "$bin/scheduler" --kubeconfig "$kc" >"$data/scheduler.log" 2>&1 &
    echo $! >"$data/scheduler.pid"
    echo "controller-manager and scheduler running, logs: $data/{controller-manager,scheduler}.log"

    $SUDO "$here/deploy/containerd.sh" up "$data/containerd" >/dev/null
    node=$(hostname | tr 'A-Z' 'a-z')
    $SUDO env MALLOC_ARENA_MAX=2 sh -c "nohup '$bin/kubelet' --kubeconfig '$kc' --hostname-override '$node' \
      --container-runtime-endpoint 'unix://$data/containerd/containerd.sock' \
      --root-dir '$data/kubelet' --pod-log-dir '$data/pods' --image-dir '$data/images' \
      --cni-conf-dir '$data/containerd/cni' --client-ca-file '$data/apiserver/pki/ca.crt' \
      --node-labels 'node-role.kubernetes.io/control-plane=' \
      >'$data/kubelet.log' 2>&1 & echo \$! >'$data/kubelet.pid'"
    echo "containerd and kubelet running (node $node), logs: $data/{containerd/containerd,kubelet}.log"
    for _ in $(seq 300); do
      KUBECONFIG=$kc kubectl get node "$node" 2>/dev/null | grep -q ' Ready' && break
      sleep 0.2
    done
    echo "export KUBECONFIG=$kc"
    ;;
  down) stop ;;
  purge) stop; $SUDO rm -rf "$data" ;;
  *) echo "usage: $0 up|down|purge" >&2; exit 2 ;;
esac
