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

RUN = uuid.uuid4().hex[:8]
# A shell whose only state is in memory: the count lives in `i`; the file just shows it.
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"


def count(sbx):
    text = step("read counter", lambda: sbx.files.read("/tmp/counter")) or ""
    return int(text.strip() or "0")


def alive(sbx, pid):
    r = step("ps", lambda: sbx.commands.run(f"kill -0 {pid} && echo yes || echo no"))
    return r is not None and r.stdout == "yes\n"


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


def main():
    memory_pause_cycles()
    auto_pause_and_resume()
    return finish()


if __name__ == "__main__":
    sys.exit(main())
