#!/usr/bin/env python3
"""Pause, resume, auto-pause and auto-resume through the unmodified E2B Python SDK.

Needs E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL pointing at coppiced. Prints one PASS/FAIL
line per check and exits 1 if any check failed.
"""
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from e2b import CommandExitException, NotFoundException, Sandbox, SandboxQuery, SandboxState

from checks import check, finish, step
from counter import COUNTER, alive, count

RUN = uuid.uuid4().hex[:8]


def wait_for_state(sid, state, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        info = step("get_info", lambda: Sandbox.get_info(sid))
        if info is not None and info.state == state:
            return True
        time.sleep(0.2)
    return False


def memory_pause_cycles():
    sbx = Sandbox.create(timeout=300, metadata={"suite": RUN})
    sid = sbx.sandbox_id
    step("write", lambda: sbx.files.write("/home/user/kept.txt", "kept across pauses"))
    counter = step("counter", lambda: sbx.commands.run(COUNTER, background=True, timeout=0))
    time.sleep(0.5)
    for cycle in (1, 2, 3):
        before = count(sbx)
        check(f"pause {cycle} answers True", step("pause", lambda: sbx.pause()) is True)
        info = step("info", lambda: Sandbox.get_info(sid))
        check(f"pause {cycle}: state is paused", info is not None and info.state == SandboxState.PAUSED, repr(info))
        check(f"pause {cycle}: a second pause answers False (409)", step("pause again", lambda: sbx.pause()) is False)
        paused = step("list paused", lambda: [s.sandbox_id for s in Sandbox.list(
            query=SandboxQuery(state=[SandboxState.PAUSED], metadata={"suite": RUN})).next_items()]) or []
        check(f"pause {cycle}: listed as paused", sid in paused, repr(paused))
        time.sleep(1.0)
        resumed = step("connect", lambda: Sandbox.connect(sid))
        check(f"resume {cycle} through connect", resumed is not None)
        if resumed is None:
            break
        sbx = resumed
        after = count(sbx)
        # 1 s frozen would have been ~20 counts running; a reboot would restart from 1.
        check(f"resume {cycle}: the process kept its memory", after >= before, f"{before} -> {after}")
        check(f"resume {cycle}: nothing ran while paused", after - before <= 12, f"{before} -> {after}")
        check(f"resume {cycle}: the process is the same", counter is not None and alive(sbx, counter.pid))
        text = step("read", lambda: sbx.files.read("/home/user/kept.txt"))
        check(f"resume {cycle}: files kept", text == "kept across pauses", repr(text))

    # A background command's output and exit code survive a pause in the middle of it.
    handle = step("background", lambda: sbx.commands.run("sleep 1; echo done; exit 7", background=True, timeout=0))
    step("pause mid-command", lambda: sbx.pause())
    time.sleep(1.5)
    sbx = step("connect", lambda: Sandbox.connect(sid)) or sbx
    again = step("reconnect", lambda: sbx.commands.connect(handle.pid)) if handle else None
    try:
        result = again.wait() if again else None
        check("background exit code survives pause", False, repr(result))
    except CommandExitException as e:
        check("background exit code survives pause", e.exit_code == 7 and e.stdout == "done\n", repr(e))

    # Filesystem-only pause: files stay, processes do not, and the rebooted envd still
    # requires the sandbox's token (the SDK sends it; a bare request is refused).
    find_counter = ("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done 2>/dev/null"
                    " | grep -c 'i=0; whil[e]' || true")
    r = step("find counter", lambda: sbx.commands.run(find_counter))
    check("the counter is found by its command line", r is not None and r.stdout.strip() == "1", repr(r))
    check("filesystem pause", step("pause fs", lambda: sbx.pause(mode="filesystem")) is True)
    info = step("info", lambda: Sandbox.get_info(sid))
    check("filesystem pause: state is paused", info is not None and info.state == SandboxState.PAUSED, repr(info))
    sbx = step("connect", lambda: Sandbox.connect(sid)) or sbx
    text = step("read", lambda: sbx.files.read("/home/user/kept.txt"))
    check("filesystem pause: files kept", text == "kept across pauses", repr(text))
    # Pids restart in the rebooted sandbox, so look for the counter by its command line.
    r = step("find counter", lambda: sbx.commands.run(find_counter))
    check("filesystem pause: processes gone", r is not None and r.stdout.strip() == "0", repr(r))
    r = step("run", lambda: sbx.commands.run("echo rebooted"))
    check("filesystem pause: commands run after resume", r is not None and r.stdout == "rebooted\n", repr(r))
    try:
        urllib.request.urlopen(urllib.request.Request(
            os.environ["E2B_SANDBOX_URL"] + "/envs",
            headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983"}), timeout=10)
        check("rebooted envd requires the token", False, "no error")
    except urllib.error.HTTPError as e:
        check("rebooted envd requires the token", e.code == 401, repr(e))
    except Exception as e:  # noqa: BLE001
        check("rebooted envd requires the token", False, repr(e))

    step("kill", lambda: sbx.kill())
    try:
        Sandbox.connect(sid)
        check("resuming a killed sandbox is not found", False, "no exception")
    except NotFoundException as e:
        check("resuming a killed sandbox is not found", True, repr(e))


def auto_pause_and_resume():
    sbx = Sandbox.create(timeout=3, metadata={"suite": RUN}, lifecycle={"on_timeout": "pause"})
    sid = sbx.sandbox_id
    info = step("info", lambda: Sandbox.get_info(sid))
    check("lifecycle reported", info is not None and info.lifecycle is not None
          and info.lifecycle.get("on_timeout") == "pause", repr(info and info.lifecycle))
    step("write", lambda: sbx.files.write("/home/user/auto.txt", "auto-paused"))
    counter = step("counter", lambda: sbx.commands.run(COUNTER, background=True, timeout=0))
    time.sleep(0.3)
    before = count(sbx)
    check("timeout pauses (not kills)", wait_for_state(sid, SandboxState.PAUSED, 30))
    sbx = step("connect", lambda: Sandbox.connect(sid, timeout=60)) or sbx
    check("auto-pause keeps files", step("read", lambda: sbx.files.read("/home/user/auto.txt")) == "auto-paused")
    check("auto-pause keeps the running process", counter is not None and alive(sbx, counter.pid)
          and count(sbx) >= before)
    step("kill", lambda: sbx.kill())

    eager = Sandbox.create(timeout=300, metadata={"suite": RUN},
                           lifecycle={"on_timeout": "pause", "auto_resume": True})
    eid = eager.sandbox_id
    step("write", lambda: eager.files.write("/home/user/wake.txt", "woken by a command"))
    step("pause", lambda: eager.pause())
    check("auto-resume sandbox paused", wait_for_state(eid, SandboxState.PAUSED, 5))
    r = step("run on paused", lambda: eager.commands.run("cat /home/user/wake.txt"))
    check("a command resumes an auto-resume sandbox", r is not None and r.stdout == "woken by a command", repr(r))
    check("it is running again", wait_for_state(eid, SandboxState.RUNNING, 5))
    step("pause", lambda: eager.pause())
    text = step("read on paused", lambda: eager.files.read("/home/user/wake.txt"))
    check("a file read resumes it too", text == "woken by a command", repr(text))
    step("kill", lambda: eager.kill())


def snapshots_and_forks():
    sbx = Sandbox.create(timeout=300, metadata={"suite": RUN})
    step("write", lambda: sbx.files.write("/home/user/base.txt", "from the source"))
    source_machine = (step("machine-id", lambda: sbx.files.read("/etc/machine-id")) or "").strip()
    snap = step("create_snapshot", lambda: sbx.create_snapshot(name=f"snap-{RUN}"))
    check("create_snapshot answers its id", snap is not None and snap.snapshot_id == f"snap-{RUN}", repr(snap))
    listed = step("list_snapshots", lambda: [s.snapshot_id for s in sbx.list_snapshots().next_items()]) or []
    check("list_snapshots shows it", f"snap-{RUN}" in listed, repr(listed))
    # The source goes on after the snapshot; the snapshot does not follow it.
    step("write after", lambda: sbx.files.write("/home/user/base.txt", "changed later"))

    started = step("create from snapshot", lambda: Sandbox.create(template=f"snap-{RUN}", timeout=120))
    text = step("read", lambda: started.files.read("/home/user/base.txt")) if started else None
    check("a sandbox created from the snapshot sees its files", text == "from the source", repr(text))

    forks = step("fork", lambda: sbx.fork(count=3, timeout=120)) or []
    forks = [f for f in forks if isinstance(f, Sandbox)]
    check("fork x3 starts three sandboxes", len(forks) == 3, repr(forks))
    for i, fork in enumerate(forks):
        step(f"fork {i} write", lambda fork=fork, i=i: fork.files.write("/home/user/own.txt", f"fork {i}"))
    seen = [step("fork read", lambda fork=fork: fork.files.read("/home/user/base.txt")) for fork in forks]
    check("each fork sees the source's files as of the fork", all(t == "changed later" for t in seen), repr(seen))
    own = [step("fork own", lambda fork=fork: fork.files.read("/home/user/own.txt")) for fork in forks]
    check("forks diverge independently", own == [f"fork {i}" for i in range(len(forks))], repr(own))
    check("the source does not see the forks' writes",
          not step("exists", lambda: sbx.files.exists("/home/user/own.txt")))
    machines = [(step("fork machine-id", lambda fork=fork: fork.files.read("/etc/machine-id")) or "").strip()
                for fork in forks]
    check("every fork has its own machine-id", len(set(machines + [source_machine])) == len(forks) + 1
          and all(len(m) == 32 for m in machines), repr(machines + [source_machine]))
    tokens = {f._envd_access_token for f in forks} | {sbx._envd_access_token}
    check("every fork has its own envd token", len(tokens) == len(forks) + 1 and None not in tokens)
    hostnames = [(step("hostname", lambda fork=fork: fork.commands.run("hostname")) or None) for fork in forks]
    check("every fork has its own hostname", [h.stdout.strip() for h in hostnames if h] == [f.sandbox_id for f in forks],
          repr(hostnames))

    check("delete_snapshot", step("delete", lambda: Sandbox.delete_snapshot(f"snap-{RUN}")) is True)
    check("deleting it again answers False", step("delete again", lambda: Sandbox.delete_snapshot(f"snap-{RUN}")) is False)
    text = step("read after delete", lambda: started.files.read("/home/user/base.txt")) if started else None
    check("sandboxes made from a deleted snapshot keep working", text == "from the source", repr(text))
    for other in forks + ([started] if started else []) + [sbx]:
        step("kill", lambda other=other: other.kill())


def main():
    memory_pause_cycles()
    auto_pause_and_resume()
    snapshots_and_forks()
    return finish()


if __name__ == "__main__":
    sys.exit(main())
