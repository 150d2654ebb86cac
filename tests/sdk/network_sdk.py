#!/usr/bin/env python3
"""Per-sandbox networking through the unmodified E2B Python SDK against a coppiced on a bridge
of its own: NAT to an upstream the test made (IPv4 and IPv6), the host kept out, allowOut and
denyOut by CIDR and by domain, air-gap, update_network cutting open connections, sandboxes
kept apart, and ports served through the gateway (WebSockets, private traffic).

Needs the E2B_* variables, plus UPSTREAM_V4, UPSTREAM_V6, UPSTREAM_PORT (the test's upstream
servers, see upstream.py) and BRIDGE_V4 (the daemon's bridge address). Talks to nothing else.
Prints one PASS/FAIL line per check and exits 1 if any failed.
"""
import json
import os
import socket
import sys
import threading
import time
import urllib.request
from urllib.parse import urlparse

from e2b import CommandExitException, Sandbox

from checks import check, finish, step

V4 = os.environ["UPSTREAM_V4"]
V6 = os.environ["UPSTREAM_V6"]
PORT = int(os.environ["UPSTREAM_PORT"])
BRIDGE = os.environ["BRIDGE_V4"]
GATEWAY = urlparse(os.environ["E2B_SANDBOX_URL"])

PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=2)
    s.settimeout(2)
    print("OK" if s.recv(6) else "EOF")
except OSError as e:
    print("ERR", e)
"""

RESOLVE = """
import socket, sys
try:
    print(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], None, socket.AF_INET)})[0])
except OSError as e:
    print("ERR", e)
"""

# Reads the upstream's ticks into a file; when they stop, writes the time the connection failed.
WATCH = """
import socket, sys, time
out = open("/tmp/watch.log", "w", buffering=1)
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(5)
s.recv(6)
out.write("open\\n")
try:
    while s.recv(64):
        pass
    out.write(f"ended {time.time()}\\n")
except OSError as e:
    out.write(f"cut {time.time()} {type(e).__name__}\\n")
"""


def watch_log(sbx, wanted, seconds):
    """The watcher's log once a line starts with `wanted` (or whatever it has after `seconds`)."""
    deadline = time.time() + seconds
    lines = []
    while time.time() < deadline:
        lines = sbx.commands.run("cat /tmp/watch.log 2>/dev/null || true").stdout.split("\n")
        if any(line.startswith(wanted) for line in lines):
            break
        time.sleep(0.05)
    return [line for line in lines if line]


def probe(sbx, host, port=PORT):
    out = sbx.commands.run(f"python3 -c '{PROBE}' {host} {port}", timeout=20).stdout.strip()
    return out == "OK", out


def resolve(sbx, name):
    return sbx.commands.run(f"python3 -c '{RESOLVE}' {name}", timeout=20).stdout.strip()


def as_root(sbx, command):
    """Exit code and output of `command` run as sandbox root."""
    try:
        result = sbx.commands.run(command, user="root", timeout=20)
        return result.exit_code, result.stdout + result.stderr
    except CommandExitException as e:
        return e.exit_code, e.stdout + e.stderr


def host_service():
    """A TCP service on the bridge address, where sandboxes must not get unless allowed."""
    server = socket.socket()
    server.bind((BRIDGE, 0))
    server.listen(16)

    def serve():
        while True:
            conn, _ = server.accept()
            conn.sendall(b"hostok")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


def defaults(host_port):
    sbx = Sandbox.create(timeout=120)
    try:
        conf = sbx.commands.run("cat /etc/resolv.conf").stdout
        check("resolv.conf names the bridge resolver", f"nameserver {BRIDGE}" in conf, conf)
        ok, out = probe(sbx, V4)
        check("default sandbox reaches the upstream over IPv4 (NAT)", ok, out)
        ok, out = probe(sbx, V6)
        check("default sandbox reaches the upstream over IPv6", ok, out)
        ok, out = probe(sbx, BRIDGE, host_port)
        check("the host's bridge address is out of reach", not ok, out)
        name = resolve(sbx, "anything.test")
        check("names resolve through the bridge resolver", name == V4, name)
        info = Sandbox.get_info(sbx.sandbox_id)
        check("get_info reports internet access on", info.allow_internet_access is True, repr(info))
        # Its network namespace belongs to its user namespace (so it can be checkpointed), but
        # sandbox root holds no CAP_NET_ADMIN: it cannot take another address or MAC.
        for change in ("ip addr add 10.215.3.250/22 dev eth0", "ip link set eth0 address 02:c0:ff:ee:0f:0f",
                       "ip link set eth0 down"):
            code, out = as_root(sbx, change)
            check(f"sandbox root cannot run `{change}`", code != 0 and "not permitted" in out, f"{code} {out}")
    finally:
        sbx.kill()


