#!/usr/bin/env bash
# The code interpreter's latency harness through the SDKs: starts a release coppiced
# (loopback-only network, a data dir of its own), waits for it to build the shipped
# templates from their recipes (timing it), runs tests/sdk/code_interpreter_bench.py against
# the built code-interpreter-v1, and stops it. Needs COPPICE_E2B_PYTHON (scripts/test.sh sets
# it up) and mmdebstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p coppice-gateway --bin coppiced
data=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="bench-$RANDOM$RANDOM"
COPPICE_API_KEY=$key ./target/release/coppiced --listen "127.0.0.1:$port" --data-dir "$data" \
    --network loopback --shipped-templates build >"$data.log" 2>&1 &
daemon=$!
stop() {
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    rm -rf "$data" "$data.log"
}
trap stop EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(600):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("coppiced did not answer /health within 60 s")
PY
python3 - "$port" "$key" "$data.log" <<'PY'
import json, sys, time, urllib.request
began = time.monotonic()
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/templates/code-interpreter-v1",
                                 headers={"X-API-KEY": sys.argv[2]})
while time.monotonic() - began < 1200:
    built = json.load(urllib.request.urlopen(request, timeout=5)).get("builtFrom") or ""
    if built.startswith("recipe:"):
        print(f"python and code-interpreter-v1 built from their recipes in {time.monotonic() - began:.0f} s")
        break
    log = open(sys.argv[3], errors="replace").read()
    if "cannot build the template from its recipe" in log:
        sys.exit("the shipped templates' build failed:\n" + log[-4000:])
    time.sleep(2)
else:
    sys.exit("code-interpreter-v1 was not built from its recipe within 20 minutes")
PY
E2B_API_KEY=$key E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" \
    "$COPPICE_E2B_PYTHON" tests/sdk/code_interpreter_bench.py "$@"
