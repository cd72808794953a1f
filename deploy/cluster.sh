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
# Small daemons with a few threads: two glibc malloc arenas instead of eight per core, and a
# fixed mmap threshold (glibc otherwise raises it after freeing one large buffer, such as the
# API server's decompressed OpenAPI document, and from then on keeps buffers up to that size in
# heaps it never shrinks: ~9 MiB of the API server's idle memory), keep their resident memory
# low at no measurable cost.
export MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072
components=(proxy kubelet scheduler controller-manager apiserver)
cluster_dns=10.96.0.10

# The node's primary IPv4 address (the source of the default route), else the first global one.
node_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="src") print $(i+1)}' | head -1)
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | grep -v '^10\.244\.' | head -1)
  echo "${ip:-127.0.0.1}"
}

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
  [ -x "$bin/proxy" ] && $SUDO "$bin/proxy" --cleanup >/dev/null 2>&1 || true
  [ -d "$data/containerd" ] && $SUDO "$here/deploy/containerd.sh" down "$data/containerd" || true
  # The kubelet's volume mounts (tmpfs for secrets, projected tokens, emptyDir Memory).
  awk -v d="$data/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    $SUDO umount -l "$m" 2>/dev/null || true
  done
  if ip link show cni0 >/dev/null 2>&1; then $SUDO ip link del cni0 || true; fi
  if command -v iptables-save >/dev/null; then
    for t in nat filter; do
      # (Read it whole first: `grep -q` on a pipe would SIGPIPE iptables-save under pipefail.)
      rules=$($SUDO iptables-save -t "$t" 2>/dev/null || true)
      if grep -qE 'CNI-|KUBE-' <<<"$rules"; then
        grep -vE -- '(-j|-A|^:)[ ]?(CNI-|KUBE-)' <<<"$rules" | $SUDO iptables-restore -T "$t" || true
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

# Run a component under a restart loop, as systemd's Restart=always would: the
# controller-manager and scheduler exit when they lose their leader lease (as upstream's do, for
# their supervisor to restart them), e.g. while the API server restarts. The pid file holds the
# loop's pid; stopping it stops the component.
supervise() { # name command args...
  local name=$1; shift
  nohup bash -c 'trap "kill \$child 2>/dev/null; wait \$child; exit 0" TERM INT
    while :; do "$@" & child=$!; wait $child; echo "exited ($?); restarting in 2 s" >&2; sleep 2; done' \
    "$name" "$@" >"$data/$name.log" 2>&1 &
  echo $! >"$data/$name.pid"
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
      (cd "$here" && cargo build --release -q -p apiserver -p controller-manager -p scheduler -p kubelet -p proxy -p dns -p demo-web)
    fi
    mkdir -p "$data"
    stop >/dev/null
    DEMO_WEB_BIN=$bin/demo-web DNS_BIN=$bin/dns "$here/deploy/images.sh" "$data/images" >/dev/null
    ip=$(node_ip)

    args=(--data-dir "$data/apiserver" --secure-port "$port" --advertise-address "$ip")
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
    supervise controller-manager "$bin/controller-manager" --kubeconfig "$kc" \
      --cluster-cidr "$cluster_cidr" --allocate-node-cidrs=true
    supervise scheduler "$bin/scheduler" --kubeconfig "$kc"
    echo "controller-manager and scheduler running, logs: $data/{controller-manager,scheduler}.log"

    $SUDO "$here/deploy/containerd.sh" up "$data/containerd" >/dev/null
    node=$(hostname | tr 'A-Z' 'a-z')
    $SUDO env MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 sh -c "nohup '$bin/kubelet' --kubeconfig '$kc' --hostname-override '$node' \
      --container-runtime-endpoint 'unix://$data/containerd/containerd.sock' \
      --root-dir '$data/kubelet' --pod-log-dir '$data/pods' --image-dir '$data/images' \
      --cni-conf-dir '$data/containerd/cni' --client-ca-file '$data/apiserver/pki/ca.crt' \
      --node-labels 'node-role.kubernetes.io/control-plane=' --node-ip '$ip' \
      --cluster-dns '$cluster_dns' \
      >'$data/kubelet.log' 2>&1 & echo \$! >'$data/kubelet.pid'"
    $SUDO env MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 sh -c "nohup '$bin/proxy' --kubeconfig '$kc' --hostname-override '$node' \
      --cluster-cidr '$cluster_cidr' >'$data/proxy.log' 2>&1 & echo \$! >'$data/proxy.pid'"
    echo "containerd, kubelet and proxy running (node $node, $ip), logs: $data/{containerd/containerd,kubelet,proxy}.log"
    for _ in $(seq 300); do
      KUBECONFIG=$kc kubectl get node "$node" 2>/dev/null | grep -q ' Ready' && break
      sleep 0.2
    done
    # Cluster DNS as an addon (a Deployment and the kube-dns Service at $cluster_dns).
    if [ -f "$here/deploy/addons/dns.yaml" ]; then
      KUBECONFIG=$kc kubectl apply -f "$here/deploy/addons/dns.yaml" >/dev/null
      KUBECONFIG=$kc kubectl -n kube-system rollout status deployment/kube-dns --timeout=60s >/dev/null 2>&1 \
        || echo "warning: cluster DNS is not ready yet (kubectl -n kube-system get pods)" >&2
    fi
    echo "export KUBECONFIG=$kc"
    ;;
  down) stop ;;
  purge) stop; $SUDO rm -rf "$data" ;;
  *) echo "usage: $0 up|down|purge" >&2; exit 2 ;;
esac
