#!/usr/bin/env bash
# An N-node kubrs cluster on this machine: one control plane in the host's network namespace and
# N nodes, each a network namespace with its own address, containerd, kubelet and proxy.
#
#   deploy/multinode.sh up [N]    start (N nodes, default 3; a previous cluster is torn down
#                                 first), apply the cluster DNS addon, wait until every node and
#                                 DNS are Ready, print the KUBECONFIG line
#   deploy/multinode.sh down      stop everything `up` started (by recorded PID) and remove what
#                                 it and the pods left: containers, shims, mounts, iptables rules,
#                                 routes, veths, network namespaces, the bridge and pod cgroups.
#                                 Works after a failed or partial `up`. Logs are kept.
#   deploy/multinode.sh purge     down, then delete the data directory
#   deploy/multinode.sh status    what runs, one line each
#
#   host netns: bridge kubrsbr0 10.200.0.1/24, apiserver (https://10.200.0.1:PORT),
#               controller-manager (node IPAM from 10.244.0.0/16, servicelb), scheduler;
#               a route to every node's pod CIDR via that node's address
#   node i:     netns kubrs-n<i>, eth0 10.200.0.(10+i)/24, default via 10.200.0.1, own UTS
#               namespace with hostname kubrs-n<i>; containerd, kubelet (cgroups under
#               /kubrs-n<i>, CNI bridge without masquerade) and proxy (iptables service rules and
#               host-gw routes to the other nodes' pod CIDRs) run inside both namespaces
#
# Environment:
#   KUBRS_MN_DATA      data directory (default /tmp/kubrs-multinode)
#   KUBRS_BIN_DIR      where the binaries are (default $CARGO_TARGET_DIR/release, else .../debug)
#   KUBRS_MN_PORT      apiserver port (default 6443)
#   KUBRS_MN_POD_CIDR  cluster pod CIDR (default 10.244.0.0/16; each node gets a /24)
#   KUBRS_MN_IMAGES    where deploy/images.sh builds (or keeps) the image bundle, packaging
#                      $KUBRS_BIN_DIR/demo-web and dns (default: DATA/images)
#   KUBRS_MN_TIMEOUT   seconds to wait for nodes and DNS to be Ready (default 120)
#   KUBRS_MN_CONTROLLERS  the controller-manager's --controllers (default *)
#   KUBRS_MN_KEEP=1    leave a failed `up` running to look at it (default: it tears down)
# Needs root (network namespaces, containerd, iptables), kubectl, containerd, ctr, runc, CNI
# plugins (deploy/setup.sh installs them). Only one such cluster runs on a machine at a time:
# the bridge, namespace names and addresses are fixed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath -m "${KUBRS_MN_DATA:-/tmp/kubrs-multinode}")
port=${KUBRS_MN_PORT:-6443}
cluster_cidr=${KUBRS_MN_POD_CIDR:-10.244.0.0/16}
timeout=${KUBRS_MN_TIMEOUT:-120}
controllers=${KUBRS_MN_CONTROLLERS:-*}
target=${CARGO_TARGET_DIR:-$HOME/.cache/kubrs-target}
if [ -n "${KUBRS_BIN_DIR:-}" ]; then bin=$KUBRS_BIN_DIR
elif [ -x "$target/release/kubelet" ]; then bin=$target/release
else bin=$target/debug; fi

BR=kubrsbr0
BR_IP=10.200.0.1
NET=10.200.0.0/24
DNS_IP=10.96.0.10
NAT_CHAIN=KUBRS-MN-POSTROUTING
FWD_CHAIN=KUBRS-MN-FORWARD
# Small daemons with a few threads: two malloc arenas and a fixed mmap threshold keep their
# resident memory low (see cluster.sh).
export MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072

[ "$(id -u)" -eq 0 ] || { echo "multinode.sh: run as root" >&2; exit 1; }

