#!/usr/bin/env bash
# Builds the air-gapped image bundle: OCI image-layout archives assembled from binaries on this
# machine and named as the tutorials name them, for nodes that cannot reach a registry.
#
#   deploy/images.sh [OUTDIR]     (default ${KUBRS_DATA:-$HOME/.local/share/kubrs}/images)
#
# Writes OUTDIR/{pause,busybox,kuard,nginx,redis,curl}.oci.tar (and dns.oci.tar when DNS_BIN is
# set) and OUTDIR/images.txt (every image name, one per line). Load an archive with
#   ctr -a SOCKET -n k8s.io images import OUTDIR/nginx.oci.tar
# Each archive's manifests carry io.containerd.image.name (the full reference, so ctr needs no
# --base-name) and org.opencontainers.image.ref.name (the tag).
#
# The archives are reproducible (sorted tars with fixed mtime and owners, gzip -n), so the same
# inputs give the same digests. An archive whose inputs (this script, the binaries and libraries
# it copies, the architecture) are unchanged since the last run is kept as it is, which makes a
# repeated call cheap. Concurrent runs on one OUTDIR wait for each other.
#
# Images (for this machine's architecture):
#   registry.k8s.io/pause:3.10            a static C pause (busybox trap loop without a static libc)
#   docker.io/library/busybox             Debian's busybox-static with every applet linked in /bin
#   gcr.io/kuar-demo/kuard-amd64:TAG      the workspace's demo-web as kuard (blue, green, purple)
#   docker.io/library/nginx               Debian's nginx, official image's layout and default page
#   docker.io/library/redis               Debian's redis-server and redis-cli, protected mode off
#   docker.io/tutum/curl (and others)     busybox plus Debian's curl
#   docker.io/kubrs/dns:v0.1.0            the workspace's cluster DNS server (only with DNS_BIN;
#                                         deploy/addons/dns.yaml runs it)
# Every image but pause has the busybox layer at the bottom, so `kubectl exec … sh` works in it.
#
# Environment:
#   DEMO_WEB_BIN  the demo-web binary to package (default: the release build, which is built
#                 with `cargo build --release -p demo-web` when missing)
#   DNS_BIN       the dns binary to package as docker.io/kubrs/dns:v0.1.0 (the release build,
#                 `cargo build --release -p dns`); without it the dns image is not built
#   BUSYBOX       a static busybox (default /bin/busybox)
#   PAUSE_IMPL    c | busybox (default: c when gcc and a static libc are available)
#   SOURCE_DATE_EPOCH  the timestamp recorded in tars and image configs (default 0)
set -euo pipefail
shopt -s inherit_errexit
umask 022
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
script="$here/$(basename "$0")"
OUT=${1:-${KUBRS_DATA:-$HOME/.local/share/kubrs}/images}
EPOCH=${SOURCE_DATE_EPOCH:-0}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
BUSYBOX=${BUSYBOX:-/bin/busybox}
PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

die() { echo "images.sh: $*" >&2; exit 1; }

for tool in tar gzip sha256sum ldd flock dpkg; do
  command -v "$tool" >/dev/null || die "$tool is missing (run deploy/setup.sh)"
done

deb_arch=$(dpkg --print-architecture)
variant=""
case "$deb_arch" in
  amd64) arch=amd64 ;;
  arm64) arch=arm64 variant=v8 ;;
  armhf) arch=arm variant=v7 ;;
  i386) arch=386 ;;
  *) arch=$deb_arch ;;
esac
platform="\"architecture\":\"$arch\",\"os\":\"linux\"${variant:+,\"variant\":\"$variant\"}"

