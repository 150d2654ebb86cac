#!/usr/bin/env python3
"""Durable pause of a sandbox on the bridge network, through the unmodified E2B Python SDK
(coppiced runs with a short `--durable-pause-after`, so a paused sandbox goes to disk within
seconds).

`setup` creates an air-gapped sandbox that may reach only the upstream's IPv4 address, opens
a long-lived TCP connection to the upstream's ticking service, serves a port, pauses, and
prints `STATE <sandbox id> <address>`. The test then waits until the sandbox's memory is on
disk and restarts the daemon. `verify <state…>` resumes it and checks that it came back on
its own address, that the connection opened before the pause goes on carrying ticks, that
its policy still holds (IPv4 upstream reachable, IPv6 not), and that its port answers through
the gateway; then a second durable pause, with the daemon left running, does the same.

Needs the E2B_* variables and UPSTREAM_V4, UPSTREAM_V6, UPSTREAM_PORT (see upstream.py).
Talks to nothing else.
"""
import os
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from e2b import Sandbox

from checks import check, finish, step

V4 = os.environ["UPSTREAM_V4"]
V6 = os.environ["UPSTREAM_V6"]
PORT = int(os.environ["UPSTREAM_PORT"])
GATEWAY = urlparse(os.environ["E2B_SANDBOX_URL"])
SERVED = "served after a restore\n"

# Counts the upstream's ticks on one connection, opened once, into /tmp/ticks; notes the end.
TICKS = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(None)
total = 0
while True:
    try:
        data = s.recv(64)
    except OSError as e:
        open("/tmp/ticks.end", "w").write(type(e).__name__)
        break
    if not data:
        open("/tmp/ticks.end", "w").write("closed")
        break
    total += len(data)
    with open("/tmp/ticks.new", "w") as f:
        f.write(str(total))
    import os; os.replace("/tmp/ticks.new", "/tmp/ticks")
"""

PROBE = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.settimeout(2)
    print("OK" if s.recv(6) else "EOF")
except OSError as e:
    print("ERR", e)
"""

# The sandbox's source address towards the upstream (a UDP connect sends nothing).
ADDRESS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 9))
print(s.getsockname()[0])
"""


def ticks(sbx):
    out = sbx.commands.run("cat /tmp/ticks 2>/dev/null || echo 0").stdout.strip()
    return int(out or "0")


def ended(sbx):
    return sbx.commands.run("cat /tmp/ticks.end 2>/dev/null || true").stdout.strip()


def probe(sbx, host):
    return sbx.commands.run(f"python3 -c '{PROBE}' {host} {PORT}", timeout=20).stdout.strip()


def address(sbx):
    return sbx.commands.run(f"python3 -c '{ADDRESS}' {V4}").stdout.strip()


def gateway_get(host_header, path):
    request = urllib.request.Request(f"{GATEWAY.scheme}://{GATEWAY.netloc}{path}", headers={"Host": host_header})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def wait_until(what, condition, seconds):
    deadline = time.time() + seconds
    while True:
        value = condition()
        if value or time.time() > deadline:
            return value
        time.sleep(0.2)


def setup():
    sbx = Sandbox.create(timeout=600, allow_internet_access=False, network={"allow_out": [f"{V4}/32"]})
    sbx.commands.run(f"python3 -c '{TICKS}' {V4} {PORT}", background=True, timeout=0)
    sbx.files.write("/home/user/www/served.txt", SERVED)
    sbx.commands.run("cd /home/user/www && exec python3 -m http.server 8000", background=True, timeout=0)
    flowing = wait_until("ticks", lambda: ticks(sbx) > 10, 15)
    served = wait_until("port", lambda: gateway_get(sbx.get_host(8000), "/served.txt")[0] == 200, 15)
    if not flowing or not served:
        print(f"SETUP FAILED ticks={ticks(sbx)} served={served}", flush=True)
        return 1
    own = address(sbx)
    sbx.pause()
    print(f"STATE {sbx.sandbox_id} {own}", flush=True)
    return 0


def check_network(sbx, own, label):
    check(f"{label}: the sandbox is back on its own address", address(sbx) == own, own)
    before = ticks(sbx)
    # The upstream retransmits with a growing backoff while the sandbox is on disk.
    more = wait_until("ticks", lambda: ticks(sbx) > before + 10, 30)
    check(f"{label}: the connection opened before the pause carries ticks again", more,
          f"{before} -> {ticks(sbx)}, end: {ended(sbx)!r}")
    out = probe(sbx, V4)
    check(f"{label}: a new connection to the allowed upstream opens", out == "OK", out)
    out = probe(sbx, V6)
    check(f"{label}: the policy still refuses what it did not allow", out != "OK", out)
    status, body = wait_until("port", lambda: (lambda r: r if r[0] == 200 else None)(
        gateway_get(sbx.get_host(8000), "/served.txt")), 15) or (0, "")
    check(f"{label}: the sandbox's port answers through the gateway", status == 200 and body == SERVED,
          f"{status} {body[:200]!r}")


def verify(sid, own):
    sbx = step("connect", lambda: Sandbox.connect(sid))
    if sbx is None:
        return finish()
    check_network(sbx, own, "after a daemon restart")
    check("pause 2", step("pause", lambda: sbx.pause()) is True)
    # Past --durable-pause-after and a monitor pass: the memory goes to disk.
    time.sleep(3.5)
    resumed = step("connect", lambda: Sandbox.connect(sid))
    if resumed is not None:
        check_network(resumed, own, "resume 2")
        sbx = resumed
    step("kill", lambda: sbx.kill())
    return finish()


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        sys.exit(setup())
    sys.exit(verify(*sys.argv[2:4]))
