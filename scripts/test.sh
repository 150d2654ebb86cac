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

# System packages: bubblewrap is the peer the latency harness measures against; Python with
# venv runs the unmodified E2B SDK against envd.
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# btrfs-progs: volumes are btrfs subvolumes where the data dir is btrfs; a test makes one.
command -v mkfs.btrfs >/dev/null || missing+=(btrfs-progs)
# Sandbox networking: nftables for the egress rules, conntrack to drop a sandbox's flows,
# iproute2 for veths and addresses.
command -v nft >/dev/null || missing+=(nftables)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v ip >/dev/null || missing+=(iproute2)
# mmdebstrap builds the Debian roots of template recipes.
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if ((${#missing[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target add x86_64-unknown-freebsd >/dev/null
# libzfs_core and libnvpair for coppice-zfs's `libzfs-core` feature (Debian backports contrib).
./scripts/install-zfs-dev.sh
# CRIU 4.2 for durable pause (the distribution's 3.17 fails on this kernel), built from source.
./scripts/install-criu.sh
export COPPICE_CRIU=/usr/local/sbin/criu

# The E2B Python SDKs, pinned, in a venv of their own (the envd tests drive envd through the
# base SDK; the code interpreter tests use e2b-code-interpreter).
E2B_SDK_VERSION=2.63.0
E2B_CODE_INTERPRETER_VERSION=2.11.5
venv=target/e2b-venv
if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('e2b') == '$E2B_SDK_VERSION'; assert m.version('e2b-code-interpreter') == '$E2B_CODE_INTERPRETER_VERSION'" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "e2b==$E2B_SDK_VERSION" \
        "e2b-code-interpreter==$E2B_CODE_INTERPRETER_VERSION"
fi
export COPPICE_E2B_PYTHON="$PWD/$venv/bin/python"

# The E2B JS SDK, pinned by tests/sdk/package-lock.json.
command -v npm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; }
(cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)

echo "== unit and component tests (privileged tests are listed as ignored here)"
cargo test --workspace --locked
# The code interpreter server over loopback (Python standard library only).
(cd templates/code-interpreter/server && python3 -m unittest discover -v)
# The libzfs_core path of coppice-zfs, linked against the real library (no pool here: it
# checks that a host without /dev/zfs is reported as such).
cargo test --locked -p coppice-zfs --features libzfs-core

echo "== privileged tests, for real"
# The CLI's end-to-end test drives the coppice binary.
cargo build --locked -p coppice-cli
export COPPICE_PRIVILEGED_TESTS=1
# The lifecycle suite prints its seed; rerun a failure with COPPICE_SUITE_SEED=<seed>.
for target in coppice-linux:privileged coppice-overlay:privileged coppice-net:privileged \
    coppice-gateway:privileged coppice-gateway:network coppice-gateway:lifecycle_suite \
    coppice-gateway:durable \
    coppice-tests:privileged coppice-tests:envd; do
    package=${target%%:*}
    test=${target##*:}
    log=$(mktemp)
    cargo test --locked -p "$package" --test "$test" -- --ignored --test-threads=1 --nocapture 2>&1 | tee "$log"
    passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
    rm -f "$log"
    if [[ -z "$passed" || "$passed" -eq 0 ]]; then
        echo "privileged tests $test of $package did not run" >&2
        exit 1
    fi
done

echo "== latency harness (p50/p95, bwrap as the peer)"
cargo build --locked --release -p coppice-linux -p coppice-envd -p coppice-benches --bins
./target/release/coppice-latency --iterations 300 --density 200

echo "== envd harness (Process/Start p50/p95 beside spawn and bwrap; /files throughput, peak RSS)"
./target/release/coppice-envd-bench --iterations 300 --file-mib 1024

echo "== API harness (create + Process/Start over HTTP, sequential and bursts; proxy overhead)"
./target/release/coppice-api-bench --iterations 100 --burst 20 --bursts 5

echo "== network harness (create with and without the bridge network side by side; air-gap flip)"
./target/release/coppice-net-bench --iterations 200

echo "== code interpreter harness (run_code of a trivial statement at the server, beside exec over a pipe)"
(cd templates/code-interpreter/server && python3 bench_server.py --iterations 300)

echo "== code interpreter through the SDKs (create until the first run_code, beside a base create and first command)"
./scripts/code-interpreter-bench.sh --iterations 30 --warm 200

echo "== pause harness (in-memory pause/resume p50/p95 beside the raw freezer; filesystem pause and reboot)"
./target/release/coppice-pause-bench --iterations 200 --resident-mib 50