# ---------- inputs ----------
[ -x "$BUSYBOX" ] || die "$BUSYBOX is missing (apt-get install busybox-static, or run deploy/setup.sh)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is not a static binary (apt-get install busybox-static)"
fi
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
[ -x "$NGINX_BIN" ] || die "$NGINX_BIN is missing (apt-get install nginx, or run deploy/setup.sh)"
REDIS_BIN=$(command -v redis-server || true)
[ -n "$REDIS_BIN" ] || die "redis-server is missing (apt-get install redis-server, or run deploy/setup.sh)"
REDIS_BIN=$(readlink -f "$REDIS_BIN")
REDIS_CLI=$(command -v redis-cli || true)
[ -n "$REDIS_CLI" ] || die "redis-cli is missing (apt-get install redis-tools)"
CURL_BIN=$(command -v curl || true)
[ -n "$CURL_BIN" ] || die "curl is missing (apt-get install curl)"
if [ -z "${DEMO_WEB_BIN:-}" ]; then
  target=${CARGO_TARGET_DIR:-$repo/target}
  case "$target" in /*) ;; *) target="$repo/$target" ;; esac
  DEMO_WEB_BIN="$target/release/demo-web"
  if [ ! -x "$DEMO_WEB_BIN" ]; then
    echo "images.sh: building demo-web (cargo build --release -p demo-web)" >&2
    (cd "$repo" && cargo build --release -p demo-web)
  fi
fi
[ -x "$DEMO_WEB_BIN" ] || die "demo-web binary $DEMO_WEB_BIN is missing"
DNS_BIN=${DNS_BIN:-}
[ -z "$DNS_BIN" ] || [ -x "$DNS_BIN" ] || die "dns binary $DNS_BIN is missing (cargo build --release -p dns)"

if [ -z "${PAUSE_IMPL:-}" ]; then
  if command -v gcc >/dev/null && [ -e "$(gcc -print-file-name=libc.a)" ]; then PAUSE_IMPL=c; else PAUSE_IMPL=busybox; fi
fi

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kubrs-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/blobs/sha256"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# The shared libraries a dynamic executable loads (ldd), one absolute path per line; nothing
# for a static one. Fails on a library ldd cannot find.
libs_of() {
  local out
  out=$(ldd "$1" 2>/dev/null || true)
  if grep -q 'not found' <<<"$out"; then die "unresolved libraries for $1: $(grep 'not found' <<<"$out")"; fi
  awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out" | sort -u
}

# install_bin ROOTFS SRC DEST: copy an executable (stripped when it has symbols) to ROOTFS/DEST
# and every library it loads to the same path as on this machine.
install_bin() {
  local root=$1 src=$2 dest=$3 lib libs
  libs=$(libs_of "$src")
  mkdir -p "$root/$(dirname "$dest")"
  if command -v strip >/dev/null && strip --strip-unneeded -o "$root/$dest" "$src" 2>/dev/null; then
    chmod 0755 "$root/$dest"
  else
    install -m 0755 "$src" "$root/$dest"
  fi
  for lib in $libs; do
    mkdir -p "$root/$(dirname "$lib")"
    cp -L --preserve=mode "$lib" "$root/$lib"
  done
}

# The cache key of an archive: this script, the architecture, the timestamp and the content of
# every input file (with the libraries each executable loads).
inputs_key() {
  local f l libs
  {
    sha "$script"
    echo "$deb_arch $EPOCH"
    for f in "$@"; do
      [ -n "$f" ] || continue
      echo "$(sha256sum <"$f" | cut -d' ' -f1) $f"
      if [ -x "$f" ]; then
        libs=$(libs_of "$f")
        for l in $libs; do echo "$(sha "$l") $l"; done
      fi
    done
  } | sha256sum | cut -d' ' -f1
}

# up_to_date NAME KEY: true when OUT/NAME.oci.tar was built from the same inputs.
up_to_date() {
  [ -f "$OUT/$1.oci.tar" ] && [ -f "$OUT/.$1.key" ] && [ "$(cat "$OUT/.$1.key")" = "$2" ]
}

# build_layer ROOTFS: a deterministic gzip layer blob; prints "digest size diffid".
build_layer() {
  local root=$1 t="$WORK/layer.tar"
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
      -C "$root" -cf "$t" .
  local diffid; diffid=$(sha "$t")
  gzip -n -c "$t" >"$t.gz"
  local dig size; dig=$(sha "$t.gz"); size=$(stat -c %s "$t.gz")
  mv "$t.gz" "$WORK/blobs/sha256/$dig"
  rm -f "$t"
  echo "$dig $size $diffid"
}

blob() { # blob FILE: moves FILE into the blob store; prints "digest size"
  local dig size; dig=$(sha "$1"); size=$(stat -c %s "$1")
  mv "$1" "$WORK/blobs/sha256/$dig"
  echo "$dig $size"
}

# Per-archive state, reset by archive_begin.
A_NAME="" A_ENTRIES="" A_BLOBS=""

archive_begin() { A_NAME=$1 A_ENTRIES="" A_BLOBS=""; }

# archive_image "REF..." CONFIG_JSON LAYER...: one image (config + manifest) named by every REF;
# LAYER is a "digest size diffid" line from build_layer, bottom first.
archive_image() {
  local refs=$1 config=$2; shift 2
  local diff_ids="" history="" layers="" l dig size diffid
  for l in "$@"; do
    read -r dig size diffid <<<"$l"
    diff_ids+="${diff_ids:+,}\"sha256:$diffid\""
    history+="${history:+,}{\"created\":\"$CREATED\",\"created_by\":\"kubrs deploy/images.sh\"}"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dig\",\"size\":$size}"
    A_BLOBS+=" $dig"
  done
  printf '%s' "{$platform,\"created\":\"$CREATED\",\"config\":$config,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_ids]},\"history\":[$history]}" >"$WORK/config.json"
  local cdig csize; read -r cdig csize < <(blob "$WORK/config.json")
  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdig\",\"size\":$csize},\"layers\":[$layers]}" >"$WORK/manifest.json"
  local mdig msize; read -r mdig msize < <(blob "$WORK/manifest.json")
  A_BLOBS+=" $cdig $mdig"
  local ref
  for ref in $refs; do
    A_ENTRIES+="${A_ENTRIES:+,}{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mdig\",\"size\":$msize,\"platform\":{$platform},\"annotations\":{\"io.containerd.image.name\":\"$ref\",\"org.opencontainers.image.ref.name\":\"${ref##*:}\"}}"
    echo "$ref" >>"$WORK/$A_NAME.refs"
  done
}

# archive_end KEY: writes OUT/NAME.oci.tar (atomically) and its key.
archive_end() {
  local d="$WORK/$A_NAME-layout" dig
  mkdir -p "$d/blobs/sha256"
  for dig in $A_BLOBS; do cp "$WORK/blobs/sha256/$dig" "$d/blobs/sha256/$dig"; done
  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[$A_ENTRIES]}" >"$d/index.json"
  printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$d/oci-layout"
  tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner --format=gnu \
      -C "$d" -cf "$OUT/$A_NAME.oci.tar.tmp" oci-layout index.json blobs
  mv "$OUT/$A_NAME.oci.tar.tmp" "$OUT/$A_NAME.oci.tar"
  cp "$WORK/$A_NAME.refs" "$OUT/.$A_NAME.refs"
  echo "$1" >"$OUT/.$A_NAME.key"
  echo "images.sh: built $A_NAME.oci.tar ($(stat -c %s "$OUT/$A_NAME.oci.tar") bytes): $(paste -sd" " "$WORK/$A_NAME.refs")"
}

skip() { echo "images.sh: $1.oci.tar is up to date"; }

# ---------- the busybox layer (the base of every image but pause) ----------
PASSWD='root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false'
GROUP='root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:'

busybox_layer=""
base_layer() { # builds the busybox layer once per run; sets busybox_layer
  [ -n "$busybox_layer" ] && return
  local r="$WORK/rootfs-busybox" a
  mkdir -p "$r"/{bin,dev,etc,home,proc,root,sys,tmp,usr/bin,usr/sbin,usr/local/bin,var/spool/mail,var/www,var/tmp}
  chmod 1777 "$r/tmp" "$r/var/tmp"
  chmod 0700 "$r/root"
  install -m 0755 "$BUSYBOX" "$r/bin/busybox"
  for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
  done
  ln -s ../../bin/busybox "$r/usr/bin/env"
  printf '%s\n' "$PASSWD" >"$r/etc/passwd"
  printf '%s\n' "$GROUP" >"$r/etc/group"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$r/etc/nsswitch.conf"
  busybox_layer=$(build_layer "$r")
}

# users ROOTFS "passwd lines" "group lines": /etc/passwd and /etc/group of the base plus these.
users() {
  mkdir -p "$1/etc"
  printf '%s\n%s\n' "$PASSWD" "$2" >"$1/etc/passwd"
  printf '%s\n%s\n' "$GROUP" "$3" >"$1/etc/group"
}

# ---------- pause ----------
if [ "$PAUSE_IMPL" = c ]; then
  pause_key=$(inputs_key "$(gcc -print-file-name=libc.a)")
  pause_key=$(printf '%s %s' "$pause_key" "$(gcc --version | head -1)" | sha256sum | cut -d' ' -f1)
else
  pause_key=$(inputs_key "$BUSYBOX")
fi
if up_to_date pause "$pause_key"; then skip pause; else
  archive_begin pause
  r="$WORK/rootfs-pause"; mkdir -p "$r"
  if [ "$PAUSE_IMPL" = c ]; then
    # As kubernetes' build/pause/linux/pause.c: exit 0 on SIGINT/SIGTERM, reap children on
    # SIGCHLD, otherwise sleep in pause().
    cat >"$WORK/pause.c" <<'EOF'
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void sigdown(int signo) {
  static const char m[] = "pause: shutting down on signal\n";
  (void)signo; (void)!write(2, m, sizeof(m) - 1); _exit(0);
}
static void sigreap(int signo) { (void)signo; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) { puts("pause 3.10 (kubrs)"); return 0; }
  if (getpid() != 1) fprintf(stderr, "Warning: pause should be the first process\n");
  struct sigaction sa; memset(&sa, 0, sizeof sa);
  sa.sa_handler = sigdown;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
  sa.sa_handler = sigreap; sa.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
  for (;;) pause();
}
EOF
    gcc -Os -static -s -o "$r/pause" "$WORK/pause.c"
    chmod 0755 "$r/pause"
    entry='["/pause"]'
  else
    # PID 1 of a pid namespace ignores signals it has no handler for, so trap them.
    echo "images.sh: building a busybox pause (PAUSE_IMPL=busybox; the C one needs gcc and a static libc)" >&2
    mkdir -p "$r/bin"; install -m 0755 "$BUSYBOX" "$r/bin/busybox"
    ln -s busybox "$r/bin/sh"; ln -s busybox "$r/bin/sleep"
    entry='["/bin/sh","-c","trap \"exit 0\" TERM INT; while :; do sleep 3600 & wait $!; done"]'
  fi
  archive_image "registry.k8s.io/pause:3.10" \
    "{\"User\":\"65535:65535\",\"Env\":[\"$PATH_ENV\"],\"Entrypoint\":$entry,\"WorkingDir\":\"/\"}" \
    "$(build_layer "$r")"
  archive_end "$pause_key"
fi

# ---------- busybox ----------
key=$(inputs_key "$BUSYBOX")
if up_to_date busybox "$key"; then skip busybox; else
  base_layer
  archive_begin busybox
  archive_image "docker.io/library/busybox:latest docker.io/library/busybox:1.28" \
    "{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"sh\"]}" "$busybox_layer"
  archive_end "$key"
fi

# ---------- kuard (demo-web) ----------
key=$(inputs_key "$BUSYBOX" "$DEMO_WEB_BIN")
if up_to_date kuard "$key"; then skip kuard; else
  base_layer
  archive_begin kuard
  r="$WORK/rootfs-kuard"; mkdir -p "$r"
  install_bin "$r" "$DEMO_WEB_BIN" /kuard
  layer=$(build_layer "$r")
  for tag in blue green purple; do
    refs="gcr.io/kuar-demo/kuard-amd64:$tag"
    [ "$arch" = amd64 ] || refs+=" gcr.io/kuar-demo/kuard-$arch:$tag"
    archive_image "$refs" \
      "{\"Env\":[\"$PATH_ENV\",\"KUARD_VERSION=$tag\"],\"Cmd\":[\"/kuard\"],\"ExposedPorts\":{\"8080/tcp\":{}},\"WorkingDir\":\"/\"}" \
      "$busybox_layer" "$layer"
  done
  archive_end "$key"
fi

# ---------- nginx ----------
nginx_index=/usr/share/nginx/html/index.html
[ -f "$nginx_index" ] || nginx_index=""
nginx_mime=/etc/nginx/mime.types
[ -f "$nginx_mime" ] || nginx_mime=""
key=$(inputs_key "$BUSYBOX" "$NGINX_BIN" "$nginx_index" "$nginx_mime")
if up_to_date nginx "$key"; then skip nginx; else
  base_layer
  archive_begin nginx
  r="$WORK/rootfs-nginx"
  mkdir -p "$r"/{etc/nginx/conf.d,usr/share/nginx/html,var/log/nginx,var/lib/nginx,var/lock,run}
  mkdir -p "$r"/var/cache/nginx/{client,proxy,fastcgi,uwsgi,scgi}_temp
  install_bin "$r" "$NGINX_BIN" /usr/sbin/nginx
  users "$r" 'nginx:x:101:101:nginx user:/nonexistent:/bin/false' 'nginx:x:101:'
  # As the official image: logs go to the container's stdout and stderr.
  ln -s /dev/stdout "$r/var/log/nginx/access.log"
  ln -s /dev/stderr "$r/var/log/nginx/error.log"
  if [ -n "$nginx_mime" ]; then
    install -m 0644 "$nginx_mime" "$r/etc/nginx/mime.types"
  else
    cat >"$r/etc/nginx/mime.types" <<'EOF'
types {
    text/html html htm shtml;
    text/css css;
    text/plain txt;
    application/javascript js;
    application/json json;
    image/png png;
    image/jpeg jpeg jpg;
    image/svg+xml svg svgz;
}
EOF
  fi
  cat >"$r/etc/nginx/nginx.conf" <<'EOF'
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /run/nginx.pid;

events {
    worker_connections  1024;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    keepalive_timeout  65;

    client_body_temp_path /var/cache/nginx/client_temp;
    proxy_temp_path       /var/cache/nginx/proxy_temp;
    fastcgi_temp_path     /var/cache/nginx/fastcgi_temp;
    uwsgi_temp_path       /var/cache/nginx/uwsgi_temp;
    scgi_temp_path        /var/cache/nginx/scgi_temp;

    include /etc/nginx/conf.d/*.conf;
}
EOF
  cat >"$r/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen       80;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
EOF
  if [ -n "$nginx_index" ]; then
    install -m 0644 "$nginx_index" "$r/usr/share/nginx/html/index.html"
  else
    printf '<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully installed and\nworking. Further configuration is required.</p>\n</body>\n</html>\n' \
      >"$r/usr/share/nginx/html/index.html"
  fi
  printf '<!DOCTYPE html>\n<html>\n<head>\n<title>Error</title>\n</head>\n<body>\n<h1>An error occurred.</h1>\n<p>Sorry, the page you are looking for is currently unavailable.<br/>\nPlease try again later.</p>\n</body>\n</html>\n' \
    >"$r/usr/share/nginx/html/50x.html"
  nginx_version=$("$NGINX_BIN" -v 2>&1 | sed -n 's#.*nginx/\([0-9.]*\).*#\1#p')
  refs=""
  for tag in latest 1.7.9 1.9.1 1.10.0 1.11.5 1.14.2; do refs+=" docker.io/library/nginx:$tag"; done
  archive_image "$refs" \
    "{\"Env\":[\"$PATH_ENV\",\"NGINX_VERSION=$nginx_version\"],\"Cmd\":[\"nginx\",\"-g\",\"daemon off;\"],\"ExposedPorts\":{\"80/tcp\":{}},\"StopSignal\":\"SIGQUIT\",\"WorkingDir\":\"/\"}" \
    "$busybox_layer" "$(build_layer "$r")"
  archive_end "$key"
fi

# ---------- redis ----------
key=$(inputs_key "$BUSYBOX" "$REDIS_BIN" "$REDIS_CLI")
if up_to_date redis "$key"; then skip redis; else
  base_layer
  archive_begin redis
  r="$WORK/rootfs-redis"
  mkdir -p "$r/data" "$r/usr/local/bin"
  install_bin "$r" "$REDIS_BIN" /usr/bin/redis-check-rdb
  install_bin "$r" "$REDIS_CLI" /usr/bin/redis-cli
  # One binary; it picks its role from argv[0], as Debian's packages arrange it.
  for n in redis-server redis-sentinel redis-check-aof; do ln -s redis-check-rdb "$r/usr/bin/$n"; done
  users "$r" 'redis:x:999:999::/home/redis:/bin/false' 'redis:x:999:'
  # The official image builds redis with protected mode off; Debian's defaults to on. Options
  # after the config file override it, so a config or flag that sets it still wins.
  cat >"$r/usr/local/bin/redis-server" <<'EOF'
#!/bin/sh
case "$1" in
  -v|--version|-h|--help|--test-memory|--check-system) exec /usr/bin/redis-server "$@" ;;
esac
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  conf=$1; shift
  exec /usr/bin/redis-server "$conf" --protected-mode no "$@"
fi
exec /usr/bin/redis-server --protected-mode no "$@"
EOF
  cat >"$r/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
# As the official image: a first argument that is an option or a .conf file means redis-server.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
exec "$@"
EOF
  chmod 0755 "$r/usr/local/bin/redis-server" "$r/usr/local/bin/docker-entrypoint.sh"
  redis_version=$("$REDIS_BIN" --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
  archive_image "docker.io/library/redis:latest docker.io/library/redis:3.2.7-alpine" \
    "{\"Env\":[\"$PATH_ENV\",\"REDIS_VERSION=$redis_version\"],\"Entrypoint\":[\"docker-entrypoint.sh\"],\"Cmd\":[\"redis-server\"],\"ExposedPorts\":{\"6379/tcp\":{}},\"Volumes\":{\"/data\":{}},\"WorkingDir\":\"/data\"}" \
    "$busybox_layer" "$(build_layer "$r")"
  archive_end "$key"
fi

# ---------- curl ----------
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || ca=""
key=$(inputs_key "$BUSYBOX" "$CURL_BIN" "$ca")
if up_to_date curl "$key"; then skip curl; else
  base_layer
  archive_begin curl
  r="$WORK/rootfs-curl"; mkdir -p "$r"
  install_bin "$r" "$CURL_BIN" /usr/bin/curl
  if [ -n "$ca" ]; then mkdir -p "$r/etc/ssl/certs"; install -m 0644 "$ca" "$r/etc/ssl/certs/ca-certificates.crt"; fi
  cat >"$r/entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
# As curlimages/curl: options alone mean curl.
if [ "${1#-}" != "$1" ]; then set -- curl "$@"; fi
exec "$@"
EOF
  chmod 0755 "$r/entrypoint.sh"
  layer=$(build_layer "$r")
  archive_image "docker.io/tutum/curl:latest docker.io/radial/busyboxplus:curl" \
    "{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"/bin/sh\"]}" "$busybox_layer" "$layer"
  archive_image "docker.io/curlimages/curl:latest" \
    "{\"Env\":[\"$PATH_ENV\"],\"Entrypoint\":[\"/entrypoint.sh\"],\"Cmd\":[\"curl\"]}" "$busybox_layer" "$layer"
  archive_end "$key"
fi

# ---------- dns (the cluster DNS server of deploy/addons/dns.yaml) ----------
archives="pause busybox kuard nginx redis curl"
if [ -n "$DNS_BIN" ]; then
  archives+=" dns"
  key=$(inputs_key "$BUSYBOX" "$DNS_BIN")
  if up_to_date dns "$key"; then skip dns; else
    base_layer
    archive_begin dns
    r="$WORK/rootfs-dns"; mkdir -p "$r"
    install_bin "$r" "$DNS_BIN" /dns
    archive_image "docker.io/kubrs/dns:v0.1.0" \
      "{\"Env\":[\"$PATH_ENV\"],\"Entrypoint\":[\"/dns\"],\"ExposedPorts\":{\"53/tcp\":{},\"53/udp\":{},\"8080/tcp\":{},\"9153/tcp\":{}},\"WorkingDir\":\"/\"}" \
      "$busybox_layer" "$(build_layer "$r")"
    archive_end "$key"
  fi
fi

# Every image name in the bundle, for importers and tests.
for a in $archives; do cat "$OUT/.$a.refs"; done >"$OUT/images.txt.tmp"
mv "$OUT/images.txt.tmp" "$OUT/images.txt"
