#!/usr/bin/env bash
# The full test command. Installs what the tests need (as on a fresh machine), then runs every
# tier: unit and component tests, the privileged tests for real (root required), and the
# latency harness that prints p50/p95 beside bwrap.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh must run as root: the privileged tier creates namespaces, mounts and cgroups" >&2
    exit 1
fi

# System packages: bubblewrap is the peer the latency harness measures against.
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
if ((${#missing[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target add x86_64-unknown-freebsd >/dev/null

echo "== unit and component tests (privileged tests are listed as ignored here)"
cargo test --workspace --locked

echo "== privileged tests, for real"
export COPPICE_PRIVILEGED_TESTS=1
for package in coppice-linux coppice-overlay coppice-gateway coppice-tests; do
    log=$(mktemp)
    cargo test --locked -p "$package" --test privileged -- --ignored --test-threads=1 2>&1 | tee "$log"
    passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
    rm -f "$log"
    if [[ -z "$passed" || "$passed" -eq 0 ]]; then
        echo "privileged tests of $package did not run" >&2
        exit 1
    fi
done

echo "== latency harness (p50/p95, bwrap as the peer)"
cargo build --locked --release -p coppice-linux -p coppice-benches --bins
./target/release/coppice-latency --iterations 300 --density 200
