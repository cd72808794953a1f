#!/usr/bin/env bash
# A private containerd for one kubrs node: its own root, state, sockets, runc root and CNI
# config directory, so it never touches a system containerd and several can run side by side.
#   deploy/containerd.sh up DIR [STREAM_ADDR] [NETNS]   render DIR/config.toml, start containerd,
#                                                      wait for DIR/containerd.sock
#   deploy/containerd.sh down DIR                      stop it and everything it started
#                                                      (shims, containers, mounts, pod cgroups)
# Settings this machine needs (see the README): cgroupfs (no systemd), restrict_oom_score_adj
# (root may lack CAP_SYS_RESOURCE), pod netns files under the state dir.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down DIR [STREAM_ADDR] [NETNS]" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile=$dir/containerd.pid
cni_bin=${CNI_BIN_DIR:-/usr/lib/cni}
[ -d "$cni_bin" ] || cni_bin=/opt/cni/bin
pause=${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}

render() {
  local stream=$1
  cat <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
oom_score = 0
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
  level = "warn"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$pause"
    stream_server_address = "$stream"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    max_container_log_line_size = 16384
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$dir/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$cni_bin"
      conf_dir = "$dir/cni"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
CONF
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$cmd" in
  up)
    stream=${3:-127.0.0.1}; netns=${4:-}
    if running; then echo "containerd already running (pid $(cat "$pidfile"))"; exit 0; fi
    mkdir -p "$dir/cni" "$dir/root" "$dir/state"
    render "$stream" >"$dir/config.toml"
    if [ -n "$netns" ]; then
      # nsenter --net keeps the host mount namespace (ip netns exec would remount /sys and hide
      # the cgroup mounts); unshare --uts gives the node its own hostname for hostNetwork pods.
      setsid nsenter --net="/run/netns/$netns" -- unshare --uts -- \
        sh -c "hostname $netns && exec containerd --config '$dir/config.toml'" \
        >"$dir/containerd.log" 2>&1 </dev/null &
    else
      setsid containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
    fi
    echo $! >"$pidfile"
    for _ in $(seq 100); do
      [ -S "$dir/containerd.sock" ] && ctr -a "$dir/containerd.sock" version >/dev/null 2>&1 && break
      running || { cat "$dir/containerd.log" >&2; exit 1; }
      sleep 0.05
    done
    [ -S "$dir/containerd.sock" ] || { echo "containerd did not start, see $dir/containerd.log" >&2; exit 1; }
    echo "containerd running (pid $(cat "$pidfile")), socket unix://$dir/containerd.sock"
    ;;
  down)
    sock=$dir/containerd.sock
    if running; then
      # Stop every task first so the shims exit, then containerd itself.
      if [ -S "$sock" ]; then
        for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
          ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        done
        sleep 0.2
        for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
          ctr -a "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
        done
      fi
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    # Shims started by this containerd carry its socket address on their command line.
    for p in $(pgrep -f "containerd-shim.*-address $sock" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
    # Mounts under the node dir (rootfs overlays, shm, netns bind mounts), deepest first.
    awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    rm -f "$pidfile" "$sock" "$sock.ttrpc" "$dir/debug.sock"
    echo "containerd in $dir stopped"
    ;;
  *) echo "usage: $0 up|down DIR [STREAM_ADDR] [NETNS]" >&2; exit 2 ;;
esac
