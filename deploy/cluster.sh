#!/usr/bin/env bash
# Start (or stop) a kubrs cluster on this machine.
#   deploy/cluster.sh up      build, start the control plane (apiserver, controller-manager,
#                             scheduler) in the background, print KUBECONFIG
#   deploy/cluster.sh down    stop what `up` started (data is kept)
#   deploy/cluster.sh purge   stop and delete the data directory
# Environment: KUBRS_DATA (default ~/.local/share/kubrs), KUBRS_PORT (default 6443),
#              KUBRS_ETCD (etcd URLs; default: the embedded store).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${KUBRS_DATA:-$HOME/.local/share/kubrs}
port=${KUBRS_PORT:-6443}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kubrs-target}
pidfile=$data/apiserver.pid
components=(scheduler controller-manager apiserver)

stop_one() {
  local pf=$data/$1.pid
  if [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null; then
    kill "$(cat "$pf")"
    for _ in $(seq 50); do kill -0 "$(cat "$pf")" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $1 (pid $(cat "$pf"))"
  fi
  rm -f "$pf"
}

stop() {
  for c in "${components[@]}"; do stop_one "$c"; done
}

case "${1:-up}" in
  up)
    "$here/deploy/setup.sh"
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    (cd "$here" && cargo build --release -q -p apiserver -p controller-manager -p scheduler)
    mkdir -p "$data"
    stop
    args=(--data-dir "$data/apiserver" --secure-port "$port")
    [ -n "${KUBRS_ETCD:-}" ] && args+=(--etcd-servers "$KUBRS_ETCD")
    nohup "$CARGO_TARGET_DIR/release/apiserver" "${args[@]}" >"$data/apiserver.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
      [ -f "$data/apiserver/admin.kubeconfig" ] && grep -q "ready" "$data/apiserver.log" 2>/dev/null && break
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$data/apiserver.log"; exit 1; }
      sleep 0.1
    done
    echo "apiserver running (pid $(cat "$pidfile")), log: $data/apiserver.log"
    kc=$data/apiserver/admin.kubeconfig
    for c in controller-manager scheduler; do
      nohup "$CARGO_TARGET_DIR/release/$c" --kubeconfig "$kc" >"$data/$c.log" 2>&1 &
      echo $! >"$data/$c.pid"
      echo "$c running (pid $!), log: $data/$c.log"
    done
    echo "export KUBECONFIG=$kc"
    ;;
  down) stop ;;
  purge) stop; rm -rf "$data" ;;
  *) echo "usage: $0 up|down|purge" >&2; exit 2 ;;
esac
