#!/usr/bin/env bash
# Installs everything building, running and testing kubrs needs on Debian, Ubuntu or
# Raspberry Pi OS. Idempotent; run as root (or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have protoc || need_pkgs+=(protobuf-compiler)   # etcd-client's build compiles etcd's protos
# ... which import protobuf's well-known types (google/protobuf/descriptor.proto, struct.proto):
# Debian ships them in libprotobuf-dev, only recommended by protobuf-compiler.
[ -e /usr/include/google/protobuf/descriptor.proto ] || need_pkgs+=(libprotobuf-dev)
have etcd || need_pkgs+=(etcd-server)           # the etcd backend and its tests
have etcdctl || need_pkgs+=(etcd-client)
have containerd || need_pkgs+=(containerd)      # node agent runtime (later issues)
have runc || need_pkgs+=(runc)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need_pkgs+=(containernetworking-plugins)
have iptables || need_pkgs+=(iptables)
have nft || need_pkgs+=(nftables)               # proxy --proxy-mode=nftables (nft -f)
have ip || need_pkgs+=(iproute2)
have conntrack || need_pkgs+=(conntrack)         # proxy: drops stale UDP conntrack entries
have dig || need_pkgs+=(bind9-dnsutils)          # dns tests query the cluster DNS with dig
have cc || need_pkgs+=(build-essential)
have curl || need_pkgs+=(curl)
have pkg-config || need_pkgs+=(pkg-config)
# Sources of the air-gapped image bundle (deploy/images.sh); their services are not wanted.
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
[ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
have redis-server || need_pkgs+=(redis-server)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >/dev/null
  # Keep nginx and redis-server from starting (and binding :80 and :6379) as they install.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 0755 "$policy"
  fi
  $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if [ -n "$policy" ]; then $SUDO rm -f "$policy"; fi
  if [ -d /run/systemd/system ]; then
    for svc in nginx redis-server; do
      case " ${need_pkgs[*]} " in *" $svc "*) $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true ;; esac
    done
  fi
fi

if ! have cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

if ! have kubectl; then
  echo "setup: note: no kubectl on PATH; install kubectl to talk to the cluster (the test suite needs it)." >&2
fi
