#!/usr/bin/env python3
"""COUNT sandboxes with networking alive at once, through the unmodified E2B Python SDK: each
one reaches the test's upstream (every other one through an allowOut rule while air-gapped),
with its own address, namespace and veth. Then all are killed, and the host is checked for
anything of theirs: their veths, their network namespaces, their nftables chains and map
entries, and their conntrack entries.

Needs the E2B_* variables plus UPSTREAM_V4, UPSTREAM_PORT, NFT_TABLE and COUNT. Runs as root on
the daemon's host (it reads /proc and the host's nftables and conntrack tables).
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from e2b import Sandbox

from checks import check, finish

V4 = os.environ["UPSTREAM_V4"]
PORT = int(os.environ["UPSTREAM_PORT"])
TABLE = os.environ["NFT_TABLE"]
COUNT = int(os.environ.get("COUNT", "200"))

REPORT = f"""
import json, os, socket
try:
    s = socket.create_connection(("{V4}", {PORT}), timeout=5)
    reached = s.recv(6) == b"hello\\n"
except OSError:
    reached = False
print(json.dumps({{
    "netns": os.readlink("/proc/self/ns/net"),
    "peer": int(os.popen("ip -o link show eth0").read().split(":")[1].split("@if")[1]),
    "address": [l.split()[3].split("/")[0] for l in os.popen("ip -4 -o addr show eth0")][0],
    "reached": reached,
}}))
"""


def start(i):
    if i % 2:
        sbx = Sandbox.create(timeout=600, allow_internet_access=False, network={"allow_out": [f"{V4}/32"]})
    else:
        sbx = Sandbox.create(timeout=600)
    out = sbx.commands.run(f"python3 -c '{REPORT}'", timeout=60).stdout
    return sbx, json.loads(out)


def host_ifindexes():
    found = set()
    for name in os.listdir("/sys/class/net"):
        try:
            found.add(int(open(f"/sys/class/net/{name}/ifindex").read()))
        except OSError:
            pass
    return found


def live_netns():
    """Every network namespace a process holds, as a member or through a descriptor."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        links = [f"/proc/{pid}/ns/net"]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target.startswith("net:["):
                found.add(target)
    return found


def leftovers(reports):
    peers = {r["peer"] for r in reports} & host_ifindexes()
    namespaces = {r["netns"] for r in reports} & live_netns()
    table = json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", TABLE],
                                      capture_output=True, text=True, check=True).stdout)
    chains = [i["chain"]["name"] for i in table["nftables"] if "chain" in i and i["chain"]["name"].startswith("sbx_")]
    elements = [e for i in table["nftables"] if "map" in i for e in i["map"].get("elem", [])]
    flows = subprocess.run(["conntrack", "-L", "-f", "ipv4"], capture_output=True, text=True).stdout
    addresses = {r["address"] for r in reports}
    tracked = [line for line in flows.splitlines()
               if any(f"src={a} " in line for a in addresses)]
    return peers, namespaces, chains, elements, tracked


def main():
    began = time.time()
    with ThreadPoolExecutor(8) as pool:
        started = list(pool.map(start, range(COUNT)))
    sandboxes = [s for s, _ in started]
    reports = [r for _, r in started]
    print(f"{COUNT} sandboxes started and probed in {time.time() - began:.1f} s", flush=True)
    check(f"{COUNT} sandboxes alive at once", len({s.sandbox_id for s in sandboxes}) == COUNT)
    check("each has its own network namespace", len({r["netns"] for r in reports}) == COUNT)
    check("each has its own address", len({r["address"] for r in reports}) == COUNT)
    check("each has its own veth", len({r["peer"] for r in reports}) == COUNT)
    missed = [r for r in reports if not r["reached"]]
    check("every one reaches the upstream (half through allowOut while air-gapped)", not missed, repr(missed[:3]))
    _, _, chains, _, _ = leftovers(reports)
    check("the air-gapped half has chains of its own", len(chains) == COUNT // 2, len(chains))

    killing = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: s.kill(), sandboxes))
    killed = time.time()
    deadline = killed + 20
    while True:
        peers, namespaces, chains, elements, tracked = leftovers(reports)
        if not (peers or namespaces or chains or elements or tracked) or time.time() > deadline:
            break
        time.sleep(0.5)
    print(f"{COUNT} sandboxes killed in {killed - killing:.1f} s; host side gone "
          f"{time.time() - killed:.1f} s later ({len(peers)} veths, {len(chains)} chains left)", flush=True)
    check("no veth of theirs remains", not peers, sorted(peers)[:5])
    check("no network namespace of theirs remains", not namespaces, sorted(namespaces)[:5])
    check("no nftables chain of theirs remains", not chains, chains[:5])
    check("no nftables map entry remains", not elements, elements[:5])
    check("no conntrack entry of theirs remains", not tracked, tracked[:5])
    return finish()


if __name__ == "__main__":
    sys.exit(main())