def policies(host_port):
    gapped = Sandbox.create(timeout=120, allow_internet_access=False)
    try:
        ok, out = probe(gapped, V4)
        check("air-gapped: IPv4 upstream refused", not ok, out)
        ok, out = probe(gapped, V6)
        check("air-gapped: IPv6 upstream refused", not ok, out)
        name = resolve(gapped, "anything.test")
        check("air-gapped: names outside allowOut do not resolve", name.startswith("ERR"), name)
    finally:
        gapped.kill()

    cidr = Sandbox.create(timeout=120, allow_internet_access=False, network={"allow_out": [f"{V4}/32"]})
    try:
        ok, out = probe(cidr, V4)
        check("allowOut CIDR is reachable while air-gapped", ok, out)
        ok, out = probe(cidr, V6)
        check("an address outside allowOut is not", not ok, out)
    finally:
        cidr.kill()

    domain = Sandbox.create(timeout=120, allow_internet_access=False, network={"allow_out": ["allowed.test"]})
    try:
        ok, out = probe(domain, V4)
        check("allowOut domain: its address is closed before it resolves", not ok, out)
        name = resolve(domain, "allowed.test")
        check("allowOut domain resolves", name == V4, name)
        ok, out = probe(domain, V4)
        check("allowOut domain: its address opens once resolved", ok, out)
        name = resolve(domain, "other.test")
        check("a domain not allowed does not resolve", name.startswith("ERR"), name)
    finally:
        domain.kill()

    denied = Sandbox.create(timeout=120, network={"deny_out": ["denied.test", f"{V6}/128"]})
    try:
        name = resolve(denied, "denied.test")
        check("a denied domain does not resolve", name.startswith("ERR"), name)
        name = resolve(denied, "fine.test")
        check("other domains still resolve", name == V4, name)
        ok, out = probe(denied, V6)
        check("denyOut CIDR is refused", not ok, out)
        ok, out = probe(denied, V4)
        check("the rest stays open", ok, out)
    finally:
        denied.kill()

    opened = Sandbox.create(timeout=120, network={"allow_out": [f"{BRIDGE}/32"]})
    try:
        ok, out = probe(opened, BRIDGE, host_port)
        check("allowOut opens a host service", ok, out)
    finally:
        opened.kill()


def live_update():
    sbx = Sandbox.create(timeout=120)
    try:
        sbx.commands.run(f"python3 -c '{WATCH}' {V4} {PORT}", background=True)
        lines = watch_log(sbx, "open", 15)
        check("a connection is open before the update", "open" in lines, repr(lines))
        time.sleep(0.2)
        step("update_network denies the upstream", lambda: sbx.update_network({"deny_out": [f"{V4}/32"]}))
        returned = time.time()
        lines = watch_log(sbx, ("cut", "ended"), 10)
        cut = [line for line in lines if line.startswith(("cut", "ended"))]
        when = float(cut[0].split()[1]) if cut else None
        check("the open connection is cut within 100 ms of update_network",
              when is not None and when - returned < 0.1, f"{lines}, update returned at {returned}")
        ok, out = probe(sbx, V4)
        check("new connections are refused", not ok, out)
        info = Sandbox.get_info(sbx.sandbox_id)
        check("get_info reports the new policy", info.network is not None and info.network.get("deny_out") == [f"{V4}/32"],
              repr(info.network))
        step("update_network allows again", lambda: sbx.update_network({}))
        ok, out = probe(sbx, V4)
        check("allowing again works", ok, out)
    finally:
        sbx.kill()


