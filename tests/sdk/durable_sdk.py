#!/usr/bin/env python3
"""Durable pause seen through the unmodified E2B Python SDK (coppiced runs with a short
`--durable-pause-after`, so a paused sandbox is written to disk within seconds).

`setup` creates a sandbox, writes a file, starts a counter whose count lives only in a shell
variable and a background command that finishes later with output and an exit code, pauses
the sandbox and prints `STATE <sandbox id> <count> <counter pid> <command pid>`. The test
then waits until the sandbox's memory is on disk and restarts the daemon. `verify <state…>`
checks that the resume restores the very same processes (the counter goes on from its value
in memory; the command's output and exit code arrive), that files are kept, and that a
second and a third durable pause and resume work too.
"""
import sys
import time

from e2b import CommandExitException, Sandbox, SandboxState

from checks import check, finish, step
from counter import COUNTER, alive, count

PAYLOAD = "kept on disk\n"
# Waits for its go-ahead file, so that it finishes only after the resume.
COMMAND = "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done; exit 7"


def setup():
    sbx = Sandbox.create(timeout=600, metadata={"durable": "yes"})
    sbx.files.write("/home/user/kept.txt", PAYLOAD)
    counter = sbx.commands.run(COUNTER, background=True, timeout=0)
    command = sbx.commands.run(COMMAND, background=True, timeout=0)
    time.sleep(0.5)
    before = count(sbx)
    sbx.pause()
    print(f"STATE {sbx.sandbox_id} {before} {counter.pid} {command.pid}", flush=True)
    return 0


def verify(sid, before, counter_pid, command_pid):
    before = int(before)
    info = step("info", lambda: Sandbox.get_info(sid))
    check("paused on disk, still listed as paused after the restart",
          info is not None and info.state == SandboxState.PAUSED, repr(info))
    sbx = step("connect", lambda: Sandbox.connect(sid))
    if sbx is None:
        return finish()
    after = count(sbx)
    check("the counter goes on from its value in memory", after >= before, f"{before} -> {after}")
    check("the counter process is the same one", alive(sbx, counter_pid))
    text = step("read", lambda: sbx.files.read("/home/user/kept.txt"))
    check("files kept", text == PAYLOAD, repr(text))
    handle = step("reconnect command", lambda: sbx.commands.connect(int(command_pid)))
    step("go", lambda: sbx.files.write("/tmp/go", ""))
    try:
        result = handle.wait() if handle else None
        check("the background command's exit code survives", False, repr(result))
    except CommandExitException as e:
        check("the background command's output survives", "done" in e.stdout, repr(e.stdout))
        check("the background command's exit code survives", e.exit_code == 7, repr(e.exit_code))
    for cycle in (2, 3):
        before = count(sbx)
        check(f"pause {cycle}", step("pause", lambda: sbx.pause()) is True)
        # Past --durable-pause-after and a monitor pass: the memory goes to disk.
        time.sleep(3.5)
        resumed = step("connect", lambda: Sandbox.connect(sid))
        if resumed is None:
            break
        sbx = resumed
        after = count(sbx)
        check(f"resume {cycle}: the counter goes on from memory", after >= before, f"{before} -> {after}")
        check(f"resume {cycle}: the same process", alive(sbx, counter_pid))
    step("kill", lambda: sbx.kill())
    return finish()


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        sys.exit(setup())
    sys.exit(verify(*sys.argv[2:6]))