log() { echo "multinode: $*" >&2; }
die() { echo "multinode: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }
kc=$data/apiserver/admin.kubeconfig
k() { kubectl --kubeconfig "$kc" --request-timeout=10s "$@"; }
node_ip() { echo "10.200.0.$((10 + $1))"; }
veth() { echo "veth-kubrs-n$1"; }

# ---------- processes, by recorded PID ----------
# A pid file holds "PID NAME"; a PID is only signalled while /proc/PID/exe is still NAME, so a
# recycled PID is never hit.
record() { echo "$2 $3" >"$data/pids/$1.pid"; }

ours() { # ours PIDFILE -> prints the PID if it still runs the recorded binary
  local pid name exe
  read -r pid name <"$1" 2>/dev/null || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  [ "$(basename "${exe% (deleted)}")" = "$name" ] || return 1
  echo "$pid"
}

stop_pids() { # stop_pids PIDFILE...: SIGTERM all, wait up to 10 s, then SIGKILL
  local f pid pids=()
  for f in "$@"; do
    [ -f "$f" ] || continue
    if pid=$(ours "$f"); then kill "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for f in "$@"; do
    [ -f "$f" ] || continue
    if pid=$(ours "$f"); then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$f"
  done
}

# ---------- down ----------
recorded_nodes() { # node indexes from the record and from namespaces that exist
  {
    [ -f "$data/nodes" ] && cat "$data/nodes"
    ip netns list 2>/dev/null | sed -n 's/^kubrs-n\([0-9]\+\).*/\1/p'
    ls -d "$data"/n[0-9]* 2>/dev/null | sed -n 's#.*/n\([0-9]\+\)$#\1#p'
  } | sort -un || true
}

down() {
  local nodes i ns c
  mkdir -p "$data/pids"
  nodes=$(recorded_nodes)
  # Node agents first, so nothing restarts containers while the runtimes are stopped.
  stop_pids "$data"/pids/kubelet-*.pid "$data"/pids/proxy-*.pid
  for i in $nodes; do
    ns=kubrs-n$i
    [ -d "$data/n$i/containerd" ] && "$here/deploy/containerd.sh" down "$data/n$i/containerd" >/dev/null 2>&1 || true
    if [ -e "/run/netns/$ns" ]; then
      [ -x "$bin/proxy" ] && nsenter --net="/run/netns/$ns" -- "$bin/proxy" --cleanup >/dev/null 2>&1 || true
      ip netns del "$ns" 2>/dev/null || true
    fi
    stop_pids "$data/pids/containerd-$i.pid"
    ip link del "$(veth "$i")" 2>/dev/null || true
    # Pod cgroups (containerd never removes cgroup parents), deepest first.
    for c in /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do
      [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  done
  # What is still mounted below the data directory (kubelet volumes, container rootfs), deepest
  # first, so removing the directory never reaches into a mount.
  awk -v d="$data/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  stop_pids "$data"/pids/scheduler.pid "$data"/pids/controller-manager.pid "$data"/pids/apiserver.pid
  if [ -f "$data/routes" ]; then
    while read -r cidr via; do ip route del "$cidr" via "$via" 2>/dev/null || true; done <"$data/routes"
    rm -f "$data/routes"
  fi
  ip link del "$BR" 2>/dev/null || true
  iptables -t nat -D POSTROUTING -j "$NAT_CHAIN" 2>/dev/null || true
  iptables -t nat -F "$NAT_CHAIN" 2>/dev/null && iptables -t nat -X "$NAT_CHAIN" 2>/dev/null || true
  iptables -t filter -D FORWARD -j "$FWD_CHAIN" 2>/dev/null || true
  iptables -t filter -F "$FWD_CHAIN" 2>/dev/null && iptables -t filter -X "$FWD_CHAIN" 2>/dev/null || true
  if [ -f "$data/ip_forward.orig" ]; then
    sysctl -qw net.ipv4.ip_forward="$(cat "$data/ip_forward.orig")" || true
    rm -f "$data/ip_forward.orig"
  fi
  rm -f "$data/nodes"
}

# ---------- up ----------
wait_until() { # wait_until SECONDS WHAT CMD... (CMD is quiet itself)
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@"; do
    if [ "$(date +%s)" -ge "$end" ]; then
      local f
      for f in "$data"/*.log; do echo "--- $f"; tail -n 8 "$f"; done >&2
      die "timed out after ${secs}s waiting for $what (logs in $data)"
    fi
    sleep 0.2
  done
}

# Fails `up` at once when a daemon died.
alive() {
  ours "$data/pids/$1.pid" >/dev/null && return 0
  tail -n 30 "$data/$1.log" >&2
  die "$1 exited (log: $data/$1.log)"
}

apiserver_ready() { alive apiserver; [ -f "$kc" ] && k get --raw /readyz >/dev/null 2>&1; }

nodes_ready() {
  local i
  for i in $(seq "$n"); do
    alive "kubelet-$i"; alive "proxy-$i"
    k get node "kubrs-n$i" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True || return 1
  done
}

pod_cidr() { alive "kubelet-$1"; k get node "kubrs-n$1" -o jsonpath='{.spec.podCIDR}' 2>/dev/null | grep -q .; }

dns_ready() {
  k -n kube-system get endpoints kube-dns -o jsonpath='{.subsets[*].addresses[*].ip}' 2>/dev/null | grep -q .
}

start_node() { # start_node I: containerd, kubelet and proxy in the node's namespaces
  local i=$1 ns=kubrs-n$1 ip dir cpid
  ip=$(node_ip "$i"); dir=$data/n$i
  mkdir -p "$dir"
  "$here/deploy/containerd.sh" up "$dir/containerd" "$ip" "$ns" >/dev/null
  read -r cpid <"$dir/containerd/containerd.pid"
  record "containerd-$i" "$cpid" containerd
  # nsenter --net keeps the host's mount namespace (ip netns exec would remount /sys and hide
  # the cgroup mounts); --uts joins containerd's, so hostNetwork pods and the node agree on the
  # host name. nsenter and setsid exec, so $! is the daemon's own PID.
  setsid nsenter --net="/run/netns/$ns" --uts="/proc/$cpid/ns/uts" -- "$bin/kubelet" \
    --kubeconfig "$kc" --hostname-override "$ns" --node-ip "$ip" \
    --container-runtime-endpoint "unix://$dir/containerd/containerd.sock" \
    --root-dir "$dir/kubelet" --pod-log-dir "$dir/pods" --image-dir "$images" \
    --cni-conf-dir "$dir/containerd/cni" --pod-masquerade=false --cgroup-root "/$ns" \
    --cluster-dns "$DNS_IP" --client-ca-file "$data/apiserver/pki/ca.crt" \
    >"$data/kubelet-$i.log" 2>&1 </dev/null &
  record "kubelet-$i" $! kubelet
  setsid nsenter --net="/run/netns/$ns" --uts="/proc/$cpid/ns/uts" -- "$bin/proxy" \
    --kubeconfig "$kc" --hostname-override "$ns" --cluster-cidr "$cluster_cidr" \
    >"$data/proxy-$i.log" 2>&1 </dev/null &
  record "proxy-$i" $! proxy
}

up() {
  n=${1:-3}
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 50 ] || die "N must be 1..50, got $n"
  local b i ip ns t0 t_img t_net t_nodes cidr
  for b in apiserver controller-manager scheduler kubelet proxy dns demo-web; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing (cargo build --release, or set KUBRS_BIN_DIR)"
  done
  for b in kubectl containerd ctr runc nsenter iptables; do
    command -v "$b" >/dev/null || die "$b is missing (run deploy/setup.sh)"
  done
  t0=$(now)
  down
  # A fresh cluster each time; only the image bundle is kept between runs.
  find "$data" -mindepth 1 -maxdepth 1 ! -name images -exec rm -rf --one-file-system {} + 2>/dev/null || true
  mkdir -p "$data/pids"
  # images.sh keeps archives whose inputs did not change, so this is quick after the first run.
  images=${KUBRS_MN_IMAGES:-$data/images}
  DEMO_WEB_BIN=$bin/demo-web DNS_BIN=$bin/dns "$here/deploy/images.sh" "$images" >"$data/images.log" 2>&1 \
    || { cat "$data/images.log" >&2; die "building the image bundle failed"; }
  seq "$n" >"$data/nodes"
  t_img=$(now)

  # The underlay: one L2 segment (the bridge) that the host and every node sit on.
  cat /proc/sys/net/ipv4/ip_forward >"$data/ip_forward.orig"
  sysctl -qw net.ipv4.ip_forward=1
  ip link add "$BR" type bridge
  ip addr add "$BR_IP/24" dev "$BR"
  ip link set "$BR" up
  # Nodes and pods reach the outside (the DNS addon's upstream resolvers) masqueraded; traffic
  # on the bridge is accepted even where FORWARD's policy drops.
  iptables -t nat -N "$NAT_CHAIN"
  iptables -t nat -A "$NAT_CHAIN" -s "$NET" ! -o "$BR" -j MASQUERADE
  iptables -t nat -A "$NAT_CHAIN" -s "$cluster_cidr" ! -d "$cluster_cidr" ! -o "$BR" -j MASQUERADE
  iptables -t nat -A POSTROUTING -j "$NAT_CHAIN"
  iptables -t filter -N "$FWD_CHAIN"
  iptables -t filter -A "$FWD_CHAIN" -i "$BR" -j ACCEPT
  iptables -t filter -A "$FWD_CHAIN" -o "$BR" -j ACCEPT
  iptables -t filter -I FORWARD -j "$FWD_CHAIN"
  for i in $(seq "$n"); do
    ns=kubrs-n$i; ip=$(node_ip "$i")
    ip netns add "$ns"
    ip link add "$(veth "$i")" type veth peer name eth0 netns "$ns"
    ip link set "$(veth "$i")" master "$BR" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$BR_IP"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  done
  t_net=$(now)

  # The control plane, in the host's namespace, reachable from the nodes at the bridge address.
  "$bin/apiserver" --data-dir "$data/apiserver" --secure-port "$port" \
    --bind-address 0.0.0.0 --advertise-address "$BR_IP" >"$data/apiserver.log" 2>&1 </dev/null &
  record apiserver $! apiserver
  wait_until 30 "the apiserver" apiserver_ready
  "$bin/controller-manager" --kubeconfig "$kc" --cluster-cidr "$cluster_cidr" \
    --allocate-node-cidrs=true --controllers "$controllers" >"$data/controller-manager.log" 2>&1 </dev/null &
  record controller-manager $! controller-manager
  "$bin/scheduler" --kubeconfig "$kc" >"$data/scheduler.log" 2>&1 </dev/null &
  record scheduler $! scheduler

  for i in $(seq "$n"); do start_node "$i"; done

  # Routes from the host to every pod CIDR, once node IPAM has assigned them.
  for i in $(seq "$n"); do
    ns=kubrs-n$i
    wait_until "$timeout" "the pod CIDR of $ns" pod_cidr "$i"
    cidr=$(k get node "$ns" -o jsonpath='{.spec.podCIDR}')
    ip route add "$cidr" via "$(node_ip "$i")" || die "cannot add the route $cidr via $(node_ip "$i") (a conflicting route? see 'ip route')"
    echo "$cidr $(node_ip "$i")" >>"$data/routes"
  done
  wait_until "$timeout" "every node to be Ready" nodes_ready
  t_nodes=$(now)

  if [ -f "$here/deploy/addons/dns.yaml" ]; then
    k apply -f "$here/deploy/addons/dns.yaml" >/dev/null
    wait_until "$timeout" "cluster DNS to be Ready" dns_ready
  else
    log "deploy/addons/dns.yaml is missing: no cluster DNS"
  fi
  log "$n nodes up in $(secs "$t0" "$(now)") (teardown and image bundle $(secs "$t0" "$t_img"), network $(secs "$t_img" "$t_net"), nodes Ready $(secs "$t_net" "$t_nodes"), DNS $(secs "$t_nodes" "$(now)")); logs in $data"
  for i in $(seq "$n"); do
    log "  kubrs-n$i $(node_ip "$i") pods $(k get node "kubrs-n$i" -o jsonpath='{.spec.podCIDR}')"
  done
  echo "export KUBECONFIG=$kc"
}

status() {
  local f pid
  for f in "$data"/pids/*.pid; do
    [ -f "$f" ] || continue
    if pid=$(ours "$f"); then echo "$(basename "$f" .pid) running pid $pid rss $(awk '/VmRSS/ {print $2 " " $3}' "/proc/$pid/status")"
    else echo "$(basename "$f" .pid) stopped"; fi
  done
}

case "${1:-}" in
  up)
    mkdir -p "$data"
    # A failed up leaves nothing running (KUBRS_MN_KEEP=1 keeps it for a look).
    if [ -z "${KUBRS_MN_KEEP:-}" ]; then
      trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed; tearing down (logs in $data)"; down >/dev/null 2>&1 || true; fi' EXIT
    fi
    up "${2:-3}"
    trap - EXIT
    ;;
  down) down; log "down" ;;
  purge) down; rm -rf "$data"; log "purged $data" ;;
  status) status ;;
  *) echo "usage: $0 up [N] | down | purge | status" >&2; exit 2 ;;
esac