def connect(sbx, host, port):
    """"up" if a TCP connection from inside `sbx` to host:port opens, else "down"."""
    script = f"import socket; socket.create_connection((\"{host}\", {port}), timeout=2)"
    return sbx.commands.run(f"python3 -c '{script}' 2>/dev/null && echo up || echo down", timeout=20).stdout.strip()


def wait_port(sbx, port):
    deadline = time.time() + 15
    while time.time() < deadline:
        if connect(sbx, "127.0.0.1", port) == "up":
            return True
        time.sleep(0.2)
    return False


WS_SERVER = """
import socket, threading
def serve(c):
    request = b""
    while b"\\r\\n\\r\\n" not in request:
        data = c.recv(1024)
        if not data:
            return c.close()
        request += data
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n")
    while True:
        data = c.recv(1024)
        if not data:
            break
        c.sendall(data.upper())
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8001)); s.listen(16)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def gateway_get(host_header, extra=None):
    request = urllib.request.Request(f"{GATEWAY.scheme}://{GATEWAY.netloc}/", headers={"Host": host_header, **(extra or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def websocket_echo(host_header):
    with socket.create_connection((GATEWAY.hostname, GATEWAY.port), timeout=10) as conn:
        conn.sendall(f"GET /ws HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(1024)
        conn.sendall(b"ping")
        echoed = conn.recv(16)
        return head.split(b"\r\n")[0], echoed


def apart_and_ports():
    a = Sandbox.create(timeout=120)
    b = Sandbox.create(timeout=120)
    try:
        b.commands.run("cd /tmp && echo served > index.html && python3 -m http.server 8000 --bind 0.0.0.0",
                       background=True)
        b.commands.run(f"python3 -c '{WS_SERVER}'", background=True)
        b_ip = b.commands.run("ip -4 -o addr show eth0").stdout.split()[3].split("/")[0]
        check("the web server in B is up", wait_port(b, 8000) and wait_port(b, 8001))
        out = connect(a, b_ip, 8000)
        check("sandbox A cannot connect to sandbox B", out == "down", out)
        out = connect(b, b_ip, 8000)
        check("B reaches its own server on its address", out == "up", out)

        host = b.get_host(8000)
        check("get_host follows the {port}-{id} convention", host.startswith(f"8000-{b.sandbox_id}."), host)
        status, body = gateway_get(host)
        check("a web server in a sandbox is reached through the gateway", status == 200 and b"served" in body,
              f"{status} {body[:200]!r}")
        status, body = gateway_get(b.get_host(8009))
        check("a port nothing serves answers 502", status == 502, f"{status} {body[:200]!r}")
        line, echoed = step("websocket through the gateway", lambda: websocket_echo(b.get_host(8001))) or (b"", b"")
        check("WebSockets pass through the gateway", b"101" in line and echoed == b"PING", f"{line!r} {echoed!r}")
    finally:
        a.kill()
        b.kill()

    private = Sandbox.create(timeout=120, network={"allow_public_traffic": False})
    try:
        check("a private sandbox has a traffic token", bool(private.traffic_access_token), repr(private.traffic_access_token))
        private.commands.run("cd /tmp && echo private > index.html && python3 -m http.server 8000", background=True)
        check("the private web server is up", wait_port(private, 8000))
        status, _ = gateway_get(private.get_host(8000))
        check("a private port refuses requests without the token", status == 403, status)
        status, body = gateway_get(private.get_host(8000), {"E2B-Traffic-Access-Token": private.traffic_access_token or ""})
        check("a private port answers with the token", status == 200 and b"private" in body, f"{status} {body[:100]!r}")
        info = Sandbox.get_info(private.sandbox_id)
        check("get_info reports allowPublicTraffic false",
              info.network is not None and info.network.get("allow_public_traffic") is False, json.dumps(info.network))
    finally:
        private.kill()


def main():
    host_port = host_service()
    defaults(host_port)
    policies(host_port)
    live_update()
    apart_and_ports()
    return finish()


if __name__ == "__main__":
    sys.exit(main())
