#!/usr/bin/env python3
"""coppiced end to end through the unmodified E2B Python SDK: control plane and sandbox traffic.

Needs E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL pointing at coppiced. Prints one PASS/FAIL
line per check and exits 1 if any check failed.
"""
import sys
import time
import uuid
from datetime import datetime, timezone

from e2b import (AuthenticationException, CommandExitException, NotFoundException, Sandbox,
                 SandboxQuery, SandboxState)
from e2b.sandbox.commands.command_handle import PtySize

from checks import check, finish, step

RUN = uuid.uuid4().hex[:8]


def main():
    sbx = Sandbox.create(timeout=300, envs={"SBX_ENV": "a"}, metadata={"suite": RUN})
    sid = sbx.sandbox_id
    check("create returns an id", bool(sid))
    r = step("run", lambda: sbx.commands.run("echo hello; whoami; echo $SBX_ENV"))
    check("commands through the gateway", r is not None and r.stdout == "hello\nuser\na\n", repr(r))
    try:
        sbx.commands.run("exit 3")
        check("non-zero exit raises", False, "no exception")
    except CommandExitException as e:
        check("non-zero exit raises", e.exit_code == 3, repr(e))
    r = step("root", lambda: sbx.commands.run("whoami", user="root"))
    check("user=root", r is not None and r.stdout == "root\n", repr(r))

    step("write", lambda: sbx.files.write("/home/user/g.txt", "through the gateway"))
    check("files round trip", step("read", lambda: sbx.files.read("/home/user/g.txt")) == "through the gateway")
    import urllib.request
    url = step("download_url", lambda: sbx.download_url("/home/user/g.txt"))
    got = step("signed download", lambda: urllib.request.urlopen(url, timeout=10).read())
    check("signed download URL works without headers", got == b"through the gateway", repr(got))
    forged = url.replace("signature=v1_", "signature=v1_x") if url else ""
    try:
        urllib.request.urlopen(forged, timeout=10)
        check("a forged signature is refused", False, "no error")
    except Exception as e:  # noqa: BLE001
        check("a forged signature is refused", "401" in str(e), repr(e))
    names = [e.name for e in (step("list dir", lambda: sbx.files.list("/home/user")) or [])]
    check("list dir", "g.txt" in names, repr(names))

    h = sbx.commands.run("sleep 0.5; echo later; exit 4", background=True, timeout=0)
    h.disconnect()
    again = step("connect by pid", lambda: sbx.commands.connect(h.pid))
    try:
        again.wait()
        check("background + reconnect", False, "no exception")
    except CommandExitException as e:
        check("background + reconnect", e.exit_code == 4 and "later" in e.stdout, repr(e))

    out = bytearray()
    ph = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(ph.pid, b"echo pty-$((40+2)); exit\n")
    step("pty wait", lambda: ph.wait(on_pty=lambda b: out.extend(b)))
    check("pty", b"pty-42" in out, repr(bytes(out[-200:])))

    gi = step("get_info", lambda: sbx.get_info())
    check("get_info", gi is not None and gi.sandbox_id == sid and gi.state == SandboxState.RUNNING
          and gi.metadata == {"suite": RUN}, repr(gi))
    step("set_timeout", lambda: sbx.set_timeout(600))
    gi = step("get_info after timeout", lambda: sbx.get_info())
    left = (gi.end_at - datetime.now(timezone.utc)).total_seconds() if gi else 0
    check("set_timeout moves end_at", 500 < left <= 605, f"{left}")

    others = [Sandbox.create(metadata={"suite": RUN}) for _ in range(2)]
    query = SandboxQuery(metadata={"suite": RUN})
    paginator = Sandbox.list(query=query, limit=2)
    first = step("list page 1", lambda: paginator.next_items()) or []
    check("list by metadata, first page of 2", len(first) == 2 and paginator.has_next, repr(first))
    second = step("list page 2", lambda: paginator.next_items()) or []
    listed = sorted(s.sandbox_id for s in first + second)
    check("list pages cover every sandbox", listed == sorted([sid] + [o.sandbox_id for o in others]), repr(listed))
    check("last page has no next", not paginator.has_next)
    for other in others:
        other.kill()

    s2 = step("connect", lambda: Sandbox.connect(sid))
    check("connect to a live sandbox", s2 is not None and s2.commands.run("echo c").stdout == "c\n")

    short = Sandbox.create(timeout=2)
    time.sleep(4)
    check("sandbox killed at its end time", not short.is_running())

    try:
        Sandbox.connect("nosuchsandbox0000000")
        check("unknown sandbox raises NotFoundException", False, "no exception")
    except NotFoundException:
        check("unknown sandbox raises NotFoundException", True)
    try:
        Sandbox.list(api_key="wrong-key").next_items()
        check("wrong key raises AuthenticationException", False, "no exception")
    except AuthenticationException:
        check("wrong key raises AuthenticationException", True)
    # Killing a paused sandbox works like killing a running one.
    check("pause", step("pause", lambda: sbx.pause()) is True)

    check("kill", step("kill", lambda: sbx.kill()) is True)
    check("kill again -> False", step("kill2", lambda: Sandbox.kill(sid)) is False)
    try:
        Sandbox.get_info(sid)
        check("get_info after kill raises", False)
    except NotFoundException:
        check("get_info after kill raises", True)

    return finish()


if __name__ == "__main__":
    sys.exit(main())
