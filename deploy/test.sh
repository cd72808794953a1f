#!/usr/bin/env bash
# Run the whole test suite: unit tests, storage conformance on the embedded store and a real
# etcd, and the end-to-end tests that drive the real kubectl against a real API server.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/deploy/setup.sh"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kubrs-target}
cd "$here"
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
